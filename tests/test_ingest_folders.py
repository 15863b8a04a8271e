"""`genie ingest DIR`: folders searched recursively, mixed formats, one episode per video or frame folder,
unreadable files refused one line each (or left out with --skip-bad); no Pillow mode= calls."""

import warnings

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from genie.cli.commands import main
from genie.core.errors import GenieValueError
from genie.core.frames import resize_frame
from genie.data import VideoDataset
from genie.data.sources import find_sources, ingest


def clip(n, h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def frame_folder(folder, n, ext="png", seed=1):
    folder.mkdir(parents=True)
    for i, frame in enumerate(clip(n, seed=seed)):
        Image.fromarray(frame).save(folder / f"{i:04d}.{ext}")
    return folder


@pytest.fixture
def videos(tmp_path):
    """videos/a/run.mp4 (6 frames) and videos/b/c/frames/ (4 PNGs), with files ingest must ignore."""
    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    iio.imwrite(root / "a" / "run.mp4", clip(6), fps=10)
    frame_folder(root / "b" / "c" / "frames", 4)
    (root / "a" / "notes.txt").write_text("not a video")
    (root / ".hidden").mkdir()
    iio.imwrite(root / ".hidden" / "skip.gif", clip(3), duration=50, loop=0)
    return root


def test_folder_is_searched_recursively(videos, tmp_path, capsys):
    assert main(["ingest", str(videos), "--size", "16", "--out", str(tmp_path / "ds")]) == 0
    ds = VideoDataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and [ds.episode_length(i) for i in range(2)] == [6, 4]  # name order
    assert ds.meta["fit"] == "crop" and ds.frame_shape == (16, 16, 3)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("ingested 2 episodes, 10 frames")


def test_mixed_formats_and_the_old_forms(tmp_path):
    root = tmp_path / "mixed"
    frame_folder(root / "jpgs", 3, "jpg")
    iio.imwrite(root / "anim.gif", clip(5), duration=50, loop=0)
    Image.fromarray(clip(1)[0]).save(root / "cover.png")  # an image beside clips: root is a frame folder too
    assert find_sources([root]) == [root, root / "anim.gif", root / "jpgs"]
    out = tmp_path / "ds"
    summary = ingest([root / "anim.gif", root / "jpgs"], out, size=16, progress=False, fit="pad")  # files
    assert summary["episodes"] == 2 and summary["frames"] == 8 and VideoDataset(out).meta["fit"] == "pad"
    first = np.asarray(Image.open(root / "jpgs" / "0000.jpg"))
    np.testing.assert_array_equal(VideoDataset(out).episode(1)["frames"][0], resize_frame(first, 16, "pad"))
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    with pytest.raises(GenieValueError, match="no images or videos"):
        ingest([tmp_path / "empty"], tmp_path / "nothing", progress=False)


def test_unreadable_files_are_refused_one_line_each(videos, tmp_path, capsys):
    (videos / "a" / "broken.mp4").write_bytes(b"not a video" * 50)
    (videos / "b" / "empty.gif").write_bytes(b"")
    out = tmp_path / "ds"
    assert main(["ingest", str(videos), "--size", "16", "--out", str(out)]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2, errors
    for line, name in zip(errors, ["broken.mp4", "empty.gif"]):
        assert line.startswith("error: Cannot read ") and name in line and "--skip-bad" in line
    assert not out.exists()  # refused before anything was written

    assert main(["ingest", str(videos), "--size", "16", "--skip-bad", "--quiet", "--out", str(out)]) == 0
    skipped = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" (")[0] for line in skipped] == [
        f"skipped {videos / 'a' / 'broken.mp4'}",
        f"skipped {videos / 'b' / 'empty.gif'}",
    ]
    assert VideoDataset(out).num_episodes == 2


def test_a_file_that_breaks_part_way(tmp_path):
    """A frame folder whose later image is truncated passes the up-front check and fails while writing:
    refused with its name, or (--skip-bad) its partial episode is discarded and the others kept."""
    good = frame_folder(tmp_path / "in" / "a_good", 3)
    torn = frame_folder(tmp_path / "in" / "b_torn", 3, seed=2)
    data = (torn / "0002.png").read_bytes()
    (torn / "0002.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut off
    out = tmp_path / "ds"
    with pytest.raises(GenieValueError, match=r"0002\.png.*--skip-bad.*1 episodes before it are kept"):
        ingest([tmp_path / "in"], out, size=16, progress=False)
    summary = ingest([tmp_path / "in"], tmp_path / "ds2", size=16, progress=False, skip_bad=True)
    assert summary["episodes"] == 1 and summary["skipped"] == [str(torn / "0002.png")]
    ds = VideoDataset(tmp_path / "ds2")
    assert ds.num_episodes == 1 and ds.episode_length(0) == 3 and good.exists()
    assert not (tmp_path / "ds2" / ".tmp").exists()


def test_no_pillow_mode_argument(tmp_path, monkeypatch):
    """Pillow deprecated Image.fromarray(..., mode=...); the frame policy must not pass it."""
    real = Image.fromarray
    calls = []

    def spy(obj, *args, **kwargs):
        calls.append(args or kwargs)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(Image, "fromarray", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        gray = resize_frame(np.full((10, 12), 7, np.uint8), 8)
        rgba = resize_frame(np.full((10, 12, 4), 9, np.uint8), 8)
    assert (gray == 7).all() and (rgba == 9).all() and gray.shape == rgba.shape == (8, 8, 3)
    assert calls and not any(calls), calls  # every call without mode=

"""genie.data.sources: real Atari collection, video / GIF / image-folder ingestion, the frame policy, clear errors."""

import argparse

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from genie.cli.collect import add_cli
from genie.core.errors import GenieError, GenieFileNotFoundError, GenieValueError
from genie.core.frames import resize_frame
from genie.data import VideoDataset
from genie.data.sources import collect, ingest

pytest.importorskip("ale_py")


def breakout(out, seed=0, **kw):
    return collect("ALE/Breakout-v5", 2, out, size=32, seed=seed, max_steps=40, progress=False, **kw)


def test_collect_breakout(tmp_path):
    summary = breakout(tmp_path / "ds")
    ds = VideoDataset(tmp_path / "ds")
    assert summary["episodes"] == 2 and summary["frames"] == ds.num_frames
    assert ds.num_episodes == 2 and ds.frame_shape == (32, 32, 3) and ds.has_actions and ds.has_rewards
    meta = ds.meta
    assert meta["source"] == "gym" and meta["env_id"] == "ALE/Breakout-v5" and meta["num_actions"] == 4
    assert meta["policy"] == "sticky" and meta["seed"] == 0 and meta["size"] == 32
    assert meta["env_kwargs"] == {
        "repeat_action_probability": 0.0
    }  # sticky actions off (tests/test_games.py)
    for i in range(2):
        ep = ds.episode(i)
        T = ds.episode_length(i)
        assert 2 <= T <= 41
        assert ep["actions"].shape == (T - 1,) and ((0 <= ep["actions"]) & (ep["actions"] < 4)).all()
        assert ep["rewards"].shape == ep["terminated"].shape == ep["truncated"].shape == (T - 1,)
        frames = np.asarray(ep["frames"])
        assert not (frames == frames[0]).all()
        if T < 41:  # ended early: the last transition is the terminal one
            assert ep["terminated"][-1] or ep["truncated"][-1]


def test_collect_is_deterministic(tmp_path):
    breakout(tmp_path / "a", seed=3, policy="random")
    breakout(tmp_path / "b", seed=3, policy="random")
    a, b = VideoDataset(tmp_path / "a"), VideoDataset(tmp_path / "b")
    for i in range(2):
        np.testing.assert_array_equal(a.episode(i)["frames"], b.episode(i)["frames"])
        np.testing.assert_array_equal(a.episode(i)["actions"], b.episode(i)["actions"])


def test_collect_errors(tmp_path):
    with pytest.raises(GenieValueError, match="Unknown Gymnasium environment"):
        collect("NoSuchEnv-v0", 1, tmp_path / "x", progress=False)
    with pytest.raises(GenieValueError, match="Unknown Gymnasium environment"):
        collect("ALE/NoSuchGame-v5", 1, tmp_path / "x", progress=False)
    with pytest.raises(GenieValueError, match="policy"):
        collect("ALE/Breakout-v5", 1, tmp_path / "x", policy="greedy", progress=False)
    assert not (tmp_path / "x").exists()


def make_video(n, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, h, w, 3)) * 255).astype(np.uint8)


def test_ingest_gif_mp4_and_image_folders(tmp_path):
    iio.imwrite(tmp_path / "clip.gif", make_video(7), duration=50, loop=0)
    iio.imwrite(tmp_path / "clip.mp4", make_video(12), fps=10)
    rgb_dir, odd_dir = tmp_path / "rgb", tmp_path / "odd"
    rgb_dir.mkdir()
    odd_dir.mkdir()
    for i, frame in enumerate(make_video(5, 40, 30)):
        Image.fromarray(frame).save(rgb_dir / f"f{i:03d}.png")
    (rgb_dir / "notes.txt").write_text("ignored")
    Image.fromarray(np.full((20, 20, 4), 200, np.uint8), "RGBA").save(odd_dir / "a.png")
    Image.fromarray(np.full((20, 20), 90, np.uint8), "L").save(odd_dir / "b.png")
    Image.fromarray(np.full((20, 20), 3, np.uint8), "P").save(odd_dir / "c.png")
    summary = ingest(
        [tmp_path / "clip.gif", tmp_path / "clip.mp4", rgb_dir, odd_dir],
        tmp_path / "ds",
        size=16,
        progress=False,
    )
    ds = VideoDataset(tmp_path / "ds")
    assert [ds.episode_length(i) for i in range(4)] == [7, 12, 5, 3]
    assert summary["frames"] == 27 and ds.frame_shape == (16, 16, 3)
    assert ds.meta["source"] == "video" and not ds.has_actions and ds.episode(0)["actions"] is None
    odd = np.asarray(ds.episode(3)["frames"])
    assert (odd[0] == 200).all() and (odd[1] == 90).all()  # RGBA -> RGB, grayscale -> RGB
    first = np.asarray(Image.open(rgb_dir / "f000.png"))
    np.testing.assert_array_equal(ds.episode(2)["frames"][0], resize_frame(first, 16))  # sorted by name


def test_ingest_errors_leave_nothing(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(GenieFileNotFoundError, match="missing.mp4"):
        ingest([tmp_path / "missing.mp4"], out, progress=False)
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(GenieValueError, match="broken.mp4"):
        ingest([tmp_path / "broken.mp4"], out, progress=False)
    bad_dir = tmp_path / "frames"
    bad_dir.mkdir()
    (bad_dir / "000.png").write_bytes(b"not a png")
    with pytest.raises(GenieValueError, match="000.png"):
        ingest([bad_dir], out, progress=False)
    mid = tmp_path / "mid"  # first frame fine, second broken: fails while streaming, nothing is kept
    mid.mkdir()
    Image.fromarray(make_video(1)[0]).save(mid / "a.png")
    (mid / "b.png").write_bytes(b"not a png")
    with pytest.raises(GenieValueError, match="b.png"):
        ingest([mid], out, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenieValueError, match="no images"):
        ingest([tmp_path / "empty"], out, progress=False)
    assert not out.exists()


def test_resize_frame_policy():
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[:25] = 255  # a band the centre crop removes, the pad keeps
    assert resize_frame(frame, 32).shape == (32, 32, 3) and resize_frame(frame, 32).max() == 0
    padded = resize_frame(frame, 32, fit="pad")
    assert padded.max() > 0 and padded[:, 0].max() == 0  # letterboxed
    assert resize_frame(frame, 32, fit="stretch")[:3].min() == 255
    assert resize_frame(np.zeros((9, 9), np.uint8), 8).shape == (8, 8, 3)
    with pytest.raises(GenieError):
        resize_frame(np.zeros((9, 9), np.float32), 8)


def test_box_fit_cuts_a_window_and_the_collector_records_it(tmp_path):
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[100:104, 40:48] = 255  # a small sprite: a box around it gives it many more of the model's pixels
    boxed = resize_frame(frame, 32, fit="box:24,84,56,116")  # 32x32 source pixels, no resampling
    np.testing.assert_array_equal(boxed, frame[84:116, 24:56])
    assert (resize_frame(frame, 32, fit="stretch") > 127).sum() < (boxed > 127).sum() / 4
    for bad in ("box:1,2,3", "box:5,0,5,10", "box:a,b,c,d", "square"):
        with pytest.raises(GenieValueError, match="Unknown fit"):
            resize_frame(frame, 32, fit=bad)
    np.testing.assert_array_equal(resize_frame(boxed, 32, fit="box:24,84,56,116"), boxed)  # a prompt: fitted
    with pytest.raises(GenieValueError, match="outside the 160x210 frame"):
        resize_frame(frame, 32, fit="box:0,0,161,210")
    summary = breakout(tmp_path / "ds", fit="box:8,32,152,194")
    ds = VideoDataset(tmp_path / "ds")
    assert ds.meta["fit"] == "box:8,32,152,194" and summary["frames"] == ds.num_frames
    with pytest.raises(GenieValueError, match="outside"):  # refused before anything is written
        breakout(tmp_path / "wide", fit="box:0,0,300,300")
    assert not (tmp_path / "wide").exists()


def test_cli_subcommands(tmp_path):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    iio.imwrite(tmp_path / "clip.gif", make_video(4), duration=50, loop=0)
    args = parser.parse_args(
        ["ingest", str(tmp_path / "clip.gif"), "--size", "16", "--out", str(tmp_path / "a")]
    )
    assert args.func(args) == 0 and VideoDataset(tmp_path / "a").num_frames == 4
    args = parser.parse_args(
        ["collect", "--env", "ALE/Breakout-v5", "--episodes", "1", "--max-steps", "5", "--size", "16"]
        + ["--seed", "1", "--policy", "random", "--out", str(tmp_path / "b"), "--quiet"]
    )
    assert args.func(args) == 0
    ds = VideoDataset(tmp_path / "b")
    assert ds.meta["policy"] == "random" and ds.meta["seed"] == 1 and ds.num_frames <= 6

"""Contracts of genie.data: round trip, episode-safe windows, splits, atomic appends, clear errors, loaders.

Letters: T frames per window or episode, H W pixels (synthetic frames are S x S).
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from genie.core.errors import GenieError, GenieFileNotFoundError, GenieValueError
from genie.data import EpisodeWriter, VideoDataset, WindowDataset
from genie.train.loop import window_loader

S = 4  # frame side for synthetic data
REPO = pathlib.Path(__file__).resolve().parents[1]


def coded_episode(ep: int, T: int, rng=None):
    """Frames whose pixels encode (episode id, frame index); actions/rewards encode the same."""
    frames = np.zeros((T, S, S, 3), np.uint8)
    frames[..., 0] = ep
    frames[..., 1] = np.arange(T)[:, None, None] % 256
    frames[..., 2] = np.arange(T)[:, None, None] // 256
    actions = (ep * 1000 + np.arange(T - 1)).astype(np.int64)
    rewards = (ep + np.arange(T - 1) / 1000).astype(np.float32)
    terminated = np.zeros(T - 1, bool)
    if T > 1:
        terminated[-1] = True
    return frames, actions, rewards, terminated


def write(root, lengths, with_actions=True):
    with EpisodeWriter(root, meta={"source": "gym", "env_id": "Test-v0", "num_actions": 4}) as w:
        for ep, T in enumerate(lengths):
            f, a, r, t = coded_episode(ep, T)
            if with_actions:
                w.add_episode(f, actions=a, rewards=r, terminated=t, truncated=np.zeros_like(t))
            else:
                w.add_episode(f)


def test_round_trip(tmp_path):
    root = tmp_path / "ds"
    write(root, [5, 9, 1])
    ds = VideoDataset(root)
    assert ds.num_episodes == 3 and ds.num_frames == 15 and ds.frame_shape == (S, S, 3)
    assert ds.has_actions and ds.has_rewards
    assert ds.meta["env_id"] == "Test-v0" and ds.meta["version"] == 1 and ds.meta["format"] == "genie-dataset"
    for ep, T in enumerate([5, 9, 1]):
        f, a, r, t = coded_episode(ep, T)
        got = ds.episode(ep)
        assert isinstance(got["frames"], np.memmap) and ds.episode_length(ep) == T
        np.testing.assert_array_equal(got["frames"], f)
        np.testing.assert_array_equal(got["actions"], a)
        np.testing.assert_array_equal(got["rewards"], r)
        np.testing.assert_array_equal(got["terminated"], t)
        assert got["actions"].dtype == np.int64 and got["rewards"].dtype == np.float32
    assert sorted(os.listdir(root)) == [".lock", "dataset.json", "episodes"]


def test_streamed_frames_and_no_actions(tmp_path):
    root = tmp_path / "ds"
    f, *_ = coded_episode(3, 300)
    with EpisodeWriter(root) as w:
        w.add_episode(iter(f))  # generator input is streamed to disk
    ds = VideoDataset(root)
    np.testing.assert_array_equal(ds.episode(0)["frames"], f)
    assert not ds.has_actions and ds.episode(0)["actions"] is None
    win = ds.read_window(0, 10, 4)
    assert win["actions"] is None and win["rewards"] is None
    assert set(WindowDataset(ds, 4, "all")[0]) == {"frames"}


def test_windows_never_cross_episodes_and_count(tmp_path):
    lengths = [3, 10, 1, 7, 16, 2, 8, 5, 12, 4, 9]
    root = tmp_path / "ds"
    write(root, lengths)
    ds = VideoDataset(root)
    T = 4
    for split in ("train", "val", "all"):
        eps = ds.split_episodes(split)
        index = ds.windows(T, split)
        assert len(index) == sum(max(0, lengths[e] - T + 1) for e in eps)
        seen = set()
        for i in range(len(index)):
            ep, start = index[i]
            assert ep in eps and 0 <= start and start + T <= lengths[ep]
            w = ds.read_window(ep, start, T)
            frames = w["frames"]
            assert (frames[..., 0] == ep).all()  # one episode only
            np.testing.assert_array_equal(frames[:, 0, 0, 1], np.arange(start, start + T))  # consecutive
            np.testing.assert_array_equal(w["actions"], ep * 1000 + np.arange(start, start + T - 1))
            full = ds.episode(ep)
            for key in ("rewards", "terminated"):
                np.testing.assert_array_equal(w[key], full[key][start : start + T - 1])
                assert w[key].dtype == full[key].dtype
            seen.add((ep, start))
        assert len(seen) == len(index)  # every window distinct
        assert index[-1] == index[len(index) - 1]
        with pytest.raises(IndexError):
            index[len(index)]


def test_splits_deterministic_and_disjoint(tmp_path):
    write(tmp_path / "a", [3] * 30)
    ds = VideoDataset(tmp_path / "a")
    train, val = ds.split_episodes("train"), ds.split_episodes("val")
    assert val == [27, 28, 29] and train == list(range(27))
    assert not set(train) & set(val) and sorted(train + val) == ds.split_episodes("all")
    assert VideoDataset(tmp_path / "a").split_episodes("val") == val
    write(tmp_path / "b", [3, 3])
    assert VideoDataset(tmp_path / "b").split_episodes("val") == [1]
    write(tmp_path / "c", [3])
    one = VideoDataset(tmp_path / "c")
    assert one.split_episodes("train") == [0] and one.split_episodes("val") == []
    with pytest.raises(GenieValueError, match="split"):
        one.windows(2, "val")
    with pytest.raises(GenieValueError, match="Unknown split"):
        one.split_episodes("test")


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np
    from genie.data import EpisodeWriter
    root = sys.argv[1]
    with EpisodeWriter(root) as w:
        for ep in range(100000):
            frames = np.full((60, 64, 64, 3), ep % 256, np.uint8)
            frames[:, 0, 0, 1] = np.arange(60)
            w.add_episode(frames, actions=np.full(59, ep, np.int64))
    """
)


def test_crash_mid_write_leaves_finished_episodes(tmp_path):
    root = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(root)], cwd=REPO)
    try:
        # Wait on the condition (4 finished episodes), however slow the machine; the writer never
        # stops by itself, so its exit is a failure. 600 s only guards against a hung writer.
        safety = time.monotonic() + 600
        eps = root / "episodes"
        while not (eps.is_dir() and len(os.listdir(eps)) >= 4):
            if proc.poll() is not None:
                pytest.fail(f"writer subprocess exited with {proc.returncode} before writing 4 episodes")
            if time.monotonic() > safety:
                pytest.fail("writer subprocess wrote fewer than 4 episodes in 600 s: it looks hung")
            time.sleep(0.02)
        time.sleep(0.05)  # let it get part-way into the next episode, so the kill lands mid-write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ds = VideoDataset(root)
    assert ds.num_episodes >= 4
    for ep in range(ds.num_episodes):
        got = ds.episode(ep)
        assert got["frames"].shape == (60, 64, 64, 3)
        assert (got["frames"][:, 1:, :, :] == ep % 256).all()
        np.testing.assert_array_equal(got["actions"], np.full(59, ep))
    n = ds.num_episodes
    with EpisodeWriter(root) as w:  # a new writer appends after the crash and clears stale temp files
        assert not any((root / ".tmp").iterdir())
        path = w.add_episode(np.zeros((60, 64, 64, 3), np.uint8), actions=np.zeros(59, np.int64))
    assert path.name == f"ep_{n:06d}"
    assert VideoDataset(root).num_episodes == n + 1 and not (root / ".tmp").exists()


def test_append_continues_numbering_and_checks_shape(tmp_path):
    root = tmp_path / "ds"
    write(root, [3, 4])
    with EpisodeWriter(root) as w:
        assert w.frame_shape == (S, S, 3)
        assert w.add_episode(coded_episode(2, 5)[0]).name == "ep_000002"
    assert VideoDataset(root).num_episodes == 3
    with pytest.raises(GenieValueError, match="does not match"), EpisodeWriter(root) as w:
        w.add_episode(np.zeros((3, 8, 8, 3), np.uint8))
    with pytest.raises(GenieValueError, match="--size"):
        EpisodeWriter(root, frame_shape=(8, 8, 3))
    with pytest.raises(GenieValueError, match="env_id"):
        EpisodeWriter(root, meta={"env_id": "Other-v0"})
    assert VideoDataset(root).num_episodes == 3 and not (root / ".tmp").exists()


def test_writer_rejects_bad_input(tmp_path):
    root = tmp_path / "ds"
    with EpisodeWriter(root) as w:
        with pytest.raises(GenieValueError, match="transitions"):
            w.add_episode(np.zeros((3, S, S, 3), np.uint8), actions=[0, 1, 2])
        with pytest.raises(GenieError, match="uint8"):
            w.add_episode(np.zeros((3, S, S, 3), np.float32))
        with pytest.raises(GenieValueError, match="at least one frame"):
            w.add_episode(iter([]))
        with pytest.raises(GenieError):
            EpisodeWriter(root)  # a second concurrent writer
    assert not root.exists()  # nothing committed: no empty dataset left behind
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(GenieValueError, match="not a genie dataset"):
        EpisodeWriter(tmp_path / "junk")


def test_clear_reader_errors(tmp_path):
    with pytest.raises(GenieFileNotFoundError, match="genie collect"):
        VideoDataset(tmp_path / "missing")
    (tmp_path / "nojson").mkdir()
    with pytest.raises(GenieFileNotFoundError, match="dataset.json"):
        VideoDataset(tmp_path / "nojson")
    root = tmp_path / "ds"
    write(root, [3, 4])
    meta_path = root / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(GenieValueError, match="version 99"):
        VideoDataset(root)
    meta_path.write_text("{not json")
    with pytest.raises(GenieValueError, match="corrupt"):
        VideoDataset(root)
    meta_path.write_text(json.dumps(meta))
    for d in (root / "episodes").iterdir():
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    with pytest.raises(GenieValueError, match="no episodes"):
        VideoDataset(root)
    write(tmp_path / "short", [3, 5, 2])
    ds = VideoDataset(tmp_path / "short")
    with pytest.raises(GenieValueError, match="shorter --context"):
        ds.windows(6, "all")
    with pytest.raises(GenieValueError, match="shorter --context"):
        WindowDataset(tmp_path / "short", T=6)
    with pytest.raises(GenieValueError, match="--batch-size >= 1"):
        window_loader(WindowDataset(tmp_path / "short", T=2), batch_size=0, steps=1, seed=0)
    frames_path = tmp_path / "short" / "episodes" / "ep_000001" / "frames.npy"
    frames_path.write_bytes(frames_path.read_bytes()[:-10])  # truncated data, intact header
    with pytest.raises(GenieValueError, match="truncated"):
        VideoDataset(tmp_path / "short").read_window(1, 0, 5)
    frames_path.write_bytes(b"garbage")
    with pytest.raises(GenieValueError, match="ep_000001"):
        VideoDataset(tmp_path / "short")


def test_window_dataset_and_loader(tmp_path):
    root = tmp_path / "ds"
    write(root, [6, 9, 7, 8, 5, 6, 10, 6, 7, 8])
    wd = WindowDataset(root, T=4, split="train")
    item = wd[0]
    assert set(item) == {"frames", "actions", "rewards", "terminated"}
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (4, S, S, 3)
    assert item["actions"].dtype == torch.int64 and item["actions"].shape == (3,)
    assert item["rewards"].dtype == torch.float32 and item["terminated"].dtype == torch.bool

    def epochs(seed):
        loader = window_loader(wd, batch_size=5, steps=3, seed=seed, grad_accum=2)
        return [b["actions"].clone() for b in loader]

    a, b = epochs(0), epochs(0)
    assert len(a) == 3 * 2  # one micro-batch per (step, micro-step)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # seeded: same order
    assert not all(torch.equal(x, y) for x, y in zip(a, epochs(1)))
    batch = next(iter(window_loader(wd, batch_size=5, steps=1, seed=0)))
    assert batch["frames"].shape == (5, 4, S, S, 3)
    ep = batch["frames"][:, :, 0, 0, 0].long()
    assert (ep == ep[:, :1]).all()  # each sample from one episode
    assert (batch["actions"] // 1000 == ep[:, :3]).all()  # actions belong to that episode's frames


def test_loader_with_worker(tmp_path):
    root = tmp_path / "ds"
    write(root, [6, 9, 7])
    wd = WindowDataset(root, T=3, split="all")
    batches = list(window_loader(wd, batch_size=2, steps=4, seed=0, num_workers=1))  # dataset pickled
    assert len(batches) == 4
    in_process = list(window_loader(wd, batch_size=2, steps=4, seed=0))
    assert all(torch.equal(x["frames"], y["frames"]) for x, y in zip(batches, in_process))
    for batch in batches:
        first = batch["frames"][:, :1, 0, 0, 1].long()
        np.testing.assert_array_equal(batch["frames"][:, :, 0, 0, 1].long() - first, [[0, 1, 2]] * 2)


def test_loader_under_accelerate(tmp_path):
    from accelerate import Accelerator

    root = tmp_path / "ds"
    write(root, [6, 9, 7, 8, 5, 6])
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(window_loader(WindowDataset(root, T=3), batch_size=4, steps=5, seed=0))
    batches = list(loader)
    assert len(batches) == len(loader)
    for batch in batches:
        assert batch["frames"].shape == (4, 3, S, S, 3)
        ep = batch["frames"][:, :, 0, 0, 0]
        assert (ep == ep[:, :1]).all()

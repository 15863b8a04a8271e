"""Dataset throughput and memory: write a synthetic dataset with EpisodeWriter, then read random windows.

Letters: T frames per episode or window.

    python benchmarks/data.py --frames 1000000 --size 64 --episode-length 1000 --out /tmp/genie-bench-data

Prints write frames/s, read frames/s and the process RSS (VmRSS, and its anonymous part RssAnon, from
/proc/self/status) at 10%, 25%, 50% and 100% of each phase, to show memory stays flat as the data grows.
Reads go through VideoDataset.read_window, so they include the memmap LRU and the copy out of the page cache.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from genie.data import EpisodeWriter, VideoDataset

MILESTONES = (0.10, 0.25, 0.50, 1.00)


def rss_mib() -> tuple[float, float]:
    """(VmRSS, RssAnon) of this process in MiB."""
    fields = {}
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("RssAnon", float("nan"))


def write_phase(out: pathlib.Path, frames: int, size: int, episode_length: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    # One random block, shifted per episode: generating fresh noise would dominate the timing.
    base = rng.integers(0, 256, (episode_length + 64, size, size, 3), dtype=np.uint8)
    written, seconds, next_milestone = 0, 0.0, 0
    bar = tqdm(total=frames, unit="frame", desc="write", file=sys.stderr)
    with EpisodeWriter(
        out, frame_shape=(size, size, 3), meta={"source": "video", "benchmark": True}
    ) as writer:
        episode = 0
        while written < frames:
            T = min(episode_length, frames - written)
            shift = episode % 64
            episode_frames = base[shift : shift + T]
            actions = rng.integers(0, 8, T - 1)
            rewards = rng.random(T - 1, dtype=np.float32)
            start = time.perf_counter()
            writer.add_episode(
                episode_frames, actions=actions, rewards=rewards, terminated=np.zeros(T - 1, bool)
            )
            seconds += time.perf_counter() - start
            written += T
            episode += 1
            bar.update(T)
            while next_milestone < len(MILESTONES) and written >= MILESTONES[next_milestone] * frames:
                tqdm.write(_line("write", MILESTONES[next_milestone], written, seconds), file=sys.stdout)
                next_milestone += 1
    bar.close()
    return written / seconds


def _line(phase, fraction, frames, seconds) -> str:
    vm, anon = rss_mib()
    return (
        f"{phase} {fraction:>4.0%}: {frames:>9d} frames, {frames / seconds:>10.0f} frames/s, "
        f"VmRSS {vm:7.1f} MiB (anon {anon:7.1f} MiB)"
    )


def read_phase(out: pathlib.Path, T: int, seed: int) -> float:
    """Random T-frame windows until as many frames as the dataset holds have been read."""
    ds = VideoDataset(out)
    index = ds.windows(T, "all")
    rng = np.random.default_rng(seed + 1)
    total = ds.num_frames
    read, seconds, next_milestone = 0, 0.0, 0
    bar = tqdm(total=total, unit="frame", desc="read", file=sys.stderr)
    while read < total:
        picks = rng.integers(0, len(index), 64)
        windows = [index[i] for i in picks.tolist()]
        start = time.perf_counter()
        for episode, first in windows:
            window = ds.read_window(episode, first, T)
        seconds += time.perf_counter() - start
        assert window["frames"].shape[0] == T
        read += len(picks) * T
        bar.update(len(picks) * T)
        while next_milestone < len(MILESTONES) and read >= MILESTONES[next_milestone] * total:
            tqdm.write(_line("read ", MILESTONES[next_milestone], read, seconds), file=sys.stdout)
            next_milestone += 1
    bar.close()
    return read / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100_000, help="frames to write")
    parser.add_argument("--size", type=int, default=64, help="frames are size x size x 3")
    parser.add_argument("--episode-length", type=int, default=1000, help="frames per episode")
    parser.add_argument("--window", type=int, default=16, help="T of the random windows read back")
    parser.add_argument("--out", default="/tmp/genie-bench-data", help="dataset folder (must not exist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the dataset instead of deleting it")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    if out.exists():
        sys.exit(f"error: {out} exists: delete it or pass another --out.")
    gib = args.frames * args.size * args.size * 3 / 2**30
    free_gib = shutil.disk_usage(out.parent if out.parent.exists() else "/").free / 2**30
    if gib > 0.9 * free_gib:
        sys.exit(f"error: {gib:.1f} GiB needed but only {free_gib:.1f} GiB free: pass fewer --frames.")
    print(f"dataset: {args.frames} frames of {args.size}x{args.size}x3 ({gib:.2f} GiB) into {out}")
    started = time.perf_counter()
    try:
        write_fps = write_phase(out, args.frames, args.size, args.episode_length, args.seed)
        read_fps = read_phase(out, args.window, args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    vm, _ = rss_mib()
    print(
        f"wrote {args.frames} frames at {write_fps:.0f} frames/s, read {args.window}-frame windows at "
        f"{read_fps:.0f} frames/s, final VmRSS {vm:.1f} MiB, in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()

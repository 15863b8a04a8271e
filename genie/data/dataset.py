"""Reading an episode dataset: memory-mapped episodes, streaming window reads, episode-safe training windows.

Letters: E episodes, T frames per window or episode, H W pixels.

The on-disk layout, the alignment of actions to frames and the atomicity of appends are described in
genie/data/episodes.py, which also holds `EpisodeWriter`.

Checks: opening a dataset checks dataset.json, every episode's shape and manifest (sizes, blake2b of the
small arrays) and that the episodes make one dataset (check_episodes); the first read of an episode
(episode() or read_window) hashes its frames.npy too, once per episode and dataset object.
`check_dataset` (`genie check`) hashes everything at once.
"""

from __future__ import annotations

import collections
import os
import pathlib
import sys

import numpy as np
import torch
import torch.utils.data

from genie.core.errors import GenieFileNotFoundError, GenieValueError
from genie.data.episodes import (
    _MAKE_HINT,
    TRANSITION_ARRAYS,
    _list_episode_dirs,
    _read_meta,
    _read_npy_header,
    check_episodes,
    verify_episode,
)


class WindowIndex:
    """All start positions of T-frame windows inside the given episodes. O(episodes) memory.

    Window i maps to (episode, start) through cumulative per-episode window counts and a binary search.
    """

    def __init__(self, episodes: list[int], lengths: list[int], T: int):
        self.T = T
        self.episodes = np.asarray(episodes, dtype=np.int64)
        counts = np.maximum(np.asarray(lengths, dtype=np.int64) - T + 1, 0)
        self.cumulative = np.concatenate([[0], np.cumsum(counts)])  # (E+1,)

    def __len__(self) -> int:
        return int(self.cumulative[-1])

    def __getitem__(self, i: int) -> tuple[int, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        k = int(np.searchsorted(self.cumulative, i, side="right")) - 1
        return int(self.episodes[k]), int(i - self.cumulative[k])


class VideoDataset:
    """Read-only, streaming view of a dataset folder; frames stay on disk (memory-mapped)."""

    max_open_episodes = 8  # LRU of memory-mapped episodes (episode())
    max_open_files = 64  # LRU of episodes whose files are open for read_window (no mapping, no RSS growth)

    def __init__(self, root):
        self.root = pathlib.Path(root)
        hint = _MAKE_HINT.format(root=self.root)
        if not self.root.is_dir():
            raise GenieFileNotFoundError(f"No dataset at {self.root}: {hint}.")
        if not (self.root / "dataset.json").exists():
            raise GenieFileNotFoundError(
                f"{self.root} has no dataset.json, so it is not a genie dataset: {hint}."
            )
        self.meta = _read_meta(self.root)
        self.frame_shape = tuple(self.meta["frame_shape"])
        self._dirs = _list_episode_dirs(self.root)
        if not self._dirs:
            raise GenieValueError(f"The dataset at {self.root} has no episodes: {hint}.")
        self._manifested = check_episodes(self.root, self._dirs)
        self._lengths = [self._read_length(d) for d in self._dirs]
        counts = {name: sum((d / f"{name}.npy").exists() for d in self._dirs) for name in TRANSITION_ARRAYS}
        present = {name: n == len(self._dirs) for name, n in counts.items()}
        partial = [
            f"{name} in {n} of {len(self._dirs)} episodes"
            for name, n in counts.items()
            if 0 < n < len(self._dirs)
        ]
        if partial:  # written so (each manifest vouches for its episode), but training would not use them
            print(
                f"{self.root}: the episodes differ in what they recorded ({', '.join(partial)}), so the "
                "dataset reads as without those arrays: write every episode alike to use them.",
                file=sys.stderr,
                flush=True,
            )
        self._present = present
        self.has_actions = present["actions"]
        self.has_rewards = present["rewards"]
        self.num_episodes = len(self._dirs)
        self.num_frames = int(sum(self._lengths))
        self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._verified: set[int] = set()  # episodes whose arrays matched their manifest
        self._files: collections.OrderedDict[int, dict] = collections.OrderedDict()

    def _read_length(self, folder: pathlib.Path) -> int:
        path = folder / "frames.npy"
        shape, dtype, _ = _read_npy_header(path)
        if dtype != np.uint8 or len(shape) != 4 or tuple(shape[1:]) != self.frame_shape:
            raise GenieValueError(
                f"Episode {path} holds {dtype} {shape}, not uint8 (T, {', '.join(map(str, self.frame_shape))}): "
                f"delete {folder} (or recreate the dataset)."
            )
        return int(shape[0])

    def __getstate__(self):  # DataLoader workers re-open memmaps and files lazily
        state = dict(self.__dict__)
        state["_cache"] = collections.OrderedDict()
        state["_files"] = collections.OrderedDict()
        return state

    def close(self) -> None:
        """Drop open memmaps and close cached file descriptors (also done on garbage collection)."""
        self._cache.clear()
        while self._files:
            _, files = self._files.popitem()
            for fd, _, _ in files.values():
                os.close(fd)

    def __del__(self):
        if getattr(self, "_files", None):
            self.close()

    def _episode_files(self, i: int) -> dict:
        """{name: (fd, data offset, dtype)} of episode i; an LRU of open descriptors read with os.pread."""
        if i in self._files:
            self._files.move_to_end(i)
            return self._files[i]
        self._verify(i)
        files = {}
        for name in ("frames", *TRANSITION_ARRAYS):
            path = self._dirs[i] / f"{name}.npy"
            if name == "frames" or self._present[name] or path.exists():
                _, dtype, offset = _read_npy_header(path)
                files[name] = (os.open(path, os.O_RDONLY), offset, dtype)
        self._files[i] = files
        while len(self._files) > self.max_open_files:
            _, old = self._files.popitem(last=False)
            for fd, _, _ in old.values():
                os.close(fd)
        return files

    def _verify(self, i: int) -> None:
        """blake2b of every array of episode i against its manifest, the first time the episode is read."""
        if i not in self._verified:
            verify_episode(self._dirs[i], full=True)
            self._verified.add(i)

    @property
    def unverified_episodes(self) -> int:
        """Episodes without a manifest.json (a dataset of genie before manifests): their bytes are unchecked."""
        return self._manifested.count(False)

    def __len__(self) -> int:
        return self.num_episodes

    def episode_length(self, i: int) -> int:
        return self._lengths[self._check_episode(i)]

    def _check_episode(self, i: int) -> int:
        if not -self.num_episodes <= i < self.num_episodes:
            raise GenieValueError(
                f"Episode {i} does not exist: {self.root} has episodes 0..{self.num_episodes - 1}."
            )
        return i % self.num_episodes

    def episode(self, i: int) -> dict:
        """{"frames": memmap (T, H, W, 3), "actions", "rewards", "terminated", "truncated": (T-1,) or None}."""
        i = self._check_episode(i)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        folder = self._dirs[i]
        self._verify(i)
        out = {"frames": np.load(folder / "frames.npy", mmap_mode="r")}
        for name in TRANSITION_ARRAYS:
            path = folder / f"{name}.npy"
            out[name] = np.load(path, mmap_mode="r") if path.exists() else None
        self._cache[i] = out
        while len(self._cache) > self.max_open_episodes:
            self._cache.popitem(last=False)
        return out

    def split_episodes(self, split: str) -> list[int]:
        """ "train" | "val" | "all". val = the last max(1, round(0.1 E)) episodes when E >= 2, else none."""
        E = self.num_episodes
        n_val = max(1, round(0.1 * E)) if E >= 2 else 0
        if split == "all":
            return list(range(E))
        if split == "train":
            return list(range(E - n_val))
        if split == "val":
            return list(range(E - n_val, E))
        raise GenieValueError(f"Unknown split {split!r}: use 'train', 'val' or 'all'.")

    def windows(self, T: int, split: str = "train") -> WindowIndex:
        """Every T-frame window of the split that lies inside one episode."""
        if not isinstance(T, (int, np.integer)) or T < 1:
            raise GenieValueError(
                f"Window length T must be a positive integer, got {T!r}: pass --context >= 1."
            )
        episodes = self.split_episodes(split)
        if not episodes:
            raise GenieValueError(
                f"The {split!r} split of {self.root} is empty (the dataset has {self.num_episodes} episode): "
                f"add at least one more episode, or use split 'all'."
            )
        lengths = [self._lengths[e] for e in episodes]
        index = WindowIndex(episodes, lengths, int(T))
        if len(index) == 0:
            raise GenieValueError(
                f"No {T}-frame window fits in the {split!r} split of {self.root} (longest episode: "
                f"{max(lengths)} frames): use a shorter --context (at most {max(lengths)}) or longer episodes."
            )
        return index

    def read_window(self, episode: int, start: int, T: int) -> dict:
        """Copies of frames [start, start+T) and their T-1 transitions (None where the data has none).

        Reads with os.pread on cached descriptors: a window costs a few syscalls and maps nothing.
        """
        episode = self._check_episode(episode)
        length = self._lengths[episode]
        if T < 1 or start < 0 or start + T > length:
            raise GenieValueError(
                f"Window [{start}, {start + T}) does not fit in episode {episode} of {length} frames: "
                f"use a start in 0..{length - T} and T <= {length}."
            )
        files = self._episode_files(episode)
        frame_bytes = int(np.prod(self.frame_shape))
        fd, offset, _ = files["frames"]
        out = {
            "frames": self._pread(fd, offset + start * frame_bytes, T * frame_bytes, episode).reshape(
                T, *self.frame_shape
            )
        }
        for name in ("actions", "rewards", "terminated"):
            if name not in files:
                out[name] = None
                continue
            fd, offset, dtype = files[name]
            raw = self._pread(fd, offset + start * dtype.itemsize, (T - 1) * dtype.itemsize, episode)
            out[name] = raw.view(dtype).astype(TRANSITION_ARRAYS[name], copy=dtype != TRANSITION_ARRAYS[name])
        return out

    def _pread(self, fd: int, offset: int, size: int, episode: int) -> np.ndarray:
        buffer = np.empty(size, np.uint8)
        if os.preadv(fd, [buffer], offset) != size:
            raise GenieValueError(
                f"Episode {self._dirs[episode]} is truncated: delete it (or recreate the dataset)."
            )
        return buffer


def check_dataset(root) -> VideoDataset:
    """Check dataset `root` as `genie check` does: dataset.json, the episodes as one dataset, and the
    blake2b of every array each manifest lists. Returns the dataset (see its unverified_episodes)."""
    ds = VideoDataset(root)
    for i in range(ds.num_episodes):
        ds._verify(i)
    return ds


class WindowDataset(torch.utils.data.Dataset):
    """Map-style dataset over every valid T-frame window of one split.

    Item: {"frames": uint8 (T, H, W, 3)} plus "actions" int64 (T-1,), "rewards" float32 (T-1,) and
    "terminated" bool (T-1,) when the dataset has them (keys absent otherwise).
    """

    def __init__(self, root_or_dataset, T: int, split: str = "train"):
        self.dataset = (
            root_or_dataset if isinstance(root_or_dataset, VideoDataset) else VideoDataset(root_or_dataset)
        )
        self.T = int(T)
        self.split = split
        self.index = self.dataset.windows(self.T, split)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        episode, start = self.index[i]
        window = self.dataset.read_window(episode, start, self.T)
        return {k: torch.from_numpy(v) for k, v in window.items() if v is not None}

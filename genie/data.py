"""Episode datasets on disk: atomic appends, memory-mapped streaming reads, episode-safe training windows.

Layout of a dataset folder (FORMAT_VERSION = 1):

    root/dataset.json                 {"format": "genie-dataset", "version": 1, "frame_shape": [H, W, 3],
                                       "source": "gym" | "video", "env_id", "num_actions", "env_kwargs", ...}
    root/episodes/ep_000000/frames.npy       uint8 (T, H, W, 3), read with np.load(mmap_mode="r")
                           /actions.npy      int64 (T-1,)    optional
                           /rewards.npy      float32 (T-1,)  optional
                           /terminated.npy   bool (T-1,)     optional
                           /truncated.npy    bool (T-1,)     optional
    root/.tmp/                        episodes being written (never read; cleaned by the next writer)
    root/.lock                        held (flock) by the one writer that may append

Alignment contract: an episode of T frames has T-1 transitions. `actions[t]` is the action taken at
frame t that produced frame t+1; `rewards[t]`, `terminated[t]` and `truncated[t]` belong to that same
transition. For a Gymnasium env: reset -> frame 0; step(actions[0]) -> frame 1, rewards[0],
terminated[0]; step(actions[1]) -> frame 2, ... A window of frames [s, s+T) therefore carries
actions[s : s+T-1].

Atomicity: an episode is written into `root/.tmp/<unique>/`, every file is fsynced, and the folder is
renamed to `root/episodes/ep_XXXXXX` in one `os.rename`. Readers list only `episodes/ep_*`, so a crash
leaves every finished episode readable and nothing half-written visible. `dataset.json` is replaced
atomically (tmp file + fsync + os.replace). One writer at a time (an exclusive flock on `root/.lock`).

Dimension letters: E episodes, T frames per window or episode, H, W frame height and width.
"""

from __future__ import annotations

import collections
import fcntl
import json
import os
import pathlib
import shutil
import uuid

import numpy as np
import torch
import torch.utils.data

from genie.errors import GenieError, GenieFileNotFoundError, GenieTypeError, GenieValueError

FORMAT = "genie-dataset"
FORMAT_VERSION = 1
EPISODES_DIR = "episodes"
TMP_DIR = ".tmp"
TRANSITION_ARRAYS = {
    "actions": np.int64,
    "rewards": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
}
_MAKE_HINT = (
    "create one with `genie collect --env ALE/Breakout-v5 --out {root}` or `genie ingest VIDEO --out {root}`"
)
_NPY_HEADER_BYTES = 128  # fixed-size .npy header so a streamed frames.npy can have its length patched in


# --- Small file helpers ---


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_json_atomic(path: pathlib.Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _npy_header(shape: tuple) -> bytes:
    """A version-1.0 .npy header for uint8 C-order data, padded to exactly _NPY_HEADER_BYTES."""
    shape = tuple(int(s) for s in shape)
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape!r}, }}"
    prefix = b"\x93NUMPY\x01\x00"
    body_len = _NPY_HEADER_BYTES - len(prefix) - 2
    text = text.ljust(body_len - 1) + "\n"
    return prefix + len(text).to_bytes(2, "little") + text.encode("latin1")


def _read_npy_header(path: pathlib.Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, byte offset of the data) of a C-order .npy file, without reading its data."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except (OSError, ValueError) as e:
        raise GenieValueError(
            f"{path} is unreadable ({e}): delete {path.parent} (or recreate the dataset)."
        ) from None
    if fortran:
        raise GenieValueError(f"{path} is Fortran-ordered: delete {path.parent} (or recreate the dataset).")
    return tuple(shape), dtype, offset


def _episode_index(name: str) -> int | None:
    if not name.startswith("ep_"):
        return None
    try:
        return int(name[3:])
    except ValueError:
        return None


def _list_episode_dirs(root: pathlib.Path) -> list[pathlib.Path]:
    folder = root / EPISODES_DIR
    if not folder.is_dir():
        return []
    found = [(_episode_index(p.name), p) for p in folder.iterdir() if p.is_dir()]
    return [p for i, p in sorted((i, p) for i, p in found if i is not None)]


def _read_meta(root: pathlib.Path) -> dict:
    path = root / "dataset.json"
    fix = f"delete {root} and recreate it ({_MAKE_HINT.format(root=root)})"
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenieValueError(f"{path} is corrupt ({e.__class__.__name__}): {fix}.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GenieValueError(f"{path} is not a genie dataset description: {fix}.")
    version = meta.get("version")
    if version != FORMAT_VERSION:
        raise GenieValueError(
            f"{root} uses dataset format version {version!r} but this genie reads version {FORMAT_VERSION}: "
            f"use the genie release that wrote it, or {fix}."
        )
    shape = meta.get("frame_shape")
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and shape[2] == 3
        and all(isinstance(s, int) and s > 0 for s in shape)
    ):
        raise GenieValueError(f"{path} has an invalid frame_shape {shape!r}: {fix}.")
    return meta


def _check_frame_shape(shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise GenieValueError(
            f"frame_shape must be (H, W, 3), got {shape}: pass RGB frames of shape (H, W, 3)."
        )
    return shape


# --- Writing ---


class EpisodeWriter:
    """Appends episodes to a dataset folder (created if missing). Use as a context manager.

    `frame_shape` may be None: it is then taken from the dataset (when appending) or the first episode.
    `meta` is merged into dataset.json (source, env_id, num_actions, env_kwargs, ...).
    """

    def __init__(self, root, frame_shape=None, meta: dict | None = None):
        self.root = pathlib.Path(root)
        self._created_root = not self.root.exists()
        if self.root.exists() and not self.root.is_dir():
            raise GenieValueError(f"{self.root} is a file, not a folder: choose another --out path.")
        meta_path = self.root / "dataset.json"
        if not self._created_root and not meta_path.exists():
            stray = [p.name for p in self.root.iterdir() if p.name not in (TMP_DIR, ".lock", EPISODES_DIR)]
            if stray or _list_episode_dirs(self.root):
                raise GenieValueError(
                    f"{self.root} exists and is not a genie dataset: choose a new or empty --out folder."
                )
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise GenieError(
                f"Another process is writing to {self.root}: wait for it to finish or use another --out folder."
            ) from None
        self._closed = False
        try:
            self._open(frame_shape, dict(meta or {}))
        except BaseException:
            self.close()
            raise

    def _open(self, frame_shape, meta: dict) -> None:
        shutil.rmtree(self.root / TMP_DIR, ignore_errors=True)  # leftovers of a crashed writer
        (self.root / TMP_DIR).mkdir()
        (self.root / EPISODES_DIR).mkdir(exist_ok=True)
        meta_path = self.root / "dataset.json"
        self.frame_shape = _check_frame_shape(frame_shape) if frame_shape is not None else None
        if meta_path.exists():
            existing = _read_meta(self.root)
            old_shape = tuple(existing["frame_shape"])
            if self.frame_shape is not None and self.frame_shape != old_shape:
                raise GenieValueError(
                    f"{self.root} holds {old_shape} frames, not {self.frame_shape}: "
                    f"use --size {old_shape[0]} to append, or a new --out folder."
                )
            for key in ("source", "env_id", "num_actions"):
                old, new = existing.get(key), meta.get(key)
                if old is not None and new is not None and old != new:
                    raise GenieValueError(
                        f"{self.root} holds data with {key}={old!r}, not {new!r}: use a new --out folder."
                    )
            self.frame_shape = old_shape
            merged = {**existing, **{k: v for k, v in meta.items() if v is not None}}
            if merged != existing:
                self._write_meta(merged)
            self.meta = merged
        else:
            self.meta = {"source": None, "env_id": None, "num_actions": None, "env_kwargs": {}, **meta}
        dirs = _list_episode_dirs(self.root)
        self._next_index = _episode_index(dirs[-1].name) + 1 if dirs else 0
        self.episodes_written = 0
        self.frames_written = 0

    def _write_meta(self, meta: dict) -> None:
        meta = {**meta, "format": FORMAT, "version": FORMAT_VERSION, "frame_shape": list(self.frame_shape)}
        _write_json_atomic(self.root / "dataset.json", meta)
        self.meta = meta

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        shutil.rmtree(self.root / TMP_DIR, ignore_errors=True)
        if self._created_root and not (self.root / "dataset.json").exists():
            shutil.rmtree(self.root, ignore_errors=True)  # nothing was committed: leave no empty dataset
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def add_episode(
        self, frames, actions=None, rewards=None, terminated=None, truncated=None
    ) -> pathlib.Path:
        """Write one episode atomically and return its folder.

        frames: uint8 array (T, H, W, 3), or any iterable of (H, W, 3) uint8 frames (streamed to disk, so
        long videos never sit in RAM). The transition arrays, when given, must have length T-1.
        """
        if self._closed:
            raise GenieValueError("This EpisodeWriter is closed: open a new one to append more episodes.")
        tmp = self.root / TMP_DIR / uuid.uuid4().hex
        tmp.mkdir()
        try:
            num_frames = self._write_frames(tmp / "frames.npy", frames)
            if num_frames < 1:
                raise GenieValueError("An episode needs at least one frame: pass a non-empty frames array.")
            given = {"actions": actions, "rewards": rewards, "terminated": terminated, "truncated": truncated}
            for name, values in given.items():
                if values is None:
                    continue
                array = np.asarray(values)
                if name == "actions" and array.size and not np.issubdtype(array.dtype, np.integer):
                    raise GenieTypeError(
                        f"actions must be integers, got {array.dtype}: pass discrete action ids."
                    )
                if array.shape != (num_frames - 1,):
                    raise GenieValueError(
                        f"{name} has shape {array.shape} but an episode of {num_frames} frames has "
                        f"{num_frames - 1} transitions: pass one value per transition (see the alignment contract)."
                    )
                _save_npy(tmp / f"{name}.npy", array.astype(TRANSITION_ARRAYS[name]))
            _fsync_dir(tmp)
            if not (self.root / "dataset.json").exists():
                self._write_meta(self.meta)
            final = self.root / EPISODES_DIR / f"ep_{self._next_index:06d}"
            os.rename(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._next_index += 1
        self.episodes_written += 1
        self.frames_written += num_frames
        return final

    def _write_frames(self, path: pathlib.Path, frames) -> int:
        if isinstance(frames, (np.ndarray, torch.Tensor)):
            frames = np.asarray(frames)
            self._check_frames(frames, batch=True)
            _save_npy(path, np.ascontiguousarray(frames))
            return len(frames)
        # Streamed: fixed-size header with a placeholder length, frames appended, header patched at the end.
        count = 0
        with open(path, "wb") as f:
            f.write(_npy_header((0, 0, 0, 3)))
            for frame in frames:
                frame = np.asarray(frame)
                self._check_frames(frame, batch=False)
                f.write(np.ascontiguousarray(frame).tobytes())
                count += 1
            f.seek(0)
            f.write(_npy_header((count, *self.frame_shape) if count else (0, 0, 0, 3)))
            f.flush()
            os.fsync(f.fileno())
        return count

    def _check_frames(self, frames: np.ndarray, batch: bool) -> None:
        shape = frames.shape[1:] if batch else frames.shape
        what = "frames (T, H, W, 3)" if batch else "each frame (H, W, 3)"
        if frames.ndim != (4 if batch else 3) or shape[-1] != 3:
            raise GenieValueError(f"Expected {what}, got shape {frames.shape}: pass RGB uint8 frames.")
        if frames.dtype != np.uint8:
            raise GenieTypeError(
                f"Expected uint8 frames, got {frames.dtype}: convert with frames.astype(np.uint8)."
            )
        if self.frame_shape is None:
            self.frame_shape = _check_frame_shape(shape)
        elif tuple(shape) != self.frame_shape:
            raise GenieValueError(
                f"Frame shape {tuple(shape)} does not match the dataset's {self.frame_shape}: "
                f"resize frames to {self.frame_shape[0]}x{self.frame_shape[1]} or use a new --out folder."
            )


# --- Reading ---


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

    def locate(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised __getitem__: window indices (N,) -> (episode ids (N,), starts (N,))."""
        indices = np.asarray(indices, dtype=np.int64)
        k = np.searchsorted(self.cumulative, indices, side="right") - 1
        return self.episodes[k], indices - self.cumulative[k]


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
        self._lengths = [self._read_length(d) for d in self._dirs]
        present = {name: all((d / f"{name}.npy").exists() for d in self._dirs) for name in TRANSITION_ARRAYS}
        self._present = present
        self.has_actions = present["actions"]
        self.has_rewards = present["rewards"]
        self.num_episodes = len(self._dirs)
        self.num_frames = int(sum(self._lengths))
        self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict()
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


def make_loader(
    root, T, batch_size, split="train", seed=0, num_workers=0, shuffle=True, drop_last=True
) -> torch.utils.data.DataLoader:
    """A plain map-style DataLoader of T-frame windows; seeded, and safe to pass to accelerate's prepare."""
    dataset = WindowDataset(root, T, split)
    if batch_size < 1:
        raise GenieValueError(f"batch_size must be at least 1, got {batch_size}: pass --batch-size >= 1.")
    if drop_last and len(dataset) < batch_size:
        raise GenieValueError(
            f"The {split!r} split has only {len(dataset)} windows of {T} frames, fewer than one batch of "
            f"{batch_size}: use a smaller --batch-size or --context, or more data."
        )
    generator = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )

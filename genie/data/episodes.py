"""The on-disk format of an episode dataset, and `EpisodeWriter`, the one way to append to it.

Letters: T frames per episode, H W pixels.

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

Reading (memory-mapped episodes, episode-safe training windows) is in genie/data/dataset.py.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import uuid

import numpy as np
import torch

from genie.core.errors import GenieError, GenieTypeError, GenieValueError
from genie.core.io import fsync_dir, read_header, write_json_atomic

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


def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


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
    """dataset.json of `root`, its header (format, version) and frame_shape checked."""
    path = root / "dataset.json"
    fix = f"delete {root} and recreate it ({_MAKE_HINT.format(root=root)})"
    meta = read_header(path, FORMAT, FORMAT_VERSION, "dataset", fix)
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
        write_json_atomic(self.root / "dataset.json", meta, sort_keys=True)
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
            fsync_dir(tmp)
            if not (self.root / "dataset.json").exists():
                self._write_meta(self.meta)
            final = self.root / EPISODES_DIR / f"ep_{self._next_index:06d}"
            os.rename(tmp, final)
            fsync_dir(final.parent)
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

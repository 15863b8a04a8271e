"""The on-disk format of an episode dataset, and `EpisodeWriter`, the one way to append to it.

Letters: T frames per episode, H W pixels.

Layout of a dataset folder (FORMAT_VERSION = 1):

    root/dataset.json                 {"format": "genie-dataset", "version": 1, "frame_shape": [H, W, 3],
                                       "source": "gym" | "video", "env_id", "num_actions", "env_kwargs", ...,
                                       "runs": [{"first_episode", "started", "seed", ...}, ...]}
    root/episodes/ep_000000/frames.npy       uint8 (T, H, W, 3), read with np.load(mmap_mode="r")
                           /actions.npy      int64 (T-1,)    optional
                           /rewards.npy      float32 (T-1,)  optional
                           /terminated.npy   bool (T-1,)     optional
                           /truncated.npy    bool (T-1,)     optional
                           /manifest.json    size + blake2b of each array above
    root/.tmp/                        episodes being written (never read; cleaned by the next writer)
    root/.lock                        held (flock) by the one writer that may append

Alignment contract: an episode of T frames has T-1 transitions. `actions[t]` is the action taken at
frame t that produced frame t+1; `rewards[t]`, `terminated[t]` and `truncated[t]` belong to that same
transition. For a Gymnasium env: reset -> frame 0; step(actions[0]) -> frame 1, rewards[0],
terminated[0]; step(actions[1]) -> frame 2, ... A window of frames [s, s+T) therefore carries
actions[s : s+T-1].

Atomicity: an episode is written into `root/.tmp/<unique>/`, every file is fsynced, and the folder is
renamed to `root/episodes/ep_XXXXXX` in one `os.rename`. Readers list only `episodes/ep_*`, so a crash
leaves every finished episode readable and nothing half-written visible (crash points episode-staged and
episode-committed, step = the episode's index). `dataset.json` is replaced
atomically (tmp file + fsync + os.replace). One writer at a time (an exclusive flock on `root/.lock`,
genie.core.io.OutputLock).

Checksums: each episode's manifest.json lists its arrays. Opening a dataset checks that every listed
array is there with its size and that the small (transition) arrays match their blake2b, which costs a
stat per file; the first read of an episode (VideoDataset.episode or read_window) also hashes frames.npy,
once per episode and process (`verify_episode(folder, full=True)`). A dataset is one whole: every episode
has a manifest, or none has (written by genie before manifests: read, unverified); a dataset that mixes
both, or an episode holding an array its manifest does not list, is refused (`check_episodes`).

Runs: dataset.json lists every run that wrote into the dataset; run k wrote episodes first_episode(k) up
to first_episode(k+1). A run whose meta has a `seed` (episode k resets with seed + k, genie collect) must
start past the seeds earlier runs used, so no episode repeats: `EpisodeWriter.next_seed` says where.

Reading (memory-mapped episodes, episode-safe training windows) is in genie/data/dataset.py.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time
import uuid

import numpy as np
import torch

from genie.core.errors import GenieCorruptFileError, GenieTypeError, GenieValueError
from genie.core.io import (
    OutputLock,
    check_files,
    crash_point,
    file_entry,
    fsync_dir,
    header,
    read_header,
    write_json_atomic,
    writing,
)

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
MANIFEST = "manifest.json"
_HASHED_ON_OPEN = 1 << 20  # arrays up to this size are hashed when an episode is opened; frames.npy is not
_verified: set = set()  # (path, size, mtime_ns) of files whose blake2b matched, in this process


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
    """(shape, dtype, byte offset of the data) of a C-order .npy file, without reading its data (the
    caller has checked its episode against the manifest: check_episodes, verify_episode)."""
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


def verify_episode(folder, full: bool = True) -> set | None:
    """Check episode `folder` against its manifest.json: every listed array exists with its size, the
    small ones match their blake2b, and with `full` frames.npy does too. One GenieCorruptFileError naming
    the file otherwise. Returns the names the manifest lists; None for an episode without one (written
    before manifests: nothing to check)."""
    folder = pathlib.Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        return None
    fix = f"delete {folder} (or recreate the dataset)"
    files = read_header(path, "genie-episode", 1, "episode manifest", fix).get("files")
    check_files(folder, files, fix, full=False)
    for name, entry in files.items():
        if not full and entry["bytes"] > _HASHED_ON_OPEN:
            continue
        stat = (folder / name).stat()
        key = (str(folder / name), stat.st_size, stat.st_mtime_ns)
        if key not in _verified:
            check_files(folder, files, fix, only={name})
            _verified.add(key)
    return set(files)


def check_episodes(root, dirs: list[pathlib.Path]) -> list[bool]:
    """Check the episodes `dirs` of dataset `root` against their manifests (verify_episode, full=False) and
    that they make one dataset: every episode has a manifest.json or none has (a dataset of genie before
    manifests), and none holds an array its manifest does not list. Returns which have a manifest."""
    listed = [verify_episode(folder, full=False) for folder in dirs]
    has = [names is not None for names in listed]
    if any(has) and not all(has):
        bad = dirs[has.index(False)]
        raise GenieCorruptFileError(
            f"Episode {bad} has no manifest.json while the other episodes of {root} have one, so its arrays "
            f"cannot be checked: run `genie check {root}`, then delete {bad} (or recreate the dataset)."
        )
    for folder, names in zip(dirs, listed):
        for name in () if names is None else ("frames", *TRANSITION_ARRAYS):
            if f"{name}.npy" not in names and (folder / f"{name}.npy").exists():
                raise GenieCorruptFileError(
                    f"{folder / name}.npy is not listed in the manifest.json of its episode (it was added "
                    f"later): run `genie check {root}`, then delete {folder} (or recreate the dataset)."
                )
    return has


def verify_dataset(root) -> int:
    """Fully check every episode of dataset `root` (blake2b of every array); returns the episode count."""
    root = pathlib.Path(root)
    _read_meta(root)
    dirs = _list_episode_dirs(root)
    check_episodes(root, dirs)
    for folder in dirs:
        verify_episode(folder, full=True)
    return len(dirs)


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


def _runs(meta: dict) -> list[dict]:
    """The runs that wrote into a dataset (datasets of older genie: one run, with its top-level seed)."""
    runs = meta.get("runs")
    if isinstance(runs, list) and all(isinstance(r, dict) for r in runs):
        return runs
    return [{"first_episode": 0, "seed": meta.get("seed")}]


def _next_seed(meta: dict, num_episodes: int) -> int | None:
    """The first seed past every seed earlier runs reset episodes with (run k: seed_k + its k-th episode)."""
    runs = _runs(meta)
    ends = []
    for k, run in enumerate(runs):
        seed, first = run.get("seed"), run.get("first_episode", 0)
        last = runs[k + 1].get("first_episode", num_episodes) if k + 1 < len(runs) else num_episodes
        if isinstance(seed, int) and isinstance(first, int) and last > first:
            ends.append(seed + last - first)
    return max(ends) if ends else None


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
        self._lock = OutputLock(self.root).acquire()
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
        dirs = _list_episode_dirs(self.root)
        self._next_index = _episode_index(dirs[-1].name) + 1 if dirs else 0
        self.next_seed = None
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
            self.next_seed = _next_seed(existing, self._next_index) if dirs else None
            seed = meta.get("seed")
            if isinstance(seed, int) and self.next_seed is not None and seed < self.next_seed:
                raise GenieValueError(
                    f"{self.root} already holds episodes reset with seeds up to {self.next_seed - 1}: pass "
                    f"--seed {self.next_seed} (or more) to append new ones, or use a new --out folder."
                )
            self.frame_shape = old_shape
            # Written with this run's first episode (a run that writes nothing changes nothing).
            self.meta = {**existing, **{k: v for k, v in meta.items() if v is not None}}
        else:
            self.meta = {"source": None, "env_id": None, "num_actions": None, "env_kwargs": {}, **meta}
        run = {k: v for k, v in meta.items() if k != "action_names"}
        self._run = {
            "first_episode": self._next_index,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **run,
        }
        self._run_recorded = False
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
        self._lock.release()

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
        final = self.root / EPISODES_DIR / f"ep_{self._next_index:06d}"
        with writing(final, cleanup=tmp):
            num_frames = self._write_episode(tmp, final, frames, actions, rewards, terminated, truncated)
        self._next_index += 1
        self.episodes_written += 1
        self.frames_written += num_frames
        return final

    def _write_episode(self, tmp, final, frames, actions, rewards, terminated, truncated) -> int:
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
            files = {p.name: file_entry(p) for p in sorted(tmp.iterdir())}
            write_json_atomic(tmp / MANIFEST, {**header("genie-episode", 1), "files": files})
            if not self._run_recorded:  # before its first episode lands, so a crash leaves it recorded
                self._write_meta({**self.meta, "runs": [*self._previous_runs(), self._run]})
                self._run_recorded = True
            crash_point("episode-staged", self._next_index)
            os.rename(tmp, final)  # the commit point of the episode
            fsync_dir(final.parent)
            crash_point("episode-committed", self._next_index)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return num_frames

    def _previous_runs(self) -> list[dict]:
        if not (self.root / "dataset.json").exists():
            return []
        return _runs(self.meta) if self._next_index else []

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

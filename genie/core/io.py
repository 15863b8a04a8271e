"""Atomic writes and versioned headers: every file genie writes, and how it reads them back.

A write goes into a temporary sibling, is fsynced, and is renamed into place, so an interrupted write
leaves the previous version readable and nothing half-written visible. Every JSON description genie
writes (a dataset's dataset.json, a model's config.json, a world's world.json) opens with
{"format": ..., "version": ...}; `read_header` checks both and says, in one sentence, how to fix a file
that is missing, corrupt, of another kind or of another version.

Also here: checksums (`file_entry`, `check_files`: size + blake2b of every file a manifest lists), the
one-writer lock of an output folder (`OutputLock`), "disk full" as one sentence (`writing`), and the
fault-injection hook the crash tests use (`crash_point`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from genie.core.errors import (
    GenieCorruptFileError,
    GenieDiskFullError,
    GenieFileNotFoundError,
    GenieLockedError,
    GenieValueError,
)

CRASH_EXIT_CODE = 137  # what a shell reports for kill -9


def fsync_dir(path) -> None:
    """Make a rename inside folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder) -> None:
    """fsync every file and folder under `folder` (and `folder` itself), so a rename of it is durable."""
    for parent, dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(parent, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(parent)


def _umask() -> int:
    """The process umask, read without changing it where /proc says it (os.umask would, for a moment)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path, folder: bool) -> None:
    """Give a file or folder made by tempfile (0600 / 0700) the mode a plain open()/mkdir() gives under the
    process umask, so a world or dataset written for others stays readable by them."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def write_json_atomic(path, data: dict, sort_keys: bool = False, crash_at: tuple | None = None) -> None:
    """Write `data` as JSON to `path`: temporary sibling, fsync, rename, fsync of the folder. `crash_at`:
    the (phase, step) of the crash_point between the fsync of the temporary file and its rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            public_mode(tmp, folder=False)
            json.dump(data, f, indent=2, sort_keys=sort_keys)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        if crash_at is not None:
            crash_point(*crash_at)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary folder; on success it replaces `path` in one atomic exchange where the OS has one
    (Linux renameat2), else by two renames; the old folder is removed only after."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    public_mode(tmp, folder=True)
    try:
        yield tmp
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists() and _exchange(tmp, path):
        fsync_dir(path.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
        return
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.rename(path, old)
    os.rename(tmp, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (renameat2 RENAME_EXCHANGE); False where unsupported."""
    rename = getattr(_libc(), "renameat2", None)
    if rename is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if rename(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # this filesystem (or kernel) cannot exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def header(fmt: str, version: int) -> dict:
    return {"format": fmt, "version": version}


def read_header(path, fmt: str, version: int, what: str, fix: str, readable: tuple = ()) -> dict:
    """Read JSON file `path` whose header must be (fmt, version), or an older version in `readable`
    (the caller converts it). `what` names the thing in errors ("dataset", "model checkpoint", "world");
    `fix` is the sentence's remedy. Returns the whole dict."""
    path = Path(path)
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenieCorruptFileError(f"{path} is corrupt ({e.__class__.__name__}): {fix}.") from None
    except OSError as e:  # missing, a folder, unreadable: a file its folder should hold
        raise GenieCorruptFileError(
            f"{path} is missing or unreadable ({e.__class__.__name__}): {fix}."
        ) from None
    if not isinstance(info, dict) or info.get("format") != fmt:
        raise GenieValueError(f"{path} is not a genie {what}: {fix}.")
    if info.get("version") != version and info.get("version") not in readable:
        raise GenieValueError(
            f"{path} has {what} format version {info.get('version')!r}, this genie reads {version}: "
            f"use the genie release that wrote it, or {fix}."
        )
    return info


# --- Checksums ---


def file_digest(path) -> str:
    """blake2b (32-byte digest, hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def file_entry(path) -> dict:
    """The manifest entry of one file: {"bytes": size, "blake2b": digest}."""
    return {"bytes": os.path.getsize(path), "blake2b": file_digest(path)}


def check_files(folder, files, fix: str, full: bool = True, only=None) -> None:
    """Check the files a manifest lists ({relative name: file_entry}) under `folder`: each exists, has its
    size and (with `full`) its blake2b. `only` limits the check to some names. One
    GenieCorruptFileError naming the file and `fix` otherwise."""
    folder = Path(folder)
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("blake2b"), str)
        for e in files.values()
    ):
        raise GenieCorruptFileError(f"The checksum list of {folder} is malformed: {fix}.")
    for name, entry in files.items():
        if only is not None and name not in only:
            continue
        path = folder / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise GenieCorruptFileError(f"{path} is missing (its folder lists it): {fix}.") from None
        if size != entry["bytes"]:
            raise GenieCorruptFileError(
                f"{path} is truncated or altered ({size} bytes, {entry['bytes']} were written): {fix}."
            )
        if full and file_digest(path) != entry["blake2b"]:
            raise GenieCorruptFileError(f"{path} is corrupt (its blake2b checksum does not match): {fix}.")


# --- Disk full ---


def _is_disk_full(e: BaseException, path) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    if "No space left" in text or "StorageFull" in text or "os error 28" in text:
        return True
    if "write failed" in text:  # torch's zip writer: "PytorchStreamWriter failed writing file ..."
        folder = Path(path)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free < 16 << 20
    return False


def mount_point(path) -> Path:
    """The mount point of the filesystem `path` is (or would be) on: its nearest existing folder, walked up
    to the first mount."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


@contextlib.contextmanager
def writing(path, cleanup=None):
    """Writes under `path` inside this block: a full disk becomes one GenieDiskFullError sentence naming
    the filesystem, after removing `cleanup` (the half-written staging folder, or file), so the disk is
    not left fuller."""
    try:
        yield
    except GenieDiskFullError:
        raise
    except Exception as e:
        if not _is_disk_full(e, path):
            raise
        if cleanup is not None and Path(cleanup).is_dir():
            shutil.rmtree(cleanup, ignore_errors=True)
        elif cleanup is not None:
            with contextlib.suppress(OSError):
                os.unlink(cleanup)
        raise GenieDiskFullError(
            f"No space left on {mount_point(path)} while writing {path}: free space or choose another "
            "--out; nothing was lost."
        ) from None


# --- One writer per output folder ---


class OutputLock:
    """An exclusive flock on FOLDER/.lock, which also holds the writer's PID. The kernel drops a flock when
    its process dies, so a lock left by a killed writer is free: the next writer takes it over and says
    so. Not re-entrant: a second OutputLock on the same folder fails, in this process too."""

    def __init__(self, folder, create: bool = True):
        self.folder, self._file, self.create = Path(folder), None, create  # create=False: never make FOLDER

    def acquire(self) -> OutputLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise GenieValueError(f"{self.folder} is a file, not a folder: choose another --out path.")
        if self.create:
            self.folder.mkdir(parents=True, exist_ok=True)
        elif not (self.folder / ".lock").is_file():
            raise GenieFileNotFoundError(f"{self.folder} has no lock file to take.")
        f = open(self.folder / ".lock", "a+" if self.create else "r+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(f)
            f.close()
            who = f"Another process (PID {pid})" if pid else "Another process"
            raise GenieLockedError(
                f"{who} is writing to {self.folder}: wait for it to finish or use another --out folder."
            ) from None
        previous = _read_pid(f)
        if previous and previous != os.getpid():
            print(
                f"{self.folder}: took over the lock of process {previous}, which ended without releasing it.",
                file=sys.stderr,
                flush=True,
            )
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is None:
            return
        f, self._file = self._file, None
        with contextlib.suppress(OSError):  # the folder may be gone already (nothing was committed)
            f.seek(0)
            f.truncate()
            f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(f) -> int | None:
    f.seek(0)
    text = f.read().strip()
    return int(text) if text.isdigit() else None


# --- Fault injection (tests) ---


def crash_point(phase: str, step: int | None = None) -> None:
    """End the process here at once, as kill -9 would (no cleanup, no flush), when the environment says
    GENIE_CRASH_AT=<phase> (and GENIE_CRASH_STEP=<step>, when set, matches). Used by tests/test_crash_safety.py."""
    if os.environ.get("GENIE_CRASH_AT") != phase:
        return
    want = os.environ.get("GENIE_CRASH_STEP")
    if want is not None and step is not None and int(want) != step:
        return
    os._exit(CRASH_EXIT_CODE)

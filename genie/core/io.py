"""Atomic writes and versioned headers: every file genie writes, and how it reads them back.

A write goes into a temporary sibling, is fsynced, and is renamed into place, so an interrupted write
leaves the previous version readable and nothing half-written visible. Every JSON description genie
writes (a dataset's dataset.json, a model's config.json, a world's world.json) opens with
{"format": ..., "version": ...}; `read_header` checks both and says, in one sentence, how to fix a file
that is missing, corrupt, of another kind or of another version.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from genie.core.errors import GenieValueError


def fsync_dir(path) -> None:
    """Make a rename inside folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path, data: dict, sort_keys: bool = False) -> None:
    """Write `data` as JSON to `path`: temporary sibling, fsync, rename, fsync of the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=sort_keys)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary folder; on success it replaces `path` (the old one is removed only after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        raise GenieValueError(f"{path} is corrupt ({e.__class__.__name__}): {fix}.") from None
    if not isinstance(info, dict) or info.get("format") != fmt:
        raise GenieValueError(f"{path} is not a genie {what}: {fix}.")
    if info.get("version") != version and info.get("version") not in readable:
        raise GenieValueError(
            f"{path} has {what} format version {info.get('version')!r}, this genie reads {version}: "
            f"use the genie release that wrote it, or {fix}."
        )
    return info

"""World folders: what a trained world is on disk, and how it is read, written, built and exported.

A world folder holds `world.json` (format, version, num_actions, image_size, the env id and frame fit
of its training data, defaults for MaskGIT steps and temperature) and one checkpoint folder per model:
`tokenizer/`, `dynamics/`, optionally `lam/` (infers actions between the frames of a clip prompt, and
`genie eval world` needs it; play needs only the dynamics' frozen copy of its codebook) and `reward/`
(reward and termination of imagined transitions). Optional: `prompts/`.

world.json lists its "parts": the blake2b of each model's config.json (which lists the weights') and the
size + blake2b of each prompt file, checked on load. A world is written with one commit point: the whole
folder is staged in a sibling `.NAME.staging-*` (what else the folder held, such as `train/`, carried over
as hard links), fsynced, and swapped in by two renames (the old folder to `.NAME.old-*`, the staging to
NAME), the old one removed after. An interrupted write therefore leaves the previous world or the new
one, never a mix; the next read or write of the folder puts back a world moved aside, removes what was
left and says so in one line. One writer at a time (genie.core.io.OutputLock on the folder's .lock).
Crash points (genie.core.io.crash_point): world-staged, world-moved (between the renames), world-committed.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import torch

from dynamics.lam import LatentActionModel
from dynamics.model import DynamicsModel
from genie.checkpoint import load_model, save_model
from genie.core.config import dynamics_preset, preset
from genie.core.errors import GenieError, GenieFileNotFoundError, GenieValueError, positive_int
from genie.core.frames import FIT_HELP, check_fit
from genie.core.io import (
    OutputLock,
    check_files,
    crash_point,
    file_digest,
    file_entry,
    fsync_dir,
    fsync_tree,
    header,
    public_mode,
    read_header,
    write_json_atomic,
    writing,
)
from tokenizer.model import VideoTokenizer

WORLD_FORMAT = "genie-world"
WORLD_VERSION = 1
PARTS = ("tokenizer", "dynamics", "lam", "reward")  # the first two are required
PROMPTS = "prompts"
_RESERVED = ("format", "version", "path", "parts")  # keys of world.json that are not the caller's info
# Temporary names an interrupted write left inside a world folder (genie <= 0.3 replaced parts in place).
_INSIDE_LEFTOVER = re.compile(
    r"\.(tokenizer|dynamics|lam|reward|prompts)\.(tmp|old)-.*|\.world\.json\..*\.tmp"
)
_REWRITE = "rerun the command that wrote it (`genie train world --resume` or `genie export`)"


# --- Play defaults (maskgit_steps, temperature, fit) ---


def check_temperature(value) -> float:
    """A sampling temperature: a finite number >= 0 (0 samples greedily), else one GenieValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GenieValueError(f"temperature must be a number >= 0, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise GenieValueError(
            f"temperature must be a finite number >= 0 (0 samples greedily), got {value!r}."
        )
    return float(value)


def check_play_defaults(info: dict, where: str) -> None:
    """The defaults a world's info may hold for play: maskgit_steps an integer >= 1, temperature a finite
    number >= 0, fit one of FITS. Otherwise one GenieValueError naming `where` (its world.json) and the field."""
    fix = "or remove it to use the default"
    if "maskgit_steps" in info:
        try:
            positive_int(info["maskgit_steps"], "maskgit_steps")
        except GenieValueError:
            raise GenieValueError(
                f"{where} has maskgit_steps {info['maskgit_steps']!r}, not an integer >= 1: set it to the "
                f"MaskGIT steps per frame (e.g. 8), {fix}."
            ) from None
    if "temperature" in info:
        try:
            check_temperature(info["temperature"])
        except GenieValueError:
            raise GenieValueError(
                f"{where} has temperature {info['temperature']!r}, not a finite number >= 0: set it (1.0 "
                f"samples, 0 is greedy), {fix}."
            ) from None
    if "fit" in info:
        try:
            check_fit(info["fit"])
        except GenieValueError:
            raise GenieValueError(
                f"{where} has fit {info['fit']!r}, not one of {FIT_HELP}: set it to the fit of the world's "
                f"training data, {fix} (crop)."
            ) from None


# --- Reading ---

SHIPPED_WORLDS = Path(__file__).resolve().parent.parent / "assets" / "worlds"  # genie/assets/worlds/<name>/


def shipped_worlds() -> list[str]:
    """Names of the worlds that ship with genie (e.g. 'breakout'): `--world NAME` opens one."""
    return sorted(p.name for p in SHIPPED_WORLDS.glob("*") if (p / "world.json").is_file())


def world_path(path) -> Path:
    """A world folder, or the name of a shipped world when no folder of that name exists here."""
    p = Path(path)
    if not p.exists() and isinstance(path, str) and "/" not in path and path in shipped_worlds():
        return SHIPPED_WORLDS / path
    return p


def read_world(path) -> tuple[dict, dict]:
    """Validate a world folder (or a shipped world's name) -> (info from world.json, {part: model})."""
    path = world_path(path)
    tidy_world(path)
    if not path.exists():
        raise GenieFileNotFoundError(
            f"No world folder at {path}: pass a world folder, a shipped world ({', '.join(shipped_worlds())}), "
            f"or train one with `genie train world --out {path}`."
        )
    if not (path / "world.json").exists():
        raise GenieFileNotFoundError(
            f"{path} is not a world folder (world.json missing): pass a folder written by `genie train world`."
        )
    info = read_header(
        path / "world.json",
        WORLD_FORMAT,
        WORLD_VERSION,
        "world",
        "retrain the world with `genie train world`",
    )
    for key in ("num_actions", "image_size"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GenieValueError(
                f"{path / 'world.json'} has no valid {key} ({value!r}): retrain the world with `genie train world`."
            )
    check_play_defaults(info, str(path / "world.json"))
    for part in PARTS[:2]:
        if not (path / part / "config.json").exists():
            raise GenieFileNotFoundError(
                f"World {path} is missing its {part}/ checkpoint: retrain it with `genie train world`."
            )
    parts = info.get("parts")
    if parts is not None and not isinstance(parts, dict):
        raise GenieValueError(f"{path / 'world.json'} has no valid parts list: {_REWRITE}.")
    if isinstance(parts, dict):  # written by this genie: each part is the one world.json was written with
        for part, digest in parts.items():
            if part == PROMPTS:
                check_files(path / PROMPTS, digest, f"restore them, or {_REWRITE}")
                continue
            config = path / part / "config.json"
            if part not in PARTS or not config.exists() or file_digest(config) != digest:
                raise GenieValueError(
                    f"World {path} has a {part}/ that is not the one its world.json was written with (an "
                    f"interrupted write): {_REWRITE}."
                )
    listed = (
        parts if isinstance(parts, dict) else {p: None for p in PARTS if (path / p / "config.json").exists()}
    )
    models = {part: load_model(path / part, part) for part in PARTS if part in listed}
    info["path"] = str(path)
    return info, models


# --- Leftovers of interrupted writes ---


def _leftovers(path: Path) -> tuple[list[Path], list[Path]]:
    """(folders an interrupted swap moved aside, staging copies and temporary files) of world `path`."""
    olds, other = [], []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            if p.name.startswith(f".{path.name}.old-"):
                olds.append(p)
            elif p.name.startswith(f".{path.name}.staging-"):
                other.append(p)
    if path.is_dir():
        other += [p for p in path.iterdir() if _INSIDE_LEFTOVER.fullmatch(p.name)]
    return sorted(olds, key=lambda p: p.stat().st_mtime_ns), sorted(other)


def tidy_world(path) -> list[str]:
    """Undo what an interrupted write of world folder `path` left: a world it moved aside (.NAME.old-*)
    while NAME is missing is put back, staging copies and temporary files are removed, and one line on
    stderr says so. Returns the names removed. Nothing is touched while a writer holds the lock."""
    path = Path(os.path.abspath(path))
    try:
        olds, other = _leftovers(path)
        if not olds and not other:
            return []
        restored = False
        if olds and not path.exists():  # killed between the two renames of a swap: put the old world back
            with OutputLock(olds[-1], create=False):  # a writer still swapping holds it: GenieLockedError
                if not path.exists():
                    os.rename(olds[-1], path)
                    restored = True
        if not path.is_dir():  # a live writer between its renames, or nothing to put back: touch nothing
            return []
        with OutputLock(path, create=False):  # never creates the folder; a writer holding it: skip
            olds, other = _leftovers(path)  # listed again under the lock
            if not (path / "world.json").exists():
                olds = []  # the folder is not a world (yet): what was moved aside may be the only copy
            _remove(olds + other)
    except (GenieError, OSError):
        return []
    if not olds and not other and not restored:
        return []
    names = [p.name for p in olds + other]
    said = "put back the world it had moved aside and removed " if restored else "removed "
    print(
        f"{path}: an interrupted world write was cleaned up: {said}{', '.join(names) or 'nothing else'}.",
        file=sys.stderr,
        flush=True,
    )
    return names


def _remove(paths: list[Path]) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    for folder in {p.parent for p in paths}:
        fsync_dir(folder)


# --- Writing: stage the whole folder, then one swap ---


def save_world(
    path, tokenizer, dynamics, lam=None, info: dict | None = None, dtype=None, reward=None, prompts=None
) -> Path:
    """Write a world folder: one checkpoint per model, its prompts/ (copied from folder `prompts`, default
    those already in the folder) and world.json, staged beside it and swapped in at once. Holds the
    folder's lock while writing."""
    models = dict(zip(PARTS, (tokenizer, dynamics, lam, reward)))
    check_play_defaults(info or {}, f"The info for {Path(path) / 'world.json'}")
    tidy_world(path)
    with OutputLock(path):
        source = Path(prompts) if prompts is not None else Path(path) / PROMPTS
        return _write_world(Path(path), models, info or {}, dtype, source, _link_or_copy)


def export_world(src, dst, dtype: torch.dtype | None = torch.float16, with_lam: bool = True) -> Path:
    """Copy a world folder without its training state (train/), weights cast to `dtype` (fp16 halves the
    size; loading casts back to fp32 on CPU). For shipping a world. `with_lam=False` leaves the LAM out:
    playing needs only its codebook, which the dynamics keeps; `genie eval world` needs the LAM."""
    src, dst = world_path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise GenieValueError(f"Cannot export world {src} onto itself: pass another --out folder.")
    info, models = read_world(src)
    info = {k: v for k, v in info.items() if k not in _RESERVED}
    if not with_lam:
        models.pop("lam", None)
    tidy_world(dst)
    with OutputLock(dst):
        return _write_world(dst, models, info, dtype, src / PROMPTS, shutil.copy2)


def write_world_info(path, info: dict) -> None:
    """Replace the info of world folder `path` (world.json) under its lock, atomically. Its parts and the
    shapes of its models (num_actions, image_size) are kept: they describe the folder, not the info."""
    path = Path(path)
    if not (path / "world.json").exists():
        raise GenieFileNotFoundError(
            f"{path} is not a world folder (world.json missing): pass a folder written by `genie train world`."
        )
    tidy_world(path)
    with OutputLock(path):
        old = read_header(
            path / "world.json",
            WORLD_FORMAT,
            WORLD_VERSION,
            "world",
            "retrain the world with `genie train world`",
        )
        kept = {k: old[k] for k in ("num_actions", "image_size", "parts") if k in old}
        for key in ("num_actions", "image_size"):
            if key in info and info[key] != kept.get(key):
                raise GenieValueError(
                    f"{key} is {kept.get(key)!r} for the models of {path}, not {info[key]!r}: leave it out of "
                    "the info (it is the models')."
                )
        info = {k: v for k, v in info.items() if k not in _RESERVED}
        check_play_defaults(info, f"The info for {path / 'world.json'}")
        write_json_atomic(path / "world.json", {**header(WORLD_FORMAT, WORLD_VERSION), **info, **kept})


def _write_world(path: Path, models: dict, info: dict, dtype, prompts: Path, copy) -> Path:
    """Stage world `path` in a fresh sibling folder (models, `prompts` copied with `copy`, whatever else the
    folder holds as hard links, world.json), fsync it, and swap it in. The caller holds the lock."""
    target = Path(os.path.abspath(path))
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    public_mode(staging, folder=True)
    with writing(path):
        try:
            parts = {}
            for part, model in models.items():
                if model is not None:
                    save_model(model, staging / part, dtype=dtype)
                    parts[part] = file_digest(staging / part / "config.json")
            if prompts.is_dir():
                shutil.copytree(prompts, staging / PROMPTS, copy_function=copy)
                files = sorted(p for p in (staging / PROMPTS).rglob("*") if p.is_file())
                parts[PROMPTS] = {str(p.relative_to(staging / PROMPTS)): file_entry(p) for p in files}
            _carry(target, staging)
            base = {
                "num_actions": models["dynamics"].cfg.num_actions,
                "image_size": models["tokenizer"].cfg.image_size,
            }
            info = {k: v for k, v in info.items() if k not in _RESERVED}
            world = {**header(WORLD_FORMAT, WORLD_VERSION), **base, **info, "parts": parts}
            write_json_atomic(staging / "world.json", world)
            fsync_tree(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        crash_point("world-staged")
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(target, old)
            crash_point("world-moved")
        os.rename(staging, target)  # the commit point
        fsync_dir(target.parent)
        crash_point("world-committed")
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _carry(target: Path, staging: Path) -> None:
    """Hard links (copies where the filesystem has none) in `staging` of everything folder `target` holds
    that is not the world itself (train/, notes, the .lock the writer holds), so the swap keeps it."""
    if not target.is_dir():
        return
    skip = {*PARTS, PROMPTS, "world.json"}
    for p in target.iterdir():
        if p.name in skip or _INSIDE_LEFTOVER.fullmatch(p.name):
            continue
        if p.is_symlink():
            os.symlink(os.readlink(p), staging / p.name)
        elif p.is_dir():
            shutil.copytree(p, staging / p.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(p, staging / p.name)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)  # what a world folder holds is written by renames, never in place: sharing is safe
    except OSError:
        shutil.copy2(src, dst)


def random_world(path, preset_name: str = "tiny", seed: int = 0, **info) -> Path:
    """An untrained world folder of a preset (tests, benchmarks of speed): same shapes as a trained one."""
    torch.manual_seed(seed)
    tok = VideoTokenizer(preset("tokenizer", preset_name))
    lam = LatentActionModel(preset("lam", preset_name, image_size=tok.cfg.image_size))
    dyn = DynamicsModel(dynamics_preset(preset_name, tok.cfg, lam.cfg))
    dyn.set_action_codes(lam.action_vectors())
    return save_world(path, tok, dyn, lam, info)

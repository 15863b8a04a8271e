"""Checkpoints: a folder of safetensors weights + a JSON config that rebuilds the model with no other
input. Every folder and file is written atomically (genie/core/io.py), so an interrupted save leaves the
previous checkpoint readable. config.json lists the size and blake2b of model.safetensors, checked on
load, and weights holding NaN or inf are refused. MODEL_CLASSES is the registry of model kinds: it sits
above the models.

A training run folder (genie/train/loop.py) keeps each checkpoint in its own folder and commits it with
one atomic step, the rename of its `trainer.json` (the pointer):

    run/trainer.json           {"format": "genie-run", "version": 1, "step", "checkpoint": "ckpt-000600",
                                "train", "meta"}: replaced by one rename, the commit point
    run/ckpt-000600/model/     what `load_model(run)` rebuilds
    run/ckpt-000600/state/     accelerate state (weights, optimizer, RNG of every process)
    run/ckpt-000600/manifest.json   step, and size + blake2b of every file above, checked on resume
    run/.ckpt-000800.staging/  a checkpoint being written (never read; removed by the next run)

A new checkpoint is staged, fsynced and renamed to ckpt-NNNNNN/ before the pointer moves to it; the
previous one is removed only after. Runs of older genie (model/ and state/ beside a trainer.json without
"format") still resume and load; their next checkpoint is written in this layout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

try:
    from accelerate.utils import load as load_accelerate_file  # how accelerate reads its RNG pickles
except ImportError:  # accelerate < 0.32 read them with torch.load
    load_accelerate_file = torch.load

from dynamics.lam import LatentActionModel
from dynamics.model import DynamicsModel
from dynamics.reward import RewardModel
from genie.core.config import from_dict, to_dict, upgrade
from genie.core.errors import GenieCorruptFileError, GenieError, GenieFileNotFoundError, GenieValueError
from genie.core.io import (
    atomic_dir,
    check_files,
    crash_point,
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

FORMAT = "genie-model"
FORMAT_VERSION = 2  # 2: configs without the options removed after 0.1.0 (see genie.core.config.upgrade)
READABLE_VERSIONS = (1,)  # converted on load


MODEL_CLASSES = {
    "tokenizer": VideoTokenizer,
    "lam": LatentActionModel,
    "dynamics": DynamicsModel,
    "reward": RewardModel,
}


def model_class(kind: str):
    if not isinstance(kind, str) or kind not in MODEL_CLASSES:
        raise GenieValueError(f"Unknown model kind {kind!r}: expected tokenizer, lam, dynamics or reward.")
    return MODEL_CLASSES[kind]


def save_model(model, path, meta: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write model weights + config (+ meta) to folder `path` atomically.

    `path` = RUN/model of a training run folder replaces the model of the run's current checkpoint with a
    new commit of that checkpoint (same step and state: how the LAM's calibrated statistics are saved)."""
    path = Path(path)
    if path.name == "model" and is_run(path.parent):
        return recommit_model(path.parent, model, meta, dtype)
    with writing(path), atomic_dir(path) as tmp:
        write_model_files(tmp, model, meta, dtype)
    return path


def write_model_files(
    folder: Path, model, meta: dict | None = None, dtype: torch.dtype | None = None
) -> None:
    """model.safetensors + config.json (with the weights' size and blake2b) into existing folder `folder`."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    public_mode(folder / "model.safetensors", folder=False)  # safetensors writes 0600
    info = {**header(FORMAT, FORMAT_VERSION), "kind": model.kind, "config": to_dict(model.cfg)}
    files = {"model.safetensors": file_entry(folder / "model.safetensors")}
    write_json_atomic(folder / "config.json", {**info, "meta": meta or {}, "files": files})


def read_config(path, kind: str | None = None) -> dict:
    path = Path(path)
    if is_run(path):  # a training run folder: the model of its current checkpoint
        path = read_run(path)["dir"] / "model"
    elif path.name == "model" and not path.exists() and is_run(path.parent):  # RUN/model of older genie
        path = read_run(path.parent)["dir"] / "model"
    elif (path / "model" / "config.json").exists():
        path = path / "model"
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise GenieFileNotFoundError(
            f"No genie checkpoint at {path} (config.json missing): pass a folder written by `genie train`."
        )
    info = read_header(
        cfg_path,
        FORMAT,
        FORMAT_VERSION,
        "model checkpoint",
        "retrain it, or pass a folder written by `genie train`",
        READABLE_VERSIONS,
    )
    fix = "retrain it, or pass a folder written by `genie train`"
    if not isinstance(info.get("kind"), str) or info["kind"] not in MODEL_CLASSES:
        raise GenieValueError(f"{cfg_path} names no known model kind ({info.get('kind')!r}): {fix}.")
    for key, required in (("config", True), ("meta", False), ("files", False)):
        if (required or key in info) and not isinstance(info.get(key), dict):
            raise GenieValueError(f"{cfg_path} has no valid {key!r} object: {fix}.")
    if info["version"] >= 2 and "model.safetensors" not in info.get("files", {}):
        # every version-2 config lists its weights' checksum: without the list, a damaged file would load
        raise GenieCorruptFileError(
            f"{cfg_path} lists no checksum of model.safetensors (its 'files' object is missing or "
            "incomplete): retrain or restore the checkpoint."
        )
    if kind is not None and info.get("kind") != kind:
        raise GenieValueError(
            f"{path} holds a {info.get('kind')} checkpoint, not a {kind}: pass the {kind} folder."
        )
    info["path"] = str(path)
    return info


def load_model(path, kind: str | None = None, device="cpu", dtype: torch.dtype | None = torch.float32):
    """Rebuild a model from its checkpoint folder. Returns the model in eval mode."""
    info = read_config(path, kind)
    cls = model_class(info["kind"])
    # from_dict converts configs of older genie versions (removed options at their kept values).
    config = info["config"]
    if info["version"] == 1:
        config = upgrade(info["kind"], config, source=f"Checkpoint {info['path']}")
    try:
        model = cls(from_dict(info["kind"], config))
    except GenieError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError, RuntimeError) as e:
        raise GenieValueError(
            f"{info['path']}/config.json does not describe a {info['kind']} model this genie can build "
            f"({e.__class__.__name__}): retrain it, or pass a folder written by `genie train`."
        ) from None
    weights = Path(info["path"]) / "model.safetensors"
    if not weights.exists():
        raise GenieFileNotFoundError(
            f"Checkpoint {info['path']} has no model.safetensors: retrain or restore it."
        )
    if "files" in info:  # size and blake2b checked (version 1 configs may have no list; version 2 must)
        check_files(info["path"], info["files"], "retrain or restore the checkpoint")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise GenieCorruptFileError(
            f"Checkpoint weights {weights} are unreadable ({e.__class__.__name__}): retrain or restore them."
        ) from None
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise GenieCorruptFileError(
            f"Checkpoint weights {weights} hold NaN or infinite values (in {bad[0]}): the training diverged "
            "or the file is damaged; retrain or restore them."
        )
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise GenieValueError(
            f"Checkpoint {info['path']} has weights of other shapes than its config builds ({wrong[:3]}): "
            "it was written by another genie version; retrain it."
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise GenieValueError(
            f"Checkpoint {info['path']} does not match its config (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}): it was written by another genie version; retrain it."
        )
    model.meta = info.get("meta", {})
    model = model.to(device)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


# --- Training run folders: one commit point per checkpoint ---

RUN_FORMAT = "genie-run"
RUN_VERSION = 1
POINTER = "trainer.json"
MANIFEST = "manifest.json"
_CKPT = re.compile(r"ckpt-\d{6,}(\.\d+)?")
_LEFTOVER = re.compile(
    r"\.ckpt-\d{6,}\.staging|\.trainer\.json\..*\.tmp|\.state\.staging|\.(model|state)\.(tmp|old)-.*"
)


def is_run(folder) -> bool:
    return (Path(folder) / POINTER).is_file()


def read_run(run) -> dict | None:
    """The committed checkpoint of run folder `run`: trainer.json, plus "dir", the folder holding its model/
    and state/ (ckpt-NNNNNN/, or the run itself for runs of older genie, marked "legacy"). None when
    nothing was committed yet."""
    run = Path(run)
    path = run / POINTER
    if not path.exists():
        return None
    fix = "restore it, or start again with a new --out"
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenieCorruptFileError(f"{path} is corrupt ({e.__class__.__name__}): {fix}.") from None
    step = info.get("step") if isinstance(info, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise GenieCorruptFileError(f"{path} is not a genie training run record: {fix}.")
    if "format" not in info:  # older genie: model/ and state/ beside trainer.json
        return {**info, "dir": run, "legacy": True}
    if info.get("format") != RUN_FORMAT or info.get("version") != RUN_VERSION:
        raise GenieCorruptFileError(
            f"{path} has run format {info.get('format')!r} version {info.get('version')!r}, this genie "
            f"reads {RUN_FORMAT} {RUN_VERSION}: use the genie release that wrote it, or a new --out."
        )
    name = info.get("checkpoint")
    if not isinstance(name, str) or not _CKPT.fullmatch(name):
        raise GenieCorruptFileError(f"{path} names no checkpoint folder: {fix}.")
    return {**info, "dir": run / name, "legacy": False}


def verify_checkpoint(info: dict, rank: int = 0) -> None:
    """Check the committed checkpoint `info` (from read_run): every file its manifest lists, by size and
    blake2b, and the step it was written at. Older runs have no manifest: their folders must exist. Both:
    process `rank`'s RNG state must read, as accelerate reads it (accelerate skips an unreadable one with
    a log line, and the resume would silently not be exact)."""
    folder = info["dir"]
    fix = f"restore {folder}, or start again with a new --out"
    if info["legacy"]:
        if not (folder / "state").is_dir():
            raise GenieFileNotFoundError(f"{folder / 'state'} is missing, so nothing can resume: {fix}.")
    else:
        manifest = read_header(folder / MANIFEST, "genie-checkpoint", 1, "checkpoint manifest", fix)
        if manifest.get("step") != info["step"]:
            raise GenieCorruptFileError(
                f"{folder} holds step {manifest.get('step')!r} but {POINTER} says {info['step']}: {fix}."
            )
        check_files(folder, manifest.get("files"), fix)
    rng = folder / "state" / f"random_states_{rank}.pkl"
    if rank > 0 and not rng.exists():  # resumed on more processes than wrote it: theirs start fresh
        return
    try:
        states = load_accelerate_file(rng)
    except Exception as e:  # zeroed or cut short: unpickling fails in many ways
        raise GenieCorruptFileError(
            f"{rng} is missing or unreadable ({e.__class__.__name__}): {fix}."
        ) from None
    if not isinstance(states, dict) or "torch_manual_seed" not in states:
        raise GenieCorruptFileError(f"{rng} holds no random-number state: {fix}.")


def staging_dir(run, step: int, create: bool = True) -> Path:
    """The folder the checkpoint of `step` is written into; `create`: made fresh and empty (the main
    process does it, once)."""
    staging = Path(run) / f".ckpt-{step:06d}.staging"
    if not create:
        return staging
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def commit_checkpoint(run, staging: Path, step: int, record: dict, phase: str = "") -> Path:
    """Make the fully written `staging` (model/, state/) the current checkpoint of `run`, at `step`.

    Manifest, fsync of every file, rename to ckpt-NNNNNN/, then the one commit point: trainer.json
    replaced by a rename. The previous checkpoint is removed only after. `record` (train config, meta) is
    kept in trainer.json. GENIE_CRASH_AT=staged|renamed|pointer|committed ends the process at those points
    (pointer: trainer.json's temporary copy written, not renamed); `phase` prefixes their names."""
    run = Path(run)
    with writing(run, cleanup=staging):
        files = {
            p.relative_to(staging).as_posix(): file_entry(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        write_json_atomic(staging / MANIFEST, {**header("genie-checkpoint", 1), "step": step, "files": files})
        fsync_tree(staging)
        crash_point(f"{phase}staged", step)
        name = f"ckpt-{step:06d}"
        n = 0
        while (run / name).exists():
            n += 1
            name = f"ckpt-{step:06d}.{n}"
        os.rename(staging, run / name)
        fsync_dir(run)
        crash_point(f"{phase}renamed", step)
        pointer = {**header(RUN_FORMAT, RUN_VERSION), "step": step, "checkpoint": name, **record}
        write_json_atomic(run / POINTER, pointer, crash_at=(f"{phase}pointer", step))
    crash_point(f"{phase}committed", step)
    for p in run.iterdir():  # the previous checkpoint (and a run of older genie's model/ and state/)
        if (_CKPT.fullmatch(p.name) and p.name != name) or p.name in ("model", "state"):
            shutil.rmtree(p, ignore_errors=True)
    return run / name


def recommit_model(run, model, meta: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """A new commit of `run`'s current checkpoint with `model` as its model: same step, same state. The
    caller holds the run's OutputLock. GENIE_CRASH_AT=recommit ends the process once the new copy is
    staged; recommit-staged|-renamed|-pointer|-committed at the points of its commit."""
    run = Path(run)
    info = read_run(run)
    if info["legacy"]:  # a run of older genie: its model/ folder, as it was written then
        with writing(run), atomic_dir(run / "model") as tmp:
            write_model_files(tmp, model, meta, dtype)
        return run / "model"
    staging = staging_dir(run, info["step"])
    with writing(run, cleanup=staging):
        shutil.copytree(info["dir"] / "state", staging / "state", copy_function=_link_or_copy)
        write_model_files(staging / "model", model, meta, dtype)
    crash_point("recommit", info["step"])
    record = {k: info[k] for k in ("train", "meta") if k in info}
    return commit_checkpoint(run, staging, info["step"], record, phase="recommit-") / "model"


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)  # files of a checkpoint are never written in place, so sharing them is safe
    except OSError:
        shutil.copy2(src, dst)


def clean_run(run) -> list[str]:
    """Remove the leftovers of an interrupted checkpoint in run folder `run` (staging folders, checkpoint
    folders never made current, temporary files) and return their names. In a run of older genie, a
    model/ or state/ folder that an interrupted swap left only as .model.old-*/.state.old-* is restored."""
    run = Path(run)
    if not run.is_dir():
        return []
    info = read_run(run)
    if info is not None and info["legacy"]:
        for part in ("model", "state"):
            olds = sorted(run.glob(f".{part}.old-*"))
            if not (run / part).exists() and olds:
                os.rename(olds[0], run / part)
    current = info["dir"].name if info is not None and not info["legacy"] else None
    if current is not None and not info["dir"].is_dir():  # removing the others could lose the only good one
        raise GenieCorruptFileError(
            f"{run / POINTER} names {current}, which is missing, so nothing was removed: restore "
            f"{info['dir']}, or start again with a new --out."
        )
    removed = []
    for p in sorted(run.iterdir()):
        if _LEFTOVER.fullmatch(p.name) or (_CKPT.fullmatch(p.name) and p.name != current):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p.name)
    if removed:
        fsync_dir(run)
    return removed

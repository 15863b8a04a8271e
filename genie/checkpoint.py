"""Checkpoints: a folder of safetensors weights + a JSON config that rebuilds the model with no other
input. Every folder and file is written atomically: into a temporary sibling, then renamed into place,
so an interrupted save leaves the previous checkpoint readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from genie.config import from_dict, to_dict
from genie.errors import GenieFileNotFoundError, GenieValueError

FORMAT = "genie-model"
FORMAT_VERSION = 1


def model_class(kind: str):
    """Imported lazily so genie core never imports the model packages at module load."""
    if kind == "tokenizer":
        from tokenizer.model import VideoTokenizer

        return VideoTokenizer
    if kind == "lam":
        from genie.lam import LatentActionModel

        return LatentActionModel
    if kind == "dynamics":
        from dynamics.model import DynamicsModel

        return DynamicsModel
    if kind == "reward":
        from genie.reward import RewardModel

        return RewardModel
    raise GenieValueError(f"Unknown model kind {kind!r}: expected tokenizer, lam, dynamics or reward.")


def write_json_atomic(path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def save_model(model, path, meta: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write model weights + config (+ meta) to folder `path` atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        info = {"format": FORMAT, "version": FORMAT_VERSION, "kind": model.kind, "config": to_dict(model.cfg)}
        write_json_atomic(tmp / "config.json", {**info, "meta": meta or {}})
    return Path(path)


def read_config(path, kind: str | None = None) -> dict:
    path = Path(path)
    if (path / "model" / "config.json").exists():  # a training run folder: use its model
        path = path / "model"
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise GenieFileNotFoundError(
            f"No genie checkpoint at {path} (config.json missing): pass a folder written by `genie train`."
        )
    try:
        info = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenieValueError(
            f"Checkpoint config {cfg_path} is corrupt ({e.msg if hasattr(e, 'msg') else e}): retrain or restore it."
        ) from None
    if info.get("format") != FORMAT:
        raise GenieValueError(
            f"{path} is not a genie model checkpoint: pass a folder written by `genie train`."
        )
    if info.get("version") != FORMAT_VERSION:
        raise GenieValueError(
            f"Checkpoint {path} has format version {info.get('version')}, this genie reads {FORMAT_VERSION}: "
            "retrain it or use the genie version that wrote it."
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
    model = cls(from_dict(info["kind"], info["config"]))
    weights = Path(info["path"]) / "model.safetensors"
    if not weights.exists():
        raise GenieFileNotFoundError(
            f"Checkpoint {info['path']} has no model.safetensors: retrain or restore it."
        )
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise GenieValueError(
            f"Checkpoint weights {weights} are unreadable ({e}): retrain or restore them."
        ) from None
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
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

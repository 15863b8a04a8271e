"""Checkpoints: a folder of safetensors weights + a JSON config that rebuilds the model with no other
input. Every folder and file is written atomically (genie/core/io.py), so an interrupted save leaves the
previous checkpoint readable. MODEL_CLASSES is the registry of model kinds: it sits above the models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dynamics.lam import LatentActionModel
from dynamics.model import DynamicsModel
from dynamics.reward import RewardModel
from genie.core.config import from_dict, to_dict, upgrade
from genie.core.errors import GenieFileNotFoundError, GenieValueError
from genie.core.io import atomic_dir, header, read_header, write_json_atomic
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
    if kind not in MODEL_CLASSES:
        raise GenieValueError(f"Unknown model kind {kind!r}: expected tokenizer, lam, dynamics or reward.")
    return MODEL_CLASSES[kind]


def save_model(model, path, meta: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write model weights + config (+ meta) to folder `path` atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        info = {**header(FORMAT, FORMAT_VERSION), "kind": model.kind, "config": to_dict(model.cfg)}
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
    info = read_header(
        cfg_path,
        FORMAT,
        FORMAT_VERSION,
        "model checkpoint",
        "retrain it, or pass a folder written by `genie train`",
        READABLE_VERSIONS,
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
    model = cls(from_dict(info["kind"], config))
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

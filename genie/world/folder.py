"""World folders: what a trained world is on disk, and how it is read, written, built and exported.

A world folder holds `world.json` (format, version, num_actions, image_size, the env id and frame fit
of its training data, defaults for MaskGIT steps and temperature) and one checkpoint folder per model:
`tokenizer/`, `dynamics/`, optionally `lam/` (infers actions between the frames of a clip prompt, and
`genie eval world` needs it; play needs only the dynamics' frozen copy of its codebook) and `reward/`
(reward and termination of imagined transitions). Optional: `prompts/`.

world.json is written last and lists the blake2b of each part's config.json (which lists the weights'),
so a folder whose parts an interrupted write left from two different worlds is refused in one sentence,
never played. One writer at a time (genie.core.io.OutputLock on the folder's .lock).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from dynamics.lam import LatentActionModel
from dynamics.model import DynamicsModel
from genie.checkpoint import load_model, save_model
from genie.core.config import dynamics_preset, preset
from genie.core.errors import GenieFileNotFoundError, GenieValueError
from genie.core.io import OutputLock, file_digest, header, read_header, write_json_atomic, writing
from tokenizer.model import VideoTokenizer

WORLD_FORMAT = "genie-world"
WORLD_VERSION = 1
PARTS = ("tokenizer", "dynamics", "lam", "reward")  # the first two are required


def read_world(path) -> tuple[dict, dict]:
    """Validate a world folder -> (info from world.json, {part: model}) with every part it holds."""
    path = Path(path)
    if not path.exists():
        raise GenieFileNotFoundError(
            f"No world folder at {path}: train one with `genie train world --out {path}`."
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
    for part in PARTS[:2]:
        if not (path / part / "config.json").exists():
            raise GenieFileNotFoundError(
                f"World {path} is missing its {part}/ checkpoint: retrain it with `genie train world`."
            )
    parts = info.get("parts")
    if isinstance(parts, dict):  # written by this genie: each part is the one world.json was written with
        for part, digest in parts.items():
            config = path / part / "config.json"
            if part not in PARTS or not config.exists() or file_digest(config) != digest:
                raise GenieValueError(
                    f"World {path} has a {part}/ that is not the one its world.json was written with (an "
                    "interrupted write): rerun the command that wrote it (`genie train world --resume` or "
                    "`genie export`)."
                )
    listed = (
        parts if isinstance(parts, dict) else {p: None for p in PARTS if (path / p / "config.json").exists()}
    )
    models = {part: load_model(path / part, part) for part in PARTS if part in listed}
    info["path"] = str(path)
    return info, models


def write_world_info(path, info: dict) -> None:
    write_json_atomic(Path(path) / "world.json", {**header(WORLD_FORMAT, WORLD_VERSION), **info})


def save_world(
    path, tokenizer, dynamics, lam=None, info: dict | None = None, dtype=None, reward=None
) -> Path:
    """Write a world folder: one checkpoint per model + world.json (written last, so a folder without it
    is never taken for a complete world). Holds the folder's lock while writing."""
    with OutputLock(path):
        return _write_world(Path(path), tokenizer, dynamics, lam, info, dtype, reward)


def _write_world(path: Path, tokenizer, dynamics, lam, info, dtype, reward) -> Path:
    parts = {}
    with writing(path):
        for part, model in zip(PARTS, (tokenizer, dynamics, lam, reward)):
            if model is not None:
                save_model(model, path / part, dtype=dtype)
                parts[part] = file_digest(path / part / "config.json")
            elif (path / part).exists():  # a part of the world this one replaces
                shutil.rmtree(path / part)
        base = {"num_actions": dynamics.cfg.num_actions, "image_size": tokenizer.cfg.image_size}
        write_world_info(path, {**base, **(info or {}), "parts": parts})
    return path


def random_world(path, preset_name: str = "tiny", seed: int = 0, **info) -> Path:
    """An untrained world folder of a preset (tests, benchmarks of speed): same shapes as a trained one."""
    torch.manual_seed(seed)
    tok = VideoTokenizer(preset("tokenizer", preset_name))
    lam = LatentActionModel(preset("lam", preset_name, image_size=tok.cfg.image_size))
    dyn = DynamicsModel(dynamics_preset(preset_name, tok.cfg, lam.cfg))
    dyn.set_action_codes(lam.action_vectors())
    return save_world(path, tok, dyn, lam, info)


def export_world(src, dst, dtype: torch.dtype | None = torch.float16, with_lam: bool = True) -> Path:
    """Copy a world folder without its training state (train/), weights cast to `dtype` (fp16 halves the
    size; loading casts back to fp32 on CPU). For shipping a world. `with_lam=False` leaves the LAM out:
    playing needs only its codebook, which the dynamics keeps; `genie eval world` needs the LAM."""
    src, dst = Path(src), Path(dst)
    info, models = read_world(src)
    info = {k: v for k, v in info.items() if k not in ("format", "version", "path", "parts")}
    lam = models.get("lam") if with_lam else None
    with OutputLock(dst), writing(dst):
        if (src / "prompts").exists():
            if (dst / "prompts").exists():
                shutil.rmtree(dst / "prompts")
            shutil.copytree(src / "prompts", dst / "prompts")
        return _write_world(
            dst, models["tokenizer"], models["dynamics"], lam, info, dtype, models.get("reward")
        )

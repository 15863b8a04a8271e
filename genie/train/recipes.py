"""Training recipes: build a model from a preset sized to the data, and run the one training loop.

    train_tokenizer(data, out)                  -> run folder (model/ rebuilds the tokenizer)
    train_lam(data, out)                        -> run folder
    train_dynamics(data, tokenizer, lam, out)   -> run folder; the LAM and tokenizer are frozen
    train_world(data, out)                      -> world folder: tokenizer/, lam/, dynamics/, world.json,
                                                   prompts/, and train/<model>/ run folders

`steps` is the budget per model. With `resume`, each stage continues from its last checkpoint, and
stages already finished are skipped.

Letters: B batch, T frames, H W pixels, N tokens per frame, A latent actions, C code dim.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dynamics.lam import LatentActionModel
from dynamics.model import DynamicsModel
from dynamics.reward import RewardModel
from genie.checkpoint import load_model, read_config, read_run, save_model
from genie.core.config import PRESETS, STAGES, default_lr, default_steps, dynamics_preset, preset
from genie.core.errors import GenieError, GenieValueError
from genie.core.frames import to_float
from genie.core.io import OutputLock, writing
from genie.data import VideoDataset, WindowDataset
from genie.train import encoders
from genie.train.evaluate import calibrate_hazard
from genie.train.loop import TrainConfig, train
from genie.train.metrics import fit_action_mapping
from genie.world import save_world
from genie.world.folder import tidy_world
from tokenizer.model import VideoTokenizer


def _open_data(data) -> VideoDataset:
    return data if isinstance(data, VideoDataset) else VideoDataset(data)


def _check_size(ds: VideoDataset, image_size: int, patch: int, what: str) -> None:
    H, W = ds.frame_shape[:2]
    if H != W:
        raise GenieValueError(f"Frames are {H}x{W}; genie needs square frames: re-collect with --size.")
    if image_size % patch:
        raise GenieValueError(
            f"Frame size {image_size} is not a multiple of the {what} patch {patch}: re-collect with "
            f"--size {image_size - image_size % patch or patch} or pick another preset."
        )


def _scale(kind: str, preset_name: str, size: int) -> int:
    """How many times the preset's native frame size fits `size` (1 unless an integer multiple above
    it): a preset sized for 32x32 frames keeps its tokens per frame, and its cost, on 64x64 data."""
    native = PRESETS[kind].get(preset_name, {}).get("image_size")
    return size // native if native and size > native and size % native == 0 else 1


def _resumed(out, resume: bool, field: str, default, missing):
    """`field` of the model config a resumed run was built with (`missing` when that config predates
    the field), else `default`. An unreadable run gives `default`: the loop then names what is wrong."""
    if not (resume and (Path(out) / "trainer.json").exists()):
        return default
    try:
        return read_config(out)["config"].get(field, missing)
    except GenieError:
        return default


def _started(out, resume: bool) -> dict:
    """The train config a resumed run started with ({} for a new run): where --steps / --lr are not
    given it keeps them (an older genie's defaults too), not the preset's current ones."""
    return ((read_run(out) if resume else None) or {}).get("train", {})


def _defaults(out, resume: bool, preset_name: str, kind: str, steps, train_kw: dict) -> tuple[int, dict]:
    """Steps and train options where --steps / --lr are not given: a resumed run's own, else the preset's."""
    started = _started(out, resume)
    lr = train_kw.get("lr") or started.get("lr") or default_lr(preset_name)
    return steps or started.get("steps") or default_steps(preset_name, kind), {**train_kw, "lr": lr}


def _train_config(steps: int, **kw) -> TrainConfig:
    kw = {k: v for k, v in kw.items() if v is not None}
    if "save_every" in kw:  # steps between checkpoints (--save-every); TrainConfig.ckpt_every, 500 by default
        kw["ckpt_every"] = kw.pop("save_every")
    cfg = TrainConfig(steps=steps, **kw)
    if "warmup" not in kw:
        cfg = replace(cfg, warmup=min(cfg.warmup, max(1, steps // 10)))
    torch.manual_seed(cfg.seed)  # the model built next starts from the same weights in every process
    return cfg


def _data_meta(ds: VideoDataset, data) -> dict:
    return {
        "data": str(getattr(ds, "root", data)),
        "env_id": ds.meta.get("env_id"),
        "fit": ds.meta.get("fit", "crop"),
    }


def _fit(
    make_model, ds, data, T: int, steps: int, out, resume: bool, progress: bool, batch_fn=None, **train_kw
):
    """The tail every recipe shares: T-frame windows of the train split, a seeded model, the one loop."""
    windows = WindowDataset(ds, T, "train")
    train_cfg = _train_config(steps, **train_kw)  # seeds torch before the model is built
    model = make_model()
    summary = train(
        model, windows, train_cfg, out, resume, _data_meta(ds, data), batch_fn=batch_fn, progress=progress
    )
    summary["model"] = model
    return summary


def train_tokenizer(
    data,
    out,
    preset_name: str = "demo",
    steps: int | None = None,
    resume: bool = False,
    context: int | None = None,
    progress: bool = True,
    **train_kw,
) -> dict:
    ds = _open_data(data)
    size, scale = ds.frame_shape[0], _scale("tokenizer", preset_name, ds.frame_shape[0])
    patch = PRESETS["tokenizer"].get(preset_name, {}).get("patch", 1) * scale  # tokens per frame kept
    patch = _resumed(out, resume, "patch", patch, missing=patch)  # a run keeps the patch it started with
    cfg = preset("tokenizer", preset_name, image_size=size, patch=patch, context=context)
    _check_size(ds, cfg.image_size, cfg.patch, "tokenizer")
    steps, train_kw = _defaults(out, resume, preset_name, "tokenizer", steps, train_kw)
    return _fit(lambda: VideoTokenizer(cfg), ds, data, cfg.context, steps, out, resume, progress, **train_kw)


def train_lam(
    data,
    out,
    preset_name: str = "demo",
    steps: int | None = None,
    resume: bool = False,
    context: int | None = None,
    num_actions: int | None = None,
    progress: bool = True,
    **train_kw,
) -> dict:
    ds = _open_data(data)
    size = ds.frame_shape[0]
    pool = _scale("lam", preset_name, size)  # a 32x32 preset reads 64x64 frames pooled to 32x32
    pool = _resumed(out, resume, "pool", pool, missing=1)  # a run keeps its pool (older genie: none)
    cfg = preset("lam", preset_name, image_size=size, pool=pool, context=context, num_actions=num_actions)
    _check_size(ds, cfg.image_size // cfg.pool, cfg.patch, "LAM")
    steps, train_kw = _defaults(out, resume, preset_name, "lam", steps, train_kw)
    summary = _fit(
        lambda: LatentActionModel(cfg), ds, data, cfg.context, steps, out, resume, progress, **train_kw
    )
    lam = summary["model"]
    lam.calibrate(encoders.calibration_batches(ds, cfg.context))
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
        with OutputLock(out):  # the re-commit writes the run folder as train() does: one writer at a time
            meta = {**read_config(out)["meta"], "calibrated": True}  # same step, calibrated statistics
            save_model(lam, Path(out) / "model", meta=meta)
    return summary


def train_dynamics(
    data,
    tokenizer,
    lam,
    out,
    preset_name: str = "demo",
    steps: int | None = None,
    resume: bool = False,
    context: int | None = None,
    action_mode: str | None = None,
    progress: bool = True,
    **train_kw,
) -> dict:
    """`lam=None`: condition on the actions the data recorded (`genie collect`) instead of latent ones."""
    ds = _open_data(data)
    tokenizer = encoders.as_model(tokenizer, "tokenizer")
    lam = encoders.as_model(lam, "lam") if lam is not None else None
    sizes = {m.kind: m.cfg.image_size for m in (tokenizer, lam) if m is not None}
    if any(size != ds.frame_shape[0] for size in sizes.values()):
        raise GenieValueError(
            f"The data's frames are {ds.frame_shape[0]}px but the models were trained on {sizes}: train "
            "them on this data first."
        )
    if lam is None:
        action_cfg = replace(preset("lam", preset_name), num_actions=encoders.recorded_num_actions(ds, data))
        codes = encoders.recorded_action_codes(action_cfg.num_actions, action_cfg.code_dim)
    else:
        action_cfg, codes = lam.cfg, lam.action_vectors()
    cfg = dynamics_preset(preset_name, tokenizer.cfg, action_cfg, context=context, action_mode=action_mode)

    def make_model():
        model = DynamicsModel(cfg)
        model.set_action_codes(codes)
        return model

    steps, train_kw = _defaults(out, resume, preset_name, "dynamics", steps, train_kw)
    return _fit(
        make_model,
        ds,
        data,
        cfg.context,
        steps,
        out,
        resume,
        progress,
        batch_fn=encoders.FrozenEncoders(tokenizer, lam),
        **train_kw,
    )


def train_reward(
    data,
    tokenizer,
    out,
    preset_name: str = "demo",
    steps: int | None = None,
    resume: bool = False,
    progress: bool = True,
    termination_from: str | None = None,
    **train_kw,
) -> dict:
    """Reward + termination prediction on transitions (2-frame windows) of data that recorded them.
    termination_from: "current" (a hazard read from frame t; the presets') or "next" (frames t, t+1)."""
    ds = _open_data(data)
    if not ds.has_rewards:
        raise GenieValueError(
            f"{getattr(ds, 'root', data)} has no recorded rewards: record a Gymnasium env with `genie collect`."
        )
    tokenizer = encoders.as_model(tokenizer, "tokenizer")
    extra = {} if termination_from is None else {"termination_from": termination_from}
    cfg = preset(
        "reward", preset_name, grid=tokenizer.cfg.grid, vocab_size=tokenizer.cfg.codebook_size, **extra
    )
    steps, train_kw = _defaults(out, resume, preset_name, "reward", steps, train_kw)
    return _fit(
        lambda: RewardModel(cfg),
        ds,
        data,
        2,
        steps,
        out,
        resume,
        progress,
        batch_fn=encoders.FrozenEncoders(tokenizer),
        **train_kw,
    )


def _finished(run: Path, steps: int, kind: str) -> bool:
    """The run committed `steps` steps (and, for a LAM, its calibrated re-save: a kill between the two
    leaves an uncalibrated LAM, which resuming then calibrates)."""
    info = read_run(run)  # a corrupt trainer.json is one sentence
    if info is None or info.get("step", 0) < steps:
        return False
    return kind != "lam" or bool(read_config(run).get("meta", {}).get("calibrated"))


def _stage(fn, run: Path, steps: int, resume: bool, kind: str, **kw):
    if resume and _finished(run, steps, kind):
        return {"model": load_model(run, kind), "skipped": True}
    return fn(out=run, steps=steps, resume=resume and (run / "trainer.json").exists(), **kw)


def recorded_action_mapping(ds: VideoDataset) -> dict:
    """The action mapping of a world conditioned on the recorded actions: each is its own latent."""
    names = ds.meta.get("action_names") or [str(i) for i in range(int(ds.meta["num_actions"]))]
    identity = list(range(len(names)))
    return {
        "real_action_names": list(names),
        "latent_for_real": identity,
        "real_for_latent": identity,
        "fit_transitions": 0,
    }


def save_prompts(ds: VideoDataset, folder: Path, count: int = 4) -> list[str]:
    """First frames of held-out episodes (or of any) as PNG prompt images."""
    episodes = ds.split_episodes("val") or ds.split_episodes("all")
    names = []
    with writing(folder, cleanup=folder):  # a full disk: one sentence, and no half-written prompts left
        folder.mkdir(parents=True, exist_ok=True)
        for k, e in enumerate(episodes[:count]):
            frames = ds.episode(e)["frames"]
            frame = np.asarray(frames[min(len(frames) - 1, 8)])
            name = f"prompt_{k}.png"
            Image.fromarray(frame).save(folder / name)
            names.append(name)
    return names


def train_world(
    data,
    out,
    preset_name: str = "demo",
    steps: int | None = None,
    resume: bool = False,
    context: int | None = None,
    action_mode: str | None = None,
    num_actions: int | None = None,
    progress: bool = True,
    stage_steps: dict | None = None,
    actions: str = "latent",
    **train_kw,
) -> dict:
    """Tokenizer, then LAM, then dynamics (LAM and tokenizer frozen) into one world folder.
    `stage_steps` ({"tokenizer": N, ...}) overrides `steps` per model. `actions="recorded"` skips the
    LAM and conditions the dynamics on the actions the data recorded (one per real action)."""
    if actions not in ("latent", "recorded"):
        raise GenieValueError(f"Unknown actions {actions!r}: use 'latent' or 'recorded'.")
    stage_steps = {k: v for k, v in (stage_steps or {}).items() if v}
    ds = _open_data(data)
    if actions == "recorded":
        encoders.recorded_num_actions(ds, data)  # before hours of tokenizer training, not after
    out = Path(out)
    tidy_world(out)  # a kill mid-swap moved the world aside: put it back before anything writes here
    if (out / "world.json").exists() and not resume:
        raise GenieValueError(f"{out} already holds a world: pass --resume to continue, or pick a new --out.")
    runs = out / "train"
    steps_of = {
        k: stage_steps.get(k)
        or steps
        or _started(runs / k, resume).get("steps")
        or default_steps(preset_name, k)
        for k in STAGES
    }
    common = dict(preset_name=preset_name, context=context, progress=progress, **train_kw)
    tok = _stage(
        train_tokenizer, runs / "tokenizer", steps_of["tokenizer"], resume, "tokenizer", data=ds, **common
    )["model"]
    lam = None
    if actions == "latent":
        lam = _stage(
            train_lam,
            runs / "lam",
            steps_of["lam"],
            resume,
            "lam",
            data=ds,
            num_actions=num_actions,
            **common,
        )["model"]
    dyn_summary = _stage(
        train_dynamics,
        runs / "dynamics",
        steps_of["dynamics"],
        resume,
        "dynamics",
        data=ds,
        tokenizer=tok,
        lam=lam,
        action_mode=action_mode,
        **common,
    )
    dyn = dyn_summary["model"]
    reward = calibration = None
    if ds.has_rewards and ds.has_actions:  # recorded from an env: learn its rewards and terminations
        reward = _stage(
            train_reward,
            runs / "reward",
            steps_of["reward"],
            resume,
            "reward",
            data=ds,
            tokenizer=tok,
            **{k: v for k, v in common.items() if k != "context"},  # transitions: always 2 frames
        )["model"]
        if reward.cfg.termination_from == "current":  # expected ends = real ends on the train split
            calibration = calibrate_hazard(reward, tok, ds, device=next(reward.parameters()).device)
    info = {
        "env_id": ds.meta.get("env_id"),
        "env_kwargs": ds.meta.get("env_kwargs") or {},
        "fit": ds.meta.get("fit", "crop"),
        "real_num_actions": ds.meta.get("num_actions"),
        "preset": preset_name,
        "steps_per_model": {
            k: v for k, v in steps_of.items() if {"lam": lam, "reward": reward}.get(k, True) is not None
        },
        "maskgit_steps": dyn.cfg.maskgit_steps,
        "temperature": dyn.cfg.temperature,
        "data": str(getattr(ds, "root", data)),
        "actions": actions,
    }
    if calibration is not None:
        info["termination_calibration"] = calibration
    staged = runs / "prompts"  # written beside the runs; the world's swap commits them with the models
    if staged.exists():
        shutil.rmtree(staged)
    info["prompts"] = save_prompts(ds, staged)
    if lam is None:  # the world's actions are the game's own
        info["action_mapping"] = recorded_action_mapping(ds)
    elif ds.has_actions and ds.meta.get("num_actions"):
        info["action_mapping"] = action_mapping(lam.cpu(), ds)
    save_world(
        out,
        tok.cpu(),
        dyn.cpu(),
        lam.cpu() if lam is not None else None,
        info,
        reward=reward.cpu() if reward is not None else None,
        prompts=staged,
    )
    return {"out": str(out), "info": info}


@torch.no_grad()
def action_mapping(lam, ds: VideoDataset, max_transitions: int = 200, seed: int = 0) -> dict:
    """Latent<->real action maps fitted on at most `max_transitions` labelled transitions of the train
    split (the paper's behaviour-cloning budget): for each real action, the latent action that most
    often produces it; for each latent action, its most frequent real action."""
    T = min(lam.cfg.context, min(ds.episode_length(e) for e in ds.split_episodes("train")))
    index = ds.windows(T, "train")
    rng = np.random.default_rng(seed)
    latent, real = [], []
    for i in rng.permutation(len(index)):
        window = ds.read_window(*index[int(i)], T)
        frames = to_float(torch.from_numpy(window["frames"])[None])
        latent.append(lam.infer_actions(frames)[0].numpy())
        real.append(window["actions"])
        if sum(map(len, latent)) >= max_transitions:
            break
    latent, real = np.concatenate(latent)[:max_transitions], np.concatenate(real)[:max_transitions]
    num_real = int(ds.meta["num_actions"])
    mapping = fit_action_mapping(latent, real, lam.cfg.num_actions, num_real)
    names = ds.meta.get("action_names") or [str(i) for i in range(num_real)]
    return {
        "real_action_names": list(names),
        "latent_for_real": mapping["latent_for_real"],
        "real_for_latent": mapping["real_for_latent"],
        "fit_transitions": int(len(latent)),
    }

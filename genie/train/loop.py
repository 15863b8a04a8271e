"""One training loop (accelerate) for every model: the tokenizer, the LAM and the dynamics.

A model plugs in with `compute_loss(batch) -> {"loss": ..., <scalar metrics>...}`, a `kind`, a `cfg`,
and optionally `preview(batch) -> (truth, prediction)` uint8 (T, H, W, 3) for PNG strips.

Run folder layout (`out`):
    trainer.json     the commit point: step reached, train config, and which ckpt-NNNNNN/ is current
    ckpt-NNNNNN/     model/ (safetensors + config.json: rebuilds the model with no other input), state/
                     (accelerate: weights, optimizer, RNG of every process) and their checksums
    metrics.csv      one row per log interval, each step once (rows past the resumed step are dropped)
    samples/         ground-truth-vs-prediction PNG strips
    .lock            held by the one process training into `out`

Exact resume: batches are a pure function of (seed, step, micro-step, rank) (see StepSampler), the LR is
a pure function of the step, and accelerate restores the weights, optimizer moments and RNG states. A
checkpoint commits all of them together, or none (genie/checkpoint.py): a kill at any instant resumes
from the last committed step, and the next run removes what the interrupted commit left, saying so.

Letters: B batch, T frames, H W pixels.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from genie.checkpoint import (
    clean_run,
    commit_checkpoint,
    read_run,
    staging_dir,
    verify_checkpoint,
    write_model_files,
)
from genie.core.errors import GenieError, GenieFileNotFoundError, GenieValueError, in_range
from genie.core.io import OutputLock, crash_point, writing


@dataclass
class TrainConfig:
    steps: int = 1000
    """optimizer steps"""
    batch_size: int = 8
    """windows per micro-batch per process"""
    grad_accum: int = 1
    """micro-batches per optimizer step"""
    lr: float = 3e-4
    """peak learning rate (AdamW)"""
    min_lr_ratio: float = 0.1
    """cosine decays to lr * min_lr_ratio"""
    warmup: int = 100
    """linear warmup steps"""
    weight_decay: float = 0.01
    """on matrices only"""
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    image_every: int = 250
    ckpt_every: int = 500
    """optimizer steps between checkpoints (`save_every` in the recipes, --save-every)"""
    num_workers: int = 0
    mixed_precision: str = "auto"
    """"auto": bf16 on CUDA, fp32 on CPU; or "no" / "bf16" / "fp16\""""


_RANGES = {  # TrainConfig field -> (lowest, highest or None, integer); lr > 0; 0 turns off grad_clip, images
    **dict.fromkeys(("steps", "batch_size", "grad_accum", "log_every", "ckpt_every"), (1, None, True)),
    **dict.fromkeys(("warmup", "image_every", "num_workers"), (0, None, True)),
    **dict.fromkeys(("lr", "weight_decay", "grad_clip"), (0, None, False)),
    "min_lr_ratio": (0, 1, False),
    "seed": (0, 2**32 - 1, True),
}
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


def check_config(cfg: TrainConfig) -> None:
    """Refuse the first TrainConfig field out of its range: one GenieValueError naming it and the range."""
    for name, (low, high, integer) in _RANGES.items():
        label = f"TrainConfig.{name}" + (" (save_every)" if name == "ckpt_every" else "")
        in_range(getattr(cfg, name), label, low, high, integer, above=name == "lr")
    if cfg.mixed_precision not in MIXED_PRECISION:
        raise GenieValueError(
            f"TrainConfig.mixed_precision must be one of {', '.join(map(repr, MIXED_PRECISION))}, got "
            f"{cfg.mixed_precision!r}: pass one of them."
        )


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


class StepSampler(Sampler):
    """Yields one list of dataset indices per micro-batch, from `start_step` on.

    Indices depend only on (seed, step, micro, rank): each process draws its own slice of a global batch,
    so N processes see N times the data with no code change, and resume replays nothing twice.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        steps: int,
        grad_accum: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        start_step: int = 0,
    ):
        self.size, self.batch_size, self.steps, self.grad_accum = size, batch_size, steps, grad_accum
        self.seed, self.rank, self.world, self.start_step = seed, rank, world, start_step

    def __len__(self):
        return (self.steps - self.start_step) * self.grad_accum

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            for micro in range(self.grad_accum):
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 101 + micro)
                idx = torch.randint(0, self.size, (self.batch_size * self.world,), generator=g)
                yield idx[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()


def window_loader(
    dataset,
    batch_size: int,
    steps: int,
    seed: int,
    grad_accum: int = 1,
    num_workers: int = 0,
    rank: int = 0,
    world: int = 1,
    start_step: int = 0,
) -> DataLoader:
    """The loader training reads: `grad_accum` micro-batches per step for steps [start_step, steps).

    Windows are drawn with replacement by StepSampler, so any non-empty dataset fills any batch size.
    """
    if batch_size < 1:
        raise GenieValueError(f"batch_size must be at least 1, got {batch_size}: pass --batch-size >= 1.")
    sampler = StepSampler(len(dataset), batch_size, steps, grad_accum, seed, rank, world, start_step)
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=torch.cuda.is_available()
    )


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def save_strip(path: Path, truth: torch.Tensor, pred: torch.Tensor) -> None:
    """Two rows (truth over prediction) of T frames, as one PNG."""
    top = np.concatenate(list(truth.cpu().numpy()), axis=1)
    bottom = np.concatenate(list(pred.cpu().numpy()), axis=1)
    with writing(path, cleanup=path):  # a full disk: one sentence, and no half-written PNG left
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate([top, bottom], axis=0)).save(path)


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train(
    model,
    dataset,
    cfg: TrainConfig,
    out,
    resume: bool = False,
    meta: dict | None = None,
    batch_fn=None,
    accelerator: Accelerator | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train `model` on `dataset` (map-style, items are dicts of tensors) into run folder `out`.

    `batch_fn(batch) -> batch` runs on the device before the loss (e.g. frozen tokenizer + LAM for the
    dynamics). `stop_after` ends this session at that step (checkpointed), as an interruption would;
    `--resume` then continues to `cfg.steps` exactly. Returns a summary dict.
    """
    out = Path(out)
    check_config(cfg)
    if accelerator is None:
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() else "no"
        accelerator = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
    if accelerator.device.type == "cpu":
        # Tiny gradients late in training (and Adam's squares of them) reach the denormal range, where x86
        # arithmetic is many times slower: measured 5x on the demo LAM once its loss fell to ~1e-4.
        torch.set_flush_denormal(True)
    main = accelerator.is_main_process
    lock = OutputLock(out) if main else None
    if lock is not None:
        lock.acquire()
    try:
        return _train(model, dataset, cfg, out, resume, meta, batch_fn, accelerator, progress, stop_after)
    finally:
        if lock is not None:
            lock.release()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _prepare_run(out: Path, resume: bool) -> None:
    """Main process, lock held: clean what an interrupted checkpoint left, refuse what cannot start."""
    removed = clean_run(out)
    info = read_run(out)
    where = (
        f"resuming from step {info['step']}" if info else "nothing had been committed yet: starting at step 0"
    )
    if removed:
        _say(f"{out}: removed the leftovers of an interrupted checkpoint ({', '.join(removed)}); {where}.")
    if info is None:
        started = (out / "metrics.csv").exists() or (out / "samples").exists()
        if resume and not (started or removed):
            raise GenieFileNotFoundError(
                f"Nothing to resume in {out}: run without --resume to start training there."
            )
        if started and not removed:
            _say(f"{out}: the run interrupted there had committed no checkpoint; {where}.")
    elif not resume:
        raise GenieValueError(
            f"{out} already holds a training run (step {info['step']}): pass --resume to continue it, "
            "or pick a new --out."
        )


def _train(model, dataset, cfg, out, resume, meta, batch_fn, accelerator, progress, stop_after) -> dict:
    """`train` with the folder's lock held: start (or resume from the committed step), loop, checkpoint."""
    main = accelerator.is_main_process
    if main:
        _prepare_run(out, resume)
    accelerator.wait_for_everyone()
    info = read_run(out) if resume else None
    start_step = info["step"] if info is not None else 0
    if info is not None:
        verify_checkpoint(info, accelerator.process_index)

    torch.manual_seed(cfg.seed)
    raw_model = model
    optimizer = configure_optimizer(raw_model, cfg)
    model, optimizer = accelerator.prepare(LossModule(raw_model), optimizer)
    if info is not None:
        state = info["dir"] / "state"
        try:
            accelerator.load_state(str(state))
        except GenieError:
            raise
        except Exception as e:  # truncated optimizer.bin, ... of a run without checksums
            raise GenieValueError(
                f"The training state in {state} is unreadable ({e.__class__.__name__}): restore it, or "
                "start again with a new --out."
            ) from None
        if info["legacy"]:  # older genie could commit state/ and die before trainer.json said so
            reached = _optimizer_steps(optimizer)
            if reached > start_step:
                if main:
                    _say(
                        f"{out}: its state/ is at step {reached}, past trainer.json's {start_step}: resuming there."
                    )
                start_step = reached
    if main:
        _truncate_metrics(out / "metrics.csv", start_step)
        for png in (out / "samples").glob("step_*.png"):
            if png.stem[5:].isdigit() and int(png.stem[5:]) > start_step:
                png.unlink()

    loader = window_loader(
        dataset,
        cfg.batch_size,
        cfg.steps,
        cfg.seed,
        grad_accum=cfg.grad_accum,
        num_workers=cfg.num_workers,
        rank=accelerator.process_index,
        world=accelerator.num_processes,
        start_step=start_step,
    )
    batches = iter(loader)
    metrics_path = out / "metrics.csv"
    frames_per_step = None
    t_start, frames_seen, last = time.time(), 0, {}
    bar = tqdm(
        total=cfg.steps, initial=start_step, desc=f"train {raw_model.kind}", disable=not (main and progress)
    )
    model.train()
    done = start_step
    for step in range(start_step, cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        sums: dict[str, torch.Tensor] = {}  # stay on the device: converted only when logged
        for micro in range(cfg.grad_accum):
            batch = _to_device(next(batches), accelerator.device)
            if batch_fn is not None:
                batch = batch_fn(batch)
            sync = micro == cfg.grad_accum - 1
            ctx = accelerator.no_sync(model) if not sync else torch.enable_grad()
            with ctx, accelerator.autocast():
                result = model(batch)
                accelerator.backward(result["loss"] / cfg.grad_accum)
            for k, v in result.items():
                if torch.is_tensor(v) and v.dim() == 0:
                    sums[k] = sums.get(k, 0.0) + v.detach().float() / cfg.grad_accum
            frames_per_step = batch["frames"].shape[0] * batch["frames"].shape[1] if "frames" in batch else 0
        if cfg.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        frames_seen += frames_per_step * cfg.grad_accum * accelerator.num_processes
        done = step + 1
        last = sums
        if main and (done % cfg.log_every == 0 or done == cfg.steps):
            fps = frames_seen / max(time.time() - t_start, 1e-9)
            logged = {k: float(v) for k, v in sums.items()}
            bar.set_postfix(loss=f"{logged['loss']:.4f}", fps=f"{fps:.0f}")
            _append_csv(metrics_path, {"step": done, "lr": lr_at(step, cfg), "frames_per_s": fps, **logged})
        crash_point("step", done)
        if (
            main
            and cfg.image_every
            and hasattr(raw_model, "preview")
            and (done % cfg.image_every == 0 or done == cfg.steps)
        ):
            raw_model.eval()
            truth, pred = raw_model.preview(batch)
            raw_model.train()
            save_strip(out / "samples" / f"step_{done:07d}.png", truth, pred)
        stopping = stop_after is not None and done >= stop_after
        if done % cfg.ckpt_every == 0 or done == cfg.steps or stopping:
            _checkpoint(accelerator, raw_model, out, done, cfg, meta)
        bar.update(1)
        if stopping:
            break
    bar.close()
    elapsed = time.time() - t_start
    summary = {
        "kind": raw_model.kind,
        "steps": done if cfg.steps > start_step else start_step,
        "seconds": elapsed,
        "frames_per_s": frames_seen / max(elapsed, 1e-9),
        "final": {k: float(v) for k, v in last.items()},
        "out": str(out),
        "is_main": accelerator.is_main_process,
    }
    accelerator.wait_for_everyone()
    return summary


class LossModule(torch.nn.Module):
    """forward(batch) = model.compute_loss(batch), so DDP's forward hooks see the whole loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.compute_loss(batch)


def _checkpoint(accelerator, raw_model, out: Path, step: int, cfg: TrainConfig, meta) -> None:
    """Every process writes its RNG state into one fresh staging folder; the main process adds the model
    and commits it (genie/checkpoint.py). GENIE_CRASH_AT=state ends the process after the state is staged."""
    main = accelerator.is_main_process
    accelerator.wait_for_everyone()
    staging = staging_dir(out, step, create=main)
    accelerator.wait_for_everyone()
    with writing(staging, cleanup=staging if main else None):
        accelerator.save_state(str(staging / "state"), safe_serialization=True)
    accelerator.wait_for_everyone()
    if main:
        crash_point("state", step)
        with writing(staging, cleanup=staging):
            write_model_files(staging / "model", raw_model, meta={**(meta or {}), "step": step})
        commit_checkpoint(out, staging, step, {"train": asdict(cfg), "meta": meta or {}})
    accelerator.wait_for_everyone()


def _optimizer_steps(optimizer) -> int:
    """Optimizer steps the (restored) AdamW state has taken: the step its checkpoint was written at."""
    states = getattr(optimizer, "optimizer", optimizer).state.values()
    return max((int(s["step"]) for s in states if "step" in s), default=0)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of metrics.csv up to `step` (the committed one): a resumed run logs each step once.
    A row cut short by a kill is dropped too."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = lines[:1]
    for line in lines[1:]:
        first = line.split(",", 1)[0]
        if line.endswith("\n") and first.isdigit() and int(first) <= step:
            keep.append(line)
    if len(keep) == len(lines):
        return
    if len(keep) == 1:
        path.unlink()
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, cleanup=tmp):
        tmp.write_text("".join(keep))
        os.replace(tmp, path)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with writing(path):  # a row cut short by a full disk is dropped on resume (_truncate_metrics)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

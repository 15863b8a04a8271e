"""One training loop (accelerate) for every model: the tokenizer, the LAM and the dynamics.

A model plugs in with `compute_loss(batch) -> {"loss": ..., <scalar metrics>...}`, a `kind`, a `cfg`,
and optionally `preview(batch) -> (truth, prediction)` uint8 (T, H, W, 3) for PNG strips.

Run folder layout (`out`):
    model/           safetensors + config.json: rebuilds the model with no other input
    state/           accelerate state (model, optimizer, RNG) for --resume
    trainer.json     step reached, train config
    metrics.csv      one row per log interval
    samples/         ground-truth-vs-prediction PNG strips

Exact resume: batches are a pure function of (seed, step, micro-step, rank) (see StepSampler), the LR is
a pure function of the step, and accelerate restores the weights, optimizer moments and RNG states.

Letters: B batch, T frames, H W pixels.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from PIL import Image
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from genie.checkpoint import save_model
from genie.core.errors import GenieFileNotFoundError, GenieValueError
from genie.core.io import atomic_dir, write_json_atomic


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
    num_workers: int = 0
    mixed_precision: str = "auto"
    """"auto": bf16 on CUDA, fp32 on CPU; or "no" / "bf16" / "fp16\""""


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
    if accelerator is None:
        mp = cfg.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() else "no"
        accelerator = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
    if accelerator.device.type == "cpu":
        # Tiny gradients late in training (and Adam's squares of them) reach the denormal range, where x86
        # arithmetic is many times slower: measured 5x on the demo LAM once its loss fell to ~1e-4.
        torch.set_flush_denormal(True)
    start_step = 0
    if resume:
        state_file = out / "trainer.json"
        if not state_file.exists() or not (out / "state").exists():
            raise GenieFileNotFoundError(
                f"Nothing to resume in {out}: run without --resume to start training there."
            )
        start_step = json.loads(state_file.read_text())["step"]
    elif (out / "trainer.json").exists():
        raise GenieValueError(
            f"{out} already holds a training run: pass --resume to continue it, or pick a new --out."
        )

    torch.manual_seed(cfg.seed)
    raw_model = model
    optimizer = configure_optimizer(raw_model, cfg)
    model, optimizer = accelerator.prepare(LossModule(raw_model), optimizer)
    if resume:
        accelerator.load_state(str(out / "state"))

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
    main = accelerator.is_main_process
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
    """Every process writes its RNG state into one staging folder; the main process swaps it in."""
    staging = out / ".state.staging"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_model(raw_model, out / "model", meta={**(meta or {}), "step": step})
        with atomic_dir(out / "state") as tmp:
            tmp.rmdir()
            os.rename(staging, tmp)
        write_json_atomic(out / "trainer.json", {"step": step, "train": asdict(cfg), "meta": meta or {}})
    accelerator.wait_for_everyone()


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)

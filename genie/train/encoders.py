"""What the recipes feed a model from frozen ones: tokens and latent actions of a batch, the recorded
actions' fixed codes, and the windows a LAM's statistics are calibrated on."""

from __future__ import annotations

import numpy as np
import torch

from genie.checkpoint import load_model
from genie.core.errors import GenieValueError
from genie.data import VideoDataset, WindowDataset


def calibration_batches(ds: VideoDataset, T: int, count: int = 256, batch: int = 32):
    """Up to `count` train windows spread evenly over the split, `batch` at a time (uint8 frames)."""
    windows = WindowDataset(ds, T, "train")
    picks = np.unique(np.linspace(0, len(windows) - 1, min(count, len(windows))).round().astype(int))
    for i in range(0, len(picks), batch):
        yield torch.from_numpy(np.stack([windows[int(j)]["frames"] for j in picks[i : i + batch]]))


class FrozenEncoders:
    """batch_fn: frames -> tokens (frozen tokenizer) and, with a LAM, latent actions (frozen LAM)."""

    def __init__(self, tokenizer, lam=None):
        self.tokenizer, self.lam = tokenizer.eval(), lam.eval() if lam is not None else None
        for p in list(tokenizer.parameters()) + (list(lam.parameters()) if lam is not None else []):
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        frames = batch["frames"]
        if next(self.tokenizer.parameters()).device != frames.device:
            self.tokenizer.to(frames.device)
            if self.lam is not None:
                self.lam.to(frames.device)
        with torch.autocast(frames.device.type, enabled=False):
            batch["tokens"] = self.tokenizer.encode(frames).flatten(2)
            if self.lam is not None:
                batch["latent_actions"] = self.lam.infer_actions(frames)
            else:  # a world conditioned on the recorded actions (`actions="recorded"`)
                batch["latent_actions"] = batch["actions"]
        return batch


def as_model(m, kind):
    return m if isinstance(m, torch.nn.Module) else load_model(m, kind)


def recorded_num_actions(ds: VideoDataset, data) -> int:
    """Number of actions the data recorded, or one clear error when it recorded none."""
    if not ds.has_actions or not ds.meta.get("num_actions"):
        raise GenieValueError(
            f"{getattr(ds, 'root', data)} recorded no actions: use actions='latent' (--actions latent), "
            "where a LAM learns them from the video."
        )
    return int(ds.meta["num_actions"])


def recorded_action_codes(num_actions: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(A, C) fixed orthonormal vectors, one per recorded action (the dynamics' frozen action codebook
    when a world is conditioned on the data's own actions instead of a LAM's)."""
    if num_actions > dim:
        raise GenieValueError(f"{num_actions} recorded actions need an action code dim >= {num_actions}.")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, num_actions, generator=g))
    return q.T.contiguous()

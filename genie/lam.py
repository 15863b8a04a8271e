"""Latent action model (LAM): discovers |A| discrete actions from unlabelled video, on pixels.

Letters: B batch, T frames, N patches per frame, D width, C action code dim, A number of actions.

Action/frame alignment (the contract every part of genie follows):
    latent_actions[:, t] is the action that moves frame t to frame t+1, for t = 0..T-2.

    encoder:  x_0..x_{T-1}, each with its difference from the previous frame (zero for x_0), causal
              ST, plus one learned action-query token per frame; the query output at frame t+1 (it has
              seen x_0..x_{t+1}) is quantized to a_t. The explicit difference makes motion visible to
              the first layer (without it the LAM collapsed onto one code early in training).
              `encoder_positions`: "none" (default: no spatial position information, the encoder sees
              a set of patches), "absolute" (learned embeddings, the paper's ViT), or "relative" (2D
              RoPE, mean-pooled).
    shift consistency: the same actions happened in a window rolled by a random (dy, dx); a small
              loss (weight 0.01) pulls the action latents of the two windows together.

Known limit (measured on the sprite test world, tests/test_world_learning.py, 2-core CPU): the LAM
predicts the next frame almost perfectly, yet often lets a code's meaning depend on where the sprite is or
what came before (reconstruction does not care), so latent-to-real agreement stays far below the 90% one
would want: 0.39-0.80 for "none" (3 runs), 0.46-0.61 "absolute" (3), 0.45-0.50 "relative" (6); shift
consistency 0.01 raised one seed from 0.51 to 0.64 (0.1 and 1.0 starve the reconstruction); encoders
that see only frame pairs did worse (0.36-0.55).
    decoder:  x_0..x_{T-2} + embedding of a_t added to frame t's patches (causal ST) -> x_{t+1},
              predicted as a residual on x_t so the decoder spends its capacity on what changed.
Only the codebook (a_t -> vector) is needed at play time; the dynamics keeps a frozen copy of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genie.config import LAMConfig
from genie.errors import GenieValueError
from genie.nn import STTransformer, init_weights, patchify, unpatchify
from genie.vq import VectorQuantizer


def _uint8(frames: torch.Tensor) -> torch.Tensor:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


def _float(frames: torch.Tensor) -> torch.Tensor:
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()


class LatentActionModel(nn.Module):
    kind = "lam"

    def __init__(self, cfg: LAMConfig):
        super().__init__()
        self.cfg = cfg
        N, D, patch_dim = cfg.grid**2, cfg.d_model, cfg.patch * cfg.patch * 3
        # --- encoder: sees x_0..x_{t+1}, emits a_t ---
        if cfg.encoder_positions not in ("none", "relative", "absolute"):
            raise GenieValueError(
                f"Unknown encoder_positions {cfg.encoder_positions!r}: use none, relative or absolute."
            )
        self.relative = cfg.encoder_positions == "relative"
        self.enc_in = nn.Linear(2 * patch_dim, D)  # frame and its temporal difference
        if not self.relative:
            self.action_query = nn.Parameter(torch.zeros(D))
        if cfg.encoder_positions == "absolute":
            self.enc_pos = nn.Parameter(torch.zeros(N + 1, D))  # slot 0: the action query
        self.encoder = STTransformer(
            D, cfg.depth, cfg.heads, cfg.context, spatial_rope_grid=cfg.grid if self.relative else None
        )
        self.enc_out = nn.Linear(D, cfg.code_dim)
        # Few codes: track usage fast, and reset only codes that are nearly unused (0.03 of a fair share);
        # a higher threshold kept moving rarely used codes and lowered latent-to-real agreement.
        self.vq = VectorQuantizer(
            cfg.num_actions, cfg.code_dim, cfg.commitment, usage_decay=0.9, reset_every=10, dead_fraction=0.03
        )
        # --- decoder: x_0..x_t and a_t predict x_{t+1} ---
        self.dec_in = nn.Linear(patch_dim, D)
        self.dec_pos = nn.Parameter(torch.zeros(N, D))
        self.dec_action = nn.Linear(cfg.code_dim, D)
        self.decoder = STTransformer(D, cfg.depth, cfg.heads, cfg.context)
        self.dec_out = nn.Linear(D, patch_dim)
        init_weights(self, 2 * cfg.depth)
        for name in ("enc_pos", "dec_pos", "action_query"):
            if hasattr(self, name):
                nn.init.normal_(getattr(self, name), std=0.02)

    @property
    def num_actions(self) -> int:
        return self.cfg.num_actions

    def action_vectors(self) -> torch.Tensor:
        """(A, C): the latent action codebook."""
        return self.vq.codes()

    def _action_latents(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, 3) float -> (B, T-1, C): pre-quantization latent of a_t from frame t+1."""
        B, T = x.shape[:2]
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
        patches = self.enc_in(torch.cat([patchify(x, self.cfg.patch), patchify(diff, self.cfg.patch)], -1))
        if self.relative:
            h = self.encoder(patches)  # (B, T, N, D)
            return self.enc_out(h[:, 1:].mean(2))  # frames 1..T-1, mean over patches
        query = self.action_query.expand(B, T, 1, -1)
        h = torch.cat([query, patches], dim=2)  # (B, T, N+1, D)
        if hasattr(self, "enc_pos"):
            h = h + self.enc_pos
        h = self.encoder(h)
        return self.enc_out(h[:, 1:, 0])  # query slot of frames 1..T-1

    @torch.no_grad()
    def infer_actions(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, H, W, 3) -> latent actions (B, T-1) int64; a_t moves frame t to t+1."""
        return self.vq.nearest(self._action_latents(_float(frames)))

    def _predict(self, x: torch.Tensor, action_vecs: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, 3), action_vecs (B, T-1, C) -> predicted frames 1..T-1 (B, T-1, H, W, 3)."""
        past = x[:, :-1]
        h = self.dec_in(patchify(past, self.cfg.patch)) + self.dec_pos
        h = h + self.dec_action(action_vecs)[:, :, None, :]
        delta = self.dec_out(self.decoder(h))
        g = self.cfg.grid
        return past + unpatchify(delta, self.cfg.patch, g, g)

    def _shift_consistency(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Mean squared distance between the normalized action latents of x and of x rolled by one random
        (dy, dx) per window (same shift for every frame: the same actions happened)."""
        s = self.cfg.shift_pixels
        shifted = torch.stack(
            [
                torch.roll(w, shifts=tuple(int(v) for v in torch.randint(-s, s + 1, (2,))), dims=(1, 2))
                for w in x
            ]
        )
        other = self._action_latents(shifted)
        return (F.normalize(latents, dim=-1) - F.normalize(other, dim=-1)).pow(2).sum(-1).mean()

    def forward(self, frames: torch.Tensor) -> dict:
        x = _float(frames)
        latents = self._action_latents(x)
        vq = self.vq(latents)
        pred = self._predict(x, vq["quantized"])
        recon_loss = F.mse_loss(pred, x[:, 1:])
        consistency = torch.zeros((), device=x.device)
        if self.training and self.cfg.shift_consistency > 0 and self.cfg.shift_pixels > 0:
            consistency = self._shift_consistency(x, latents)
        return {
            "loss": recon_loss + vq["loss"] + self.cfg.shift_consistency * consistency,
            "shift_consistency": consistency.detach(),
            "recon_loss": recon_loss.detach(),
            "vq_loss": vq["loss"].detach(),
            "perplexity": vq["perplexity"].detach(),
            "active_codes": vq["active_codes"].detach().float(),
            "latent_actions": vq["indices"],
        }

    def compute_loss(self, batch: dict) -> dict:
        out = self(batch["frames"])
        out.pop("latent_actions")
        return out

    @torch.no_grad()
    def preview(self, batch: dict):
        x = _float(batch["frames"][:1])
        pred = self._predict(x, self.vq.lookup(self.infer_actions(x)))
        return _uint8(x[0, 1:]), _uint8(pred[0])

"""Latent action model (LAM): discovers |A| discrete actions from unlabelled video, on pixels.

Letters: B batch, T frames, H W pixels, h w grid, N patches per frame, D width, C code dim, A actions.

Action/frame alignment (the contract every part of genie follows):
    latent_actions[:, t] is the action that moves frame t to frame t+1, for t = 0..T-2.

    encoder:  reads each pair (x_t, x_{t+1}) as its difference x_{t+1} - x_t, spatial attention with 2D
              RoPE, mean-pooled over patches, batch-normalized, then quantized to a_t (cosine VQ, A codes).
    decoder:  x_0..x_t (causal ST, 2D RoPE in space) + a linear embedding of a_t added to frame t's
              patches -> x_{t+1}, predicted as a residual on x_t.
    training: for the first `vq_warmup` steps the bottleneck is continuous (the normalized latent passes
              through); then the codebook starts from k-means of recent latents and the VQ takes over.

Only the codebook (a_t -> vector) is needed at play time; the dynamics keeps a frozen copy of it.
Why this shape and not the paper's (causal encoder, absolute positions): docs/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genie.core.blocks import STTransformer, init_weights, patchify, unpatchify
from genie.core.config import LAMConfig
from genie.core.frames import to_float, to_uint8
from genie.core.vq import VectorQuantizer


class LatentActionModel(nn.Module):
    kind = "lam"

    def __init__(self, cfg: LAMConfig):
        super().__init__()
        self.cfg = cfg
        D, patch_dim = cfg.d_model, cfg.patch * cfg.patch * 3
        # --- encoder: sees x_{t+1} - x_t, emits a_t ---
        self.enc_in = nn.Linear(patch_dim, D)
        self.encoder = STTransformer(D, cfg.depth, cfg.heads, cfg.context, spatial_rope_grid=cfg.grid)
        self.enc_out = nn.Linear(D, cfg.code_dim)
        # Fresh latents are nearly identical across inputs; normalizing over the batch spreads them.
        self.enc_norm = nn.BatchNorm1d(cfg.code_dim, affine=False)
        # Few codes: track usage fast, and reset only codes that are nearly unused (0.03 of a fair share).
        self.vq = VectorQuantizer(
            cfg.num_actions,
            cfg.code_dim,
            cfg.commitment,
            usage_decay=0.9,
            reset_every=10,
            dead_fraction=0.03,
            warmup=cfg.vq_warmup,
        )
        # --- decoder: x_0..x_t and a_t predict x_{t+1} ---
        self.dec_in = nn.Linear(patch_dim, D)
        self.dec_action = nn.Linear(cfg.code_dim, D)
        self.decoder = STTransformer(D, cfg.depth, cfg.heads, cfg.context, spatial_rope_grid=cfg.grid)
        self.dec_out = nn.Linear(D, patch_dim)
        init_weights(self, 2 * cfg.depth)
        # Fan-in init: the action must be audible next to the patch embeddings from the first step.
        nn.init.normal_(self.dec_action.weight, std=cfg.code_dim**-0.5)

    @property
    def num_actions(self) -> int:
        return self.cfg.num_actions

    def action_vectors(self) -> torch.Tensor:
        """(A, C): the latent action codebook."""
        return self.vq.codes()

    def _action_latents(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, 3) float -> (B, T-1, C): pre-quantization latent of a_t (normalized)."""
        z = self._raw_latents(x)
        return self.enc_norm(z.flatten(0, 1)).view_as(z)

    def _raw_latents(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, 3) float -> (B, T-1, C): the encoder reads each pair (x_t, x_{t+1}) alone."""
        B, T = x.shape[:2]
        if T > 2:
            pairs = torch.stack([x[:, :-1], x[:, 1:]], dim=2).flatten(0, 1)  # (B*(T-1), 2, H, W, 3)
            return self._raw_latents(pairs).view(B, T - 1, -1)
        diff = patchify(torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1), self.cfg.patch)
        pooled = self.encoder(self.enc_in(diff))[:, 1:].mean(2)  # the pair's second frame, mean over patches
        return self.enc_out(pooled)

    @torch.no_grad()
    def calibrate(self, batches) -> int:
        """Set the latent normalization's statistics to the population of `batches` (frames (B, T, H, W, 3)).
        Training normalizes each batch by its own statistics and the running averages lag behind the
        encoder; measured on the sprite test, eval-mode codes then merged two actions (0.79 agreement)
        where recalibrated statistics gave 1.0. Returns the number of transitions seen."""
        device = self.enc_norm.running_mean.device
        z = torch.cat([self._raw_latents(to_float(f.to(device))).flatten(0, 1) for f in batches])
        self.enc_norm.running_mean.copy_(z.mean(0))
        self.enc_norm.running_var.copy_(z.var(0, unbiased=False))
        return len(z)

    @torch.no_grad()
    def infer_actions(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, H, W, 3) -> latent actions (B, T-1) int64; a_t moves frame t to t+1."""
        return self.vq.nearest(self._action_latents(to_float(frames)))

    def _predict(self, x: torch.Tensor, action_vecs: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, 3), action_vecs (B, T-1, C) -> predicted frames 1..T-1 (B, T-1, H, W, 3)."""
        past = x[:, :-1]
        h = self.dec_in(patchify(past, self.cfg.patch))
        h = h + self.dec_action(action_vecs)[:, :, None, :]
        delta = self.dec_out(self.decoder(h))
        g = self.cfg.grid
        return past + unpatchify(delta, self.cfg.patch, g, g)

    def forward(self, frames: torch.Tensor) -> dict:
        x = to_float(frames)
        vq = self.vq(self._action_latents(x))
        pred = self._predict(x, vq["quantized"])
        recon_loss = F.mse_loss(pred, x[:, 1:])
        return {
            "loss": recon_loss + vq["loss"],
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
        x = to_float(batch["frames"][:1])
        pred = self._predict(x, self.vq.lookup(self.infer_actions(x)))
        return to_uint8(x[0, 1:]), to_uint8(pred[0])

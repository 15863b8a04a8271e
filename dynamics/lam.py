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


def motion_features(radius: int) -> int:
    """S: the number of shifts (dy, dx) in [-radius, radius]^2 that shift_costs scores (0 when off)."""
    return (2 * radius + 1) ** 2 if radius else 0


@torch.no_grad()
def shift_costs(a: torch.Tensor, b: torch.Tensor, radius: int, patch: int) -> torch.Tensor:
    """a, b (M, H, W, 3) float frames -> (M, N, S): for each patch of b and each shift s = (dy, dx),
    the log of the mean squared error between the patch and a's pixels displaced by s (replicate padding
    at the borders), centred over the shifts. A local block-matching cost volume: where the content
    went, with its sign, whatever the scene looks like (a difference image alone shows that something
    moved, not which way, when a textured view shifts as a whole). No parameters; no gradient."""
    M, H, W, _ = a.shape
    r = radius
    padded = F.pad(a.permute(0, 3, 1, 2), (r, r, r, r), mode="replicate")  # (M, 3, H+2r, W+2r)
    target = b.permute(0, 3, 1, 2)
    costs = []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            moved = padded[:, :, r - dy : r - dy + H, r - dx : r - dx + W]  # a(u - s)
            costs.append(F.avg_pool2d((target - moved).square().mean(1, keepdim=True), patch))
    logc = torch.log(torch.cat(costs, 1) + 1e-4)  # (M, S, h, w)
    logc = logc - logc.mean(1, keepdim=True)
    return logc.flatten(2).transpose(1, 2)


def block_warp(a: torch.Tensor, weights: torch.Tensor, radius: int, patch: int) -> torch.Tensor:
    """a (M, H, W, 3), weights (M, N, S) summing to 1 over the shifts of shift_costs -> (M, H, W, 3):
    each patch of the output is the weighted mix of a's pixels displaced by each shift (block motion
    compensation, as video codecs predict a frame from the last one)."""
    M, H, W, _ = a.shape
    r, g = radius, H // patch
    padded = F.pad(a.permute(0, 3, 1, 2), (r, r, r, r), mode="replicate")
    # One (M, 1, g, g) weight map per shift; unbind (not slicing) keeps the backward to one stack.
    per_shift = weights.transpose(1, 2).reshape(M, -1, 1, g, g).unbind(1)
    out = a.new_zeros(M, 3, H, W)
    s = 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            w = F.interpolate(per_shift[s], scale_factor=patch, mode="nearest")
            out = out + w * padded[:, :, r - dy : r - dy + H, r - dx : r - dx + W]
            s += 1
    return out.permute(0, 2, 3, 1)


class LatentActionModel(nn.Module):
    kind = "lam"

    def __init__(self, cfg: LAMConfig):
        super().__init__()
        self.cfg = cfg
        D, patch_dim = cfg.d_model, cfg.patch * cfg.patch * 3
        # --- encoder: sees x_{t+1} - x_t, emits a_t ---
        self.enc_in = nn.Linear(patch_dim + motion_features(cfg.motion_radius), D)
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
        self.dec_out = nn.Linear(D, patch_dim + motion_features(cfg.motion_radius))
        init_weights(self, 2 * cfg.depth)
        if cfg.motion_radius:  # start as a copy of x_t: the zero shift is the likeliest
            with torch.no_grad():
                self.dec_out.bias[patch_dim + motion_features(cfg.motion_radius) // 2] = 4.0
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
        """x (B, T, H, W, 3) float -> (B, T-1, C). The encoder reads the transition x_t -> x_{t+1} and the
        `encoder_history` transitions before it (none before the window starts), each as its difference
        image and, with motion_radius, its block-matching cost volume; the latent pools the last one."""
        B, T = x.shape[:2]
        P, k = self.cfg.patch, self.cfg.encoder_history
        feats = patchify(x[:, 1:] - x[:, :-1], P)  # (B, T-1, N, P*P*3)
        if self.cfg.motion_radius:
            motion = shift_costs(x[:, :-1].flatten(0, 1), x[:, 1:].flatten(0, 1), self.cfg.motion_radius, P)
            feats = torch.cat([feats, motion.view(B, T - 1, *motion.shape[1:])], dim=-1)
        # Window of transition t: [nothing, t-k, ..., t]; index 0 is the empty (all-zero) transition.
        feats = torch.cat([torch.zeros_like(feats[:, :1]), feats], dim=1)  # (B, T, N, F)
        idx = (
            torch.arange(T - 1, device=x.device)[:, None] + torch.arange(-k, 1, device=x.device) + 1
        ).clamp(min=0)
        idx = torch.cat([torch.zeros_like(idx[:, :1]), idx], dim=1)  # (T-1, k+2)
        windows = feats[:, idx].flatten(0, 1)  # (B*(T-1), k+2, N, F)
        pooled = self.encoder(self.enc_in(windows))[:, -1].mean(
            1
        )  # the window's last transition, mean over patches
        return self.enc_out(pooled).view(B, T - 1, -1)

    def _input(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 or float frames (B, T, H, W, 3) -> float frames the LAM reads, average-pooled by cfg.pool."""
        x = to_float(frames)
        if self.cfg.pool == 1:
            return x
        B, T, H, W, C = x.shape
        pooled = F.avg_pool2d(x.reshape(B * T, H, W, C).permute(0, 3, 1, 2), self.cfg.pool)
        return pooled.permute(0, 2, 3, 1).reshape(B, T, H // self.cfg.pool, W // self.cfg.pool, C)

    @torch.no_grad()
    def calibrate(self, batches) -> int:
        """Set the latent normalization's statistics to the population of `batches` (frames (B, T, H, W, 3)).
        Training normalizes each batch by its own statistics and the running averages lag behind the
        encoder; measured on the sprite test, eval-mode codes then merged two actions (0.79 agreement)
        where recalibrated statistics gave 1.0. Returns the number of transitions seen."""
        device = self.enc_norm.running_mean.device
        z = torch.cat([self._raw_latents(self._input(f.to(device))).flatten(0, 1) for f in batches])
        self.enc_norm.running_mean.copy_(z.mean(0))
        self.enc_norm.running_var.copy_(z.var(0, unbiased=False))
        return len(z)

    @torch.no_grad()
    def infer_actions(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, T, H, W, 3) -> latent actions (B, T-1) int64; a_t moves frame t to t+1."""
        return self.vq.nearest(self._action_latents(self._input(frames)))

    def _predict(self, x: torch.Tensor, action_vecs: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, W, 3), action_vecs (B, T-1, C) -> predicted frames 1..T-1 (B, T-1, H, W, 3)."""
        past = x[:, :-1]
        h = self.dec_in(patchify(past, self.cfg.patch))
        h = h + self.dec_action(action_vecs)[:, :, None, :]
        out = self.dec_out(self.decoder(h))
        g, P = self.cfg.grid, self.cfg.patch
        delta = unpatchify(out[..., : P * P * 3], P, g, g)
        if self.cfg.motion_radius:  # each patch of x_{t+1}: a mix of displaced copies of x_t, then a residual
            weights = out[..., P * P * 3 :].softmax(-1)  # (B, T-1, N, S)
            moved = block_warp(past.flatten(0, 1), weights.flatten(0, 1), self.cfg.motion_radius, P)
            return moved.view_as(past) + delta
        return past + delta

    def forward(self, frames: torch.Tensor) -> dict:
        x = self._input(frames)
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
        x = self._input(batch["frames"][:1])
        pred = self._predict(x, self.vq.lookup(self.vq.nearest(self._action_latents(x))))
        return to_uint8(x[0, 1:]), to_uint8(pred[0])

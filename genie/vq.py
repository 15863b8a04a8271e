"""Vector quantization with straight-through gradients, commitment loss, usage tracking and
dead-code reset. Used by the video tokenizer (1024 codes) and the latent action model (|A| codes).

Codes and inputs are l2-normalized before the nearest-code search (cosine codebook), which keeps the
codebook on the same scale as the encoder output and markedly improves code usage.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from genie import kernels


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        dim: int,
        commitment: float = 0.25,
        usage_decay: float = 0.95,
        dead_fraction: float = 0.1,
        reset_every: int = 20,
    ):
        super().__init__()
        self.num_codes, self.dim, self.commitment = num_codes, dim, commitment
        self.usage_decay, self.reset_every = usage_decay, reset_every
        # A code is dead when its usage EMA falls below dead_fraction of the uniform share 1/num_codes.
        self.dead_threshold = dead_fraction / num_codes
        self.codebook = nn.Parameter(F.normalize(torch.randn(num_codes, dim), dim=-1))
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def codes(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (...) -> code vectors (..., C)."""
        return self.codes()[indices]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., C) raw encoder outputs -> indices (...)."""
        return self._nearest_prepared(F.normalize(z.float(), dim=-1))

    def _nearest_prepared(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, self.dim)
        return kernels.vq_nearest(flat, self.codes().float().detach()).view(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> dict:
        """z (..., C) -> quantized (straight-through), indices, vq loss, perplexity."""
        z = F.normalize(z.float(), dim=-1)
        indices = self._nearest_prepared(z)
        q = self.codes()[indices]
        codebook_loss = F.mse_loss(q, z.detach())
        commit_loss = F.mse_loss(z, q.detach())
        quantized = z + (q - z).detach()
        counts = torch.bincount(indices.reshape(-1), minlength=self.num_codes).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        probs = counts / counts.sum().clamp(min=1)
        perplexity = torch.exp(-(probs * (probs + 1e-10).log()).sum())
        if self.training:
            self._track(probs, z)
        return {
            "quantized": quantized,
            "indices": indices,
            "loss": codebook_loss + self.commitment * commit_loss,
            "perplexity": perplexity,
            "active_codes": (counts > 0).sum(),
        }

    @torch.no_grad()
    def _track(self, probs: torch.Tensor, z: torch.Tensor) -> None:
        self.usage.mul_(self.usage_decay).add_(probs, alpha=1 - self.usage_decay)
        self.steps += 1
        if int(self.steps) % self.reset_every == 0:
            self.reset_dead_codes(z)

    @torch.no_grad()
    def reset_dead_codes(self, z: torch.Tensor) -> int:
        """Move each dead code onto a random recent encoder output. Returns how many were reset."""
        dead = (self.usage < self.dead_threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        flat = z.reshape(-1, self.dim).float()
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        noise = 0.01 * torch.randn(dead.numel(), self.dim, device=flat.device)
        self.codebook.data[dead] = F.normalize(flat[pick] + noise, dim=-1).to(self.codebook.dtype)
        self.usage[dead] = 1.0 / self.num_codes
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(self.codebook.data, 0)
            dist.broadcast(self.usage, 0)
        return int(dead.numel())

    def usage_fraction(self) -> float:
        """Fraction of codes whose usage EMA is above the dead threshold."""
        return float((self.usage >= self.dead_threshold).float().mean())

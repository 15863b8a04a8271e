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

from genie.core import kernels


class VectorQuantizer(nn.Module):
    def __init__(
        self,
        num_codes: int,
        dim: int,
        commitment: float = 0.25,
        usage_decay: float = 0.95,
        dead_fraction: float = 0.1,
        reset_every: int = 20,
        warmup: int = 0,
    ):
        super().__init__()
        self.num_codes, self.dim, self.commitment = num_codes, dim, commitment
        self.usage_decay, self.reset_every = usage_decay, reset_every
        # A code is dead when its usage EMA falls below dead_fraction of the uniform share 1/num_codes.
        self.dead_threshold = dead_fraction / num_codes
        self.codebook = nn.Parameter(F.normalize(torch.randn(num_codes, dim), dim=-1))
        self.register_buffer("usage", torch.full((num_codes,), 1.0 / num_codes))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # warmup > 0: for the first `warmup` training steps the bottleneck is continuous (the normalized
        # encoder output passes through), then the codebook starts from k-means of the latents seen last.
        self.warmup = warmup
        self._recent: list[torch.Tensor] = []
        self._warm = warmup > 0  # until the warm-up is seen to be over (then no per-step check, no sync)

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
        """z (..., C) -> quantized (straight-through), indices, vq loss, perplexity.
        During warm-up (training only) the normalized z passes through unquantized, with zero loss."""
        z = F.normalize(z.float(), dim=-1)
        if self._warm and int(self.steps) >= self.warmup:  # also true at once when resuming past it
            self._warm = False
        warming = self.training and self._warm
        indices = self._nearest_prepared(z.detach() if warming else z)
        counts = torch.bincount(indices.reshape(-1), minlength=self.num_codes).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        probs = counts / counts.sum().clamp(min=1)
        stats = {
            "indices": indices,
            "perplexity": torch.exp(-(probs * (probs + 1e-10).log()).sum()),
            "active_codes": (counts > 0).sum(),
        }
        if warming:
            self._warmup_step(z)
            return {"quantized": z, "loss": z.new_zeros(()), **stats}
        q = self.codes()[indices]
        codebook_loss = F.mse_loss(q, z.detach())
        commit_loss = F.mse_loss(z, q.detach())
        if self.training:
            self._track(probs, z)
        return {
            "quantized": z + (q - z).detach(),
            "loss": codebook_loss + self.commitment * commit_loss,
            **stats,
        }

    @torch.no_grad()
    def _warmup_step(self, z: torch.Tensor) -> None:
        """Keep the latents of the last 32 warm-up batches; at the last one, k-means them into codes."""
        self._recent = [*self._recent[-31:], z.reshape(-1, self.dim)]
        self.steps += 1
        if int(self.steps) == self.warmup:
            self.kmeans_init(torch.cat(self._recent))
            self._recent = []

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor, iters: int = 25, seed: int = 0) -> None:
        """Spherical k-means (k-means++ seeding) of normalized latents z (M, C) into the codebook."""
        z = F.normalize(z.float(), dim=-1)
        g = torch.Generator(device="cpu").manual_seed(seed)
        centers = [z[int(torch.randint(0, len(z), (1,), generator=g))]]
        for _ in range(1, self.num_codes):
            d = (1 - z @ torch.stack(centers).T).clamp(min=0).min(1).values
            p = (d / d.sum()).cpu() if float(d.sum()) > 0 else torch.full((len(z),), 1.0 / len(z))
            centers.append(z[int(torch.multinomial(p, 1, generator=g))])
        c = torch.stack(centers)
        for _ in range(iters):
            assign = (z @ c.T).argmax(1)
            sums = torch.zeros_like(c).index_add_(0, assign, z)
            counts = torch.bincount(assign, minlength=self.num_codes)
            c = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), c)
        self.codebook.data.copy_(c.to(self.codebook.dtype))
        self.usage.fill_(1.0 / self.num_codes)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(self.codebook.data, 0)

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

"""The ST-transformer every model is built from: spatial attention within a frame, causal temporal
attention across frames at the same token position, then a feed-forward layer. Pre-norm, QK-norm,
residuals; RoPE over frames (and, with a grid, 2D RoPE within a frame).

Letters: B batch, T frames, N tokens per frame, D width, nh heads, K head dim, H W pixels, h w grid.

What temporal attention sees of the past is the cache's business (genie/core/cache.py): a block hands
its new keys and values to the cache and gets back the keys, values and mask to attend over.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from genie.core import kernels
from genie.core.cache import CacheStep, FullSequence, KVCache, TemporalCache, receptive_field


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


def rope_tables(positions: torch.Tensor, dim: int, base: float = 10000.0):
    """fp32 cos/sin tables (L, dim/2) for integer positions (L,).

    The angles are formed and reduced mod 2*pi in float64: frame indices grow without bound in a long
    rollout, and an fp32 angle at frame 10^6 is off by about 0.02 rad (measured), which would break the relative
    (shift-invariant) property the cache relies on. Float64 keeps it exact to ~1e-9 rad far beyond that."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float64) / dim))
    angles = torch.remainder(positions.to(torch.float64)[:, None] * inv_freq[None, :], 2 * math.pi)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., L, K) rotated by position; cos/sin (L, K/2). Computed in fp32, returned in x.dtype."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def rope_2d_tables(grid: int, dim: int, device=None):
    """cos/sin (grid*grid, dim/2) for 2D RoPE over a grid x grid frame: the first half of the rotation
    pairs turns with the row, the second with the column, so q.k depends only on the 2D offset."""
    ys, xs = torch.meshgrid(
        torch.arange(grid, device=device), torch.arange(grid, device=device), indexing="ij"
    )
    cos_y, sin_y = rope_tables(ys.flatten(), dim // 2)
    cos_x, sin_x = rope_tables(xs.flatten(), dim // 2)
    return torch.cat([cos_y, cos_x], -1), torch.cat([sin_y, sin_x], -1)


class Attention(nn.Module):
    """Multi-head self-attention with QK-norm; `temporal=True` adds RoPE over frames and the cache."""

    def __init__(self, dim: int, heads: int, temporal: bool):
        super().__init__()
        assert dim % heads == 0, "d_model must be divisible by heads"
        self.heads, self.head_dim, self.temporal = heads, dim // heads, temporal
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.proj = nn.Linear(dim, dim, bias=False)

    def _split(self, x):
        """(B', L, D) -> q, k, v each (B', nh, L, K)."""
        qkv = rearrange(self.qkv(x), "b l (three nh k) -> three b nh l k", three=3, nh=self.heads)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def forward_spatial(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        """x (B, T, N, D); rope: optional 2D (cos, sin) tables (N, K/2): relative positions in the frame."""
        B = x.shape[0]
        q, k, v = self._split(rearrange(x, "b t n d -> (b t) n d"))  # (B*T, nh, N, K)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = kernels.attention(q, k, v)
        return self.proj(rearrange(out, "(b t) nh n k -> b t n (nh k)", b=B))

    def forward_temporal(
        self, x: torch.Tensor, cache: TemporalCache, layer: int, step: CacheStep, rope=None
    ) -> torch.Tensor:
        """x (B, T, N, D): the new frames, at absolute indices step.positions. The cache adds what this
        layer may see of the past (and stores the new keys/values when the step commits). rope: the
        frames' (cos, sin) tables when the caller built them once for all layers."""
        B, T, N, D = x.shape
        q, k, v = self._split(rearrange(x, "b t n d -> (b n) t d"))  # (B*N, nh, T, K)
        cos, sin = rope if rope is not None else rope_tables(step.positions, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        keys, values, mask = cache.attend(layer, k, v, step)  # (B*N, nh, Tk, K)
        out = kernels.attention(q, keys, values, attn_mask=mask)  # (B*N, nh, T, K)
        return self.proj(rearrange(out, "(b n) nh t k -> b t n (nh k)", b=B))


class STBlock(nn.Module):
    """Pre-norm: x += spatial_attn(norm(x)); x += temporal_attn(norm(x)) (causal); x += ffn(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_s, self.norm_t, self.norm_f = RMSNorm(dim), RMSNorm(dim), RMSNorm(dim)
        self.spatial = Attention(dim, heads, temporal=False)
        self.temporal = Attention(dim, heads, temporal=True)
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(
        self, x, cache: TemporalCache, layer: int, step: CacheStep, spatial_rope=None, temporal_rope=None
    ):
        """x (B, T, N, D) -> (B, T, N, D). spatial_rope / temporal_rope: tables built once per stack."""
        x = x + self.spatial.forward_spatial(self.norm_s(x), spatial_rope)
        x = x + self.temporal.forward_temporal(self.norm_t(x), cache, layer, step, temporal_rope)
        return x + self.fc2(F.gelu(self.fc1(self.norm_f(x)), approximate="tanh"))


class STTransformer(nn.Module):
    """A stack of ST blocks with a final norm. `window` is the temporal context in frames."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        window: int,
        mlp_ratio: float = 4.0,
        spatial_rope_grid: int | None = None,
        spatial_rope_prefix: int = 0,
    ):
        super().__init__()
        self.window = window
        # With a grid, spatial attention uses 2D RoPE (translation-equivariant) instead of relying on
        # absolute position embeddings added by the model.
        self.spatial_rope_grid = spatial_rope_grid
        if spatial_rope_grid is not None:
            assert (dim // heads) % 4 == 0, "2D RoPE needs a head dim divisible by 4"
            # Built once (not per forward: the MaskGIT loop calls forward `steps` times a frame). The
            # first `spatial_rope_prefix` tokens of a frame (e.g. an action token) are not rotated.
            cos, sin = rope_2d_tables(spatial_rope_grid, dim // heads)
            p = spatial_rope_prefix
            self.register_buffer("rope_cos", F.pad(cos, (0, 0, p, 0), value=1.0), persistent=False)
            self.register_buffer("rope_sin", F.pad(sin, (0, 0, p, 0)), persistent=False)
        self.blocks = nn.ModuleList([STBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = RMSNorm(dim)

    @property
    def receptive_field(self) -> int:
        """Frames that can still influence the next output: depth * (window - 1) + 1."""
        return receptive_field(len(self.blocks), self.window)

    def new_cache(self) -> KVCache:
        return KVCache(self.window)

    def forward(
        self, x: torch.Tensor, cache: TemporalCache | None = None, commit: bool = True
    ) -> torch.Tensor:
        """x (B, T, N, D) -> (B, T, N, D).

        With a cache, x holds the frames after those already committed; `commit=False` reads the cache
        without adding x to it (MaskGIT refinement steps), `commit=True` appends x's frames. Without
        one, x is the whole sequence.
        """
        B, T, N, _ = x.shape
        cache = cache if cache is not None else FullSequence(self.window)
        step = cache.begin(B, T, N, commit, x.device)
        spatial = None
        if self.spatial_rope_grid is not None:  # fp32 tables even when the model was cast to bf16/fp16
            spatial = (self.rope_cos.float(), self.rope_sin.float())
        temporal = rope_tables(step.positions, self.blocks[0].temporal.head_dim)  # once for all layers
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, step, spatial, temporal)
        cache.end(step)
        return self.norm(x)


def init_weights(module: nn.Module, depth: int) -> None:
    """GPT-2 style init: N(0, 0.02), residual output projections scaled by 1/sqrt(2*depth)."""
    for name, p in module.named_parameters():
        if p.dim() < 2:
            continue
        std = 0.02
        if name.endswith("proj.weight") or name.endswith("fc2.weight"):
            std = 0.02 / math.sqrt(2 * max(depth, 1))
        nn.init.normal_(p, mean=0.0, std=std)
    for m in module.modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, H, W, 3) -> (B, T, N = h*w, patch*patch*3)."""
    return rearrange(frames, "b t (h p) (w q) c -> b t (h w) (p q c)", p=patch, q=patch)


def unpatchify(x: torch.Tensor, patch: int, h: int, w: int) -> torch.Tensor:
    """(B, T, N = h*w, patch*patch*3) -> (B, T, H, W, 3)."""
    return rearrange(x, "b t (h w) (p q c) -> b t (h p) (w q) c", h=h, w=w, p=patch, q=patch)

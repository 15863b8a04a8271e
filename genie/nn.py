"""Shared building blocks: the ST-transformer (spatial attention, causal temporal attention, FFN) and
its exact temporal KV cache.

Dimension letters (used throughout the project):
    B batch, T frames, N tokens per frame (h*w, plus one when an action token is prepended),
    D model width, H heads, K head dim, W temporal window (frames one query may see, itself included).

Why a cache is exact here: spatial attention never leaves a frame and temporal attention is causal, so
the activations of frames already seen never change when a new frame arrives. Each layer keeps the
temporal keys/values of the last W-1 frames; a new frame then costs only its own N tokens. The uncached
forward uses the same banded causal mask (a query at frame t sees frames t-W+1..t), so both paths compute
the same function over any sequence length. Temporal positions use RoPE, which depends only on frame
differences, so a sliding window needs no re-encoding of cached keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genie import kernels


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


def band_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """Boolean (Lq, Lk): True where query position may attend key position (causal, within window)."""
    diff = q_pos[:, None] - k_pos[None, :]
    return (diff >= 0) & (diff < window)


@dataclass
class KVCache:
    """Temporal keys/values per layer for the last W-1 frames, plus the absolute index of the next frame.

    Each entry is (k, v) of shape (B*N, H, Tp, K). `pos` counts frames committed so far.
    """

    window: int
    layers: list = field(default_factory=list)
    pos: int = 0
    valid: torch.Tensor | None = None  # (B, Tp) bool: which cached frames each row may see; None = all
    # (kept only while some row has invalid slots: see STTransformer.forward)

    def batch_size(self, tokens_per_frame: int) -> int:
        return self.layers[0][0].shape[0] // tokens_per_frame

    def layer(self, i: int):
        return self.layers[i] if i < len(self.layers) else None

    def set_layer(self, i: int, kv) -> None:
        if i < len(self.layers):
            self.layers[i] = kv
        else:
            self.layers.append(kv)

    @property
    def frames(self) -> int:
        return 0 if not self.layers else self.layers[0][0].shape[2]

    def merge_rows(self, rows: torch.Tensor, other: KVCache, tokens_per_frame: int) -> None:
        """Replace batch rows `rows` (b,) with the b rows of `other` (a cache of the same model whose
        frames end where this one's end, e.g. a freshly encoded prompt). Slots a row has no frame for
        are marked invalid, so a reset env never sees the previous episode."""
        n = tokens_per_frame
        B, Tp, To = self.batch_size(n), self.frames, other.frames
        T = max(Tp, To)
        valid = (
            self.valid if self.valid is not None else torch.ones(B, Tp, dtype=torch.bool, device=rows.device)
        )
        valid = torch.cat([torch.zeros(B, T - Tp, dtype=torch.bool, device=rows.device), valid], dim=1)
        other_valid = (
            other.valid
            if other.valid is not None
            else torch.ones(len(rows), To, dtype=torch.bool, device=rows.device)
        )
        valid[rows] = torch.cat(
            [torch.zeros(len(rows), T - To, dtype=torch.bool, device=rows.device), other_valid], 1
        )
        merged = []
        for (k, v), (ko, vo) in zip(self.layers, other.layers):
            k, v = _left_pad(k, T), _left_pad(v, T)
            ko, vo = _left_pad(ko, T), _left_pad(vo, T)
            H, K = k.shape[1], k.shape[3]
            k = k.view(B, n, H, T, K).clone()
            v = v.view(B, n, H, T, K).clone()
            k[rows] = ko.view(len(rows), n, H, T, K)
            v[rows] = vo.view(len(rows), n, H, T, K)
            merged.append((k.view(B * n, H, T, K), v.view(B * n, H, T, K)))
        self.layers, self.valid = merged, None if bool(valid.all()) else valid


class RingKVCache:
    """A fixed-shape temporal cache for a captured step (torch.compile, CUDA graphs): the same function
    as KVCache, with no shape that changes from frame to frame and no host-side state.

    Each layer keeps (k, v) of shape (B*N, H, S, K) with S = W-1 slots; frame p lives in slot p % S.
    Keys are stored already rotated at their absolute frame index, and attention does not care about
    the order of its keys, so a frame's slot does not matter. `valid` (B, S) bool marks the slots each
    row may see (empty slots, and a reset row's previous episode, are invalid); `pos` is the next frame's
    index as a device tensor (1,), so a captured graph reads and advances it without syncing.
    Built from a KVCache with `from_cache`; `load_` refills the same buffers (a captured graph keeps
    pointing at them).
    """

    def __init__(self, window: int, layers: list, valid: torch.Tensor, pos: torch.Tensor):
        self.window, self.layers, self.valid, self.pos = window, layers, valid, pos

    @property
    def slots(self) -> int:
        return self.window - 1

    @classmethod
    def from_cache(cls, cache: KVCache, tokens_per_frame: int) -> RingKVCache:
        if not cache.layers:
            raise ValueError("RingKVCache.from_cache needs a cache that has seen at least one frame.")
        S = cache.window - 1
        k0 = cache.layers[0][0]
        B = k0.shape[0] // tokens_per_frame
        layers = [
            (
                k.new_zeros(k.shape[0], k.shape[1], S, k.shape[3]),
                v.new_zeros(v.shape[0], v.shape[1], S, v.shape[3]),
            )
            for k, v in cache.layers
        ]
        ring = cls(
            cache.window,
            layers,
            torch.zeros(B, S, dtype=torch.bool, device=k0.device),
            torch.zeros(1, dtype=torch.long, device=k0.device),
        )
        ring.load_(cache)
        return ring

    def load_(self, cache: KVCache, rows: torch.Tensor | None = None) -> None:
        """Copy a KVCache (frames ending where this ring's next frame starts) into the buffers, in place:
        every row, or only `rows` (b,) when `cache` holds those b rows."""
        S, Tp = self.slots, cache.frames
        if cache.window != self.window or len(cache.layers) != len(self.layers):
            raise ValueError("RingKVCache.load_ got a cache of a different model.")
        if Tp > S:
            raise ValueError(f"A cache of {Tp} frames does not fit in {S} ring slots.")
        if rows is None:
            self.pos.fill_(cache.pos)
        n_rows = self.valid.shape[0] if rows is None else len(rows)
        src_valid = (
            cache.valid
            if cache.valid is not None
            else torch.ones(n_rows, Tp, dtype=torch.bool, device=self.valid.device)
        )
        valid = torch.zeros(n_rows, S, dtype=torch.bool, device=self.valid.device)
        if S == 0:
            return
        slots = torch.tensor(
            [(cache.pos - Tp + j) % S for j in range(Tp)], dtype=torch.long, device=valid.device
        )
        valid[:, slots] = src_valid
        if rows is None:
            self.valid.copy_(valid)
        else:
            self.valid[rows] = valid
        for (k, v), (ck, cv) in zip(self.layers, cache.layers):
            for dst, src in ((k, ck), (v, cv)):
                if rows is None:
                    dst.zero_()
                    dst[:, :, slots] = src
                else:
                    n = dst.shape[0] // self.valid.shape[0]
                    view = dst.view(self.valid.shape[0], n, *dst.shape[1:])
                    block = torch.zeros_like(view[rows])
                    block[:, :, :, slots] = src.view(len(rows), n, *src.shape[1:])
                    view[rows] = block


def _left_pad(x: torch.Tensor, T: int) -> torch.Tensor:
    """(B', H, Tp, K) -> (B', H, T, K), zero slots in front."""
    if x.shape[2] == T:
        return x
    pad = x.new_zeros(x.shape[0], x.shape[1], T - x.shape[2], x.shape[3])
    return torch.cat([pad, x], dim=2)


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
        # (B', L, D) -> q, k, v each (B', H, L, K)
        Bp, L, _ = x.shape
        qkv = self.qkv(x).view(Bp, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v

    def forward_spatial(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        """rope: optional 2D (cos, sin) tables (N, K/2): relative positions within the frame."""
        B, T, N, D = x.shape
        q, k, v = self._split(x.reshape(B * T, N, D))  # (B*T, H, N, K)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = kernels.attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, T, N, D))

    def forward_temporal(
        self,
        x: torch.Tensor,
        window: int,
        t0: int,
        past=None,
        commit: bool = False,
        past_valid: torch.Tensor | None = None,
        rope=None,
    ):
        """x (B, T, N, D) holds frames t0..t0+T-1; past (k, v) (B*N, H, Tp, K) holds frames t0-Tp..t0-1;
        past_valid (B, Tp) bool masks cached frames per row (None: all valid); rope: the (cos, sin)
        tables of frames t0..t0+T-1 when the caller built them once for all layers.

        Returns (out (B, T, N, D), new_past or None).
        """
        B, T, N, D = x.shape
        xt = x.permute(0, 2, 1, 3).reshape(B * N, T, D)  # (B*N, T, D)
        q, k, v = self._split(xt)  # (B*N, H, T, K)
        q_pos = torch.arange(t0, t0 + T, device=x.device)
        cos, sin = rope if rope is not None else rope_tables(q_pos, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if past is not None and past[0].shape[2] > 0:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        Tk = k.shape[2]
        k_pos = torch.arange(t0 + T - Tk, t0 + T, device=x.device)
        if T == 1 and Tk <= window:
            mask = None  # one new frame against at most W-1 past frames: everything is visible
        else:
            mask = band_mask(q_pos, k_pos, window)
        if past_valid is not None:
            key_valid = torch.cat([past_valid, past_valid.new_ones(B, T)], dim=1)  # (B, Tk)
            rows = key_valid[:, None, :] if mask is None else mask[None] & key_valid[:, None, :]  # (B, T, Tk)
            mask = rows[:, None, None].expand(B, N, 1, T, Tk).reshape(B * N, 1, T, Tk)
        out = kernels.attention(q, k, v, attn_mask=mask)  # (B*N, H, T, K)
        out = out.transpose(1, 2).reshape(B, N, T, D).permute(0, 2, 1, 3)
        new_past = None
        if commit:
            start = max(Tk - (window - 1), 0)  # keep the last W-1 frames
            new_past = (k[:, :, start:].contiguous(), v[:, :, start:].contiguous())
        return self.proj(out), new_past

    def forward_temporal_ring(self, x: torch.Tensor, ring: RingKVCache, layer: int, commit: bool, shared):
        """One new frame x (B, 1, N, D) against the ring's slots (see RingKVCache); commit=True writes
        its keys/values into the frame's slot (the caller advances pos and `valid` once for all layers).
        `shared` = (cos, sin, mask, slot): the frame's RoPE tables, the (B*N, 1, 1, S+1) key mask and
        the slot index, built once per stack (STTransformer._forward_ring). Fixed shapes, no host sync:
        the path a captured step takes."""
        B, T, N, D = x.shape
        cos, sin, mask, slot = shared
        xt = x.reshape(B * N, 1, D)  # T == 1: (B, 1, N, D) -> (B*N, 1, D) is a view
        q, k, v = self._split(xt)  # (B*N, H, 1, K)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past_k, past_v = ring.layers[layer]
        keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B*N, H, S+1, K)
        out = kernels.attention(q, keys, values, attn_mask=mask)  # (B*N, H, 1, K)
        if commit and slot is not None:
            past_k.index_copy_(2, slot, k)
            past_v.index_copy_(2, slot, v)
        return self.proj(out.reshape(B, 1, N, D))


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
        self,
        x,
        window: int,
        t0: int = 0,
        past=None,
        commit: bool = False,
        past_valid=None,
        spatial_rope=None,
        temporal_rope=None,
    ):
        """`past` is a layer's (k, v) of a KVCache, or (RingKVCache, layer index, key mask, slot) for the
        fixed-shape path (see STTransformer._forward_ring);
        temporal_rope: the frames' (cos, sin) tables, built once per stack (None: built here)."""
        x = x + self.spatial.forward_spatial(self.norm_s(x), spatial_rope)
        h = self.norm_t(x)
        if isinstance(past, tuple) and isinstance(past[0], RingKVCache):
            ring, layer, mask, slot = past
            t_out = self.temporal.forward_temporal_ring(h, ring, layer, commit, (*temporal_rope, mask, slot))
            new_past = None
        else:
            t_out, new_past = self.temporal.forward_temporal(
                h, window, t0, past, commit, past_valid, temporal_rope
            )
        x = x + t_out
        x = x + self.fc2(F.gelu(self.fc1(self.norm_f(x)), approximate="tanh"))
        return x, new_past


class STTransformer(nn.Module):
    """A stack of ST blocks with a final norm. `window` is the temporal context W in frames."""

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
            # Built once (not per forward: the MaskGIT loop calls forward S times a frame). The first
            # `spatial_rope_prefix` tokens of a frame (e.g. an action token) are not rotated.
            cos, sin = rope_2d_tables(spatial_rope_grid, dim // heads)
            p = spatial_rope_prefix
            self.register_buffer("rope_cos", F.pad(cos, (0, 0, p, 0), value=1.0), persistent=False)
            self.register_buffer("rope_sin", F.pad(sin, (0, 0, p, 0)), persistent=False)
        self.blocks = nn.ModuleList([STBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = RMSNorm(dim)

    def new_cache(self) -> KVCache:
        return KVCache(window=self.window)

    def forward(
        self, x: torch.Tensor, cache: KVCache | RingKVCache | None = None, commit: bool = True
    ) -> torch.Tensor:
        """x (B, T, N, D) -> (B, T, N, D).

        With a cache, x holds the frames after those already committed; `commit=False` reads the cache
        without adding x to it (MaskGIT refinement steps), `commit=True` appends x's frames. A
        RingKVCache takes one frame at a time (T == 1).
        """
        if isinstance(cache, RingKVCache):
            return self._forward_ring(x, cache, commit)
        t0 = cache.pos if cache is not None else 0
        past_valid = cache.valid if cache is not None and cache.layers else None
        rope = None
        if self.spatial_rope_grid is not None:  # fp32 tables even when the model was cast to bf16/fp16
            rope = (self.rope_cos.float(), self.rope_sin.float())
        head_dim = self.blocks[0].temporal.head_dim
        frames = rope_tables(
            torch.arange(t0, t0 + x.shape[1], device=x.device), head_dim
        )  # once for all layers
        for i, block in enumerate(self.blocks):
            past = cache.layer(i) if cache is not None else None
            x, new_past = block(
                x, self.window, t0, past, cache is not None and commit, past_valid, rope, frames
            )
            if cache is not None and commit:
                cache.set_layer(i, new_past)
        if cache is not None and commit:
            if cache.valid is not None:
                B, T = x.shape[0], x.shape[1]
                valid = torch.cat([cache.valid, cache.valid.new_ones(B, T)], dim=1)
                valid = valid[:, valid.shape[1] - cache.frames :]
                # Once a reset row's window is full again, drop the mask: the refinement steps of later
                # frames then take the unmasked path without checking (or syncing) anything.
                cache.valid = None if bool(valid.all()) else valid
            cache.pos += x.shape[1]
        return self.norm(x)

    def _forward_ring(self, x: torch.Tensor, ring: RingKVCache, commit: bool) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"A RingKVCache takes one frame per call, got {x.shape[1]}.")
        rope = None
        if self.spatial_rope_grid is not None:
            rope = (self.rope_cos.float(), self.rope_sin.float())
        # Built once for all layers: the frame's RoPE tables, the key mask, the slot the frame goes to.
        B, _, N, _ = x.shape
        frames = rope_tables(ring.pos, self.blocks[0].temporal.head_dim)
        key_valid = torch.cat([ring.valid, ring.valid.new_ones(B, 1)], dim=1)  # (B, S+1): the new frame too
        mask = key_valid[:, None, None, None, :].expand(B, N, 1, 1, ring.slots + 1).reshape(B * N, 1, 1, -1)
        slot = torch.remainder(ring.pos, ring.slots) if ring.slots > 0 else None
        for i, block in enumerate(self.blocks):
            x, _ = block(x, self.window, 0, (ring, i, mask, slot), commit, None, rope, frames)
        if commit:
            if slot is not None:
                ring.valid.index_fill_(1, slot, True)
            ring.pos.add_(1)
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
    """(B, T, H, W, C) -> (B, T, h*w, patch*patch*C)."""
    B, T, H, W, C = frames.shape
    h, w = H // patch, W // patch
    x = frames.reshape(B, T, h, patch, w, patch, C).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(B, T, h * w, patch * patch * C)


def unpatchify(x: torch.Tensor, patch: int, h: int, w: int, C: int = 3) -> torch.Tensor:
    """(B, T, h*w, patch*patch*C) -> (B, T, h*patch, w*patch, C)."""
    B, T = x.shape[:2]
    x = x.reshape(B, T, h, w, patch, patch, C).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(B, T, h * patch, w * patch, C)

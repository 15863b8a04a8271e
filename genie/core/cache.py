"""Temporal caches: what causal temporal attention may see of the past, behind one interface.

Letters: B batch, T new frames, Tp frames held, Tk = Tp + T keys, N tokens per frame, nh heads,
K head dim.

Why a cache is exact: spatial attention never leaves a frame and temporal attention is causal, so the
activations of frames already seen never change when a new frame arrives. Each layer keeps the
temporal keys/values of the last window - 1 frames; a new frame then costs only its own N tokens. The
uncached forward uses the same banded causal mask (a query at frame t sees frames t-window+1..t), so
every path computes the same function over any sequence length. Keys are rotated (RoPE) at their
absolute frame index before they are stored, and RoPE depends only on frame differences, so cached keys
never need re-encoding.

The interface (`TemporalCache`), used once per forward of an ST-transformer:

    step = cache.begin(B, T, N, commit, device)      # positions of the new frames, the shared key mask
    keys, values, mask = cache.attend(layer, k, v, step)   # per layer; stores k, v when committing
    cache.end(step)                                  # advance the position (commit only)

Implementations: `FullSequence` (no cache: the chunk is the whole sequence), `KVCache` (grows to
window - 1 frames, then slides) and `RingKVCache` (fixed shapes, no host sync: what a captured step
uses). Both caches take `merge_rows(rows, fresh)` to restart some batch rows from a freshly encoded
prompt. `FrameHistory` is the uncached path's one trimming rule: keep the frames that can still
influence the next output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch


def band_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int) -> torch.Tensor:
    """Boolean (Lq, Lk): True where query position may attend key position (causal, within window)."""
    diff = q_pos[:, None] - k_pos[None, :]
    return (diff >= 0) & (diff < window)


def receptive_field(depth: int, window: int) -> int:
    """Frames that can still influence the next frame's output of a `depth`-block stack."""
    return depth * (window - 1) + 1


class CacheStep(NamedTuple):
    """What every layer of one forward shares: the new frames' absolute indices (T,), the key mask
    (None, (T, Tk) or (B*N, 1, T, Tk) bool), whether the frames are committed, and (ring) the slot the
    new frame goes to and the slots in oldest-first order."""

    positions: torch.Tensor
    mask: torch.Tensor | None
    commit: bool
    slot: torch.Tensor | None = None
    order: torch.Tensor | None = None


class TemporalCache(ABC):
    """What a temporal attention layer asks of its past. See the module docstring."""

    window: int

    @abstractmethod
    def begin(self, B: int, T: int, N: int, commit: bool, device) -> CacheStep:
        """Once per forward, before the layers: the new frames' positions and the shared key mask."""

    @abstractmethod
    def attend(self, layer: int, k: torch.Tensor, v: torch.Tensor, step: CacheStep):
        """k, v (B*N, nh, T, K) of the new frames, already rotated -> (keys, values (B*N, nh, Tk, K), mask)."""

    def end(self, step: CacheStep) -> None:
        """Once per forward, after the layers: advance the position (caches that commit frames)."""


class FullSequence(TemporalCache):
    """No cache: the chunk is the whole sequence, frames 0..T-1, under the banded causal mask."""

    def __init__(self, window: int):
        self.window = window

    def begin(self, B, T, N, commit, device) -> CacheStep:
        pos = torch.arange(T, device=device)
        return CacheStep(pos, None if T == 1 else band_mask(pos, pos, self.window), False)

    def attend(self, layer, k, v, step):
        return k, v, step.mask


class KVCache(TemporalCache):
    """Temporal keys/values per layer for the last window - 1 frames, plus the index of the next frame.

    Each entry of `layers` is (k, v) of shape (B*N, nh, Tp, K); `pos` counts frames committed so far.
    `valid` (B, Tp) bool says which cached frames each row may see (None: all); it is kept only while
    some row has invalid slots (a row restarted by `merge_rows`).
    """

    def __init__(self, window: int):
        self.window = window
        self.layers: list = []
        self.pos = 0
        self.valid: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return 0 if not self.layers else self.layers[0][0].shape[2]

    def batch_size(self, tokens_per_frame: int) -> int:
        return self.layers[0][0].shape[0] // tokens_per_frame

    def begin(self, B, T, N, commit, device) -> CacheStep:
        t0, Tk = self.pos, self.frames + T
        q_pos = torch.arange(t0, t0 + T, device=device)
        if T == 1 and Tk <= self.window:
            mask = None  # one new frame against at most window - 1 past frames: everything is visible
        else:
            mask = band_mask(q_pos, torch.arange(t0 + T - Tk, t0 + T, device=device), self.window)
        if self.valid is not None:
            key_valid = torch.cat([self.valid, self.valid.new_ones(B, T)], dim=1)  # (B, Tk)
            rows = key_valid[:, None, :] if mask is None else mask[None] & key_valid[:, None, :]  # (B, T, Tk)
            mask = rows[:, None, None].expand(B, N, 1, T, Tk).reshape(B * N, 1, T, Tk)
        return CacheStep(q_pos, mask, commit)

    def attend(self, layer, k, v, step):
        if layer < len(self.layers) and self.layers[layer][0].shape[2] > 0:
            past_k, past_v = self.layers[layer]
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        if step.commit:
            start = max(k.shape[2] - (self.window - 1), 0)  # keep the last window - 1 frames
            kept = (k[:, :, start:].contiguous(), v[:, :, start:].contiguous())
            if layer < len(self.layers):
                self.layers[layer] = kept
            else:
                self.layers.append(kept)
        return k, v, step.mask

    def end(self, step) -> None:
        if not step.commit:
            return
        T = step.positions.shape[0]
        if self.valid is not None:
            valid = torch.cat([self.valid, self.valid.new_ones(self.valid.shape[0], T)], dim=1)
            valid = valid[:, valid.shape[1] - self.frames :]
            # Once a restarted row's window is full again, drop the mask: the refinement steps of later
            # frames then take the unmasked path without checking (or syncing) anything.
            self.valid = None if bool(valid.all()) else valid
        self.pos += T

    def merge_rows(self, rows: torch.Tensor, other: KVCache, tokens_per_frame: int) -> None:
        """Replace batch rows `rows` (b,) with the b rows of `other` (a cache of the same model whose
        frames end where this one's end, e.g. a freshly encoded prompt). Slots a row has no frame for
        are marked invalid, so a reset env never sees the previous episode."""
        n, device = tokens_per_frame, rows.device
        B, Tp, To = self.batch_size(n), self.frames, other.frames
        T = max(Tp, To)

        def full(valid, b, t):
            return valid if valid is not None else torch.ones(b, t, dtype=torch.bool, device=device)

        valid = torch.cat(
            [torch.zeros(B, T - Tp, dtype=torch.bool, device=device), full(self.valid, B, Tp)], 1
        )
        valid[rows] = torch.cat(
            [
                torch.zeros(len(rows), T - To, dtype=torch.bool, device=device),
                full(other.valid, len(rows), To),
            ],
            1,
        )
        merged = []
        for (k, v), (ko, vo) in zip(self.layers, other.layers):
            nh, K = k.shape[1], k.shape[3]
            k = _left_pad(k, T).view(B, n, nh, T, K).clone()
            v = _left_pad(v, T).view(B, n, nh, T, K).clone()
            k[rows] = _left_pad(ko, T).view(len(rows), n, nh, T, K)
            v[rows] = _left_pad(vo, T).view(len(rows), n, nh, T, K)
            merged.append((k.view(B * n, nh, T, K), v.view(B * n, nh, T, K)))
        self.layers, self.valid = merged, None if bool(valid.all()) else valid


class RingKVCache(TemporalCache):
    """A fixed-shape temporal cache for a captured step (torch.compile, CUDA graphs): the same function
    as KVCache, with no shape that changes from frame to frame and no host-side state.

    Each layer keeps (k, v) of shape (B*N, nh, slots, K) with slots = window - 1; frame p lives in slot
    p % slots. Keys are stored already rotated at their absolute frame index, and read oldest first
    (a fixed-shape gather), so attention sums them in the growing cache's order: the same frames bit
    for bit, not only up to rounding (read in slot order, the capture test's step 10 decoded one value
    of 6144 one level off on the dev CPU). `valid` (B, slots) bool marks
    the slots each row may see (empty slots, and a restarted row's previous episode, are invalid);
    `pos` is the next frame's index as a device tensor (1,), so a captured graph reads and advances it
    without syncing. Built from a KVCache with `from_cache`; `load_` refills the same buffers (a captured
    graph keeps pointing at them). Takes one frame per forward.
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
        slots = cache.window - 1
        k0 = cache.layers[0][0]
        B = k0.shape[0] // tokens_per_frame
        layers = [
            (
                k.new_zeros(k.shape[0], k.shape[1], slots, k.shape[3]),
                v.new_zeros(v.shape[0], v.shape[1], slots, v.shape[3]),
            )
            for k, v in cache.layers
        ]
        ring = cls(
            cache.window,
            layers,
            torch.zeros(B, slots, dtype=torch.bool, device=k0.device),
            torch.zeros(1, dtype=torch.long, device=k0.device),
        )
        ring.load_(cache)
        return ring

    def fits(self, cache: KVCache) -> bool:
        """Whether `cache` (of the same model and batch size) can be loaded into these buffers."""
        return [k.shape for k, _ in self.layers] == [
            (k.shape[0], k.shape[1], self.slots, k.shape[3]) for k, _ in cache.layers
        ]

    def begin(self, B, T, N, commit, device) -> CacheStep:
        if T != 1:
            raise ValueError(f"A RingKVCache takes one frame per call, got {T}.")
        # Keys oldest first, as the growing cache holds them (the same sums in the same order): slot
        # (pos + j) % slots holds frame pos - slots + j.
        order = torch.remainder(self.pos + torch.arange(self.slots, device=device), max(self.slots, 1))
        valid = self.valid.index_select(1, order)
        key_valid = torch.cat([valid, valid.new_ones(B, 1)], dim=1)  # (B, slots+1): the new frame too
        mask = key_valid[:, None, None, None, :].expand(B, N, 1, 1, self.slots + 1).reshape(B * N, 1, 1, -1)
        slot = torch.remainder(self.pos, self.slots) if commit and self.slots > 0 else None
        return CacheStep(self.pos, mask, commit, slot, order)

    def attend(self, layer, k, v, step):
        past_k, past_v = self.layers[layer]
        keys = torch.cat([past_k.index_select(2, step.order), k], dim=2)  # (B*N, nh, slots+1, K)
        values = torch.cat([past_v.index_select(2, step.order), v], dim=2)
        if step.slot is not None:
            past_k.index_copy_(2, step.slot, k)
            past_v.index_copy_(2, step.slot, v)
        return keys, values, step.mask

    def end(self, step) -> None:
        if step.commit:
            if step.slot is not None:
                self.valid.index_fill_(1, step.slot, True)
            self.pos.add_(1)

    def load_(self, cache: KVCache, rows: torch.Tensor | None = None) -> None:
        """Copy a KVCache (frames ending where this ring's next frame starts) into the buffers, in place:
        every row, or only `rows` (b,) when `cache` holds those b rows."""
        slots, Tp = self.slots, cache.frames
        if cache.window != self.window or len(cache.layers) != len(self.layers):
            raise ValueError("RingKVCache.load_ got a cache of a different model.")
        if Tp > slots:
            raise ValueError(f"A cache of {Tp} frames does not fit in {slots} ring slots.")
        if rows is None:
            self.pos.fill_(cache.pos)
        n_rows = self.valid.shape[0] if rows is None else len(rows)
        src_valid = (
            cache.valid
            if cache.valid is not None
            else torch.ones(n_rows, Tp, dtype=torch.bool, device=self.valid.device)
        )
        valid = torch.zeros(n_rows, slots, dtype=torch.bool, device=self.valid.device)
        if slots == 0:
            return
        index = torch.tensor(
            [(cache.pos - Tp + j) % slots for j in range(Tp)], dtype=torch.long, device=valid.device
        )
        valid[:, index] = src_valid
        if rows is None:
            self.valid.copy_(valid)
        else:
            self.valid[rows] = valid
        for (k, v), (ck, cv) in zip(self.layers, cache.layers):
            for dst, src in ((k, ck), (v, cv)):
                if rows is None:
                    dst.zero_()
                    dst[:, :, index] = src
                else:
                    n = dst.shape[0] // self.valid.shape[0]
                    view = dst.view(self.valid.shape[0], n, *dst.shape[1:])
                    block = torch.zeros_like(view[rows])
                    block[:, :, :, index] = src.view(len(rows), n, *src.shape[1:])
                    view[rows] = block

    def merge_rows(self, rows: torch.Tensor, other: KVCache, tokens_per_frame: int) -> None:
        self.load_(other, rows)


def ring_from(ring: RingKVCache | None, cache: KVCache, tokens_per_frame: int) -> RingKVCache:
    """`cache` copied into `ring` when its buffers have the right shapes (a captured step keeps pointing
    at them), else into a new RingKVCache."""
    if ring is not None and ring.fits(cache):
        ring.load_(cache)
        return ring
    return RingKVCache.from_cache(cache, tokens_per_frame)


class FrameHistory:
    """The uncached path's memory: tensors of per-frame inputs (frames along dim 1), trimmed to the
    last `frames` frames (`receptive_field`), which is everything that can still change the next output."""

    def __init__(self, frames: int):
        self.frames = frames
        self.tensors: tuple | None = None

    def push(self, *new: torch.Tensor) -> tuple:
        if self.tensors is None:
            self.tensors = tuple(x[:, -self.frames :] for x in new)
        else:
            self.tensors = tuple(
                torch.cat([old, x], dim=1)[:, -self.frames :] for old, x in zip(self.tensors, new)
            )
        return self.tensors


def _left_pad(x: torch.Tensor, T: int) -> torch.Tensor:
    """(B', nh, Tp, K) -> (B', nh, T, K), zero slots in front."""
    if x.shape[2] == T:
        return x
    pad = x.new_zeros(x.shape[0], x.shape[1], T - x.shape[2], x.shape[3])
    return torch.cat([pad, x], dim=2)

"""MaskGIT sampling of the next frame's tokens, with or without the temporal KV cache.

Letters: B batch, T frames, N tokens per frame, V vocab.

One frame takes `steps` refinement steps. Step s (0-based) samples every still-masked token (gumbel-max at
`temperature`), scores it by its probability, and keeps masked the floor(N * cos(pi/2 * (s+1)/steps)) least
confident ones (cosine schedule); tokens once unmasked never change. The last step takes the argmax
and leaves nothing masked.

Randomness: each frame draws one key per row from the caller's torch.Generator; the gumbel noise of
every refinement step is then a counter-based hash of (key, step, token, vocabulary index)
(`hashed_gumbel`). The noise is therefore a pure function of device tensors: the same on every path
(cached, uncached, the fixed-shape captured step) and inside a CUDA graph, which cannot hold a
generator's Python-side state.

`Rollout` holds B sequences and steps them on any of the temporal caches (genie/core/cache.py); every
path computes the same function.
"""

from __future__ import annotations

import math

import torch

from genie.core import kernels
from genie.core.cache import FrameHistory, ring_from


def num_masked_after(step: int, steps: int, n: int) -> int:
    """Tokens still masked after refinement step `step` of `steps` (cosine schedule)."""
    return int(math.floor(n * math.cos(math.pi / 2 * (step + 1) / steps)))


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x in [0, 2^32) and a 32-bit constant c, with no int64 overflow (undefined
    behaviour in the C++ a compiler may generate): a c of 2^31 or more is replaced by c - 2^32, which is
    the same modulo 2^32 and keeps |x * c| below 2^63; the low 32 bits of a negative product are right."""
    return (x * (c - 2**32 if c >= 2**31 else c)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (xorshift-multiply, the 'lowbias32' constants) on int64 lanes < 2^32."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def noise_keys(B: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """One random key per row, int64 (B,) in [0, 2^31), on `device` (drawn on the generator's device)."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, 2**31 - 1, (B,), generator=generator, device=gen_device).to(device)


def index_hash(N: int, V: int, device) -> torch.Tensor:
    """The hashed flat (token, vocabulary) index, int64 (N*V,): the seed-free half of `hashed_gumbel`,
    computed once per frame and shared by its refinement steps."""
    return _hash32(torch.arange(N * V, device=device, dtype=torch.long))


def hashed_gumbel(keys: torch.Tensor, step: int, N: int, V: int, base: torch.Tensor | None = None):
    """Standard gumbel noise (B, N, V) fp32, a pure function of keys (B,) int64 and the step index.

    h = hash(hash(index) xor hash(key, step)): the inner hash scatters the indices, so two seeds never
    give shifted or permuted copies of each other's noise, as hash(index xor seed) alone would. The top
    24 bits make a uniform u in (0, 1) exactly representable in fp32, so -log(-log(u)) is always finite.
    `base` is index_hash(N, V) when the caller has it.
    """
    if base is None:
        base = index_hash(N, V, keys.device)
    seed = _hash32((keys + step * 0x9E3779B9) & _M32)  # (B,)
    h = _hash32(base[None, :] ^ seed[:, None])
    u = ((h >> 8).to(torch.float32) + 0.5) * (1.0 / 2**24)
    return (-torch.log(-torch.log(u))).view(-1, N, V)


def sample_frame_keyed(logits_fn, keys: torch.Tensor, N: int, mask_id: int, steps: int, temperature: float):
    """`steps` MaskGIT steps with the noise of `keys` (B,): no generator, no host sync, fixed shapes (what a
    captured step runs). `logits_fn(tokens (B, N)) -> logits (B, N, V)`. Returns tokens (B, N)."""
    B, device = keys.shape[0], keys.device
    tokens = torch.full((B, N), mask_id, dtype=torch.long, device=device)
    masked = torch.ones(B, N, dtype=torch.bool, device=device)
    base = None
    for s in range(steps):
        logits = logits_fn(tokens).float()
        last = s == steps - 1
        noise = None
        if not last and temperature > 0:
            if base is None:
                base = index_hash(N, logits.shape[-1], device)
            noise = hashed_gumbel(keys, s, N, logits.shape[-1], base)
        keep = torch.full((B,), 0 if last else num_masked_after(s, steps, N), dtype=torch.long, device=device)
        tokens, masked = kernels.maskgit_update(logits, tokens, masked, noise, max(temperature, 1e-6), keep)
        tokens = tokens.masked_fill(masked, mask_id)  # still-masked positions are MASK for the next step
    return tokens


@torch.no_grad()
def sample_frame(
    logits_fn,
    B: int,
    N: int,
    mask_id: int,
    steps: int,
    temperature: float,
    generator: torch.Generator | None,
    device,
) -> torch.Tensor:
    """Run `steps` MaskGIT steps. `logits_fn(tokens (B, N)) -> logits (B, N, V)`. Returns tokens (B, N)."""
    keys = noise_keys(B, generator, device)
    return sample_frame_keyed(logits_fn, keys, N, mask_id, steps, temperature)


class Rollout:
    """B parallel token sequences generated by a dynamics model, one frame per `step`.

    With the cache (the default) each refinement step runs the model on the new frame's N tokens only,
    against the cached keys/values of the past; the chosen frame is then committed. `ring=True` keeps
    that cache in a fixed-shape RingKVCache (genie/core/cache.py): the same function, with no host sync
    in `step_keyed`, so the step can be captured (torch.compile, CUDA graphs); its buffers are reused
    across `prompt` calls of the same batch size, so a captured step stays valid. Without the cache,
    each step recomputes the history the model can still see (`FrameHistory`). A dynamics that reads
    the previous frame (`previous_frame`) gets the last committed frame's tokens, `self.previous`
    (B, N), kept in one buffer on the ring (updated in place, so a captured step reads it).
    """

    def __init__(self, model, use_cache: bool = True, ring: bool = False):
        if ring and not use_cache:
            raise ValueError("The fixed-shape (ring) rollout needs the KV cache (use_cache=True).")
        self.model, self.use_cache, self.use_ring = model, use_cache, ring
        self.frame_index = 0  # frames committed so far (host-side mirror of the cache's position)
        self.N = model.cfg.grid**2
        self.cache = None  # KVCache, or RingKVCache with ring=True
        # Uncached: tokens (B, T, N) and the action leading into each frame (B, T) (-1 = sequence start).
        self.history = None if use_cache else FrameHistory(model.receptive_field)
        self.previous = None  # the last committed frame's tokens (B, N)

    def _keep_previous(self, tokens: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Remember tokens (b, N) as the last frame of every row, or of `rows`; in place on the ring."""
        if rows is not None:
            self.previous[rows] = tokens
        elif self.use_ring and self.previous is not None and self.previous.shape == tokens.shape:
            self.previous.copy_(tokens)
        else:
            self.previous = tokens.clone()

    def previous_input(self):
        """previous= for a one-frame chunk after the committed frames (None: the model reads none)."""
        return self.previous[:, None] if self.model.cfg.previous_frame else None

    @torch.no_grad()
    def prompt(self, tokens: torch.Tensor, actions: torch.Tensor | None = None) -> None:
        """tokens (B, T0, N); actions (B, T0-1) between prompt frames (None when T0 == 1)."""
        B, T0, _ = tokens.shape
        if actions is None:
            actions = torch.zeros(B, T0 - 1, dtype=torch.long, device=tokens.device)
        self.frame_index = T0
        self._keep_previous(tokens[:, -1])
        if not self.use_cache:
            start = torch.full((B, 1), -1, dtype=torch.long, device=tokens.device)
            self.history.tensors = None
            self.history.push(tokens, torch.cat([start, actions], dim=1))
            return
        cache = self.model.new_cache()
        self.model(tokens, actions, cache, commit=True)
        if self.use_ring:
            cache = ring_from(self.cache, cache, self.model.tokens_per_frame)
        self.cache = cache

    @torch.no_grad()
    def reset_rows(
        self, rows: torch.Tensor, tokens: torch.Tensor, actions: torch.Tensor | None = None
    ) -> None:
        """Restart sequences `rows` (b,) from prompt tokens (b, T0, N); the other rows keep their past."""
        if not self.use_cache:
            raise ValueError("Resetting single rows needs the KV cache (use_cache=True).")
        b, T0, _ = tokens.shape
        if actions is None:
            actions = torch.zeros(b, T0 - 1, dtype=torch.long, device=tokens.device)
        fresh = self.model.new_cache()
        fresh.pos = self.frame_index - T0  # RoPE is relative: align the prompt's last frame with the others'
        self.model(tokens, actions, fresh, commit=True, start=True)
        self.cache.merge_rows(rows, fresh, self.model.tokens_per_frame)
        self._keep_previous(tokens[:, -1], rows)

    @torch.no_grad()
    def step(
        self, actions: torch.Tensor, steps: int, temperature: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """actions (B,) int64: a_t for each sequence. Returns the new frame's tokens (B, N)."""
        keys = noise_keys(actions.shape[0], generator, actions.device)
        self.frame_index += 1
        if self.use_cache:
            return self.step_keyed(actions, keys, steps, temperature)
        model = self.model
        history, history_actions = self.history.tensors

        def logits_fn(frame):
            seq = torch.cat([history, frame[:, None]], dim=1)
            acts = torch.cat([history_actions, actions[:, None]], dim=1)
            start = bool((acts[:, 0] < 0).all())
            # The oldest frame kept is past the receptive field: MASK before it changes nothing.
            previous = model.previous_of(seq) if model.cfg.previous_frame else None
            return model(seq, acts[:, 1:] if start else acts, start=start, previous=previous)[:, -1]

        tokens = sample_frame_keyed(logits_fn, keys, self.N, model.mask_id, steps, temperature)
        self.history.push(tokens[:, None], actions[:, None])
        self._keep_previous(tokens)
        return tokens

    def step_keyed(self, actions: torch.Tensor, keys: torch.Tensor, steps: int, temperature: float):
        """The cached step with the noise of `keys` (B,). On the ring: fixed shapes, no host sync, no
        Python state read from the device (what a captured step runs). The host-side frame counter is
        advanced by the caller (`step` does it; a captured step is wrapped by genie.world.World)."""
        model, cache, previous = self.model, self.cache, self.previous_input()

        def logits_fn(frame):
            return model(
                frame[:, None], actions[:, None], cache, commit=False, start=False, previous=previous
            )[:, 0]

        tokens = sample_frame_keyed(logits_fn, keys, self.N, model.mask_id, steps, temperature)
        model(tokens[:, None], actions[:, None], cache, commit=True, start=False, previous=previous)
        self._keep_previous(tokens)
        return tokens

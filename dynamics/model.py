"""MaskGIT dynamics: an ST-transformer over tokenizer tokens, conditioned on latent actions.

Letters: B batch, T frames, N tokens per frame, V vocab (tokenizer codes; id V is MASK), D width,
A actions, C action code dim.

Action/frame alignment (dynamics/lam.py states the contract): a_t moves frame t to frame t+1. Here frame
t+1's input carries the embedding of a_t; frame 0 carries a learned "no action yet" embedding. So the
model predicts the (masked) tokens of frame t+1 from frames <= t+1's visible tokens and a_t, and,
temporal attention being causal, logits of frames <= t never depend on anything at frame t+1.

Action modes (config `action_mode`): "additive" adds the action embedding to every token of the frame
(the paper); "token" prepends it as one extra token per frame, which spatial attention reads.
The action vectors are a frozen copy of the LAM codebook (stop-gradient into the LAM).

Previous frame (config `previous_frame`): each token of frame t also embeds the token frame t-1 held
at the same place (frame 0 of a sequence: MASK, "no previous frame"). It is always the true token,
also in training, where frame t-1's own input is masked: the one frame of the past the next frame
depends on most is then clean from the first layer on, as it is when the world steps. Frame t+1's
input carries nothing of frame t+1, so causality is kept; a frame's output now reaches one frame
further back (`receptive_field`).
"""

from __future__ import annotations

import torch
from torch import nn

from genie.core import kernels
from genie.core.blocks import STTransformer, init_weights
from genie.core.cache import KVCache
from genie.core.config import DynamicsConfig
from genie.core.errors import GenieValueError


class DynamicsModel(nn.Module):
    kind = "dynamics"

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        if cfg.action_mode not in ("additive", "token"):
            raise GenieValueError(f"Unknown action_mode {cfg.action_mode!r}: use 'additive' or 'token'.")
        self.cfg = cfg
        N, D = cfg.grid**2, cfg.d_model
        self.mask_id = cfg.vocab_size
        self.tok_emb = nn.Embedding(cfg.vocab_size + 1, D)
        self.pos = nn.Parameter(torch.zeros(N, D))
        if cfg.previous_frame:  # id vocab_size: no previous frame (the first frame of a sequence)
            self.prev_emb = nn.Embedding(cfg.vocab_size + 1, D)
        # Frozen LAM codebook (A, C), filled by `set_action_codes` before training.
        self.register_buffer("action_codes", torch.zeros(cfg.num_actions, cfg.action_dim))
        self.action_proj = nn.Linear(cfg.action_dim, D)
        self.no_action = nn.Parameter(torch.zeros(D))
        if cfg.action_mode == "token":
            self.action_pos = nn.Parameter(torch.zeros(D))
        self.transformer = STTransformer(
            D,
            cfg.depth,
            cfg.heads,
            cfg.context,
            spatial_rope_grid=cfg.grid,  # 2D RoPE in space, on top of the learned absolute positions
            spatial_rope_prefix=1 if cfg.action_mode == "token" else 0,
        )
        self.head = nn.Linear(D, cfg.vocab_size)
        init_weights(self, cfg.depth)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.no_action, std=0.02)

    @property
    def tokens_per_frame(self) -> int:
        return self.cfg.grid**2 + (1 if self.cfg.action_mode == "token" else 0)

    @property
    def receptive_field(self) -> int:
        """Frames of tokens that can still change the next frame's logits."""
        return self.transformer.receptive_field + (1 if self.cfg.previous_frame else 0)

    def previous_of(self, tokens: torch.Tensor, before: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, N) -> (B, T, N): the tokens of the frame before each frame of `tokens`; the frame
        before the first is `before` (B, N), or MASK when the chunk starts the sequence."""
        first = torch.full_like(tokens[:, 0], self.mask_id) if before is None else before
        return torch.cat([first[:, None], tokens[:, :-1]], dim=1)

    def set_action_codes(self, codes: torch.Tensor) -> None:
        self.action_codes.copy_(codes.detach())

    def new_cache(self) -> KVCache:
        return self.transformer.new_cache()

    def _action_embedding(self, actions: torch.Tensor, first_is_start: bool) -> torch.Tensor:
        """actions (B, T') int64 -> (B, T, D), where frame 0 of the chunk gets `no_action` when it is
        the very first frame (first_is_start) and T = T' + first_is_start."""
        emb = self.action_proj(self.action_codes[actions])  # (B, T', D)
        if first_is_start:
            start = self.no_action.expand(actions.shape[0], 1, -1)
            emb = torch.cat([start.to(emb.dtype), emb], dim=1)
        return emb

    def forward(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        cache: KVCache | None = None,
        commit: bool = True,
        start: bool | None = None,
        previous: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, T, N) int64 (MASK = vocab_size). actions (B, T-1) when the chunk starts the
        sequence (`start`, the default without a cache or with an empty one), else (B, T) where
        actions[:, i] leads into frame i. previous (B, T, N): the tokens of the frame before each
        frame (`previous_of`), needed with `previous_frame` unless the chunk starts the sequence and
        its own tokens are the past to read (they are then used). Returns logits (B, T, N, V)."""
        B, T, N = tokens.shape
        first_is_start = (cache is None or cache.pos == 0) if start is None else start
        expected = T - 1 if first_is_start else T
        if actions.shape != (B, expected):
            raise GenieValueError(
                f"Expected latent actions of shape {(B, expected)} for {T} frames, got {tuple(actions.shape)}."
            )
        x = self.tok_emb(tokens) + self.pos  # (B, T, N, D)
        if self.cfg.previous_frame:
            if previous is None:
                if not first_is_start:
                    raise GenieValueError(
                        "This dynamics reads the previous frame: pass previous= (the tokens before the chunk)."
                    )
                previous = self.previous_of(tokens)
            x = x + self.prev_emb(previous)
        a = self._action_embedding(actions, first_is_start)  # (B, T, D)
        if self.cfg.action_mode == "additive":
            x = x + a[:, :, None, :]
        else:
            x = torch.cat([(a + self.action_pos)[:, :, None, :], x], dim=2)  # (B, T, N+1, D)
        h = self.transformer(x, cache, commit)
        if self.cfg.action_mode == "token":
            h = h[:, :, 1:]
        return self.head(h)

    def compute_loss(self, batch: dict) -> dict:
        """batch: tokens (B, T, N) int64, latent_actions (B, T-1) int64 (from the frozen LAM)."""
        tokens, actions = batch["tokens"], batch["latent_actions"]
        B, T, N = tokens.shape
        # Mask rate per window ~ U(mask_min, 1); frame 0 is always visible (the prompt).
        rate = torch.empty(B, 1, 1, device=tokens.device).uniform_(self.cfg.mask_min, 1.0)
        masked = torch.rand(B, T, N, device=tokens.device) < rate
        masked[:, 0] = False
        inputs = torch.where(masked, torch.full_like(tokens, self.mask_id), tokens)
        previous = self.previous_of(tokens) if self.cfg.previous_frame else None  # the true past
        logits = self(inputs, actions.detach(), previous=previous)
        targets = torch.where(masked, tokens, torch.full_like(tokens, -100))
        # Through the kernel dispatch: on GPU the fused kernel never materializes fp32 logits.
        loss = kernels.token_cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
        with torch.no_grad():
            hit = (logits.argmax(-1) == tokens) & masked
            acc = hit.sum().float() / masked.sum().clamp(min=1)
        return {"loss": loss, "masked_acc": acc}

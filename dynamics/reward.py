"""Reward and termination prediction: a small ST-transformer on the tokens of a transition.

Letters: B batch, N tokens per frame, D width.

Input: tokens of frame t and frame t+1 (B, 2, N). Output: the reward of that transition (regressed) and
the logit that it terminated the episode (the data's `rewards[t]`, `terminated[t]`, with the alignment
of genie/data/episodes.py). With `termination_from="current"` (the presets) the termination logit reads
frame t alone (the temporal attention is causal): a hazard, sampled in imagination, so an imagined
episode can end without the dynamics drawing the frame that follows a death (VizDoom's is black).
Trained from the rewards and terminations recorded with the data, on tokens of the frozen tokenizer;
stored in a world folder as `reward/`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genie.core.blocks import STTransformer, init_weights
from genie.core.config import RewardConfig
from genie.core.errors import GenieValueError


class RewardModel(nn.Module):
    kind = "reward"

    def __init__(self, cfg: RewardConfig):
        super().__init__()
        if cfg.termination_from not in ("current", "next"):
            raise GenieValueError(
                f"termination_from must be 'current' or 'next', got {cfg.termination_from!r}."
            )
        self.cfg = cfg
        N, D = cfg.grid**2, cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        self.pos = nn.Parameter(torch.zeros(N, D))
        self.transformer = STTransformer(D, cfg.depth, cfg.heads, window=2)
        self.head = nn.Linear(D, 2)  # (reward, termination logit)
        self.change_emb = nn.Embedding(2, D) if cfg.reads_change else None
        init_weights(self, cfg.depth)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, 2, N) of frames t, t+1 -> (reward (B,), termination logit (B,))."""
        x = self.tok_emb(tokens) + self.pos
        if self.change_emb is not None:  # frame t+1's tokens learn which of them changed; frame t's do not
            changed = torch.stack([torch.zeros_like(tokens[:, 0]), (tokens[:, 1] != tokens[:, 0]).long()], 1)
            x = x + self.change_emb(changed)
        h = self.transformer(x)  # (B, 2, N, D)
        out = self.head(h[:, 1].mean(1))  # frame t+1 has seen both frames
        if self.cfg.termination_from == "current":  # frame t has seen only itself
            return out[:, 0], self.head(h[:, 0].mean(1))[:, 1]
        return out[:, 0], out[:, 1]

    def end_probability(self, logit: torch.Tensor) -> torch.Tensor:
        """Termination logits (B,) -> float32 P(the transition ends the episode). The BCE weighted its
        positives by termination_weight, which multiplies the odds it learns by that weight; this undoes it,
        and adds the fitted `end_bias` of a calibrated hazard."""
        return torch.sigmoid(logit.float() - math.log(self.cfg.termination_weight) + self.cfg.end_bias)

    @torch.no_grad()
    def predict(self, tokens: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (reward float32 (B,), terminated bool (B,)). "current": terminated is drawn with the hazard's
        probability (from `generator`); "next": the logit's sign."""
        reward, logit = self(tokens)
        if self.cfg.termination_from == "current":
            p = self.end_probability(logit)
            draw = torch.rand(p.shape, generator=generator, device=p.device)
            return reward.float(), draw < p
        return reward.float(), logit > 0

    def compute_loss(self, batch: dict) -> dict:
        """batch: tokens (B, 2, N), rewards (B, 1), terminated (B, 1)."""
        reward, logit = self(batch["tokens"])
        target_r = batch["rewards"][:, 0].float()
        target_d = batch["terminated"][:, 0].float()
        # rare nonzero rewards weighted up (cfg.reward_weight), normalised so the loss keeps its scale
        w = 1.0 + (self.cfg.reward_weight - 1.0) * (target_r != 0).float()
        reward_loss = (w * (reward.float() - target_r) ** 2).sum() / w.sum()
        pos_weight = torch.tensor(self.cfg.termination_weight, device=logit.device)
        done_loss = F.binary_cross_entropy_with_logits(logit.float(), target_d, pos_weight=pos_weight)
        with torch.no_grad():
            done_acc = ((logit > 0).float() == target_d).float().mean()
        return {
            "loss": reward_loss + done_loss,
            "reward_mse": reward_loss.detach(),
            "done_bce": done_loss.detach(),
            "done_acc": done_acc,
        }


def fit_end_bias(
    logits: torch.Tensor, ends: torch.Tensor, weights: torch.Tensor, termination_weight: float
) -> float:
    """The b with sum(w * sigmoid(logit - log(termination_weight) + b)) = sum(w * end): the one shift of
    the log-odds that makes the expected number of ends the real one (bisection; the sum grows with b)."""
    x = logits.double() - math.log(termination_weight)
    w, target = weights.double(), float((weights.double() * ends.double()).sum())
    if target <= 0:
        raise GenieValueError(
            "No episode ends in these transitions: the hazard cannot be calibrated on them."
        )
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float((w * torch.sigmoid(x + mid)).sum()) < target else (lo, mid)
    return (lo + hi) / 2

"""Reward and termination prediction: a small ST-transformer on the tokens of a transition.

Letters: B batch, N tokens per frame, D width.

Input: tokens of frame t and frame t+1 (B, 2, N). Output: the reward of that transition (regressed) and
the logit that it terminated the episode (the data's `rewards[t]`, `terminated[t]`, with the alignment
of genie/data/episodes.py). Trained from the rewards and terminations recorded with the data, on tokens of the
frozen tokenizer; stored in a world folder as `reward/`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genie.core.blocks import STTransformer, init_weights
from genie.core.config import RewardConfig


class RewardModel(nn.Module):
    kind = "reward"

    def __init__(self, cfg: RewardConfig):
        super().__init__()
        self.cfg = cfg
        N, D = cfg.grid**2, cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        self.pos = nn.Parameter(torch.zeros(N, D))
        self.transformer = STTransformer(D, cfg.depth, cfg.heads, window=2)
        self.head = nn.Linear(D, 2)  # (reward, termination logit)
        init_weights(self, cfg.depth)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, 2, N) of frames t, t+1 -> (reward (B,), termination logit (B,))."""
        h = self.transformer(self.tok_emb(tokens) + self.pos)  # (B, 2, N, D)
        out = self.head(h[:, 1].mean(1))  # frame t+1 has seen both frames
        return out[:, 0], out[:, 1]

    @torch.no_grad()
    def predict(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (reward float32 (B,), terminated bool (B,))."""
        reward, logit = self(tokens)
        return reward.float(), logit > 0

    def compute_loss(self, batch: dict) -> dict:
        """batch: tokens (B, 2, N), rewards (B, 1), terminated (B, 1)."""
        reward, logit = self(batch["tokens"])
        target_r = batch["rewards"][:, 0].float()
        target_d = batch["terminated"][:, 0].float()
        reward_loss = F.mse_loss(reward.float(), target_r)
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

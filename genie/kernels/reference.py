"""Plain PyTorch references. Every Triton kernel in this package computes one of these functions;
the CPU path always runs them, and the parity tests compare against them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q, k, v, attn_mask=None):
    """q (B', H, Lq, K), k/v (B', H, Lk, K); attn_mask bool (Lq, Lk), True = may attend."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def rms_norm(x, weight, eps: float = 1e-6):
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.float()).to(x.dtype)


def vq_nearest(x, codebook):
    """x (M, C), codebook (Kc, C) -> indices (M,) of the nearest code (squared L2), ties to lowest index."""
    d = x.float().pow(2).sum(-1, keepdim=True) - 2 * x.float() @ codebook.float().t() + codebook.float().pow(2).sum(-1)
    return d.argmin(-1)


def maskgit_update(logits, tokens, masked, gumbel, temperature: float, num_to_keep_masked):
    """One MaskGIT step. logits (B, N, V), tokens (B, N) (MASK at masked positions), masked (B, N) bool,
    gumbel (B, N, V) noise or None (argmax), num_to_keep_masked (B,) int64.

    Samples every masked position (argmax of logits/temperature + gumbel), scores it by its softmax
    probability, and keeps masked the num_to_keep_masked[b] least confident; among equal confidence the
    lower index is unmasked first. Unmasked positions never change. Returns (new_tokens, new_masked)."""
    scaled = logits.float() / temperature
    choice = scaled.argmax(-1) if gumbel is None else (scaled + gumbel.float()).argmax(-1)
    conf = scaled.softmax(-1).gather(-1, choice[..., None])[..., 0]
    conf = torch.where(masked, conf, torch.full_like(conf, float("inf")))
    N = conf.shape[1]
    # Ascending confidence, ties by descending index: a stable sort of the reversed row.
    order = (N - 1) - torch.argsort(torch.flip(conf, dims=[1]), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=conf.device).expand_as(order).contiguous())
    new_masked = rank < num_to_keep_masked[:, None]
    new_tokens = torch.where(new_masked, tokens, torch.where(masked, choice, tokens))
    return new_tokens, new_masked

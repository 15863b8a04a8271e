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

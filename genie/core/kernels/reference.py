"""Plain PyTorch references. Every Triton kernel in this package computes one of these functions;
the CPU path always runs them, and the parity tests compare against them.

Letters: B batch, N tokens per frame, nh heads, K head dim, L sequence length, M rows,
V vocabulary (logits), C code dim, Kc codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q, k, v, attn_mask=None):
    """q (B', nh, Lq, K), k/v (B', nh, Lk, K); attn_mask bool (Lq, Lk), True = may attend."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def rms_norm(x, weight, eps: float = 1e-6):
    """x * rsqrt(mean(x^2) + eps) * weight over the last dim, in fp32. torch's fused F.rms_norm: about
    1.7x faster on CPU than the same formula written in ops (one kernel instead of five)."""
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)


def vq_nearest(x, codebook):
    """x (M, C), codebook (Kc, C) -> indices (M,) of the nearest code (squared L2), ties to lowest index."""
    d = (
        x.float().pow(2).sum(-1, keepdim=True)
        - 2 * x.float() @ codebook.float().t()
        + codebook.float().pow(2).sum(-1)
    )
    return d.argmin(-1)


# --- MaskGIT ---


def remask_lowest_confidence(confidence, masked, num_to_keep_masked):
    """confidence (B, N) float (+inf where already unmasked), masked (B, N) bool, num_to_keep_masked (B,)
    -> new_masked (B, N): the `num_to_keep_masked[b]` lowest-confidence positions of row b stay masked.

    Ties: among equal confidences the LOWER index is unmasked first (the higher index stays masked).
    The count is clamped to the number of positions masked now, so an unmasked position is never
    re-masked. Shared by the reference and the Triton path (a stable sort: N is a few hundred).
    """
    B, N = confidence.shape
    keep = torch.minimum(num_to_keep_masked.to(masked.device, torch.long), masked.sum(1)).clamp(min=0)
    # A stable ascending sort of the row read backwards puts, among ties, the higher index first.
    order = (N - 1) - torch.sort(confidence.flip(1), dim=1, stable=True).indices  # (B, N)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=order.device).expand(B, N))
    return rank < keep[:, None]


def maskgit_sample(logits, tokens, masked, gumbel, temperature: float):
    """The per-row part of a MaskGIT step -> (new_tokens (B, N), confidence (B, N) fp32).

    Masked positions take argmax(logits / temperature + gumbel) (argmax(logits) when gumbel is None)
    with confidence softmax(logits / temperature)[sampled]; unmasked positions keep their token and
    get confidence +inf. Ties in the argmax go to the lowest vocabulary index.
    """
    scaled = logits.float() / temperature
    noisy = scaled if gumbel is None else scaled + gumbel.float()
    sampled = noisy.argmax(-1)
    confidence = scaled.softmax(-1).gather(-1, sampled[..., None]).squeeze(-1)
    new_tokens = torch.where(masked, sampled, tokens)
    confidence = torch.where(masked, confidence, torch.full_like(confidence, float("inf")))
    return new_tokens, confidence


def maskgit_update(logits, tokens, masked, gumbel, temperature: float, num_to_keep_masked):
    """One MaskGIT step. logits (B, N, V), tokens (B, N) int64, masked (B, N) bool, gumbel (B, N, V) or
    None (final step: plain argmax), num_to_keep_masked (B,) int64 -> (new_tokens, new_masked)."""
    new_tokens, confidence = maskgit_sample(logits, tokens, masked, gumbel, temperature)
    return new_tokens, remask_lowest_confidence(confidence, masked, num_to_keep_masked)


def token_cross_entropy(logits, targets, ignore_index: int = -100):
    """logits (M, V) any float dtype, targets (M,) int64 -> fp32 mean loss over rows != ignore_index
    (NaN when every row is ignored, as torch does). The gradient reaches logits in their dtype."""
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)

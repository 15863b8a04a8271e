"""Plain PyTorch references. Every Triton kernel in this package computes one of these functions;
the CPU path always runs them, and the parity tests compare against them.

Dimension letters: B batch, T frames, Tp cached past frames, N tokens per frame, H heads, K head dim,
L sequence length, M rows, V vocabulary (logits), C code dim, Kc codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genie.errors import GenieValueError


def attention(q, k, v, attn_mask=None):
    """q (B', H, Lq, K), k/v (B', H, Lk, K); attn_mask bool (Lq, Lk), True = may attend."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def rms_norm(x, weight, eps: float = 1e-6):
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.float()).to(x.dtype)


def rms_norm_residual(x, residual, weight, eps: float = 1e-6):
    """Fused add + norm: returns (rms_norm(x + residual), x + residual); the sum is rounded to x.dtype
    before it is normalized, exactly as the unfused pair of ops does."""
    total = x + residual
    return rms_norm(total, weight, eps), total


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


# --- Attention over the (B, T, N, H, K) layout ---


def check_st_attention_args(qkv, axis: str, window: int, past_k, past_v) -> None:
    if qkv.dim() != 6 or qkv.shape[3] != 3:
        raise GenieValueError(f"st_attention wants qkv of shape (B, T, N, 3, H, K), got {tuple(qkv.shape)}.")
    if axis not in ("spatial", "temporal"):
        raise GenieValueError(f"st_attention axis must be 'spatial' or 'temporal', got {axis!r}.")
    if (past_k is None) != (past_v is None):
        raise GenieValueError("st_attention needs both past_k and past_v, or neither.")
    if past_k is not None:
        if axis != "temporal":
            raise GenieValueError("st_attention takes cached past keys/values only for axis='temporal'.")
        B, _, N, _, H, K = qkv.shape
        for name, p in (("past_k", past_k), ("past_v", past_v)):
            if p.dim() != 5 or (p.shape[0], p.shape[2], p.shape[3], p.shape[4]) != (B, N, H, K):
                raise GenieValueError(
                    f"{name} must have shape (B, Tp, N, H, K) = ({B}, Tp, {N}, {H}, {K}), "
                    f"got {tuple(p.shape)}."
                )
    if axis == "temporal" and window < 1:
        raise GenieValueError(f"st_attention window must be >= 1 frame, got {window}.")


def st_attention(qkv, axis: str, window: int, past_k=None, past_v=None):
    """qkv (B, T, N, 3, H, K) -> (B, T, N, H, K). Forward only in the Triton path.

    spatial: each (b, t) attends over its N tokens (window ignored). temporal: each (b, n) attends over
    frames, causally within a band of `window` frames (query frame t sees frames t-window+1..t); with
    past_k/past_v (B, Tp, N, H, K) the T new frames come after the Tp cached ones.
    """
    check_st_attention_args(qkv, axis, window, past_k, past_v)
    B, T, N, _, H, K = qkv.shape
    q, k, v = qkv.unbind(3)  # each (B, T, N, H, K)
    if axis == "spatial":
        q, k, v = (t.permute(0, 1, 3, 2, 4).reshape(B * T, H, N, K) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B*T, H, N, K)
        return out.view(B, T, H, N, K).permute(0, 1, 3, 2, 4)
    Tp = 0 if past_k is None else past_k.shape[1]
    if Tp:
        k, v = torch.cat([past_k, k], dim=1), torch.cat([past_v, v], dim=1)
    q, k, v = (t.permute(0, 2, 3, 1, 4).reshape(B * N, H, t.shape[1], K) for t in (q, k, v))
    q_pos = torch.arange(Tp, Tp + T, device=qkv.device)
    k_pos = torch.arange(Tp + T, device=qkv.device)
    diff = q_pos[:, None] - k_pos[None, :]
    mask = (diff >= 0) & (diff < window)  # (T, Tp+T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B*N, H, T, K)
    return out.view(B, N, H, T, K).permute(0, 3, 1, 2, 4)

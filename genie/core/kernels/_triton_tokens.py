"""Per-row reductions over the token vocabulary V: the MaskGIT sampling step and token cross-entropy.

Both stream each row of logits once in BLOCK_V chunks with a per-lane online logsumexp in fp32, so no
fp32 copy of the (rows, V) logits is ever made.

maskgit_update: the kernel fuses scale-by-temperature, gumbel-argmax sampling (first index on ties),
softmax confidence of the sampled token and the keep-if-unmasked rule; rows already unmasked read no
logits at all. The re-mask selection (lowest confidences stay masked) then runs in torch with the
reference's stable sort (`reference.remask_lowest_confidence`): N is a few hundred per row, a fused
top-k would not pay for itself, and a stable sort pins the documented tie rule that torch.topk does not.

token_cross_entropy: forward writes the per-row loss and logsumexp (M floats each); backward writes
softmax - onehot, scaled by grad / count, straight into a gradient of the logits' dtype.

Letters: V vocabulary, B' rows.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from genie.core.kernels import reference
from genie.core.kernels._triton_common import LAUNCHES, next_pow2


@triton.jit
def _maskgit_sample_fwd(
    LOGITS,
    GUMBEL,
    TOKENS,
    MASKED,
    NEW_TOKENS,
    CONF,
    V,
    slr,
    sgr,
    temperature,
    HAS_GUMBEL: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    is_masked = tl.load(MASKED + row) != 0
    offs = tl.arange(0, BLOCK_V)
    # the flag as a vector: Triton's interpreter rejects a load mask broadcast from a scalar
    masked_lanes = (tl.zeros([BLOCK_V], tl.int32) + is_masked.to(tl.int32)) != 0
    lane_max = tl.full([BLOCK_V], float("-inf"), tl.float32)  # online softmax statistics per lane
    lane_sum = tl.zeros([BLOCK_V], tl.float32)
    lane_best = tl.full([BLOCK_V], float("-inf"), tl.float32)  # best noisy score per lane ...
    lane_best_idx = tl.full([BLOCK_V], 2147483647, tl.int32)  # ... its vocabulary index ...
    lane_best_scaled = tl.full([BLOCK_V], float("-inf"), tl.float32)  # ... and its scaled logit
    for start in range(0, V, BLOCK_V):
        cols = start + offs
        live = (cols < V) & masked_lanes
        scaled = (
            tl.load(LOGITS + row * slr + cols, mask=live, other=float("-inf")).to(tl.float32) / temperature
        )
        if HAS_GUMBEL:
            noisy = scaled + tl.load(GUMBEL + row * sgr + cols, mask=live, other=0.0).to(tl.float32)
        else:
            noisy = scaled
        new_max = tl.maximum(lane_max, scaled)
        safe = tl.where(new_max == float("-inf"), 0.0, new_max)
        lane_sum = lane_sum * tl.exp(lane_max - safe) + tl.exp(scaled - safe)
        lane_max = new_max
        better = live & (noisy > lane_best)  # strict: a lane keeps its earliest maximum
        lane_best = tl.where(better, noisy, lane_best)
        lane_best_idx = tl.where(better, cols, lane_best_idx)
        lane_best_scaled = tl.where(better, scaled, lane_best_scaled)
    row_max = tl.max(lane_max, 0)
    row_max = tl.where(row_max == float("-inf"), 0.0, row_max)  # a skipped row: no NaN warnings
    row_sum = tl.sum(lane_sum * tl.exp(lane_max - row_max), 0)
    best = tl.max(lane_best, 0)
    idx = tl.min(tl.where(lane_best == best, lane_best_idx, 2147483647), 0)  # first index on ties
    best_scaled = tl.max(tl.where(lane_best_idx == idx, lane_best_scaled, float("-inf")), 0)
    confidence = tl.exp(best_scaled - row_max) / tl.where(row_sum == 0.0, 1.0, row_sum)
    old = tl.load(TOKENS + row)
    tl.store(NEW_TOKENS + row, tl.where(is_masked, idx.to(tl.int64), old))
    tl.store(CONF + row, tl.where(is_masked, confidence, float("inf")))


def maskgit_sample(logits, tokens, masked, gumbel, temperature: float):
    """-> (new_tokens (B, N) int64, confidence (B, N) fp32); see reference.maskgit_sample."""
    B, N, V = logits.shape
    lg = logits.reshape(B * N, V)
    if lg.stride(1) != 1:
        lg = lg.contiguous()
    g = lg
    if gumbel is not None:
        g = gumbel.reshape(B * N, V)
        if g.stride(1) != 1:
            g = g.contiguous()
    tok = tokens.reshape(B * N).contiguous()
    msk = masked.reshape(B * N).contiguous().view(torch.uint8)
    new_tokens = torch.empty(B * N, device=logits.device, dtype=torch.long)
    confidence = torch.empty(B * N, device=logits.device, dtype=torch.float32)
    if B * N > 0:
        _maskgit_sample_fwd[(B * N,)](
            lg,
            g,
            tok,
            msk,
            new_tokens,
            confidence,
            V,
            lg.stride(0),
            g.stride(0),
            float(temperature),
            HAS_GUMBEL=gumbel is not None,
            BLOCK_V=min(1024, next_pow2(V)),
        )
    return new_tokens.view(B, N), confidence.view(B, N)


def maskgit_update(logits, tokens, masked, gumbel, temperature: float, num_to_keep_masked):
    LAUNCHES["maskgit_update"] += 1
    new_tokens, confidence = maskgit_sample(logits, tokens, masked, gumbel, temperature)
    return new_tokens, reference.remask_lowest_confidence(confidence, masked, num_to_keep_masked)


# --- Cross-entropy ---


@triton.jit
def _xent_fwd(LOGITS, TARGETS, LOSS, LSE, V, slr, ignore_index, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    target = tl.load(TARGETS + row)
    counted = target != ignore_index
    offs = tl.arange(0, BLOCK_V)
    counted_lanes = (tl.zeros([BLOCK_V], tl.int32) + counted.to(tl.int32)) != 0  # see _maskgit_sample_fwd
    lane_max = tl.full([BLOCK_V], float("-inf"), tl.float32)
    lane_sum = tl.zeros([BLOCK_V], tl.float32)
    for start in range(0, V, BLOCK_V):
        cols = start + offs
        x = tl.load(LOGITS + row * slr + cols, mask=(cols < V) & counted_lanes, other=float("-inf")).to(
            tl.float32
        )
        new_max = tl.maximum(lane_max, x)
        safe = tl.where(new_max == float("-inf"), 0.0, new_max)
        lane_sum = lane_sum * tl.exp(lane_max - safe) + tl.exp(x - safe)
        lane_max = new_max
    row_max = tl.max(lane_max, 0)
    row_max = tl.where(row_max == float("-inf"), 0.0, row_max)  # a skipped row: no NaN warnings
    row_sum = tl.sum(lane_sum * tl.exp(lane_max - row_max), 0)
    lse = row_max + tl.log(tl.where(row_sum == 0.0, 1.0, row_sum))  # 0 for an ignored row
    in_range = (target >= 0) & (target < V)
    x_target = tl.load(LOGITS + row * slr + target, mask=counted & in_range, other=0.0).to(tl.float32)
    loss = tl.where(in_range, lse - x_target, float("nan"))  # an out-of-range target poisons the mean
    tl.store(LOSS + row, tl.where(counted, loss, 0.0))
    tl.store(LSE + row, lse)


@triton.jit
def _xent_bwd(LOGITS, TARGETS, LSE, SCALE, GRAD, V, slr, sgr, ignore_index, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    target = tl.load(TARGETS + row)
    counted = target != ignore_index
    lse = tl.load(LSE + row)
    scale = tl.load(SCALE)  # grad_output / number of counted rows
    offs = tl.arange(0, BLOCK_V)
    counted_lanes = (tl.zeros([BLOCK_V], tl.int32) + counted.to(tl.int32)) != 0
    for start in range(0, V, BLOCK_V):
        cols = start + offs
        x = tl.load(LOGITS + row * slr + cols, mask=(cols < V) & counted_lanes, other=0.0).to(tl.float32)
        grad = (tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)) * scale
        grad = tl.where(counted, grad, 0.0)
        tl.store(GRAD + row * sgr + cols, grad.to(GRAD.dtype.element_ty), mask=cols < V)


class _TokenCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index: int):
        M, V = logits.shape
        if logits.stride(1) != 1:
            logits = logits.contiguous()
        targets = targets.contiguous()
        row_loss = torch.empty(M, device=logits.device, dtype=torch.float32)
        lse = torch.empty(M, device=logits.device, dtype=torch.float32)
        block = min(4096, next_pow2(V))
        if M > 0:
            _xent_fwd[(M,)](logits, targets, row_loss, lse, V, logits.stride(0), ignore_index, BLOCK_V=block)
        count = (targets != ignore_index).sum().float()  # stays on device: no sync
        ctx.save_for_backward(logits, targets, lse, count)
        ctx.ignore_index, ctx.block = ignore_index, block
        return row_loss.sum() / count  # NaN when every row is ignored, as torch does

    @staticmethod
    def backward(ctx, grad_out):
        logits, targets, lse, count = ctx.saved_tensors
        M, V = logits.shape
        scale = (grad_out.float() / count).reshape(1)
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        if M > 0:
            _xent_bwd[(M,)](
                logits,
                targets,
                lse,
                scale,
                grad,
                V,
                logits.stride(0),
                grad.stride(0),
                ctx.ignore_index,
                BLOCK_V=ctx.block,
            )
        return grad, None, None


def token_cross_entropy(logits, targets, ignore_index: int = -100):
    LAUNCHES["token_cross_entropy"] += 1
    return _TokenCrossEntropy.apply(logits, targets, ignore_index)

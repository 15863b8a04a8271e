"""Nearest code by squared L2 without the (M, Kc) distance matrix: each program holds BLOCK_M inputs and
walks the codebook in tiles of BLOCK_N codes, keeping a running (min distance, index) per input.

Distances use the reference's formula |x|^2 - 2 x.c + |c|^2 in fp32. Ties go to the lowest index: within
a tile by tl.argmin's left tie-break, across tiles because a later tile must be strictly closer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from genie.core.kernels._triton_common import LAUNCHES, dot_precision, next_pow2


@triton.jit
def _vq_nearest_fwd(
    X,
    C,
    OUT,
    M,
    Kc,
    Cd,
    sxm,
    sxc,
    scm,
    scc,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    PREC: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    x = tl.load(
        X + rows[:, None] * sxm + offs_c[None, :] * sxc,
        mask=(rows[:, None] < M) & (offs_c[None, :] < Cd),
        other=0.0,
    ).to(tl.float32)
    x2 = tl.sum(x * x, 1)
    best = tl.full([BLOCK_M], float("inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_M], tl.int32)
    for start in range(0, Kc, BLOCK_N):
        codes = start + tl.arange(0, BLOCK_N)
        c = tl.load(
            C + codes[:, None] * scm + offs_c[None, :] * scc,
            mask=(codes[:, None] < Kc) & (offs_c[None, :] < Cd),
            other=0.0,
        ).to(tl.float32)
        c2 = tl.sum(c * c, 1)
        d = (
            x2[:, None] - 2.0 * tl.dot(x, tl.trans(c), input_precision=PREC) + c2[None, :]
        )  # (BLOCK_M, BLOCK_N)
        d = tl.where(codes[None, :] < Kc, d, float("inf"))
        tile_min = tl.min(d, 1)
        tile_idx = tl.argmin(d, 1, tie_break_left=True) + start
        closer = tile_min < best
        best = tl.where(closer, tile_min, best)
        best_idx = tl.where(closer, tile_idx, best_idx)
    tl.store(OUT + rows, best_idx.to(tl.int64), mask=rows < M)


def vq_nearest(x, codebook):
    """x (M, C), codebook (Kc, C) -> indices (M,) int64."""
    LAUNCHES["vq_nearest"] += 1
    M, Cd = x.shape
    Kc = codebook.shape[0]
    out = torch.zeros(M, device=x.device, dtype=torch.long)
    if M == 0 or Kc == 0:
        return out
    BLOCK_C = next_pow2(Cd)
    BLOCK_M = 64 if BLOCK_C <= 64 else 32
    BLOCK_N = 64 if BLOCK_C <= 64 else 32
    _vq_nearest_fwd[(triton.cdiv(M, BLOCK_M),)](
        x,
        codebook,
        out,
        M,
        Kc,
        Cd,
        x.stride(0),
        x.stride(1),
        codebook.stride(0),
        codebook.stride(1),
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        BLOCK_C=BLOCK_C,
        PREC=dot_precision(torch.float32),
    )
    return out

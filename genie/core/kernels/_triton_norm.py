"""RMSNorm over the last dim, fp32 statistics, several rows per program.

rms_norm reads x through its strides (up to 4 leading dims), so QK-norm on a permuted (B', nh, L, K) view
costs no copy; the output is contiguous. Forward only.

Letters: B' batch (flattened), nh heads, L sequence length, K head dim.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from genie.core.kernels._triton_common import LAUNCHES, next_pow2


@triton.jit
def _rms_norm_fwd(
    X,
    W,
    Y,
    n_rows,
    D,
    d1,
    d2,
    d3,
    sx0,
    sx1,
    sx2,
    sx3,
    sxd,
    eps,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    # row index -> offset through up to 4 strided leading dims (sizes d0 x d1 x d2 x d3)
    i3 = rows % d3
    i2 = (rows // d3) % d2
    i1 = (rows // (d3 * d2)) % d1
    i0 = rows // (d3 * d2 * d1)
    x_off = i0 * sx0 + i1 * sx1 + i2 * sx2 + i3 * sx3
    mask = (rows[:, None] < n_rows) & (cols[None, :] < D)
    x = tl.load(X + x_off[:, None] + cols[None, :] * sxd, mask=mask, other=0.0).to(tl.float32)
    dense = rows[:, None] * D + cols[None, :]  # Y is contiguous (n_rows, D)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 1) / D + eps)
    w = tl.load(W + cols, mask=cols < D, other=0.0).to(tl.float32)
    tl.store(Y + dense, (x * rstd[:, None] * w[None, :]).to(Y.dtype.element_ty), mask=mask)


def _launch(x, weight, eps, y, lead_sizes, lead_strides, d_stride):
    D = x.shape[-1]
    n_rows = y.numel() // max(D, 1)
    if n_rows == 0 or D == 0:
        return
    BLOCK_D = next_pow2(D)
    BLOCK_R = max(1, min(64, 4096 // BLOCK_D))
    d1, d2, d3 = lead_sizes[1:]
    _rms_norm_fwd[(triton.cdiv(n_rows, BLOCK_R),)](
        x,
        weight,
        y,
        n_rows,
        D,
        d1,
        d2,
        d3,
        *lead_strides,
        d_stride,
        eps,
        BLOCK_R=BLOCK_R,
        BLOCK_D=BLOCK_D,
    )


def _leading(x):
    """(sizes, strides) of x's leading dims padded to 4, or None when it has more than 4."""
    lead = x.dim() - 1
    if lead > 4:
        return None
    sizes = [1] * (4 - lead) + list(x.shape[:-1])
    strides = [0] * (4 - lead) + list(x.stride()[:-1])
    return sizes, strides


def rms_norm(x, weight, eps: float = 1e-6):
    LAUNCHES["rms_norm"] += 1
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    if _leading(x) is None:
        x = x.reshape(-1, x.shape[-1])  # more than 4 leading dims: a copy when x is not contiguous
    sizes, strides = _leading(x)
    _launch(x, weight, eps, y, sizes, strides, x.stride(-1))
    return y

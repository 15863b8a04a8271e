"""Flash-style attention (online softmax, fp32 accumulation) read through arbitrary strides.

    attention(q, k, v)    q (B', nh, Lq, K), k/v (B', nh, Lk, K): one sequence per (b', h)

q, k and v may be strided views (nn.Attention's permuted slices of one qkv projection): no copies. The
optional bool mask is (Lq, Lk) for every sequence or (B', 1, Lq, Lk) per sequence (broadcast over heads:
the KV-cache rows' valid frames). Rows with no visible key give 0 (SDPA gives NaN); the models never
produce one. Forward only.

Letters: B' batch (flattened), nh heads, Lq queries, Lk keys, K head dim.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from genie.core.kernels._triton_common import LAUNCHES, dot_precision, next_pow2


@triton.jit
def _attention_fwd(
    Q,
    K,
    V,
    Out,
    MASK,
    sqb,
    sqh,
    sql,
    sqd,
    skb,
    skh,
    skl,
    skd,
    svb,
    svh,
    svl,
    svd,
    sob,
    soh,
    sol,
    sod,
    smb,
    sml,
    smk,
    nh,
    Lq,
    Lk,
    head_dim,
    scale,
    HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    z = tl.program_id(0).to(tl.int64)
    b, h = z // nh, z % nh
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_mask = (offs_m[:, None] < Lq) & (offs_d[None, :] < head_dim)
    q = tl.load(
        Q + b * sqb + h * sqh + offs_m[:, None] * sql + offs_d[None, :] * sqd,
        mask=q_mask,
        other=0.0,
    )
    K_base = K + b * skb + h * skh
    V_base = V + b * svb + h * svh
    MASK = MASK + b * smb  # a per-sequence mask (smb = 0: one mask for all)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, Lk, BLOCK_N):
        cols = start + offs_n
        kv_mask = (cols[:, None] < Lk) & (offs_d[None, :] < head_dim)
        k = tl.load(K_base + cols[:, None] * skl + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(V_base + cols[:, None] * svl + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BLOCK_M, BLOCK_N) fp32
        visible = (offs_m[:, None] >= 0) & (cols[None, :] < Lk)
        if HAS_MASK:
            allowed = tl.load(
                MASK + offs_m[:, None] * sml + cols[None, :] * smk,
                mask=(offs_m[:, None] < Lq) & visible,
                other=0,
            )
            visible = visible & (allowed != 0)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing visible yet
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(
        Out + b * sob + h * soh + offs_m[:, None] * sol + offs_d[None, :] * sod,
        out.to(Out.dtype.element_ty),
        mask=q_mask,
    )


def attention(q, k, v, attn_mask=None):
    """q (B', nh, Lq, K), k/v (B', nh, Lk, K), attn_mask bool (Lq, Lk), (B', 1, Lq, Lk) or None
    -> (B', nh, Lq, K).

    The output is stored (B', Lq, nh, K)-contiguous and returned as a transposed view, so the usual
    `out.transpose(1, 2).reshape(B', Lq, nh*K)` that follows is free."""
    Bp, nh, Lq, head_dim = q.shape
    Lk = k.shape[2]
    out = torch.empty(Bp, Lq, nh, head_dim, device=q.device, dtype=q.dtype).transpose(1, 2)  # (B', nh, Lq, K)
    LAUNCHES["attention"] += 1
    if Bp * nh == 0 or Lq == 0:
        return out
    if attn_mask is None:
        mask_arg, (smb, sml, smk) = q, (0, 0, 0)
    elif attn_mask.dim() == 2:  # (Lq, Lk), shared
        mask_arg, (smb, sml, smk) = attn_mask, (0, *attn_mask.stride())
    else:  # (B', 1, Lq, Lk), one per sequence (an expanded view is fine)
        mask_arg = attn_mask.expand(Bp, 1, Lq, Lk)[:, 0]
        smb, sml, smk = mask_arg.stride()
    if attn_mask is not None:
        mask_arg = mask_arg.view(torch.uint8)
    BLOCK_M = next_pow2(Lq) if Lq <= 64 else 64
    BLOCK_N = min(64, next_pow2(Lk))
    _attention_fwd[(Bp * nh, triton.cdiv(Lq, BLOCK_M))](
        q,
        k,
        v,
        out,
        mask_arg,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
        smb,
        sml,
        smk,
        nh,
        Lq,
        Lk,
        head_dim,
        1.0 / math.sqrt(head_dim),
        HAS_MASK=attn_mask is not None,
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        BLOCK_D=next_pow2(head_dim),
        PREC=dot_precision(q.dtype),
    )
    return out

"""Flash-style attention (online softmax, fp32 accumulation) read through arbitrary strides.

One kernel serves three layouts, each seen as a batch of independent sequences indexed by (z1, z2, z3)
with a sequence axis L and a head-dim axis K:
    attention(q, k, v)       q (B', H, L, K):            z = (B', 1, H)
    st_attention spatial     qkv (B, T, N, 3, H, K):     z = (B, T, H), L = N
    st_attention temporal    qkv (B, T, N, 3, H, K):     z = (B, N, H), L = T, optional past (B, Tp, N, H, K)
q, k and v of st_attention are strided views into one qkv tensor: no permute or cat copies. The banded
causal mask of temporal attention is computed from positions in the kernel (queries sit at Tp..Tp+T-1
after the Tp cached frames); attention() takes an explicit bool mask instead, (Lq, Lk) for every
sequence or (B', 1, Lq, Lk) per sequence (broadcast over heads: the KV-cache rows' valid frames). Rows with no
visible key give 0 (SDPA gives NaN); the models never produce one. Forward only.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from genie.kernels._triton_common import LAUNCHES, dot_precision, next_pow2


@triton.jit
def _attend_block_range(
    q,
    m_i,
    l_i,
    acc,
    K_base,
    V_base,
    skl,
    skd,
    svl,
    svd,
    n_keys,
    pos0,
    q_pos,
    offs_m,
    MASK,
    sml,
    smk,
    Lq,
    D,
    window,
    scale,
    HAS_MASK: tl.constexpr,
    BAND: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    for start in range(0, n_keys, BLOCK_N):
        cols = start + offs_n
        kv_mask = (cols[:, None] < n_keys) & (offs_d[None, :] < D)
        k = tl.load(K_base + cols[:, None] * skl + offs_d[None, :] * skd, mask=kv_mask, other=0.0)
        v = tl.load(V_base + cols[:, None] * svl + offs_d[None, :] * svd, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BLOCK_M, BLOCK_N) fp32
        k_pos = pos0 + cols
        visible = (offs_m[:, None] >= 0) & (cols[None, :] < n_keys)
        if BAND:
            diff = q_pos[:, None] - k_pos[None, :]
            visible = visible & (diff >= 0) & (diff < window)
        if HAS_MASK:
            allowed = tl.load(
                MASK + offs_m[:, None] * sml + k_pos[None, :] * smk,
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
    return m_i, l_i, acc


@triton.jit
def _attention_fwd(
    Q,
    K,
    V,
    PK,
    PV,
    Out,
    MASK,
    sq1,
    sq2,
    sq3,
    sql,
    sqd,
    sk1,
    sk2,
    sk3,
    skl,
    skd,
    sv1,
    sv2,
    sv3,
    svl,
    svd,
    spk1,
    spk2,
    spk3,
    spkl,
    spkd,
    spv1,
    spv2,
    spv3,
    spvl,
    spvd,
    so1,
    so2,
    so3,
    sol,
    sod,
    smz,
    sml,
    smk,
    Z2,
    Z3,
    Lq,
    Lk,
    Tp,
    D,
    window,
    scale,
    HAS_MASK: tl.constexpr,
    BAND: tl.constexpr,
    HAS_PAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PREC: tl.constexpr,
):
    z = tl.program_id(0).to(tl.int64)
    z3 = z % Z3
    z2 = (z // Z3) % Z2
    z1 = z // (Z3 * Z2)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_mask = (offs_m[:, None] < Lq) & (offs_d[None, :] < D)
    q = tl.load(
        Q + z1 * sq1 + z2 * sq2 + z3 * sq3 + offs_m[:, None] * sql + offs_d[None, :] * sqd,
        mask=q_mask,
        other=0.0,
    )
    q_pos = Tp + offs_m  # query positions count the cached frames first
    MASK = MASK + z1 * smz  # a per-sequence mask (smz = 0: one mask for all)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if HAS_PAST:
        m_i, l_i, acc = _attend_block_range(
            q,
            m_i,
            l_i,
            acc,
            PK + z1 * spk1 + z2 * spk2 + z3 * spk3,
            PV + z1 * spv1 + z2 * spv2 + z3 * spv3,
            spkl,
            spkd,
            spvl,
            spvd,
            Tp,
            0,
            q_pos,
            offs_m,
            MASK,
            sml,
            smk,
            Lq,
            D,
            window,
            scale,
            HAS_MASK,
            BAND,
            BLOCK_N,
            BLOCK_D,
            PREC,
        )
    m_i, l_i, acc = _attend_block_range(
        q,
        m_i,
        l_i,
        acc,
        K + z1 * sk1 + z2 * sk2 + z3 * sk3,
        V + z1 * sv1 + z2 * sv2 + z3 * sv3,
        skl,
        skd,
        svl,
        svd,
        Lk,
        Tp,
        q_pos,
        offs_m,
        MASK,
        sml,
        smk,
        Lq,
        D,
        window,
        scale,
        HAS_MASK,
        BAND,
        BLOCK_N,
        BLOCK_D,
        PREC,
    )
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(
        Out + z1 * so1 + z2 * so2 + z3 * so3 + offs_m[:, None] * sol + offs_d[None, :] * sod,
        out.to(Out.dtype.element_ty),
        mask=q_mask,
    )


def _launch(q, k, v, out, strides, Z, Lq, Lk, D, mask=None, band_window=None, past=None):
    """strides: dict name -> 5 strides (z1, z2, z3, l, d) for q, k, v, out (and pk, pv with past)."""
    Z1, Z2, Z3 = Z
    if Z1 * Z2 * Z3 == 0 or Lq == 0:
        return out
    Tp = 0 if past is None else past[0].shape[1]
    pk, pv = past if past is not None and Tp > 0 else (k, v)
    pk_s = strides.get("pk", strides["k"]) if Tp > 0 else strides["k"]
    pv_s = strides.get("pv", strides["v"]) if Tp > 0 else strides["v"]
    mask_arg = mask.view(torch.uint8) if mask is not None else q
    if mask is None:
        smz, sml, smk = 0, 0, 0
    elif mask.dim() == 2:  # (Lq, Lk), shared
        smz, sml, smk = 0, mask.stride(0), mask.stride(1)
    else:  # (Z1, Lq, Lk), one per z1
        smz, sml, smk = mask.stride(0), mask.stride(1), mask.stride(2)
    BLOCK_M = next_pow2(Lq) if Lq <= 64 else 64
    BLOCK_N = min(64, next_pow2(Lk + Tp))
    grid = (Z1 * Z2 * Z3, triton.cdiv(Lq, BLOCK_M))
    _attention_fwd[grid](
        q,
        k,
        v,
        pk,
        pv,
        out,
        mask_arg,
        *strides["q"],
        *strides["k"],
        *strides["v"],
        *pk_s,
        *pv_s,
        *strides["o"],
        smz,
        sml,
        smk,
        Z2,
        Z3,
        Lq,
        Lk,
        Tp,
        D,
        band_window if band_window is not None else 0,
        1.0 / math.sqrt(D),
        HAS_MASK=mask is not None,
        BAND=band_window is not None,
        HAS_PAST=Tp > 0,
        BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N,
        BLOCK_D=next_pow2(D),
        PREC=dot_precision(q.dtype),
    )
    return out


def attention(q, k, v, attn_mask=None):
    """q (B', H, Lq, K), k/v (B', H, Lk, K), attn_mask bool (Lq, Lk), (B', 1, Lq, Lk) or None
    -> (B', H, Lq, K).

    The output is stored (B', Lq, H, K)-contiguous and returned as a transposed view, so the usual
    `out.transpose(1, 2).reshape(B', Lq, H*K)` that follows is free."""
    Bp, H, Lq, D = q.shape
    Lk = k.shape[2]
    out = torch.empty(Bp, Lq, H, D, device=q.device, dtype=q.dtype).transpose(1, 2)  # (B', H, Lq, K)

    def s(t):  # (B', H, L, K) -> strides over (z1, z2, z3, l, d)
        return (t.stride(0), 0, t.stride(1), t.stride(2), t.stride(3))

    strides = {"q": s(q), "k": s(k), "v": s(v), "o": s(out)}
    LAUNCHES["attention"] += 1
    if attn_mask is not None and attn_mask.dim() == 4:
        attn_mask = attn_mask.expand(Bp, 1, Lq, Lk)[:, 0]  # (B', Lq, Lk) view
    return _launch(q, k, v, out, strides, (Bp, 1, H), Lq, Lk, D, mask=attn_mask)


def st_attention(qkv, axis: str, window: int, past_k=None, past_v=None):
    """qkv (B, T, N, 3, H, K) read in place -> (B, T, N, H, K) contiguous. See reference.st_attention."""
    B, T, N, _, H, D = qkv.shape
    q, k, v = qkv.select(3, 0), qkv.select(3, 1), qkv.select(3, 2)  # views (B, T, N, H, K)
    out = torch.empty(B, T, N, H, D, device=qkv.device, dtype=qkv.dtype)
    LAUNCHES["st_attention"] += 1
    if axis == "spatial":  # sequences indexed by (b, t, h), running over n

        def s(t):
            return (t.stride(0), t.stride(1), t.stride(3), t.stride(2), t.stride(4))

        strides = {"q": s(q), "k": s(k), "v": s(v), "o": s(out)}
        return _launch(q, k, v, out, strides, (B, T, H), N, N, D)

    def s(t):  # temporal: sequences indexed by (b, n, h), running over frames
        return (t.stride(0), t.stride(2), t.stride(3), t.stride(1), t.stride(4))

    strides = {"q": s(q), "k": s(k), "v": s(v), "o": s(out)}
    past = None
    if past_k is not None and past_k.shape[1] > 0:
        past = (past_k, past_v)
        strides["pk"], strides["pv"] = s(past_k), s(past_v)
    return _launch(q, k, v, out, strides, (B, N, H), T, T, D, band_window=window, past=past)

"""Triton kernel parity on this device, for benchmarks/gpu_check.py (run by gpu_parts.py's `parity`).

Every Triton kernel against its PyTorch reference, fp32 (and bf16 on CUDA), at the shapes of
tests/test_kernels.py and (on CUDA) at the CoinRun shapes (batch 16: 16 frames x 256 tokens, D 512,
8 heads of 64, vocabulary 1024, codebook 1024 x 32). Floats are judged against a float64 computation on
the same inputs: Triton's error at most twice the reference's own error plus a floor (1e-5 fp32, 2e-2
bf16). Indices are judged by what they pick: a VQ code no farther than the reference's (near-ties may
differ), MaskGIT tokens equal and re-mask sets equal but for ties in confidence. A row passes only if the
Triton path really ran (its launch count grew). tests/test_kernels.py runs the same kernels on CPU
through Triton's interpreter; this is their first run compiled for a GPU.

Letters: B' batch (flattened), H heads, Lq queries, Lk keys, K head dim, M rows, C code dim, Kc codes,
B batch, N tokens, V vocabulary.
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from genie.core import kernels
from genie.core.kernels import reference as ref


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def rnd(*shape, device, dtype, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(device, dtype)


def judged(got, want, truth, floor: float) -> tuple[bool, dict]:
    e_t = float((got.double() - truth).abs().max())
    e_r = float((want.double() - truth).abs().max())
    return e_t <= 2 * e_r + floor, {"triton_err": e_t, "reference_err": e_r}


def band(Lq: int, Lk: int, window: int, device):
    diff = torch.arange(Lk - Lq, Lk, device=device)[:, None] - torch.arange(Lk, device=device)[None, :]
    return (diff >= 0) & (diff < window)


def parity_cases(device, dtype, coinrun: bool):
    """(kernel, shape label, check() -> (ok, detail)) for one dtype."""
    floor = 1e-5 if dtype == torch.float32 else 2e-2
    out = []

    def attention_case(Bp, H, Lq, Lk, K, mask_kind):
        def check():
            q, k, v = (
                rnd(Bp, H, L, K, device=device, dtype=dtype, seed=s) for s, L in ((1, Lq), (2, Lk), (3, Lk))
            )
            mask = None
            if mask_kind == "band":
                mask = band(Lq, Lk, 5 if Lq == Lk else Lk, device)
            elif mask_kind == "per-sequence":  # the ring cache's (B', 1, Lq, Lk) valid-slot mask
                mask = (torch.rand(Bp, 1, Lq, Lk, generator=torch.Generator().manual_seed(4)) > 0.3).to(
                    device
                )
                mask[..., 0] = True
            truth = ref.attention(q.double(), k.double(), v.double(), mask)
            return judged(kernels.attention(q, k, v, mask), ref.attention(q, k, v, mask), truth, floor)

        out.append(("attention", f"B'={Bp} H={H} {Lq}x{Lk} K={K} {mask_kind}", check))

    for args in [(2, 3, 19, 23, 40, "none"), (3, 2, 1, 13, 24, "none"), (2, 2, 16, 16, 64, "band")]:
        attention_case(*args)
    attention_case(6, 2, 3, 11, 16, "per-sequence")
    if coinrun:  # spatial, temporal and ring decode at CoinRun shapes, batch 16
        attention_case(16 * 16, 8, 256, 256, 64, "none")
        attention_case(16 * 256, 8, 16, 16, 64, "band")
        attention_case(16 * 256, 8, 1, 15, 64, "per-sequence")

    def norm_case(shape, permute):
        def check():
            x = rnd(*shape, device=device, dtype=dtype, seed=5)
            x = x.permute(*permute) if permute else x
            w = rnd(x.shape[-1], device=device, dtype=dtype, seed=6)
            xd = x.double()  # the reference computes in fp32 whatever it is given
            truth = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
            return judged(kernels.rms_norm(x, w), ref.rms_norm(x, w), truth, floor)

        out.append(("rms_norm", f"{tuple(shape)}{' permuted' if permute else ''}", check))

    norm_case((5, 33), None)
    norm_case((2, 3, 5, 24), (0, 2, 1, 3))
    if coinrun:
        norm_case((16 * 16 * 256, 512), None)

    def vq_case(M, C, Kc):
        def check():  # ties and near-ties may pick another code: judge the distance picked
            x, cb = (
                rnd(M, C, device=device, dtype=dtype, seed=7),
                rnd(Kc, C, device=device, dtype=dtype, seed=8),
            )
            got, want = kernels.vq_nearest(x, cb), ref.vq_nearest(x, cb)
            d = torch.cdist(x.double(), cb.double()) ** 2
            rows = torch.arange(M, device=device)
            worse = float((d[rows, got] - d[rows, want]).max())
            return worse <= 1e-3 * float(d.min(1).values.mean()) + 1e-6, {
                "same_index": float((got == want).float().mean()),
                "worst_extra_distance": worse,
            }

        out.append(("vq_nearest", f"({M}, {C}) x {Kc}", check))

    vq_case(150, 20, 77)
    if coinrun:
        vq_case(16 * 16 * 256, 32, 1024)

    def maskgit_case(B, N, V):
        def check():
            g = torch.Generator().manual_seed(9)
            logits = (torch.randn(B, N, V, generator=g) * 3).to(device, dtype)
            tokens = torch.randint(0, V, (B, N), generator=g).to(device)
            masked = (torch.rand(B, N, generator=g) < 0.6).to(device)
            gumbel = -torch.log(-torch.log(torch.rand(B, N, V, generator=g).clamp(1e-9, 1 - 1e-9))).to(device)
            keep = torch.full((B,), N // 4, dtype=torch.long, device=device)
            got = kernels.maskgit_update(logits, tokens, masked, gumbel, 1.0, keep)
            want = ref.maskgit_update(logits, tokens, masked, gumbel, 1.0, keep)
            same_tokens = float((got[0] == want[0]).float().mean())
            same_masked = float((got[1] == want[1]).float().mean())
            counts = bool(torch.equal(got[1].sum(1), torch.minimum(keep, masked.sum(1))))
            ok = counts and same_tokens == 1.0 and same_masked >= 0.999  # re-mask ranks may tie
            return ok, {"same_tokens": same_tokens, "same_masked": same_masked, "mask_counts": counts}

        out.append(("maskgit_update", f"({B}, {N}, {V})", check))

    maskgit_case(3, 37, 1100)
    if coinrun:
        maskgit_case(256, 256, 1024)

    def xent_case(M, V):
        def check():
            logits = rnd(M, V, device=device, dtype=dtype, seed=10, scale=3.0)
            targets = torch.randint(0, V, (M,), generator=torch.Generator().manual_seed(11)).to(device)
            targets[1] = -100
            a, b = logits.clone().requires_grad_(), logits.float().clone().requires_grad_()
            loss = kernels.token_cross_entropy(a, targets)
            loss.backward()
            want = F.cross_entropy(b, targets, ignore_index=-100)
            want.backward()
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            loss_err = abs(float(loss.detach()) - float(want.detach()))
            grad_err = float((a.grad.float() - b.grad).abs().max())
            ok = loss_err <= tol * max(1.0, abs(float(want.detach()))) and grad_err <= tol
            return ok, {"loss_err": loss_err, "grad_err": grad_err}

        out.append(("token_cross_entropy", f"fwd+bwd ({M}, {V})", check))

    xent_case(13, 53)
    if coinrun:
        xent_case(16 * 256, 1024)
    return out


def parity(add, device, dry: bool) -> None:
    """Every case of every dtype, each a row given to add(**row)."""
    os.environ["GENIE_KERNELS"] = "triton"
    dtypes = [torch.float32] if dry else [torch.float32, torch.bfloat16]
    for dtype in dtypes:
        for name, label, check in parity_cases(device, dtype, coinrun=not dry):
            before, t0 = kernels.triton_launches().get(name, 0), time.perf_counter()
            try:
                ok, detail = check()
                sync(device)
            except Exception as e:  # noqa: BLE001 - a failed case is a row, the others still run
                ok, detail = False, {"error": error(e)}
            ran = kernels.triton_launches().get(name, 0) > before
            add(
                kernel=name,
                shape=label,
                dtype=str(dtype).replace("torch.", ""),
                ok=bool(ok and ran),
                triton_ran=ran,
                seconds=time.perf_counter() - t0,
                **detail,
            )

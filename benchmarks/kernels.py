"""Time every genie kernel on the current device at the CoinRun-size shapes, against the PyTorch paths.

    python benchmarks/kernels.py            # batch 1, 16, 256 at 16 frames x 256 tokens (a GPU job)
    python benchmarks/kernels.py --quick    # one small shape per kernel (fine on a CPU)

Candidates per kernel: `eager` (the reference in genie/core/kernels/reference.py; for attention that is
SDPA, with a hand-written `math` softmax(QK^T)V as the eager alternative), `compile` (torch.compile of
the reference; on by default on CUDA, `--compile` on CPU where it takes minutes) and `triton` (CUDA
only: on CPU Triton runs only through its interpreter, which checks correctness and says nothing about
speed). Times are medians of torch.utils.benchmark blocked_autorange (which synchronizes CUDA). The
last column is the best alternative's time divided by this row's: > 1 means faster than every other
candidate. Traffic (GB/s) counts the bytes a fused kernel must move at least; attention counts dense
4*L_q*L_k*K flops per head (TFLOP/s), masked-out pairs included.

End to end (`--end-to-end`, on by default): an untrained world of `--world-preset` (coinrun on CUDA:
64x64 frames, 256 tokens per frame, 12-block d512 dynamics, 25 MaskGIT steps), timed as
- the World step at batch 1 and at each --step-batch size: eager or compiled (World(compile=True): CUDA
  graphs on a GPU), with the kernels forced to the reference or to Triton (GENIE_KERNELS);
- the dynamics training step (forward, backward, AdamW; bf16 autocast on CUDA) with the same switches
  (eager only).
FLOPs are counted once per case on the eager path with torch.utils.flop_counter (matmuls, attention),
so TFLOP/s and MFU (against --peak-tflops, the GPU's dense bf16 peak) are counted work over measured
time, not model estimates. `--no-kernels` skips the per-kernel table; `--no-world-compile` the
compiled rows (minutes of compilation on a CPU).

Shapes (CoinRun world): T 16 frames, N 256 tokens/frame, D 512, H 8 heads of K 64, V 1024 token
logits, codebook 1024 x 32. B = batch of clips (training) or of environments (stepping).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys

import torch
import torch.nn.functional as F
from torch.utils import benchmark

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from genie.core import kernels
from genie.core.kernels import reference as ref


def time_ms(fn, min_run_time: float) -> float:
    fn()  # warm-up: compilation, autotuning, allocator
    m = benchmark.Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3


def math_attention(q, k, v, attn_mask=None):
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf"))
    return s.softmax(-1) @ v


def band(Lq: int, Lk: int, window: int, device) -> torch.Tensor:
    diff = torch.arange(Lk - Lq, Lk, device=device)[:, None] - torch.arange(Lk, device=device)[None, :]
    return (diff >= 0) & (diff < window)


def cases(B: int, T: int, N: int, device, dtype):
    """(kernel, label, {candidate: fn}, work, unit) for one batch size."""
    H, K, D, V, Kc, C, W = 8, 64, 512, 1024, 1024, 32, 16
    tri = kernels._triton(device) if device.type == "cuda" else None
    out = []

    def rnd(*shape, dt=dtype):
        return torch.randn(*shape, device=device, dtype=dt)

    # --- attention on (B', H, L, K) tensors, as nn.Attention calls it today ---
    for label, Bp, Lq, Lk, mask in (
        (f"spatial B'={B * T} L={N}", B * T, N, N, None),
        (f"temporal B'={B * N} L={T}", B * N, T, T, band(T, T, W, device)),
        (f"decode B'={B * N} 1x{T - 1}", B * N, 1, T - 1, None),
    ):
        q, k, v = rnd(Bp, H, Lq, K), rnd(Bp, H, Lk, K), rnd(Bp, H, Lk, K)
        fns = {
            "math": lambda q=q, k=k, v=v, m=mask: math_attention(q, k, v, m),
            "eager": lambda q=q, k=k, v=v, m=mask: ref.attention(q, k, v, m),
        }
        if tri:
            fns["triton"] = lambda q=q, k=k, v=v, m=mask: tri["_triton_attention"].attention(q, k, v, m)
        out.append(("attention", label, fns, 4 * Bp * H * Lq * Lk * K, "TFLOP/s"))
    # --- norms over the residual stream (B*T*N, D) ---
    M = B * T * N
    x, w = rnd(M, D), rnd(D)
    fns = {"eager": lambda: ref.rms_norm(x, w, 1e-6)}
    if tri:
        fns["triton"] = lambda: tri["_triton_norm"].rms_norm(x, w, 1e-6)
    out.append(("rms_norm", f"({M}, {D})", fns, 2 * x.numel() * x.element_size(), "GB/s"))
    # --- vector quantization of every token of a clip ---
    z, cb = (
        F.normalize(rnd(M, C, dt=torch.float32), dim=-1),
        F.normalize(rnd(Kc, C, dt=torch.float32), dim=-1),
    )
    fns = {"eager": lambda: ref.vq_nearest(z, cb)}
    if tri:
        fns["triton"] = lambda: tri["_triton_vq"].vq_nearest(z, cb)
    out.append(("vq_nearest", f"({M}, {C}) x {Kc}", fns, 4 * (z.numel() + cb.numel()) + 8 * M, "GB/s"))
    # --- one MaskGIT step over one new frame per environment ---
    logits, gumbel = (
        rnd(B, N, V),
        -torch.log(-torch.log(torch.rand(B, N, V, device=device).clamp(1e-9, 1 - 1e-9))),
    )
    tokens = torch.randint(0, V, (B, N), device=device)
    masked = torch.rand(B, N, device=device) < 0.5
    keep = torch.full((B,), N // 4, device=device, dtype=torch.long)
    fns = {"eager": lambda: ref.maskgit_update(logits, tokens, masked, gumbel, 1.0, keep)}
    if tri:
        fns["triton"] = lambda: tri["_triton_tokens"].maskgit_update(
            logits, tokens, masked, gumbel, 1.0, keep
        )
    out.append(
        (
            "maskgit_update",
            f"({B}, {N}, {V})",
            fns,
            logits.numel() * logits.element_size() + gumbel.numel() * 4,
            "GB/s",
        )
    )
    # --- token cross-entropy, forward + backward, over the tokens of one frame per clip ---
    Mx = B * N
    lg = rnd(Mx, V).requires_grad_()
    tg = torch.randint(0, V, (Mx,), device=device)

    def fwd_bwd(f):
        def run():
            lg.grad = None
            f(lg, tg).backward()

        return run

    fns = {"eager": fwd_bwd(ref.token_cross_entropy)}
    if tri:
        fns["triton"] = fwd_bwd(tri["_triton_tokens"].token_cross_entropy)
    out.append(
        ("token_cross_entropy", f"fwd+bwd ({Mx}, {V})", fns, 3 * lg.numel() * lg.element_size(), "GB/s")
    )
    return out


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def world_step_case(path, device, B: int, compiled: bool, steps: int):
    """A function that advances a B-world batch by one frame, after an untimed compile/warm-up."""
    from genie.world import World

    world = World.load(path, device=device, compile=compiled)
    g = torch.Generator(device=world.device).manual_seed(0)
    world.reset(torch.zeros(world.image_size, world.image_size, 3, dtype=torch.uint8).numpy(), batch_size=B)
    actions = torch.zeros(B, dtype=torch.long, device=world.device)

    def run():
        world.step(actions, maskgit_steps=steps, generator=g)

    run()  # compile (captured step) and allocator warm-up
    return run


def training_step(path, device, B: int):
    """(forward_backward, step, frames per step) of the dynamics of world `path` on random tokens:
    forward_backward accumulates one batch's gradients; step also applies and clears them."""
    from dynamics.model import DynamicsModel
    from genie.checkpoint import load_model

    cfg = load_model(path / "dynamics", "dynamics").cfg
    model = DynamicsModel(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, cfg.vocab_size, (B, cfg.context, cfg.grid**2), device=device)
    actions = torch.randint(0, cfg.num_actions, (B, cfg.context - 1), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def forward_backward():
        with amp:
            loss = model.compute_loss({"tokens": tokens, "latent_actions": actions})["loss"]
        loss.backward()

    def step():
        forward_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return forward_backward, step, B * cfg.context


def training_case(path, device, B: int):
    _, run, frames = training_step(path, device, B)
    run()
    return run, frames


def end_to_end(args, device, min_run: float) -> list:
    """Rows (what, label, {candidate: (ms, flops)}, frames per call) for the World step and training."""
    import tempfile
    from pathlib import Path

    from genie.checkpoint import load_model
    from genie.world import random_world

    tmp = tempfile.TemporaryDirectory()
    path = random_world(Path(tmp.name) / "world", args.world_preset)
    steps = args.maskgit_steps or load_model(path / "dynamics", "dynamics").cfg.maskgit_steps
    paths = ["reference", "triton"] if device.type == "cuda" else ["reference"]
    compiled_opts = [False, True] if args.world_compile else [False]
    rows = []
    for B in sorted({1, *args.step_batch}):
        cands, flops = {}, None
        for kernel_path in paths:
            for compiled in compiled_opts:
                name = f"{'compiled' if compiled else 'eager'}, {kernel_path}"
                os.environ["GENIE_KERNELS"] = kernel_path
                torch._dynamo.reset()  # the kernel choice is read at trace time: trace each anew
                try:
                    fn = world_step_case(path, device, B, compiled, steps)
                    if flops is None:  # counted on the eager step (a counter does not see into graphs)
                        flops = count_flops(world_step_case(path, device, B, False, steps))
                    cands[name] = (time_ms(fn, min_run), flops)
                except Exception as e:  # noqa: BLE001 - report, keep benchmarking the rest
                    print(f"# world step B={B} {name}: failed: {type(e).__name__}: {str(e)[:160]}")
        rows.append(("world step", f"B={B}, {steps} MaskGIT steps", cands, B))
    for B in args.train_batch:
        cands = {}
        for kernel_path in paths:
            os.environ["GENIE_KERNELS"] = kernel_path
            try:
                fn, frames = training_case(path, device, B)
                cands[f"eager, {kernel_path}"] = (time_ms(fn, min_run), count_flops(fn))
            except Exception as e:  # noqa: BLE001
                print(f"# training B={B} {kernel_path}: failed: {type(e).__name__}: {str(e)[:160]}")
                frames = B
        rows.append(("dynamics training", f"B={B} clips", cands, frames))
    os.environ.pop("GENIE_KERNELS", None)
    tmp.cleanup()
    return rows


def print_end_to_end(rows, peak_tflops: float | None) -> None:
    print("\n| end to end | shape | candidate | ms | frames/s | TFLOP/s | MFU | best other / this |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for what, label, cands, frames in rows:
        for cand, (t, flops) in cands.items():
            others = [v[0] for c, v in cands.items() if c != cand]
            tflops = flops / (t * 1e-3) / 1e12
            mfu = f"{100 * tflops / peak_tflops:.1f}%" if peak_tflops else "-"
            vs = f"{min(others) / t:.2f}" if others else "-"
            print(
                f"| {what} | {label} | {cand} | {t:.2f} | {frames / (t * 1e-3):.1f} | {tflops:.3g} | {mfu} | {vs} |"
            )


def add_compiled(fns: dict) -> dict:
    base = fns.get("eager")
    if base is not None:
        fns["compile"] = torch.compile(base, dynamic=False)
    return fns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one small shape per kernel (B 1, T 4, N 64)")
    p.add_argument(
        "--min-run", type=float, default=None, help="seconds each timing runs (default 1.0; 0.2 with --quick)"
    )
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default 1 16 256)")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="include torch.compile (default: on CUDA only)",
    )
    p.add_argument("--only", nargs="+", default=None, help="kernel names to run")
    p.add_argument(
        "--end-to-end",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the World step and the dynamics training step (default on)",
    )
    p.add_argument(
        "--world-preset",
        default=None,
        help="world of the end-to-end rows (default: coinrun on CUDA, demo on CPU)",
    )
    p.add_argument("--step-batch", type=int, nargs="+", default=None, help="World step batch sizes besides 1")
    p.add_argument("--train-batch", type=int, nargs="+", default=None, help="training batch sizes (clips)")
    p.add_argument("--maskgit-steps", type=int, default=None, help="default: the preset's")
    p.add_argument(
        "--world-compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the compiled World step too (default on; minutes of compilation on a CPU)",
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="dense bf16 peak of the GPU for MFU (default: 989 on an H100/H200, else no MFU column)",
    )
    p.add_argument(
        "--kernels", action=argparse.BooleanOptionalAction, default=True, help="the per-kernel table"
    )
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_compile = device.type == "cuda" if args.compile is None else args.compile
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    T, N = (4, 64) if args.quick else (16, 256)
    batches = args.batch or ([1] if args.quick else [1, 16, 256])
    min_run = args.min_run or (0.2 if args.quick else 1.0)
    name = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{platform.processor() or 'cpu'}, {os.cpu_count()} cores"
    )
    print(
        f"# genie kernels, {datetime.date.today()} on {device.type} ({name}); torch {torch.__version__}, "
        f"dtype {dtype}, T {T}, N {N}, torch threads {torch.get_num_threads()}"
    )
    if device.type != "cuda":
        print("# Triton needs CUDA: on this device only the PyTorch paths are timed.")
    if not use_compile and args.kernels:
        print("# torch.compile of single kernels not timed (pass --compile).")
    rows = []
    torch.manual_seed(0)
    if args.kernels:  # rows are printed as they are measured: a run stopped early keeps them
        print("\n| kernel | shape | candidate | time (ms) | achieved | best other / this |")
        print("|---|---|---|---:|---:|---:|", flush=True)
    for B in batches if args.kernels else []:
        for kernel, label, fns, work, unit in cases(B, T, N, device, dtype):
            if args.only and kernel not in args.only:
                continue
            if use_compile:
                fns = add_compiled(fns)
            times = {}
            for cand, fn in fns.items():
                try:
                    times[cand] = time_ms(fn, min_run)
                except Exception as e:  # noqa: BLE001 - report, keep benchmarking the rest
                    print(f"# {kernel} {label} {cand}: failed: {type(e).__name__}: {str(e)[:120]}")
            for cand, t in times.items():
                others = [v for c, v in times.items() if c != cand]
                rate = work / (t * 1e-3) / (1e12 if unit == "TFLOP/s" else 1e9)
                vs = f"{min(others) / t:.2f}" if others else "-"
                rows.append((kernel, label, cand, t, f"{rate:.3g} {unit}", vs))
                print(f"| {kernel} | {label} | {cand} | {t:.3f} | {rate:.3g} {unit} | {vs} |", flush=True)
    if args.end_to_end:
        cuda = device.type == "cuda"
        args.world_preset = args.world_preset or ("coinrun" if cuda else "demo")
        args.step_batch = args.step_batch or ([16, 256, 1024] if cuda else [4])
        args.train_batch = args.train_batch or ([8, 32] if cuda else [2])
        peak = args.peak_tflops
        if peak is None and cuda and any(g in torch.cuda.get_device_name() for g in ("H100", "H200")):
            peak = 989.0  # NVIDIA's dense BF16 tensor-core figure for the H100/H200 SXM
        e2e = end_to_end(args, device, min_run)
        print_end_to_end(e2e, peak)
    print(
        f"summary: {len(rows)} kernel rows, {sum(len(r[2]) for r in e2e) if args.end_to_end else 0} end-to-end rows"
    )


if __name__ == "__main__":
    main()

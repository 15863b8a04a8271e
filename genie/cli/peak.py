"""How close a world runs to this machine's peak, for `genie bench`: the FLOPs of one step counted with
torch.utils.flop_counter, this machine's matmul rate measured in the same process, and achieved / peak.

The peak is measured, never looked up: the best of a few timed torch.mm in the world's dtype (fp32 on a
CPU, bf16 on CUDA) at a square size and at the model's own largest matmul shapes (recorded while the
step is counted). A CPU's rate depends on its threads (torch.get_num_threads()) and on whoever else
uses the cores, so it is measured in the same run as the frames/s it divides.

What is counted: matmuls (linear layers) and attention (dense: masked-out pairs count, as
FlopCounterMode counts them); elementwise work is not. The CPU's fused attention op
(`_scaled_dot_product_flash_attention_for_cpu`), which FlopCounterMode does not know, is counted with
its own SDPA formula.

Letters: b batch of a bmm, M K N a matmul (M x K) @ (K x N).
"""

from __future__ import annotations

import time
from collections import Counter

import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# FlopCounterMode wraps these to receive shapes, as its own formulas do
CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}
SQUARE = {"cpu": 512, "cuda": 8192}  # big enough to reach the device's rate, small enough to be quick


class MatmulShapes(TorchDispatchMode):
    """Records (b, M, K, N) -> FLOPs of every mm, addmm, bmm and baddbmm dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.flops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet in (aten.mm, aten.bmm, aten.addmm, aten.baddbmm):
            a, w = (args[0], args[1]) if packet in (aten.mm, aten.bmm) else (args[1], args[2])
            if a.dim() == 2:  # (M, K) @ (K, N)
                shape = (1, a.shape[0], a.shape[1], w.shape[1])
            else:  # (b, M, K) @ (b, K, N)
                shape = (a.shape[0], a.shape[1], a.shape[2], w.shape[2])
            self.flops[shape] += 2 * shape[0] * shape[1] * shape[2] * shape[3]
        return func(*args, **(kwargs or {}))


def count(fn) -> tuple[int, Counter]:
    """Run fn() once under the counters -> (FLOPs, {(b, M, K, N): FLOPs of the matmuls of that shape})."""
    with (
        flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as flops,
        MatmulShapes() as shapes,
    ):
        fn()
    return flops.get_total_flops(), shapes.flops


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(shape, dtype, device, min_time: float = 0.02, repeats: int = 3) -> float:
    """GFLOP/s of torch.mm (b = 1) or torch.bmm at shape (b, M, K, N): the best of `repeats` timed blocks
    of at least `min_time` seconds each, after a warm-up."""
    b, M, K, N = shape
    device = torch.device(device)
    x = torch.randn(b, M, K, device=device).to(dtype)
    y = torch.randn(b, K, N, device=device).to(dtype)
    out = torch.empty(b, M, N, device=device, dtype=dtype)
    if b == 1:
        x, y, out = x[0], y[0], out[0]

        def op():
            torch.mm(x, y, out=out)
    else:

        def op():
            torch.bmm(x, y, out=out)

    def block(reps: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            op()
        sync(device)
        return time.perf_counter() - t0

    reps = 1
    while (t := block(reps)) < min_time:  # the first block also warms up
        reps = max(reps * 2, int(reps * 1.2 * min_time / max(t, 1e-9)))
    best = min(block(reps) for _ in range(repeats)) / reps
    return 2 * b * M * K * N / best / 1e9


def measure_peak(device, dtype, model_shapes: Counter | None = None, top: int = 3, square=None) -> dict:
    """This machine's matmul rate in `dtype`: at a square size and at the `top` matmul shapes that carry
    the most FLOPs in `model_shapes`. peak_gflops is the best of them; model_shapes_gflops the rate a
    step made only of those matmuls would reach (FLOPs-weighted: total FLOPs / total time)."""
    device = torch.device(device)
    n = square or SQUARE.get(device.type, SQUARE["cuda"])
    rows = []
    total = sum(model_shapes.values()) if model_shapes else 0
    for shape, flops in (model_shapes or Counter()).most_common(top):
        rows.append(
            {"shape": list(shape), "flop_share": flops / total, "gflops": matmul_gflops(shape, dtype, device)}
        )
    sq = matmul_gflops((1, n, n, n), dtype, device)
    shares = sum(r["flop_share"] for r in rows)
    weighted = shares / sum(r["flop_share"] / r["gflops"] for r in rows) if rows else None
    return {
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "square": {"shape": [1, n, n, n], "gflops": sq},
        "model_shapes": rows,
        "model_shapes_gflops": weighted,
        "peak_gflops": max([sq] + [r["gflops"] for r in rows]),
    }


def with_start(peak: dict, start_gflops: float, tolerance: float = 0.25) -> dict:
    """The peak measured at the end of a run, joined with the square-size rate measured at its start.
    The peak is always the fastest rate seen (a slow end cannot then give a fraction above 100%). A rate
    that moved by more than `tolerance` between start and end means the machine was shared, throttled or
    still ramping up while the paths were timed: `warning` says so; otherwise `warning` is None."""
    end = peak["square"]["gflops"]
    moved = abs(end - start_gflops) / max(end, start_gflops)
    warning = None
    if moved > tolerance:
        warning = (
            f"the {peak['square']['shape'][1]}^3 matmul rate moved from {start_gflops:.1f} to {end:.1f} "
            f"GFLOP/s during the run: the machine was busy or changing speed, so its fractions of peak are "
            f"unreliable; rerun it on an idle machine"
        )
    return {
        **peak,
        "square_at_start_gflops": start_gflops,
        "peak_gflops": max(peak["peak_gflops"], start_gflops),
        "warning": warning,
    }


def utilization(path: str, frames_per_s: float, flops_per_frame: float, peak_gflops: float) -> dict:
    """One row of the table: achieved GFLOP/s (frames/s x counted FLOPs per frame) over the peak."""
    achieved = frames_per_s * flops_per_frame / 1e9
    return {
        "path": path,
        "frames_per_s": frames_per_s,
        "gflop_per_frame": flops_per_frame / 1e9,
        "achieved_gflops": achieved,
        "peak_gflops": peak_gflops,
        "fraction_of_peak": achieved / peak_gflops,
    }


def describe_peak(peak: dict) -> str:
    """One line: the peak and what it was measured at."""
    n = peak["square"]["shape"][1]
    at_model = (
        f", model shapes {peak['model_shapes_gflops']:.1f}" if peak["model_shapes_gflops"] is not None else ""
    )
    return (
        f"{peak['dtype']} matmul peak {peak['peak_gflops']:.1f} GFLOP/s on {peak['device']} "
        f"({n}^3 {peak['square']['gflops']:.1f}{at_model}; {peak['threads']} threads)"
    )


def format_table(rows: list[dict], peak: dict) -> str:
    lines = [
        f"fraction of peak: {describe_peak(peak)}",
        f"{'path':<28}{'frames/s':>10}{'GFLOP/frame':>13}{'GFLOP/s':>10}{'of peak':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r['path']:<28}{r['frames_per_s']:>10.2f}{r['gflop_per_frame']:>13.3f}"
            f"{r['achieved_gflops']:>10.1f}{100 * r['fraction_of_peak']:>8.1f}%"
        )
    return "\n".join(lines)

"""The measured parts of benchmarks/gpu_check.py, one process each (so that a time box can stop one):

    python benchmarks/gpu_parts.py parity|capture|e2e|e2e_compiled --out PART.json [--dry-run]

- parity: every Triton kernel against its PyTorch reference on this device, fp32 (and bf16 on CUDA), at
  the tests' shapes and (on CUDA) the CoinRun shapes. Each output is judged against a float64 computation
  on the same inputs: Triton's error at most twice the reference's own plus a small floor; indices by
  the distance or confidence they pick; and the Triton path must really have run (launch counts).
- capture: the compiled World step (torch.compile; CUDA graphs on a GPU) against the eager step, step
  by step on the same noise keys, over a rollout of two worlds that wraps the ring caches and restarts
  a row: fp32 with the reference kernels, fp32 with the Triton kernels, and (on CUDA) bf16, whose
  agreement is reported, not judged. Judged: the sampled tokens (a decoded pixel may round the other
  way), one graph for the whole rollout, no CUDA-graph skips.
- e2e: an untrained world of the preset (CoinRun on a GPU: 25 MaskGIT steps): single-stream frames/s
  with a full history, B worlds stepped as one batch (World.step of B rows: the step of
  GenieVectorEnv.step_tensor, without gymnasium, which the GPU image lacks) and dynamics training. FLOPs
  are counted once per case (genie/cli/peak.py), the matmul peak is measured in the same process, and
  each row gets achieved TFLOP/s and its fraction of that peak (and MFU against the 989 TFLOP/s dense
  bf16 figure on an H100/H200).
- e2e_compiled: the same single stream and batches with World(compile=True).

Each part rewrites its JSON after every measurement: a part stopped at its time box keeps its rows.
--dry-run: the CPU, one thread, tiny sizes, dynamo's `eager` backend for the compiled step (inductor's
CPU compile takes minutes), Triton in its interpreter (gpu_check.py sets TRITON_INTERPRET=1 before the
process starts); the Triton capture case is left to tests/test_kernels.py (minutes in the interpreter).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gpu_parity import error, parity, sync  # noqa: E402  (beside this file)
from kernels import training_step  # noqa: E402

from genie.checkpoint import load_model  # noqa: E402
from genie.world import World, random_world  # noqa: E402

NOMINAL_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # NVIDIA's dense figures (SXM)


def load_peak():
    """genie/cli/peak.py by its path: `import genie.cli` imports the commands, and through them gymnasium."""
    spec = importlib.util.spec_from_file_location("genie_cli_peak", ROOT / "genie" / "cli" / "peak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peak = load_peak()


@dataclass
class Sizes:
    preset: str
    maskgit_steps: int
    single_steps: int  # timed single-stream frames, after the history is full
    batch_sizes: tuple
    batch_steps: int  # timed batched steps, after one warm-up (compile) step
    compiled_batch_sizes: tuple  # each is compiled anew
    train_batches: tuple
    train_steps: int
    capture_steps: int  # capture: steps of the eager-vs-compiled rollout (row 0 restarts after step 1)


# The dry run's torch.compile backend: dynamo's capture of the whole step (fullgraph, the same code path)
# without a compiler behind it; inductor on a CPU compiles for minutes. tests/test_capture.py checks the
# compiled frames on CPU with aot_eager.
DRY_BACKEND = "eager"


GPU = Sizes(
    preset="coinrun",
    maskgit_steps=25,
    single_steps=20,
    batch_sizes=(256, 1024),
    batch_steps=3,
    compiled_batch_sizes=(256, 1024),
    train_batches=(8, 32),
    train_steps=5,
    capture_steps=11,  # past the point where the tiny world's ring (7 slots) wraps
)
DRY = Sizes(
    preset="tiny",
    maskgit_steps=1,
    single_steps=2,
    batch_sizes=(2, 3),
    batch_steps=1,
    compiled_batch_sizes=(),  # the batched loop is the single stream's; each compile costs ~10 s here
    train_batches=(2,),
    train_steps=1,
    capture_steps=2,
)


def device_info(device: torch.device) -> dict:
    info = {"device": device.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        info["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        info["triton"] = None
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return info


class Report:
    """The part's JSON, rewritten (atomically) after every row."""

    def __init__(self, path, part: str, device: torch.device):
        self.path = Path(path)
        self.data = {"part": part, "env": device_info(device), "rows": [], "done": False}
        self.save()

    def add(self, **row) -> None:
        self.data["rows"].append(row)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


# --- capture ---


@torch.no_grad()
def compare_rollouts(path, device, dtype, steps: int, maskgit_steps: int, dry: bool) -> dict:
    """Eager and compiled Worlds side by side on the same keys: same frames?"""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # the kernel path is read at trace time
    eager = World.load(path, device=device, dtype=dtype)
    captured = World.load(path, device=device, dtype=dtype, compile=True)
    if dry:
        captured.compile_backend = DRY_BACKEND
    rng = np.random.default_rng(0)
    size = eager.image_size
    prompts = [rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8) for _ in range(3)]  # 2-frame clips
    for world in (eager, captured):
        world.reset(prompts[:2])  # two worlds
    graphs0 = counters["stats"]["unique_graphs"]
    skips0 = counters["inductor"]["cudagraph_skips"]
    ge = torch.Generator(device=device).manual_seed(0)
    gc = torch.Generator(device=device).manual_seed(0)
    same, tokens_equal, pixel_diff, t0 = 0, [], 0, time.perf_counter()
    for t in range(steps):
        actions = torch.tensor([t % eager.num_actions, (3 * t) % eager.num_actions], device=device)
        fe = eager.step(actions, maskgit_steps=maskgit_steps, generator=ge)
        fc = captured.step(actions, maskgit_steps=maskgit_steps, generator=gc)
        # the sampled tokens are the world's state; a decoded pixel may round the other way
        te, tc = eager._last_tokens, captured._last_tokens
        same += bool(torch.equal(te, tc))
        tokens_equal.append(float((te == tc).float().mean()))
        pixel_diff = max(pixel_diff, int((fe.int() - fc.int()).abs().max()))
        if t == 1:
            for world in (eager, captured):
                world.reset_rows([0], prompts[2])
    sync(device)
    return {
        "steps": steps,
        "same_token_steps": same,
        "tokens_equal": float(np.mean(tokens_equal)),
        "max_pixel_diff": pixel_diff,
        "graphs": counters["stats"]["unique_graphs"] - graphs0,
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"] - skips0,
        "seconds": time.perf_counter() - t0,
    }


def capture(report: Report, device, sizes: Sizes, dry: bool) -> None:
    tmp = tempfile.TemporaryDirectory()
    path = random_world(Path(tmp.name) / "world", "tiny")
    cases = [("reference", torch.float32), ("triton", torch.float32)]
    if device.type == "cuda":
        cases.append(("reference", torch.bfloat16))
    for kernel_path, dtype in cases:
        if dry and kernel_path == "triton":  # the interpreter takes minutes over a whole world
            report.add(
                kernels=kernel_path, dtype="float32", ok=None, result="skipped in the dry run", steps=0
            )
            continue
        os.environ["GENIE_KERNELS"] = kernel_path
        judge = dtype == torch.float32
        try:
            r = compare_rollouts(path, device, dtype, sizes.capture_steps, min(2, sizes.maskgit_steps), dry)
        except Exception as e:  # noqa: BLE001
            report.add(kernels=kernel_path, dtype=str(dtype)[6:], ok=False, result="error", error=error(e))
            continue
        if r["same_token_steps"] == r["steps"]:
            result = "same tokens" + (
                f", pixels within {r['max_pixel_diff']}" if r["max_pixel_diff"] else ", same frames"
            )
        elif r["tokens_equal"] >= 0.99:
            result = f"near: {100 * r['tokens_equal']:.2f}% of tokens equal"
        else:
            result = f"differs: {100 * r['tokens_equal']:.1f}% of tokens equal"
        one_graph = r["graphs"] == 1 and r["cudagraph_skips"] == 0
        ok = one_graph and (not judge or not result.startswith("differs"))
        report.add(kernels=kernel_path, dtype=str(dtype)[6:], ok=ok, judged=judge, result=result, **r)
    tmp.cleanup()


# --- end to end ---


def training_row(path, device, B: int, steps: int, peak_gflops: float, nominal) -> dict:
    forward_backward, train_step, frames = training_step(path, device, B)
    train_step()  # warm-up
    flops, _ = peak.count(forward_backward)
    train_step()  # applies and clears the counted gradients
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    path_label = "eager, bf16 autocast" if device.type == "cuda" else "eager"
    shape = f"B={B} clips x {frames // B}"
    return row("training", shape, path_label, frames / dt, dt, flops / frames, peak_gflops, nominal)


def row(what, shape, path, frames_per_s, seconds, flops_per_frame, peak_gflops, nominal, **extra) -> dict:
    u = peak.utilization(path, frames_per_s, flops_per_frame, peak_gflops)
    tflops = u["achieved_gflops"] / 1e3
    return {
        "what": what,
        "shape": shape,
        "path": path,
        "frames_per_s": frames_per_s,
        "ms": 1e3 * seconds,
        "gflop_per_frame": u["gflop_per_frame"],
        "tflops": tflops,
        "fraction_of_peak": u["fraction_of_peak"],
        "mfu_nominal": tflops / nominal if nominal else None,
        "ok": True,
        **extra,
    }


@torch.no_grad()
def timed_steps(world, batch: int, warm: int, steps: int, S: int, prompt) -> tuple[float, float]:
    """-> (seconds of the first step, including any compile; mean seconds of `steps` timed steps after
    `warm` more)."""
    device = world.device
    world.reset(prompt, batch_size=batch)
    g = torch.Generator(device=device).manual_seed(0)
    actions = torch.randint(0, world.num_actions, (batch,), device=device)
    t0 = time.perf_counter()
    world.step(actions, maskgit_steps=S, generator=g)
    sync(device)
    first = time.perf_counter() - t0
    for _ in range(warm):
        world.step(actions, maskgit_steps=S, generator=g)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        world.step(actions, maskgit_steps=S, generator=g)
    sync(device)
    return first, (time.perf_counter() - t0) / steps


@torch.no_grad()
def count_step(path, device, S: int, prompt) -> tuple[int, object, torch.dtype]:
    """FLOPs of one eager step of one world with a full history, its matmul shapes, the world's dtype."""
    world = World.load(path, device=device)
    world.reset(prompt)
    g = torch.Generator(device=device).manual_seed(0)
    for _ in range(world.context):
        world.step([0], maskgit_steps=S, generator=g)
    flops, shapes = peak.count(lambda: world.step([0], maskgit_steps=S, generator=g))
    return flops, shapes, next(world.dynamics.parameters()).dtype


def e2e(report: Report, device, sizes: Sizes, compiled: bool, dry: bool) -> None:
    tmp = tempfile.TemporaryDirectory()
    path = random_world(Path(tmp.name) / "world", sizes.preset)
    S = sizes.maskgit_steps
    if compiled and dry:
        World.compile_backend = DRY_BACKEND
    rng = np.random.default_rng(0)
    size = load_model(path / "tokenizer", "tokenizer").cfg.image_size
    prompt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    flops, shapes, dtype = count_step(path, device, S, prompt)
    machine = peak.measure_peak(device, dtype, shapes)
    name = report.data["env"]["name"]
    cuda = device.type == "cuda"
    nominal = next((v for k, v in NOMINAL_BF16_TFLOPS.items() if k in name), None) if cuda else None
    report.data.update(flops_per_env_step=flops, peak=machine, sizes=asdict(sizes), nominal_tflops=nominal)
    report.save()
    label = ("compiled (CUDA graph)" if device.type == "cuda" else "compiled") if compiled else "eager"
    peak_gflops = machine["peak_gflops"]
    batches = sizes.compiled_batch_sizes if compiled else sizes.batch_sizes
    for what, B in [("single stream", 1)] + [("batched", b) for b in batches]:
        shape = f"B={B}, {S} MaskGIT steps"
        try:
            torch._dynamo.reset()
            world = World.load(path, device=device, compile=compiled)
            warm = world.context if B == 1 else 0  # single stream: a full history
            steps = sizes.single_steps if B == 1 else sizes.batch_steps
            first, dt = timed_steps(world, B, warm, steps, S, prompt)
            report.add(**row(what, shape, label, B / dt, dt, flops, peak_gflops, nominal, first_step_s=first))
        except torch.OutOfMemoryError as e:
            report.add(what=what, shape=shape, path=label, ok=False, error=f"out of memory: {error(e)[:120]}")
        except Exception as e:  # noqa: BLE001
            report.add(what=what, shape=shape, path=label, ok=False, error=error(e))
        world = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not compiled:
        for B in sizes.train_batches:
            try:
                report.add(**training_row(path, device, B, sizes.train_steps, peak_gflops, nominal))
            except Exception as e:  # noqa: BLE001
                report.add(what="training", shape=f"B={B} clips", path="eager", ok=False, error=error(e))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    tmp.cleanup()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["parity", "capture", "e2e", "e2e_compiled"])
    p.add_argument("--out", required=True, help="the part's JSON file")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if args.dry_run:  # code paths, not speed: one thread, as a shared CPU runs best
        torch.set_num_threads(1)
    torch.manual_seed(0)
    report = Report(args.out, args.part, device)
    sizes = DRY if args.dry_run else GPU
    if args.part == "parity":
        parity(report.add, device, args.dry_run)
    elif args.part == "capture":
        capture(report, device, sizes, args.dry_run)
    else:
        e2e(report, device, sizes, args.part == "e2e_compiled", args.dry_run)
    report.data["done"] = True
    report.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

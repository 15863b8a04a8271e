"""`genie bench`: speed of a world on the current device. Single-stream frames/s with and without the
temporal KV cache (same model, same run), batched env-steps/s of GenieVectorEnv.step_tensor for
N = 1, 4, 16, ..., dynamics training frames/s, and PPO env-steps/s in imagination (genie/rl/ppo.py on
--ppo-envs envs: rollout, policy forward and update, what an RL run pays per step).

    genie bench --preset tiny                      # an untrained world of a preset (speed only)
    genie bench --world worlds/breakout --sizes 1,64,1024 --json
    python benchmarks/step.py ...                  # the same

Single stream: one world is rolled out for `receptive + --steps` frames and the mean of the last --steps
is reported, so the uncached path is measured at its steady state (a full history: the dynamics'
receptive field, depth * (context - 1) + 1 frames). Batched: --steps steps after one warm-up step.
Each phase stops at its share of --budget seconds and says what it reached.

`--compile` adds a single-stream row for the captured step (World(compile=True): torch.compile, CUDA
graphs on a GPU) and runs the batched phase with it; compilation happens in an untimed warm-up step
and its wall time is reported on its own.

Fraction of peak (genie/cli/peak.py): the FLOPs of one step are counted once, on an extra untimed step
of the cached eager stream at its steady state, and this machine's matmul rate is measured in the same
run (fp32 on a CPU, bf16 on CUDA; at a square size and at the step's largest matmul shapes). Each path
gets achieved GFLOP/s = frames/s x that count and its ratio to the peak. Every path is charged the
same useful work per frame: the uncached path's recomputation of the history is not counted as work,
so its ratio shows what a user gets from the machine. Training rows count their own step (forward,
backward).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dynamics.model import DynamicsModel
from envs.vector_env import GenieVectorEnv
from genie.cli import peak
from genie.cli.args import check_numbers
from genie.rl import ppo
from genie.world import World, random_world


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def single_stream(
    path,
    prompt,
    use_cache: bool,
    steps: int,
    budget: float,
    device,
    maskgit_steps,
    compile: bool = False,
    counted: dict | None = None,
) -> dict:
    """One world rolled out one frame at a time. With `counted` (a dict), one more untimed step is run
    under the FLOP counters and counted["flops"], counted["matmul_shapes"] are filled in."""
    world = World.load(path, device=device, use_cache=use_cache, compile=compile)
    receptive = world.dynamics.transformer.receptive_field
    gen = torch.Generator(device=world.device).manual_seed(0)
    compile_s = None
    if compile:  # untimed: the first step compiles; the reset below reuses the captured step
        t0 = time.perf_counter()
        world.reset(prompt)
        world.step([0], maskgit_steps=maskgit_steps, generator=gen)
        sync(world.device)
        compile_s = time.perf_counter() - t0
    world.reset(prompt)
    actions = torch.randint(
        0, world.num_actions, (receptive + steps,), generator=torch.Generator().manual_seed(0)
    )
    times, t_start = [], time.perf_counter()
    for a in actions:
        t0 = time.perf_counter()
        world.step(a[None], maskgit_steps=maskgit_steps, generator=gen)
        sync(world.device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget:
            break
    last = times[-steps:]
    if counted is not None:
        step = actions[-1:]
        counted["flops"], counted["matmul_shapes"] = peak.count(
            lambda: world.step(step, maskgit_steps=maskgit_steps, generator=gen)
        )
    return {
        "use_cache": use_cache,
        "compiled": compile,
        "compile_s": compile_s,
        "frames": len(times),
        "steady_state": len(times) >= receptive + steps,
        "receptive_frames": receptive,
        "ms_per_frame": 1e3 * float(np.mean(last)),
        "fps": len(last) / sum(last),
    }


def training(world: World, batch_size: int, steps: int, budget: float) -> dict:
    """Frames/s of dynamics training steps (forward, backward, AdamW) on random tokens of the world's shape."""
    model = DynamicsModel(world.dynamics.cfg).to(world.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cfg = model.cfg
    T, N, done = cfg.context, cfg.grid**2, 0
    tokens = torch.randint(0, cfg.vocab_size, (batch_size, T, N), device=world.device)
    actions = torch.randint(0, cfg.num_actions, (batch_size, T - 1), device=world.device)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if world.device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    t_start = time.perf_counter()
    for i in range(steps + 1):
        if i == 1:  # the first step warms up
            sync(world.device)
            t0 = time.perf_counter()
        with amp:
            loss = model.compute_loss({"tokens": tokens, "latent_actions": actions})["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        done = i
        if time.perf_counter() - t_start > budget and i >= 1:
            break
    sync(world.device)
    dt = time.perf_counter() - t0

    def one_step():
        with amp:
            model.compute_loss({"tokens": tokens, "latent_actions": actions})["loss"].backward()
        opt.zero_grad(set_to_none=True)

    flops, _ = peak.count(one_step)  # forward + backward (AdamW's elementwise update counts nothing)
    return {
        "batch_size": batch_size,
        "context": T,
        "steps": done,
        "frames_per_s": batch_size * T * done / dt,
        "flops_per_frame": flops / (batch_size * T),
    }


def batched(world: World, prompt, sizes, steps: int, budget: float, maskgit_steps) -> list[dict]:
    rows, t_start = [], time.perf_counter()
    for n in sizes:
        if time.perf_counter() - t_start > budget:
            log(f"  batch {n}: skipped (budget of {budget:.0f}s spent)")
            break
        try:
            env = GenieVectorEnv(
                num_envs=n, world=world, prompt=prompt, maskgit_steps=maskgit_steps, max_episode_steps=None
            )
            env.reset(seed=0)
            actions = torch.randint(0, world.num_actions, (steps + 1, n), device=world.device)
            env.step_tensor(actions[0])  # warm-up
            sync(world.device)
            t0, done = time.perf_counter(), 0
            for a in actions[1:]:
                env.step_tensor(a)
                done += 1
                if time.perf_counter() - t_start > budget:
                    break
            sync(world.device)
            dt = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError:
            log(f"  batch {n}: out of memory")
            break
        rows.append(
            {"num_envs": n, "steps": done, "ms_per_step": 1e3 * dt / done, "env_steps_per_s": n * done / dt}
        )
        log(
            f"  batch {n:5d}: {n * done / dt:10.1f} env-steps/s ({1e3 * dt / done:.1f} ms/step, {done} steps)"
        )
    return rows


def ppo_phase(
    world: World, prompt, num_envs: int, maskgit_steps, updates: int = 2, num_steps: int = 8
) -> dict:
    """Env-steps/s of `updates` PPO updates (ppo.train: rollouts of num_steps, the policy's forward, the
    4 x 4 minibatch update) on a GenieVectorEnv of `num_envs` of the world; the World's own reset and
    the Agent's construction are inside the timing, as in a run."""
    env = GenieVectorEnv(num_envs=num_envs, world=world, prompt=prompt, maskgit_steps=maskgit_steps)
    args = ppo.Args(total_steps=updates * num_envs * num_steps, num_envs=num_envs, num_steps=num_steps)
    sync(world.device)
    t0 = time.perf_counter()
    summary = ppo.train(env, args, progress=False)
    sync(world.device)
    dt = time.perf_counter() - t0
    return {
        "num_envs": num_envs,
        "num_steps": num_steps,
        "updates": updates,
        "steps": summary["steps"],
        "env_steps_per_s": summary["steps"] / dt,
        "seconds": dt,
    }


def utilization_rows(single, batch, train, flops_per_frame, peak_gflops, compiled: bool) -> list[dict]:
    """The fraction-of-peak rows, in table order; each source row also gets its gflops and
    fraction_of_peak fields."""
    rows = []
    for r in single:
        rows.append(peak.utilization(_label(r), r["fps"], flops_per_frame, peak_gflops))
    for r in batch:
        path = f"batched {r['num_envs']}{', compiled' if compiled else ''}"
        rows.append(peak.utilization(path, r["env_steps_per_s"], flops_per_frame, peak_gflops))
    rows.append(
        peak.utilization("dynamics training", train["frames_per_s"], train["flops_per_frame"], peak_gflops)
    )
    for src, row in zip([*single, *batch, train], rows, strict=True):
        src["gflops"], src["fraction_of_peak"] = row["achieved_gflops"], row["fraction_of_peak"]
    return rows


def _label(r: dict) -> str:
    return "cache off" if not r["use_cache"] else ("cache on, compiled" if r["compiled"] else "cache on")


def add_arguments(p) -> None:
    p.add_argument("--world", default=None, help="a world folder (default: an untrained --preset world)")
    p.add_argument("--preset", default="tiny", choices=["tiny", "demo", "coinrun"])
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    p.add_argument("--maskgit-steps", type=int, default=None, help="default: the world's")
    p.add_argument("--steps", type=int, default=20, help="measured steps per configuration")
    p.add_argument("--sizes", default="1,4,16,64,256,1024", help="batch sizes (num_envs)")
    p.add_argument("--budget", type=float, default=120.0, help="seconds per phase (single stream, batched)")
    p.add_argument("--train-batch", type=int, default=8, help="windows per dynamics training step")
    p.add_argument(
        "--ppo-envs",
        type=int,
        default=16,
        help="envs of the PPO phase (2 updates of 8 steps, genie/rl/ppo.py); 0 skips it (default: 16)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time the captured step (torch.compile; CUDA graphs on a GPU) and batch with it",
    )


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("bench", help="single-stream, batched and training speed on this device")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    check_numbers(args)  # as `genie bench` does: one sentence per flag out of range
    return run(args)


def run(args) -> int:
    """Bench; --threads holds only for this call (a caller in the same process keeps its own count)."""
    before = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        return _run(args)
    finally:
        torch.set_num_threads(before)


def _run(args) -> int:
    tmp = tempfile.TemporaryDirectory()
    path = args.world if args.world else random_world(Path(tmp.name) / "world", args.preset)
    world = World.load(path, device=args.device, compile=args.compile)
    prompt = np.random.default_rng(0).integers(
        0, 256, (world.image_size, world.image_size, 3), dtype=np.uint8
    )
    name = args.world or f"random {args.preset}"
    device = str(world.device)
    steps_per_frame = args.maskgit_steps or world.maskgit_steps
    log(
        f"world: {name} ({world.image_size}px, {world.num_actions} actions, {steps_per_frame} MaskGIT steps) "
        f"on {device}, {torch.get_num_threads()} threads"
    )

    dtype = next(world.dynamics.parameters()).dtype
    n = peak.SQUARE.get(world.device.type, peak.SQUARE["cuda"])
    start_gflops = peak.matmul_gflops((1, n, n, n), dtype, world.device)  # checked against the end's

    single, counted = [], {}
    for use_cache, compiled in [(True, False), (False, False)] + ([(True, True)] if args.compile else []):
        r = single_stream(
            path,
            prompt,
            use_cache,
            args.steps,
            args.budget / 2,
            args.device,
            args.maskgit_steps,
            compiled,
            counted if not single else None,  # count once: the default (cached, eager) path
        )
        single.append(r)
        compiled_in = f", compiled in {r['compile_s']:.0f}s" if compiled else ""
        log(
            f"  single stream, {_label(r)}: {r['fps']:7.2f} frames/s "
            f"({r['ms_per_frame']:.1f} ms/frame, {r['frames']} frames"
            f"{'' if r['steady_state'] else ', history not full: budget'}{compiled_in})"
        )
    sizes = [int(s) for s in args.sizes.split(",")]
    batch = batched(world, prompt, sizes, args.steps, args.budget, args.maskgit_steps)
    train = training(world, args.train_batch, args.steps, args.budget / 2)
    log(
        f"  dynamics training: {train['frames_per_s']:.1f} frames/s (batch {train['batch_size']} x {train['context']})"
    )

    rl = ppo_phase(world, prompt, args.ppo_envs, args.maskgit_steps) if args.ppo_envs else None
    if rl:
        log(
            f"  ppo, {rl['num_envs']} envs: {rl['env_steps_per_s']:10.1f} env-steps/s "
            f"({rl['updates']} updates of {rl['num_steps']} steps, rollout + policy + update)"
        )

    machine = peak.with_start(peak.measure_peak(world.device, dtype, counted["matmul_shapes"]), start_gflops)
    util = utilization_rows(single, batch, train, counted["flops"], machine["peak_gflops"], args.compile)
    log(f"  {peak.describe_peak(machine)}")
    if machine["warning"]:
        log(f"  warning: {machine['warning']}")

    ratio = single[0]["fps"] / single[1]["fps"]
    best = max(batch, key=lambda r: r["env_steps_per_s"]) if batch else None
    result = {
        "world": name,
        "device": device,
        "threads": torch.get_num_threads(),
        "machine": platform.processor(),
        "maskgit_steps": steps_per_frame,
        "single_stream": single,
        "batched": batch,
        "training": train,
        "ppo": rl,
        "cached_over_uncached": ratio,
        "flops_per_env_step": counted["flops"],
        "peak": machine,
        "utilization": util,
    }
    tmp.cleanup()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"\n{name} on {device} ({torch.get_num_threads()} threads, {steps_per_frame} MaskGIT steps/frame)")
    print(f"{'single stream':<22}{'frames/s':>12}{'ms/frame':>12}")
    for r in single:
        print(f"{_label(r):<22}{r['fps']:>12.2f}{r['ms_per_frame']:>12.1f}")
    print(f"{'cached / uncached':<22}{ratio:>11.1f}x")
    if args.compile:
        print(f"{'compiled / cached':<22}{single[2]['fps'] / single[0]['fps']:>11.2f}x")
    if batch and args.compile:
        print("(batched rows: the compiled step)")
    print(f"{'num_envs':<22}{'env-steps/s':>12}{'ms/step':>12}")
    for r in batch:
        print(f"{r['num_envs']:<22}{r['env_steps_per_s']:>12.1f}{r['ms_per_step']:>12.1f}")
    print(f"{'dynamics training':<22}{train['frames_per_s']:>12.1f} frames/s")
    if rl:
        print(f"{'ppo, ' + str(rl['num_envs']) + ' envs':<22}{rl['env_steps_per_s']:>12.1f} env-steps/s")
    print()
    print(peak.format_table(util, machine))
    if machine["warning"]:
        print(f"warning: {machine['warning']}")
    compiled = f", {single[2]['fps']:.1f} compiled" if args.compile else ""
    print(
        f"summary: {name}: {single[0]['fps']:.1f} frames/s cached, {single[1]['fps']:.1f} uncached "
        f"({ratio:.1f}x){compiled}; best batch {best['num_envs'] if best else '-'}: "
        f"{best['env_steps_per_s'] if best else 0:.0f} env-steps/s; training {train['frames_per_s']:.0f} frames/s; "
        f"{'ppo ' + format(rl['env_steps_per_s'], '.0f') + ' env-steps/s; ' if rl else ''}"
        f"default path at {100 * util[0]['fraction_of_peak']:.1f}% of peak"
        f"{' (machine busy: rerun)' if machine['warning'] else ''}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

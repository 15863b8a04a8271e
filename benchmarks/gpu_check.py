"""The one-shot GPU check (issue #15), for the first time a GPU is at hand; < 8 minutes on one H200.

    benchmarks/gpu_check.sh --out DIR              # on a CUDA machine: appends to docs/PERFORMANCE.md too
    benchmarks/gpu_check.sh --dry-run --out DIR    # on a CPU: tiny sizes, every code path, < 60 s

Runs, each part in its own process with its own time box (a hang costs that box, not the run), cheapest
correctness first and the slowest compile late, all under one deadline (--deadline, default 460 s):

1. parity: the Triton kernels against their references on the GPU (benchmarks/gpu_parity.py);
2. capture: the compiled (CUDA-graph) World step against the eager one (benchmarks/gpu_parts.py);
3. e2e: single stream at 25 MaskGIT steps (CoinRun preset), batched env-steps/s at 256 and 1024 worlds,
   training, each with counted FLOPs, fraction of the measured bf16 matmul peak, and MFU;
4. e2e_compiled: the single stream and batches with the captured step;
5. kernels: benchmarks/kernels.py's per-kernel table (eager, SDPA, torch.compile, Triton);
6. pytest: the test suite on this machine (`-m "not slow"`; World and env tests that do not pin a
   device pick CUDA; modules whose imports the image lacks, gymnasium say, are reported as errors).

Writes DIR/gpu_check.md (the tables under a heading naming the device and the date), each part's JSON
and logs; on a GPU (not --dry-run) the same markdown is appended to docs/PERFORMANCE.md (--no-docs: not).
A part stopped at its box keeps the rows it wrote. The dry run sets one CPU thread, TRITON_INTERPRET=1
for the Triton parts and dynamo's `eager` backend for the compiled step; it checks that the code runs,
and its numbers say nothing about a GPU. tests/test_gpu_check.py runs it in CI.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_report import markdown

ROOT = Path(__file__).resolve().parent.parent
PARTS = ["parity", "capture", "e2e", "e2e_compiled", "kernels", "pytest"]
BOX_GPU = {"parity": 60, "capture": 90, "e2e": 75, "e2e_compiled": 120, "kernels": 75, "pytest": 120}
BOX_DRY = {"parity": 40, "capture": 60, "e2e": 40, "e2e_compiled": 60, "kernels": 40, "pytest": 60}
RESERVE_S = 10  # kept back from the deadline for writing the tables


def command(part: str, out: Path, dry: bool) -> list[str]:
    py = sys.executable
    if part in ("parity", "capture", "e2e", "e2e_compiled"):
        cmd = [py, str(ROOT / "benchmarks" / "gpu_parts.py"), part, "--out", str(out / f"{part}.json")]
        return cmd + (["--dry-run"] if dry else [])
    if part == "kernels":
        sizes = ["--quick", "--batch", "1", "--no-compile"] if dry else ["--batch", "1", "16", "256"]
        return [py, str(ROOT / "benchmarks" / "kernels.py"), *sizes, "--min-run", "0.1", "--no-end-to-end"]
    if dry:  # the runner and the parsing of its output; the suite itself runs in CI
        return [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_config.py"]
    workers = ["-n", "8"] if importlib.util.find_spec("xdist") else []
    args = ["-q", "-p", "no:cacheprovider", "-m", "not slow", "--continue-on-collection-errors", *workers]
    return [py, "-m", "pytest", *args]


def child_env(part: str, dry: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GENIE_KERNELS", "TRITON_INTERPRET")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    if dry:
        env["OMP_NUM_THREADS"] = "1"  # a shared CPU: more threads than free cores crawl
        if part in ("parity", "capture"):
            env["TRITON_INTERPRET"] = "1"  # read when triton is imported: set before Python starts
    return env


def run_part(part: str, out: Path, dry: bool, box: float) -> dict:
    """Run one part in its own process group for at most `box` seconds -> its status."""
    log = out / ("parts.log" if part not in ("kernels", "pytest") else f"{part}.log")
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n===== {part} (box {box:.0f} s) =====\n")
        f.flush()
        proc = subprocess.Popen(
            command(part, out, dry),
            cwd=ROOT,
            env=child_env(part, dry),
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its children (pytest's workers, compile workers) go with it
        )
        try:
            rc, timed_out = proc.wait(timeout=box), False
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                    rc = proc.wait(timeout=grace)
                    break
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    rc = None
    for tmp in out.glob("*.tmp"):
        tmp.unlink()
    lines = log.read_text(errors="replace").splitlines()
    tail = next((ln for ln in reversed(lines) if ln.strip() and not ln.startswith("=====")), "")
    return {
        "part": part,
        "rc": rc,
        "timed_out": timed_out,
        "seconds": time.perf_counter() - t0,
        "last_line": tail,
    }


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def parse_pytest(text: str) -> dict:
    """Counts from pytest -q output: its summary line, or (stopped early) its progress characters."""
    counts = {}
    summary = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|errors?)\b.* in [\d.]+s", ln)]
    if summary:
        for n, what in re.findall(
            r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)", summary[-1]
        ):
            counts["error" if what.startswith("error") else what] = int(n)
        return {"finished": True, **counts}
    progress = "".join(
        ln.split("[")[0].strip()
        for ln in text.splitlines()
        if re.fullmatch(r"[.FEsxX]+\s*(\[\s*\d+%\])?", ln)
    )
    names = {".": "passed", "F": "failed", "E": "error", "s": "skipped", "x": "xfailed", "X": "xpassed"}
    for ch in progress:
        counts[names[ch]] = counts.get(names[ch], 0) + 1
    return {"finished": False, **counts}


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head + ("+changes" if dirty else "")) or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, every code path (CI)")
    p.add_argument(
        "--out", default=None, help="folder for the tables, JSON and logs (default: a new temp one)"
    )
    p.add_argument(
        "--deadline", type=float, default=None, help="seconds for all parts (default 460; dry 240)"
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--no-docs", action="store_true", help="on a GPU, do not append to docs/PERFORMANCE.md")
    args = p.parse_args(argv)
    import torch  # only to ask whether there is a GPU (no CUDA context is made here)

    cuda = torch.cuda.is_available()
    if not args.dry_run and not cuda:
        print("gpu_check: no CUDA device here; run it on a GPU machine, or pass --dry-run.", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="genie_gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    parts = [x for x in args.parts.split(",") if x]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"gpu_check: unknown parts {unknown}; choose from {PARTS}.", file=sys.stderr)
        return 2
    for old in [*(f"{x}.json" for x in PARTS), "kernels.log", "pytest.log", "parts.log", "gpu_check.md"]:
        (out / old).unlink(missing_ok=True)  # a reused folder must not lend an earlier run's rows
    boxes = BOX_DRY if args.dry_run else BOX_GPU
    deadline = args.deadline or (240.0 if args.dry_run else 460.0)
    t_start, statuses = time.perf_counter(), {}
    for part in [x for x in PARTS if x in parts]:
        left = deadline - (time.perf_counter() - t_start) - RESERVE_S
        if left < 10:
            statuses[part] = {"part": part, "skipped": True, "seconds": 0.0}
            print(f"gpu_check: {part}: skipped (no time left)", file=sys.stderr, flush=True)
            continue
        status = run_part(part, out, args.dry_run, min(boxes[part], left))
        statuses[part] = status
        state = "timed out" if status["timed_out"] else f"rc {status['rc']}"
        print(f"gpu_check: {part}: {state} in {status['seconds']:.1f} s", file=sys.stderr, flush=True)
    results = {part: read_json(out / f"{part}.json") for part in PARTS}
    logs = {
        part: (out / f"{part}.log").read_text(errors="replace")
        for part in ("kernels", "pytest")
        if (out / f"{part}.log").exists()
    }
    env = next(
        (r["env"] for r in results.values() if r and r.get("env")),
        {"name": "unknown", "torch": torch.__version__},
    )
    info = {
        "date": datetime.date.today().isoformat(),
        "dry_run": args.dry_run,
        "commit": git_commit(),
        "env": env,
        "seconds": time.perf_counter() - t_start,
        "deadline": deadline,
        "pytest": parse_pytest(logs.get("pytest", "")) if "pytest" in statuses else None,
    }
    text = markdown(info, statuses, results, logs.get("kernels", ""))
    (out / "gpu_check.md").write_text(text)
    if cuda and not args.dry_run and not args.no_docs:
        with open(ROOT / "docs" / "PERFORMANCE.md", "a") as f:
            f.write("\n" + text)
    print(text)
    print(f"gpu_check: tables in {out / 'gpu_check.md'} ({info['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""benchmarks/gpu_check.sh --dry-run: the one-shot GPU check runs every part on the CPU (tiny sizes,
Triton's interpreter), and the markdown it writes has the heading, the rows and the numbers a GPU run
will fill in; it leaves docs/PERFORMANCE.md alone."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def table(md: str, header_start: str) -> list[list[str]]:
    """The body rows (cells) of the first markdown table whose header starts with `header_start`."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


def number(cell: str) -> float:
    return float(cell.rstrip("%"))


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_table(tmp_path):
    docs = (REPO / "docs" / "PERFORMANCE.md").read_text()
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "gpu_check.md").read_text()
    assert re.search(r"^## GPU check: .+, \d{4}-\d{2}-\d{2} \(dry run\)$", md, re.M), md[:300]
    after = (REPO / "docs" / "PERFORMANCE.md").read_text()
    assert after.count("## GPU check:") == docs.count("## GPU check:")  # a dry run never writes there

    # --- every check ran and passed, none timed out ---
    checks = {r[0]: r[1] for r in table(md, "| check |")}
    assert list(checks) == [
        "Triton parity",
        "compiled step vs eager",
        "end to end, eager",
        "end to end, compiled",
        "kernel table",
        "test suite",
    ]
    assert set(checks.values()) == {"pass"}, checks
    for part in ("parity", "capture", "e2e", "e2e_compiled"):
        assert json.loads((tmp_path / f"{part}.json").read_text())["done"], part

    # --- end to end: the rows of the dry sizes, each number measured and consistent with the others ---
    rows = table(md, "| end to end |")
    assert [(r[0], r[1].split(",")[0], r[2]) for r in rows] == [
        ("single stream", "B=1", "eager"),
        ("batched", "B=2", "eager"),
        ("batched", "B=3", "eager"),
        ("training", "B=2 clips x 8", "eager"),
        ("single stream", "B=1", "compiled"),
    ]
    for r in rows:
        fps, ms, gflop, tflops, frac = (number(c) for c in r[3:8])
        assert min(fps, ms, gflop, tflops, frac) > 0, r
        assert math.isclose(tflops, fps * gflop / 1e3, rel_tol=0.02), r  # 3 significant figures each
        if r[0] != "training":  # frames/s = B worlds / step time
            B = int(r[1].split(",")[0][2:])
            assert math.isclose(fps * ms, 1e3 * B, rel_tol=0.02), r
    peak = table(md, "| matmul (b, M, K, N) |")
    assert peak[0][0].startswith("square") and number(peak[0][2]) > 0
    assert all(r[0].startswith("model") and number(r[2]) > 0 for r in peak[1:]) and len(peak) >= 2

    # --- kernel table (benchmarks/kernels.py), parity and capture rows ---
    kernels = table(md, "| kernel | shape | candidate |")
    assert {r[0] for r in kernels} == {
        "attention",
        "rms_norm",
        "vq_nearest",
        "maskgit_update",
        "token_cross_entropy",
    }
    assert all(number(r[3]) > 0 for r in kernels)
    parity = table(md, "| kernel | shape | dtype |")
    assert len(parity) >= 9 and all(r[3] == "pass" for r in parity), parity
    assert {r[0] for r in parity} == {r[0] for r in kernels}
    capture = {r[0]: r for r in table(md, "| kernels | dtype |")}
    ref = capture["reference"]
    assert int(ref[2]) >= 2 and ref[3] == ref[2] and ref[6] == "1" and ref[8].startswith("same tokens")
    assert capture["triton"][8] == "skipped in the dry run"


def test_pytest_counts_and_part_states_are_read_from_what_a_run_leaves():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_check
    import gpu_report

    finished = (
        "....F.s [ 50%]\n..E [100%]\nFAILED tests/a.py::t\n4 failed, 120 passed, 2 skipped, 1 error in 81.20s"
    )
    assert gpu_check.parse_pytest(finished) == {
        "finished": True,
        "failed": 4,
        "passed": 120,
        "skipped": 2,
        "error": 1,
    }
    stopped = "....F.s [ 50%]\n..E"  # killed at its box: only the progress characters remain
    assert gpu_check.parse_pytest(stopped) == {
        "finished": False,
        "passed": 7,
        "failed": 1,
        "skipped": 1,
        "error": 1,
    }
    timeout = {"timed_out": True, "seconds": 120.0, "rc": None, "last_line": ""}
    assert gpu_report.state(timeout, None, False) == "timeout (120 s box)"
    crashed = {"timed_out": False, "seconds": 3.0, "rc": 1, "last_line": "RuntimeError: CUDA error"}
    assert gpu_report.state(crashed, {"done": False}, False).startswith("error (exit 1): RuntimeError")
    assert gpu_report.state({"skipped": True}, None, False) == "skipped (no time left)"
    assert (
        gpu_report.num(1234.5) == "1234"
        and gpu_report.num(0.012345) == "0.0123"
        and gpu_report.num(None) == "-"
    )

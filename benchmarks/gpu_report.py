"""The markdown of benchmarks/gpu_check.py: a heading naming the device and the date, a table of the
checks, then the measured matmul peak, the end-to-end rows, the kernel table, and the parity and
capture details. Pure formatting of the parts' JSON (no torch), so tests can read what it writes."""

from __future__ import annotations


def num(x) -> str:
    """A measured number, 3 significant figures (whole numbers from 1000 up); '-' for none."""
    if x is None:
        return "-"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def state(status: dict | None, result: dict | None, failed: bool) -> str:
    """pass / fail / timeout / error / skipped for one part."""
    if status is None:
        return "not run"
    if status.get("skipped"):
        return "skipped (no time left)"
    if status["timed_out"]:
        return f"timeout ({status['seconds']:.0f} s box)"
    if status["rc"] != 0 or (result is not None and not result.get("done")):
        return f"error (exit {status['rc']}): {status['last_line'][:120]}"
    return "fail" if failed else "pass"


def rows_of(result: dict | None) -> list:
    return result["rows"] if result else []


def checks_table(info, statuses, results, kernel_rows: list) -> list[str]:
    lines = ["| check | result | detail |", "|---|---|---|"]
    par = rows_of(results.get("parity"))
    bad = [r for r in par if not r["ok"]]
    dtypes = sorted({r["dtype"] for r in par})
    detail = f"{len(par) - len(bad)} of {len(par)} cases within tolerance ({', '.join(dtypes) or '-'})"
    if bad:
        detail += "; failing: " + ", ".join(f"{r['kernel']} {r['shape']} {r['dtype']}" for r in bad[:4])
    lines.append(
        f"| Triton parity | {state(statuses.get('parity'), results.get('parity'), bool(bad))} | {detail} |"
    )
    cap = rows_of(results.get("capture"))
    bad = [r for r in cap if r["ok"] is False]
    detail = "; ".join(f"{r['kernels']} {r['dtype']}: {r['result']}" for r in cap) or "-"
    lines.append(
        f"| compiled step vs eager | {state(statuses.get('capture'), results.get('capture'), bool(bad))} | {detail} |"
    )
    for part, name in (("e2e", "end to end, eager"), ("e2e_compiled", "end to end, compiled")):
        rows = rows_of(results.get(part))
        bad = [r for r in rows if not r["ok"]]
        detail = f"{len(rows) - len(bad)} of {len(rows)} rows measured" + (
            "; " + "; ".join(f"{r['what']} {r['shape']}: {r['error'][:80]}" for r in bad) if bad else ""
        )
        lines.append(f"| {name} | {state(statuses.get(part), results.get(part), bool(bad))} | {detail} |")
    lines.append(
        f"| kernel table | {state(statuses.get('kernels'), None, False)} | {len(kernel_rows)} rows |"
    )
    tests = info.get("pytest") or {}
    failed = bool(tests.get("failed") or tests.get("error"))
    counts = ", ".join(f"{tests[k]} {k}" for k in ("passed", "failed", "error", "skipped") if tests.get(k))
    detail = (counts or "no tests counted") + ("" if tests.get("finished") else " (stopped before the end)")
    lines.append(
        f"| test suite | {state(statuses.get('pytest'), None, failed)} | {detail if tests else '-'} |"
    )
    return lines


def peak_table(peak: dict) -> list[str]:
    lines = [
        f"Measured matmul rate ({peak['dtype']}, {peak['device']}, {peak['threads']} threads): the peak is "
        "the best row.",
        "",
        "| matmul (b, M, K, N) | share of the step's matmul FLOPs | TFLOP/s |",
        "|---|---:|---:|",
        f"| square {tuple(peak['square']['shape'])} | - | {num(peak['square']['gflops'] / 1e3)} |",
    ]
    for r in peak["model_shapes"]:
        lines.append(f"| model {tuple(r['shape'])} | {pct(r['flop_share'])} | {num(r['gflops'] / 1e3)} |")
    return lines


def e2e_table(results: dict) -> list[str]:
    lines = [
        "| end to end | shape | path | frames/s | ms/step | GFLOP/frame | TFLOP/s | of measured peak | MFU (nominal) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for part in ("e2e", "e2e_compiled"):
        for r in rows_of(results.get(part)):
            if not r["ok"]:
                lines.append(
                    f"| {r['what']} | {r['shape']} | {r['path']}: {r['error'][:80]} | - | - | - | - | - | - |"
                )
                continue
            lines.append(
                f"| {r['what']} | {r['shape']} | {r['path']} | {num(r['frames_per_s'])} | {num(r['ms'])} | "
                f"{num(r['gflop_per_frame'])} | {num(r['tflops'])} | {pct(r['fraction_of_peak'])} | "
                f"{pct(r['mfu_nominal'])} |"
            )
    return lines


def parity_table(rows: list) -> list[str]:
    lines = ["| kernel | shape | dtype | result | detail |", "|---|---|---|---|---|"]
    skip = {"kernel", "shape", "dtype", "ok", "triton_ran", "seconds"}
    for r in rows:
        detail = ", ".join(
            f"{k} {num(v) if isinstance(v, float) else v}" for k, v in r.items() if k not in skip
        )
        result = "pass" if r["ok"] else ("fail" if r["triton_ran"] else "fail (Triton did not run)")
        lines.append(f"| {r['kernel']} | {r['shape']} | {r['dtype']} | {result} | {detail} |")
    return lines


def capture_table(rows: list) -> list[str]:
    lines = [
        "| kernels | dtype | steps | same-token steps | tokens equal | max pixel diff | graphs | CUDA-graph skips | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "tokens_equal" not in r:
            why = f"{r['result']}: {r['error']}" if r.get("error") else r["result"]
            lines.append(f"| {r['kernels']} | {r['dtype']} | - | - | - | - | - | - | {why} |")
            continue
        judged = "" if r["judged"] else " (reported, not judged)"
        lines.append(
            f"| {r['kernels']} | {r['dtype']} | {r['steps']} | {r['same_token_steps']} | {pct(r['tokens_equal'])} | "
            f"{r['max_pixel_diff']} | {r['graphs']} | {r['cudagraph_skips']} | {r['result']}{judged} |"
        )
    return lines


def markdown(info: dict, statuses: dict, results: dict, kernels_log: str) -> str:
    env = info["env"]
    kind = "dry run on CPU: tiny sizes, code paths only" if info["dry_run"] else env.get("device", "")
    kernel_lines = [ln for ln in kernels_log.splitlines() if ln.startswith("|")]
    kernel_rows = [ln for ln in kernel_lines[2:] if not ln.startswith("|---")]
    e2e = results.get("e2e") or results.get("e2e_compiled") or {}
    sizes = e2e.get("sizes", {})
    out = [
        f"## GPU check: {env.get('name', 'unknown')}, {info['date']}"
        + (" (dry run)" if info["dry_run"] else ""),
        "",
        f"`benchmarks/gpu_check.sh{' --dry-run' if info['dry_run'] else ''}` ({kind}) at commit {info['commit']}, "
        f"torch {env.get('torch')}, triton {env.get('triton')}: {info['seconds']:.0f} s of its {info['deadline']:.0f} s. "
        "Untrained worlds (speed only). FLOPs counted with torch.utils.flop_counter (matmuls and attention), "
        "once per case on the eager step; the peak is this machine's best measured matmul (below)"
        + (
            f"; MFU is against the nominal dense bf16 figure ({num(e2e['nominal_tflops'])} TFLOP/s)."
            if e2e.get("nominal_tflops")
            else "."
        ),
        "",
        *checks_table(info, statuses, results, kernel_rows),
    ]
    if e2e.get("peak"):
        out += ["", "### Matmul peak", "", *peak_table(e2e["peak"])]
    out += [
        "",
        "### End to end",
        "",
        f"Preset {sizes.get('preset', '-')}; frames/s counts env-steps for batched rows and clip frames for "
        "training; single stream after a full history.",
        "",
        *e2e_table(results),
        "",
        "### Kernels (benchmarks/kernels.py)",
        "",
        *(kernel_lines or ["(no kernel rows: see kernels.log)"]),
        "",
        "### Triton parity",
        "",
        *parity_table(rows_of(results.get("parity"))),
        "",
        "### Compiled step vs eager",
        "",
        *capture_table(rows_of(results.get("capture"))),
        "",
    ]
    return "\n".join(out)

"""`genie bench`'s fraction of peak (genie/cli/peak.py): what is counted, what is measured, and that the
JSON's ratios are the ratios of its own numbers."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils import flop_counter

from genie.cli import bench, peak


def test_linear_and_bmm_flops_and_shapes_are_counted():
    lin = torch.nn.Linear(7, 3)
    x = torch.randn(5, 7)
    a, b = torch.randn(4, 2, 6), torch.randn(4, 6, 9)
    flops, shapes = peak.count(lambda: (lin(x), torch.bmm(a, b)))
    assert shapes == {(1, 5, 7, 3): 2 * 5 * 7 * 3, (4, 2, 6, 9): 2 * 4 * 2 * 6 * 9}
    assert flops == sum(shapes.values())


def test_cpu_fused_attention_is_counted_forward_and_backward():
    q, k, v = (torch.randn(1, 2, L, 8, requires_grad=True) for L in (4, 6, 6))
    forward = flop_counter.sdpa_flop_count(q.shape, k.shape, v.shape)
    flops, _ = peak.count(lambda: F.scaled_dot_product_attention(q, k, v))
    assert flops == forward > 0  # the CPU's fused op, unknown to FlopCounterMode itself
    flops, _ = peak.count(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert flops > 2 * forward  # the backward pass counts twice the forward's matmuls


def test_measured_peak_is_the_best_of_its_rows():
    shapes = peak.count(lambda: torch.nn.Linear(32, 48)(torch.randn(16, 32)))[1]
    machine = peak.measure_peak("cpu", torch.float32, shapes, square=64)
    rates = [machine["square"]["gflops"]] + [r["gflops"] for r in machine["model_shapes"]]
    assert all(math.isfinite(r) and r > 0 for r in rates)
    assert machine["peak_gflops"] == max(rates)
    assert [r["shape"] for r in machine["model_shapes"]] == [[1, 16, 32, 48]]
    assert machine["model_shapes"][0]["flop_share"] == 1.0
    assert machine["model_shapes_gflops"] == pytest.approx(machine["model_shapes"][0]["gflops"], rel=1e-9)
    assert machine["square"]["shape"] == [1, 64, 64, 64] and machine["dtype"] == "float32"


def test_a_peak_that_moved_during_the_run_warns_and_keeps_the_faster_rate():
    end = {"square": {"shape": [1, 512, 512, 512], "gflops": 20.0}, "peak_gflops": 25.0}
    busy = peak.with_start(end, start_gflops=170.0)
    assert busy["peak_gflops"] == 170.0 and busy["square_at_start_gflops"] == 170.0
    assert "busy" in busy["warning"] and "170.0 to 20.0" in busy["warning"]
    steady = peak.with_start(end, start_gflops=21.0)
    assert steady["warning"] is None and steady["peak_gflops"] == 25.0


def test_utilization_row_and_table():
    row = peak.utilization("cache on", frames_per_s=20.0, flops_per_frame=2.5e9, peak_gflops=200.0)
    assert row["achieved_gflops"] == 50.0 and row["fraction_of_peak"] == 0.25
    machine = {
        "device": "cpu",
        "dtype": "float32",
        "threads": 2,
        "square": {"shape": [1, 512, 512, 512], "gflops": 200.0},
        "model_shapes": [],
        "model_shapes_gflops": None,
        "peak_gflops": 200.0,
    }
    table = peak.format_table([row], machine)
    assert "float32 matmul peak 200.0 GFLOP/s" in table
    assert table.splitlines()[-1].split() == ["cache", "on", "20.00", "2.500", "50.0", "25.0%"]


def test_bench_json_reports_the_fraction_of_peak(capsys):
    args = ["--preset", "tiny", "--steps", "1", "--sizes", "1", "--budget", "20", "--threads", "1"]
    assert bench.main([*args, "--train-batch", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    flops, machine = result["flops_per_env_step"], result["peak"]
    assert flops > 0 and machine["peak_gflops"] > 0 and machine["dtype"] == "float32"
    assert machine["model_shapes"] and machine["square"]["gflops"] > 0
    paths = [r["path"] for r in result["utilization"]]
    assert paths == ["cache on", "cache off", "batched 1", "dynamics training"]
    sources = [*result["single_stream"], *result["batched"], result["training"]]
    for row, src in zip(result["utilization"], sources, strict=True):
        fps = src.get("fps", src.get("env_steps_per_s", src.get("frames_per_s")))
        per_frame = src.get("flops_per_frame", flops)  # training counts its own step
        assert math.isclose(row["frames_per_s"], fps, rel_tol=1e-12)
        assert math.isclose(row["achieved_gflops"], fps * per_frame / 1e9, rel_tol=1e-9)
        assert math.isclose(row["fraction_of_peak"], row["achieved_gflops"] / machine["peak_gflops"])
        assert math.isclose(src["fraction_of_peak"], row["fraction_of_peak"]) and src["gflops"] > 0
    assert result["training"]["flops_per_frame"] > 0


def test_bench_threads_hold_for_the_call_only():
    before = torch.get_num_threads()
    args = ["--preset", "tiny", "--steps", "1", "--sizes", "1", "--budget", "5", "--threads", "1"]
    assert bench.main([*args, "--train-batch", "1"]) == 0
    assert torch.get_num_threads() == before  # later work in the same process keeps its threads

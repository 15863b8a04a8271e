"""Kernel parity: every Triton kernel against its PyTorch reference, on CPU through Triton's interpreter.

Why a worker process: TRITON_INTERPRET must be set before `triton` is first imported. Decorating our
kernels under the flag is not enough: triton.language's own helpers (tl.zeros, tl.max, ...) are
@triton.jit functions decorated when triton is imported, and an interpreted kernel that calls a compiled
helper fails ("Cannot call @triton.jit'd outside of the scope of a kernel"; seen with triton 3.9 when
another module imported triton first). In a full `pytest tests/` run any earlier module may import
triton (torch.compile does), and setting the flag for the whole process would turn real GPU kernels of
other tests into interpreted ones. So the Triton checks of this file run in a fresh
`python -m pytest tests/test_kernels.py` with TRITON_INTERPRET=1 in its environment from the start
(`test_triton_kernels_in_interpreter_worker`); in the parent process they skip, saying so. The
reference, dispatch and error tests run in both. `test_kernels_really_ran_in_the_interpreter` proves,
in the worker, that the kernels and triton's helpers are interpreted and that the Triton path ran.

Dimension letters: B batch, N tokens, H heads, K head dim, V vocabulary.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genie.core import kernels
from genie.core.errors import GenieValueError
from genie.core.kernels import reference as ref

ATOL, RTOL = 1e-5, 1e-4
WORKER_FLAG = "GENIE_KERNELS_TEST_WORKER"
IN_WORKER = os.environ.get(WORKER_FLAG) == "1"
REPO = Path(__file__).resolve().parents[1]
if IN_WORKER:
    # Import triton now, under the flag: a later test unsets TRITON_INTERPRET for a moment, and whatever
    # imports triton then (torch._dynamo does, behind the custom ops) would decorate it compiled.
    import triton  # noqa: F401


def require_triton_worker(monkeypatch, backend: str = "triton") -> None:
    if backend == "triton":
        if not IN_WORKER:
            pytest.skip(
                "Triton checks run in the interpreter worker (test_triton_kernels_in_interpreter_worker)"
            )
        pytest.importorskip("triton")
    monkeypatch.setenv("GENIE_KERNELS", backend)


@pytest.fixture
def use_triton(monkeypatch):
    require_triton_worker(monkeypatch)


def test_triton_kernels_in_interpreter_worker():
    if IN_WORKER:
        pytest.skip("this is the worker")
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "GENIE_KERNELS"}
    env.update(
        {
            "TRITON_INTERPRET": "1",
            WORKER_FLAG: "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        }
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(Path(__file__).resolve()),
            "-o",
            "addopts=",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::RuntimeWarning",
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"interpreter worker failed:\n{tail}"
    summary = re.search(r"(\d+) passed(?:, (\d+) skipped)?", tail)
    assert summary, tail
    # only the worker test itself may skip there: every Triton check really ran
    assert int(summary.group(1)) >= 30 and int(summary.group(2) or 0) == 1, tail


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int, scale: float = 1.0):
    return torch.randn(*shape, generator=gen(seed)) * scale


# --- Dispatch ---


def test_default_is_reference_and_cuda_table_awaits_measurement(monkeypatch):
    monkeypatch.delenv("GENIE_KERNELS", raising=False)
    public = [
        "attention",
        "rms_norm",
        "vq_nearest",
        "maskgit_update",
        "token_cross_entropy",
    ]
    assert sorted(kernels.DEFAULT_ON_CUDA) == sorted(public)
    for name in public:
        assert kernels.backend(name, "cpu") == "reference"
        assert kernels.backend(name, "cuda") == "reference"  # nothing measured on a GPU yet
    monkeypatch.setenv("GENIE_KERNELS", "fast")
    with pytest.raises(GenieValueError, match="GENIE_KERNELS"):
        kernels.backend("attention", "cpu")


def test_import_is_cheap_and_does_not_import_triton():
    code = "import sys, genie.core.kernels; assert 'triton' not in sys.modules, 'triton imported eagerly'"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__))
    )


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GENIE_KERNELS", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    kernels.reset_triton()
    try:
        with pytest.raises(kernels.KernelUnavailableError, match="TRITON_INTERPRET=1|triton package"):
            kernels.rms_norm(torch.randn(2, 8), torch.ones(8))
    finally:
        kernels.reset_triton()


def test_kernels_really_ran_in_the_interpreter(use_triton):
    before = kernels.triton_launches().get("rms_norm", 0)
    x, w = randn(3, 20, seed=0), randn(20, seed=1)
    torch.testing.assert_close(kernels.rms_norm(x, w), ref.rms_norm(x, w), atol=ATOL, rtol=RTOL)
    assert kernels.triton_launches()["rms_norm"] == before + 1  # the Triton path ran, not the reference
    norm_module = sys.modules["genie.core.kernels._triton_norm"]
    assert type(norm_module._rms_norm_fwd).__name__ == "InterpretedFunction"
    assert sys.modules["genie.core.kernels._triton_common"].INTERPRETED
    import triton.language as tl

    # triton itself was imported under the flag: its own helpers are interpreted too
    assert type(tl.standard.zeros).__name__ == "InterpretedFunction"


def test_forward_only_kernels_fall_back_under_autograd(use_triton):
    x = randn(4, 16, seed=2).requires_grad_()
    w = torch.ones(16, requires_grad=True)
    before = kernels.triton_launches().get("rms_norm", 0)
    kernels.rms_norm(x, w).sum().backward()
    assert kernels.triton_launches().get("rms_norm", 0) == before  # the reference ran: grads exist
    assert x.grad is not None and w.grad is not None


# --- Attention ---


@pytest.mark.parametrize(
    "Bp,H,Lq,Lk,K,masked",
    [
        (2, 3, 19, 23, 40, False),  # ragged spatial-like
        (2, 3, 19, 23, 40, True),  # arbitrary bool mask, Lq != Lk
        (3, 2, 1, 13, 24, False),  # KV-cache decode: one query
        (2, 2, 16, 16, 64, True),  # temporal with a banded causal mask
        (1, 1, 70, 70, 16, False),  # more than one query block
    ],
)
def test_attention(use_triton, Bp, H, Lq, Lk, K, masked):
    q, k, v = randn(Bp, H, Lq, K, seed=3), randn(Bp, H, Lk, K, seed=4), randn(Bp, H, Lk, K, seed=5)
    mask = None
    if masked:
        diff = torch.arange(Lk - Lq, Lk)[:, None] - torch.arange(Lk)[None, :]
        mask = (diff >= 0) & (diff < 5) if Lq == Lk else torch.rand(Lq, Lk, generator=gen(6)) > 0.4
        mask[:, 0] |= ~mask.any(1)  # every query sees at least one key (SDPA gives NaN otherwise)
    torch.testing.assert_close(
        kernels.attention(q, k, v, mask), ref.attention(q, k, v, mask), atol=ATOL, rtol=RTOL
    )


@pytest.mark.parametrize("Lq,Lk", [(1, 8), (3, 11)])  # the ring-cache decode; a few frames at once
def test_attention_per_sequence_mask(use_triton, Lq, Lk):
    """A (B', 1, Lq, Lk) mask, as the KV cache builds from each row's valid frames (an expanded view)."""
    Bp, H, K = 6, 2, 16
    q, k, v = randn(Bp, H, Lq, K, seed=7), randn(Bp, H, Lk, K, seed=8), randn(Bp, H, Lk, K, seed=9)
    valid = torch.rand(Bp // 2, Lk, generator=gen(10)) > 0.5
    valid[:, -1] = True  # the newest frame is always visible
    mask = valid[:, None, None, None, :].expand(Bp // 2, 2, 1, Lq, Lk).reshape(Bp, 1, Lq, Lk)
    before = kernels.triton_launches().get("attention", 0)
    out = kernels.attention(q, k, v, mask)
    assert kernels.triton_launches()["attention"] == before + 1  # taken by the kernel, not the reference
    torch.testing.assert_close(out, ref.attention(q, k, v, mask), atol=ATOL, rtol=RTOL)


def test_attention_reads_strided_views(use_triton):
    # q, k, v as nn.Attention builds them: permuted views of one qkv projection, no copies
    Bp, L, H, K = 3, 17, 2, 24
    qkv = randn(Bp, L, 3, H, K, seed=7).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    assert not q.is_contiguous()
    torch.testing.assert_close(kernels.attention(q, k, v), ref.attention(q, k, v), atol=ATOL, rtol=RTOL)


# --- Norms ---


@pytest.mark.parametrize(
    "shape,permute",
    [((5, 33), None), ((2, 7, 48), None), ((2, 3, 5, 24), (0, 2, 1, 3)), ((1, 2, 2, 2, 3, 20), None)],
)
def test_rms_norm(use_triton, shape, permute):
    x = randn(*shape, seed=12)
    if permute is not None:
        x = x.permute(*permute)  # QK-norm sees permuted views
    w = randn(x.shape[-1], seed=13)
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-5), ref.rms_norm(x, w, 1e-5), atol=ATOL, rtol=RTOL)


# --- Vector quantization ---


@pytest.mark.parametrize("M,C,Kc", [(150, 20, 77), (33, 32, 130), (5, 3, 1)])
def test_vq_nearest(use_triton, M, C, Kc):
    x, codebook = randn(M, C, seed=17), randn(Kc, C, seed=18)
    assert torch.equal(kernels.vq_nearest(x, codebook), ref.vq_nearest(x, codebook))


def test_vq_nearest_ties_go_to_lowest_index(use_triton):
    # small integers: every distance is exact in fp32, so duplicated codes tie exactly
    codebook = torch.randint(-3, 4, (70, 8), generator=gen(19)).float()
    codebook[66] = codebook[2]  # duplicate in a later tile
    codebook[5] = codebook[3]  # duplicate in the same tile
    x = codebook[[2, 3, 66, 5]]
    assert kernels.vq_nearest(x, codebook).tolist() == [2, 3, 2, 3]
    assert ref.vq_nearest(x, codebook).tolist() == [2, 3, 2, 3]


# --- MaskGIT ---


def maskgit_inputs(B=3, N=37, V=45, seed=20):
    g = gen(seed)
    logits = torch.randn(B, N, V, generator=g) * 3
    tokens = torch.randint(0, V, (B, N), generator=g)
    masked = torch.rand(B, N, generator=g) < 0.6
    u = torch.rand(B, N, V, generator=g).clamp(1e-9, 1 - 1e-9)
    gumbel = -torch.log(-torch.log(u))
    keep = torch.tensor([5, 0, 100])[:B]  # 100 > masked count: clamped, never re-masks
    return logits, tokens, masked, gumbel, keep


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_maskgit_update_invariants(backend, monkeypatch):
    require_triton_worker(monkeypatch, backend)
    logits, tokens, masked, gumbel, keep = maskgit_inputs()
    new_tokens, new_masked = kernels.maskgit_update(logits, tokens, masked, gumbel, 1.0, keep)
    assert torch.equal(new_masked.sum(1), torch.minimum(keep, masked.sum(1)))
    assert not (new_masked & ~masked).any()  # nothing unmasked gets masked again
    assert torch.equal(new_tokens[~masked], tokens[~masked])  # unmasked tokens never change
    sampled = (logits / 1.0 + gumbel).argmax(-1)
    assert torch.equal(new_tokens[masked], sampled[masked])
    # final step: no noise, argmax, everything unmasked
    final_tokens, final_masked = kernels.maskgit_update(
        logits, tokens, masked, None, 2.0, torch.zeros(3, dtype=torch.long)
    )
    assert not final_masked.any()
    assert torch.equal(final_tokens[masked], logits.argmax(-1)[masked])


def test_maskgit_update_matches_reference(use_triton):
    logits, tokens, masked, gumbel, keep = maskgit_inputs(B=2, N=29, V=1100, seed=21)  # V > one block
    keep = keep[:2]
    before = kernels.triton_launches().get("maskgit_update", 0)
    for temperature, noise in ((1.0, gumbel), (2.0, gumbel), (1.0, None)):
        got = kernels.maskgit_update(logits, tokens, masked, noise, temperature, keep)
        want = ref.maskgit_update(logits, tokens, masked, noise, temperature, keep)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert kernels.triton_launches()["maskgit_update"] == before + 3
    tri = sys.modules["genie.core.kernels._triton_tokens"]
    got_tokens, got_conf = tri.maskgit_sample(logits, tokens, masked, gumbel, 1.5)
    want_tokens, want_conf = ref.maskgit_sample(logits, tokens, masked, gumbel, 1.5)
    assert torch.equal(got_tokens, want_tokens)
    torch.testing.assert_close(got_conf, want_conf, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_maskgit_ties_unmask_lower_index_first(backend, monkeypatch):
    require_triton_worker(monkeypatch, backend)
    logits = torch.zeros(1, 6, 4)  # every position: same confidence 1/4, argmax ties -> token 0
    masked = torch.tensor([[True, False, True, True, True, True]])
    new_tokens, new_masked = kernels.maskgit_update(
        logits, torch.full((1, 6), 3), masked, None, 1.0, torch.tensor([2])
    )
    assert new_masked.tolist() == [[False, False, False, False, True, True]]
    assert new_tokens.tolist() == [[0, 3, 0, 0, 0, 0]]


# --- Cross-entropy ---


@pytest.mark.parametrize(
    "M,V,dtype", [(13, 53, torch.float32), (7, 5000, torch.float32), (9, 130, torch.float16)]
)
def test_token_cross_entropy(use_triton, M, V, dtype):
    logits = (randn(M, V, seed=22, scale=3.0)).to(dtype)
    targets = torch.randint(0, V, (M,), generator=gen(23))
    targets[1] = -100
    a = logits.clone().requires_grad_()
    loss = kernels.token_cross_entropy(a, targets)
    loss.backward()
    b = logits.clone().requires_grad_()
    want = F.cross_entropy(b.float(), targets, ignore_index=-100)
    want.backward()
    assert loss.dtype == torch.float32 and a.grad.dtype == dtype
    torch.testing.assert_close(loss, want, atol=ATOL, rtol=RTOL)
    tol = {} if dtype == torch.float32 else {"atol": 1e-3, "rtol": 1e-3}
    torch.testing.assert_close(a.grad, b.grad, **tol)
    assert torch.all(a.grad[1] == 0)


def test_token_cross_entropy_all_ignored_is_nan_like_torch(use_triton):
    logits = randn(4, 10, seed=24)
    targets = torch.full((4,), -1, dtype=torch.long)
    got = kernels.token_cross_entropy(logits, targets, ignore_index=-1)
    assert torch.isnan(got) and torch.isnan(F.cross_entropy(logits, targets, ignore_index=-1))


# --- Inside a captured step ---


@torch.no_grad()
def test_captured_world_step_keeps_the_triton_kernels_in_one_graph(use_triton, tmp_path, monkeypatch):
    """The Triton paths are custom ops: torch.compile (fullgraph) traces the World step around them in
    one graph, they run inside it, and the frames equal the eager Triton step's."""
    import numpy as np
    from torch._dynamo.testing import CompileCounterWithBackend

    from genie.world import World, random_world

    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(World, "compile_backend", counter)
    path = random_world(tmp_path / "w", "tiny")
    prompt = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    frames = []
    for compiled in (False, True):
        world = World.load(path, device="cpu", compile=compiled)
        world.reset(prompt)
        g = torch.Generator().manual_seed(0)
        before = kernels.triton_launches()
        frames.append(torch.stack([world.step([t % 4], maskgit_steps=2, generator=g) for t in range(2)]))
        after = kernels.triton_launches()
        for name in ("attention", "rms_norm", "maskgit_update"):
            assert after.get(name, 0) > before.get(name, 0), (compiled, name)
    assert torch.equal(frames[0], frames[1])
    assert counter.frame_count == 1

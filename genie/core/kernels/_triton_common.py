"""Shared helpers of the Triton kernel modules. Imported only on the first Triton call (never at
`import genie.core.kernels`), which is what lets tests choose Triton's interpreter: `@triton.jit` reads
TRITON_INTERPRET when it decorates a kernel, i.e. when these modules are imported, not when `triton`
itself is imported (checked in triton 3.x `runtime/jit.py`)."""

from __future__ import annotations

import collections

import torch
import triton

# Launch counts per public kernel: lets tests prove the Triton path (not the reference) ran.
LAUNCHES: collections.Counter = collections.Counter()

# Whether this process decorated the kernels for Triton's CPU interpreter.
INTERPRETED: bool = bool(triton.knobs.runtime.interpret)


def next_pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(max(int(n), 1)))


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision that matches what torch does for the reference matmul: tf32 only when
    torch itself allows it for fp32 matmuls on CUDA (the interpreter always computes in ieee fp32)."""
    if dtype == torch.float32 and not INTERPRETED and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"

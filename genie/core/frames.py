"""The one pixel policy: how a frame enters genie and how it leaves.

Letters: B batch, T frames, H W pixels.

    uint8 [0, 255]  <->  float [0, 1]      `to_float`, `to_uint8` (round to nearest, clamp first)
    any image       ->   uint8 (size, size, 3) RGB      `resize_frame`

`resize_frame` takes any uint8 image (grayscale, RGB, RGBA, or a PIL image in any mode): it becomes RGB
(alpha dropped), is fitted to a square, and is resized to size x size with PIL bilinear filtering
(antialiased when shrinking). Fits: "crop" keeps the centred square; "pad" letterboxes with black
(keeps the whole picture, e.g. Atari scores and paddles at the top and bottom of a 210x160 screen);
"stretch" resizes without keeping the aspect ratio; "box:LEFT,TOP,RIGHT,BOTTOM" cuts that window (source pixels,
right and bottom exclusive) out of the frame and stretches it, so a small sprite that matters (Freeway's
chicken in its lane) keeps more of the model's pixels; an image that is already size x size is taken as
fitted (a world's prompt, a dataset frame). Training data, prompts and the real game seen by a
policy all go through it, so a model always sees frames the way it was trained on them.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from genie.core.errors import GenieTypeError, GenieValueError

FITS = ("crop", "pad", "stretch")
FIT_HELP = (
    "crop, pad, stretch, or box:LEFT,TOP,RIGHT,BOTTOM (a window of the source frame, in pixels, stretched)"
)


def parse_box(fit: str) -> tuple[int, int, int, int] | None:
    """The window of a "box:L,T,R,B" fit, or None for the named fits. One GenieValueError for anything else."""
    if isinstance(fit, str) and fit in FITS:
        return None
    if isinstance(fit, str) and fit.startswith("box:"):
        parts = fit[4:].split(",")
        try:
            box = tuple(int(p) for p in parts)
        except ValueError:
            box = ()
        if len(box) == 4 and 0 <= box[0] < box[2] and 0 <= box[1] < box[3]:
            return box  # type: ignore[return-value]
    raise GenieValueError(
        f"Unknown fit {fit!r}: use {FIT_HELP}, with 0 <= LEFT < RIGHT and 0 <= TOP < BOTTOM (e.g. box:20,0,84,210)."
    )


def check_fit(fit: str) -> str:
    """`fit` itself when it is a valid fit; otherwise the one error of `parse_box`."""
    parse_box(fit)
    return fit


def to_float(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 frames -> `dtype` in [0, 1]; float frames are cast to `dtype` unchanged."""
    return frames.to(dtype) / 255.0 if frames.dtype == torch.uint8 else frames.to(dtype)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Float frames (any range, any float dtype) -> uint8, clamped to [0, 1] and rounded."""
    return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _to_rgb_image(frame) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame if frame.mode == "RGB" else frame.convert("RGB")
    array = np.asarray(frame)
    if array.dtype != np.uint8:
        raise GenieTypeError(f"Expected a uint8 image, got {array.dtype}: convert it with .astype(np.uint8).")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return Image.fromarray(array).convert("RGB")  # uint8 (H, W) is "L"; no mode= (deprecated)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array[..., :3]))  # uint8 (H, W, 3) is "RGB"
    raise GenieValueError(
        f"Expected an image (H, W), (H, W, 3) or (H, W, 4), got {array.shape}: pass an RGB frame."
    )


def resize_frame(frame_u8, size: int, fit: str = "crop") -> np.ndarray:
    """Any uint8 image (or PIL image) -> RGB uint8 (size, size, 3). See the module docstring."""
    image = _to_rgb_image(frame_u8)
    w, h = image.size
    box = parse_box(fit)
    if box is not None and (w, h) == (size, size):
        pass  # already fitted: a world's own prompt frame, a dataset frame
    elif box is not None:
        if box[2] > w or box[3] > h:
            raise GenieValueError(
                f"The fit {fit} reaches outside the {w}x{h} frame: choose a box inside it "
                f"(RIGHT <= {w}, BOTTOM <= {h})."
            )
        image = image.crop(box)
    elif fit == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    elif fit == "pad":
        side = max(w, h)
        canvas = Image.new("RGB", (side, side))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)

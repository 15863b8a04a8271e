"""Writing clips (MP4 through imageio's ffmpeg, or GIF), atomically: a temporary file renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from genie.core.errors import GenieValueError

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm")


def write_video(path, frames, fps: int = 15) -> Path:
    """frames: sequence of uint8 (H, W, 3). The file appears complete or not at all."""
    import imageio.v3 as iio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise GenieValueError(f"Cannot write {path}: the clip must end in {', '.join(VIDEO_SUFFIXES)}.")
    frames = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{suffix}")
    try:
        if suffix == ".gif":
            iio.imwrite(tmp, frames, duration=1000 / fps, loop=0)
        else:
            _write_ffmpeg(tmp, frames, fps)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_ffmpeg(path: Path, frames: np.ndarray, fps: int) -> None:
    """macro_block_size=1 keeps small frames (64x64) at their size instead of padding to 16."""
    import imageio

    with imageio.get_writer(path, fps=fps, macro_block_size=1) as writer:
        for f in frames:
            writer.append_data(f)

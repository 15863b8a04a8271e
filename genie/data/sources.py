"""Data sources: record Gymnasium envs (`genie collect`) and ingest action-free videos (`genie ingest`).

Every frame goes through the one frame policy (`resize_frame`, genie/core/frames.py), with `--fit`.

Episodes are written with `genie.data.EpisodeWriter` (see its alignment contract: actions[t] is taken
at frame t and produces frame t+1).
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError
from tqdm import tqdm

from genie.core.errors import GenieError, GenieFileNotFoundError, GenieValueError
from genie.core.frames import FITS, resize_frame
from genie.data.episodes import EpisodeWriter
from genie.data.games import action_names, game_settings, honest_kwargs, make_env, observe

POLICIES = ("sticky", "random")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
PIL_ANIMATION_EXTS = {".gif"}
VIDEO_EXTS = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"}


def _check_size(size: int) -> int:
    if not isinstance(size, int) or size < 8:
        raise GenieValueError(f"--size must be an integer of at least 8, got {size!r}: pass e.g. --size 64.")
    return size


# --- Gymnasium ---


def collect(
    env_id: str,
    episodes: int,
    out,
    size: int = 64,
    seed: int = 0,
    policy: str = "sticky",
    max_steps: int = 1000,
    sticky_prob: float = 0.75,
    env_kwargs: dict | None = None,
    progress: bool = True,
    fit: str = "stretch",
) -> dict:
    """Record `episodes` episodes of `env_id` with a random or sticky-random policy into dataset `out`.

    Episode k resets with seed+k; the policy's generators are seeded from `seed`, so a run is reproducible.
    An episode ends on terminated, truncated, or after `max_steps` steps (T <= max_steps + 1 frames).
    """
    import gymnasium as gym

    size = _check_size(size)
    if policy not in POLICIES:
        raise GenieValueError(f"Unknown policy {policy!r}: use one of {', '.join(POLICIES)}.")
    if episodes < 1 or max_steps < 1:
        raise GenieValueError("--episodes and --max-steps must be at least 1: pass positive counts.")
    if fit not in FITS:
        raise GenieValueError(f"Unknown fit {fit!r}: use one of {', '.join(FITS)}.")
    env_kwargs = dict(env_kwargs or {})
    started = time.perf_counter()
    env = make_env(env_id, env_kwargs)
    try:
        space = env.action_space
        discrete = isinstance(space, gym.spaces.Discrete)
        meta = {
            "source": "gym",
            "env_id": env_id,
            "env_kwargs": honest_kwargs(env_id, env_kwargs),
            "num_actions": int(space.n) if discrete else None,
            "action_names": action_names(env, space) if discrete else None,
            **game_settings(env),  # what each recorded step ran: frame skip, sticky-action probability
            "size": size,
            "fit": fit,
            "policy": policy,
            "sticky_prob": sticky_prob if policy == "sticky" else None,
            "seed": seed,
            "max_steps": max_steps,
        }
        rng = np.random.default_rng(seed)
        space.seed(seed)
        total_frames, returns = 0, []
        with EpisodeWriter(out, frame_shape=(size, size, 3), meta=meta) as writer:
            bar = tqdm(total=episodes, unit="ep", disable=not progress, desc=f"collect {env_id}")
            for k in range(episodes):
                obs, _ = env.reset(seed=seed + k)
                frames = [resize_frame(observe(env, obs, env_id), size, fit)]
                actions, rewards, terminated, truncated = [], [], [], []
                previous = None
                for _ in range(max_steps):
                    if policy == "sticky" and previous is not None and rng.random() < sticky_prob:
                        action = previous
                    else:
                        action = space.sample()
                    previous = action
                    obs, reward, term, trunc, _ = env.step(action)
                    frames.append(resize_frame(observe(env, obs, env_id), size, fit))
                    if discrete:
                        actions.append(int(action) - int(space.start))
                    rewards.append(float(reward))
                    terminated.append(bool(term))
                    truncated.append(bool(trunc))
                    if term or trunc:
                        break
                writer.add_episode(
                    np.stack(frames),
                    actions=actions if discrete else None,
                    rewards=rewards,
                    terminated=terminated,
                    truncated=truncated,
                )
                total_frames += len(frames)
                returns.append(float(np.sum(rewards)))
                bar.update(1)
                bar.set_postfix(frames=total_frames)
            bar.close()
    finally:
        env.close()
    seconds = time.perf_counter() - started
    summary = {
        "out": str(out),
        "env_id": env_id,
        "episodes": episodes,
        "frames": total_frames,
        "size": size,
        "mean_return": float(np.mean(returns)),
        "seconds": seconds,
    }
    if progress:
        print(
            f"collected {episodes} episodes, {total_frames} frames ({size}x{size}) from {env_id} "
            f"into {out} in {seconds:.1f}s (mean return {summary['mean_return']:.2f})"
        )
    return summary


# --- Videos and image folders ---


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise GenieValueError(
            f"{folder} holds no images ({', '.join(sorted(IMAGE_EXTS))}): point ingest at a folder of frames."
        )
    return files


def _frames_of(path: pathlib.Path):
    """Yield the raw frames of one source (video file, GIF, single image, or folder of images), streamed."""
    current = path  # the file being decoded, for the error message
    try:
        if path.is_dir():
            for current in _image_files(path):
                with Image.open(current) as image:
                    yield _rgb_copy(image)
        elif path.suffix.lower() in PIL_ANIMATION_EXTS or path.suffix.lower() in IMAGE_EXTS:
            with Image.open(path) as image:
                for frame in ImageSequence.Iterator(image):
                    yield _rgb_copy(frame)
        else:
            import imageio.v3 as iio

            yield from iio.imiter(path)
    except GenieError:
        raise
    except (OSError, ValueError, RuntimeError, UnidentifiedImageError, StopIteration) as e:
        raise GenieValueError(
            f"Cannot read {current} ({e.__class__.__name__}): "
            f"check that it is a valid video, GIF or image, or leave it out."
        ) from None


def _rgb_copy(image: Image.Image) -> Image.Image:
    image.load()
    return image.convert("RGB")


def _check_source(path: pathlib.Path) -> None:
    """Fail before anything is written: the path exists, has a known type, and its first frame decodes."""
    if not path.exists():
        raise GenieFileNotFoundError(f"No such file or folder: {path}: check the path.")
    known = IMAGE_EXTS | PIL_ANIMATION_EXTS | VIDEO_EXTS
    if path.is_file() and path.suffix.lower() not in known:
        raise GenieValueError(
            f"Cannot ingest {path}: use a video ({', '.join(sorted(VIDEO_EXTS | PIL_ANIMATION_EXTS))}) "
            f"or a folder of images."
        )
    frames = _frames_of(path)
    try:
        next(frames)
    except StopIteration:
        raise GenieValueError(f"{path} has no frames: check the file or leave it out.") from None
    finally:
        frames.close()


def ingest(paths: list, out, size: int = 64, progress: bool = True, fit: str = "crop") -> dict:
    """Each video, GIF or image folder in `paths` becomes one action-free episode of dataset `out`."""
    size = _check_size(size)
    if fit not in FITS:
        raise GenieValueError(f"Unknown fit {fit!r}: use one of {', '.join(FITS)}.")
    paths = [pathlib.Path(p) for p in ([paths] if isinstance(paths, (str, pathlib.Path)) else paths)]
    if not paths:
        raise GenieValueError("No input given: pass one or more videos or image folders to ingest.")
    for path in paths:
        _check_source(path)
    started = time.perf_counter()
    total_frames = 0
    meta = {"source": "video", "size": size, "fit": fit}
    with EpisodeWriter(out, frame_shape=(size, size, 3), meta=meta) as writer:
        bar = tqdm(unit="frame", disable=not progress, desc="ingest")
        for path in paths:

            def resized(path=path):
                for frame in _frames_of(path):
                    bar.update(1)
                    yield resize_frame(frame, size, fit)

            writer.add_episode(resized())
            total_frames = writer.frames_written
        bar.close()
    seconds = time.perf_counter() - started
    if progress:
        print(
            f"ingested {len(paths)} episodes, {total_frames} frames ({size}x{size}) from {len(paths)} "
            f"source(s) into {out} in {seconds:.1f}s"
        )
    return {"out": str(out), "episodes": len(paths), "frames": total_frames, "size": size, "seconds": seconds}


# --- CLI ---

"""Data sources: record Gymnasium envs (`genie collect`) and ingest action-free videos (`genie ingest`).

Every frame goes through the one frame policy (`resize_frame`, genie/core/frames.py), with `--fit`.

Episodes are written with `genie.data.EpisodeWriter` (see its alignment contract: actions[t] is taken
at frame t and produces frame t+1).
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError
from tqdm import tqdm

from genie.core.errors import GenieError, GenieFileNotFoundError, GenieValueError
from genie.core.frames import check_fit, resize_frame
from genie.data.episodes import EpisodeWriter
from genie.data.games import action_names, game_settings, honest_kwargs, make_env, observe

POLICIES = ("sticky", "random")
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
PIL_ANIMATION_EXTS = {".gif"}
VIDEO_EXTS = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v"}
KNOWN_EXTS = IMAGE_EXTS | PIL_ANIMATION_EXTS | VIDEO_EXTS


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
    check_fit(fit)
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


class UnreadableSource(GenieValueError):
    """One source (a video, GIF, image, or a folder's image) that cannot be decoded; `file` names it."""

    def __init__(self, file: pathlib.Path, reason: str):
        self.file, self.reason = file, reason
        super().__init__(f"Cannot read {file} ({reason}): pass --skip-bad to leave it out, or fix the file.")


def _visible(path: pathlib.Path) -> bool:
    return not path.name.startswith(".")  # .DS_Store, .tmp of a dataset, editor swap files


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The frames of a frame folder: its image files, sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_EXTS
    )


def _is_clip(path: pathlib.Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTS | PIL_ANIMATION_EXTS


def _walk(folder: pathlib.Path, seen: set | None = None) -> list[pathlib.Path]:
    """`folder` itself when it holds images (one frame folder), then every video and GIF in it and the
    sources of its sub-folders, recursively, in name order (a folder linked twice is read once)."""
    seen = set() if seen is None else seen
    if folder.resolve() in seen:
        return []
    seen.add(folder.resolve())
    found = [folder] if _image_files(folder) else []
    for entry in sorted(p for p in folder.iterdir() if _visible(p)):
        if entry.is_dir():
            found += _walk(entry, seen)
        elif entry.is_file() and _is_clip(entry):
            found.append(entry)
    return found


def find_sources(paths) -> list[pathlib.Path]:
    """The episodes `paths` name, one per video, GIF or image file given, and, inside a folder (searched
    recursively), one per video or GIF and one per folder that directly holds images (its frames)."""
    sources = []
    for path in paths:
        if not path.exists():
            raise GenieFileNotFoundError(f"No such file or folder: {path}: check the path.")
        if path.is_dir():
            found = _walk(path)
            if not found:
                raise GenieValueError(
                    f"{path} holds no images or videos ({', '.join(sorted(KNOWN_EXTS))}), in it or in any "
                    "folder below it: point ingest at videos or folders of frames."
                )
            sources += found
        elif path.suffix.lower() in KNOWN_EXTS:
            sources.append(path)
        else:
            raise GenieValueError(
                f"Cannot ingest {path}: use a video ({', '.join(sorted(VIDEO_EXTS | PIL_ANIMATION_EXTS))}), "
                f"an image, or a folder of them."
            )
    return sources


def _reason(e: BaseException) -> str:
    """The first line of a decoder's error, short enough for one line per bad file."""
    lines = str(e).strip().splitlines()
    text = lines[0].strip() if lines else ""
    text = text if len(text) <= 100 else text[:97] + "..."
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


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
        raise UnreadableSource(current, _reason(e)) from None


def _rgb_copy(image: Image.Image) -> Image.Image:
    image.load()
    return image.convert("RGB")


def _check_source(path: pathlib.Path) -> None:
    """Before anything is written: every image of a frame folder opens (headers only) and the first
    frame decodes. Raises UnreadableSource naming the bad file."""
    if path.is_dir():
        for file in _image_files(path):
            try:
                Image.open(file).close()
            except (OSError, ValueError, UnidentifiedImageError) as e:
                raise UnreadableSource(file, _reason(e)) from None
    frames = _frames_of(path)
    try:
        next(frames)
    except StopIteration:
        raise UnreadableSource(path, "no frames") from None
    finally:
        frames.close()


def ingest(
    paths: list, out, size: int = 64, progress: bool = True, fit: str = "crop", skip_bad: bool = False
) -> dict:
    """Each video, GIF or image folder in `paths` (folders searched recursively, see `find_sources`)
    becomes one action-free episode of dataset `out`.

    A source that cannot be decoded is refused before anything is written (all of them, one line each),
    unless `skip_bad`: then each is left out with one line on stderr. One that fails part-way (a
    truncated video) is refused there, or left out with `skip_bad` (its partial episode is discarded).
    """
    size = _check_size(size)
    check_fit(fit)
    paths = [pathlib.Path(p) for p in ([paths] if isinstance(paths, (str, pathlib.Path)) else paths)]
    if not paths:
        raise GenieValueError("No input given: pass one or more videos or image folders to ingest.")
    sources, bad = [], []
    for source in find_sources(paths):
        try:
            _check_source(source)
            sources.append(source)
        except UnreadableSource as e:
            bad.append(e)
    if bad and not skip_bad:
        raise GenieValueError("\n".join(str(e) for e in bad))
    skipped = [_skip(e) for e in bad]
    if not sources:
        raise GenieValueError("No readable video or image folder is left to ingest: check the files.")
    started = time.perf_counter()
    total_frames = 0
    meta = {"source": "video", "size": size, "fit": fit}
    with EpisodeWriter(out, frame_shape=(size, size, 3), meta=meta) as writer:
        bar = tqdm(unit="frame", disable=not progress, desc="ingest")
        for path in sources:

            def resized(path=path):
                for frame in _frames_of(path):
                    bar.update(1)
                    yield resize_frame(frame, size, fit)

            try:
                writer.add_episode(resized())
            except UnreadableSource as e:
                if not skip_bad:
                    kept = writer.episodes_written
                    raise GenieValueError(
                        f"{e}" + (f" The {kept} episodes before it are kept in {out}." if kept else "")
                    ) from None
                skipped.append(_skip(e))
            total_frames = writer.frames_written
        episodes = writer.episodes_written
        bar.close()
    seconds = time.perf_counter() - started
    if progress:
        print(
            f"ingested {episodes} episodes, {total_frames} frames ({size}x{size}, fit {fit}) from "
            f"{len(sources)} source(s) into {out} in {seconds:.1f}s"
            + (f"; skipped {len(skipped)} unreadable" if skipped else "")
        )
    return {
        "out": str(out),
        "episodes": episodes,
        "frames": total_frames,
        "size": size,
        "seconds": seconds,
        "skipped": skipped,
    }


def _skip(e: UnreadableSource) -> str:
    print(f"skipped {e.file} ({e.reason})", file=sys.stderr)
    return str(e.file)

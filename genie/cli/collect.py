"""`genie collect` and `genie ingest`: the command-line side of genie/data/sources.py."""

from __future__ import annotations

import json

from genie.core.errors import GenieValueError
from genie.data.sources import PIL_ANIMATION_EXTS, POLICIES, VIDEO_EXTS, collect, ingest


def _run_collect(args) -> int:
    try:
        env_kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
    except json.JSONDecodeError:
        raise GenieValueError(
            f"--env-kwargs {args.env_kwargs!r} is not JSON: pass e.g. --env-kwargs '{{\"frameskip\": 4}}'."
        ) from None
    if not isinstance(env_kwargs, dict):
        raise GenieValueError(
            "--env-kwargs must be a JSON object: pass e.g. --env-kwargs '{\"frameskip\": 4}'."
        )
    collect(
        args.env,
        args.episodes,
        args.out,
        size=args.size,
        seed=args.seed,
        policy=args.policy,
        max_steps=args.max_steps,
        sticky_prob=args.sticky_prob,
        env_kwargs=env_kwargs,
        progress=not args.quiet,
        fit=args.fit,
    )
    return 0


def _run_ingest(args) -> int:
    ingest(
        args.paths, args.out, size=args.size, progress=not args.quiet, fit=args.fit, skip_bad=args.skip_bad
    )
    return 0


def add_cli(subparsers) -> None:
    """Register `genie collect` and `genie ingest`; each sets func(args) -> exit code."""
    p = subparsers.add_parser("collect", help="record episodes of a Gymnasium env into a dataset folder")
    p.add_argument("--env", required=True, help="Gymnasium id that renders rgb_array, e.g. ALE/Breakout-v5")
    p.add_argument("--episodes", type=int, default=10, help="number of episodes to record")
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--size", type=int, default=64, help="frames are resized to size x size")
    p.add_argument("--seed", type=int, default=0, help="episode k resets with seed + k")
    p.add_argument("--policy", choices=POLICIES, default="sticky", help="random, or sticky-random actions")
    p.add_argument("--sticky-prob", type=float, default=0.75, help="sticky policy: P(repeat the last action)")
    p.add_argument("--max-steps", type=int, default=1000, help="steps per episode at most")
    p.add_argument(
        "--env-kwargs",
        default=None,
        help="JSON object passed to gymnasium.make (default: none; ALE envs get repeat_action_probability 0 "
        "unless set here)",
    )
    p.add_argument(
        "--fit",
        default="stretch",
        help="how frames become square; stretch (the default, like the standard Atari 84x84 warp) keeps every "
        "pixel row; crop, pad, or box:LEFT,TOP,RIGHT,BOTTOM (a window of the screen in its pixels, stretched: "
        "e.g. box:20,0,84,210 keeps Freeway's left lane and score); the world, its prompts and the real game "
        "under `genie rl eval` all use it",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_run_collect)

    p = subparsers.add_parser(
        "ingest",
        help="turn videos, GIFs or image folders into action-free episodes",
        description="Each video or GIF, and each folder of frames (images sorted by name), becomes one "
        "action-free episode. Folders are searched recursively and may mix formats.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        help=f"videos ({', '.join(sorted(VIDEO_EXTS | PIL_ANIMATION_EXTS))}), folders of images, or folders "
        "holding any of these (searched recursively)",
    )
    p.add_argument("--out", required=True, help="dataset folder (created, or appended to)")
    p.add_argument("--size", type=int, default=64, help="frames are resized to size x size")
    p.add_argument(
        "--fit",
        default="crop",
        help="how frames become square: crop keeps the centred square (camera footage, where the middle "
        "matters); pad letterboxes the whole frame with black and stretch squashes it to a square, so "
        "both keep the edges (game recordings: a score or paddle at the top or bottom); box:LEFT,TOP,RIGHT,"
        "BOTTOM cuts that window out and stretches it; default: crop",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out videos or images that cannot be decoded, naming each (default: refuse them all)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_run_ingest)

"""The game loop: play a world in a pygame window (`python play.py --prompt frame.png`, `genie play`).

Keys: 1..|A| pick latent actions (key 1 = action 0). If the world knows what its latent actions mean
(world.json "action_mapping", see genie/cli/keymap.py), the arrows and space play them too. A held key
repeats every frame; a key tapped between two frames still plays for one frame; with no key held the
world gets the idle action (the mapping's NOOP, else latent 0, or --idle-action), so it keeps moving as
a game would. R resets to the prompt, P pauses, S saves a screenshot PNG, Esc or closing the window
quits. The HUD shows fps, step latency and the current action; the legend says which key does what.
Screenshots go to `screenshots/` (or --screenshot-dir) and each path is printed. The frame is scaled up
with nearest-neighbour pixels (pygame.transform.scale), so a 64x64 world stays crisp.

Scripts and tests: `--headless` (SDL dummy video driver, no window, no frame-rate cap) with
`--max-frames N` and/or `--keys 1,2,-,right,r` (one key tapped per frame, `-` = none; posted as pygame
events, so the same input path as a player runs). `--record out.mp4|out.gif` writes every frame shown
(the prompt frame included) when play ends, atomically. The last line printed is always
`frames=N fps=X mean_step_ms=Y` (frames shown, frames per wall-clock second, mean World step time).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from envs.genie_env import GenieEnv
from genie.cli.args import Parser, add_sampling_args, check_numbers
from genie.cli.keymap import Keymap
from genie.core.errors import GenieError, GenieValueError
from genie.data.video import VIDEO_SUFFIXES, write_video

COMMAND_KEYS = ("r", "p", "s", "escape")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--world",
        default=None,
        help="world folder or shipped world name (e.g. breakout; default: the shipped demo world)",
    )
    p.add_argument("--prompt", default=None, help="prompt image (default: the world's first prompts/*.png)")
    p.add_argument("--fps", type=int, default=15, help="target frames per second")
    p.add_argument("--scale", type=int, default=8, help="window pixels per world pixel")
    add_sampling_args(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is often fastest on a busy CPU)",
    )
    p.add_argument(
        "--idle-action",
        type=int,
        default=None,
        help="latent action when no key is held (default: the world's NOOP, else 0)",
    )
    p.add_argument(
        "--record",
        default=None,
        help="write the frames shown to this .mp4 or .gif at the end (default: none)",
    )
    p.add_argument("--screenshot-dir", default="screenshots", help="folder where S saves PNG screenshots")
    p.add_argument(
        "--compile",
        action="store_true",
        help="capture the step with torch.compile (CUDA graphs on a GPU); the first frame waits for it",
    )
    p.add_argument("--headless", action="store_true", help="no window (SDL dummy driver), no fps cap")
    p.add_argument(
        "--max-frames", type=int, default=None, help="stop after this many frames shown (default: no limit)"
    )
    p.add_argument(
        "--keys", default=None, help="scripted keys, one per frame: e.g. 1,2,-,right,r,p,s (default: none)"
    )
    return p


def build_parser() -> argparse.ArgumentParser:

    return add_arguments(Parser(prog="play.py", description="Play a genie world."))


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


def add_cli(subparsers) -> None:
    """Register `genie play`: the same flags and behaviour as `python play.py`."""
    p = subparsers.add_parser(
        "play",
        help="play a world in a pygame window (keys pick latent actions)",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Play; print the summary line; 0 on success, 1 (with a one-line message) on a user error."""
    before = torch.get_num_threads()  # --threads holds for this call only
    try:
        return _play(args)
    except GenieError as e:
        print(f"error: {e}")
        return 1
    finally:
        torch.set_num_threads(before)


def _check_args(args) -> list[str]:
    check_numbers(args)
    if args.record is not None:
        if Path(args.record).suffix.lower() not in VIDEO_SUFFIXES:
            raise GenieValueError(
                f"--record must end in one of {', '.join(VIDEO_SUFFIXES)}, got {args.record}."
            )
    script = [k.strip().lower() for k in args.keys.split(",")] if args.keys else []
    if args.headless and args.max_frames is None and not script:
        raise GenieValueError("--headless needs --max-frames N or --keys (it has no window to close).")
    return script


def _play(args) -> int:
    script = _check_args(args)
    if args.headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame  # here, after the SDL settings above

    if args.threads:
        torch.set_num_threads(args.threads)

    env = GenieEnv(
        world=args.world,
        prompt=args.prompt,
        maskgit_steps=args.maskgit_steps,
        temperature=args.temperature,
        device=args.device,
        max_episode_steps=None,
        compile=args.compile,
    )
    keymap = Keymap.for_world(env.world.num_actions, env.world.info, args.idle_action)
    valid = set(keymap.actions) | set(COMMAND_KEYS) | {"-", "esc"}
    unknown = sorted({k for k in script if k not in valid})
    if unknown:
        raise GenieValueError(
            f"--keys has unknown keys {unknown}: use {sorted(keymap.actions)}, r, p, s, esc or -."
        )

    pygame.display.init()
    pygame.font.init()
    view = View(env.world.image_size, args.scale, keymap.legend())
    pygame.display.set_caption(f"genie: {env.world.info.get('path', 'world')}")
    clock = pygame.time.Clock()

    if args.compile:  # compile before the clock starts; the reset below starts the episode afresh
        print("compiling the world step (once per run; minutes on a small CPU) ...", flush=True)
        env.reset(seed=args.seed)
        env.step(keymap.idle_action)
    obs, _ = env.reset(seed=args.seed)
    recorded = [obs] if args.record else None
    shown, step_ms, action, paused, held = 1, [], None, False, []
    t0 = time.perf_counter()
    while True:
        if args.max_frames is not None and shown >= args.max_frames:
            break
        if script:
            key = script.pop(0)
            if key != "-":
                code = pygame.key.key_code("escape" if key == "esc" else key)
                pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=code, mod=0, unicode="", scancode=0))
                pygame.event.post(pygame.event.Event(pygame.KEYUP, key=code, mod=0, unicode="", scancode=0))
        elif args.headless and (args.max_frames is None or paused):
            break  # the script is over and nothing else can happen
        tapped, quit_, reset, shot = None, False, False, False
        for event in pygame.event.get():  # events, not key.get_pressed(): posted keys must count too
            if event.type == pygame.QUIT:
                quit_ = True
            elif event.type == pygame.KEYDOWN:
                name = pygame.key.name(event.key)
                quit_ |= name == "escape"
                reset |= name == "r"
                shot |= name == "s"
                paused ^= name == "p"
                if name in keymap.actions:
                    tapped = name
                    held = [k for k in held if k != name] + [name]
            elif event.type == pygame.KEYUP:
                held = [k for k in held if k != pygame.key.name(event.key)]
        if quit_:
            break
        if reset:
            obs, _ = env.reset()
            action = None
        elif not paused:
            key = tapped or (held[-1] if held else None)
            action = keymap.actions[key] if key else keymap.idle_action
            obs, *_ = env.step(action)
            step_ms.append(env.last_step_ms)
        if reset or not paused:
            shown += 1
            if recorded is not None:
                recorded.append(obs)
        elapsed = time.perf_counter() - t0
        hud = (
            f"{shown / max(elapsed, 1e-9):5.1f} fps  step {step_ms[-1] if step_ms else 0:6.1f} ms  "
            f"action {'-' if action is None else keymap.label(action)}" + ("  PAUSED" if paused else "")
        )
        view.draw(obs, hud)
        if shot:
            print(f"saved {view.screenshot(Path(args.screenshot_dir), shown)}")
        if not args.headless:
            clock.tick(args.fps)
    elapsed = time.perf_counter() - t0
    env.close()
    pygame.quit()
    if recorded is not None:
        write_video(args.record, np.stack(recorded), fps=args.fps)
    mean_ms = sum(step_ms) / len(step_ms) if step_ms else 0.0
    print(f"frames={shown} fps={shown / max(elapsed, 1e-9):.2f} mean_step_ms={mean_ms:.2f}")
    return 0


class View:
    """The window: the world frame scaled up, a HUD line and the key legend under it."""

    LINE = 16

    def __init__(self, size: int, scale: int, legend: list[str]):
        import pygame

        self.size, self.scale, self.legend = size, scale, legend
        self.font = pygame.font.Font(None, 18)
        width = max(size * scale, max(self.font.size(line)[0] for line in legend) + 8)
        self.screen = pygame.display.set_mode((width, size * scale + self.LINE * (1 + len(legend)) + 6))

    def draw(self, frame, hud: str) -> None:
        import pygame

        self.screen.fill((0, 0, 0))
        surface = pygame.surfarray.make_surface(frame.transpose(1, 0, 2))  # pygame is (W, H)
        side = self.size * self.scale
        # nearest-neighbour (not smoothscale): each world pixel becomes a crisp scale x scale block
        self.screen.blit(pygame.transform.scale(surface, (side, side)), (0, 0))
        for i, line in enumerate([hud, *self.legend]):
            color = (255, 255, 255) if i == 0 else (170, 170, 170)
            self.screen.blit(self.font.render(line, True, color), (4, side + 3 + i * self.LINE))
        pygame.display.flip()

    def screenshot(self, folder: Path, index: int) -> Path:
        import pygame

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"genie-{time.strftime('%Y%m%d-%H%M%S')}-{index:05d}.png"
        pygame.image.save(self.screen, str(path))
        return path

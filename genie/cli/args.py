"""Command-line flags shared by `genie` and `python play.py`: every default shown in --help, every number
checked before any work starts (one sentence naming the flag and its range)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from genie.core.errors import GenieValueError


def _with_default(action: argparse.Action) -> str:
    """The flag's help and "(default: X)"; a None default (chosen later, e.g. by the preset) or an off
    switch is left to the help text, which then says what happens."""
    help_ = action.help or ""
    if (
        not action.option_strings
        or action.default is None
        or action.default is False
        or action.default is argparse.SUPPRESS
        or "default" in help_
    ):
        return help_
    return f"{help_} (default: %(default)s)".strip()


class HelpFormatter(argparse.HelpFormatter):
    """--help shows every flag's default (see `_with_default`)."""

    def _get_help_string(self, action):
        return _with_default(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose --help shows defaults; sub-commands inherit it (add_subparsers)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.help is None:  # argparse prints nothing, not even the default, for a flag without help
            action.help = _with_default(action) or None
        return action


@dataclass(frozen=True)
class Range:
    """The values a number flag allows: low <= v (low < v when `open_low`) <= high, finite."""

    low: float
    high: float | None = None
    integer: bool = True
    open_low: bool = False

    def allows(self, value) -> bool:
        if self.integer and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if not math.isfinite(value) or value < self.low or (self.open_low and value == self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.high is not None:
            return f"{kind} in [{self.low:g}, {self.high:g}]"
        return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"


COUNT, INDEX = Range(1), Range(0)
NUMBER_FLAGS = {  # argparse dest -> allowed values, for every command that has the flag
    "steps": COUNT,
    "save_every": COUNT,
    "tokenizer_steps": COUNT,
    "lam_steps": COUNT,
    "dynamics_steps": COUNT,
    "reward_steps": COUNT,
    "batch_size": COUNT,
    "grad_accum": COUNT,
    "lr": Range(0, integer=False, open_low=True),
    "context": Range(2),  # a window holds at least one transition
    "seed": INDEX,
    "num_workers": INDEX,
    "num_actions": Range(2),
    "episodes": COUNT,
    "max_steps": COUNT,
    "size": Range(8),
    "sticky_prob": Range(0, 1, integer=False),
    "windows": COUNT,
    "horizon": COUNT,
    "maskgit_steps": COUNT,
    "temperature": Range(0, integer=False),  # 0 samples greedily
    "fps": COUNT,
    "num_envs": COUNT,
    "scale": COUNT,
    "threads": COUNT,
    "idle_action": INDEX,  # the upper bound, |A|, is the world's (genie/cli/keymap.py)
    "max_frames": COUNT,
    "budget": Range(0, integer=False, open_low=True),
    "train_batch": COUNT,
    "num_steps": COUNT,  # genie rl train: rollout steps per env per update
    "max_episode_steps": COUNT,
    "ent_coef": Range(0, integer=False),
    "ppo_envs": INDEX,  # genie bench: 0 skips the PPO phase
}


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse the first number flag out of its range with one sentence naming the flag and the range."""
    for dest, value in vars(args).items():
        allowed = NUMBER_FLAGS.get(dest)
        if allowed is not None and value is not None and not allowed.allows(value):
            raise GenieValueError(f"{flag_name(dest)} must be {allowed}, got {value!r}.")
    sizes = getattr(args, "sizes", None)  # genie bench --sizes 1,4,16
    if isinstance(sizes, str):
        parts = [p.strip() for p in sizes.split(",")]
        if not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise GenieValueError(
                f"--sizes must be comma-separated integers >= 1 (e.g. 1,4,16), got {sizes!r}."
            )


def add_maskgit_args(p: argparse.ArgumentParser) -> None:
    """--maskgit-steps and --temperature, each defaulting to the world's own."""
    p.add_argument(
        "--maskgit-steps", type=int, default=None, help="MaskGIT steps per frame (default: the world's)"
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature, 0 greedy (default: the world's)",
    )


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The flags of every command that samples from a world (sample, play): MaskGIT steps, temperature,
    seed, device."""
    add_maskgit_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")

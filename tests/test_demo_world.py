"""The shipped worlds (genie/assets/worlds/<name>): they load, step, carry checksums, and their keys control
what the game's actions move. The default (DEMO_WORLD) is `doom`, VizDoom HealthGathering learned with
latent actions, whose turn keys turn the view; `breakout` ships beside it."""

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.genie_env import DEFAULT_WORLD, DEMO_WORLD
from genie.world import World
from genie.world.folder import SHIPPED_WORLDS, read_world, shipped_worlds

WORLDS = ("breakout", "doom")


@pytest.fixture(scope="module", params=WORLDS)
def any_world(request):
    return World.load(request.param, device="cpu")


@pytest.fixture(scope="module")
def breakout():
    return World.load("breakout", device="cpu")


def _rollout(world, action: int, seed: int, steps: int = 8, prompt: int = 0, with_first: bool = False):
    """(steps, H, W, 3) frames holding `action` from shipped prompt `prompt` (and the first frame)."""
    first = world.reset(Path(world.info["path"]) / "prompts" / world.info["prompts"][prompt])[0].numpy()
    g = torch.Generator().manual_seed(seed)
    frames = np.stack([world.step([action], generator=g)[0].numpy() for _ in range(steps)])
    return (first, frames) if with_first else frames


def _latent(world, name: str) -> int:
    mapping = world.info["action_mapping"]
    return mapping["latent_for_real"][mapping["real_action_names"].index(name)]


def test_the_shipped_worlds_fit_the_budget_and_ship_prompts_and_cards():
    assert set(WORLDS) <= set(shipped_worlds()) and DEFAULT_WORLD == "doom"
    for name in WORLDS:
        folder = SHIPPED_WORLDS / name
        assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 12 * 1024 * 1024, name
        info = json.loads((folder / "world.json").read_text())
        assert info["prompts"] and all((folder / "prompts" / p).exists() for p in info["prompts"])
    assert sum(f.stat().st_size for f in SHIPPED_WORLDS.rglob("*") if f.is_file()) <= 25 * 1024 * 1024
    docs = SHIPPED_WORLDS.parents[2] / "docs"
    assert (docs / "DEMO_WORLD.md").exists()


@pytest.mark.parametrize("name", WORLDS)
def test_a_shipped_world_carries_checksums_of_every_file(name):
    """A shipped world is verified on load like any other: world.json lists each model's config and each
    prompt, and each config lists its weights (a corrupt install is one sentence, not black frames)."""
    folder = SHIPPED_WORLDS / name
    info = json.loads((folder / "world.json").read_text())
    assert set(info["parts"]) >= {"tokenizer", "dynamics", "prompts"}
    assert set(info["parts"]["prompts"]) == set(info["prompts"])
    for part in ("tokenizer", "dynamics"):
        assert "model.safetensors" in json.loads((folder / part / "config.json").read_text())["files"]
    assert not (folder / ".lock").exists()
    read_world(name)


def test_same_action_and_seed_give_the_same_frames(any_world):
    a, b = _rollout(any_world, 1, seed=7, steps=4), _rollout(any_world, 1, seed=7, steps=4)
    np.testing.assert_array_equal(a, b)


def _paddle_x(frame: np.ndarray) -> float:
    """Mean column of the bright pixels in Breakout's paddle rows, inside the walls (64x64 frames)."""
    cols = np.nonzero((frame[54:62, 4:60].astype(int).sum(-1) > 150).any(0))[0] + 4
    return float(cols.mean()) if len(cols) else float("nan")


def test_breakout_keys_control_the_paddle(breakout):
    """From every shipped prompt, 8 frames of RIGHT leave the paddle more than 10 px right of where 8
    frames of LEFT leave it."""
    right, left = _latent(breakout, "RIGHT"), _latent(breakout, "LEFT")
    for prompt in range(len(breakout.info["prompts"])):
        a, b = (
            _rollout(breakout, right, seed=0, prompt=prompt),
            _rollout(breakout, left, seed=0, prompt=prompt),
        )
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() > 0.1, prompt
        assert _paddle_x(a[-1]) > _paddle_x(b[-1]) + 10, (prompt, _paddle_x(a[-1]), _paddle_x(b[-1]))


def test_genie_v0_uses_the_demo_world_by_default_and_others_by_name():
    env = gym.make("Genie-v0")
    obs, _ = env.reset(seed=0)
    default = env.unwrapped.world.info
    assert obs.shape == (64, 64, 3) and default["env_id"] == "VizdoomHealthGathering-v1"
    assert default["actions"] == "latent" and DEMO_WORLD == SHIPPED_WORLDS / "doom"
    named = gym.make("Genie-v0", world="breakout")
    assert named.unwrapped.world.info["env_id"] == "ALE/Breakout-v5"
    assert named.unwrapped.world.info["path"] == str(SHIPPED_WORLDS / "breakout")
    named.close()
    obs2, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs2.shape == obs.shape and isinstance(reward, float)
    env.close()


def _view_shift(a: np.ndarray, b: np.ndarray, r: int = 12) -> int:
    """The horizontal shift s (px) that best maps frame b onto frame a (mean |a[x] - b[x - s]|, rows 8-56
    of the 64x64 grey frames): > 0 when the view content moved right, as after a left turn."""
    a, b = a[8:56].astype(np.float32).mean(-1), b[8:56].astype(np.float32).mean(-1)
    W = a.shape[1]
    errs = [
        np.abs(a[:, s:] - b[:, : W - s]).mean() if s >= 0 else np.abs(a[:, : W + s] - b[:, -s:]).mean()
        for s in range(-r, r + 1)
    ]
    return int(np.argmin(errs)) - r


def test_doom_turn_keys_turn_the_imagined_view_the_way_the_game_does():
    """Held for 6 steps from every shipped prompt: TURN_LEFT moves the view content right (the real game:
    about +6 px a step at frame skip 4), TURN_RIGHT left, NOOP not at all."""
    doom = World.load("doom", device="cpu")
    mean = {}
    for name in ("TURN_LEFT", "TURN_RIGHT", "NOOP"):
        shifts = []
        for prompt in range(len(doom.info["prompts"])):
            first, frames = _rollout(
                doom, _latent(doom, name), seed=prompt, steps=6, prompt=prompt, with_first=True
            )
            seq = np.concatenate([first[None], frames])
            shifts += [_view_shift(seq[t + 1], seq[t]) for t in range(6)]
        mean[name] = float(np.mean(shifts))
    assert mean["TURN_LEFT"] > 2.0 and mean["TURN_RIGHT"] < -2.0 and abs(mean["NOOP"]) < 1.0, mean

"""End to end, as a user runs it: `genie bench`, `genie rl train` + `genie rl eval` through the CLI, and
Stable-Baselines3's PPO on the Gymnasium env. Each step checks the values it reports, not only keys."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from helpers_env import prompt_image, tiny_world
from PIL import Image

from envs.genie_env import GenieEnv
from genie.rl import ppo
from genie.world import random_world


def genie(*args) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "genie.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_rl_and_sb3_end_to_end(tmp_path):
    # --- genie bench: every row measured, and the ratio is the ratio of the rows ---
    bench = json.loads(
        genie(
            "bench",
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--sizes",
            "1,2",
            "--budget",
            "30",
            "--threads",
            "1",
            "--json",
        )
    )
    cached, uncached = bench["single_stream"]
    assert (cached["use_cache"], uncached["use_cache"]) == (True, False)
    for row in (cached, uncached):
        assert row["fps"] > 0 and row["ms_per_frame"] > 0 and row["frames"] >= 2
        assert math.isclose(row["fps"] * row["ms_per_frame"], 1e3, rel_tol=1e-6)  # one mean, two units
    assert math.isclose(bench["cached_over_uncached"], cached["fps"] / uncached["fps"], rel_tol=1e-9)
    assert [r["num_envs"] for r in bench["batched"]] == [1, 2]
    assert all(r["env_steps_per_s"] > 0 for r in bench["batched"])
    assert bench["training"]["frames_per_s"] > 0 and bench["maskgit_steps"] >= 1

    # --- genie rl train in a world that records its game and action mapping, then rl eval ---
    world_dir = random_world(tmp_path / "w", "tiny")
    info = json.loads((world_dir / "world.json").read_text())
    info.update(
        env_id="ALE/Breakout-v5",
        fit="stretch",
        action_mapping={
            "real_action_names": ["NOOP", "FIRE", "RIGHT", "LEFT"],
            "latent_for_real": [0, 1, 2, 3],
            "real_for_latent": [0, 1, 2, 3, 0, 1, 2, 3],
        },
    )
    (world_dir / "world.json").write_text(json.dumps(info))
    (world_dir / "prompts").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(world_dir / "prompts" / "p.png")
    out = genie(
        "rl", "train", "--world", world_dir, "--steps", "64", "--num-envs", "2", "--out", tmp_path / "run"
    )
    assert out.strip().splitlines()[-1].startswith("ppo: 64 imagined steps"), out
    agent, meta = ppo.load_policy(tmp_path / "run")
    assert meta["num_actions"] == 8 and agent.image_size == 32

    def rl_eval(seed):
        args = ("--episodes", 2, "--max-steps", 30, "--seed", seed, "--json")
        return json.loads(genie("rl", "eval", "--policy", tmp_path / "run", *args))

    result = rl_eval(0)
    assert result["episodes"] == 2 and result["env_id"] == "ALE/Breakout-v5"
    for who in ("policy", "random"):
        mean, std = result[f"{who}_mean"], result[f"{who}_std"]
        assert isinstance(mean, float) and isinstance(std, float)
        assert 0.0 <= mean <= 30.0 and std >= 0.0  # Breakout pays >= 0, at most a point a step here
        assert len(result[f"{who}_returns"]) == 2 and np.mean(result[f"{who}_returns"]) == pytest.approx(mean)
    lo, hi = result["difference_ci95"]
    assert lo <= result["difference"] <= hi
    assert rl_eval(0) == result  # fixed episode seeds: the same figures again

    # --- SB3 PPO on the Gymnasium env: the world never ends an episode, so each lasts max_episode_steps ---
    from stable_baselines3 import PPO

    world40 = tiny_world(tmp_path / "w40", image_size=40)
    env = GenieEnv(
        world=world40, prompt=prompt_image(tmp_path / "p.png"), maskgit_steps=1, max_episode_steps=32
    )
    model = PPO("CnnPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    episodes = list(model.ep_info_buffer)
    assert len(episodes) == model.num_timesteps // 32
    assert all(e["l"] == 32 and e["r"] == 0.0 for e in episodes), episodes  # no reward model: reward 0
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))

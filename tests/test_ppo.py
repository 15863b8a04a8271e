"""PPO in imagination: it learns when the reward is easy; its per-update diagnostics (metrics.csv), the
plots of `genie rl train/eval --plot`, and `genie bench`'s PPO phase (the real-game path is in
test_end_to_end.py)."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from envs.vector_env import GenieVectorEnv
from genie.cli import bench
from genie.cli.commands import main
from genie.rl import ppo
from genie.world import World, random_world


def test_ppo_return_improves_on_an_easy_reward(tmp_path):
    """The world pays 1.0 for latent action 3 (a stand-in reward model): PPO must learn to take it."""
    world = World.load(random_world(tmp_path / "w", "tiny"))
    world.maskgit_steps = 1  # speed: the frames matter little here

    def easy_reward(transitions, actions):  # a stand-in reward model through the public hook
        return (actions == 3).float(), torch.zeros(len(actions), dtype=torch.bool)

    world.set_reward_fn(easy_reward)
    envs = GenieVectorEnv(
        num_envs=8, world=world, prompt=np.zeros((32, 32, 3), np.uint8), max_episode_steps=8
    )
    args = ppo.Args(total_steps=8 * 16 * 12, num_envs=8, num_steps=16, lr=3e-3, update_epochs=4, seed=0)
    summary = ppo.train(envs, args, out=tmp_path / "run", progress=False)
    # Random play earns 8 steps x 1/8 = 1.0 per episode; a learned policy approaches 8.
    assert summary["first_return"] < 2.5 and summary["last_return"] > 4.0, summary
    agent, meta = ppo.load_policy(tmp_path / "run")
    assert meta["num_actions"] == 8 and isinstance(agent, ppo.Agent)


def _tiny_envs(tmp_path, num_envs=4, max_episode_steps=3):
    world = World.load(random_world(tmp_path / "w", "tiny"))
    world.maskgit_steps = 1
    world.set_reward_fn(
        lambda transitions, actions: ((actions % 2).float(), torch.zeros_like(actions).bool())
    )
    prompt = np.zeros((32, 32, 3), np.uint8)
    return GenieVectorEnv(num_envs=num_envs, world=world, prompt=prompt, max_episode_steps=max_episode_steps)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_metrics_csv_has_a_row_per_update_with_sane_diagnostics(tmp_path):
    envs = _tiny_envs(tmp_path)
    args = ppo.Args(total_steps=3 * 4 * 4, num_envs=4, num_steps=4, lr=1e-3, update_epochs=2, seed=0)
    logged = []
    summary = ppo.train(envs, args, out=tmp_path / "run", progress=False, log=logged.append)
    path = tmp_path / "run" / "metrics.csv"
    assert path.read_text().splitlines()[0].split(",") == list(ppo.METRICS)
    rows = _read_csv(path)
    assert [int(r["update"]) for r in rows] == [0, 1, 2]
    assert [int(r["steps"]) for r in rows] == [16, 32, 48]
    assert logged == summary["history"] and len(logged) == 3  # the callback gets the CSV's rows
    for row, d in zip(rows, logged, strict=True):
        values = {k: float(v) for k, v in row.items() if v != ""}
        assert all(math.isfinite(v) for v in values.values()), row
        assert values["approx_kl"] >= -1e-6 and 0.0 <= values["clipfrac"] <= 1.0
        assert values["explained_variance"] <= 1.0  # rewards vary: it is defined
        assert values["value_loss"] >= 0 and values["entropy"] > 0 and values["steps_per_s"] > 0
        assert math.isclose(values["lr"], d["lr"]) and values["lr"] <= args.lr
        # episodes of 3 valid steps (then a reset transition) finish from the first update on
        assert values["episodes"] > 0 and values["episode_length"] == 3.0
        assert 0.0 <= values["imagined_return"] <= 3.0  # reward 0 or 1 per step
    assert [float(r["lr"]) for r in rows] == sorted((float(r["lr"]) for r in rows), reverse=True)
    assert int(rows[-1]["episodes"]) == summary["episodes"]


def test_explained_variance_is_one_when_exact_and_none_when_returns_are_constant():
    ret = torch.tensor([1.0, 2.0, 4.0])
    assert ppo.explained_variance(ret, ret) == 1.0
    assert ppo.explained_variance(torch.zeros(3), ret) < 1.0
    assert ppo.explained_variance(torch.zeros(3), torch.ones(3)) is None


def _world_with_prompt(tmp_path):
    world_dir = random_world(tmp_path / "w", "tiny")
    (world_dir / "prompts").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(world_dir / "prompts" / "p.png")
    return world_dir


def test_rl_train_plot_writes_a_png_and_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["rl", "train", "--world", str(_world_with_prompt(tmp_path)), "--steps", "16", "--num-envs", "2"]
    argv += ["--num-steps", "4", "--maskgit-steps", "1", "--max-episode-steps", "2", "--lr", "1e-3"]
    assert main([*argv, "--temperature", "0.5", "--ent-coef", "0", "--out", str(out), "--plot"]) == 0
    assert capsys.readouterr().out.strip().startswith("ppo: 16 imagined steps")
    assert len(_read_csv(out / "metrics.csv")) == 2  # 16 steps / (2 envs x 4 steps)
    with Image.open(out / "imagined_return.png") as img:
        img.verify()
    with Image.open(out / "imagined_return.png") as img:
        assert img.format == "PNG" and img.size == (640, 400)
        assert len(img.convert("RGB").getcolors(1 << 16)) > 2  # axes, labels and the curve
    _, meta = ppo.load_policy(out)
    assert meta["summary"]["steps"] == 16


def test_rl_train_refuses_a_bad_knob(tmp_path, capsys):
    argv = ["rl", "train", "--world", str(_world_with_prompt(tmp_path)), "--out", str(tmp_path / "o")]
    assert main([*argv, "--num-steps", "0"]) == 1
    assert "--num-steps must be an integer >= 1, got 0." in capsys.readouterr().err


def test_rl_eval_plot_writes_a_png_next_to_the_policy(tmp_path, monkeypatch, capsys):
    result = {"policy_mean": 3.0, "policy_std": 1.0, "random_mean": 1.0, "random_std": 0.5}
    result.update(episodes=4, env_id="ALE/Breakout-v5")
    monkeypatch.setattr(ppo, "evaluate_real", lambda *a, **k: result)  # the real game is test_end_to_end's
    (tmp_path / "run").mkdir()
    assert main(["rl", "eval", "--policy", str(tmp_path / "run"), "--json", "--plot"]) == 0
    assert json.loads(capsys.readouterr().out) == result
    with Image.open(tmp_path / "run" / "eval.png") as img:
        assert img.format == "PNG" and img.size == (640, 400)


def test_bench_ppo_phase_reports_env_steps_per_second(tmp_path):
    world = World.load(random_world(tmp_path / "w", "tiny"))
    prompt = np.zeros((32, 32, 3), np.uint8)
    row = bench.ppo_phase(world, prompt, num_envs=4, maskgit_steps=1, updates=1, num_steps=4)
    assert row["steps"] == 16 and row["env_steps_per_s"] > 0
    assert math.isclose(row["env_steps_per_s"], 16 / row["seconds"])


def test_compare_returns_gives_the_ratio_and_a_bootstrap_interval_that_excludes_zero_only_for_a_real_gap():
    rng = np.random.default_rng(0)
    better, base = rng.normal(300, 50, 30), rng.normal(200, 50, 30)
    gap = ppo.compare_returns(better, base, seed=1)
    assert gap["ratio"] == pytest.approx(better.mean() / base.mean())
    assert gap["difference"] == pytest.approx(better.mean() - base.mean())
    lo, hi = gap["difference_ci95"]
    assert 0 < lo < gap["difference"] < hi  # about 100 +- 25: zero is outside
    # its half-width is the normal one, 1.96 standard errors of the difference (a 90% interval, or the same
    # resampled indices for both players, would miss this)
    se = np.sqrt(better.var() / len(better) + base.var() / len(base))
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.15)
    assert ppo.compare_returns([5.0], [1.0, 2.0])["difference_ci95"] is None  # one episode: no interval
    same = ppo.compare_returns(base[:15], base[15:], seed=1)["difference_ci95"]
    assert same[0] < 0 < same[1]
    assert ppo.compare_returns([1.0], [0.0, 0.0])["ratio"] is None  # no ratio over a zero baseline


def test_rl_train_starts_imagined_episodes_from_dataset_clips(tmp_path, small_sprite_data, capsys):
    from genie.cli.rl import dataset_prompts
    from genie.data import VideoDataset

    clips = dataset_prompts(small_sprite_data, 5, 4, seed=1)
    assert [c.shape for c in clips] == [(4, 16, 16, 3)] * 5
    assert all(np.array_equal(a, b) for a, b in zip(clips, dataset_prompts(small_sprite_data, 5, 4, seed=1)))
    ds = VideoDataset(small_sprite_data)  # every clip is a real window of the train split
    train = [
        ds.read_window(*ds.windows(4, "train")[i], 4)["frames"] for i in range(len(ds.windows(4, "train")))
    ]
    assert all(any(np.array_equal(c, w) for w in train) for c in clips)
    out = tmp_path / "run"
    argv = ["rl", "train", "--world", str(_world_with_prompt(tmp_path)), "--steps", "8", "--num-envs", "2"]
    argv += ["--num-steps", "4", "--maskgit-steps", "1", "--prompts-from", str(small_sprite_data)]
    assert main([*argv, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().startswith("ppo: 8 imagined steps")
    assert main([*argv[:-1], str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 1
    assert "No dataset at" in capsys.readouterr().err

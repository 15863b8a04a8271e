"""Genie-v0 (envs/genie_env.py): Gymnasium and SB3 compliance, seeding, no aliasing, truncation, and
clear typed errors for what a user can get wrong."""

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from helpers_env import one_torch_thread, prompt_image, tiny_world  # noqa: F401

import envs
from envs.genie_env import GenieEnv
from genie.core.errors import GenieError
from genie.world import World


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("env_world") / "world", prompts=True)


@pytest.fixture(scope="session")
def prompt(tmp_path_factory):
    return prompt_image(tmp_path_factory.mktemp("env_prompt") / "p.png")


@pytest.fixture(scope="session")
def world(world_dir):
    return World.load(world_dir, device="cpu")


def test_gymnasium_check_env(world_dir, prompt, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # check_env also opens the "human" render mode
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("Genie-v0", world=str(world_dir), prompt=str(prompt), maskgit_steps=2)
        gym_check_env(env.unwrapped)
        env.close()
    assert isinstance(env.unwrapped.metadata["render_fps"], int)


def test_sb3_check_env(tmp_path, prompt):
    from stable_baselines3.common.env_checker import check_env

    world_dir = tiny_world(tmp_path / "w40", image_size=40)  # SB3's CnnPolicy wants >= 36x36
    env = GenieEnv(world=world_dir, prompt=prompt, maskgit_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, warn=True)
    obs, reward, terminated, truncated, _ = env.step(0)
    assert type(reward) is float and type(terminated) is bool and type(truncated) is bool
    assert obs.shape == (40, 40, 3) and obs.dtype == np.uint8


def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    return [obs] + [env.step(a)[0] for a in actions]


def test_same_seed_same_frames(world, prompt):
    env = GenieEnv(world=world, prompt=prompt, temperature=1.0, maskgit_steps=2)
    a, b = rollout(env, 7, [1, 5, 2]), rollout(env, 7, [1, 5, 2])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_other_seed_other_frames(world, prompt):
    env = GenieEnv(world=world, prompt=prompt, temperature=1.0, maskgit_steps=2)
    a, c = rollout(env, 7, [1, 5, 2]), rollout(env, 8, [1, 5, 2])
    assert np.array_equal(a[0], c[0])  # the prompt frame does not depend on the seed
    assert any(not np.array_equal(x, y) for x, y in zip(a[1:], c[1:]))


def test_no_aliasing(world, prompt):
    env = GenieEnv(world=world, prompt=prompt, maskgit_steps=2, render_mode="rgb_array")
    obs0, _ = env.reset(seed=0)
    obs1, *_ = env.step(3)
    obs2, *_ = env.step(3)
    assert obs1 is not obs2 and not np.shares_memory(obs1, obs2) and not np.shares_memory(obs0, obs1)
    frame = env.render()
    assert np.array_equal(frame, obs2) and not np.shares_memory(frame, obs2)
    kept = obs2.copy()
    obs2[:] = 0
    frame[:] = 0
    assert np.array_equal(env.render(), kept)
    assert not np.shares_memory(obs2, world.frames.numpy())


def test_truncation(world, prompt):
    env = GenieEnv(world=world, prompt=prompt, maskgit_steps=1, max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    _, info = env.reset()
    assert info["elapsed_steps"] == 0
    assert env.step(0)[4]["elapsed_steps"] == 1 and env.unwrapped.last_step_ms > 0


def test_numpy_actions_and_keys(world, prompt):
    env = GenieEnv(world=world, prompt=prompt, maskgit_steps=1)
    env.reset(seed=0)
    for a in (np.int64(2), np.int32(7), np.uint8(0), np.array(4), env.action_space.sample()):
        assert env.step(a)[0].shape == (32, 32, 3)
    keys = env.get_keys_to_action()
    assert keys[(ord("1"),)] == 0 and keys[(ord("8"),)] == 7 and len(keys) == world.num_actions


@pytest.mark.parametrize(
    "action, error",
    [
        (8, ValueError),
        (-1, ValueError),
        (1.0, TypeError),
        (True, TypeError),
        ("a", TypeError),
        ([1, 2], ValueError),
    ],
)
def test_bad_actions(world, prompt, action, error):
    env = GenieEnv(world=world, prompt=prompt, maskgit_steps=1)
    env.reset(seed=0)
    with pytest.raises(error) as e:
        env.step(action)
    assert isinstance(e.value, GenieError)
    assert "[0, 8)" in str(e.value) or "one per world" in str(e.value)


def test_bad_prompts(world, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    cases = [
        (tmp_path / "missing.png", FileNotFoundError, "does not exist"),
        (tmp_path, ValueError, "directory"),
        (tmp_path / "empty.png", ValueError, "empty"),
        (tmp_path / "text.png", ValueError, "not a readable image"),
        (np.zeros((4, 4, 3), np.float64) + 7, ValueError, "uint8"),
        (object(), TypeError, "prompt type"),
    ]
    for bad, error, words in cases:
        with pytest.raises(error, match=words) as e:
            GenieEnv(world=world, prompt=bad)
        assert isinstance(e.value, GenieError)
    env = GenieEnv(world=world, prompt=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="readable image"):
        env.reset(options={"prompt": tmp_path / "text.png"})


def test_default_prompt_and_missing_prompt(world_dir, tmp_path):
    env = GenieEnv(world=world_dir)  # the world's own prompts/start.png
    assert env.reset(seed=0)[0].shape == (32, 32, 3)
    bare = tiny_world(tmp_path / "bare")
    with pytest.raises(ValueError, match="prompt="):
        GenieEnv(world=bare)


def test_bad_worlds(tmp_path, world_dir, prompt):
    with pytest.raises(FileNotFoundError, match="genie train world"):
        GenieEnv(world=tmp_path / "nowhere", prompt=prompt)
    broken = tiny_world(tmp_path / "broken")
    for f in (broken / "dynamics").iterdir():
        f.unlink()
    (broken / "dynamics").rmdir()
    with pytest.raises(FileNotFoundError, match="dynamics"):
        GenieEnv(world=broken, prompt=prompt)
    old = tiny_world(tmp_path / "old")
    info = json.loads((old / "world.json").read_text())
    (old / "world.json").write_text(json.dumps({**info, "version": 999}))
    with pytest.raises(ValueError, match="version"):
        GenieEnv(world=old, prompt=prompt)


def test_no_world_names_the_fix(monkeypatch, tmp_path, prompt):
    monkeypatch.setattr("envs.genie_env.DEMO_WORLD", tmp_path / "no_demo")
    with pytest.raises(FileNotFoundError, match="world=.*genie train world"):
        GenieEnv(prompt=prompt)


def test_registration_is_idempotent():
    envs.register_envs()
    envs.register_envs()
    spec = gym.spec("Genie-v0")
    assert spec.entry_point == "envs.genie_env:GenieEnv"
    assert spec.vector_entry_point == "envs.vector_env:GenieVectorEnv"


@pytest.mark.filterwarnings("ignore:.*matplotlib")  # gymnasium.utils.play imports it optionally
def test_gymnasium_play_accepts_the_env(world_dir, prompt, monkeypatch):
    from gymnasium.utils.play import PlayableGame

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = gym.make("Genie-v0", world=str(world_dir), prompt=str(prompt), render_mode="rgb_array")
    env.reset(seed=0)
    game = PlayableGame(env, zoom=2)
    assert game.relevant_keys == {ord(str(k)) for k in range(1, 9)} and game.video_size == (64, 64)
    env.close()


def test_real_action_space_plays_the_mapped_latent_actions(tmp_path, prompt):
    import json

    from envs.vector_env import GenieVectorEnv

    world_dir = tiny_world(tmp_path / "w")
    info = json.loads((world_dir / "world.json").read_text())
    info["action_mapping"] = {
        "real_action_names": ["NOOP", "FIRE", "RIGHT", "LEFT"],
        "latent_for_real": [5, 2, 7, 0],
    }
    (world_dir / "world.json").write_text(json.dumps(info))
    real = gym.make("Genie-v0", world=str(world_dir), prompt=prompt, action_space="real").unwrapped
    latent = gym.make("Genie-v0", world=str(world_dir), prompt=prompt).unwrapped
    assert real.action_space.n == 4 and latent.action_space.n == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(real)
    # Real action k plays latent action latent_for_real[k]: same frames as the latent env.
    assert all(
        np.array_equal(a, b) for a, b in zip(rollout(real, 3, [2, 1, 0, 3]), rollout(latent, 3, [7, 2, 5, 0]))
    )
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        real.step(4)
    with pytest.raises(TypeError, match="integer"):
        real.step(1.5)
    vec = GenieVectorEnv(num_envs=2, world=str(world_dir), prompt=prompt, action_space="real")
    assert vec.single_action_space.n == 4
    vec.reset(seed=0)
    vec.step(np.array([3, 1]))
    with pytest.raises(ValueError, match="no action mapping|latent<->real"):
        GenieEnv(world=tiny_world(tmp_path / "plain"), prompt=prompt, action_space="real")


def test_bad_env_settings_fail_at_construction(tmp_path, prompt):
    world_dir = tiny_world(tmp_path / "w")
    with pytest.raises(ValueError, match="render_scale"):
        GenieEnv(world=world_dir, prompt=prompt, render_scale=0)
    with pytest.raises(ValueError, match="maskgit_steps"):
        GenieEnv(world=world_dir, prompt=prompt, maskgit_steps=0)
    with pytest.raises(ValueError, match="temperature"):
        GenieEnv(world=world_dir, prompt=prompt, temperature=-1.0)

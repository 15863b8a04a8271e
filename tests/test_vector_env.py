"""GenieVectorEnv (envs/vector_env.py): make_vec, batched spaces, NEXT_STEP autoreset through
World.reset_rows, seeds, no aliasing, and the torch fast path."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from helpers_env import one_torch_thread, prompt_image, tiny_world  # noqa: F401

import envs  # noqa: F401  (registers Genie-v0)
from envs.vector_env import GenieVectorEnv
from genie.world import World

B = 4


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("vec_world") / "world")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vec_prompts")
    return [prompt_image(folder / f"p{i}.png", seed=i) for i in range(B)]


def make(world_dir, prompts, **kw):
    kw = {"maskgit_steps": 2, **kw}
    return gym.make_vec(
        "Genie-v0", num_envs=B, vectorization_mode="vector_entry_point", world=world_dir, prompt=prompts, **kw
    )


def test_make_vec_and_spaces(world_dir, prompts):
    env = make(world_dir, prompts[0])
    assert isinstance(env, GenieVectorEnv) and env.num_envs == B
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert env.single_observation_space == gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    assert env.observation_space.shape == (B, 32, 32, 3) and env.observation_space.dtype == np.uint8
    assert env.single_action_space == gym.spaces.Discrete(8)
    assert env.action_space == gym.spaces.MultiDiscrete([8] * B)
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and isinstance(info, dict)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs in env.observation_space
    assert reward.shape == terminated.shape == truncated.shape == (B,)
    assert reward.dtype == np.float64 and terminated.dtype == truncated.dtype == np.bool_
    assert info["elapsed_steps"].tolist() == [1] * B and info["_elapsed_steps"].all()
    env.close()


def test_per_env_prompts(world_dir, prompts):
    env = make(world_dir, prompts)
    obs, _ = env.reset(seed=0)
    world = World.load(world_dir, device="cpu")
    for i, p in enumerate(prompts):
        assert np.array_equal(obs[i], world.reset(p)[0].numpy())
    with pytest.raises(ValueError, match="one per env"):
        make(world_dir, prompts[:2])


def run(env, seed, actions, reset_at=None):
    """Observations and flags of a rollout; optionally restart env 0 alone (reset_mask) at step reset_at."""
    obs, _ = env.reset(seed=seed)
    out = [(obs, np.zeros(B, bool))]
    for t, a in enumerate(actions):
        if t == reset_at:
            mask = np.zeros(B, bool)
            mask[0] = True
            obs, _ = env.reset(options={"reset_mask": mask})
            out.append((obs, np.zeros(B, bool)))
        obs, _, terminated, truncated, _ = env.step(a)
        assert not terminated.any()
        out.append((obs, truncated))
    return out


def test_next_step_autoreset(world_dir, prompts):
    """Env 0 restarts at step 1 (reset_mask), so with max_episode_steps=3 envs 1..3 truncate first. On the
    next step they return their prompt frame (actions ignored) while env 0 is unaffected: its frames equal
    those of a run where nobody truncates (temperature 0: sampling is deterministic)."""
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 8, (6, B))
    short = run(make(world_dir, prompts, max_episode_steps=3, temperature=0.0), 0, actions, reset_at=1)
    long = run(make(world_dir, prompts, max_episode_steps=100, temperature=0.0), 0, actions, reset_at=1)
    first = short[0][0]
    # short[k]: 0 reset, 1 step 0, 2 reset of env 0, 3.. steps 1..5; envs 1..3 truncate at k=4, env 0 at k=5
    flags = [tr.tolist() for _, tr in short[3:]]
    no, others, env0 = [False] * 4, [False, True, True, True], [True, False, False, False]
    assert flags == [no, others, env0, no, no]
    obs_trunc, obs_reset = short[4][0], short[5][0]
    assert np.array_equal(obs_trunc[1:], long[4][0][1:])  # the final frame is the real last frame
    assert np.array_equal(obs_reset[1:], first[1:])  # next step: the prompt frame, action ignored
    for k in range(1, 6):  # env 0 never notices the others restarting
        assert np.array_equal(short[k][0][0], long[k][0][0])
    assert np.array_equal(short[6][0][0], first[0])  # ... and restarts itself after its own truncation


def test_autoreset_ignores_action(world_dir, prompts):
    outs = []
    for last_action in (0, 7):
        env = make(world_dir, prompts, max_episode_steps=1, temperature=0.0)
        env.reset(seed=0)
        env.step(np.zeros(B, int))
        outs.append(env.step(np.full(B, last_action))[0])
    assert np.array_equal(outs[0], outs[1])


def test_seeds_reproducible(world_dir, prompts):
    env = make(world_dir, prompts, temperature=1.0)
    actions = np.random.default_rng(1).integers(0, 8, (3, B))
    a, b = run(env, [3, 1, 4, 1], actions), run(env, [3, 1, 4, 1], actions)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    c, d = run(env, 5, actions), run(env, [5, 6, 7, 8], actions)  # seed=s means s, s+1, ...
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(c, d))
    with pytest.raises(ValueError, match="one per env"):
        env.reset(seed=[1, 2])


def test_other_seeds_other_frames(world_dir, prompts):
    env = make(world_dir, prompts, temperature=1.0)
    actions = np.random.default_rng(1).integers(0, 8, (3, B))
    a, c = run(env, [3, 1, 4, 1], actions), run(env, [3, 1, 4, 2], actions)
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a[1:], c[1:]))


def test_no_aliasing(world_dir, prompts):
    env = make(world_dir, prompts[0], render_mode="rgb_array")
    obs0, _ = env.reset(seed=0)
    obs1 = env.step(np.ones(B, int))[0]
    obs2 = env.step(np.ones(B, int))[0]
    assert not np.shares_memory(obs0, obs1) and not np.shares_memory(obs1, obs2)
    assert not np.shares_memory(obs2, env.world.frames.numpy())
    kept = obs2.copy()
    obs2[:] = 0
    assert np.array_equal(np.stack(env.render()), kept)


def test_step_tensor_matches_numpy(world_dir, prompts):
    actions = np.random.default_rng(2).integers(0, 8, (3, B))
    env = make(world_dir, prompts, max_episode_steps=2, temperature=1.0)
    env.reset(seed=9)
    numpy_path = [env.step(a) for a in actions]
    env.reset(seed=9)
    for a, (obs, reward, terminated, truncated, _) in zip(actions, numpy_path):
        t_obs, t_reward, t_term, t_trunc, _ = env.step_tensor(torch.as_tensor(a))
        for t in (t_obs, t_reward, t_term, t_trunc):
            assert torch.is_tensor(t) and t.device == env.world.device
        assert t_obs.dtype == torch.uint8 and t_reward.dtype == torch.float32 and t_trunc.dtype == torch.bool
        assert np.array_equal(t_obs.cpu().numpy(), obs) and np.array_equal(t_trunc.cpu().numpy(), truncated)
        assert np.array_equal(t_reward.cpu().numpy(), reward) and np.array_equal(
            t_term.cpu().numpy(), terminated
        )


def test_bad_actions(world_dir, prompts):
    env = make(world_dir, prompts[0])
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        env.step(np.full(B, 8))
    with pytest.raises(ValueError, match="one per world"):
        env.step(np.zeros(B + 1, int))
    with pytest.raises(TypeError):
        env.step(np.zeros(B, float))

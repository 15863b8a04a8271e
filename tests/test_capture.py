"""The captured step (World(compile=True)): fixed-shape ring caches, keyed noise, one graph."""

import math

import numpy as np
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from dynamics.model import DynamicsModel
from dynamics.sampling import Rollout, hashed_gumbel
from envs.genie_env import load_world
from genie.core.blocks import Attention
from genie.core.cache import KVCache
from genie.core.config import dynamics_preset, preset
from genie.core.errors import GenieValueError
from genie.world import World, random_world


def tiny_dynamics(action_mode: str, previous_frame: bool = True) -> DynamicsModel:
    torch.manual_seed(0)
    tok, lam = preset("tokenizer", "tiny"), preset("lam", "tiny")
    cfg = dynamics_preset("tiny", tok, lam)
    cfg.action_mode, cfg.previous_frame = action_mode, previous_frame
    model = DynamicsModel(cfg).eval()
    model.set_action_codes(torch.randn(cfg.num_actions, cfg.action_dim))
    return model


@pytest.mark.parametrize(
    "action_mode,previous_frame", [("additive", True), ("token", True), ("additive", False)]
)
@torch.no_grad()
def test_ring_cache_computes_the_kv_cache_function(action_mode, previous_frame):
    """Same logits and same sampled frames as the growing KV cache, past the point where the ring wraps,
    across a reset of one row."""
    model = tiny_dynamics(action_mode, previous_frame)
    cfg, N = model.cfg, model.cfg.grid**2
    B = 3
    tokens = torch.randint(0, cfg.vocab_size, (B, 2, N))
    actions = torch.randint(0, cfg.num_actions, (B, 1))
    plain, ring = Rollout(model), Rollout(model, ring=True)
    plain.prompt(tokens, actions)
    ring.prompt(tokens, actions)
    worst = 0.0
    for t in range(cfg.context + 4):  # the ring holds context - 1 frames: it wraps several times
        a = torch.randint(0, cfg.num_actions, (B,))
        probe = torch.randint(0, cfg.vocab_size + 1, (B, N))  # any partially masked frame
        lp = model(probe[:, None], a[:, None], plain.cache, commit=False, previous=plain.previous_input())
        lr = model(
            probe[:, None], a[:, None], ring.cache, commit=False, start=False, previous=ring.previous_input()
        )
        worst = max(worst, float((lp - lr).abs().max()))
        fp = plain.step(a, 4, 1.0, torch.Generator().manual_seed(t))
        fr = ring.step(a, 4, 1.0, torch.Generator().manual_seed(t))
        assert torch.equal(fp, fr), f"frame {t} differs"
        if t == 5:
            rows = torch.tensor([1])
            fresh = torch.randint(0, cfg.vocab_size, (1, 2, N))
            fresh_actions = torch.randint(0, cfg.num_actions, (1, 1))
            plain.reset_rows(rows, fresh, fresh_actions)
            ring.reset_rows(rows, fresh, fresh_actions)
    assert worst < 1e-5, worst
    assert int(ring.cache.pos) == plain.cache.pos == ring.frame_index


@torch.no_grad()
def test_compiled_world_is_one_graph_and_matches_the_eager_world(tmp_path):
    """The whole step traces into one graph (fullgraph: no graph break, no host sync inside), is not
    recompiled by later steps, resets or row resets of the same batch size, and gives the eager frames."""
    path = random_world(tmp_path / "w", "tiny")
    eager = World.load(path, device="cpu")
    captured = World.load(path, device="cpu", compile=True)
    counter = CompileCounterWithBackend("aot_eager")  # functionalizes the in-place ring writes too
    captured.compile_backend = counter
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for _ in range(3)]
    for world in (eager, captured):
        world.reset(prompts[:2])
    ge, gc = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for t in range(eager.context + 3):
        actions = torch.tensor([t % 4, (t * 3) % 4]) % eager.num_actions
        fe = eager.step(actions, maskgit_steps=3, generator=ge)
        fc = captured.step(actions, maskgit_steps=3, generator=gc)
        assert torch.equal(fe, fc), f"step {t}: frames differ"
        if t == 4:
            for world in (eager, captured):
                world.reset_rows([0], prompts[2])
        if t == 7:
            for world in (eager, captured):
                world.reset(prompts[1:])
            ge.manual_seed(1)
            gc.manual_seed(1)
    assert counter.frame_count == 1, f"{counter.frame_count} graphs compiled"
    assert captured.rollout.frame_index == eager.rollout.frame_index


def test_compile_needs_the_cache_and_a_matching_world(tmp_path):
    path = random_world(tmp_path / "w", "tiny")
    with pytest.raises(GenieValueError, match="use_cache=True"):
        World.load(path, device="cpu", use_cache=False, compile=True)
    with pytest.raises(GenieValueError, match="compile=True"):
        load_world(World.load(path, device="cpu"), compile=True)


def test_hashed_gumbel_samples_the_softmax():
    """argmax(logits + noise) is a draw from softmax(logits); noise of other keys or steps is unrelated."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    keys = torch.tensor([0, 1, 2, 3, 2**31 - 2])
    g = hashed_gumbel(keys, 0, 4000, 5)  # (5 keys, 4000 tokens, 5 classes)
    draws = (logits + g).argmax(-1).flatten()
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    assert (freq - logits.softmax(-1)).abs().max() < 0.012, freq
    assert abs(float(g.mean()) - 0.5772) < 0.02 and abs(float(g.std()) - math.pi / math.sqrt(6)) < 0.02
    other_step = hashed_gumbel(keys, 1, 4000, 5)
    corr = torch.corrcoef(torch.stack([g.flatten(), other_step.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.02
    assert torch.equal(g, hashed_gumbel(keys, 0, 4000, 5))


@torch.no_grad()
def test_temporal_attention_is_shift_invariant_far_into_a_rollout():
    """RoPE makes temporal attention depend on frame differences only: the same frames at frame index
    0 and at 10^6 give the same output (fp32 angles would be off by about 0.02 rad there)."""
    torch.manual_seed(0)
    attn = Attention(64, 4, temporal=True)
    x = torch.randn(2, 5, 3, 64)
    outputs = []
    for t0 in (0, 10**6):
        cache = KVCache(window=4)
        cache.pos = t0
        outputs.append(attn.forward_temporal(x, cache, 0, cache.begin(2, 5, 3, False, x.device)))
    near, far = outputs
    assert (near - far).abs().max() < 1e-4


def test_compiled_env_passes_check_env(tmp_path, monkeypatch):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import envs  # noqa: F401  (registers Genie-v0)

    monkeypatch.setattr(World, "compile_backend", "aot_eager")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    path = random_world(tmp_path / "w", "tiny")
    prompt = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    env = gym.make("Genie-v0", world=str(path), prompt=prompt, maskgit_steps=2, compile=True)
    check_env(env.unwrapped)  # seeding determinism included
    env.close()


@torch.no_grad()
def test_compiled_vector_env_autoresets_like_the_eager_one(tmp_path, monkeypatch):
    from envs.vector_env import GenieVectorEnv

    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(World, "compile_backend", counter)
    path = random_world(tmp_path / "w", "tiny")
    prompt = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    actions = np.random.default_rng(1).integers(0, 8, (9, 3))
    runs = []
    for compile in (False, True):
        env = GenieVectorEnv(
            3, world=str(path), prompt=prompt, maskgit_steps=2, max_episode_steps=3, compile=compile
        )
        obs, _ = env.reset(seed=7)
        frames = [obs]
        for a in actions:  # truncations at 3 steps: NEXT_STEP autoresets go through reset_rows
            obs, _, _, truncated, _ = env.step(a)
            frames.append(obs)
        runs.append(np.stack(frames))
        env.close()
    # The same tokens decode to the same frames up to float rounding at a uint8 boundary: at most one
    # level apart, in a handful of values (measured: 1 of 92,160 on this world), never a different frame.
    diff = np.abs(runs[0].astype(int) - runs[1].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).sum())
    assert counter.frame_count == 1

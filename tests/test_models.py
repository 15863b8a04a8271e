"""Model contracts: causality, exact KV cache, action alignment, VQ dead-code reset, MaskGIT sampling."""

import pytest
import torch

from dynamics.lam import LatentActionModel
from dynamics.model import DynamicsModel
from dynamics.sampling import Rollout, num_masked_after, sample_frame
from genie.core import kernels
from genie.core.blocks import STTransformer
from genie.core.config import preset
from genie.core.errors import GenieValueError
from genie.core.vq import VectorQuantizer
from tokenizer.model import VideoTokenizer


def small_dynamics(mode="additive", seed=0, context=4, previous_frame=True):
    torch.manual_seed(seed)
    cfg = preset(
        "dynamics",
        "tiny",
        grid=4,
        vocab_size=32,
        num_actions=4,
        action_dim=8,
        context=context,
        action_mode=mode,
    )
    cfg.previous_frame = previous_frame  # the presets' True; False: checkpoints written before it
    model = DynamicsModel(cfg).eval()
    model.set_action_codes(torch.randn(4, 8))
    return model


def test_st_transformer_cache_is_exact_past_the_window():
    torch.manual_seed(0)
    model = STTransformer(32, depth=2, heads=4, window=4).eval()
    x = torch.randn(2, 11, 5, 32)
    full = model(x)
    cache = model.new_cache()
    # Mixed chunk sizes: 3 frames, then single frames.
    parts = [model(x[:, :3], cache)] + [model(x[:, t : t + 1], cache) for t in range(3, 11)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.frames == 3  # bounded: W - 1 past frames


def test_uncommitted_cache_reads_do_not_change_the_cache():
    torch.manual_seed(0)
    model = STTransformer(16, depth=1, heads=2, window=4).eval()
    x = torch.randn(1, 3, 4, 16)
    cache = model.new_cache()
    model(x[:, :2], cache)
    before = [t.clone() for t in cache.layers[0]]
    model(torch.randn(1, 1, 4, 16), cache, commit=False)
    assert cache.pos == 2 and all(torch.equal(a, b) for a, b in zip(before, cache.layers[0]))


def test_tokenizer_is_causal_in_time():
    torch.manual_seed(0)
    tok = VideoTokenizer(preset("tokenizer", "tiny")).eval()
    frames = torch.randint(0, 256, (2, 6, 32, 32, 3), dtype=torch.uint8)
    changed = frames.clone()
    changed[:, 4] = 255 - changed[:, 4]  # change frame t+1 = 4
    a, b = tok.encode(frames), tok.encode(changed)
    assert torch.equal(a[:, :4], b[:, :4])
    assert not torch.equal(a[:, 4:], b[:, 4:])


def test_tokenizer_decoder_cache_is_exact():
    torch.manual_seed(0)
    tok = VideoTokenizer(preset("tokenizer", "tiny", context=4)).eval()
    tokens = torch.randint(0, tok.cfg.codebook_size, (2, 9, tok.cfg.grid, tok.cfg.grid))
    full = tok.decode(tokens)
    cache = tok.decoder.new_cache()
    stepped = torch.cat([tok.decode(tokens[:, t : t + 1], cache) for t in range(9)], 1)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-5)


def test_lam_actions_are_causal_and_aligned():
    """a_t (moving frame t to t+1) depends on frames <= t+1 only."""
    torch.manual_seed(0)
    lam = LatentActionModel(preset("lam", "tiny")).eval()
    frames = torch.rand(3, 6, 32, 32, 3)
    latents = lam._action_latents(frames)
    assert latents.shape[:2] == (3, 5) and lam.infer_actions(frames).shape == (3, 5)
    changed = frames.clone()
    changed[:, 3] = torch.rand_like(changed[:, 3])  # frame 3 feeds a_2 (2 -> 3) and later
    after = lam._action_latents(changed)
    torch.testing.assert_close(after[:, :2], latents[:, :2])
    assert not torch.allclose(after[:, 2], latents[:, 2])


@pytest.mark.parametrize("mode,prev", [("additive", True), ("token", True), ("additive", False)])
def test_dynamics_is_causal(mode, prev):
    model = small_dynamics(mode, previous_frame=prev)
    tokens = torch.randint(0, 32, (2, 5, 16))
    actions = torch.randint(0, 4, (2, 4))
    changed = tokens.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 32
    a, b = model(tokens, actions), model(changed, actions)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


@pytest.mark.parametrize("mode,prev", [("additive", True), ("token", True), ("additive", False)])
def test_action_alignment_a_t_enters_frame_t_plus_1(mode, prev):
    """actions[:, t] moves frame t to t+1: it changes logits of frames >= t+1 and none before."""
    model = small_dynamics(mode, previous_frame=prev)
    tokens = torch.randint(0, 32, (1, 5, 16))
    actions = torch.tensor([[0, 1, 2, 3]])
    changed = actions.clone()
    changed[0, 2] = 0  # a_2: frame 2 -> 3
    a, b = model(tokens, actions), model(tokens, changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


@pytest.mark.parametrize("mode,prev", [("additive", True), ("token", True), ("additive", False)])
def test_cached_and_uncached_rollouts_give_the_same_frames(mode, prev):
    model = small_dynamics(mode, context=3, previous_frame=prev)  # window 3: 10 steps slide it several times
    prompt = torch.randint(0, 32, (2, 2, 16))
    prompt_actions = torch.randint(0, 4, (2, 1))
    actions = torch.randint(0, 4, (10, 2))
    frames = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(7)
        r = Rollout(model, use_cache=use_cache)
        r.prompt(prompt, prompt_actions)
        frames.append(torch.stack([r.step(a, steps=5, temperature=1.0, generator=g) for a in actions], 1))
    assert torch.equal(frames[0], frames[1])


def test_sampling_is_deterministic_and_unmasks_everything():
    model = small_dynamics()
    prompt = torch.randint(0, 32, (3, 1, 16))

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        r = Rollout(model)
        r.prompt(prompt)
        return torch.stack(
            [r.step(torch.tensor([0, 1, 2]), steps=6, temperature=1.0, generator=g) for _ in range(3)]
        )

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert int(a.max()) < model.mask_id  # no MASK left after S steps


def test_maskgit_schedule_unmasks_monotonically():
    seen = []

    def logits_fn(tokens):
        seen.append(int((tokens == 10).sum()))
        return torch.randn(1, 16, 10)

    out = sample_frame(
        logits_fn,
        1,
        16,
        10,
        steps=5,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
        device="cpu",
    )
    assert seen == [16] + [num_masked_after(s, 5, 16) for s in range(4)]
    assert seen == sorted(seen, reverse=True)
    assert int(out.max()) < 10


def test_maskgit_update_keeps_unmasked_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 6)
    tokens = torch.tensor([[6] * 4 + [1, 2, 3, 4]] * 2)
    masked = tokens == 6
    new, new_masked = kernels.maskgit_update(logits, tokens, masked, None, 1.0, torch.tensor([2, 0]))
    assert torch.equal(new[:, 4:], tokens[:, 4:])
    assert new_masked.sum(1).tolist() == [2, 0]
    assert not new_masked[:, 4:].any()


def test_dead_code_reset_revives_unused_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 8, reset_every=5).train()
    # Data lives in a narrow cone: at first only a code or two are nearest to any of it.
    center = torch.randn(8)

    def batch():
        return center + 0.3 * torch.randn(512, 8)

    before = int(vq(batch())["active_codes"])
    for _ in range(100):
        vq(batch())
    after = int(vq(batch())["active_codes"])
    assert before <= 5
    assert after >= before + 6, (before, after)
    assert vq.usage_fraction() > 0.5


def test_vq_straight_through_passes_gradients():
    vq = VectorQuantizer(8, 4)
    z = torch.randn(10, 4, requires_grad=True)
    out = vq(z)
    (out["quantized"].sum() + out["loss"]).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0


def test_vq_warmup_passes_latents_through_then_kmeans_gives_each_cluster_its_code():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 8, warmup=5).train()
    centers = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)

    def batch():
        return (centers[:, None] + 0.05 * torch.randn(4, 64, 8)).reshape(-1, 8)

    for _ in range(5):
        z = batch()
        out = vq(z)
        torch.testing.assert_close(out["quantized"], torch.nn.functional.normalize(z, dim=-1))
        assert float(out["loss"]) == 0.0
    codes = vq.eval().nearest(batch()).view(4, 64)
    assert all(len(set(row.tolist())) == 1 for row in codes), codes  # one code per cluster
    assert len(set(codes[:, 0].tolist())) == 4, codes  # and a different one for each


def test_lam_calibration_sets_the_latent_statistics_of_the_data():
    """After calibrate(), eval-mode latents are the latents normalized by the statistics of all the
    calibration data at once (not by a lagging running average): inference sees the codes training saw."""
    torch.manual_seed(0)
    lam = LatentActionModel(preset("lam", "tiny"))
    batches = [torch.randint(0, 256, (4, 3, 32, 32, 3), dtype=torch.uint8) for _ in range(3)]
    assert lam.calibrate(batches) == 3 * 4 * 2
    everything = torch.cat(batches).float() / 255
    with torch.no_grad():
        calibrated = lam.eval()._action_latents(everything)
        population = lam.train()._action_latents(everything)  # one batch holding every transition
    torch.testing.assert_close(calibrated, population, atol=1e-4, rtol=1e-4)


def _shift_world(B: int, T: int, g: torch.Generator, V: int = 16, G: int = 4):
    """Token frames (B, T, G*G) where frame t+1 is frame t rolled one token column left (a = 0),
    right (a = 1) or kept (a = 2): a view that moves with the key, and actions (B, T-1)."""
    f = torch.randint(0, V, (B, G, G), generator=g)
    acts = torch.randint(0, 3, (B, T - 1), generator=g)
    frames = [f]
    for t in range(T - 1):
        shift = (acts[:, t] == 1).long() - (acts[:, t] == 0).long()
        f = torch.stack([torch.roll(f[b], int(shift[b]), dims=1) for b in range(B)])
        frames.append(f)
    return torch.stack(frames, 1).flatten(2), acts


@pytest.mark.parametrize("prev", [True, False])
def test_the_previous_frame_input_learns_which_way_the_view_moves(prev):
    """Teacher-forced, the last frame fully masked: with `previous_frame` 200 steps learn the shift the
    action asks for (and a wrong action predicts the wrong frame); without it, not (0.49 when written)."""
    torch.manual_seed(0)
    cfg = preset("dynamics", "tiny", grid=4, vocab_size=16, num_actions=3, action_dim=8, context=4)
    cfg.previous_frame = prev
    model = DynamicsModel(cfg)
    model.set_action_codes(torch.randn(3, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        tokens, actions = _shift_world(16, 4, g)
        loss = model.compute_loss({"tokens": tokens, "latent_actions": actions})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tokens, actions = _shift_world(64, 4, torch.Generator().manual_seed(1))
    inputs = tokens.clone()
    inputs[:, -1] = model.mask_id
    wrong = actions.clone()
    wrong[:, -1] = (wrong[:, -1] + 1) % 3
    with torch.no_grad():
        right_acc, wrong_acc = (
            float((model(inputs, a)[:, -1].argmax(-1) == tokens[:, -1]).float().mean())
            for a in (actions, wrong)
        )
    if prev:
        assert right_acc >= 0.95 and wrong_acc <= 0.3, (right_acc, wrong_acc)
    else:
        assert right_acc < 0.8, right_acc  # the input this option adds is what learns it in 200 steps


def test_a_dynamics_that_reads_the_previous_frame_refuses_a_chunk_without_it():
    model = small_dynamics()
    cache = model.new_cache()
    model(torch.randint(0, 32, (1, 2, 16)), torch.randint(0, 4, (1, 1)), cache)
    with pytest.raises(GenieValueError, match="previous="):
        model(torch.randint(0, 32, (1, 1, 16)), torch.randint(0, 4, (1, 1)), cache)

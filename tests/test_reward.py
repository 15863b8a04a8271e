"""Reward and termination prediction learns a simple signal, and the envs return it."""

import numpy as np
import pytest
import torch
from synthetic import sprite_frame, write_reward_dataset

from genie.data import VideoDataset
from genie.train import recipes
from genie.world import World, random_world, save_world


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("reward")
    data = write_reward_dataset(root / "data")
    tok = recipes.train_tokenizer(
        data, root / "tok", preset_name="tiny", steps=150, context=2, batch_size=16, lr=2e-3, progress=False
    )["model"]
    reward = recipes.train_reward(
        data,
        tok,
        root / "reward",
        preset_name="tiny",
        steps=300,
        batch_size=32,
        lr=2e-3,
        progress=False,
        termination_from="next",
    )["model"]
    return data, tok.eval(), reward.eval()


def test_reward_model_learns_a_synthetic_signal(trained):
    data, tok, reward = trained
    ds = VideoDataset(data)
    pred_r, pred_d, true_r, true_d = [], [], [], []
    for e in ds.split_episodes("val"):
        ep = ds.episode(e)
        tokens = tok.encode(torch.from_numpy(np.array(ep["frames"]))[None]).flatten(2)[0]  # (T, N)
        pairs = torch.stack([tokens[:-1], tokens[1:]], dim=1)  # transitions t -> t+1
        r, d = reward.predict(pairs)
        pred_r.append(r), pred_d.append(d)
        (
            true_r.append(torch.from_numpy(np.array(ep["rewards"]))),
            true_d.append(torch.from_numpy(np.array(ep["terminated"]))),
        )
    pred_r, pred_d, true_r, true_d = map(torch.cat, (pred_r, pred_d, true_r, true_d))
    assert true_r.sum() > 0 and true_d.sum() > 0
    reward_acc = ((pred_r > 0.5) == (true_r > 0.5)).float().mean()
    recall_d = (pred_d & true_d).sum() / true_d.sum()
    false_d = (pred_d & ~true_d).sum() / (~true_d).sum()
    assert reward_acc >= 0.95, reward_acc  # always predicting 0 would score about 0.75
    assert recall_d >= 0.8 and false_d <= 0.05, (recall_d, false_d)


def test_envs_return_predicted_rewards_as_python_types(trained, tmp_path):
    import gymnasium as gym

    import genie  # noqa: F401

    data, tok, reward = trained
    base = World.load(random_world(tmp_path / "base", "tiny"))
    path = save_world(tmp_path / "w", tok, _dynamics_for(tok, base), None, {}, reward=reward)
    world = World.load(path)
    assert world.predicts_rewards
    env = gym.make("Genie-v0", world=str(path), prompt=np.zeros((16, 16, 3), np.uint8)).unwrapped
    env.reset(seed=0)
    _, r, terminated, truncated, _ = env.step(0)
    assert type(r) is float and type(terminated) is bool and type(truncated) is bool
    vec = gym.make_vec(
        "Genie-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        world=str(path),
        prompt=np.zeros((16, 16, 3), np.uint8),
    )
    vec.reset(seed=0)
    _, rewards, terms, _, _ = vec.step(np.array([0, 1, 2]))
    assert rewards.shape == (3,) and terms.dtype == bool
    # The env reports exactly what the world's reward model predicts for the transition just imagined.
    expected = env.world.predict_reward_done()
    assert r == float(expected[0][0]) and terminated == bool(expected[1][0])


def _dynamics_for(tok, base):
    from dynamics.model import DynamicsModel
    from genie.core.config import dynamics_preset

    torch.manual_seed(0)
    dyn = DynamicsModel(dynamics_preset("tiny", tok.cfg, base.lam.cfg))
    dyn.set_action_codes(base.lam.action_vectors())
    return dyn


def test_eval_reports_termination_precision_and_recall_on_held_out_transitions(trained, tmp_path):
    from genie.train.evaluate import evaluate_termination

    data, tok, reward = trained
    base = World.load(random_world(tmp_path / "base", "tiny"))
    world = World.load(save_world(tmp_path / "w", tok, _dynamics_for(tok, base), None, {}, reward=reward))
    ds = VideoDataset(data)
    ends = sum(int(np.sum(ds.episode(e)["terminated"])) for e in ds.split_episodes("val"))
    result = evaluate_termination(world, data)
    assert result["split"] == "val" and result["true_ends"] == ends > 0  # every real end is scored
    assert result["recall"] >= 0.8 and result["precision"] >= 0.8, result
    # A head that always says "ended" has recall 1 and precision at the data's end rate: the figure can fail.
    world.reward_model.head.bias.data[1] = 1e4
    always = evaluate_termination(world, data)
    assert always["recall"] == 1.0 and always["precision"] < 0.5, always
    assert evaluate_termination(World.load(random_world(tmp_path / "none", "tiny")), data) is None


@pytest.fixture(scope="module")
def hazard(tmp_path_factory):
    root = tmp_path_factory.mktemp("hazard")
    data = write_reward_dataset(root / "data", ends="current")
    tok = recipes.train_tokenizer(
        data, root / "tok", preset_name="tiny", steps=150, context=2, batch_size=16, lr=2e-3, progress=False
    )["model"]
    reward = recipes.train_reward(
        data, tok, root / "reward", preset_name="tiny", steps=300, batch_size=32, lr=2e-3, progress=False
    )["model"]  # the preset's head: a hazard read from frame t
    return data, tok.eval(), reward.eval()


def test_a_hazard_head_reads_the_end_from_frame_t_and_imagination_draws_it(hazard, tmp_path):
    from envs.vector_env import GenieVectorEnv
    from genie.train.evaluate import evaluate_termination

    data, tok, reward = hazard
    assert reward.cfg.termination_from == "current"
    base = World.load(random_world(tmp_path / "base", "tiny"))
    world = World.load(save_world(tmp_path / "w", tok, _dynamics_for(tok, base), None, {}, reward=reward))
    result = evaluate_termination(world, data)
    assert result["termination_from"] == "current" and result["auc"] >= 0.95, result
    assert result["recall"] >= 0.7 and result["precision"] >= 0.7, result  # expected under the draws
    assert 0.5 * result["true_ends"] <= result["predicted_ends"] <= 2 * result["true_ends"], result
    # In imagination the end is drawn from the prompt frame's hazard, whatever the dynamics draws next.
    ends = {}
    for name, corner in (("end cell", (12, 12)), ("elsewhere", (0, 4))):
        prompt = sprite_frame(np.array(corner), 16, 4)
        envs = GenieVectorEnv(num_envs=64, world=world, prompt=prompt, max_episode_steps=None)
        runs = []
        for _ in range(2):
            envs.reset(seed=7)
            runs.append(envs.step(np.zeros(64, dtype=np.int64))[2])
        assert (runs[0] == runs[1]).all()  # the same seed draws the same ends
        ends[name] = runs[0].mean()
    assert ends["end cell"] >= 0.7 and ends["elsewhere"] <= 0.2, ends


def test_calibrating_the_hazard_makes_the_expected_ends_the_real_ones(hazard):
    import copy

    from dynamics.reward import fit_end_bias
    from genie.core.errors import GenieValueError
    from genie.train.evaluate import _termination_transitions, calibrate_hazard

    data, tok, reward = hazard
    ds = VideoDataset(data)

    def expected_and_true(model):
        logit, t, weight, _, n_ends, _, _ = _termination_transitions(
            tok, model, ds, "train", 4000, 64, 0, "cpu"
        )
        return float((model.end_probability(logit).double() * weight).sum()), n_ends

    fitted = []
    for shift in (0.0, -3.0):  # -3: a head three nats less sure of every end (an under-trained one)
        model = copy.deepcopy(reward)
        model.head.bias.data[1] += shift
        fit = calibrate_hazard(model, tok, data)
        expected, true = expected_and_true(model)
        assert fit["true_ends"] == true > 0 and expected == pytest.approx(true, rel=1e-6)
        fitted.append(model.cfg.end_bias)
    assert fitted[1] - fitted[0] == pytest.approx(3.0, abs=1e-4)  # the shift is undone exactly
    assert reward.cfg.end_bias == 0.0  # the fixture's own model was not touched
    with pytest.raises(GenieValueError, match="No episode ends"):
        fit_end_bias(torch.zeros(4), torch.zeros(4), torch.ones(4), 10.0)


def test_a_reward_on_one_changed_token_is_learned_when_the_head_reads_changes():
    """The Breakout failure in small: the reward is one token changing among many. The presets' head
    (reads_change, rare rewards weighted up) ranks rewarded transitions first; the detection report says
    a flat head is at chance."""
    from dynamics.reward import RewardModel
    from genie.core.config import RewardConfig
    from genie.train.evaluate import _reward_detection

    torch.manual_seed(0)
    cfg = RewardConfig(
        grid=4, vocab_size=16, d_model=32, depth=1, heads=4, reward_weight=20.0, reads_change=True
    )
    model = RewardModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def batch(n=64):
        frame = torch.randint(0, 16, (n, 16))
        nxt = frame.clone()
        hit = torch.rand(n) < 0.05  # rare, as Breakout's rewards
        pos = torch.randint(0, 16, (n,))
        nxt[hit, pos[hit]] = (nxt[hit, pos[hit]] + 1) % 16
        return {
            "tokens": torch.stack([frame, nxt], 1),
            "rewards": hit.float()[:, None],
            "terminated": torch.zeros(n, 1),
        }

    for _ in range(150):
        loss = model.compute_loss(batch())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = batch(512)
    with torch.no_grad():
        predicted, _ = model(test["tokens"])
    found = _reward_detection(predicted, test["rewards"][:, 0])
    assert found["reward_auc"] > 0.95 and found["rewarded"] > 5
    flat = _reward_detection(torch.full((512,), 0.03), test["rewards"][:, 0])
    assert flat["reward_auc"] == 0.5 and flat["reward_std"] == 0.0

"""Real games as data that tells the truth: the recorded action is the one the game executed, the
settings each step ran are written down, VizDoom works by its bare id with its own action names, and
its frames are the game screen, never the automap."""

import numpy as np
import pytest

from genie.core.frames import resize_frame
from genie.data import VideoDataset
from genie.data.games import make_env, observe
from genie.data.sources import collect


def test_atari_sticky_actions_are_off_and_recorded(tmp_path):
    pytest.importorskip("ale_py")
    collect("ALE/Breakout-v5", 2, tmp_path / "honest", size=32, max_steps=60, policy="random", progress=False)
    meta = VideoDataset(tmp_path / "honest").meta
    assert meta["repeat_action_probability"] == 0.0 and meta["frame_skip"] == 4
    assert meta["env_kwargs"] == {"repeat_action_probability": 0.0}  # what rl eval replays the game with
    sticky = {"repeat_action_probability": 0.25}
    collect(
        "ALE/Breakout-v5", 1, tmp_path / "sticky", size=32, max_steps=5, env_kwargs=sticky, progress=False
    )
    assert VideoDataset(tmp_path / "sticky").meta["repeat_action_probability"] == 0.25  # overridable


def test_replaying_the_recorded_actions_gives_the_recorded_frames(tmp_path):
    """The recorded actions are the executed ones: played again from the same seed in a game that
    executes exactly what it is given, they reproduce every recorded frame."""
    pytest.importorskip("ale_py")
    collect("ALE/Breakout-v5", 2, tmp_path / "ds", size=32, max_steps=80, policy="random", progress=False)
    ds = VideoDataset(tmp_path / "ds")
    env = make_env("ALE/Breakout-v5", {})
    for k in range(ds.num_episodes):
        episode = ds.episode(k)
        obs, _ = env.reset(seed=k)
        frames = [resize_frame(observe(env, obs, "ALE/Breakout-v5"), 32, "stretch")]
        for a in episode["actions"]:
            obs, *_ = env.step(int(a))
            frames.append(resize_frame(observe(env, obs, "ALE/Breakout-v5"), 32, "stretch"))
        np.testing.assert_array_equal(np.stack(frames), np.asarray(episode["frames"]))
    env.close()


def test_vizdoom_by_bare_id_with_its_button_names(tmp_path):
    pytest.importorskip("vizdoom")
    summary = collect("VizdoomTakeCover-v1", 2, tmp_path / "doom", size=32, max_steps=20, progress=False)
    ds = VideoDataset(tmp_path / "doom")
    meta = ds.meta
    assert summary["episodes"] == 2 and meta["env_id"] == "VizdoomTakeCover-v1"
    # Discrete action i presses row i of the wrapper's button map: 0 nothing, 1 the last button, ...
    assert meta["action_names"] == ["NOOP", "MOVE_RIGHT", "MOVE_LEFT"] and meta["num_actions"] == 3
    assert meta["frame_skip"] == 1 and meta["repeat_action_probability"] is None
    assert ds.has_actions and ds.has_rewards
    collect(
        "vizdoom.gymnasium_wrapper:VizdoomTakeCover-v1",
        1,
        tmp_path / "long",
        size=32,
        max_steps=5,
        progress=False,
    )
    assert VideoDataset(tmp_path / "long").meta["action_names"] == ["NOOP", "MOVE_RIGHT", "MOVE_LEFT"]


def test_vizdoom_frames_are_the_screen_not_the_automap(tmp_path):
    """Freedoom maps render the automap beside the screen; the data holds the screen only."""
    pytest.importorskip("vizdoom")
    env_id = "VizdoomFreedoom1E2M1-S1-v0"
    env = make_env(env_id, {})
    obs, _ = env.reset(seed=0)
    screen, rendered = observe(env, obs, env_id), env.render()
    env.close()
    assert rendered.shape[1] == 2 * screen.shape[1]  # screen | automap
    collect(env_id, 1, tmp_path / "map", size=32, max_steps=3, progress=False)
    first = np.asarray(VideoDataset(tmp_path / "map").episode(0)["frames"][0])
    np.testing.assert_array_equal(first, resize_frame(screen, 32, "stretch"))
    assert not np.array_equal(first, resize_frame(rendered, 32, "stretch"))


def test_observe_prefers_the_screen_of_a_dict_observation():
    class Wide:
        def render(self):
            return np.ones((4, 8, 3), np.uint8)

    screen = np.zeros((4, 4, 3), np.uint8)
    assert observe(Wide(), {"screen": screen, "automap": screen + 1}, "x") is screen
    assert observe(Wide(), np.zeros(2), "x").shape == (4, 8, 3)


def test_agreement_confusion_table_sums_to_the_held_out_transitions():
    from genie.cli.commands import confusion_table
    from genie.train.metrics import action_agreement

    rng = np.random.default_rng(0)
    real = rng.integers(0, 3, 500)
    latent = (real * 2 + (rng.random(500) < 0.2)) % 8  # two codes per real action, mostly
    agree = action_agreement(latent, real, 8, 3, fit_size=200)
    confusion = np.asarray(agree["confusion"])
    assert confusion.shape == (8, 3) and confusion.sum() == agree["test"] == 300
    mapped = np.asarray(agree["mapping"]["real_for_latent"])
    hits = sum(confusion[z, mapped[z]] for z in range(8))
    assert agree["accuracy"] == hits / 300 and agree["accuracy"] > 0.7
    assert agree["chance"] == confusion.sum(0).max() / 300
    table = confusion_table(
        {"latent_by_real": agree["confusion"], "real_action_names": ["NOOP", "L", "R"]}, 0.4
    )
    assert "NOOP" in table and "300 held-out transitions" in table


def test_identify_finds_visible_actions_and_says_chance(tmp_path):
    """The sprite's moves show in every frame pair: the probes find them; NOOP moves nothing."""
    from synthetic import write_sprite_dataset

    from genie.train.identify import identify

    data = write_sprite_dataset(tmp_path / "s", episodes=20, length=24, size=16, sprite=4, step=4, wrap=False)
    report = identify(data, steps=150, progress=False)
    assert report["pair_probe_accuracy"] >= 0.9 and report["history_probe_accuracy"] >= 0.9
    assert report["chance"] < 0.5 and report["test_transitions"] == 2 * 23
    assert report["motion_per_action"][0] == 0.0 and min(report["motion_per_action"][1:]) > 10

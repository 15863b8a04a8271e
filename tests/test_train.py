"""The one training loop: exact resume, multi-process through accelerate, it learns, checkpoints."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from synthetic import write_sprite_dataset

from genie.checkpoint import load_model, read_run, save_model
from genie.core.errors import GenieError
from genie.data import VideoDataset
from genie.data.sources import collect
from genie.train import recipes
from genie.train.evaluate import evaluate_tokenizer
from genie.train.metrics import psnr


@pytest.fixture(scope="module")
def sprite_data(tmp_path_factory):
    return write_sprite_dataset(
        tmp_path_factory.mktemp("sprites") / "data", episodes=8, length=12, size=32, sprite=8, step=4
    )


@pytest.fixture(scope="module")
def riverraid(tmp_path_factory):
    # River Raid scrolls, so its mean frame is a fair baseline (Breakout's mean frame is ~40 dB: only the
    # ball and paddle move).
    out = tmp_path_factory.mktemp("atari") / "riverraid"
    collect("ALE/Riverraid-v5", episodes=8, out=out, size=32, seed=0, max_steps=120, progress=False)
    return out


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_equals_an_uninterrupted_run(sprite_data, tmp_path):
    kw = dict(preset_name="tiny", steps=8, context=4, batch_size=2, lr=1e-3, progress=False, ckpt_every=100)
    torch.manual_seed(0)
    full = recipes.train_tokenizer(sprite_data, tmp_path / "full", **kw)["model"]
    torch.manual_seed(0)
    from genie.core.config import preset
    from genie.data import WindowDataset
    from genie.train.loop import train
    from tokenizer.model import VideoTokenizer

    # Interrupted at step 3, then resumed from disk in a fresh model object.
    cfg = recipes._train_config(8, batch_size=2, lr=1e-3, ckpt_every=100)
    windows = WindowDataset(sprite_data, 4, "train")
    torch.manual_seed(0)
    first = VideoTokenizer(preset("tokenizer", "tiny", image_size=32, context=4))
    train(first, windows, cfg, tmp_path / "split", progress=False, stop_after=3)
    assert json.loads((tmp_path / "split" / "trainer.json").read_text())["step"] == 3
    torch.manual_seed(123)  # a different process state must not matter
    second = VideoTokenizer(preset("tokenizer", "tiny", image_size=32, context=4))
    train(second, windows, cfg, tmp_path / "split", resume=True, progress=False)
    a, b = _weights(full), _weights(second)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_process_gloo_training_through_accelerate(sprite_data, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, torch
        from genie.train import recipes
        s = recipes.train_tokenizer({str(sprite_data)!r}, {str(tmp_path / "run")!r}, preset_name="tiny",
                                    steps=3, context=4, batch_size=2, progress=False)
        from accelerate import PartialState
        state = PartialState()
        total = sum(float(p.double().sum()) for p in s["model"].parameters())
        open({str(tmp_path)!r} + f"/rank{{state.process_index}}_of_{{state.num_processes}}.txt", "w").write(repr(total))
    """)
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(29500 + os.getpid() % 1000),
        str(script),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(p.name for p in tmp_path.glob("rank*_of_2.txt"))
    assert ranks == ["rank0_of_2.txt", "rank1_of_2.txt"]
    # DDP all-reduced the gradients: both ranks hold the same weights.
    assert (tmp_path / ranks[0]).read_text() == (tmp_path / ranks[1]).read_text()
    state = read_run(tmp_path / "run")["dir"] / "state"  # the committed checkpoint holds every rank's RNG
    assert sorted(p.name for p in state.glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]


def test_tiny_tokenizer_learns_atari_beyond_the_mean_frame(riverraid, tmp_path):
    """Trained briefly (300 steps) on recorded River Raid, the tiny tokenizer's held-out reconstructions
    beat the mean training frame by >= 3 dB (measured: 27.9 vs 22.7 dB)."""
    torch.manual_seed(0)
    recipes.train_tokenizer(
        riverraid,
        tmp_path / "tok",
        preset_name="tiny",
        steps=300,
        context=2,
        batch_size=8,
        lr=2e-3,
        progress=False,
    )
    result = evaluate_tokenizer(tmp_path / "tok", riverraid, windows=16, progress=False)
    ds = VideoDataset(riverraid)
    train_frames = np.concatenate([np.asarray(ds.episode(e)["frames"]) for e in ds.split_episodes("train")])
    mean_frame = torch.from_numpy(train_frames.astype(np.float32).mean(0) / 255.0)
    val_frames = torch.from_numpy(
        np.concatenate([np.asarray(ds.episode(e)["frames"]) for e in ds.split_episodes("val")])
    )
    baseline = float(psnr(mean_frame.expand(len(val_frames), -1, -1, -1), val_frames).mean())
    assert result["psnr"] >= baseline + 3.0, (result, baseline)
    assert 0 < result["codebook_usage"] <= 1


def test_checkpoint_round_trip_and_mismatches(tmp_path):
    from genie.core.config import preset
    from tokenizer.model import VideoTokenizer

    torch.manual_seed(0)
    model = VideoTokenizer(preset("tokenizer", "tiny")).eval()
    save_model(model, tmp_path / "tok")
    loaded = load_model(tmp_path / "tok", "tokenizer")
    frames = torch.randint(0, 256, (1, 3, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(model.encode(frames), loaded.encode(frames))
    with pytest.raises(GenieError, match="holds a tokenizer checkpoint, not a dynamics"):
        load_model(tmp_path / "tok", "dynamics")
    with pytest.raises(FileNotFoundError, match="No genie checkpoint"):
        load_model(tmp_path / "missing")
    cfg = json.loads((tmp_path / "tok" / "config.json").read_text())
    (tmp_path / "tok" / "config.json").write_text(json.dumps({**cfg, "version": 99}))
    with pytest.raises(ValueError, match="format version 99"):
        load_model(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text(json.dumps(cfg))
    weights = tmp_path / "tok" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors is truncated"):  # its size is in config.json
        load_model(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "files"}))
    with pytest.raises(ValueError, match="lists no checksum of model.safetensors"):  # format 2 must list them
        load_model(tmp_path / "tok")
    old = {**{k: v for k, v in cfg.items() if k != "files"}, "version": 1}
    (tmp_path / "tok" / "config.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="unreadable"):  # a checkpoint of older genie: no checksums
        load_model(tmp_path / "tok")
    (tmp_path / "tok" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(tmp_path / "tok")


def _genie(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "genie.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "tokenizer", "--data", "/nonexistent/data", "--out", "OUT", "--steps", "1"],
            "No dataset at",
        ),
        (
            ["train", "tokenizer", "--data", "DATA", "--out", "OUT", "--preset", "huge"],
            "Unknown preset 'huge'",
        ),
        (["eval", "tokenizer", "--checkpoint", "/nonexistent/ckpt", "--data", "DATA"], "No genie checkpoint"),
        (["collect", "--env", "NotAnEnv-v9", "--episodes", "1", "--out", "OUT"], "NotAnEnv-v9"),
        (
            ["train", "tokenizer", "--data", "DATA", "--out", "OUT", "--context", "500", "--steps", "1"],
            "--context",
        ),
    ],
)
def test_cli_bad_input_gives_one_clear_line(sprite_data, tmp_path, args, message):
    args = [str(sprite_data) if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    proc = _genie(*args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out" / "model").exists()


def test_train_refuses_to_overwrite_a_run_without_resume(sprite_data, tmp_path):
    kw = dict(preset_name="tiny", steps=1, context=4, batch_size=2, progress=False)
    recipes.train_tokenizer(sprite_data, tmp_path / "run", **kw)
    with pytest.raises(ValueError, match="--resume"):
        recipes.train_tokenizer(sprite_data, tmp_path / "run", **kw)


def test_the_tiny_preset_keeps_its_tokens_per_frame_and_its_defaults_on_64px_data(tmp_path):
    """tiny is sized for 32x32 (patch 4: an 8x8 token grid). On 64x64 data the tokenizer's patch doubles
    and the LAM pools 2x, so tokens per frame (and the cost) stay those of 32x32; a resumed run keeps the
    patch it started with. Where --steps / --lr are not given, the preset's defaults are used."""
    data = write_sprite_dataset(tmp_path / "big", episodes=4, length=16, size=64, sprite=8, step=8)
    tok = recipes.train_tokenizer(data, tmp_path / "tok", preset_name="tiny", steps=2, progress=False)
    assert (tok["model"].cfg.patch, tok["model"].cfg.grid) == (8, 8)
    assert read_run(tmp_path / "tok")["train"]["lr"] == 1e-3  # tiny's default, not 3e-4
    lam = recipes.train_lam(data, tmp_path / "lam", preset_name="tiny", steps=2, progress=False)
    assert (lam["model"].cfg.pool, lam["model"].cfg.grid) == (2, 8)
    small = write_sprite_dataset(tmp_path / "small", episodes=4, length=12, size=32, sprite=8, step=4)
    tok32 = recipes.train_tokenizer(small, tmp_path / "tok32", preset_name="tiny", steps=2, progress=False)
    assert (tok32["model"].cfg.patch, tok32["model"].cfg.grid) == (4, 8)
    demo = recipes.train_tokenizer(data, tmp_path / "demo", preset_name="demo", steps=1, progress=False)
    assert demo["model"].cfg.patch == 8  # demo is sized for 64x64 already
    resumed = recipes.train_tokenizer(
        data, tmp_path / "tok", preset_name="tiny", steps=3, resume=True, progress=False
    )
    assert resumed["model"].cfg.patch == 8 and read_run(tmp_path / "tok")["step"] == 3
    # A run started at another rate (an older genie's default) resumes at that rate.
    recipes.train_tokenizer(small, tmp_path / "old", preset_name="tiny", steps=2, lr=3e-4, progress=False)
    recipes.train_tokenizer(small, tmp_path / "old", preset_name="tiny", steps=3, resume=True, progress=False)
    assert read_run(tmp_path / "old")["train"]["lr"] == 3e-4


def test_a_resumed_world_keeps_the_steps_its_models_started_with(sprite_data, tmp_path):
    """`train world --resume` without --steps finishes each model at the steps it started with (here 2),
    not at the preset's default (tiny: 600 and more): finished stages are skipped, not trained on."""
    kw = dict(preset_name="tiny", context=3, batch_size=2, progress=False)
    recipes.train_world(sprite_data, tmp_path / "world", steps=2, **kw)
    runs = tmp_path / "world" / "train"
    before = {k: (runs / k / "trainer.json").stat().st_mtime_ns for k in ("tokenizer", "lam", "dynamics")}
    result = recipes.train_world(sprite_data, tmp_path / "world", resume=True, **kw)
    assert result["info"]["steps_per_model"] == {"tokenizer": 2, "lam": 2, "dynamics": 2}
    assert {k: (runs / k / "trainer.json").stat().st_mtime_ns for k in before} == before


def test_eval_world_json_prints_one_json_object_and_nothing_else(tmp_path, capsys):
    from genie.cli import main
    from genie.world import random_world

    world = random_world(tmp_path / "w", "tiny")
    data = write_sprite_dataset(tmp_path / "d", episodes=12, length=12, size=32)
    assert (
        main(["eval", "world", "--world", str(world), "--data", str(data), "--windows", "2", "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)  # the confusion table and summary lines stay out of it
    assert result["windows"] == 2 and "action_use" in result and result["action_agreement"] is not None

"""Lie-proof files: checksums of weights, training state and episode arrays are checked on load; corrupt,
truncated, wrong-shape and NaN inputs, a full disk and appended seeds each get one typed sentence."""

import errno
import json
import os
import shutil

import numpy as np
import pytest
import torch

from genie.checkpoint import load_model, read_config, read_run, save_model
from genie.cli.commands import main
from genie.core.config import preset
from genie.core.errors import GenieCorruptFileError, GenieDiskFullError, GenieError, GenieValueError
from genie.core.io import mount_point
from genie.data import EpisodeWriter, VideoDataset
from genie.data.episodes import verify_dataset
from genie.train import recipes
from genie.world import random_world, read_world
from genie.world.folder import export_world
from tokenizer.model import VideoTokenizer

KW = dict(preset_name="tiny", steps=2, context=2, batch_size=1, progress=False, save_every=2)


def _flip_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _one_sentence(e) -> str:
    text = str(e.value)
    assert "\n" not in text and text.endswith("."), text
    return text


def _model(tmp_path):
    torch.manual_seed(0)
    model = VideoTokenizer(preset("tokenizer", "tiny", image_size=16, context=2))
    return model, save_model(model, tmp_path / "tok")


# --- Weights ---


def test_weights_with_a_changed_byte_or_cut_short_are_refused(tmp_path):
    _, folder = _model(tmp_path)
    weights = folder / "model.safetensors"
    assert "files" in json.loads((folder / "config.json").read_text())
    _flip_byte(weights)  # the header still parses: only the checksum can tell
    with pytest.raises(GenieCorruptFileError, match="model.safetensors is corrupt.*blake2b") as e:
        load_model(folder)
    assert "restore" in _one_sentence(e)
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(GenieCorruptFileError, match="truncated"):
        load_model(folder)


def test_saving_over_a_checkpoint_swaps_it_in_one_step(tmp_path):
    model, folder = _model(tmp_path)
    save_model(model, folder, meta={"second": True})
    assert load_model(folder).meta == {"second": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]  # no .tok.tmp-*/.tok.old-* left


def test_weights_holding_nan_are_refused(tmp_path):
    model, _ = _model(tmp_path)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_model(model, tmp_path / "nan")
    with pytest.raises(GenieCorruptFileError, match="NaN or infinite") as e:
        load_model(tmp_path / "nan")
    _one_sentence(e)


@pytest.mark.parametrize(
    "edit",
    [
        lambda info: [info],  # not an object
        lambda info: {k: v for k, v in info.items() if k != "config"},
        lambda info: {**info, "config": [1, 2]},
        lambda info: {**info, "kind": "painter"},
        lambda info: {**info, "config": {**info["config"], "d_model": "wide"}},
        lambda info: {**info, "config": {**info["config"], "d_model": 7}},  # not divisible by the heads
    ],
)
def test_config_json_of_the_wrong_shape_is_one_sentence(tmp_path, edit):
    _, folder = _model(tmp_path)
    info = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(edit(info)))
    with pytest.raises(GenieValueError) as e:
        load_model(folder)
    _one_sentence(e)


# --- Worlds ---


def test_world_json_of_random_bytes_or_wrong_shape_is_one_sentence(tmp_path):
    world = random_world(tmp_path / "w")
    good = (world / "world.json").read_bytes()
    (world / "world.json").write_bytes(os.urandom(256))
    with pytest.raises(GenieValueError, match="corrupt") as e:
        read_world(world)
    _one_sentence(e)
    (world / "world.json").write_bytes(good.replace(b'"num_actions": 8', b'"num_actions": "eight"'))
    with pytest.raises(GenieValueError, match="num_actions"):
        read_world(world)


def test_a_world_mixed_from_two_writes_is_refused_and_export_holds_the_lock(tmp_path):
    a, b = random_world(tmp_path / "a", seed=0), random_world(tmp_path / "b", seed=1)
    shutil.rmtree(a / "dynamics")
    shutil.copytree(b / "dynamics", a / "dynamics")  # as a write interrupted between two parts leaves it
    with pytest.raises(GenieValueError, match="dynamics/.*interrupted") as e:
        read_world(a)
    _one_sentence(e)
    from genie.core.io import OutputLock

    with OutputLock(tmp_path / "out"), pytest.raises(GenieError, match="is writing to"):
        export_world(b, tmp_path / "out")
    export_world(b, tmp_path / "out", with_lam=False)
    _, models = read_world(tmp_path / "out")
    assert sorted(models) == ["dynamics", "tokenizer"]


# --- Training state ---


@pytest.mark.parametrize(
    "name", ["state/optimizer.bin", "state/model.safetensors", "state/random_states_0.pkl"]
)
def test_training_state_cut_short_or_zeroed_is_refused_on_resume(small_sprite_data, run, name):
    path = read_run(run)["dir"] / name
    size = path.stat().st_size
    path.write_bytes(bytes(size))  # zeroed: same size, so only the checksum tells
    with pytest.raises(GenieCorruptFileError, match=f"{name.split('/')[1]} is corrupt") as e:
        recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 3})
    _one_sentence(e)
    path.write_bytes(bytes(size // 2))
    with pytest.raises(GenieCorruptFileError, match="truncated"):
        recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 3})


def test_truncated_trainer_json_is_one_sentence(small_sprite_data, run):
    text = (run / "trainer.json").read_text()
    (run / "trainer.json").write_text(text[: len(text) // 2])
    with pytest.raises(GenieCorruptFileError, match="trainer.json is corrupt") as e:
        recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 3})
    _one_sentence(e)


def test_a_run_of_older_genie_resumes_and_its_interrupted_swap_is_repaired(small_sprite_data, run, tmp_path):
    """Layout of genie <= 0.2: model/, state/ and a trainer.json without "format", committed by renames."""
    info = read_run(run)
    os.rename(info["dir"] / "model", run / "model")
    os.rename(info["dir"] / "state", run / ".state.old-123")  # killed between the two renames of state/
    (run / ".state.tmp-abc").mkdir()
    shutil.rmtree(info["dir"])
    (run / "trainer.json").write_text(json.dumps({"step": 2, "train": info["train"], "meta": info["meta"]}))
    assert read_config(run)["path"] == str(run / "model")
    recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 3})
    assert read_run(run)["step"] == 3 and not read_run(run)["legacy"]
    assert not any(p.name in ("model", "state", ".state.old-123", ".state.tmp-abc") for p in run.iterdir())
    load_model(run)


def test_the_lam_calibration_is_a_new_commit_of_the_same_step(small_sprite_data, tmp_path):
    out = tmp_path / "lam"
    summary = recipes.train_lam(small_sprite_data, out, **{**KW, "batch_size": 2})  # batch norm: > 1
    info = read_run(out)
    assert info["step"] == 2 and info["dir"].name == "ckpt-000002.1"
    assert [p.name for p in out.iterdir() if p.name.startswith("ckpt-")] == ["ckpt-000002.1"]
    loaded = load_model(out, "lam").state_dict()
    for k, v in summary["model"].state_dict().items():
        assert torch.equal(loaded[k], v.float()), k


def test_a_full_disk_during_a_checkpoint_is_one_sentence_and_loses_nothing(
    small_sprite_data, run, monkeypatch
):
    import genie.checkpoint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(genie.checkpoint, "save_file", full)
    with pytest.raises(
        GenieDiskFullError, match=f"No space left on {mount_point(run)} while writing .*nothing was lost"
    ) as e:
        recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 4})
    _one_sentence(e)
    assert not any(p.name.endswith(".staging") for p in run.iterdir())  # the half-written copy is gone
    monkeypatch.undo()
    assert read_run(run)["step"] == 2
    recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 4})
    assert read_run(run)["step"] == 4


# --- Datasets ---


def _dataset(root, seed=None, episodes=3):
    meta = {"source": "gym", "env_id": "Test-v0", "num_actions": 4, "seed": seed}
    with EpisodeWriter(root, meta=meta) as w:
        for ep in range(episodes):
            frames = np.full((5, 4, 4, 3), ep, np.uint8)
            w.add_episode(frames, actions=np.arange(4), rewards=np.ones(4))
    return root


def test_every_episode_has_a_manifest_and_a_changed_array_is_found(tmp_path, monkeypatch, capsys):
    import genie.data.episodes

    monkeypatch.setattr(genie.data.episodes, "_HASHED_ON_OPEN", 200)  # frames.npy (368 bytes) counts as large
    root = _dataset(tmp_path / "ds")
    ep = root / "episodes" / "ep_000001"
    files = json.loads((ep / "manifest.json").read_text())["files"]
    assert sorted(files) == ["actions.npy", "frames.npy", "rewards.npy"]
    _flip_byte(ep / "actions.npy")  # small arrays are hashed when the dataset opens
    with pytest.raises(GenieCorruptFileError, match="actions.npy is corrupt") as e:
        VideoDataset(root)
    assert "delete" in _one_sentence(e)
    _flip_byte(ep / "actions.npy")
    _flip_byte(ep / "frames.npy")  # frames: size at open, blake2b when the episode is first read
    ds = VideoDataset(root)
    ds.episode(0)  # the intact episode reads
    with pytest.raises(GenieCorruptFileError, match="frames.npy is corrupt"):
        ds.episode(1)
    with pytest.raises(GenieCorruptFileError, match="frames.npy is corrupt"):
        verify_dataset(root)
    assert main(["check", str(root)]) == 1  # `genie check DIR`: one line, exit 1
    assert "frames.npy is corrupt" in capsys.readouterr().err
    _flip_byte(ep / "frames.npy")
    assert main(["check", str(root)]) == 0
    assert "episodes verified" in capsys.readouterr().out
    (ep / "frames.npy").write_bytes((ep / "frames.npy").read_bytes()[:-7])
    with pytest.raises(GenieCorruptFileError, match="frames.npy is truncated"):
        VideoDataset(root)


def test_a_deleted_array_is_named_not_silently_dropped(tmp_path):
    root = _dataset(tmp_path / "ds")
    os.remove(root / "episodes" / "ep_000002" / "actions.npy")
    with pytest.raises(GenieCorruptFileError, match="ep_000002/actions.npy is missing"):
        VideoDataset(root)


def test_appending_refuses_repeated_seeds_and_records_every_run(tmp_path):
    root = _dataset(tmp_path / "ds", seed=10)
    with pytest.raises(GenieValueError, match="--seed 13") as e:
        EpisodeWriter(root, meta={"seed": 10})
    _one_sentence(e)
    before = (root / "dataset.json").read_text()
    with pytest.raises(GenieValueError, match="--seed 13"):
        EpisodeWriter(root, meta={"seed": 12})
    assert (root / "dataset.json").read_text() == before  # a refused run changes nothing
    with EpisodeWriter(root, meta={"seed": 13}) as w:
        assert w.next_seed == 13
        w.add_episode(np.zeros((2, 4, 4, 3), np.uint8), actions=[0], rewards=[0.0])
    runs = VideoDataset(root).meta["runs"]
    assert [(r["first_episode"], r["seed"]) for r in runs] == [(0, 10), (3, 13)]
    assert all("started" in r for r in runs)
    with pytest.raises(GenieValueError, match="--seed 14"):
        EpisodeWriter(root, meta={"seed": 0})


def test_a_full_disk_while_writing_an_episode_is_one_sentence(tmp_path, monkeypatch):
    import genie.data.episodes

    root = _dataset(tmp_path / "ds")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with EpisodeWriter(root) as w:
        monkeypatch.setattr(genie.data.episodes, "_save_npy", full)
        with pytest.raises(
            GenieDiskFullError, match=f"No space left on {mount_point(root)} while writing .*ep_000003"
        ) as e:
            w.add_episode(np.zeros((3, 4, 4, 3), np.uint8))
        _one_sentence(e)
        assert not any((root / ".tmp").iterdir())
    assert VideoDataset(root).num_episodes == 3

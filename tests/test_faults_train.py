"""Faults of training runs that were let through before issue #16's audit, each refused with one typed
sentence: a config.json without its checksum list or with a list as its kind, a checkpoint without its
manifest, a trainer.json naming a missing checkpoint (nothing is deleted), a zeroed RNG file in a run of
older genie, a full disk while logging, out-of-range training numbers, and a kill while the LAM's
calibration is committed (the resumed LAM is the calibrated one). Tiny tokenizer / LAM on 16px frames."""

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from genie.checkpoint import clean_run, load_model, read_config, read_run, save_model
from genie.core.config import preset
from genie.core.errors import GenieCorruptFileError, GenieDiskFullError, GenieLockedError, GenieValueError
from genie.core.io import CRASH_EXIT_CODE, OutputLock
from genie.data import VideoDataset, WindowDataset
from genie.train import loop, recipes
from tokenizer.model import VideoTokenizer

REPO = Path(__file__).resolve().parents[1]
KW = dict(preset_name="tiny", steps=2, context=2, batch_size=1, progress=False, save_every=2)
LAM_KW = {**KW, "batch_size": 2}  # batch norm: > 1
SCRIPT = textwrap.dedent(f"""
    import sys
    from genie.train import recipes
    recipes.train_lam(sys.argv[1], sys.argv[2], **{LAM_KW!r})
""")
RECOMMIT_CRASHES = {  # GENIE_CRASH_AT -> what the kill leaves beside ckpt-000002/ (uncalibrated, current)
    "recommit": ".ckpt-000002.staging",  # the calibrated copy staged, its commit not begun
    "recommit-pointer": "ckpt-000002.1",  # committed but for trainer.json: its .tmp written, not renamed
}


def _one_sentence(e) -> str:
    text = str(e.value)
    assert "\n" not in text and text.endswith("."), text
    return text


def _mount(path) -> str:
    path = os.path.abspath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def _saved_tokenizer(folder) -> Path:
    torch.manual_seed(0)
    return save_model(VideoTokenizer(preset("tokenizer", "tiny", image_size=16, context=2)), folder)


def _edit_config(folder, edit) -> None:
    info = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(edit(info)))


# --- config.json ---


@pytest.mark.parametrize(
    "edit",
    [
        lambda info: {k: v for k, v in info.items() if k != "files"},
        lambda info: {**info, "files": {}},
        lambda info: {**info, "files": {"other.bin": info["files"]["model.safetensors"]}},
    ],
)
def test_a_version_2_config_without_its_weights_checksum_is_refused(tmp_path, edit):
    folder = _saved_tokenizer(tmp_path / "tok")
    _edit_config(folder, edit)
    (folder / "model.safetensors").write_bytes(bytes((folder / "model.safetensors").stat().st_size))
    with pytest.raises(GenieCorruptFileError, match="lists no checksum of model.safetensors") as e:
        load_model(folder)
    assert "retrain or restore" in _one_sentence(e)


def test_a_version_1_config_needs_no_checksum_list(tmp_path):
    """Configs written before checksums (format 1, genie <= 0.1.0) list no files and still load."""
    folder = _saved_tokenizer(tmp_path / "old")
    info = json.loads((folder / "config.json").read_text())
    info["version"] = 1
    info.pop("files")
    (folder / "config.json").write_text(json.dumps(info))
    assert load_model(folder).kind == "tokenizer"


@pytest.mark.parametrize("kind", [["tokenizer"], {"tokenizer": 1}, 3])
def test_a_kind_that_is_not_a_string_is_one_sentence(tmp_path, kind):
    folder = _saved_tokenizer(tmp_path / "tok")
    _edit_config(folder, lambda info: {**info, "kind": kind})
    for read in (read_config, load_model):
        with pytest.raises(GenieValueError, match="names no known model kind") as e:
            read(folder)
        _one_sentence(e)


# --- Run folders ---


@pytest.mark.parametrize("damage", ["delete", "folder"])
def test_a_checkpoint_without_its_manifest_is_refused_on_resume(small_sprite_data, run, damage):
    manifest = read_run(run)["dir"] / "manifest.json"
    manifest.unlink()
    if damage == "folder":
        manifest.mkdir()
    with pytest.raises(GenieCorruptFileError, match="manifest.json is missing or unreadable") as e:
        recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 3})
    assert "new --out" in _one_sentence(e)
    assert read_run(run)["step"] == 2


def test_a_pointer_to_a_missing_checkpoint_deletes_nothing(small_sprite_data, run):
    pointer = json.loads((run / "trainer.json").read_text())
    (run / "trainer.json").write_text(json.dumps({**pointer, "checkpoint": "ckpt-000009"}))
    (run / ".ckpt-000004.staging").mkdir()  # a leftover clean_run would otherwise remove
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(GenieCorruptFileError, match="ckpt-000009, which is missing, so nothing was removed"):
        clean_run(run)
    with pytest.raises(GenieCorruptFileError, match="nothing was removed") as e:
        recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 3})
    _one_sentence(e)
    assert sorted(p.name for p in run.iterdir()) == before  # ckpt-000002, the good one, is kept
    load_model(run / "ckpt-000002" / "model")


def _as_older_genie(run) -> Path:
    """The layout of genie <= 0.2: model/ and state/ beside a trainer.json without "format" (no manifest)."""
    info = read_run(run)
    for part in ("model", "state"):
        os.rename(info["dir"] / part, run / part)
    shutil.rmtree(info["dir"])
    (run / "trainer.json").write_text(json.dumps({"step": 2, "train": info["train"], "meta": info["meta"]}))
    return run / "state" / "random_states_0.pkl"


def test_a_zeroed_rng_state_in_a_run_without_manifest_is_refused(small_sprite_data, run):
    rng = _as_older_genie(run)
    rng.write_bytes(bytes(rng.stat().st_size))  # accelerate would log INFO and resume with fresh RNG
    with pytest.raises(GenieCorruptFileError, match="random_states_0.pkl is missing or unreadable") as e:
        recipes.train_tokenizer(small_sprite_data, run, resume=True, **{**KW, "steps": 3})
    assert "restore" in _one_sentence(e)
    assert read_run(run)["step"] == 2 and (run / "state").is_dir()


# --- A full disk while logging ---


def _full_disk_for(name):
    real = open

    def fake_open(path, *args, **kwargs):
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    return fake_open


def test_a_full_disk_while_logging_metrics_names_the_mount(small_sprite_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(loop, "open", _full_disk_for("metrics.csv"), raising=False)
    with pytest.raises(GenieDiskFullError) as e:
        recipes.train_tokenizer(small_sprite_data, out, **{**KW, "log_every": 1})
    text = _one_sentence(e)
    assert text.startswith(f"No space left on {_mount(out)} while writing {out / 'metrics.csv'}:"), text
    assert "on device" not in text and "nothing was lost" in text
    assert isinstance(e.value, OSError)


class _HalfWrittenImage:
    """Image.fromarray(...) whose save writes a few bytes, then finds the disk full."""

    def __init__(self, *args):
        pass

    def save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89PNG")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_writing_pngs_leaves_no_half_file(small_sprite_data, tmp_path, monkeypatch):
    monkeypatch.setattr(loop.Image, "fromarray", _HalfWrittenImage)  # loop and recipes share PIL.Image
    strip = tmp_path / "samples" / "step_0000001.png"
    frames = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    with pytest.raises(
        GenieDiskFullError, match=f"No space left on {_mount(tmp_path)} while writing .*step_"
    ):
        loop.save_strip(strip, frames, frames)
    assert not strip.exists()
    prompts = tmp_path / "world" / "prompts"
    with pytest.raises(GenieDiskFullError, match="while writing .*prompts") as e:
        recipes.save_prompts(VideoDataset(small_sprite_data), prompts)
    _one_sentence(e)
    assert not prompts.exists()


def test_a_full_disk_while_truncating_metrics_keeps_them(tmp_path, monkeypatch):
    path = tmp_path / "metrics.csv"
    rows = "step,lr,frames_per_s,loss\n1,0.1,1.0,0.5\n2,0.1,1.0,0.4\n"
    path.write_text(rows)

    def full(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(GenieDiskFullError, match="while writing .*metrics.csv"):
        loop._truncate_metrics(path, 1)
    assert path.read_text() == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # no .metrics.csv.tmp left


# --- Training numbers ---

BASE = loop.TrainConfig(steps=2, batch_size=1, ckpt_every=2)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("log_every", 0, "an integer >= 1"),
        ("log_every", True, "an integer >= 1"),
        ("grad_accum", 0, "an integer >= 1"),
        ("steps", 2.5, "an integer >= 1"),
        ("batch_size", -1, "an integer >= 1"),
        ("ckpt_every", 0, "an integer >= 1"),  # named with its recipe name: "ckpt_every (save_every)"
        ("warmup", -1, "an integer >= 0"),
        ("image_every", -5, "an integer >= 0"),
        ("num_workers", -1, "an integer >= 0"),
        ("seed", -1, r"an integer in \[0, 4294967295\]"),
        ("seed", 2**64, r"an integer in \[0, 4294967295\]"),
        ("lr", 0.0, "a number > 0"),
        ("lr", -3e-4, "a number > 0"),
        ("lr", float("nan"), "a number > 0"),
        ("lr", "3e-4", "a number > 0"),
        ("min_lr_ratio", 1.5, r"a number in \[0, 1\]"),
        ("weight_decay", -0.01, "a number >= 0"),
        ("grad_clip", float("inf"), "a number >= 0"),
        ("mixed_precision", "fp32", "one of 'auto', 'no', 'bf16', 'fp16'"),
    ],
)
def test_training_numbers_out_of_range_are_refused_before_anything_is_written(
    small_sprite_data, tmp_path, field, value, allowed
):
    cfg = dataclasses.replace(BASE, **{field: value})
    model = VideoTokenizer(preset("tokenizer", "tiny", image_size=16, context=2))
    windows = WindowDataset(small_sprite_data, 2, "train")
    with pytest.raises(GenieValueError, match=f"TrainConfig.{field}.* must be {allowed}, got ") as e:
        loop.train(model, windows, cfg, tmp_path / "run", progress=False)
    _one_sentence(e)
    assert not (tmp_path / "run").exists()


def test_training_numbers_at_the_edges_of_their_ranges_are_accepted():
    edges = dict(warmup=0, image_every=0, grad_clip=0.0, weight_decay=0, min_lr_ratio=1, seed=2**32 - 1, lr=1)
    loop.check_config(dataclasses.replace(BASE, **edges))
    for mp in loop.MIXED_PRECISION:
        loop.check_config(dataclasses.replace(BASE, mixed_precision=mp))


def test_recipes_pass_bad_numbers_on_as_one_sentence(small_sprite_data, tmp_path):
    with pytest.raises(GenieValueError, match="TrainConfig.log_every must be an integer >= 1, got 0"):
        recipes.train_tokenizer(small_sprite_data, tmp_path / "run", **{**KW, "log_every": 0})


# --- A kill while the LAM's calibration is committed ---


@pytest.fixture(scope="module")
def lam_crashed(small_sprite_data, tmp_path_factory):
    """The LAM runs killed at each point of the calibration's commit, all started at once."""
    root = tmp_path_factory.mktemp("lam-crashed")
    procs = {}
    for phase in RECOMMIT_CRASHES:
        env = {**os.environ, "GENIE_CRASH_AT": phase, "GENIE_CRASH_STEP": "2", "CUDA_VISIBLE_DEVICES": ""}
        out = root / phase
        cmd = [sys.executable, "-c", SCRIPT, str(small_sprite_data), str(out)]
        procs[phase] = (subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE), out)

    def wait(phase):
        proc, out = procs[phase]
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == CRASH_EXIT_CODE, err.decode()[-2000:]
        return out

    yield wait
    for proc, _ in procs.values():
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def calibrated_lam(small_sprite_data, lam_crashed, tmp_path_factory):
    """The uninterrupted LAM (trained while the crashed runs start); its calibration is committed with the
    run's lock held."""
    out = tmp_path_factory.mktemp("lam") / "run"
    real, held = recipes.save_model, []

    def save_model_checking_the_lock(*args, **kwargs):
        with pytest.raises(GenieLockedError):
            OutputLock(out).acquire()
        held.append(True)
        return real(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(recipes, "save_model", save_model_checking_the_lock)
    try:
        recipes.train_lam(small_sprite_data, out, **LAM_KW)
    finally:
        mp.undo()
    assert held == [True]
    assert (out / ".lock").read_text() == ""  # released after
    lam = load_model(out, "lam")
    assert lam.meta["calibrated"]
    return lam.state_dict()


@pytest.mark.parametrize("phase", RECOMMIT_CRASHES)
def test_a_kill_during_the_calibration_commit_resumes_calibrated(
    small_sprite_data, lam_crashed, calibrated_lam, capfd, phase
):
    out = lam_crashed(phase)
    assert read_run(out)["step"] == 2
    assert not read_config(out)["meta"].get("calibrated")  # the commit did not happen
    assert not recipes._finished(out, 2, "lam")  # so `train world --resume` redoes this stage
    left = sorted(p.name for p in out.iterdir() if p.name not in ("metrics.csv", "samples", ".lock"))
    tmp = [n for n in left if n.startswith(".trainer.json.") and n.endswith(".tmp")]
    assert len(tmp) == (phase == "recommit-pointer"), left
    assert sorted(set(left) - set(tmp)) == sorted(["ckpt-000002", "trainer.json", RECOMMIT_CRASHES[phase]])
    before = load_model(out / "ckpt-000002" / "model", "lam").state_dict()  # the training statistics
    assert not torch.equal(before["enc_norm.running_mean"], calibrated_lam["enc_norm.running_mean"])
    capfd.readouterr()
    got = recipes._stage(
        recipes.train_lam,
        out,
        2,
        True,
        "lam",
        data=small_sprite_data,
        **{k: v for k, v in LAM_KW.items() if k != "steps"},
    )["model"]
    said = [line for line in capfd.readouterr().err.splitlines() if "interrupted checkpoint" in line]
    assert len(said) == 1 and "resuming from step 2" in said[0], said
    loaded = load_model(out, "lam")
    assert loaded.meta["calibrated"] and recipes._finished(out, 2, "lam")
    for k, v in calibrated_lam.items():
        assert torch.equal(loaded.state_dict()[k], v), k
        assert torch.equal(got.state_dict()[k].float(), v), k
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".ckpt", "ckpt", ".trainer"))) == [
        "ckpt-000002.1"
    ]


def test_train_world_commits_its_prompts_with_the_models_and_restores_a_world_moved_aside(
    small_sprite_data, tmp_path
):
    """The prompts are written beside the runs and committed by the world's one swap (the live world is
    never edited in place); a world a killed swap moved aside is put back by the rerun, not retrained."""
    from genie.world import read_world

    out = tmp_path / "world"
    kw = dict(preset_name="tiny", steps=2, context=3, batch_size=2, progress=False)
    recipes.train_world(small_sprite_data, out, **kw)
    info, _ = read_world(out)
    assert info["prompts"] and set(info["parts"]["prompts"]) == set(info["prompts"])
    parts = json.loads((out / "world.json").read_text())["parts"]
    trained = (out / "train" / "tokenizer" / "trainer.json").stat().st_mtime_ns
    os.rename(out, tmp_path / ".world.old-999")  # a kill between the swap's two renames
    recipes.train_world(small_sprite_data, out, resume=True, **kw)
    assert json.loads((out / "world.json").read_text())["parts"] == parts
    assert (out / "train" / "tokenizer" / "trainer.json").stat().st_mtime_ns == trained  # not retrained
    assert not (tmp_path / ".world.old-999").exists()

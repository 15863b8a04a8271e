"""The `genie` CLI's inputs: every number checked before any work (one sentence, exit 1), --help shows
defaults, `genie sample` counts what it writes, play's screenshots folder and crisp scaling."""

import argparse

import imageio.v3 as iio
import numpy as np
import pytest
from helpers_env import one_torch_thread, prompt_image, tiny_world  # noqa: F401
from PIL import Image

import play
from genie.cli.commands import build_parser, main

TRAIN = ["train", "tokenizer", "--data", "no/such/data", "--out", "no/such/out"]
WORLD = ["train", "world", "--data", "no/such/data", "--out", "no/such/out"]


@pytest.mark.parametrize(
    "argv, sentence",
    [
        (TRAIN + ["--steps", "0"], "--steps must be an integer >= 1, got 0."),
        (TRAIN + ["--steps", "-5"], "--steps must be an integer >= 1, got -5."),
        (WORLD + ["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0."),
        (WORLD + ["--lr", "0"], "--lr must be a number > 0, got 0.0."),
        (WORLD + ["--lr", "nan"], "--lr must be a number > 0, got nan."),
        (WORLD + ["--num-actions", "1"], "--num-actions must be an integer >= 2, got 1."),
        (WORLD + ["--context", "1"], "--context must be an integer >= 2, got 1."),
        (WORLD + ["--num-workers", "-1"], "--num-workers must be an integer >= 0, got -1."),
        (WORLD + ["--lam-steps", "0"], "--lam-steps must be an integer >= 1, got 0."),
        (["collect", "--env", "X-v0", "--out", "o", "--episodes", "0"], "--episodes must be an integer >= 1"),
        (
            ["collect", "--env", "X-v0", "--out", "o", "--sticky-prob", "2"],
            "--sticky-prob must be a number in [0, 1]",
        ),
        (["ingest", "no/such.mp4", "--out", "o", "--size", "4"], "--size must be an integer >= 8, got 4."),
        (
            ["eval", "world", "--world", "w", "--data", "d", "--horizon", "0"],
            "--horizon must be an integer >= 1",
        ),
        (
            ["sample", "--world", "w", "--prompt", "p", "--actions", "1", "--out", "c.gif", "--fps", "0"],
            "--fps",
        ),
        (["rl", "train", "--out", "o", "--num-envs", "0"], "--num-envs must be an integer >= 1, got 0."),
        (["play", "--scale", "0"], "--scale must be an integer >= 1, got 0."),
        (["bench", "--sizes", "1,x"], "--sizes must be comma-separated integers >= 1"),
    ],
)
def test_bad_numbers_one_sentence_exit_1(argv, sentence, capsys):
    assert main(argv) == 1  # the paths do not exist: a check after any work would say so instead
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {sentence}"), captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_play_py_checks_numbers_too(capsys):
    assert play.main(["--headless", "--max-frames", "2", "--fps", "0"]) == 1
    assert capsys.readouterr().out.strip().splitlines() == ["error: --fps must be an integer >= 1, got 0."]


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "tokenizer", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "default: the preset's, tokenizer/LAM/dynamics/reward: tiny 600/400/1400/1500 at lr 0.001" in text
    assert "demo 1000 at lr 0.0003" in text and "(default: 8)" in text
    for parser in _parsers(build_parser()):
        if parser.prog == "genie bench":
            continue  # genie/cli/bench.py's own --device help is not this file's
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if action.required or not action.option_strings or action.default in (False, argparse.SUPPRESS):
                continue
            if action.default is None:
                assert "default" in (action.help or ""), f"{parser.prog} {action.option_strings[0]}"
            else:
                assert "default" in text and (
                    f"(default: {action.default})" in text or "default" in action.help
                ), f"{parser.prog} {action.option_strings[0]}"


def test_ingest_help_explains_fit(capsys):
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "crop keeps the centred square (camera footage" in text and "game recordings" in text
    assert "pad" in text and "stretch" in text and "--skip-bad" in text


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_inputs")
    return tiny_world(folder / "world"), prompt_image(folder / "prompt.png")


def test_sample_count_matches_the_file(world, tmp_path, capsys):
    world_dir, prompt = world
    out = tmp_path / "clip.gif"
    argv = ["sample", "--world", str(world_dir), "--prompt", str(prompt), "--actions", "1,0,2"]
    assert main(argv + ["--maskgit-steps", "1", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("sampled 4 frames (the prompt and 3 steps)") and len(iio.imread(out)) == 4
    assert main(argv[:-2] + ["--actions", ",", "--out", str(out)]) == 1
    assert "--actions needs at least one" in capsys.readouterr().err


def test_screenshots_folder_and_crisp_pixels(world, tmp_path, monkeypatch, capsys):
    import pygame

    def smooth(*args, **kwargs):
        raise AssertionError("the frame must be scaled with nearest-neighbour, not smoothscale")

    monkeypatch.setattr(pygame.transform, "smoothscale", smooth)
    monkeypatch.chdir(tmp_path)
    world_dir, prompt = world
    argv = ["--world", str(world_dir), "--prompt", str(prompt), "--headless", "--keys", "s"]
    assert play.main(argv + ["--maskgit-steps", "1", "--scale", "4"]) == 0
    saved = capsys.readouterr().out.strip().splitlines()[0]
    shots = list((tmp_path / "screenshots").glob("*.png"))
    assert len(shots) == 1 and saved == f"saved {shots[0].relative_to(tmp_path)}"
    pixels = np.asarray(Image.open(shots[0]).convert("RGB"))[: 32 * 4, : 32 * 4]
    blocks = pixels.reshape(32, 4, 32, 4, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # each world pixel is a uniform 4x4 block
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1

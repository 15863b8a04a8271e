"""play.py / `genie play`: headless scripted play, recording, the summary line, key mapping, errors."""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
from helpers_env import one_torch_thread, prompt_image, tiny_world  # noqa: F401

import play
from genie.cli.keymap import Keymap
from genie.core.errors import GenieValueError

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^frames=(\d+) fps=\d+\.\d+ mean_step_ms=\d+\.\d+$")
MAPPING = {
    "real_action_names": ["NOOP", "LEFT", "RIGHT", "FIRE", "UPLEFT"],
    "latent_for_real": [2, 3, 5, 7, 1],
}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    path = tiny_world(tmp_path_factory.mktemp("play_world") / "world")
    info = json.loads((path / "world.json").read_text())
    (path / "world.json").write_text(json.dumps({**info, "action_mapping": MAPPING}))
    return path


@pytest.fixture(scope="module")
def prompt(tmp_path_factory):
    return prompt_image(tmp_path_factory.mktemp("play_prompt") / "p.png")


@pytest.fixture
def headless(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # restored after the test (play sets it too)
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")


def run_play(*args):
    env = {
        **os.environ,
        "SDL_VIDEODRIVER": "dummy",
        "SDL_AUDIODRIVER": "dummy",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, str(ROOT / "play.py"), "--headless", *map(str, args)]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def summary_frames(stdout: str) -> int:
    match = SUMMARY.match(stdout.strip().splitlines()[-1])
    assert match, stdout
    return int(match.group(1))


def test_headless_script_records_gif(world_dir, prompt, tmp_path):
    out = tmp_path / "clip.gif"
    args = f"--keys 1,2,left,-,space --max-frames 9 --maskgit-steps 2 --threads 1 --record {out}".split()
    proc = run_play("--world", world_dir, "--prompt", prompt, *args)
    assert proc.returncode == 0, proc.stderr
    frames = summary_frames(proc.stdout)
    assert frames == 9  # the prompt frame + 8 steps (5 scripted keys, then the idle action)
    assert iio.imread(out).shape == (9, 32, 32, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.gif"]  # no temporary left behind


def test_pause_reset_screenshot_mp4(world_dir, prompt, tmp_path, headless, capsys):
    out = tmp_path / "clip.mp4"
    argv = [
        "--world",
        str(world_dir),
        "--prompt",
        str(prompt),
        "--headless",
        "--record",
        str(out),
        "--keys",
        "1,2,s,-,p,3,p,r,8,esc,4",
        "--screenshot-dir",
        str(tmp_path / "shots"),
        "--maskgit-steps",
        "1",
    ]
    assert play.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # 1 prompt frame + steps 1, 2, s (idle), - (idle); p pauses; 3 is swallowed; p resumes (idle); r; 8; esc quits
    assert summary_frames(lines[-1]) == 8
    assert lines[0].startswith("saved ") and len(list((tmp_path / "shots").glob("*.png"))) == 1
    assert iio.imread(out).shape == (8, 32, 32, 3)


def test_bad_prompt_one_line_nonzero(world_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    proc = run_play("--world", world_dir, "--prompt", bad, "--max-frames", 3)
    assert proc.returncode != 0
    assert proc.stdout.strip().splitlines() == [
        f"error: Prompt {bad} is not a readable image: pass a PNG or JPEG frame."
    ]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--world", "nowhere", "--max-frames", "2"], "genie train world"),
        (["--keys", "1,q"], "unknown keys"),
        (["--record", "x.avi", "--max-frames", "2"], "--record"),
        ([], "--max-frames"),
    ],
)
def test_user_errors(world_dir, prompt, headless, capsys, argv, words):
    base = ["--headless", "--prompt", str(prompt)]
    if "--world" not in argv:
        base += ["--world", str(world_dir)]
    assert play.main(base + argv) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("error: ") and words in out[0]


def test_keymap_from_action_mapping():
    km = Keymap.for_world(8, {"action_mapping": MAPPING})
    assert km.actions["1"] == 0 and km.actions["8"] == 7
    assert km.actions["left"] == 3 and km.actions["right"] == 5 and km.actions["space"] == 7
    assert km.idle_action == 2 and "up" not in km.actions  # UPLEFT stays on its number key
    legend = km.legend()
    assert legend[0] == "Left: LEFT  Right: RIGHT  Space: FIRE  (no key: NOOP)"  # the game's keys first
    assert legend[1] == "1-8: raw latent actions 0-7"
    assert Keymap.for_world(8, {"action_mapping": MAPPING}, idle_action=4).idle_action == 4
    plain = Keymap.for_world(8, {})
    assert plain.idle_action == 0 and set(plain.actions) == {str(k) for k in range(1, 9)}
    for bad in ({"real_action_names": ["LEFT"]}, {"real_action_names": ["LEFT"], "latent_for_real": [8]}):
        with pytest.raises(GenieValueError, match="action_mapping"):
            Keymap.for_world(8, {"action_mapping": bad})


def test_keymap_doom_buttons():
    doom = {
        "real_action_names": ["NOOP", "MOVE_FORWARD", "TURN_RIGHT", "TURN_LEFT"],
        "latent_for_real": [6, 1, 3, 0],
    }
    km = Keymap.for_world(8, {"action_mapping": doom})
    assert (km.actions["left"], km.actions["right"], km.actions["up"]) == (0, 3, 1) and km.idle_action == 6
    assert km.legend()[0] == "Left: TURN_LEFT  Right: TURN_RIGHT  Up: MOVE_FORWARD  (no key: NOOP)"


def test_genie_play_cli(world_dir, prompt, headless, capsys):
    from genie.cli.play import add_cli

    parser = argparse.ArgumentParser(prog="genie")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "play",
            "--world",
            str(world_dir),
            "--prompt",
            str(prompt),
            "--headless",
            "--max-frames",
            "3",
            "--maskgit-steps",
            "1",
        ]
    )
    assert args.func(args) == 0
    assert summary_frames(capsys.readouterr().out) == 3

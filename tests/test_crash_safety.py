"""Fault injection: a real training run killed at each point of a checkpoint commit resumes to the same
weights as an uninterrupted run, logs each step once, and the next run cleans (and says) what was left.

The kill is `os._exit` at a named point of the writer (GENIE_CRASH_AT=<phase>, GENIE_CRASH_STEP=<step>,
genie.core.io.crash_point): no cleanup runs, as with kill -9. Tiny tokenizer on 16px frames, 6 steps, a
checkpoint every 2 steps, killed at each point of a commit (the first one's, at step 2, or step 4's), or
after step 5 was logged. The crashed runs are subprocesses, all started at once; resumes run in this process.
"""

import csv
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from genie.checkpoint import load_model, read_run
from genie.core.errors import GenieLockedError
from genie.core.io import CRASH_EXIT_CODE, OutputLock
from genie.train import recipes

REPO = pathlib.Path(__file__).resolve().parents[1]
KW = dict(preset_name="tiny", steps=6, context=2, batch_size=1, progress=False, save_every=2, log_every=1)
SCRIPT = textwrap.dedent(f"""
    import sys
    from genie.train import recipes
    recipes.train_tokenizer(sys.argv[1], sys.argv[2], **{KW!r})
""")
CRASHES = {  # (phase, step) -> (step committed when it died, whether the commit left something to clean)
    ("state", 2): (None, True),  # the first commit: accelerate state staged, model not yet
    ("staged", 4): (2, True),  # staging complete and fsynced, not renamed
    ("renamed", 4): (2, True),  # ckpt-000004/ in place, trainer.json still points at step 2
    ("pointer", 4): (2, True),  # trainer.json's new copy written and fsynced, not renamed over it
    ("committed", 4): (4, True),  # trainer.json points at step 4, ckpt-000002/ not yet removed
    ("step", 5): (4, False),  # between checkpoints: step 5 logged, never committed
}


@pytest.fixture(scope="module")
def crashed(small_sprite_data, tmp_path_factory):
    """Start every crashed run; {(phase, step): wait()} returns its run folder once it died."""
    root = tmp_path_factory.mktemp("crashed")
    procs = {}
    for phase, step in CRASHES:
        env = {
            **os.environ,
            "GENIE_CRASH_AT": phase,
            "GENIE_CRASH_STEP": str(step),
            "CUDA_VISIBLE_DEVICES": "",
        }
        out = root / f"{phase}-{step}"
        cmd = [sys.executable, "-c", SCRIPT, str(small_sprite_data), str(out)]
        procs[phase, step] = (subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE), out)

    def waiter(key):
        def wait():
            proc, out = procs[key]
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == CRASH_EXIT_CODE, err.decode()[-2000:]
            return out

        return wait

    yield {key: waiter(key) for key in procs}
    for proc, _ in procs.values():
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def reference(small_sprite_data, crashed, tmp_path_factory):
    """The uninterrupted run's final weights (trained while the crashed runs start)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    recipes.train_tokenizer(small_sprite_data, out, **KW)
    return load_model(out).state_dict()


def _logged_steps(out) -> list[int]:
    with open(out / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def _cleaning_lines(capfd) -> list[str]:
    return [line for line in capfd.readouterr().err.splitlines() if "interrupted checkpoint" in line]


def _assert_finished_like_the_reference(out, reference) -> None:
    got = load_model(out).state_dict()
    assert got.keys() == reference.keys()
    for k in reference:
        assert torch.equal(got[k], reference[k]), k
    assert _logged_steps(out) == [1, 2, 3, 4, 5, 6]  # each step once
    assert read_run(out)["step"] == 6
    assert sorted(p.name for p in out.iterdir() if p.name not in ("metrics.csv", "samples")) == [
        ".lock",
        "ckpt-000006",
        "trainer.json",
    ]


@pytest.mark.parametrize("phase, step", [key for key, (committed, _) in CRASHES.items() if committed])
def test_kill_during_a_checkpoint_resumes_exactly(small_sprite_data, crashed, reference, capfd, phase, step):
    committed, leftovers = CRASHES[phase, step]
    out = crashed[phase, step]()
    assert read_run(out)["step"] == committed
    assert _logged_steps(out)[-1] == step  # rows past the committed step, dropped on resume
    capfd.readouterr()
    recipes.train_tokenizer(small_sprite_data, out, resume=True, **KW)
    said = _cleaning_lines(capfd)
    assert len(said) == int(leftovers), said
    if leftovers:
        assert f"resuming from step {committed}" in said[0]
    _assert_finished_like_the_reference(out, reference)


def test_kill_before_the_first_commit_lets_a_fresh_start_begin(small_sprite_data, crashed, reference, capfd):
    out = crashed["state", 2]()
    assert read_run(out) is None and (out / ".ckpt-000002.staging" / "state").is_dir()
    capfd.readouterr()
    recipes.train_tokenizer(small_sprite_data, out, **KW)  # no --resume: cleaned, said, and it runs
    said = _cleaning_lines(capfd)
    assert len(said) == 1 and "nothing had been committed yet" in said[0]
    _assert_finished_like_the_reference(out, reference)


def test_one_writer_per_training_folder_and_a_stale_lock_is_taken_over(small_sprite_data, tmp_path, capfd):
    out = tmp_path / "run"
    kw = {**KW, "steps": 1}
    with OutputLock(out), pytest.raises(GenieLockedError, match=f"PID {os.getpid()}.*--out"):
        recipes.train_tokenizer(small_sprite_data, out, **kw)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (out / ".lock").write_text(gone.stdout)  # the PID of a process that has exited: a stale lock
    capfd.readouterr()
    recipes.train_tokenizer(small_sprite_data, out, **kw)
    assert f"took over the lock of process {gone.stdout.strip()}" in capfd.readouterr().err
    assert (out / ".lock").read_text() == ""  # released


def test_resume_of_a_run_that_committed_nothing_starts_at_step_0(small_sprite_data, tmp_path, capfd):
    out = tmp_path / "run"
    (out / ".ckpt-000002.staging" / "state").mkdir(parents=True)
    (out / "metrics.csv").write_text("step,lr,frames_per_s,loss\n1,0.1,1.0,0.5\n2,0.1,1.0,0.4\n")
    capfd.readouterr()
    recipes.train_tokenizer(small_sprite_data, out, resume=True, **{**KW, "steps": 1})
    err = capfd.readouterr().err
    assert "nothing had been committed yet" in err and "starting at step 0" in err
    assert _logged_steps(out) == [1] and read_run(out)["step"] == 1
    with pytest.raises(FileNotFoundError, match="Nothing to resume.*without --resume"):
        recipes.train_tokenizer(small_sprite_data, tmp_path / "empty", resume=True, **KW)

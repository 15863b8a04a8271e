import os
import shutil
import sys

import pytest

# Test helpers (synthetic data) live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
from synthetic import write_sprite_dataset  # noqa: E402

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@pytest.fixture(scope="module")
def small_sprite_data(tmp_path_factory):
    """4 sprite episodes of 8 frames at 16x16: enough for a training run of a few steps."""
    return write_sprite_dataset(
        tmp_path_factory.mktemp("sprites") / "data", episodes=4, length=8, size=16, sprite=4, step=4
    )


@pytest.fixture(scope="module")
def trained_run(small_sprite_data, tmp_path_factory):
    """A tiny tokenizer run of 2 steps with a checkpoint (the checksum and fault tests corrupt copies)."""
    from genie.train import recipes

    out = tmp_path_factory.mktemp("run") / "run"
    kw = dict(preset_name="tiny", steps=2, context=2, batch_size=1, progress=False, save_every=2)
    recipes.train_tokenizer(small_sprite_data, out, **kw)
    return out


@pytest.fixture
def run(trained_run, tmp_path):
    """A fresh copy of trained_run for one test to damage."""
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path / "run"


def pytest_collection_modifyitems(config, items):
    """Triton parity tests run in the interpreter worker that tests/test_kernels.py starts (TRITON_INTERPRET
    must be set before triton is imported); in this process they are deselected, not skipped, and the
    worker test asserts that every one of them passed there."""
    if os.environ.get("GENIE_KERNELS_TEST_WORKER") == "1":
        return
    worker_only, keep = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        uses_triton = "use_triton" in getattr(item, "fixturenames", ()) or params.get("backend") == "triton"
        (worker_only if item.path.name == "test_kernels.py" and uses_triton else keep).append(item)
    if worker_only:
        config.hook.pytest_deselected(items=worker_only)
        items[:] = keep

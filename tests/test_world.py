"""World: prompts of any kind, exact cached stepping, per-row resets, typed errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genie.world import World, load_prompt_frames, random_world


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return random_world(tmp_path_factory.mktemp("world") / "tiny", "tiny", seed=0)


def test_prompt_kinds_become_rgb_frames_of_the_world_size(tmp_path):
    rgba = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 4), dtype=np.uint8), "RGBA")
    rgba.save(tmp_path / "p.png")
    gray = np.random.default_rng(1).integers(0, 255, (20, 20), dtype=np.uint8)
    palette = Image.fromarray(gray).convert("P")
    clip = np.random.default_rng(2).integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    for prompt, T in (
        (tmp_path / "p.png", 1),
        (str(tmp_path / "p.png"), 1),
        (rgba, 1),
        (gray, 1),
        (palette, 1),
        (clip, 5),
        (torch.from_numpy(clip[0]), 1),
        (clip[0].astype(np.float32) / 255, 1),
    ):
        frames = load_prompt_frames(prompt, 32)
        assert frames.shape == (T, 32, 32, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda p: p / "missing.png", FileNotFoundError, "does not exist"),
        (lambda p: p, ValueError, "is a directory"),
        (lambda p: [(p / "empty.png").write_bytes(b""), p / "empty.png"][1], ValueError, "is empty"),
        (
            lambda p: [(p / "text.png").write_text("not an image"), p / "text.png"][1],
            ValueError,
            "not a readable image",
        ),
        (lambda p: np.zeros((4, 4, 3), dtype=np.int64) + 300, ValueError, "dtype"),
        (lambda p: np.zeros((2, 3, 4, 5, 6), dtype=np.uint8), ValueError, "shape"),
        (lambda p: {"not": "an image"}, TypeError, "Unsupported prompt type"),
    ],
)
def test_bad_prompts_raise_typed_errors_naming_the_fix(tmp_path, make, error, words):
    with pytest.raises(error, match=words):
        load_prompt_frames(make(tmp_path), 32)


def test_cached_world_steps_equal_uncached(world_dir):
    prompt = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)  # a short clip
    runs = []
    for use_cache in (True, False):
        world = World.load(world_dir, use_cache=use_cache)
        world.reset(prompt, batch_size=2)
        g = torch.Generator().manual_seed(3)
        runs.append(torch.stack([world.step([t % 8, (t + 3) % 8], generator=g) for t in range(12)]))
    assert torch.equal(runs[0], runs[1])  # 12 steps: past the tiny preset's 8-frame window


def test_reset_rows_restarts_only_those_worlds(world_dir):
    """With argmax sampling, a row restarted inside a batch equals a fresh single world from its prompt,
    and the other rows equal a run without the restart."""
    a = np.full((32, 32, 3), 40, np.uint8)
    b = np.random.default_rng(5).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    batch = World.load(world_dir)
    plain = World.load(world_dir)
    single = World.load(world_dir)
    batch.reset(a, batch_size=3)
    plain.reset(a, batch_size=3)
    for t in range(4):
        batch.step([1, 2, 3], temperature=0)
        plain.step([1, 2, 3], temperature=0)
    first = batch.reset_rows([1], b)
    single_first = single.reset(b)
    assert torch.equal(first, single_first)
    for t in range(5):
        got = batch.step([4, t % 8, 5], temperature=0)
        ref = plain.step([4, 0, 5], temperature=0)
        alone = single.step([t % 8], temperature=0)
        assert torch.equal(got[[0, 2]], ref[[0, 2]])
        assert torch.equal(got[1], alone[0])


def test_step_validates_actions(world_dir):
    world = World.load(world_dir)
    world.reset(np.zeros((32, 32, 3), np.uint8), batch_size=2)
    world.step(np.array([np.int64(1), np.int32(7)]))
    with pytest.raises(ValueError, match=r"in \[0, 8\)"):
        world.step([0, 8])
    with pytest.raises(TypeError, match="integers"):
        world.step([0.5, 1.0])
    with pytest.raises(ValueError, match="Expected 2 actions"):
        world.step([1])


def test_world_folder_errors(world_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="No world folder"):
        World.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="world.json missing"):
        World.load(tmp_path / "empty")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(world_dir, broken)
    shutil.rmtree(broken / "dynamics")
    with pytest.raises(FileNotFoundError, match="missing its dynamics"):
        World.load(broken)
    old = tmp_path / "old"
    shutil.copytree(world_dir, old)
    info = json.loads((old / "world.json").read_text())
    (old / "world.json").write_text(json.dumps({**info, "version": 0}))
    with pytest.raises(ValueError, match="format version 0"):
        World.load(old)


def test_export_writes_a_smaller_world_that_steps_like_the_original(world_dir, tmp_path):
    from genie.world import export_world

    out = export_world(world_dir, tmp_path / "shipped")
    size = lambda p: sum(f.stat().st_size for f in p.rglob("*.safetensors"))  # noqa: E731
    assert size(out) < 0.6 * size(world_dir)
    frames = []
    for path in (world_dir, out):
        world = World.load(path)
        world.reset(np.full((32, 32, 3), 90, np.uint8))
        frames.append(torch.stack([world.step([a], temperature=0) for a in (1, 2, 3)]).float())
    assert (frames[0] - frames[1]).abs().mean() < 8  # fp16 weights: close to the fp32 world


def test_bad_sampling_values_prompts_and_batch_sizes_are_refused(world_dir):
    """One clear sentence each, nothing silently replaced: 0 steps is not the default, 2.7 is not 2, a
    negative or infinite temperature is not a temperature, an empty prompt is not a black frame."""
    world = World.load(world_dir)
    world.reset(np.zeros((32, 32, 3), np.uint8), batch_size=2)
    for steps in (0, -1, 2.7, True):
        with pytest.raises(ValueError, match="maskgit_steps must be an integer >= 1"):
            world.step([0, 1], maskgit_steps=steps)
    for temperature in (-1.0, float("inf"), float("nan"), "hot"):
        with pytest.raises(ValueError, match="temperature must be"):
            world.step([0, 1], temperature=temperature)
    assert world.step([0, 1], maskgit_steps=2, temperature=0).shape[0] == 2  # 0: greedy, still valid
    for batch_size in (0, -1, 1.5):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            world.reset(np.zeros((32, 32, 3), np.uint8), batch_size=batch_size)
    with pytest.raises(ValueError, match="empty list of prompts"):
        world.reset([])
    with pytest.raises(ValueError, match="no pixels"):
        world.reset(np.zeros((0, 64, 3), np.uint8))

"""Audited faults of worlds, envs and datasets (issue #16): bad values are refused at load in one sentence,
a corrupt large array is found before it trains, a dataset is one whole, and a world or an episode killed
mid-write leaves the old one or the new one, never a mix.

The kills are `os._exit` at a named point of the writer (GENIE_CRASH_AT=<phase>, GENIE_CRASH_STEP=<step>,
genie.core.io.crash_point), in subprocesses all started at once by the `crashed` fixture.
"""

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers_env import one_torch_thread  # noqa: F401 (autouse fixture)
from PIL import Image

import genie.core.io
from envs.genie_env import GenieEnv
from envs.vector_env import GenieVectorEnv
from genie.cli.commands import main
from genie.core.errors import GenieCorruptFileError, GenieError, GenieFileNotFoundError, GenieValueError
from genie.core.io import CRASH_EXIT_CODE, OutputLock
from genie.data import EpisodeWriter, VideoDataset, WindowDataset
from genie.data.dataset import check_dataset
from genie.data.sources import collect
from genie.world import World, export_world, random_world, read_world
from genie.world.folder import tidy_world

REPO = pathlib.Path(__file__).resolve().parents[1]
FIELDS = ("maskgit_steps", "temperature", "fit")


def _one_sentence(e) -> str:
    text = str(e.value)
    assert "\n" not in text and text.endswith("."), text
    return text


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _with_prompts(path) -> pathlib.Path:
    (path / "prompts").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path / "prompts" / name)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two tiny worlds: "new" (seed 0, with prompts) and "old" (seed 1), written once for the module."""
    root = tmp_path_factory.mktemp("worlds")
    new = _with_prompts(random_world(root / "new", seed=0))
    random_world(new, seed=0)  # written again so that world.json lists its prompts
    return {"new": new, "old": random_world(root / "old", seed=1)}


@pytest.fixture
def world_dir(made, tmp_path):
    shutil.copytree(made["new"], tmp_path / "w")
    return tmp_path / "w"


def _edit_world_json(folder, **changes):
    info = json.loads((folder / "world.json").read_text())
    (folder / "world.json").write_text(json.dumps({**info, **changes}))


# --- A: play defaults in world.json or World(info=) ---

BAD_DEFAULTS = [
    ("maskgit_steps", 2.7),
    ("maskgit_steps", 0),
    ("maskgit_steps", "abc"),
    ("maskgit_steps", None),
    ("temperature", -1),
    ("temperature", "hot"),
    ("fit", 3),
    ("fit", "zoom"),
    ("fit", "box:0,0,0,8"),
]


@pytest.mark.parametrize("field, value", BAD_DEFAULTS)
def test_a_bad_play_default_in_world_json_is_refused_at_load(world_dir, field, value):
    _edit_world_json(world_dir, **{field: value})
    with pytest.raises(GenieValueError, match=f"world.json has {field} ") as e:
        World.load(world_dir)
    assert str(world_dir) in _one_sentence(e)
    with pytest.raises(GenieValueError, match=f"world.json has {field} "):
        read_world(world_dir)  # what `genie check WORLD` runs


@pytest.mark.parametrize("field, value", BAD_DEFAULTS)
def test_a_bad_play_default_in_world_info_is_refused(made, field, value):
    _, models = read_world(made["old"])
    with pytest.raises(GenieValueError, match=f"World\\(info=...\\) has {field} ") as e:
        World(models["tokenizer"], models["dynamics"], info={field: value}, device="cpu")
    _one_sentence(e)


def test_valid_play_defaults_are_kept_exactly(world_dir):
    _edit_world_json(world_dir, maskgit_steps=3, temperature=0, fit="box:24,0,72,196")
    world = World.load(world_dir, device="cpu")
    assert (world.maskgit_steps, world.temperature, world.fit) == (3, 0.0, "box:24,0,72,196")
    assert world.check_sampling() == (3, 0.0)


# --- B: reset_rows ---


@pytest.fixture(scope="module")
def world(made):
    return World.load(made["old"], device="cpu")


@pytest.mark.parametrize("rows, words", [([5], r"in \[0, 3\)"), ([-3], r"in \[0, 3\)"), ([1, 1], "repeat")])
def test_reset_rows_of_missing_or_repeated_worlds_are_refused(world, rows, words):
    prompt = np.full((32, 32, 3), 70, np.uint8)
    world.reset(prompt, batch_size=3)
    before = world.frames.clone()
    with pytest.raises(GenieValueError, match=words) as e:
        world.reset_rows(rows, prompt)
    _one_sentence(e)
    assert torch.equal(world.frames, before)


def test_reset_rows_of_nobody_changes_nothing(world):
    prompt = np.full((32, 32, 3), 70, np.uint8)
    world.reset(prompt, batch_size=3)
    world.step([1, 2, 3], temperature=0)
    before = world.frames.clone()
    got = world.reset_rows([], [])
    assert got.shape == (0, *before.shape[1:]) and torch.equal(world.frames, before)
    assert world.step([1, 2, 3], temperature=0).shape == before.shape


# --- C, D: envs ---


def test_an_all_false_reset_mask_changes_nothing(made):
    world = World.load(made["old"], device="cpu")
    prompt = np.full((32, 32, 3), 70, np.uint8)
    runs = []
    for with_mask in (False, True):
        env = GenieVectorEnv(num_envs=2, world=world, prompt=prompt, maskgit_steps=3, temperature=1.0)
        env.reset(seed=4)
        first, *_ = env.step(np.array([1, 2]))
        if with_mask:
            obs, _ = env.reset(options={"reset_mask": np.zeros(2, bool)})
            np.testing.assert_array_equal(obs, first)
            assert env.elapsed_steps.tolist() == [1, 1]
        runs.append(
            env.step(np.array([3, 4]))[0]
        )  # sampled (3 steps: only the last is argmax), so the generator must be untouched too
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("num_envs", [2.7, True, 0, "2"])
def test_vector_env_counts_must_be_integers(made, num_envs):
    with pytest.raises(GenieValueError, match="num_envs must be an integer >= 1") as e:
        GenieVectorEnv(num_envs=num_envs, world=made["old"], prompt=np.zeros((32, 32, 3), np.uint8))
    _one_sentence(e)


@pytest.mark.parametrize("steps", [2.5, "x", math.inf, 0, False])
def test_max_episode_steps_must_be_an_integer(made, steps):
    prompt = np.zeros((32, 32, 3), np.uint8)
    for make in (GenieEnv, lambda **kw: GenieVectorEnv(num_envs=1, **kw)):
        with pytest.raises(GenieValueError, match="max_episode_steps must be an integer >= 1, or None") as e:
            make(world=made["old"], prompt=prompt, max_episode_steps=steps)
        _one_sentence(e)


# --- E, F: datasets ---


def _dataset(root, episodes=3, frames=(4, 4), with_actions=True):
    """Episodes of `frames[0]` frames of size frames[1]; episode k filled with k."""
    T, S = frames
    meta = {"source": "gym", "env_id": "Test-v0", "num_actions": 4}
    with EpisodeWriter(root, meta=meta) as w:
        for ep in range(episodes):
            actions = np.arange(T - 1) % 4 if with_actions else None
            w.add_episode(np.full((T, S, S, 3), ep, np.uint8), actions=actions)
    return root


def test_read_window_hashes_a_large_frames_file_once_and_finds_a_changed_byte(tmp_path, monkeypatch):
    root = _dataset(tmp_path / "ds", frames=(24, 128))  # frames.npy of 1.2 MB: over the hashed-on-open size
    frames = root / "episodes" / "ep_000001" / "frames.npy"
    assert frames.stat().st_size > 1 << 20
    _flip_byte(frames, frames.stat().st_size // 2)  # same size: only the checksum tells
    hashed = []
    digest = genie.core.io.file_digest
    monkeypatch.setattr(genie.core.io, "file_digest", lambda p: hashed.append(pathlib.Path(p)) or digest(p))
    ds = VideoDataset(root)  # opening hashes only the small arrays
    assert not any(p.name == "frames.npy" for p in hashed)
    for start in range(5):
        assert (ds.read_window(0, start, 4)["frames"] == 0).all()
    assert [p for p in hashed if p.name == "frames.npy"] == [root / "episodes" / "ep_000000" / "frames.npy"]
    with pytest.raises(GenieCorruptFileError, match="ep_000001/frames.npy is corrupt.*blake2b") as e:
        ds.read_window(1, 0, 4)
    _one_sentence(e)
    loader = WindowDataset(VideoDataset(root), 4, "all")
    with pytest.raises(GenieCorruptFileError, match="frames.npy is corrupt"):
        [loader[i] for i in range(len(loader))]


def test_an_episode_stripped_of_its_manifest_and_an_array_is_refused(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    ep = root / "episodes" / "ep_000001"
    os.remove(ep / "manifest.json")
    os.remove(ep / "actions.npy")  # before: the whole dataset silently read as without actions
    with pytest.raises(GenieCorruptFileError, match="ep_000001 has no manifest.json") as e:
        VideoDataset(root)
    assert f"genie check {root}" in _one_sentence(e)
    assert main(["check", str(root)]) == 1
    assert "ep_000001 has no manifest.json" in capsys.readouterr().err


def test_an_array_its_manifest_does_not_list_is_refused(tmp_path):
    root = _dataset(tmp_path / "ds", with_actions=False)
    np.save(root / "episodes" / "ep_000002" / "actions.npy", np.zeros(3, np.int64))
    with pytest.raises(GenieCorruptFileError, match="ep_000002/actions.npy is not listed") as e:
        VideoDataset(root)
    assert "genie check" in _one_sentence(e)


def test_a_dataset_without_any_manifest_still_reads_and_check_says_it_is_unverified(tmp_path, capsys):
    root = _dataset(tmp_path / "ds")
    for ep in (root / "episodes").iterdir():
        os.remove(ep / "manifest.json")  # as genie before manifests wrote it
    ds = VideoDataset(root)
    assert ds.num_episodes == 3 and ds.has_actions and ds.unverified_episodes == 3
    assert (ds.read_window(2, 0, 4)["frames"] == 2).all()
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "0 episodes verified" in out and "3 unverified (no manifest.json" in out


def test_episodes_that_recorded_different_arrays_are_said(tmp_path, capsys):
    root = _dataset(tmp_path / "ds", episodes=2)
    with EpisodeWriter(root) as w:
        w.add_episode(np.zeros((4, 4, 4, 3), np.uint8))  # no actions
    capsys.readouterr()
    ds = VideoDataset(root)
    assert not ds.has_actions
    assert "actions in 2 of 3 episodes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, words", [(os.urandom(64), "is corrupt"), (b"[1, 2]", "is not a genie dataset")]
)
def test_check_reads_dataset_json(tmp_path, capsys, content, words):
    root = _dataset(tmp_path / "ds")
    (root / "dataset.json").write_bytes(content)
    assert main(["check", str(root)]) == 1
    err = capsys.readouterr().err
    assert "dataset.json " + words in err and len(err.strip().splitlines()) == 1
    with pytest.raises(GenieValueError, match=words):
        check_dataset(root)


# --- G: world writes ---


def test_saving_over_a_world_swaps_the_whole_folder_and_keeps_what_else_it_holds(made, world_dir):
    (world_dir / "train" / "tokenizer").mkdir(parents=True)
    (world_dir / "train" / "tokenizer" / "metrics.csv").write_text("step\n1\n")
    random_world(world_dir, seed=1)  # the old world's models, this folder's prompts
    assert sorted(p.name for p in world_dir.parent.iterdir()) == ["w"]  # nothing staged or moved left
    assert (world_dir / "train" / "tokenizer" / "metrics.csv").read_text() == "step\n1\n"
    info, models = read_world(world_dir)
    assert sorted(info["parts"]) == ["dynamics", "lam", "prompts", "tokenizer"]
    assert sorted(info["parts"]["prompts"]) == ["a.png", "b.png"]
    old = json.loads((made["old"] / "world.json").read_text())["parts"]
    assert info["parts"]["tokenizer"] == old["tokenizer"]
    _flip_byte(world_dir / "prompts" / "a.png", 40)  # a prompt of another write, or damaged
    with pytest.raises(GenieCorruptFileError, match="prompts/a.png is corrupt") as e:
        read_world(world_dir)
    _one_sentence(e)


def test_export_onto_itself_is_refused_and_loses_nothing(world_dir):
    before = sorted(str(p.relative_to(world_dir)) for p in world_dir.rglob("*"))
    with pytest.raises(GenieValueError, match="onto itself") as e:
        export_world(world_dir, world_dir / "." / "")
    _one_sentence(e)
    assert sorted(str(p.relative_to(world_dir)) for p in world_dir.rglob("*")) == before
    read_world(world_dir)


def test_write_info_keeps_the_parts_and_holds_the_lock(world_dir):
    parts = json.loads((world_dir / "world.json").read_text())["parts"]
    World.write_info(world_dir, {**World.load(world_dir).info, "temperature": 0.5, "note": "x"})
    info = json.loads((world_dir / "world.json").read_text())
    assert (
        info["parts"] == parts and info["temperature"] == 0.5 and info["note"] == "x" and "path" not in info
    )
    read_world(world_dir)
    before = (world_dir / "world.json").read_bytes()
    with pytest.raises(GenieValueError, match="temperature"):
        World.write_info(world_dir, {"temperature": -1})
    with OutputLock(world_dir), pytest.raises(GenieError, match="is writing to"):
        World.write_info(world_dir, {"note": "y"})
    assert (world_dir / "world.json").read_bytes() == before


def test_leftovers_of_interrupted_writes_are_removed_and_said_once(world_dir, capsys):
    (world_dir / ".tokenizer.tmp-ab12").mkdir()  # genie <= 0.3 replaced parts in place
    (world_dir / ".world.json.x1y2.tmp").write_text("{")
    (world_dir.parent / ".w.staging-cd34").mkdir()
    (world_dir.parent / ".w.old-ef56").mkdir()
    capsys.readouterr()
    read_world(world_dir)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "interrupted world write" in said[0] and ".w.staging-cd34" in said[0]
    assert sorted(p.name for p in world_dir.parent.iterdir()) == ["w"]
    assert not any(p.name.startswith((".tokenizer", ".world.json")) for p in world_dir.iterdir())
    read_world(world_dir)
    assert capsys.readouterr().err == ""


# --- H: kills ---

EXPORT = "import sys\nfrom genie.world import export_world\nexport_world(sys.argv[1], sys.argv[2])\n"
INGEST = "import sys\nfrom genie.data.sources import ingest\ningest(sys.argv[2:], sys.argv[1], size=8, progress=False)\n"
COLLECT = textwrap.dedent("""
    import sys
    from genie.data.sources import collect
    collect("ALE/Breakout-v5", 3, sys.argv[1], size=8, max_steps=4, progress=False)
""")
# (what, phase, step) -> what the destination holds once the killed process is gone
KILLS = {
    ("export", "world-staged", None): "old",  # staging complete and fsynced, not swapped in
    ("export", "world-moved", None): "old",  # the old world moved aside, the new one not yet in place
    ("export", "world-committed", None): "new",  # swapped in, the old one not yet removed
    ("first-export", "world-staged", None): None,  # nothing was there, nothing was committed
    ("ingest", "episode-staged", 1): 1,  # episode 1 complete in .tmp/, not renamed
    ("ingest", "episode-committed", 1): 2,
    ("collect", "episode-staged", 1): 1,
}


def _frame_folders(root) -> list[str]:
    folders = []
    for k in range(3):
        folder = root / f"clip{k}"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * k + i, np.uint8)).save(folder / f"{i}.png")
        folders.append(str(folder))
    return folders


@pytest.fixture(scope="module")
def crashed(made, tmp_path_factory):
    """Start every killed writer at once; {key: wait()} returns its destination once it died."""
    root = tmp_path_factory.mktemp("crashed")
    clips = _frame_folders(root / "clips")
    procs = {}
    for n, (what, phase, step) in enumerate(KILLS):
        if what == "collect" and not _has_ale():
            continue
        out = root / f"{n}-{what}" / "dst"
        out.parent.mkdir()
        if what == "export":
            shutil.copytree(made["old"], out)
        script, argv = {"ingest": (INGEST, clips), "collect": (COLLECT, [])}.get(
            what, (EXPORT, [str(made["new"])])
        )
        argv = [*argv, str(out)] if script is EXPORT else [str(out), *argv]
        env = {**os.environ, "GENIE_CRASH_AT": phase, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
        env.pop("GENIE_CRASH_STEP", None)
        if step is not None:
            env["GENIE_CRASH_STEP"] = str(step)
        cmd = [sys.executable, "-c", script, *argv]
        procs[what, phase, step] = (subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE), out)

    def waiter(key):
        def wait():
            proc, out = procs[key]
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == CRASH_EXIT_CODE, err.decode()[-2000:]
            return out

        return wait

    yield {key: waiter(key) for key in procs}, clips
    for proc, _ in procs.values():
        proc.kill()
        proc.communicate()


def _has_ale() -> bool:
    try:
        import ale_py  # noqa: F401
    except ImportError:
        return False
    return True


def _parts(folder) -> dict:
    return json.loads((pathlib.Path(folder) / "world.json").read_text())["parts"]


@pytest.fixture(scope="module")
def exported(made, tmp_path_factory):
    """The parts of the uninterrupted export of the new world."""
    return _parts(export_world(made["new"], tmp_path_factory.mktemp("ref") / "dst"))


def _key_id(key) -> str:
    return "-".join(str(k) for k in key if k is not None)


LEFT = {"world-staged": ".dst.staging-", "world-moved": ".dst.old-", "world-committed": ".dst.old-"}


@pytest.mark.parametrize("key", [k for k in KILLS if "export" in k[0]], ids=_key_id)
def test_a_killed_export_leaves_the_old_world_or_the_new_one(made, crashed, exported, capsys, key):
    out = crashed[0][key]()
    expected = KILLS[key]
    assert any(p.name.startswith(LEFT[key[1]]) for p in out.parent.iterdir())  # what the kill left
    assert out.exists() == (key[1] != "world-moved")  # killed between the two renames: moved aside
    capsys.readouterr()
    if expected is None:
        with pytest.raises(GenieFileNotFoundError, match="not a world folder|No world folder"):
            read_world(out)
    else:
        info, models = read_world(out)  # loads every part: never a refused mix
        assert info["parts"] == (_parts(made["old"]) if expected == "old" else exported)
        assert "interrupted world write" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == (["dst"] if out.exists() else [])
    export_world(made["new"], out)  # the rerun completes
    assert _parts(out) == exported and sorted(p.name for p in out.parent.iterdir()) == ["dst"]


@pytest.mark.parametrize("key", [k for k in KILLS if k[0] in ("ingest", "collect")], ids=_key_id)
def test_a_killed_collect_or_ingest_shows_only_whole_episodes(crashed, key):
    if key not in crashed[0]:
        pytest.skip("ale_py is not installed")
    out = crashed[0][key]()
    committed = KILLS[key]
    assert len(list((out / ".tmp").iterdir())) == int(key[1] == "episode-staged")  # the unfinished one
    ds = check_dataset(out)  # every array of every visible episode against its manifest
    assert ds.num_episodes == committed and ds.unverified_episodes == 0
    lengths = [ds.episode_length(i) for i in range(committed)]
    if key[0] == "ingest":
        assert lengths == [3] * committed
        for i in range(committed):
            assert int(ds.read_window(i, 0, 3)["frames"][0, 0, 0, 0]) == 40 * i
        subprocess.run([sys.executable, "-c", INGEST, str(out), *crashed[1]], cwd=REPO, check=True)
        again = check_dataset(out)
        assert again.num_episodes == committed + 3 and not (out / ".tmp").exists()
    else:
        with pytest.raises(GenieValueError, match=f"--seed {committed}"):
            collect("ALE/Breakout-v5", 1, out, size=8, max_steps=4, progress=False)  # same seeds again
        collect("ALE/Breakout-v5", 1, out, size=8, max_steps=4, seed=committed, progress=False)
        assert check_dataset(out).num_episodes == committed + 1 and not (out / ".tmp").exists()


def test_an_exported_world_is_readable_by_others_under_the_umask(made, tmp_path):
    """Staging folders and temporary files come from tempfile (0700 / 0600); the committed world gets the
    modes a plain mkdir/open would give, so a world shared on a machine or shipped in a wheel stays readable."""
    old = os.umask(0o022)
    try:
        out = export_world(made["new"], tmp_path / "shared")
    finally:
        os.umask(old)
    paths = [out, *out.rglob("*")]
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in paths), [
        (str(p), oct(p.stat().st_mode)) for p in paths if p.stat().st_mode & 0o044 != 0o044
    ]


def test_tidying_never_deletes_the_only_copy_of_a_world(made, tmp_path):
    """A world moved aside by a killed swap is the only copy when the folder is missing or is not a world
    (a rerun recreated it): tidy puts it back or keeps it, and never creates the folder itself."""
    old = tmp_path / ".w.old-123"
    shutil.copytree(made["new"], old)
    tidy_world(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / ".lock").touch()
    tidy_world(tmp_path / "w")  # not a world: the moved-aside copy stays
    assert old.exists()
    shutil.rmtree(tmp_path / "w")
    tidy_world(tmp_path / "w")  # missing: put back
    assert not old.exists()
    read_world(tmp_path / "w")

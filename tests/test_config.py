"""Config loading converts checkpoints of genie <= 0.1.0: removed options at their kept value are
dropped (the model is the same, bit for bit), any other value is refused with the fix."""

import json

import pytest
import torch

from dynamics.lam import LatentActionModel
from dynamics.model import DynamicsModel
from genie.checkpoint import load_model, save_model
from genie.core.config import from_dict, preset, to_dict, upgrade
from genie.core.errors import GenieValueError

OLD_LAM = {"positions": "relative", "encoder_frames": "pair", "encoder_input": "diff"}  # 0.1.0 defaults


def tiny_lam():
    torch.manual_seed(0)
    return LatentActionModel(preset("lam", "tiny")).eval()


def tiny_dynamics():
    torch.manual_seed(0)
    cfg = preset("dynamics", "tiny", grid=4, vocab_size=32, num_actions=4, action_dim=8)
    model = DynamicsModel(cfg).eval()
    model.set_action_codes(torch.randn(4, 8))
    return model


def save_as_old(model, path, **old_fields):
    """Save `model`, then write its config.json as genie 0.1.0 did: format 1, with the removed fields."""
    save_model(model, path)
    info = json.loads((path / "config.json").read_text())
    info["version"] = 1
    info["config"].update(old_fields)
    (path / "config.json").write_text(json.dumps(info))
    return path


def test_old_lam_config_with_the_kept_values_loads_and_gives_the_same_outputs(tmp_path):
    lam = tiny_lam()
    path = save_as_old(lam, tmp_path / "lam", **OLD_LAM)
    loaded = load_model(path, "lam")
    assert to_dict(loaded.cfg) == to_dict(lam.cfg)
    frames = torch.randint(0, 256, (2, 5, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(
            loaded._action_latents(frames.float() / 255), lam._action_latents(frames.float() / 255)
        )
        assert torch.equal(loaded.infer_actions(frames), lam.infer_actions(frames))
        assert torch.equal(loaded.preview({"frames": frames})[1], lam.preview({"frames": frames})[1])


def test_old_dynamics_config_with_spatial_rope_loads_and_gives_the_same_logits(tmp_path):
    dyn = tiny_dynamics()
    path = save_as_old(dyn, tmp_path / "dyn", spatial_rope=True)
    loaded = load_model(path, "dynamics")
    assert to_dict(loaded.cfg) == to_dict(dyn.cfg)
    tokens, actions = torch.randint(0, 32, (2, 4, 16)), torch.randint(0, 4, (2, 3))
    with torch.no_grad():
        assert torch.equal(loaded(tokens, actions), dyn(tokens, actions))


@pytest.mark.parametrize(
    "kind,field,value",
    [
        ("lam", "positions", "absolute"),
        ("lam", "encoder_frames", "causal"),
        ("lam", "encoder_input", "frame+diff"),
        ("dynamics", "spatial_rope", False),
    ],
)
def test_old_config_with_a_removed_value_is_refused(tmp_path, kind, field, value):
    model = tiny_lam() if kind == "lam" else tiny_dynamics()
    old = {**OLD_LAM, field: value} if kind == "lam" else {field: value}
    path = save_as_old(model, tmp_path / kind, **old)
    with pytest.raises(GenieValueError, match="retrain") as err:
        load_model(path, kind)
    message = str(err.value)
    assert f"{field}={value!r}" in message and str(path) in message and "genie <= 0.1.0" in message
    with pytest.raises(GenieValueError, match=f"This {kind} model was trained with {field}="):
        upgrade(kind, {**to_dict(model.cfg), **old})


def test_format_1_dynamics_without_the_field_meant_no_spatial_rope_and_is_refused(tmp_path):
    """A 0.1.0 dynamics config written before spatial_rope existed meant False: same weight shapes, another
    model. Format 1 reads a missing field as its 0.1.0 default, so it is refused, not loaded wrongly."""
    path = save_as_old(tiny_dynamics(), tmp_path / "dyn")
    with pytest.raises(GenieValueError, match="spatial_rope=False.*retrain"):
        load_model(path, "dynamics")


def test_current_format_with_a_removed_field_is_refused(tmp_path):
    path = save_as_old(tiny_dynamics(), tmp_path / "dyn", spatial_rope=True)
    info = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**info, "version": 2}))
    with pytest.raises(GenieValueError, match="unknown fields"):
        load_model(path, "dynamics")


def test_new_configs_do_not_hold_the_removed_fields():
    for kind in ("lam", "dynamics"):
        saved = to_dict(preset(kind, "tiny"))
        assert not {"positions", "encoder_frames", "encoder_input", "spatial_rope"} & set(saved)
        assert to_dict(from_dict(kind, saved)) == saved

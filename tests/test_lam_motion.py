"""The LAM's motion path (dynamics/lam.py): a block-matching cost volume into the encoder, block motion
compensation in the decoder, and the encoder's view of earlier transitions.

Why it exists (docs/RESULTS.md, "LAM with motion"): when a textured view shifts as a whole (a
first-person turn), x_t+1 - x_t does not say which way it went, and a patch decoder could not move
content by a few pixels, so the LAM split VizDoom's turns into "turned or not" (agreement 0.39); with
the motion path it separates left from right (0.71, the supervised pair probe's 0.73).
"""

import numpy as np
import pytest
import torch
from synthetic import write_scroll_dataset

from dynamics.lam import LatentActionModel, block_warp, motion_features, shift_costs
from genie.core.config import preset
from genie.core.frames import to_float
from genie.data import VideoDataset
from genie.train import recipes
from genie.train.metrics import action_agreement


def _texture(size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(1, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear").permute(0, 2, 3, 1)


@pytest.mark.parametrize("dy, dx", [(0, 2), (0, -2), (2, 0), (-3, 1)])
def test_shift_costs_point_to_where_the_content_went(dy, dx):
    a = _texture()
    b = torch.roll(a, shifts=(dy, dx), dims=(1, 2))  # content moves by (dy, dx)
    costs = shift_costs(a, b, radius=3, patch=4)  # (1, N, S)
    assert costs.shape == (1, 64, motion_features(3))
    best = int(costs[:, 18:46].mean(1).argmin())  # interior patches (rows 2..5): no border effects
    assert divmod(best, 7) == (dy + 3, dx + 3)


def test_block_warp_with_one_hot_weights_is_that_shift():
    a = _texture()
    w = torch.zeros(1, 64, motion_features(3))
    w[..., 3 * 7 + 3] = 1.0
    assert torch.equal(block_warp(a, w, 3, 4), a)  # the zero shift is a copy
    w.zero_()
    w[..., (3 - 2) * 7 + (3 + 1)] = 1.0  # (dy, dx) = (-2, 1)
    moved = block_warp(a, w, 3, 4)
    assert torch.allclose(moved[:, 3:-3, 3:-3], torch.roll(a, (-2, 1), (1, 2))[:, 3:-3, 3:-3])


@pytest.mark.parametrize("history", [0, 1])
def test_encoder_reads_only_its_window(history):
    torch.manual_seed(0)
    lam = LatentActionModel(preset("lam", "tiny", motion_radius=3, encoder_history=history)).eval()
    x = torch.rand(2, 6, 32, 32, 3)
    z = lam._raw_latents(x)
    later = x.clone()
    later[:, 4:] = 0.0  # frames after x_3: latents of transitions 0..2 must not move
    assert torch.allclose(lam._raw_latents(later)[:, :3], z[:, :3], atol=1e-5)
    earlier = x.clone()
    earlier[:, 1] = 0.0  # x_1: read by transition 2 only through the history
    moved = not torch.allclose(lam._raw_latents(earlier)[:, 2], z[:, 2], atol=1e-5)
    assert moved == (history == 1)
    if history == 1:  # and x_0 is outside transition 2's window
        first = x.clone()
        first[:, 0] = 0.0
        assert torch.allclose(lam._raw_latents(first)[:, 2], z[:, 2], atol=1e-5)


@pytest.mark.slow
def test_lam_finds_which_way_a_whole_textured_view_scrolled(tmp_path):
    """Measured on the 2-core CPU dev box: see the figures in docs/RESULTS.md."""
    data = write_scroll_dataset(tmp_path / "scroll", episodes=40, length=24, size=16, step=2)
    summary = recipes.train_lam(
        data, tmp_path / "lam", preset_name="tiny", steps=300, batch_size=8, lr=1e-3, progress=False
    )
    lam = summary["model"].eval()
    assert lam.cfg.motion_radius > 0  # the tiny preset uses the motion path
    ds = VideoDataset(data)
    latent, real = [], []
    for e in ds.split_episodes("val"):
        ep = ds.episode(e)
        latent.append(lam.infer_actions(to_float(torch.from_numpy(np.array(ep["frames"]))[None]))[0].numpy())
        real.append(np.asarray(ep["actions"]))
    agree = action_agreement(np.concatenate(latent), np.concatenate(real), 8, 5, 50, 0)
    print({k: agree[k] for k in ("accuracy", "chance", "test")})
    assert agree["accuracy"] >= 0.9, agree  # chance about 0.2


def test_a_pooled_lam_reads_64px_frames_as_the_32px_lam_reads_them():
    """cfg.pool: the tiny preset (sized for 32x32) on 64x64 data average-pools the frames first. On frames
    upsampled 2x (nearest), a pooled LAM with the same weights infers exactly the 32x32 LAM's actions and
    predicts its frames; train_lam picks the pool from the data's frame size."""
    torch.manual_seed(0)
    small = LatentActionModel(preset("lam", "tiny", image_size=32)).eval()
    pooled = LatentActionModel(preset("lam", "tiny", image_size=64, pool=2)).eval()
    pooled.load_state_dict(small.state_dict())
    frames = torch.randint(0, 256, (2, 5, 32, 32, 3), dtype=torch.uint8)
    big = frames.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    with torch.no_grad():
        assert torch.equal(small.infer_actions(frames), pooled.infer_actions(big))
        torch.testing.assert_close(small(frames)["recon_loss"], pooled(big)["recon_loss"])
        truth, pred = pooled.preview({"frames": big})
        assert truth.shape == pred.shape == (4, 32, 32, 3)

"""Image metrics (the Genie paper's): PSNR and SSIM on frames in [0, 1], and the helpers behind
controllability (delta PSNR) and latent-to-real action agreement.

Letters: B batch, T frames, H W pixels (3 colour channels).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genie.core.frames import to_float


def _float01(x: torch.Tensor) -> torch.Tensor:
    return to_float(x).clamp(0, 1)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB. pred/target (..., H, W, 3), uint8 or float in [0, 1] -> (...)."""
    mse = (_float01(pred) - _float01(target)).pow(2).flatten(-3).mean(-1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-frame SSIM (Gaussian window, mean over channels). (..., H, W, 3) -> (...)."""
    p, t = _float01(pred), _float01(target)
    lead = p.shape[:-3]
    H, W, channels = p.shape[-3:]
    p = p.reshape(-1, H, W, channels).permute(0, 3, 1, 2)
    t = t.reshape(-1, H, W, channels).permute(0, 3, 1, 2)
    window = min(window, H, W) | 1
    coords = torch.arange(window, dtype=torch.float32) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).to(p.device)
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, window, window)

    def blur(x):
        return F.conv2d(x, kernel, groups=channels)

    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p**2
    var_t = blur(t * t) - mu_t**2
    cov = blur(p * t) - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return s.mean(dim=(1, 2, 3)).reshape(lead)


def fit_action_mapping(latent: np.ndarray, real: np.ndarray, num_latent: int, num_real: int) -> dict:
    """Fit latent<->real action maps from labelled transitions by co-occurrence counts (the paper's
    behaviour-cloning study used at most 200 labelled transitions). Returns
    {"real_for_latent": [..num_latent], "latent_for_real": [..num_real], "counts": [[..]]}."""
    counts = np.zeros((num_latent, num_real), dtype=np.int64)
    np.add.at(counts, (latent.astype(np.int64), real.astype(np.int64)), 1)
    # Unseen latent codes map to the most common real action overall; unseen real actions to the
    # latent code most often seen.
    overall_real = int(counts.sum(0).argmax()) if counts.sum() else 0
    overall_latent = int(counts.sum(1).argmax()) if counts.sum() else 0
    real_for_latent = [int(r.argmax()) if r.sum() else overall_real for r in counts]
    latent_for_real = [int(c.argmax()) if c.sum() else overall_latent for c in counts.T]
    return {"real_for_latent": real_for_latent, "latent_for_real": latent_for_real, "counts": counts.tolist()}


def action_agreement(
    latent: np.ndarray, real: np.ndarray, num_latent: int, num_real: int, fit_size: int = 200, seed: int = 0
) -> dict:
    """Fit the latent->real map on at most `fit_size` random transitions; accuracy on the rest, against
    `chance` (always guessing the commonest real action of the rest), and the confusion table of the
    rest: confusion[latent][real] counts transitions (it sums to `test`)."""
    n = len(latent)
    if n < 2:
        return {"accuracy": None, "fit": 0, "test": 0}
    order = np.random.default_rng(seed).permutation(n)
    k = min(fit_size, n // 2)
    fit_idx, test_idx = order[:k], order[k:]
    mapping = fit_action_mapping(latent[fit_idx], real[fit_idx], num_latent, num_real)
    pred = np.asarray(mapping["real_for_latent"])[latent[test_idx]]
    confusion = np.zeros((num_latent, num_real), dtype=np.int64)
    np.add.at(confusion, (latent[test_idx].astype(np.int64), real[test_idx].astype(np.int64)), 1)
    return {
        "accuracy": float((pred == real[test_idx]).mean()),
        "chance": float(confusion.sum(0).max() / max(len(test_idx), 1)),
        "confusion": confusion.tolist(),
        "fit": int(k),
        "test": len(test_idx),
        "mapping": mapping,
    }

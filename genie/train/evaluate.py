"""Evaluation on held-out windows, with the Genie paper's metrics.

evaluate_tokenizer: psnr, ssim of reconstructions; codebook_usage (fraction of codes used).
evaluate_world:     from the first frame of each held-out window, generate `horizon` frames with the
                    latent actions the LAM infers from the real video (x^_t) and with uniformly random
                    latent actions (x^'_t). psnr[t] = PSNR(x_t, x^_t) for t = 1..horizon;
                    delta_psnr_t4 = PSNR(x_4, x^_4) - PSNR(x_4, x^'_4) (controllability).
                    latent_action_usage and, where the data has real actions, action_agreement.

Letters: B batch, T frames, H W pixels, N tokens per frame, A latent actions.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from genie.checkpoint import load_model
from genie.core.errors import GenieValueError
from genie.core.frames import to_float
from genie.data import VideoDataset
from genie.train.metrics import action_agreement, psnr, ssim
from genie.world import World


def _eval_windows(ds: VideoDataset, T: int, count: int, seed: int):
    """Up to `count` windows of T frames from the held-out split (all episodes if there is none)."""
    split = "val" if ds.split_episodes("val") else "all"
    try:
        index = ds.windows(T, split)
    except GenieValueError:
        if split == "all":
            raise
        split, index = "all", ds.windows(T, "all")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(index), size=min(count, len(index)), replace=False)
    return split, [ds.read_window(*index[int(i)], T) for i in sorted(picks)]


def _batches(items, size):
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def evaluate_tokenizer(
    checkpoint,
    data,
    windows: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(checkpoint, "tokenizer", device=device)
    ds = VideoDataset(data)
    if ds.frame_shape[0] != model.cfg.image_size:
        raise GenieValueError(
            f"The data's frames are {ds.frame_shape[0]}px, the tokenizer's {model.cfg.image_size}px: "
            "evaluate on data of the size it was trained on."
        )
    split, items = _eval_windows(ds, model.cfg.context, windows, seed)
    p_all, s_all, used = [], [], torch.zeros(model.cfg.codebook_size, dtype=torch.bool)
    for chunk in tqdm(list(_batches(items, batch_size)), desc="eval tokenizer", disable=not progress):
        frames = torch.from_numpy(np.stack([w["frames"] for w in chunk])).to(device)
        tokens = model.encode(frames)
        recon = model.decode(tokens).clamp(0, 1)
        p_all.append(psnr(recon, frames).flatten().cpu())
        s_all.append(ssim(recon, frames).flatten().cpu())
        used[tokens.flatten().cpu().unique()] = True
    return {
        "psnr": float(torch.cat(p_all).mean()),
        "ssim": float(torch.cat(s_all).mean()),
        "codebook_usage": float(used.float().mean()),
        "codes_used": int(used.sum()),
        "windows": len(items),
        "split": split,
    }


@torch.no_grad()
def evaluate_world(
    world_dir,
    data,
    windows: int = 32,
    horizon: int = 4,
    batch_size: int = 8,
    maskgit_steps: int | None = None,
    seed: int = 0,
    device=None,
    progress: bool = True,
) -> dict:

    world = World.load(world_dir, device=device, dtype=torch.float32)
    recorded = world.info.get("actions") == "recorded"  # conditioned on the data's own actions
    if world.lam is None and not recorded:
        raise GenieValueError(
            f"World {world_dir} has no lam/ checkpoint: evaluation needs it to infer actions "
            "(`genie export --without-lam` leaves it out; evaluate the world it was exported from)."
        )
    if horizon < 4:
        raise GenieValueError("horizon must be at least 4 (delta PSNR is reported at t = 4).")
    ds = VideoDataset(data)
    if ds.frame_shape[0] != world.image_size:
        raise GenieValueError(
            f"The data's frames are {ds.frame_shape[0]}px, the world's {world.image_size}px: "
            "evaluate on data of the size it was trained on."
        )
    split, items = _eval_windows(ds, horizon + 1, windows, seed)
    A = world.num_actions
    g = torch.Generator(device=world.device).manual_seed(seed)
    psnr_lam, psnr_rand, ssim_lam, latents, reals = [], [], [], [], []
    for chunk in tqdm(list(_batches(items, batch_size)), desc="eval world", disable=not progress):
        frames = torch.from_numpy(np.stack([w["frames"] for w in chunk])).to(world.device)  # (B, T, H, W, 3)
        if recorded:
            if chunk[0]["actions"] is None:
                raise GenieValueError(f"{data} recorded no actions: this world needs data that did.")
            inferred = torch.from_numpy(np.stack([w["actions"] for w in chunk])).to(world.device)
        else:  # (B, T-1): a_t moves frame t to t+1
            inferred = world.lam.infer_actions(to_float(frames))
        latents.append(inferred.flatten().cpu())
        if chunk[0]["actions"] is not None:
            reals.append(torch.from_numpy(np.stack([w["actions"] for w in chunk])).flatten())
        random_actions = torch.randint(0, A, inferred.shape, generator=g, device=world.device)
        for actions, sink in ((inferred, psnr_lam), (random_actions, psnr_rand)):
            world.reset(list(frames[:, 0].cpu().numpy()))
            gen = [
                world.step(actions[:, t], maskgit_steps=maskgit_steps, generator=g) for t in range(horizon)
            ]
            gen = torch.stack(gen, dim=1)  # (B, horizon, H, W, 3)
            sink.append(psnr(gen, frames[:, 1:]).cpu())
            if sink is psnr_lam:
                ssim_lam.append(ssim(gen[:, 3], frames[:, 4]).cpu())
    p_lam, p_rand = torch.cat(psnr_lam), torch.cat(psnr_rand)  # (n, horizon)
    lat = torch.cat(latents).numpy()
    usage = np.bincount(lat, minlength=A) / max(len(lat), 1)
    result = {
        "psnr": p_lam.mean(0).tolist(),
        "psnr_random": p_rand.mean(0).tolist(),
        "psnr_t4": float(p_lam[:, 3].mean()),
        "ssim_t4": float(torch.cat(ssim_lam).mean()),
        "delta_psnr_t4": float((p_lam[:, 3] - p_rand[:, 3]).mean()),
        "latent_action_usage": usage.tolist(),
        "latent_actions_used": int((usage > 0).sum()),
        "action_agreement": None,
        "windows": len(items),
        "split": split,
        "maskgit_steps": maskgit_steps or world.maskgit_steps,
    }
    result["actions"] = "recorded" if recorded else "latent"
    if reals and not recorded:
        real = torch.cat(reals).numpy()
        num_real = int(ds.meta.get("num_actions") or real.max() + 1)
        agree = action_agreement(lat, real, A, num_real, fit_size=200, seed=seed)
        result["action_agreement"] = agree["accuracy"]
        result["action_agreement_chance"] = agree["chance"]
        result["action_agreement_fit_transitions"] = agree["fit"]
        names = ds.meta.get("action_names") or [str(i) for i in range(num_real)]
        result["confusion"] = {"latent_by_real": agree["confusion"], "real_action_names": names}
    result["termination"] = evaluate_termination(world, ds, seed=seed)
    return result


@torch.no_grad()
def evaluate_termination(
    world, data, transitions: int = 4000, batch_size: int = 64, seed: int = 0
) -> dict | None:
    """The reward model on the real held-out transitions: does "this transition ends the episode" fire
    when it should? Precision and recall of the termination head (threshold: logit > 0, as imagination
    uses), the data's termination rate, and the reward's mean squared error. None when the world has no
    reward model or the data recorded no terminations. Every terminating transition of the split is
    kept; the others are sampled down to `transitions` in all."""
    if world.reward_model is None:
        return None
    ds = data if isinstance(data, VideoDataset) else VideoDataset(data)
    if not ds.has_rewards:
        return None
    split = "val" if ds.split_episodes("val") else "all"
    index = ds.windows(2, split)
    items = [ds.read_window(*index[i], 2) for i in range(len(index))]
    ends = [w for w in items if w["terminated"] is not None and bool(w["terminated"][0])]
    rest = [w for w in items if not (w["terminated"] is not None and bool(w["terminated"][0]))]
    rng = np.random.default_rng(seed)
    keep = rng.choice(len(rest), size=min(len(rest), max(transitions - len(ends), 0)), replace=False)
    items = ends + [rest[int(i)] for i in keep]
    pred_done, true_done, sq_err = [], [], []
    for chunk in _batches(items, batch_size):
        frames = torch.from_numpy(np.stack([w["frames"] for w in chunk])).to(world.device)
        tokens = world.tokenizer.encode(frames)  # (B, 2, h, w): each transition as its own 2-frame clip
        reward, done = world.reward_model.predict(tokens.flatten(2))
        true_r = torch.tensor([float(w["rewards"][0]) for w in chunk])
        pred_done.append(done.cpu())
        true_done.append(
            torch.tensor([bool(w["terminated"] is not None and w["terminated"][0]) for w in chunk])
        )
        sq_err.append((reward.cpu() - true_r) ** 2)
    p, t = torch.cat(pred_done), torch.cat(true_done)
    tp = int((p & t).sum())
    return {
        "precision": tp / int(p.sum()) if int(p.sum()) else None,
        "recall": tp / int(t.sum()) if int(t.sum()) else None,
        "predicted_ends": int(p.sum()),
        "true_ends": int(t.sum()),
        "transitions": len(items),
        "end_rate_in_split": len(ends) / max(len(ends) + len(rest), 1),
        "reward_mse": float(torch.cat(sq_err).mean()),
        "split": split,
    }

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

from dynamics.reward import fit_end_bias
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
    temperature: float | None = None,
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
    psnr_lam, psnr_rand, ssim_lam, latents, reals, action_ce, true_last = [], [], [], [], [], [], []
    for chunk in tqdm(list(_batches(items, batch_size)), desc="eval world", disable=not progress):
        frames = torch.from_numpy(np.stack([w["frames"] for w in chunk])).to(world.device)  # (B, T, H, W, 3)
        if recorded:
            if chunk[0]["actions"] is None:
                raise GenieValueError(f"{data} recorded no actions: this world needs data that did.")
            inferred = torch.from_numpy(np.stack([w["actions"] for w in chunk])).to(world.device)
        else:  # (B, T-1): a_t moves frame t to t+1
            inferred = world.lam.infer_actions(to_float(frames))
        latents.append(inferred.flatten().cpu())
        action_ce.append(_last_frame_ce_per_action(world, frames, inferred))
        true_last.append(inferred[:, -1].cpu())
        if chunk[0]["actions"] is not None:
            reals.append(torch.from_numpy(np.stack([w["actions"] for w in chunk])).flatten())
        random_actions = torch.randint(0, A, inferred.shape, generator=g, device=world.device)
        for actions, sink in ((inferred, psnr_lam), (random_actions, psnr_rand)):
            world.reset(list(frames[:, 0].cpu().numpy()))
            gen = [
                world.step(actions[:, t], maskgit_steps=maskgit_steps, temperature=temperature, generator=g)
                for t in range(horizon)
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
        "temperature": world.temperature if temperature is None else temperature,
    }
    result["actions"] = "recorded" if recorded else "latent"
    result["action_use"] = _action_use(torch.cat(action_ce), torch.cat(true_last))
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


def _last_frame_ce_per_action(world, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(B, A): cross-entropy (nats per token) of the true tokens of each window's last frame, every one
    of them masked, when the action into that frame is each of the A actions (the earlier ones as given)."""
    T = min(frames.shape[1], world.dynamics.cfg.context)  # the last frames the dynamics was trained on
    frames, actions = frames[:, -T:], actions[:, -(T - 1) :]
    tokens = world.tokenizer.encode(frames).flatten(2)  # (B, T, N)
    inputs = tokens.clone()
    inputs[:, -1] = world.dynamics.mask_id
    out = []
    for a in range(world.num_actions):
        acts = actions.clone()
        acts[:, -1] = a
        logits = world.dynamics(inputs, acts)[:, -1].float()  # (B, N, V)
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, -1], reduction="none")
        out.append(ce.mean(1).cpu())
    return torch.stack(out, 1)


def _action_use(ce: torch.Tensor, true: torch.Tensor) -> dict:
    """Does the dynamics use the action? Teacher-forced on the real frames (no rollout noise): the
    cross-entropy the true action saves against the mean over all actions, and how often the action
    whose prediction fits the real next frame best is the true one (the dynamics read as an inverse
    model; chance 1/A). 0 and chance: the action is ignored."""
    picked = ce.argmin(1)
    return {
        "ce_gain_nats_per_token": float(ce.mean(1).mean() - ce.gather(1, true[:, None]).mean()),
        "reads_action": float((picked == true).float().mean()),
        "reads_action_chance": 1.0 / ce.shape[1],
        "windows": int(ce.shape[0]),
    }


@torch.no_grad()
def evaluate_termination(
    world, data, transitions: int = 4000, batch_size: int = 64, seed: int = 0
) -> dict | None:
    """The reward model on the real held-out transitions: does "this transition ends the episode" fire
    when it should? Precision and recall of the rule imagination uses (a "next" head: logit > 0; a
    "current" hazard: ends drawn with its probability, so the expected precision and recall), the AUC
    of its probability (ends against the rest; 0.5 is no better than chance), expected against real
    ends (calibration), and the reward's mean squared error. None when the world has no reward model or
    the data recorded no rewards. Every ending transition of the split is kept; the others are sampled
    down to `transitions` in all and weighted back to their number."""
    model = world.reward_model
    if model is None:
        return None
    ds = data if isinstance(data, VideoDataset) else VideoDataset(data)
    if not ds.has_rewards:
        return None
    split = "val" if ds.split_episodes("val") else "all"
    logit, t, weight, mse, n_ends, n_all, rewards = _termination_transitions(
        world.tokenizer, model, ds, split, transitions, batch_size, seed, world.device
    )
    p = model.end_probability(logit).double()
    hazard = model.cfg.termination_from == "current"
    fired = p if hazard else (logit > 0).double()  # P(the rule says "ended") per transition
    tp, predicted = float((fired * weight)[t].sum()), float((fired * weight).sum())
    pos, neg = p[t], p[~t]
    auc = _auc(pos, neg)
    return {
        "termination_from": model.cfg.termination_from,
        "precision": tp / predicted if predicted > 0 else None,
        "recall": tp / n_ends if n_ends else None,
        "auc": auc,
        "predicted_ends": predicted,
        "true_ends": n_ends,
        "transitions": n_all,
        "reward_mse": mse,
        **_reward_detection(*rewards),
        "split": split,
    }


@torch.no_grad()
def _termination_transitions(tokenizer, model, ds, split, transitions, batch_size, seed, device):
    """Every ending transition of `split` and a sample of the others, weighted back to their number:
    -> (termination logits, is-end, weights, reward mse, ends, transitions in the split)."""
    ends, rest = [], []  # (episode, t) of each transition, read from the small terminated arrays
    for e in ds.split_episodes(split):
        ep = ds.episode(e)
        done = (
            np.zeros(ds.episode_length(e) - 1, bool)
            if ep["terminated"] is None
            else np.asarray(ep["terminated"], bool)
        )
        ends += [(e, int(t)) for t in np.flatnonzero(done)]
        rest += [(e, int(t)) for t in np.flatnonzero(~done)]
    keep = np.random.default_rng(seed).choice(
        len(rest), size=min(len(rest), max(transitions - len(ends), 0)), replace=False
    )
    items = [ds.read_window(e, t, 2) for e, t in ends + [rest[int(i)] for i in sorted(keep)]]
    logits, sq_err, predicted, target = [], [], [], []
    for chunk in _batches(items, batch_size):
        frames = torch.from_numpy(np.stack([w["frames"] for w in chunk])).to(device)
        tokens = tokenizer.encode(frames).flatten(2)  # each transition as its own 2-frame clip
        reward, logit = model(tokens)
        logits.append(logit.float().cpu())
        predicted.append(reward.float().cpu())
        target.append(torch.tensor([float(w["rewards"][0]) for w in chunk]))
        sq_err.append((predicted[-1] - target[-1]) ** 2)
    logit, t = torch.cat(logits), torch.zeros(len(items), dtype=torch.bool)
    t[: len(ends)] = True
    weight = torch.ones(len(items), dtype=torch.float64)
    weight[len(ends) :] = len(rest) / max(len(keep), 1)
    mse = float(torch.cat(sq_err).mean())
    return logit, t, weight, mse, len(ends), len(ends) + len(rest), (torch.cat(predicted), torch.cat(target))


def _auc(pos: torch.Tensor, neg: torch.Tensor) -> float | None:
    """P(a positive's score > a negative's), ties counted half; None when either side is empty."""
    if not (len(pos) and len(neg)):
        return None
    return float(
        (pos[:, None] > neg[None]).double().mean() + 0.5 * (pos[:, None] == neg[None]).double().mean()
    )


def _reward_detection(predicted: torch.Tensor, target: torch.Tensor) -> dict:
    """Does the predicted reward rise where a reward was recorded? The AUC of the prediction, transitions
    with a nonzero reward against the rest (0.5: no better than chance; None when either is absent), the
    spread of the prediction (0: a flat head that predicts the mean everywhere), and the count."""
    hit = target != 0
    pos, neg = predicted[hit].double(), predicted[~hit].double()
    return {
        "reward_auc": _auc(pos, neg),
        "reward_std": float(predicted.double().std()),
        "rewarded": int(hit.sum()),
    }


def calibrate_hazard(model, tokenizer, data, transitions: int = 4000, seed: int = 0, device="cpu") -> dict:
    """Fit a hazard head's `end_bias` on the train split (every end, a weighted sample of the rest) so
    its expected number of ends is the real one. Sets model.cfg.end_bias; returns what it fitted on."""
    ds = data if isinstance(data, VideoDataset) else VideoDataset(data)
    logit, t, weight, _, n_ends, n_all, _ = _termination_transitions(
        tokenizer, model, ds, "train", transitions, 64, seed, device
    )
    before = float((model.end_probability(logit).double() * weight).sum())
    model.cfg.end_bias = fit_end_bias(logit, t, weight, model.cfg.termination_weight)
    return {
        "end_bias": model.cfg.end_bias,
        "expected_ends_before": before,
        "true_ends": n_ends,
        "transitions": n_all,
    }

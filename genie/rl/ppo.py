"""PPO in imagination, in the style of CleanRL's single-file algorithms, on GenieVectorEnv's tensor path.

Letters: T rollout steps per env, B envs, H W pixels, A latent actions.

Gymnasium 1.x NEXT_STEP autoreset: the step after an env's episode ends only restarts that env (its
action is ignored and its reward is 0). Such "reset transitions" are not experience: they are masked out
of the advantages and of the loss, and bootstrapping stops at the end of the episode before them.

    genie rl train --world DIR --steps 100000 --out runs/ppo
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from genie.core.errors import GenieFileNotFoundError, GenieValueError
from genie.core.frames import resize_frame, to_float
from genie.core.io import atomic_dir, write_json_atomic
from genie.data.games import make_env, observe
from genie.world import World


@dataclass
class Args:
    total_steps: int = 100_000
    """env steps over all envs (rounded down to whole updates of num_envs * num_steps, at least one)"""
    num_envs: int = 64
    """worlds stepped as one batch"""
    num_steps: int = 32
    """rollout length per env between updates"""
    lr: float = 2.5e-4
    """Adam learning rate at the first update, annealed linearly towards 0 at the last"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE lambda: 0 one-step TD advantages, 1 Monte Carlo"""
    num_minibatches: int = 4
    """minibatches each rollout's valid transitions are split into per epoch"""
    update_epochs: int = 4
    """passes over each rollout"""
    clip_coef: float = 0.2
    """PPO ratio clip: the surrogate is clipped to 1 +- clip_coef"""
    ent_coef: float = 0.01
    """weight of the entropy bonus"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """gradients are clipped to this global norm"""
    max_episode_steps: int = 200
    """imagined episodes are truncated here (the env's max_episode_steps; `genie rl train` builds it so)"""
    maskgit_steps: int | None = None
    """MaskGIT steps per imagined frame, for the env `genie rl train` builds (None: the world's default)"""
    temperature: float | None = None
    """sampling temperature of imagined frames, for the env `genie rl train` builds, 0 greedy (None: the
    world's default)"""
    seed: int = 0
    """seed of the policy's weights, its action sampling, minibatch order and the envs' reset"""
    tensorboard: bool = False
    """also log the metrics to out/tensorboard, when torch.utils.tensorboard imports (else a warning)"""


# One row of out/metrics.csv per update, in this order; the same dict goes to train()'s `log` callback.
METRICS = (
    "update", "steps", "lr", "policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
    "explained_variance", "imagined_return", "episodes", "episode_length", "steps_per_s",
)  # fmt: skip


class Agent(nn.Module):
    """A small CNN on uint8 frames (H, W, 3); actor and critic heads."""

    def __init__(self, image_size: int, num_actions: int, width: int = 32):
        super().__init__()
        self.image_size, self.num_actions = image_size, num_actions
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * width * 16, 256), nn.ReLU(),
        )  # fmt: skip
        self.actor = nn.Linear(256, num_actions)
        self.critic = nn.Linear(256, 1)
        nn.init.orthogonal_(self.actor.weight, 0.01)
        nn.init.zeros_(self.actor.bias)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return self.body(to_float(obs.permute(0, 3, 1, 2)))  # (B, 3, H, W) in [0, 1]

    def value(self, obs):
        return self.critic(self.features(obs)).squeeze(-1)

    def act(self, obs, action=None, generator=None):
        h = self.features(obs)
        dist = torch.distributions.Categorical(logits=self.actor(h))
        if action is None:
            probs = dist.probs
            action = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return action, dist.log_prob(action), dist.entropy(), self.critic(h).squeeze(-1)


def save_policy(agent: Agent, out, meta: dict) -> None:
    with atomic_dir(Path(out) / "policy") as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in agent.state_dict().items()},
            str(tmp / "agent.safetensors"),
        )
        write_json_atomic(
            tmp / "policy.json", {"image_size": agent.image_size, "num_actions": agent.num_actions, **meta}
        )


def load_policy(path) -> tuple[Agent, dict]:
    path = Path(path)
    folder = path / "policy" if (path / "policy" / "policy.json").exists() else path
    if not (folder / "policy.json").exists():
        raise GenieFileNotFoundError(f"No policy at {path}: train one with `genie rl train --out {path}`.")
    meta = json.loads((folder / "policy.json").read_text())
    agent = Agent(meta["image_size"], meta["num_actions"])
    agent.load_state_dict(load_file(str(folder / "agent.safetensors")))
    return agent.eval(), meta


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float | None:
    """1 - Var[returns - values] / Var[returns]: 1 perfect, 0 no better than a constant, < 0 worse;
    None when the returns do not vary (or there are fewer than two)."""
    if returns.numel() < 2:
        return None
    var = float(returns.var(unbiased=False))
    return None if var == 0.0 else 1.0 - float((returns - values).var(unbiased=False)) / var


class MetricsLog:
    """out/metrics.csv, one row per update: header once (a fresh file each run: training does not resume),
    each row appended and flushed, so a crash keeps the rows written. None is written as an empty cell.
    TensorBoard (out/tensorboard) only when asked and when torch.utils.tensorboard imports."""

    def __init__(self, out, tensorboard: bool = False):
        self.path = Path(out) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(METRICS)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                print("warning: torch.utils.tensorboard does not import: no TensorBoard log", file=sys.stderr)
            else:
                self.tb = SummaryWriter(str(Path(out) / "tensorboard"))

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(["" if row[k] is None else row[k] for k in METRICS])
            f.flush()
        if self.tb is not None:
            for k in METRICS[2:]:
                if row[k] is not None:
                    self.tb.add_scalar(k, row[k], row["steps"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _mean(xs: list) -> float | None:
    """Mean of floats or of 0-d tensors (one device sync for all of them); None for none."""
    if not xs:
        return None
    return float(torch.stack(xs).mean()) if torch.is_tensor(xs[0]) else float(np.mean(xs))


def train(envs, args: Args, out=None, progress: bool = True, log=None) -> dict:
    """PPO on a GenieVectorEnv (its tensor path). Each update's diagnostics (METRICS) go to `log` and,
    with `out`, to out/metrics.csv. Returns a summary with the mean episode return of the first and last
    20% of finished episodes, and "history": the rows."""
    device = envs.world.device
    torch.manual_seed(args.seed)
    g = torch.Generator(device=device).manual_seed(args.seed)
    B, T = envs.num_envs, args.num_steps
    agent = Agent(envs.world.image_size, envs.world.num_actions).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    H = W = envs.world.image_size
    obs_buf = torch.zeros(T, B, H, W, 3, dtype=torch.uint8, device=device)
    act_buf = torch.zeros(T, B, dtype=torch.long, device=device)
    logp_buf, rew_buf, val_buf = (torch.zeros(T, B, device=device) for _ in range(3))
    done_buf = torch.zeros(T, B, device=device)  # episode ended at this step (terminated or truncated)
    term_buf = torch.zeros(T, B, device=device)  # ended by termination: no bootstrap from its last frame
    valid_buf = torch.zeros(T, B, device=device)  # 0 for NEXT_STEP reset transitions

    obs, _ = envs.reset(seed=args.seed)
    obs = torch.as_tensor(obs, device=device)
    prev_done = torch.zeros(B, dtype=torch.bool, device=device)  # the next step only resets these envs
    episode_return = torch.zeros(B, device=device)
    episode_length = torch.zeros(B, device=device)
    finished: list[float] = []
    lengths: list[float] = []
    history: list[dict] = []
    metrics = MetricsLog(out, args.tensorboard) if out is not None else None
    updates = max(1, args.total_steps // (B * T))
    t0, steps_done = time.time(), 0
    bar = tqdm(total=updates * B * T, desc="ppo", unit="step", disable=not progress)
    for update in range(updates):
        lr = args.lr * (1 - update / updates)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for t in range(T):
            with torch.no_grad():
                action, logp, _, value = agent.act(obs, generator=g)
            obs_buf[t], act_buf[t], logp_buf[t], val_buf[t] = obs, action, logp, value
            valid_buf[t] = (~prev_done).float()
            next_obs, reward, terminated, truncated, _ = envs.step_tensor(action)
            reward = torch.as_tensor(reward, device=device, dtype=torch.float32)
            terminated = torch.as_tensor(terminated, device=device)
            truncated = torch.as_tensor(truncated, device=device)
            done = terminated | truncated
            rew_buf[t], done_buf[t], term_buf[t] = reward * valid_buf[t], done.float(), terminated.float()
            episode_return += reward * valid_buf[t]
            episode_length += valid_buf[t]
            for i in done.nonzero().flatten().tolist():
                finished.append(float(episode_return[i]))
                lengths.append(float(episode_length[i]))
            episode_return[done], episode_length[done] = 0.0, 0.0
            prev_done = done
            obs = next_obs.clone()
        # --- GAE over valid transitions; a reset transition separates episodes ---
        with torch.no_grad():
            next_value = agent.value(obs)
            adv = torch.zeros(T, B, device=device)
            last = torch.zeros(B, device=device)
            for t in reversed(range(T)):
                # Under NEXT_STEP the observation stored at t+1 is the frame step t produced, also when
                # the episode ended there (the reset happens one step later): its value is the bootstrap,
                # except after a termination.
                nv = (next_value if t == T - 1 else val_buf[t + 1]) * (1.0 - term_buf[t])
                delta = rew_buf[t] + args.gamma * nv - val_buf[t]
                last = delta + args.gamma * args.gae_lambda * (1.0 - done_buf[t]) * last
                last = last * valid_buf[t]  # reset transitions carry no advantage
                adv[t] = last
            ret = adv + val_buf
        # --- PPO update on valid transitions only ---
        mask = valid_buf.flatten().bool()
        b_obs, b_act = obs_buf.flatten(0, 1)[mask], act_buf.flatten()[mask]
        b_logp, b_adv, b_ret = logp_buf.flatten()[mask], adv.flatten()[mask], ret.flatten()[mask]
        n = b_act.shape[0]
        mb = max(1, n // args.num_minibatches)
        clipfracs: list[torch.Tensor] = []  # over every minibatch of every epoch (as CleanRL)
        kls, pg_losses, v_losses, entropies = [], [], [], []
        for _ in range(args.update_epochs):
            # approx_kl, the losses and the entropy: means over the minibatches of the last epoch
            kls, pg_losses, v_losses, entropies = [], [], [], []
            perm = torch.randperm(n, device=device, generator=g)
            for start in range(0, n, mb):
                idx = perm[start : start + mb]
                _, logp, entropy, value = agent.act(b_obs[idx], b_act[idx])
                log_ratio = logp - b_logp[idx]
                ratio = log_ratio.exp()
                with torch.no_grad():  # KL(old || new) ~ E[(r - 1) - log r] >= 0 (Schulman's k3 estimator)
                    kls.append(((ratio - 1) - log_ratio).mean())
                    clipfracs.append(((ratio - 1.0).abs() > args.clip_coef).float().mean())
                a = b_adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8) if a.numel() > 1 else a
                pg_loss = torch.max(
                    -a * ratio, -a * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)
                ).mean()
                v_loss = 0.5 * (value - b_ret[idx]).pow(2).mean()
                loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
                pg_losses.append(pg_loss.detach())
                v_losses.append(v_loss.detach())
                entropies.append(entropy.detach().mean())
        steps_done += B * T
        bar.update(B * T)
        recent = finished[-50:]
        row = {
            "update": update,
            "steps": steps_done,
            "lr": lr,
            "policy_loss": _mean(pg_losses),
            "value_loss": _mean(v_losses),
            "entropy": _mean(entropies),
            "approx_kl": _mean(kls),
            "clipfrac": _mean(clipfracs),
            "explained_variance": explained_variance(val_buf.flatten()[mask], b_ret),
            "imagined_return": _mean(recent),  # the last (up to) 50 finished episodes
            "episodes": len(finished),
            "episode_length": _mean(lengths[-50:]),
            "steps_per_s": steps_done / (time.time() - t0),
        }
        history.append(row)
        if metrics is not None:
            metrics.write(row)
        if log is not None:
            log(row)
        if recent:
            bar.set_postfix(ret=f"{np.mean(recent):.2f}", kl=f"{row['approx_kl'] or 0:.4f}")
    bar.close()
    if metrics is not None:
        metrics.close()
    k = max(1, len(finished) // 5)
    summary = {
        "steps": steps_done,
        "episodes": len(finished),
        "first_return": float(np.mean(finished[:k])) if finished else None,
        "last_return": float(np.mean(finished[-k:])) if finished else None,
        "steps_per_s": steps_done / (time.time() - t0),
        "args": asdict(args),
    }
    if out is not None:
        save_policy(
            agent,
            out,
            {
                "world": str(envs.world.info.get("path")),
                "env_id": envs.world.info.get("env_id"),
                "summary": {k: v for k, v in summary.items() if k != "args"},
            },
        )
    summary["history"] = history
    summary["agent"] = agent
    return summary


def evaluate_real(
    policy_dir,
    episodes: int = 20,
    env_id: str | None = None,
    max_steps: int = 10_000,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Play the policy in the real Gymnasium game its world was trained on (frames preprocessed as the
    data was: rendered, fitted, resized), latent actions mapped to the game's actions by the world's
    latent->real map, against a uniform random policy over the same number of episodes."""
    agent, meta = load_policy(policy_dir)
    world_info = World.load(meta["world"], device="cpu").info if meta.get("world") else {}
    env_id = env_id or meta.get("env_id") or world_info.get("env_id")
    if not env_id:
        raise GenieValueError("The policy's world does not record its game: pass --env ID.")
    mapping = world_info.get("action_mapping")
    if not mapping or "real_for_latent" not in mapping:
        raise GenieValueError(
            "The policy's world has no latent->real action mapping (its data had no actions): retrain the "
            "world on data recorded with `genie collect`."
        )
    real_for_latent = mapping["real_for_latent"]
    fit = world_info.get("fit", "stretch")
    env = make_env(env_id, world_info.get("env_kwargs") or {})
    rng = np.random.default_rng(seed)
    results = {}
    for name in ("policy", "random"):
        returns = []
        for k in tqdm(range(episodes), desc=f"eval {name} in {env_id}", disable=not progress):
            obs, _ = env.reset(seed=seed + k)
            total, done, steps = 0.0, False, 0
            while not done and steps < max_steps:
                if name == "policy":
                    frame = resize_frame(observe(env, obs, env_id), agent.image_size, fit)
                    with torch.no_grad():
                        latent = int(agent.act(torch.from_numpy(frame)[None])[0])
                    action = real_for_latent[latent]
                else:
                    action = int(rng.integers(env.action_space.n))
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done, steps = terminated or truncated, steps + 1
            returns.append(total)
        results[f"{name}_mean"], results[f"{name}_std"] = float(np.mean(returns)), float(np.std(returns))
        results[f"{name}_returns"] = returns
    env.close()
    return {
        **results,
        **compare_returns(results["policy_returns"], results["random_returns"], seed),
        "episodes": episodes,
        "env_id": env_id,
    }


def compare_returns(policy, random, seed: int = 0, resamples: int = 10_000) -> dict:
    """The policy's mean return over the random one's (`ratio`; None when random's mean is not > 0), their
    difference, and a bootstrap 95% interval of the difference: episodes resampled with replacement within
    each player, `resamples` times, seeded (None when a player has fewer than 2 episodes: one episode has
    no spread to resample). A percentile interval, so it covers somewhat less than 95% at a few episodes."""
    p, r = np.asarray(policy, np.float64), np.asarray(random, np.float64)
    summary = {
        "ratio": float(p.mean() / r.mean()) if r.mean() > 0 else None,
        "difference": float(p.mean() - r.mean()),
        "difference_ci95": None,
    }
    if min(len(p), len(r)) < 2:
        return summary
    rng = np.random.default_rng(seed)
    diffs = p[rng.integers(0, len(p), (resamples, len(p)))].mean(1) - r[
        rng.integers(0, len(r), (resamples, len(r)))
    ].mean(1)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {**summary, "difference_ci95": [float(lo), float(hi)]}

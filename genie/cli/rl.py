"""`genie rl train` (PPO in a world's imagination) and `genie rl eval` (the policy in the real game).

genie rl train --world breakout --steps 100000 --out runs/ppo --plot   # + runs/ppo/metrics.csv
genie rl eval --policy runs/ppo --episodes 20 --plot                   # + runs/ppo/eval.png
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from envs.genie_env import DEMO_WORLD
from envs.vector_env import GenieVectorEnv
from genie.cli.args import add_maskgit_args
from genie.core.errors import GenieValueError
from genie.data import VideoDataset
from genie.rl import plot, ppo
from genie.world import World


def cmd_rl(args) -> int:
    return _train(args) if args.rl_command == "train" else _eval(args)


def dataset_prompts(data, n: int, T: int, seed: int) -> list[np.ndarray]:
    """n clips of T frames (uint8 (T, H, W, 3)) drawn, seeded, from the train split of dataset `data`: real
    game states to start imagined episodes from (the ball already in play, the monsters on the wall)."""
    ds = VideoDataset(data)
    windows = ds.windows(T, "train")
    if len(windows) == 0:
        raise GenieValueError(
            f"{data} has no episode of {T} frames (the world's context): record longer ones."
        )
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(windows), size=n, replace=len(windows) < n)
    return [ds.read_window(*windows[int(i)], T)["frames"] for i in picks]


def _train(args) -> int:
    world = World.load(args.world or DEMO_WORLD, device=args.device)
    if args.prompts_from:
        prompts = dataset_prompts(args.prompts_from, args.num_envs, world.context, args.seed)
    else:
        prompts = sorted(str(p) for p in (Path(world.info["path"]) / "prompts").glob("*.png"))
        if not prompts:
            raise GenieValueError(
                f"World {world.info['path']} has no prompts/*.png to start episodes from: add one, or pass "
                "--prompts-from DATA."
            )
    ppo_args = ppo.Args(
        total_steps=args.steps,
        num_envs=args.num_envs,
        num_steps=args.num_steps,
        lr=args.lr,
        ent_coef=args.ent_coef,
        max_episode_steps=args.max_episode_steps,
        maskgit_steps=args.maskgit_steps,
        temperature=args.temperature,
        seed=args.seed,
        tensorboard=args.tensorboard,
    )
    envs = GenieVectorEnv(
        num_envs=args.num_envs,
        world=world,
        prompt=[prompts[i % len(prompts)] for i in range(args.num_envs)],
        maskgit_steps=ppo_args.maskgit_steps,
        temperature=ppo_args.temperature,
        max_episode_steps=ppo_args.max_episode_steps,
    )
    summary = ppo.train(envs, ppo_args, out=args.out, progress=True)
    if args.plot:
        rows = summary["history"]
        png = Path(args.out) / "imagined_return.png"
        plot.line_plot(
            [r["steps"] for r in rows],
            [r["imagined_return"] for r in rows],
            png,
            f"imagined return (mean of the last 50 episodes) in {world.info.get('path')}",
            "imagined env steps",
            "return",
        )
    print(
        f"ppo: {summary['steps']} imagined steps, {summary['episodes']} episodes, return "
        f"{summary['first_return']} -> {summary['last_return']}, {summary['steps_per_s']:.0f} steps/s -> {args.out}"
    )
    return 0


def _eval(args) -> int:
    result = ppo.evaluate_real(
        args.policy,
        episodes=args.episodes,
        env_id=args.env,
        seed=args.seed,
        max_steps=args.max_steps,
        progress=not args.json,
    )
    if args.plot:
        rows = {who: (result[f"{who}_mean"], result[f"{who}_std"]) for who in ("policy", "random")}
        title = f"{result['env_id']}: return over {result['episodes']} episodes (mean +- std)"
        plot.mean_std_plot(rows, Path(args.policy) / "eval.png", title, "return")
    if args.json:
        print(json.dumps(result))
    else:
        ci = result["difference_ci95"]
        ci = "n/a (fewer than 2 episodes)" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
        ratio = "n/a" if result["ratio"] is None else f"{result['ratio']:.2f}x"
        print(
            f"{result['env_id']}: policy {result['policy_mean']:.2f} +- {result['policy_std']:.2f}, random "
            f"{result['random_mean']:.2f} +- {result['random_std']:.2f} over {result['episodes']} episodes; "
            f"difference {result['difference']:.2f}, bootstrap 95% {ci}, ratio {ratio}"
        )
    return 0


def add_cli(sub) -> None:
    d = ppo.Args()
    p = sub.add_parser("rl", help="train a PPO agent in a world; score it in the real game")
    rl = p.add_subparsers(dest="rl_command", required=True)
    q = rl.add_parser("train", help="PPO in imagination (GenieVectorEnv tensor path)")
    q.add_argument(
        "--world",
        default=None,
        help="world folder or shipped world name (e.g. breakout; default: the shipped demo world)",
    )
    q.add_argument("--steps", type=int, default=100_000, help="imagined env steps in total")
    q.add_argument("--num-envs", type=int, default=d.num_envs, help="imagined envs stepped as one batch")
    q.add_argument("--num-steps", type=int, default=d.num_steps, help="rollout steps per env per update")
    q.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate, annealed linearly to 0")
    q.add_argument("--ent-coef", type=float, default=d.ent_coef, help="weight of the entropy bonus")
    q.add_argument(
        "--max-episode-steps", type=int, default=d.max_episode_steps, help="imagined episodes truncated here"
    )
    q.add_argument(
        "--prompts-from",
        default=None,
        metavar="DATA",
        help="start each env's imagined episodes from a clip of this dataset's train split (seeded by --seed) "
        "(default: the world's prompts/*.png)",
    )
    add_maskgit_args(q)
    q.add_argument("--out", required=True, help="policy folder; metrics.csv gets one row per update")
    q.add_argument("--seed", type=int, default=0, help="PPO seed")
    q.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    q.add_argument("--plot", action="store_true", help="write OUT/imagined_return.png after training")
    q.add_argument(
        "--tensorboard", action="store_true", help="also log to OUT/tensorboard (if tensorboard is installed)"
    )
    q.set_defaults(func=cmd_rl)
    q = rl.add_parser("eval", help="play the policy and a random one in the real Gymnasium game")
    q.add_argument("--policy", required=True, help="policy folder (genie rl train --out)")
    q.add_argument("--env", default=None, help="Gymnasium id (default: the one the world was trained on)")
    q.add_argument("--episodes", type=int, default=20, help="episodes of each player")
    q.add_argument("--max-steps", type=int, default=10_000, help="steps per episode at most")
    q.add_argument("--seed", type=int, default=0, help="episode k resets with seed + k")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--plot", action="store_true", help="write POLICY/eval.png: policy vs random, mean +- std")
    q.set_defaults(func=cmd_rl)

"""Keep a world's tokenizer, train its dynamics and reward model anew on other data (recorded actions).

A tokenizer learns frames only, so a world whose actions were recorded wrongly (Atari's sticky actions)
keeps its tokenizer and retrains what reads actions. The shipped Breakout world was rebuilt so:

    python benchmarks/retrain_dynamics.py --world breakout --data data/breakout64h --preset demo \
        --dynamics-steps 1000 --reward-steps 1000 --out worlds/breakout_honest

`--dynamics-steps 0` keeps the world's dynamics too and retrains only the reward model (how the shipped
Breakout world got its change-reading, reward-weighted head; docs/RESULTS.md). Ends with one line: the steps, the minutes
and the output folder.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from genie.core.errors import GenieValueError
from genie.data import VideoDataset
from genie.train.evaluate import calibrate_hazard
from genie.train.recipes import recorded_action_mapping, save_prompts, train_dynamics, train_reward
from genie.world.folder import read_world, save_world

PLAY = ("maskgit_steps", "temperature")  # kept from the old world


def _check(args, ds: VideoDataset, old: dict, out: Path) -> None:
    """Refuse, before any training, what would fail late or write a world that disagrees with itself."""
    if args.dynamics_steps < 0 or args.reward_steps < 1:
        raise GenieValueError("--dynamics-steps must be >= 0 (0 keeps the world's) and --reward-steps >= 1.")
    if not (ds.has_actions and ds.has_rewards):
        raise GenieValueError(
            f"{args.data} lacks recorded actions or rewards: record it with `genie collect`."
        )
    for key, new in (
        ("real_num_actions", int(ds.meta["num_actions"])),
        ("fit", ds.meta.get("fit", "stretch")),
    ):
        if key in old and old[key] != new:
            raise GenieValueError(
                f"{args.data} has {key} {new!r} but the world {args.world} has {old[key]!r}: retrain on data "
                f"of the world's own game and settings."
            )
    if (out / "world.json").exists():
        raise GenieValueError(f"{out} already holds a world: pick a new --out.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, help="world folder or shipped name whose tokenizer is kept")
    p.add_argument("--data", required=True, help="dataset recorded with `genie collect` (actions, rewards)")
    p.add_argument("--preset", default="demo", help="dynamics and reward preset (default: demo)")
    p.add_argument("--dynamics-steps", type=int, default=1000)
    p.add_argument("--reward-steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="new world folder (its train/ keeps the runs)")
    args = p.parse_args()
    start, out, ds = time.time(), Path(args.out), VideoDataset(args.data)
    old, models = read_world(args.world)
    _check(args, ds, old, out)
    tok = models["tokenizer"].float()
    common = dict(preset_name=args.preset, lr=args.lr, seed=args.seed)
    if args.dynamics_steps:
        run = out / "train" / "dynamics"
        dyn = train_dynamics(ds, tok, None, run, steps=args.dynamics_steps, **common)["model"]
    else:
        dyn = models["dynamics"].float()
    reward = train_reward(ds, tok, out / "train" / "reward", steps=args.reward_steps, **common)["model"]
    info = {k: old[k] for k in PLAY if k in old}
    info.update(
        fit=ds.meta.get("fit", "stretch"),
        real_num_actions=int(ds.meta["num_actions"]),
        env_id=ds.meta.get("env_id") or old.get("env_id"),
        env_kwargs=ds.meta.get("env_kwargs") or {},
        preset=args.preset,
        data=str(args.data),
        actions="recorded",
        steps_per_model={
            "tokenizer": old.get("steps_per_model", {}).get("tokenizer"),
            "dynamics": args.dynamics_steps or old.get("steps_per_model", {}).get("dynamics"),
            "reward": args.reward_steps,
        },
        action_mapping=recorded_action_mapping(ds),
    )
    if reward.cfg.termination_from == "current":  # on the device the models trained on
        device = next(reward.parameters()).device
        info["termination_calibration"] = calibrate_hazard(reward, tok.to(device), ds, device=device)
    shutil.rmtree(out / "train" / "prompts", ignore_errors=True)  # no stale prompts from an earlier run
    info["prompts"] = save_prompts(ds, out / "train" / "prompts")
    with torch.no_grad():
        save_world(
            out, tok.cpu(), dyn.cpu(), None, info, reward=reward.cpu(), prompts=out / "train" / "prompts"
        )
    minutes = (time.time() - start) / 60
    print(
        f"retrained dynamics {args.dynamics_steps} and reward {args.reward_steps} steps in {minutes:.1f} min -> {out}"
    )


if __name__ == "__main__":
    main()

"""Does a LAM trained on frames alone find a game's actions? Train one (genie.train.recipes.train_lam),
then score its latent actions against the recorded ones on the held-out episodes: the latent->real map
is fitted on at most 200 labelled transitions, accuracy on the rest, next to chance (always the
commonest action) and the confusion table. Prints one JSON line.

    python benchmarks/lam_agreement.py --data DIR --preset tiny --steps 600 --out runs/lam_exp

Letters: B batch, T frames, H W pixels, A latent actions.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from genie.core.frames import to_float
from genie.data import VideoDataset
from genie.train import recipes
from genie.train.metrics import action_agreement


@torch.no_grad()
def held_out_agreement(lam, ds: VideoDataset, seed: int = 0) -> dict:
    latent, real = [], []
    for e in ds.split_episodes("val"):
        ep = ds.episode(e)
        frames = to_float(torch.from_numpy(np.asarray(ep["frames"]))[None])  # (1, T, H, W, 3)
        latent.append(lam.infer_actions(frames)[0].numpy())
        real.append(np.asarray(ep["actions"]))
    latent, real = np.concatenate(latent), np.concatenate(real)
    agree = action_agreement(latent, real, lam.cfg.num_actions, int(ds.meta["num_actions"]), 200, seed)
    return {k: agree[k] for k in ("accuracy", "chance", "fit", "test", "confusion")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--context", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-actions", type=int, default=None)
    args = p.parse_args()
    t0 = time.time()
    summary = recipes.train_lam(
        args.data,
        args.out,
        preset_name=args.preset,
        steps=args.steps,
        context=args.context,
        batch_size=args.batch_size,
        lr=args.lr,
        num_actions=args.num_actions,
        progress=False,
    )
    ds = VideoDataset(args.data)
    result = held_out_agreement(summary["model"].eval(), ds)
    result.update(data=args.data, preset=args.preset, steps=args.steps, seconds=round(time.time() - t0, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

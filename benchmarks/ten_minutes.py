"""How long a whole world takes with a preset's defaults, and what it reaches: `genie train world`
(tokenizer, LAM, dynamics, reward where the data recorded one) with nothing but --data and --preset,
then `genie eval world` on held-out windows. Prints one JSON line: minutes, peak memory (max RSS of
this process), PSNR@1, PSNR@4, delta PSNR@4 and latent-action agreement.

    python benchmarks/ten_minutes.py --data DIR --preset tiny --out runs/tiny_world
    python benchmarks/ten_minutes.py --sprites --preset tiny --out runs/tiny_sprites   # 64x64 sprites

--sprites writes the synthetic sprite video of the tests at 64x64 (an 8x8 sprite stepping 8 px, five
actions, 60 episodes of 64 frames) beside --out and trains on it.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import torch

from genie.train import recipes
from genie.train.evaluate import evaluate_world


def sprite_data(root: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests/ helpers
    from tests.synthetic import write_sprite_dataset

    if root.exists():
        shutil.rmtree(root)
    return write_sprite_dataset(root, episodes=60, length=64, size=64, sprite=8, step=8, wrap=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="dataset folder (genie collect / genie ingest)")
    p.add_argument("--sprites", action="store_true", help="train on 64x64 synthetic sprite video instead")
    p.add_argument("--preset", default="tiny", help="tiny, demo or coinrun (default: tiny)")
    p.add_argument("--out", required=True, help="world folder to write (must not exist)")
    p.add_argument("--windows", type=int, default=64, help="held-out windows evaluated (default: 64)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if (args.data is None) == (not args.sprites):
        p.error("give --data DIR or --sprites")
    data = sprite_data(out.with_name(out.name + "_data")) if args.sprites else Path(args.data)
    t0 = time.time()
    result = recipes.train_world(data, out, preset_name=args.preset)
    minutes = (time.time() - t0) / 60
    ev = evaluate_world(out, data, windows=args.windows, horizon=4, progress=False)
    row = {
        "data": str(data),
        "preset": args.preset,
        "steps_per_model": result["info"]["steps_per_model"],
        "train_minutes": round(minutes, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "psnr_t1": round(ev["psnr"][0], 2),
        "psnr_t4": round(ev["psnr"][3], 2),
        "delta_psnr_t4": round(ev["delta_psnr_t4"], 2),
        "action_agreement": ev["action_agreement"],
        "latent_actions_used": ev.get("latent_actions_used"),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(row))
    print(
        f"{args.preset} world in {minutes:.1f} min, peak {row['peak_rss_gb']} GB: PSNR@1 {row['psnr_t1']} dB, "
        f"delta PSNR@4 {row['delta_psnr_t4']} dB, agreement {row['action_agreement']}"
    )


if __name__ == "__main__":
    main()

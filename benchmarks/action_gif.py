"""One GIF with a column per action: every column starts from the same prompt and holds one action for
N steps, so the card of a world shows what each key does. Columns are the world's named real actions
(through its latent->real mapping) or, with --latent, every raw latent action. Prints one line.

    python benchmarks/action_gif.py --world doom --out docs/doom_actions.gif --steps 12

Letters: A actions, T steps, H W pixels.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw

from envs.actions import parse_action_mapping
from envs.genie_env import default_prompt
from genie.data.video import write_video
from genie.world import World


def action_columns(world: World, latent: bool) -> list[tuple[str, int]]:
    """(label, latent action) per column: the named real actions, or every latent action."""
    mapping = world.info.get("action_mapping")
    if latent or not mapping:
        return [(str(a), a) for a in range(world.num_actions)]
    names, latents = parse_action_mapping(mapping, world.num_actions)
    return list(zip(names, latents))


@torch.no_grad()
def rollouts(world: World, prompt, columns, steps: int, seed: int) -> np.ndarray:
    """(T+1, A, H, W, 3) uint8: column a holds its action from the prompt for `steps` steps (one batch)."""
    actions = [a for _, a in columns]
    frames = [world.reset(prompt, batch_size=len(actions)).cpu().numpy()]
    g = torch.Generator(device=world.device).manual_seed(seed)
    for _ in range(steps):
        frames.append(world.step(actions, generator=g).cpu().numpy())
    return np.stack(frames)


def tile(frames: np.ndarray, labels: list[str], scale: int = 3) -> list[np.ndarray]:
    """(T, A, H, W, 3) -> T images: the A frames side by side, upscaled, each under its label."""
    T, A, H, W, _ = frames.shape
    out = []
    for t in range(T):
        row = np.concatenate(list(frames[t]), axis=1).repeat(scale, 0).repeat(scale, 1)
        canvas = Image.new("RGB", (row.shape[1], row.shape[0] + 14), (0, 0, 0))
        canvas.paste(Image.fromarray(row), (0, 14))
        draw = ImageDraw.Draw(canvas)
        for a, label in enumerate(labels):
            draw.text((a * W * scale + 2, 1), label, fill=(255, 255, 255))
        out.append(np.asarray(canvas))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", required=True, help="world folder or shipped world name")
    p.add_argument("--out", required=True, help="GIF path")
    p.add_argument("--prompt", default=None, help="prompt image (default: the world's first)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent", action="store_true", help="a column per raw latent action")
    args = p.parse_args()
    world = World.load(args.world, device="cpu")
    prompt = args.prompt or default_prompt(world)
    columns = action_columns(world, args.latent)
    frames = rollouts(world, prompt, columns, args.steps, args.seed)
    write_video(args.out, tile(frames, [label for label, _ in columns]), fps=4)
    print(f"{args.out}: {len(columns)} actions x {args.steps} steps from {prompt}")


if __name__ == "__main__":
    main()

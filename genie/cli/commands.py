"""`genie` command line: collect, ingest, train, eval, sample, play, bench.

Every command shows progress on long work and ends with a one-line summary. Errors a user can cause
print one sentence (no traceback) and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from genie.cli import bench, play
from genie.cli import collect as collect_cli
from genie.cli import rl as rl_cli
from genie.cli.args import Parser, add_maskgit_args, add_sampling_args, check_numbers
from genie.core.config import describe_train_defaults
from genie.core.errors import GenieError, GenieValueError
from genie.data.dataset import check_dataset
from genie.data.video import write_video
from genie.train import evaluate, recipes
from genie.train.identify import identify
from genie.world import World, export_world
from genie.world.folder import read_world, world_path

# --- Commands ---


def _add_train_args(p, with_data: bool = True) -> None:
    if with_data:
        p.add_argument("--data", required=True, help="dataset folder (genie collect / genie ingest)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preset", default="demo", help="model size: tiny, demo or coinrun")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps (per model for `world`; default: the preset's, tokenizer/LAM/dynamics/reward: "
        f"{describe_train_defaults()})",
    )
    p.add_argument("--batch-size", type=int, default=None, help="windows per batch per process (default: 8)")
    p.add_argument(
        "--grad-accum", type=int, default=None, help="micro-batches per optimizer step (default: 1)"
    )
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the preset's, above)")
    p.add_argument(
        "--context", type=int, default=None, help="frames per training window (default: the preset's)"
    )
    p.add_argument("--seed", type=int, default=None, help="data order and init seed (default: 0)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader worker processes (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument(
        "--save-every", type=int, default=500, help="optimizer steps between checkpoints (and at the end)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_kw(args) -> dict:
    return dict(
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        seed=args.seed,
        num_workers=args.num_workers,
        save_every=args.save_every,
    )


def _summary_line(summary: dict) -> str:
    final = summary.get("final", {})
    loss = final.get("loss")
    return (
        f"trained {summary['kind']} for {summary['steps']} steps in {summary['seconds']:.1f}s "
        f"({summary['frames_per_s']:.0f} frames/s), final loss {loss:.4f} -> {summary['out']}"
    )


def cmd_train(args) -> int:
    common = dict(
        preset_name=args.preset,
        steps=args.steps,
        resume=args.resume,
        context=args.context,
        progress=not args.quiet,
        **_train_kw(args),
    )
    if args.model == "tokenizer":
        summary = recipes.train_tokenizer(args.data, args.out, **common)
    elif args.model == "lam":
        summary = recipes.train_lam(args.data, args.out, num_actions=args.num_actions, **common)
    elif args.model == "dynamics":
        summary = recipes.train_dynamics(
            args.data, args.tokenizer, args.lam, args.out, action_mode=args.action_mode, **common
        )
    else:
        t0 = time.time()
        stage_steps = {
            "tokenizer": args.tokenizer_steps,
            "lam": args.lam_steps,
            "dynamics": args.dynamics_steps,
            "reward": args.reward_steps,
        }
        result = recipes.train_world(
            args.data,
            args.out,
            num_actions=args.num_actions,
            action_mode=args.action_mode,
            stage_steps=stage_steps,
            actions=args.actions,
            **common,
        )
        steps = ", ".join(f"{k} {v}" for k, v in result["info"]["steps_per_model"].items())
        print(f"trained world ({args.preset}; steps: {steps}) in {time.time() - t0:.1f}s -> {result['out']}")
        return 0
    if summary.get("is_main", True):
        print(_summary_line(summary))
    return 0


def cmd_eval(args) -> int:
    t0 = time.time()
    if args.model == "tokenizer":
        result = evaluate.evaluate_tokenizer(
            args.checkpoint, args.data, windows=args.windows, seed=args.seed, progress=not args.json
        )
        line = (
            f"tokenizer: psnr {result['psnr']:.2f} dB, ssim {result['ssim']:.3f}, codebook usage "
            f"{result['codebook_usage']:.2f} on {result['windows']} {result['split']} windows"
        )
    else:
        result = evaluate.evaluate_world(
            args.world,
            args.data,
            windows=args.windows,
            horizon=args.horizon,
            maskgit_steps=args.maskgit_steps,
            temperature=args.temperature,
            seed=args.seed,
            progress=not args.json,
        )
        agree = result["action_agreement"]
        line = (
            f"world: psnr_t4 {result['psnr_t4']:.2f} dB, delta_psnr_t4 {result['delta_psnr_t4']:.2f} dB, "
            f"action agreement {'n/a' if agree is None else f'{agree:.2f}'}, "
            f"{result['latent_actions_used']} latent actions used, on {result['windows']} {result['split']} windows"
        )
        use = result["action_use"]
        if not args.json:  # --json prints one JSON object and nothing else
            if "confusion" in result:
                print(confusion_table(result["confusion"], result["action_agreement_chance"]))
            print(
                f"action use (teacher-forced, last frame masked): the true action saves "
                f"{use['ce_gain_nats_per_token']:.4f} nats/token; the dynamics reads the action back in "
                f"{use['reads_action']:.2f} of {use['windows']} windows (chance {use['reads_action_chance']:.2f})"
            )
            if result.get("termination"):
                print(termination_line(result["termination"]))
    result["seconds"] = time.time() - t0
    result["fit"] = _data_fit(args.data)
    line += f" (frames fitted by {result['fit'] or 'an unrecorded fit'}, genie ingest/collect --fit)"
    if args.json:
        print(json.dumps(result))
    else:
        print(line)
    return 0


def termination_line(t: dict) -> str:
    """One line on the reward model's termination head against the real held-out transitions."""
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    rule = "hazard, expected" if t["termination_from"] == "current" else "next frame, logit > 0"
    return (
        f"termination ({rule}): precision {fmt(t['precision'])}, recall {fmt(t['recall'])}, AUC {fmt(t['auc'])}; "
        f"{t['predicted_ends']:.1f} predicted against {t['true_ends']} real ends in {t['transitions']} "
        f"{t['split']} transitions; reward mse {t['reward_mse']:.4f}, AUC {fmt(t.get('reward_auc'))} on "
        f"{t.get('rewarded', 0)} rewarded, prediction std {t.get('reward_std', 0.0):.4f}"
    )


def _data_fit(data) -> str | None:
    """How the dataset's frames were made square (crop, pad, stretch), as dataset.json records it."""
    try:
        return json.loads((Path(data) / "dataset.json").read_text()).get("fit")
    except (OSError, ValueError, AttributeError):
        return None


def confusion_table(confusion: dict, chance: float) -> str:
    """Latent actions (rows) against the real actions they occurred with (columns), on the held-out
    transitions the agreement is scored on."""
    names, rows = confusion["real_action_names"], confusion["latent_by_real"]
    width = max(6, *(len(n) for n in names))
    lines = [f"{'latent':<8}" + "".join(f"{n:>{width + 1}}" for n in names)]
    lines += [f"{i:<8}" + "".join(f"{c:>{width + 1}}" for c in row) for i, row in enumerate(rows) if sum(row)]
    total = sum(map(sum, rows))
    lines.append(
        f"({total} held-out transitions; always guessing the commonest real action scores {chance:.2f})"
    )
    return "\n".join(lines)


def cmd_sample(args) -> int:
    try:
        actions = [int(a) for a in args.actions.split(",") if a.strip()]
    except ValueError:
        raise GenieValueError(f"--actions must be comma-separated integers, got {args.actions!r}.") from None
    if not actions:
        raise GenieValueError("--actions needs at least one latent action: pass e.g. --actions 1,1,3.")
    world = World.load(args.world, device=args.device)
    frames = [world.reset(args.prompt)[0].cpu().numpy()]
    g = torch.Generator(device=world.device).manual_seed(args.seed)
    for a in actions:
        frames.append(
            world.step([a], maskgit_steps=args.maskgit_steps, temperature=args.temperature, generator=g)[0]
            .cpu()
            .numpy()
        )
    write_video(args.out, frames, fps=args.fps)
    print(
        f"sampled {len(frames)} frames (the prompt and {len(actions)} steps) from {args.prompt} -> {args.out}"
    )
    return 0


def cmd_check(args) -> int:
    """Verify a dataset (dataset.json, then every episode array against its manifest's blake2b) or a world
    folder (every part's config and weights against their checksums); one line, exit 1 on the first bad
    file. Episodes without a manifest (written by genie before manifests) are counted as unverified."""
    path = world_path(args.path)
    t0 = time.time()
    if (path / "dataset.json").exists():
        ds = check_dataset(path)
        n, unverified = ds.num_episodes, ds.unverified_episodes
        note = (
            f"; {unverified} unverified (no manifest.json: written by an older genie, only their shapes were "
            "checked)"
            if unverified
            else ""
        )
        print(
            f"{path}: {n - unverified} episodes verified (sizes and blake2b of every array){note} in "
            f"{time.time() - t0:.1f}s"
        )
    elif (path / "world.json").exists():
        _, parts = read_world(path)
        print(f"{path}: world verified ({', '.join(sorted(parts))}) in {time.time() - t0:.1f}s")
    else:
        raise GenieValueError(
            f"{path} holds neither a dataset (dataset.json) nor a world (world.json): "
            "point `genie check` at a folder made by `genie collect`, `genie ingest` or `genie train world`."
        )
    return 0


def cmd_identify(args) -> int:
    report = identify(args.data, steps=args.steps, seed=args.seed, progress=not args.json)
    if args.json:
        print(json.dumps(report))
        return 0
    names = report["action_names"]
    print(f"{'action':<16}{'mean |x_t+1 - x_t| (0-255)':>28}")
    for name, motion in zip(names, report["motion_per_action"]):
        print(f"{name:<16}{'-' if motion is None else f'{motion:.2f}':>28}")
    print(
        f"{report['env_id']} (frame skip {report['frame_skip']}): action from the frames, held out: pair probe "
        f"{report['pair_probe_accuracy']:.2f}, with one frame of history {report['history_probe_accuracy']:.2f}, "
        f"chance {report['chance']:.2f} ({report['test_transitions']} transitions)"
    )
    return 0


def cmd_export(args) -> int:
    dtype = None if args.fp32 else torch.float16
    dst = export_world(args.world, args.out, dtype=dtype, with_lam=not args.without_lam)
    size = sum(f.stat().st_size for f in Path(dst).rglob("*") if f.is_file())
    print(
        f"exported {args.world} -> {dst} ({size / 2**20:.1f} MiB, {'fp32' if args.fp32 else 'fp16'} weights)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="genie", description="Genie-style interactive world models.")
    sub = parser.add_subparsers(dest="command", required=True)

    collect_cli.add_cli(sub)

    p = sub.add_parser("train", help="train a tokenizer, LAM, dynamics model, or a whole world")
    models = p.add_subparsers(dest="model", required=True)
    for name, help_ in (
        ("tokenizer", "ST-ViViT VQ-VAE video tokenizer"),
        ("lam", "latent action model"),
        ("dynamics", "MaskGIT dynamics on a frozen tokenizer and LAM"),
        ("world", "tokenizer, then LAM, then dynamics, into one world folder"),
    ):
        q = models.add_parser(name, help=help_)
        _add_train_args(q)
        if name in ("lam", "world"):
            q.add_argument("--num-actions", type=int, default=None, help="|A|, latent actions (default 8)")
        if name in ("dynamics", "world"):
            q.add_argument(
                "--action-mode",
                choices=["additive", "token"],
                default=None,
                help="how the action enters the dynamics (default additive)",
            )
        if name == "world":
            q.add_argument(
                "--actions",
                choices=["latent", "recorded"],
                default="latent",
                help="latent: a LAM learns them from the video (Genie); recorded: the data's own actions",
            )
            for stage in ("tokenizer", "lam", "dynamics", "reward"):
                q.add_argument(
                    f"--{stage}-steps",
                    type=int,
                    default=None,
                    help=f"steps for the {stage} (default: --steps, else the preset's)",
                )
        if name == "dynamics":
            q.add_argument("--tokenizer", required=True, help="tokenizer checkpoint or run folder")
            q.add_argument("--lam", required=True, help="LAM checkpoint or run folder")
        q.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a tokenizer or a world on held-out windows")
    models = p.add_subparsers(dest="model", required=True)
    q = models.add_parser("tokenizer", help="psnr, ssim, codebook_usage")
    q.add_argument("--checkpoint", required=True, help="tokenizer checkpoint or run folder")
    q.add_argument("--data", required=True, help="dataset folder")
    q.add_argument("--windows", type=int, default=64, help="held-out windows scored")
    q.add_argument("--seed", type=int, default=0, help="which windows")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_eval)
    q = models.add_parser("world", help="psnr over t, psnr_t4, ssim_t4, delta_psnr_t4, action agreement")
    q.add_argument("--world", required=True, help="world folder (or a shipped world name)")
    q.add_argument("--data", required=True, help="dataset folder")
    q.add_argument("--windows", type=int, default=32, help="held-out windows scored")
    q.add_argument("--horizon", type=int, default=4, help="frames imagined after each window's first")
    add_maskgit_args(q)
    q.add_argument("--seed", type=int, default=0, help="which windows, and the sampling seed")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="roll a world out from a prompt image with given latent actions")
    p.add_argument("--world", required=True, help="world folder (or a shipped world name)")
    p.add_argument("--prompt", required=True, help="image file")
    p.add_argument("--actions", required=True, help="comma-separated latent actions in [0, |A|), e.g. 1,1,3")
    p.add_argument(
        "--out", required=True, help="clip.mp4 or clip.gif (the prompt frame, then one per action)"
    )
    p.add_argument("--fps", type=int, default=10, help="frames per second of the clip")
    add_sampling_args(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "identify", help="how identifiable a dataset's recorded actions are from its frames (before training)"
    )
    p.add_argument("--data", required=True, help="dataset folder recorded with `genie collect`")
    p.add_argument("--steps", type=int, default=300, help="training steps of each supervised probe")
    p.add_argument("--seed", type=int, default=0, help="data split and probe init seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("check", help="verify a dataset or world folder against its checksums")
    p.add_argument("path", help="dataset folder (dataset.json) or world folder (world.json)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("export", help="copy a world without its training state, fp16 weights (for shipping)")
    p.add_argument("--world", required=True, help="world folder (or a shipped world name)")
    p.add_argument("--out", required=True, help="folder for the exported world")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights")
    p.add_argument(
        "--without-lam", action="store_true", help="leave the LAM out (play needs only the dynamics' copy)"
    )
    p.set_defaults(func=cmd_export)

    rl_cli.add_cli(sub)
    play.add_cli(sub)
    bench.add_cli(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_numbers(args)
        return int(args.func(args) or 0)
    except GenieError as e:
        for line in str(e).splitlines():  # one line per problem (e.g. each unreadable video)
            print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished checkpoints and episodes are kept", file=sys.stderr)
        return 130

"""Model configs as dataclasses with named size presets, saved as JSON beside safetensors weights.

Presets: `tiny` (tests; sized for 32x32 frames, and a whole world in about ten minutes on a 2-core CPU:
on 64x64 data the recipes scale the tokenizer patch and pool the LAM's frames, genie.train.recipes),
`demo` (sized to play on a 2-core CPU), `coinrun` (the Genie
paper's appendix F CoinRun case study: 8 blocks d 512 for tokenizer/LAM, 12 blocks d 512 for dynamics).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from genie.core.errors import GenieValueError


@dataclass
class TokenizerConfig:
    image_size: int = 64  # frames are image_size x image_size RGB
    patch: int = 4  # tokens per frame = (image_size / patch)^2
    d_model: int = 512
    depth: int = 8  # ST blocks in the encoder and, again, in the decoder
    heads: int = 8
    codebook_size: int = 1024
    code_dim: int = 32
    context: int = 16  # temporal window W in frames
    commitment: float = 0.25  # beta of the VQ commitment loss

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


@dataclass
class LAMConfig:
    image_size: int = 64
    patch: int = 16
    d_model: int = 512
    depth: int = 8
    heads: int = 8
    num_actions: int = 8  # |A|: small enough to play with number keys
    code_dim: int = 32
    context: int = 16
    commitment: float = 0.25
    # The bottleneck is continuous for the first vq_warmup steps, then k-means starts the codebook
    # (dynamics/lam.py: the encoder reads frame-pair differences, 2D RoPE on both sides).
    vq_warmup: int = 200
    # > 0: the encoder also reads a block-matching cost volume per patch (shifts up to this many pixels),
    # so a textured view that shifts as a whole shows which way it went; 0: the difference image only.
    motion_radius: int = 0
    # How many transitions before x_t -> x_{t+1} the encoder also reads (0: the pair alone). A game with
    # momentum shows its action in the change of motion, not in the motion.
    encoder_history: int = 0
    # The LAM reads frames average-pooled by this factor (image_size is the data's frame size): a preset
    # sized for 32x32 keeps its patch, motion radius and cost on 64x64 data (genie.train.recipes.train_lam).
    pool: int = 1

    @property
    def grid(self) -> int:
        return self.image_size // self.pool // self.patch


@dataclass
class DynamicsConfig:
    grid: int = 16  # tokens per frame = grid^2 (from the tokenizer)
    vocab_size: int = 1024  # tokenizer codebook size; id vocab_size is the MASK token
    num_actions: int = 8
    action_dim: int = 32  # LAM code dim: the dynamics sees the LAM's (frozen) code vectors
    action_mode: str = "additive"  # "additive" (paper) or "token" (one prepended token per frame)
    d_model: int = 512
    depth: int = 12
    heads: int = 8
    context: int = 16
    mask_min: float = 0.5  # training mask rate ~ U(mask_min, 1)
    # Each token of frame t also embeds the token frame t-1 holds at its place (the true one, also in
    # training, where frame t-1's own input is masked). Without it the first spatial attention of a
    # masked frame sees only MASK and training reads a masked past: a view that shifts by less than a
    # token is learned as "the frame changes", not which way (docs/RESULTS.md). False: checkpoints
    # written before the option.
    previous_frame: bool = False
    maskgit_steps: int = 25
    temperature: float = 1.0


@dataclass
class RewardConfig:
    grid: int = 16  # tokens per frame = grid^2 (from the tokenizer)
    vocab_size: int = 1024
    d_model: int = 128
    depth: int = 2
    heads: int = 4
    termination_weight: float = 10.0  # terminations are rare: weight of the positive class in the BCE
    # Weight of transitions with a nonzero reward in the reward's squared error. Atari rewards are sparse
    # (Breakout: about 1 transition in 100), and an unweighted error is smallest for a head that predicts
    # their mean everywhere: the Breakout world's did (0.030 at every imagined step), so PPO in it had
    # nothing to learn. 1: unweighted (checkpoints written before the option).
    reward_weight: float = 1.0
    # Add to each token of frame t+1 a learned embedding of "this token differs from frame t's". A reward
    # event is often one token (a Breakout brick: 100% of rewarded transitions change a brick-row token,
    # 9% of the others), which a mean over the frame's tokens dilutes. False: checkpoints before the option.
    reads_change: bool = False
    # What the termination head reads. "current": frame t only, as a hazard (the probability that the
    # transition t -> t+1 ends the episode), sampled in imagination: a dream needs no death frame to
    # end. "next": frames t and t+1, thresholded (checkpoints written before the option). Envs such as
    # VizDoom return a black frame at the end, which "next" learns to detect and a dream never draws.
    termination_from: str = "next"
    # Added to a hazard's log-odds ("current"): fitted after training on the train split's transitions so
    # the expected number of ends matches the real one (`calibrate_hazard`; a short training leaves the
    # head under-confident, and a dream that rarely ends teaches nothing about dying). 0: not fitted.
    end_bias: float = 0.0


# The presets' reward options (docs/RESULTS.md, "A reward head that sees the reward").
REWARD_OPTIONS = dict(reward_weight=20.0, reads_change=True)

PRESETS: dict[str, dict[str, dict]] = {
    "tokenizer": {
        "tiny": dict(
            image_size=32, patch=4, d_model=64, depth=2, heads=4, codebook_size=256, code_dim=16, context=8
        ),
        "demo": dict(image_size=64, patch=8, d_model=128, depth=3, heads=4, codebook_size=1024, code_dim=32),
        "coinrun": dict(
            image_size=64, patch=4, d_model=512, depth=8, heads=8, codebook_size=1024, code_dim=32
        ),
    },
    "lam": {  # num_actions: the default 8
        "tiny": dict(
            image_size=32, patch=4, d_model=64, depth=2, heads=4, code_dim=16, context=8, motion_radius=4
        ),
        "demo": dict(
            image_size=64, patch=8, d_model=128, depth=3, heads=4, code_dim=32, context=8, motion_radius=6
        ),
        "coinrun": dict(image_size=64, patch=16, d_model=512, depth=8, heads=8, code_dim=32, motion_radius=6),
    },
    "dynamics": {
        "tiny": dict(d_model=64, depth=2, heads=4, context=8, maskgit_steps=8, previous_frame=True),
        "demo": dict(d_model=192, depth=4, heads=6, maskgit_steps=8, previous_frame=True),
        "coinrun": dict(d_model=512, depth=12, heads=8, maskgit_steps=25, previous_frame=True),
    },
    "reward": {
        "tiny": dict(d_model=64, depth=1, heads=4, termination_from="current", **REWARD_OPTIONS),
        "demo": dict(d_model=128, depth=2, heads=4, termination_from="current", **REWARD_OPTIONS),
        "coinrun": dict(d_model=256, depth=2, heads=8, termination_from="current", **REWARD_OPTIONS),
    },
}

# What `genie train` runs for a preset when --steps / --lr are not given: optimizer steps per model and
# the peak learning rate. `tiny` is sized so a whole world trains in about ten minutes on a 2-core CPU
# (docs/RESULTS.md, "Ten minutes to a world"); the larger presets keep the original 1000 steps at 3e-4.
STAGES = ("tokenizer", "lam", "dynamics", "reward")
TRAIN_DEFAULTS: dict[str, dict] = {
    "tiny": dict(lr=1e-3, steps=dict(tokenizer=600, lam=400, dynamics=1400, reward=1500)),
    "demo": dict(lr=3e-4, steps=dict.fromkeys(STAGES, 1000)),
    "coinrun": dict(lr=3e-4, steps=dict.fromkeys(STAGES, 1000)),
}


def default_steps(preset_name: str, kind: str) -> int:
    return TRAIN_DEFAULTS.get(preset_name, TRAIN_DEFAULTS["demo"])["steps"][kind]


def default_lr(preset_name: str) -> float:
    return TRAIN_DEFAULTS.get(preset_name, TRAIN_DEFAULTS["demo"])["lr"]


def describe_train_defaults() -> str:
    """One line for --help: each preset's default steps per model and learning rate."""
    parts = []
    for name, d in TRAIN_DEFAULTS.items():
        steps = d["steps"]
        same = len(set(steps.values())) == 1
        what = f"{steps['tokenizer']}" if same else "/".join(str(steps[k]) for k in STAGES)
        parts.append(f"{name} {what} at lr {d['lr']:g}")
    return "; ".join(parts)


CONFIG_CLASSES = {
    "tokenizer": TokenizerConfig,
    "lam": LAMConfig,
    "dynamics": DynamicsConfig,
    "reward": RewardConfig,
}


def preset(kind: str, name: str, **overrides):
    """Build the `kind` config of preset `name`, with field overrides (None values are ignored)."""
    if kind not in PRESETS:
        raise GenieValueError(f"Unknown model kind {kind!r}: use one of {sorted(PRESETS)}.")
    if name not in PRESETS[kind]:
        raise GenieValueError(f"Unknown preset {name!r}: use one of {sorted(PRESETS[kind])} (--preset).")
    values = {**PRESETS[kind][name], **{k: v for k, v in overrides.items() if v is not None}}
    return CONFIG_CLASSES[kind](**values)


def dynamics_preset(
    name: str, tokenizer_cfg: TokenizerConfig, lam_cfg: LAMConfig, **overrides
) -> DynamicsConfig:
    """The dynamics config of preset `name` sized to a tokenizer (token grid, vocabulary) and a LAM
    (number of actions, action code dim)."""
    return preset(
        "dynamics",
        name,
        grid=tokenizer_cfg.grid,
        vocab_size=tokenizer_cfg.codebook_size,
        num_actions=lam_cfg.num_actions,
        action_dim=lam_cfg.code_dim,
        **overrides,
    )


def to_dict(cfg) -> dict:
    return asdict(cfg)


# Options removed after genie 0.1.0, when their ablations lost (docs/RESULTS.md), as written by
# checkpoint format 1: kind -> {field: (the value every model builds now, the field's 0.1.0 default,
# which a format-1 config written before the field existed means)}. A format-1 config holding the kept
# value converts by dropping the field; any other value is refused.
REMOVED_OPTIONS: dict[str, dict[str, tuple]] = {
    "lam": {
        "positions": ("relative", "relative"),
        "encoder_frames": ("pair", "pair"),
        "encoder_input": ("diff", "diff"),
    },
    "dynamics": {"spatial_rope": (True, False)},
}


def upgrade(kind: str, values: dict, source: str | None = None) -> dict:
    """`values` of a config written by genie <= 0.1.0 (checkpoint format 1), without the removed
    options, where they held the kept value; any other value is refused (this genie cannot build that
    model). A missing field means its 0.1.0 default."""
    removed = REMOVED_OPTIONS.get(kind, {})
    for field, (kept, default) in removed.items():
        value = values.get(field, default)
        if value != kept:
            what = source or f"This {kind} model"
            raise GenieValueError(
                f"{what} was trained with {field}={value!r}, which this genie no longer builds: "
                "retrain it (`genie train world`) or use genie <= 0.1.0."
            )
    return {k: v for k, v in values.items() if k not in removed}


def from_dict(kind: str, values: dict):
    """The `kind` config of saved `values` (the current format; `upgrade` converts older ones)."""
    cls = CONFIG_CLASSES[kind]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise GenieValueError(
            f"The {kind} config has unknown fields {sorted(unknown)}: it was written by another genie "
            "version; retrain or use a matching genie version."
        )
    return cls(**values)

"""World: tokenizer + LAM codebook + dynamics. A prompt becomes a playable world: reset(prompt) ->
step(actions) -> frames.

Letters: B batch (parallel worlds), T frames, H W pixels, N tokens per frame.

A world folder holds `world.json` (format, version, num_actions, image_size, the env id and frame fit
of its training data, defaults for MaskGIT steps and temperature) and one checkpoint folder per model:
`tokenizer/`, `dynamics/`, and `lam/` (used to infer actions between frames of a clip prompt and by
`genie eval world`; play needs only the dynamics' frozen copy of its codebook). Optional: `prompts/`.

Prompts (`reset`): an image path, a PIL image, a uint8 array (H, W, 3) / (H, W) / (H, W, 4), or a clip
(T, H, W, 3); any size and mode. Frames become RGB and are fitted to image_size x image_size with the
same policy as the training data (`world.json` "fit": crop = centred square, pad = letterbox,
stretch), see genie/sources.py. A clip keeps its last `context` frames.

Stepping uses the exact temporal KV cache by default (genie/nn.py): memory stays bounded by the window.
`compile=True` runs each step as one captured program: the caches become fixed-shape rings
(RingKVCache), the MaskGIT loop and the decoder run with no host sync, and the whole step goes through
torch.compile (mode "reduce-overhead" on CUDA, i.e. CUDA graphs, so a single stream is not bound by
kernel launches; the inductor backend on CPU). It computes the same function as the eager step (the
noise is keyed, see dynamics/sampling.py); the first step of each batch size pays the compilation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from genie.checkpoint import load_model, write_json_atomic
from genie.errors import GenieFileNotFoundError, GenieTypeError, GenieValueError

WORLD_FORMAT = "genie-world"
WORLD_VERSION = 1


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_prompt_frames(prompt, size: int, fit: str = "crop") -> np.ndarray:
    """Any supported prompt -> uint8 (T, size, size, 3)."""
    from PIL import Image, UnidentifiedImageError

    from genie.sources import resize_frame

    if isinstance(prompt, (str, Path)):
        path = Path(prompt)
        if not path.exists():
            raise GenieFileNotFoundError(
                f"Prompt image {path} does not exist: pass the path of a PNG or JPEG frame."
            )
        if path.is_dir():
            raise GenieValueError(f"Prompt {path} is a directory: pass one image file (PNG, JPEG, ...).")
        if path.stat().st_size == 0:
            raise GenieValueError(f"Prompt image {path} is empty: pass a valid PNG or JPEG frame.")
        try:
            with Image.open(path) as im:
                im.load()
                prompt = im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise GenieValueError(
                f"Prompt {path} is not a readable image: pass a PNG or JPEG frame."
            ) from None
    if isinstance(prompt, Image.Image):
        return resize_frame(prompt, size, fit=fit)[None]
    if torch.is_tensor(prompt):
        prompt = prompt.detach().cpu().numpy()
    if not isinstance(prompt, np.ndarray):
        raise GenieTypeError(
            f"Unsupported prompt type {type(prompt).__name__}: pass an image path, a PIL image or a uint8 array."
        )
    arr = prompt
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and 0.0 <= arr.min() and arr.max() <= 1.0:
            arr = (arr * 255).round().astype(np.uint8)
        else:
            raise GenieValueError(
                f"Prompt array has dtype {arr.dtype}: pass uint8 pixels in [0, 255] (or floats in [0, 1])."
            )
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        return resize_frame(arr, size, fit=fit)[None]
    if arr.ndim == 4 and arr.shape[-1] in (3, 4) and arr.shape[0] >= 1:
        return np.stack([resize_frame(f, size, fit=fit) for f in arr])
    raise GenieValueError(
        f"Prompt array has shape {arr.shape}: pass an image (H, W, 3) or a clip (T, H, W, 3)."
    )


class World:
    """B parallel imagined worlds on one device."""

    compile_backend = None  # torch.compile backend of the captured step (None: inductor; tests override)

    def __init__(
        self,
        tokenizer,
        dynamics,
        lam=None,
        info: dict | None = None,
        device=None,
        dtype=None,
        use_cache: bool = True,
        reward=None,
        compile: bool = False,
    ):
        if compile and not use_cache:
            raise GenieValueError("compile=True captures the cached step: it needs use_cache=True.")
        self.device = torch.device(device) if device is not None else default_device()
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.dtype = dtype
        self.tokenizer = tokenizer.to(self.device, dtype).eval()
        self.dynamics = dynamics.to(self.device, dtype).eval()
        self.lam = lam.to(self.device, dtype).eval() if lam is not None else None
        self.reward_model = reward.to(self.device, dtype).eval() if reward is not None else None
        self._last_tokens = None  # (B, N) tokens of each world's current frame
        self._transition = None  # (B, 2, N) tokens of the last step's frames t, t+1
        self.info = dict(info or {})
        if tokenizer.cfg.codebook_size != dynamics.cfg.vocab_size or tokenizer.cfg.grid != dynamics.cfg.grid:
            raise GenieValueError(
                "The tokenizer and dynamics checkpoints do not match (codebook or token grid differ): "
                "train the dynamics on this tokenizer (`genie train dynamics --tokenizer DIR`)."
            )
        if lam is not None and lam.cfg.num_actions != dynamics.cfg.num_actions:
            raise GenieValueError(
                "The LAM and dynamics checkpoints disagree on the number of actions: train the dynamics "
                "with this LAM (`genie train dynamics --lam DIR`)."
            )
        self.use_cache = use_cache
        self.compile = compile
        self.decoder_ring = None
        self._captured = None  # the compiled fixed-shape step, built on the first compiled step
        self.maskgit_steps = int(self.info.get("maskgit_steps", dynamics.cfg.maskgit_steps))
        self.temperature = float(self.info.get("temperature", dynamics.cfg.temperature))
        self.fit = self.info.get("fit", "crop")
        self.rollout = None
        self.decoder_cache = None
        self.frames = None  # (B, H, W, 3) uint8, last frame of each world

    # --- loading ---

    @classmethod
    def load(cls, path, device=None, dtype=None, use_cache: bool = True, compile: bool = False) -> World:
        path = Path(path)
        info_path = path / "world.json"
        if not path.exists():
            raise GenieFileNotFoundError(
                f"No world folder at {path}: train one with `genie train world --out {path}`."
            )
        if not info_path.exists():
            raise GenieFileNotFoundError(
                f"{path} is not a world folder (world.json missing): pass a folder written by `genie train world`."
            )
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError:
            raise GenieValueError(f"{info_path} is corrupt: retrain the world or restore the file.") from None
        if info.get("format") != WORLD_FORMAT:
            raise GenieValueError(
                f"{path} is not a genie world folder: pass a folder written by `genie train world`."
            )
        if info.get("version") != WORLD_VERSION:
            raise GenieValueError(
                f"World {path} has format version {info.get('version')}, this genie reads {WORLD_VERSION}: "
                "retrain it with this genie version."
            )
        for part in ("tokenizer", "dynamics"):
            if not (path / part / "config.json").exists():
                raise GenieFileNotFoundError(
                    f"World {path} is missing its {part}/ checkpoint: retrain it with `genie train world`."
                )
        tokenizer = load_model(path / "tokenizer", "tokenizer")
        dynamics = load_model(path / "dynamics", "dynamics")
        lam = load_model(path / "lam", "lam") if (path / "lam" / "config.json").exists() else None
        reward = load_model(path / "reward", "reward") if (path / "reward" / "config.json").exists() else None
        info["path"] = str(path)
        return cls(tokenizer, dynamics, lam, info, device, dtype, use_cache, reward, compile)

    @staticmethod
    def write_info(path, info: dict) -> None:
        write_json_atomic(
            Path(path) / "world.json", {"format": WORLD_FORMAT, "version": WORLD_VERSION, **info}
        )

    # --- properties ---

    @property
    def num_actions(self) -> int:
        return self.dynamics.cfg.num_actions

    @property
    def image_size(self) -> int:
        return self.tokenizer.cfg.image_size

    @property
    def context(self) -> int:
        return self.dynamics.cfg.context

    @property
    def batch_size(self) -> int:
        return 0 if self.frames is None else self.frames.shape[0]

    # --- prompting ---

    def prompt_clip(self, prompt) -> torch.Tensor:
        """Any prompt -> uint8 (T, H, W, 3) on the device, at most `context` frames."""
        frames = load_prompt_frames(prompt, self.image_size, self.fit)[-self.context :]
        return torch.from_numpy(np.array(frames, dtype=np.uint8)).to(self.device)

    def _prompt_batch(self, prompts, batch_size: int | None) -> torch.Tensor:
        if isinstance(prompts, (list, tuple)):
            clips = [self.prompt_clip(p) for p in prompts]
            T = min(c.shape[0] for c in clips)
            clips = torch.stack([c[-T:] for c in clips])
            if batch_size is not None and batch_size != clips.shape[0]:
                raise GenieValueError(
                    f"Got {clips.shape[0]} prompts for batch size {batch_size}: pass one per world."
                )
            return clips
        clip = self.prompt_clip(prompts)
        return clip[None].expand(batch_size or 1, *clip.shape).contiguous()

    @torch.no_grad()
    def _encode_prompt(self, clips: torch.Tensor):
        """clips (b, T0, H, W, 3) uint8 -> tokens (b, T0, N), actions (b, T0-1) between prompt frames."""
        b, T0 = clips.shape[:2]
        tokens = self.tokenizer.encode(clips.to(self.dtype) / 255.0).flatten(2)
        if T0 > 1 and self.lam is not None:
            actions = self.lam.infer_actions(clips.to(self.dtype) / 255.0)
        else:
            actions = torch.zeros(b, T0 - 1, dtype=torch.long, device=self.device)
        return tokens, actions

    @torch.no_grad()
    def reset(self, prompt, batch_size: int | None = None) -> torch.Tensor:
        """Start B worlds from a prompt (one for all, or a list of one per world).
        Returns the first frame of each, uint8 (B, H, W, 3)."""
        from dynamics.sampling import Rollout, load_ring

        clips = self._prompt_batch(prompt, batch_size)
        tokens, actions = self._encode_prompt(clips)
        if self.rollout is None or not self.compile:  # compiled: keep the ring buffers the graph reads
            self.rollout = Rollout(self.dynamics, use_cache=self.use_cache, ring=self.compile)
        rings = (self.rollout.ring, self.decoder_ring)
        self.rollout.prompt(tokens, actions)
        self._last_tokens, self._transition = tokens[:, -1], None
        self.decoder_cache = self.tokenizer.decoder.new_cache() if self.use_cache else None
        self._token_history = None
        decoded = self._decode(tokens.view(*tokens.shape[:2], self.tokenizer.cfg.grid, -1))
        if self.compile:
            grid = self.tokenizer.cfg.grid
            self.decoder_ring = load_ring(self.decoder_ring, self.decoder_cache, grid * grid)
            self.decoder_cache = None
            if (self.rollout.ring, self.decoder_ring) != rings:  # new buffers (batch size): capture anew
                self._captured = None
        self.frames = decoded[:, -1]
        return self.frames

    @torch.no_grad()
    def reset_rows(self, rows, prompts) -> torch.Tensor:
        """Restart worlds `rows` from prompts (one prompt for all of them, or a list), keeping the others.
        Returns the new first frames of those rows, uint8 (b, H, W, 3)."""
        if self.rollout is None:
            raise GenieValueError("Call reset(prompt) before reset_rows(...).")
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.device).flatten()
        clips = self._prompt_batch(prompts, len(rows))
        # Keep the clip no longer than the frames every row shares, so caches line up.
        tokens, actions = self._encode_prompt(clips)
        self.rollout.reset_rows(rows, tokens, actions)
        grid = self.tokenizer.cfg.grid
        fresh = self.tokenizer.decoder.new_cache()
        fresh.pos = self.rollout.frame_index - tokens.shape[1]  # decoder and dynamics advance together
        frames = self._to_u8(self.tokenizer.decode(tokens.view(*tokens.shape[:2], grid, grid), fresh))
        if self.compile:
            self.decoder_ring.load_(fresh, rows)
        else:
            self.decoder_cache.merge_rows(rows, fresh, grid * grid)
        self.frames = self.frames.clone()  # never change a tensor handed out by an earlier step
        self.frames[rows] = frames[:, -1]
        self._last_tokens = self._last_tokens.clone()
        self._last_tokens[rows] = tokens[:, -1]
        if self._transition is not None:  # a restarted world has no transition yet: it reads as t, t
            self._transition = self._transition.clone()
            self._transition[rows] = tokens[:, -1:].expand(-1, 2, -1)
        return frames[:, -1]

    def _to_u8(self, frames: torch.Tensor) -> torch.Tensor:
        return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, h, w) of the newest frames -> uint8 (B, T, H, W, 3)."""
        if self.use_cache:
            return self._to_u8(self.tokenizer.decode(tokens, self.decoder_cache))
        # Uncached: re-decode the recent history (bounded by the decoder's receptive field).
        grid = self.tokenizer.cfg.grid
        T = tokens.shape[1]
        new = tokens.flatten(2)
        self._token_history = new if self._token_history is None else torch.cat([self._token_history, new], 1)
        receptive = self.tokenizer.cfg.depth * (self.tokenizer.cfg.context - 1) + 1
        self._token_history = self._token_history[:, -receptive:]
        hist = self._token_history
        return self._to_u8(self.tokenizer.decode(hist.view(*hist.shape[:2], grid, grid)))[:, -T:]

    def release(self) -> None:
        """Free the rollout's caches and the captured step (the next reset builds them again)."""
        self.rollout = self.decoder_cache = self.decoder_ring = self._captured = None

    # --- stepping ---

    @property
    def predicts_rewards(self) -> bool:
        return self.reward_model is not None

    @torch.no_grad()
    def predict_reward_done(self):
        """(reward float32 (B,), terminated bool (B,)) of the last step's transitions, from the world's
        reward model; None when the world has none. Zeros right after a reset."""
        if self.reward_model is None:
            return None
        if self._transition is None:
            B = self.batch_size
            return torch.zeros(B, device=self.device), torch.zeros(B, dtype=torch.bool, device=self.device)
        return self.reward_model.predict(self._transition)

    def check_actions(self, actions) -> torch.Tensor:
        """Validate actions -> int64 (B,) on the device."""
        if isinstance(actions, (bool, np.bool_)) or (isinstance(actions, float)):
            raise GenieTypeError(f"Actions must be integers in [0, {self.num_actions}), got {actions!r}.")
        if torch.is_tensor(actions):
            arr = actions
        else:
            try:
                arr = torch.as_tensor(np.asarray(actions))
            except (TypeError, ValueError):
                raise GenieTypeError(
                    f"Actions must be integers in [0, {self.num_actions}), got {actions!r}."
                ) from None
        if arr.dtype == torch.bool or arr.is_floating_point() or arr.is_complex():
            raise GenieTypeError(
                f"Actions must be integers in [0, {self.num_actions}), got dtype {arr.dtype}."
            )
        arr = arr.to(self.device, torch.long).flatten() if arr.dim() <= 1 else arr
        if arr.dim() != 1 or arr.shape[0] != self.batch_size:
            raise GenieValueError(
                f"Expected {self.batch_size} actions (one per world), got shape {tuple(arr.shape)}."
            )
        if bool(((arr < 0) | (arr >= self.num_actions)).any()):
            raise GenieValueError(f"Actions must be in [0, {self.num_actions}): got {arr.tolist()[:8]}.")
        return arr

    @torch.no_grad()
    def step(
        self,
        actions,
        maskgit_steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Advance every world by one frame. actions: B latent actions (a_t moves frame t to t+1).
        Returns uint8 (B, H, W, 3) on the device."""
        if self.rollout is None:
            raise GenieValueError("Call reset(prompt) before step(actions).")
        actions = self.check_actions(actions)
        steps = int(maskgit_steps or self.maskgit_steps)
        if steps < 1:
            raise GenieValueError(f"maskgit_steps must be >= 1, got {steps}.")
        temp = self.temperature if temperature is None else float(temperature)
        if self.compile:
            tokens, self.frames = self._captured_step(actions, steps, temp, generator)
        else:
            tokens = self.rollout.step(actions, steps, temp, generator)  # (B, N)
            grid = self.tokenizer.cfg.grid
            self.frames = self._decode(tokens.view(-1, 1, grid, grid))[:, 0]
        self._transition = torch.stack([self._last_tokens, tokens], dim=1)
        self._last_tokens = tokens
        return self.frames

    def fixed_step(self, actions: torch.Tensor, keys: torch.Tensor, steps: int, temperature: float):
        """The whole step on the ring caches, as one function of device tensors: MaskGIT with the noise
        of `keys` (B,), commit, decode. -> (tokens (B, N), frames uint8 (B, H, W, 3)). What
        compile=True captures; callable eagerly too (the tests compare both)."""
        tokens = self.rollout.step_keyed(actions, keys, steps, temperature)
        grid = self.tokenizer.cfg.grid
        frames = self._to_u8(self.tokenizer.decode(tokens.view(-1, 1, grid, grid), self.decoder_ring))
        return tokens, frames[:, 0]

    def _captured_step(self, actions, steps: int, temperature: float, generator):
        from dynamics.sampling import noise_keys

        if self._captured is None:
            cuda = self.device.type == "cuda"
            if cuda:  # the rings are mutated in place: CUDA graphs must see fixed addresses
                for ring in (self.rollout.ring, self.decoder_ring):
                    for t in [ring.valid, ring.pos, *(x for kv in ring.layers for x in kv)]:
                        torch._dynamo.mark_static_address(t)
            how = {"backend": self.compile_backend} if self.compile_backend is not None else {}
            if not how and cuda:
                how = {"mode": "reduce-overhead"}
            self._captured = torch.compile(self.fixed_step, fullgraph=True, dynamic=False, **how)
        keys = noise_keys(actions.shape[0], generator, self.device)
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        tokens, frames = self._captured(actions, keys, steps, temperature)
        self.rollout.frame_index += 1
        # A CUDA graph's outputs are overwritten by its next replay: keep copies.
        return tokens.clone(), frames.clone()


def save_world(
    path, tokenizer, dynamics, lam=None, info: dict | None = None, dtype=None, reward=None
) -> Path:
    """Write a world folder: one checkpoint per model + world.json (written last, so a folder without it
    is never taken for a complete world)."""
    from genie.checkpoint import save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(tokenizer, path / "tokenizer", dtype=dtype)
    save_model(dynamics, path / "dynamics", dtype=dtype)
    if lam is not None:
        save_model(lam, path / "lam", dtype=dtype)
    if reward is not None:
        save_model(reward, path / "reward", dtype=dtype)
    info = {"num_actions": dynamics.cfg.num_actions, "image_size": tokenizer.cfg.image_size, **(info or {})}
    World.write_info(path, info)
    return path


def random_world(path, preset_name: str = "tiny", seed: int = 0, **info) -> Path:
    """An untrained world folder of a preset (tests, benchmarks of speed): same shapes as a trained one."""
    from dynamics.model import DynamicsModel
    from genie.config import dynamics_preset, preset
    from genie.lam import LatentActionModel
    from tokenizer.model import VideoTokenizer

    torch.manual_seed(seed)
    tok = VideoTokenizer(preset("tokenizer", preset_name))
    lam = LatentActionModel(preset("lam", preset_name, image_size=tok.cfg.image_size))
    dyn = DynamicsModel(dynamics_preset(preset_name, tok.cfg, lam.cfg))
    dyn.set_action_codes(lam.action_vectors())
    return save_world(path, tok, dyn, lam, info)


def export_world(src, dst, dtype: torch.dtype | None = torch.float16, with_lam: bool = True) -> Path:
    """Copy a world folder without its training state (train/), weights cast to `dtype` (fp16 halves the
    size; loading casts back to fp32 on CPU). For shipping a world. `with_lam=False` leaves the LAM out:
    playing needs only its codebook, which the dynamics keeps; `genie eval world` needs the LAM."""
    import shutil

    from genie.checkpoint import load_model

    src, dst = Path(src), Path(dst)
    world = World.load(src, device="cpu")  # validates the folder
    info = {k: v for k, v in world.info.items() if k not in ("format", "version", "path")}
    lam = load_model(src / "lam", "lam") if with_lam and (src / "lam" / "config.json").exists() else None
    reward = load_model(src / "reward", "reward") if (src / "reward" / "config.json").exists() else None
    tok, dyn = load_model(src / "tokenizer", "tokenizer"), load_model(src / "dynamics", "dynamics")
    if (src / "prompts").exists():
        if (dst / "prompts").exists():
            shutil.rmtree(dst / "prompts")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src / "prompts", dst / "prompts")
    return save_world(dst, tok, dyn, lam, info, dtype=dtype, reward=reward)

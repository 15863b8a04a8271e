"""World: tokenizer + LAM codebook + dynamics. A prompt becomes a playable world: reset(prompt) ->
step(actions) -> frames.

Letters: B batch (parallel worlds), T frames, H W pixels, h w token grid, N tokens per frame.

Stepping uses the exact temporal KV cache by default (genie/core/cache.py): memory stays bounded by
the window. `compile=True` runs each step as one captured program: the caches become fixed-shape rings
(RingKVCache), the MaskGIT loop and the decoder run with no host sync, and the whole step goes through
torch.compile (mode "reduce-overhead" on CUDA, i.e. CUDA graphs, so a single stream is not bound by
kernel launches; the inductor backend on CPU). It computes the same function as the eager step (the
noise is keyed, see dynamics/sampling.py); the first step of each batch size pays the compilation.
`use_cache=False` recomputes the history every step (the reference the caches are tested against).

Rewards and terminations of imagined transitions come from the world's reward model, or from a
`reward_fn` set by the caller (`set_reward_fn`): RL code and tests plug in their own scoring there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dynamics.sampling import Rollout, noise_keys
from genie.core.cache import FrameHistory, ring_from
from genie.core.errors import GenieTypeError, GenieValueError, positive_int
from genie.core.frames import to_float, to_uint8
from genie.world.folder import check_play_defaults, check_temperature, read_world, write_world_info
from genie.world.prompt import load_prompt_frames


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        self.last_actions = None  # (B,) int64: the actions of the last step (None right after a reset)
        self.reward_fn = None  # set_reward_fn: scores transitions in place of the reward model
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
        self._captured = None  # the compiled fixed-shape step, built on the first compiled step
        where = Path(self.info["path"]) / "world.json" if "path" in self.info else "World(info=...)"
        check_play_defaults(self.info, str(where))  # bad values fail at load, not at the first step
        self.maskgit_steps = int(self.info.get("maskgit_steps", dynamics.cfg.maskgit_steps))
        self.temperature = float(self.info.get("temperature", dynamics.cfg.temperature))
        self.fit = self.info.get("fit", "crop")
        self.rollout = None
        self.decoder_cache = None  # KVCache, RingKVCache (compile) or FrameHistory (use_cache=False)
        self.frames = None  # (B, H, W, 3) uint8, last frame of each world

    # --- loading ---

    @classmethod
    def load(cls, path, device=None, dtype=None, use_cache: bool = True, compile: bool = False) -> World:
        info, m = read_world(path)
        return cls(
            m["tokenizer"],
            m["dynamics"],
            m.get("lam"),
            info,
            device,
            dtype,
            use_cache,
            m.get("reward"),
            compile,
        )

    @staticmethod
    def write_info(path, info: dict) -> None:
        """Replace the info in world folder `path`'s world.json (atomically, under its lock; parts kept)."""
        write_world_info(path, info)

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
        if batch_size is not None:
            batch_size = positive_int(batch_size, "batch_size")
        if isinstance(prompts, (list, tuple)) and not prompts:
            raise GenieValueError("Got an empty list of prompts: pass one prompt, or one per world.")
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
        frames = to_float(clips, self.dtype)
        tokens = self.tokenizer.encode(frames).flatten(2)
        if T0 > 1 and self.lam is not None:
            actions = self.lam.infer_actions(frames)
        else:
            actions = torch.zeros(b, T0 - 1, dtype=torch.long, device=self.device)
        return tokens, actions

    @torch.no_grad()
    def reset(self, prompt, batch_size: int | None = None) -> torch.Tensor:
        """Start B worlds from a prompt (one for all, or a list of one per world).
        Returns the first frame of each, uint8 (B, H, W, 3)."""
        clips = self._prompt_batch(prompt, batch_size)
        tokens, actions = self._encode_prompt(clips)
        if self.rollout is None or not self.compile:  # compiled: keep the ring buffers the graph reads
            self.rollout = Rollout(self.dynamics, use_cache=self.use_cache, ring=self.compile)
        before = (self.rollout.cache, self.decoder_cache)
        self.rollout.prompt(tokens, actions)
        self._last_tokens, self._transition, self.last_actions = tokens[:, -1], None, None
        decoder = self.tokenizer.decoder
        fresh = decoder.new_cache() if self.use_cache else FrameHistory(decoder.receptive_field)
        grid = self.tokenizer.cfg.grid
        if self.compile:
            decoded = to_uint8(self.tokenizer.decode(tokens.view(*tokens.shape[:2], grid, grid), fresh))
            self.decoder_cache = ring_from(self.decoder_cache, fresh, grid * grid)
            if (self.rollout.cache, self.decoder_cache) != before:  # new buffers (batch size): capture anew
                self._captured = None
        else:
            self.decoder_cache = fresh
            decoded = self._decode(tokens.view(*tokens.shape[:2], grid, grid))
        self.frames = decoded[:, -1]
        return self.frames

    @torch.no_grad()
    def reset_rows(self, rows, prompts) -> torch.Tensor:
        """Restart worlds `rows` from prompts (one prompt for all of them, or a list), keeping the others.
        Returns the new first frames of those rows, uint8 (b, H, W, 3)."""
        if self.rollout is None:
            raise GenieValueError("Call reset(prompt) before reset_rows(...).")
        rows = self._check_rows(rows)
        if len(rows) == 0:  # nobody to restart
            return self.frames[:0]
        clips = self._prompt_batch(prompts, len(rows))
        # Keep the clip no longer than the frames every row shares, so caches line up.
        tokens, actions = self._encode_prompt(clips)
        self.rollout.reset_rows(rows, tokens, actions)
        grid = self.tokenizer.cfg.grid
        fresh = self.tokenizer.decoder.new_cache()
        fresh.pos = self.rollout.frame_index - tokens.shape[1]  # decoder and dynamics advance together
        frames = to_uint8(self.tokenizer.decode(tokens.view(*tokens.shape[:2], grid, grid), fresh))
        self.decoder_cache.merge_rows(rows, fresh, grid * grid)
        self.frames = self.frames.clone()  # never change a tensor handed out by an earlier step
        self.frames[rows] = frames[:, -1]
        self._last_tokens = self._last_tokens.clone()
        self._last_tokens[rows] = tokens[:, -1]
        if self._transition is not None:  # a restarted world has no transition yet: it reads as t, t
            self._transition = self._transition.clone()
            self._transition[rows] = tokens[:, -1:].expand(-1, 2, -1)
        return frames[:, -1]

    def _check_rows(self, rows) -> torch.Tensor:
        """Validate the worlds to restart -> int64 (b,) on the device: distinct integers in [0, B)."""
        B = self.batch_size
        try:
            arr = rows.detach().cpu().numpy() if torch.is_tensor(rows) else np.asarray(rows)
        except (TypeError, ValueError):
            arr = np.asarray([None])
        if arr.size and arr.dtype.kind not in "iu":
            raise GenieTypeError(f"rows must be integers in [0, {B}) (the worlds to restart), got {rows!r}.")
        arr = arr.reshape(-1).astype(np.int64)
        if ((arr < 0) | (arr >= B)).any():
            raise GenieValueError(
                f"rows must be in [0, {B}) (there are {B} worlds), got {arr.tolist()[:8]}: pass existing rows."
            )
        if len(np.unique(arr)) != len(arr):
            raise GenieValueError(f"rows {arr.tolist()[:8]} repeat a world: pass each world to restart once.")
        return torch.from_numpy(arr).to(self.device)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T, h, w) of the newest frames -> uint8 (B, T, H, W, 3)."""
        if self.use_cache:
            return to_uint8(self.tokenizer.decode(tokens, self.decoder_cache))
        # Uncached: re-decode the history the decoder can still see.
        (history,) = self.decoder_cache.push(tokens)
        return to_uint8(self.tokenizer.decode(history))[:, -tokens.shape[1] :]

    def release(self) -> None:
        """Free the rollout's caches and the captured step (the next reset builds them again)."""
        self.rollout = self.decoder_cache = self._captured = None

    # --- stepping ---

    def set_reward_fn(self, fn) -> None:
        """Score imagined transitions with `fn(transitions, actions) -> (reward (B,), terminated (B,))`
        instead of the world's reward model: transitions are the tokens (B, 2, N) of frames t and t+1,
        actions the (B,) int64 latent actions between them. None restores the reward model."""
        self.reward_fn = fn

    @property
    def predicts_rewards(self) -> bool:
        return self.reward_fn is not None or self.reward_model is not None

    @torch.no_grad()
    def predict_reward_done(self, generator=None):
        """(reward float32 (B,), terminated bool (B,)) of the last step's transitions, from `reward_fn` or
        the world's reward model; None when the world has neither. Zeros right after a reset. A hazard
        termination head (termination_from "current") draws its ends from `generator`."""
        if not self.predicts_rewards:
            return None
        if self._transition is None:
            B = self.batch_size
            return torch.zeros(B, device=self.device), torch.zeros(B, dtype=torch.bool, device=self.device)
        if self.reward_fn is not None:
            return self.reward_fn(self._transition, self.last_actions)
        return self.reward_model.predict(self._transition, generator)

    def check_sampling(self, maskgit_steps=None, temperature=None) -> tuple[int, float]:
        """Validate MaskGIT steps and temperature (None: the world's defaults) -> (steps, temperature)."""
        steps = positive_int(self.maskgit_steps if maskgit_steps is None else maskgit_steps, "maskgit_steps")
        return steps, check_temperature(self.temperature if temperature is None else temperature)

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
        steps, temp = self.check_sampling(maskgit_steps, temperature)
        if self.compile:
            tokens, self.frames = self._captured_step(actions, steps, temp, generator)
        else:
            tokens = self.rollout.step(actions, steps, temp, generator)  # (B, N)
            grid = self.tokenizer.cfg.grid
            self.frames = self._decode(tokens.view(-1, 1, grid, grid))[:, 0]
        self._transition = torch.stack([self._last_tokens, tokens], dim=1)
        self._last_tokens, self.last_actions = tokens, actions
        return self.frames

    def fixed_step(self, actions: torch.Tensor, keys: torch.Tensor, steps: int, temperature: float):
        """The whole step on the ring caches, as one function of device tensors: MaskGIT with the noise
        of `keys` (B,), commit, decode. -> (tokens (B, N), frames uint8 (B, H, W, 3)). What
        compile=True captures; callable eagerly too (the tests compare both)."""
        tokens = self.rollout.step_keyed(actions, keys, steps, temperature)
        grid = self.tokenizer.cfg.grid
        frames = to_uint8(self.tokenizer.decode(tokens.view(-1, 1, grid, grid), self.decoder_cache))
        return tokens, frames[:, 0]

    def _captured_step(self, actions, steps: int, temperature: float, generator):
        if self._captured is None:
            cuda = self.device.type == "cuda"
            if cuda:  # the rings are mutated in place: CUDA graphs must see fixed addresses
                for ring in (self.rollout.cache, self.decoder_cache):
                    for t in [ring.valid, ring.pos, *(x for kv in ring.layers for x in kv)]:
                        torch._dynamo.mark_static_address(t)
                if self.rollout.previous is not None:  # the last frame's tokens, also updated in place
                    torch._dynamo.mark_static_address(self.rollout.previous)
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

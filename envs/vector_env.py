"""GenieVectorEnv: num_envs worlds stepped as one batch by a single World (no subprocesses: never fork
CUDA workers).

Letters: B = num_envs, H W pixels, A latent actions.

Autoreset is gymnasium 1.x NEXT_STEP: the step that ends an episode returns its last frame with
truncated (or terminated) set; on the following step that env is restarted from its prompt, its action
is ignored, and it returns the prompt frame with reward 0 and both flags False. Restarts go through
`World.reset_rows`, so the other envs' frames are exactly those of a run without any reset.
(NEXT_STEP has no final_obs / final_info: the final frame is the one returned with the done flag.)

Seeds: `reset(seed=s)` means per-env seeds s, s+1, ... (as SyncVectorEnv); `reset(seed=[s0, s1, ...])`
gives them explicitly. One torch.Generator drives the whole batch, seeded from all of them, so the same
seeds and actions reproduce the same frames; env i's frames also depend on the other envs' seeds
(see docs/PLAY.md).

Two step paths: `step(np actions)` returns numpy copies (Gymnasium API); `step_tensor(torch actions)`
keeps everything on the World's device, for agents there (no numpy round trip).
"""

from __future__ import annotations

import time
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.actions import latent_for_real
from envs.genie_env import check_episode_kwargs, default_prompt, frame_to_numpy, generator_seed, load_world
from genie.core.errors import GenieValueError, positive_int


class GenieVectorEnv(VectorEnv):
    """B imagined worlds in one batch on one device."""

    metadata: ClassVar[dict] = {
        "render_modes": ["rgb_array"],
        "render_fps": 15,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        world=None,
        prompt=None,
        maskgit_steps: int | None = None,
        temperature: float | None = None,
        device=None,
        max_episode_steps: int | None = 1000,
        render_mode: str | None = None,
        action_space: str = "latent",
        compile: bool = False,
    ):
        num_envs = positive_int(num_envs, "num_envs")
        max_episode_steps = check_episode_kwargs(
            render_mode, self.metadata["render_modes"], max_episode_steps
        )
        self.num_envs = num_envs
        self.world = load_world(world, device, compile)
        self.world.check_sampling(maskgit_steps, temperature)  # bad values fail here, not at the first step
        if not self.world.use_cache:
            raise GenieValueError(
                "GenieVectorEnv restarts single envs, which needs a World with use_cache=True."
            )
        self.prompts = self._load_prompts(default_prompt(self.world) if prompt is None else prompt)
        self.maskgit_steps, self.temperature = maskgit_steps, temperature
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        S, B = self.world.image_size, self.num_envs
        self.single_observation_space = gym.spaces.Box(0, 255, (S, S, 3), np.uint8)
        table = latent_for_real(self.world, action_space)  # None: latent actions
        self._latent_for_real = None if table is None else torch.tensor(table, device=self.world.device)
        n = self.world.num_actions if table is None else len(table)
        self.single_action_space = gym.spaces.Discrete(n)
        self.observation_space = batch_space(self.single_observation_space, B)
        self.action_space = batch_space(self.single_action_space, B)
        self.generator = torch.Generator(device=self.world.device)
        self.elapsed_steps = np.zeros(B, dtype=np.int64)
        self._autoreset = np.zeros(B, dtype=bool)  # envs done at the last step: restarted at the next
        self.last_step_ms = 0.0
        self._started = False

    def _load_prompts(self, prompt) -> list[np.ndarray]:
        """One prompt for all envs or a list of one per env -> list of uint8 (T, H, W, 3) clips."""
        prompts = list(prompt) if isinstance(prompt, (list, tuple)) else [prompt] * self.num_envs
        if len(prompts) != self.num_envs:
            raise GenieValueError(
                f"Got {len(prompts)} prompts for {self.num_envs} envs: pass one, or one per env."
            )
        cache: dict[int, np.ndarray] = {}  # the same object is loaded once
        return [cache.setdefault(id(p), self.world.prompt_clip(p).cpu().numpy()) for p in prompts]

    def _seed(self, seed) -> None:
        if seed is None:
            return
        seeds = (
            [int(seed) + i for i in range(self.num_envs)] if np.ndim(seed) == 0 else [int(s) for s in seed]
        )
        if len(seeds) != self.num_envs:
            raise GenieValueError(
                f"Got {len(seeds)} seeds for {self.num_envs} envs: pass one int, or one per env."
            )
        self._np_random = np.random.default_rng(np.random.SeedSequence(seeds))
        self._np_random_seed = seeds[0]

    # --- Gymnasium API ---

    def reset(self, *, seed=None, options: dict | None = None):
        """options: "prompt" (one, or one per env) replaces the prompts; "reset_mask" (bool (B,)) restarts
        only those envs, keeping the others (all False: nothing changes)."""
        options = dict(options or {})
        mask = options.get("reset_mask")
        partial = mask is not None and self._started
        if partial:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise GenieValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},)."
                )
        self._seed(seed)
        if seed is not None or not partial or mask.any():  # an all-False mask alone changes nothing
            self.generator.manual_seed(generator_seed(self.np_random))
        if options.get("prompt") is not None:
            self.prompts = self._load_prompts(options["prompt"])
        if partial:
            rows = np.flatnonzero(mask)
            if len(rows):
                self.world.reset_rows(rows, [self.prompts[i] for i in rows])
        else:
            mask = np.ones(self.num_envs, dtype=bool)
            self.world.reset(self.prompts, batch_size=self.num_envs)
            self._started = True
        self.elapsed_steps[mask] = 0
        self._autoreset[mask] = False
        return frame_to_numpy(self.world.frames), {}

    @torch.no_grad()
    def step_tensor(self, actions: torch.Tensor):
        """actions (B,) integer tensor -> (obs uint8 (B, H, W, 3), reward float32 (B,), terminated bool (B,),
        truncated bool (B,), info), all tensors on the World's device. obs is the World's frame buffer:
        clone it to keep it past the next step."""
        if not self._started:
            raise GenieValueError("Call reset() before step(actions).")
        t0 = time.perf_counter()
        if self._latent_for_real is not None:  # the game's actions -> their latent actions
            real = torch.as_tensor(np.asarray(actions) if not torch.is_tensor(actions) else actions)
            if real.dtype in (torch.bool,) or real.is_floating_point() or real.shape != (self.num_envs,):
                raise GenieValueError(f"Expected {self.num_envs} integer real actions, got {actions!r}.")
            if bool(((real < 0) | (real >= len(self._latent_for_real))).any()):
                raise GenieValueError(
                    f"Real actions are in [0, {len(self._latent_for_real)}), got {real.tolist()}."
                )
            actions = self._latent_for_real[real.to(self.world.device).long()]
        actions = self.world.check_actions(actions)
        rows = np.flatnonzero(self._autoreset)
        if len(rows) == self.num_envs:  # everyone restarts: one fresh batch is cheaper than stepping
            self.world.reset(self.prompts, batch_size=self.num_envs)
        else:
            self.world.step(
                actions, self.maskgit_steps, self.temperature, self.generator
            )  # actions of `rows` ignored
            if len(rows):
                self.world.reset_rows(rows, [self.prompts[i] for i in rows])
        self.elapsed_steps += 1
        self.elapsed_steps[rows] = 0
        device = self.world.device
        reward, terminated = self._reward_done()
        reward[rows], terminated[rows] = 0.0, False
        truncated = np.zeros(self.num_envs, dtype=bool)
        if self.max_episode_steps is not None:
            truncated = self.elapsed_steps >= self.max_episode_steps
        self._autoreset = truncated | terminated.cpu().numpy()
        self.last_step_ms = (time.perf_counter() - t0) * 1e3
        info = {
            "elapsed_steps": self.elapsed_steps.copy(),
            "_elapsed_steps": np.ones(self.num_envs, dtype=bool),
        }
        return self.world.frames, reward, terminated, torch.from_numpy(truncated).to(device), info

    def _reward_done(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward float32 (B,), terminated bool (B,)) of the frames just imagined: the world's reward
        model when it has one, else zeros."""
        predicted = self.world.predict_reward_done(self.generator)
        if predicted is not None:
            return predicted[0].float().clone(), predicted[1].clone()
        device = self.world.device
        return torch.zeros(self.num_envs, device=device), torch.zeros(
            self.num_envs, dtype=torch.bool, device=device
        )

    def step(self, actions):
        """actions (B,) ints -> numpy (obs copy, reward float64, terminated, truncated, info)."""
        obs, reward, terminated, truncated, info = self.step_tensor(actions)
        return (
            frame_to_numpy(obs),
            reward.cpu().numpy().astype(np.float64),
            terminated.cpu().numpy(),
            truncated.cpu().numpy(),
            info,
        )

    def render(self):
        if self.render_mode == "rgb_array" and self._started:
            return tuple(frame_to_numpy(self.world.frames))
        return None

    def close_extras(self, **kwargs):
        self.world.release()

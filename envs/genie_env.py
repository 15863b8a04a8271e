"""Genie-v0: one imagined world as a Gymnasium environment.

Letters: H W pixels, A latent actions.

Observation: the current frame, uint8 (H, W, 3), a fresh numpy copy every call. Action: a latent action
in Discrete(A) (a_t moves frame t to frame t+1). Reward and `terminated` come from the world's reward
model when it has one (trained on recorded rewards); otherwise 0.0 and False. Episodes are truncated after
`max_episode_steps` steps (None: never). `info` holds "elapsed_steps"; the wall-clock latency of the last
step is `env.unwrapped.last_step_ms` (kept out of info, which check_env requires to be deterministic).

Randomness: `reset(seed=...)` seeds `self.np_random`; each reset draws a torch.Generator seed from it,
so the same seed and actions give the same frames, on the same device.

`compile=True` steps the world as one captured program (torch.compile; CUDA graphs on a GPU): the same
frames for the same seed, faster once compiled; the first step compiles (minutes on a small CPU).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from envs.actions import latent_for_real, number_keys_to_action
from genie.core.errors import GenieFileNotFoundError, GenieTypeError, GenieValueError, positive_int
from genie.world import World
from genie.world.folder import SHIPPED_WORLDS

# The world python play.py and gym.make("Genie-v0") open when none is given; others: --world NAME or a folder.
DEFAULT_WORLD = "doom"  # VizDoom HealthGathering, latent actions; "breakout" ships beside it
DEMO_WORLD = SHIPPED_WORLDS / DEFAULT_WORLD


def load_world(world=None, device=None, compile: bool = False):
    """A World instance, a world folder, or None (the shipped demo world) -> World. `compile=True`
    loads it with the captured step (genie/world/world.py)."""
    if isinstance(world, World):
        if compile and not world.compile:
            raise GenieValueError(
                "compile=True was given with a World loaded without it: pass the folder, or load it with "
                "World.load(path, compile=True)."
            )
        return world
    if world is None:
        if not (DEMO_WORLD / "world.json").exists():
            raise GenieFileNotFoundError(
                "No world given and no demo world is shipped: pass world=PATH (or --world PATH), or train one "
                "with `genie train world`."
            )
        world = DEMO_WORLD
    return World.load(world, device=device, compile=compile)


def default_prompt(world) -> Path:
    """The world's first shipped prompt image (`<world>/prompts/*.png`)."""
    folder = Path(world.info["path"]) / "prompts" if "path" in world.info else None
    pngs = sorted(folder.glob("*.png")) if folder is not None and folder.is_dir() else []
    if not pngs:
        raise GenieValueError(
            "This world ships no prompt image (prompts/*.png): pass prompt= (or --prompt) an image path, "
            "PIL image or uint8 array."
        )
    return pngs[0]


def frame_to_numpy(frame: torch.Tensor) -> np.ndarray:
    """uint8 tensor -> numpy array that shares no memory with the World (on CPU .numpy() aliases)."""
    arr = frame.detach().cpu().numpy()
    return arr.copy() if frame.device.type == "cpu" else arr


def check_episode_kwargs(render_mode, render_modes, max_episode_steps) -> int | None:
    """Validate the kwargs both envs share; returns max_episode_steps as an int (or None)."""
    if render_mode is not None and render_mode not in render_modes:
        raise GenieValueError(f"render_mode must be one of {render_modes} or None, got {render_mode!r}.")
    if max_episode_steps is None:
        return None
    try:
        return positive_int(max_episode_steps, "max_episode_steps")
    except GenieValueError:
        raise GenieValueError(
            f"max_episode_steps must be an integer >= 1, or None for no time limit, got {max_episode_steps!r}."
        ) from None


def generator_seed(np_random: np.random.Generator) -> int:
    return int(np_random.integers(2**63 - 1))


class GenieEnv(gym.Env):
    """One world from a prompt image; latent actions in, frames out."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array", "human"], "render_fps": 15}

    def __init__(
        self,
        world=None,
        prompt=None,
        maskgit_steps: int | None = None,
        temperature: float | None = None,
        device=None,
        max_episode_steps: int | None = 1000,
        render_mode: str | None = None,
        render_scale: int = 8,
        action_space: str = "latent",
        compile: bool = False,
    ):
        max_episode_steps = check_episode_kwargs(
            render_mode, self.metadata["render_modes"], max_episode_steps
        )
        self.world = load_world(world, device, compile)
        self.world.check_sampling(maskgit_steps, temperature)  # bad values fail here, not at the first step
        # Load the prompt now: a bad prompt fails at construction, and resets don't re-read files.
        self.prompt = self.world.prompt_clip(default_prompt(self.world) if prompt is None else prompt)
        self.maskgit_steps, self.temperature = maskgit_steps, temperature
        self.max_episode_steps = max_episode_steps
        self.render_mode, self.render_scale = render_mode, positive_int(render_scale, "render_scale")
        S = self.world.image_size
        self.observation_space = gym.spaces.Box(0, 255, (S, S, 3), np.uint8)
        # "latent": the world's |A| latent actions; "real": the game's own actions, each played as the
        # latent action the world's fitted mapping gives it.
        self._latent_for_real = latent_for_real(self.world, action_space)
        n = self.world.num_actions if self._latent_for_real is None else len(self._latent_for_real)
        self.action_space = gym.spaces.Discrete(n)
        self.generator = torch.Generator(device=self.world.device)
        self.elapsed_steps = 0
        self.last_step_ms = 0.0  # latency of the last step (not in info: check_env wants info deterministic)
        self._frame = None  # uint8 (H, W, 3) numpy, the last observation (private copy)
        self._window = self._clock = None

    # --- Gymnasium API ---

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.generator.manual_seed(generator_seed(self.np_random))
        if options and options.get("prompt") is not None:
            self.prompt = self.world.prompt_clip(options["prompt"])
        frames = self.world.reset(self.prompt, batch_size=1)  # (1, H, W, 3)
        self._frame = frame_to_numpy(frames[0])
        self.elapsed_steps = 0
        info = {"elapsed_steps": 0}
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), info

    def step(self, action):
        if self._frame is None:
            raise GenieValueError("Call reset() before step(action).")
        t0 = time.perf_counter()
        if self._latent_for_real is not None:
            action = self._latent_for_real[self._check_real(action)]
        frames = self.world.step([action], self.maskgit_steps, self.temperature, self.generator)
        self._frame = frame_to_numpy(frames[0])
        self.last_step_ms = (time.perf_counter() - t0) * 1e3
        self.elapsed_steps += 1
        reward, terminated = self._reward_done(frames)
        truncated = self.max_episode_steps is not None and self.elapsed_steps >= self.max_episode_steps
        info = {"elapsed_steps": self.elapsed_steps}
        if self.render_mode == "human":
            self.render()
        return self._frame.copy(), reward, terminated, bool(truncated), info

    def _check_real(self, action) -> int:
        a = np.asarray(action)
        if a.ndim != 0 or a.dtype.kind not in "iu":
            raise GenieTypeError(
                f"A real action must be one integer in [0, {self.action_space.n}), got {action!r}."
            )
        if not 0 <= int(a) < self.action_space.n:
            raise GenieValueError(f"Real actions are in [0, {self.action_space.n}), got {int(a)}.")
        return int(a)

    def _reward_done(self, frames: torch.Tensor) -> tuple[float, bool]:
        """(reward, terminated) of the frame just imagined: the world's reward model when it has one
        (a world trained on recorded rewards), else 0.0 and False."""
        predicted = self.world.predict_reward_done(self.generator)
        if predicted is None:
            return 0.0, False
        reward, terminated = predicted
        return float(reward[0]), bool(terminated[0])

    def render(self):
        if self._frame is None:
            return None
        if self.render_mode == "rgb_array":
            return self._frame.copy()
        if self.render_mode == "human":
            self._render_human()
        return None

    def close(self):
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = self._clock = None

    def get_keys_to_action(self) -> dict[tuple[int, ...], int]:
        """Number keys '1'..'9' -> latent actions 0..8, for `gymnasium.utils.play.play`."""
        return number_keys_to_action(self.world.num_actions)

    # --- human rendering ---

    def _render_human(self):
        import os

        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        H, W = self._frame.shape[:2]
        if self._window is None:
            pygame.display.init()
            pygame.display.set_caption("Genie-v0")
            self._window = pygame.display.set_mode((W * self.render_scale, H * self.render_scale))
            self._clock = pygame.time.Clock()
        surface = pygame.surfarray.make_surface(self._frame.transpose(1, 0, 2))  # pygame is (W, H)
        pygame.transform.scale(surface, self._window.get_size(), self._window)
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])

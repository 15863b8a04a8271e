"""Real games as data sources: making a Gymnasium env record what it executed, and reading its frames
and action names.

Letters: H W pixels.

- **Honest actions.** ALE/*-v5 envs repeat the previous action a quarter of the time by default
  (repeat_action_probability 0.25, "sticky actions"): the recorded action would then not be the one
  the emulator ran. `make_env` sets it to 0 unless the caller passes it, and `game_settings` reads back
  what the env really runs (frame skip, stickiness), which `genie collect` writes into dataset.json.
- **VizDoom** (the optional extra `pip install -e ".[doom]"`, which ships the Freedoom game data):
  bare ids such as `VizdoomTakeCover-v1` work (the wrapper module is imported on demand; the
  `module:Id` form works as for any env). Frames come from the observation's game `screen`, never from
  `render()`, which puts the automap beside the screen on maps that enable it. Action names come from
  the env's buttons: Discrete action i presses the buttons of row i of the wrapper's button map
  (NOOP, MOVE_LEFT, TURN_RIGHT, MOVE_FORWARD+TURN_LEFT, ...).
"""

from __future__ import annotations

import numpy as np

from genie.core.errors import GenieError, GenieValueError

STICKY_KEY = "repeat_action_probability"


def _register(env_id: str) -> None:
    import gymnasium as gym

    if env_id.startswith("ALE/"):
        try:
            import ale_py
        except ImportError:
            raise GenieError(
                f'{env_id} needs the Atari emulator: install it with `pip install -e ".[atari]"`.'
            ) from None
        gym.register_envs(ale_py)
    elif env_id.startswith("Vizdoom") and env_id not in gym.registry:
        try:
            import vizdoom.gymnasium_wrapper  # noqa: F401  (registers the Vizdoom*-v* ids)
        except ImportError:
            raise GenieError(f'{env_id} needs VizDoom: install it with `pip install -e ".[doom]"`.') from None


def honest_kwargs(env_id: str, env_kwargs: dict) -> dict:
    """The env kwargs with sticky actions off for ALE envs, unless the caller set them."""
    kwargs = dict(env_kwargs)
    if env_id.startswith("ALE/"):
        kwargs.setdefault(STICKY_KEY, 0.0)
    return kwargs


def make_env(env_id: str, env_kwargs: dict):
    """gymnasium.make(env_id) rendering rgb_array frames, with `honest_kwargs`; one clear error for an
    unknown id, bad kwargs or an env that cannot render."""
    import gymnasium as gym

    _register(env_id)
    env_kwargs = honest_kwargs(env_id, env_kwargs)
    try:
        env = gym.make(env_id, render_mode="rgb_array", **env_kwargs)
    except gym.error.Error as e:
        raise GenieValueError(
            f"Unknown Gymnasium environment {env_id!r} ({e}): check the id, e.g. ALE/Breakout-v5, "
            "VizdoomTakeCover-v1 or CartPole-v1."
        ) from None
    except TypeError as e:
        raise GenieValueError(
            f"{env_id} rejected the env kwargs {env_kwargs} ({e}): fix --env-kwargs."
        ) from None
    if "rgb_array" not in env.metadata.get("render_modes", []):
        env.close()
        raise GenieValueError(
            f"{env_id} cannot render rgb_array frames: pick an env that supports rgb_array."
        )
    return env


def game_settings(env) -> dict:
    """What the env runs per step, read back from it: {"frame_skip", "repeat_action_probability"}
    (None where the env does not say)."""
    kwargs = dict(getattr(env.spec, "kwargs", None) or {})
    unwrapped = env.unwrapped
    frame_skip = kwargs.get("frameskip", kwargs.get("frame_skip"))
    if frame_skip is None:
        frame_skip = getattr(unwrapped, "frame_skip", getattr(unwrapped, "_frameskip", None))
    sticky = kwargs.get(STICKY_KEY)
    if hasattr(unwrapped, "ale"):  # what the emulator itself was configured with
        sticky = float(unwrapped.ale.getFloat(STICKY_KEY))
    return {
        "frame_skip": frame_skip if isinstance(frame_skip, int) else None,
        STICKY_KEY: None if sticky is None else float(sticky),
    }


def observe(env, observation, env_id: str) -> np.ndarray:
    """The frame of the step that returned `observation`: the game screen of a dict observation that has
    one (VizDoom), else env.render()."""
    if isinstance(observation, dict) and isinstance(observation.get("screen"), np.ndarray):
        return observation["screen"]
    frame = env.render()
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3):
        raise GenieValueError(
            f"{env_id} returned no rgb_array frame from render(): pick an env that supports rgb_array."
        )
    return frame


def action_names(env, space) -> list[str]:
    """The game's names for its Discrete actions: ALE's meanings (NOOP, FIRE, RIGHT, ...), VizDoom's
    pressed buttons (NOOP, MOVE_LEFT, ...), else "0", "1", ..."""
    n = int(space.n)
    unwrapped = env.unwrapped
    button_map = getattr(unwrapped, "button_map", None)
    game = getattr(unwrapped, "game", None)
    if button_map is not None and game is not None and len(button_map) == n:
        buttons = [str(b).split(".")[-1] for b in game.get_available_buttons()]
        binary = buttons[len(buttons) - len(button_map[0]) :]  # delta buttons come first, if any
        return ["+".join(b for b, on in zip(binary, row) if on) or "NOOP" for row in button_map]
    meanings = getattr(unwrapped, "get_action_meanings", None)
    try:
        names = [str(m) for m in meanings()] if meanings is not None else None
    except Exception:  # some envs define the method but cannot answer before reset
        names = None
    return names if names and len(names) == n else [str(i) for i in range(n)]

"""Keys -> latent actions, for a person playing a world (`python play.py`, `genie play`).

Number keys always work: key '1' is latent action 0, '2' is action 1, ... up to '9'. When the world
knows what its latent actions mean (world.json "action_mapping", see envs/actions.py), real names are
bound to keys: LEFT/RIGHT/UP/DOWN -> arrows, FIRE/JUMP/SPACE -> space bar (VizDoom's TURN_LEFT/
MOVE_LEFT, TURN_RIGHT/MOVE_RIGHT, MOVE_FORWARD/MOVE_BACKWARD and ATTACK likewise); NOOP is what plays when no
key is held. Other names (e.g. Atari's UPLEFT) stay reachable through their number key.

The legend lists the game's keys first (arrows, space: what a player reaches for), then the number
keys as "raw latent actions" (what the model learnt, named or not).

Key names use pygame.key.name's spelling ('1', 'left', 'space'); this module imports no pygame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envs.actions import MAX_NUMBER_KEYS, parse_action_mapping
from genie.core.errors import GenieValueError

REAL_NAME_KEYS = {
    "LEFT": "left",
    "RIGHT": "right",
    "UP": "up",
    "DOWN": "down",
    "FIRE": "space",
    "JUMP": "space",
    "SPACE": "space",
    # VizDoom's buttons (the env's action names): turning or strafing on the arrows, walking on up/down
    "TURN_LEFT": "left",
    "TURN_RIGHT": "right",
    "MOVE_LEFT": "left",
    "MOVE_RIGHT": "right",
    "MOVE_FORWARD": "up",
    "MOVE_BACKWARD": "down",
    "ATTACK": "space",
}
IDLE_NAMES = ("NOOP", "NONE", "IDLE")
KEY_LABELS = {"left": "Left", "right": "Right", "up": "Up", "down": "Down", "space": "Space"}  # legend


@dataclass
class Keymap:
    """Key names (pygame.key.name spelling: '1', 'left', 'space') -> latent actions, plus the idle action."""

    num_actions: int
    actions: dict[str, int] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)  # latent action -> real name, when known
    key_names: dict[str, str] = field(default_factory=dict)  # 'left' -> the real action it plays, 'LEFT'
    idle_action: int = 0
    idle_name: str | None = None  # the real action idle plays ('NOOP'), when the mapping chose it

    @classmethod
    def for_world(cls, num_actions: int, info: dict | None = None, idle_action: int | None = None) -> Keymap:
        km = cls(num_actions)
        for a in range(min(num_actions, MAX_NUMBER_KEYS)):
            km.actions[str(a + 1)] = a
        mapping = (info or {}).get("action_mapping")
        if mapping:
            names, latents = parse_action_mapping(mapping, num_actions)
            for name, latent in zip(names, latents):
                km.labels.setdefault(latent, name)
                key = REAL_NAME_KEYS.get(name)
                if key is not None and key not in km.actions:
                    km.actions[key], km.key_names[key] = latent, name
                if name in IDLE_NAMES and idle_action is None:
                    km.idle_action, km.idle_name = latent, name
        if idle_action is not None:
            if not 0 <= idle_action < num_actions:
                raise GenieValueError(f"--idle-action must be in [0, {num_actions}), got {idle_action}.")
            km.idle_action = idle_action
        return km

    def label(self, action: int) -> str:
        name = self.labels.get(action)
        return f"{action}" + (f" ({name})" if name else "")

    def legend(self) -> list[str]:
        """Short lines for the on-screen legend: the game's keys first (arrows, space), then the number
        keys, which play the model's raw latent actions, then the commands."""
        digits = min(self.num_actions, MAX_NUMBER_KEYS)
        idle = self.idle_name or f"latent {self.idle_action}"
        named = [f"{label}: {self.key_names[k]}" for k, label in KEY_LABELS.items() if k in self.key_names]
        numbers = f"1-{digits}: raw latent actions 0-{digits - 1}"
        if named:
            lines = ["  ".join(named) + f"  (no key: {idle})", numbers]
        else:
            lines = [f"{numbers}  (no key: {idle})"]
        lines.append("R reset  P pause  S screenshot  Esc quit")
        return lines

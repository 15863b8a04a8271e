"""Keys -> latent actions, for people playing a world (play.py, `gymnasium.utils.play.play`).

Number keys always work: key '1' is latent action 0, '2' is action 1, ... up to '9' (|A| <= 9 is the
playable range; the paper uses 6..8).

A world may also know what its latent actions mean. `world.json` then holds

    "action_mapping": {
        "real_action_names": ["NOOP", "LEFT", "RIGHT", "UP", "DOWN", "FIRE"],
        "latent_for_real":   [0,      3,      5,       1,    2,      7]
    }

one latent action per real action of the training data (the latent that best produces it, fitted on a
few labelled transitions as in the paper's behaviour-cloning study). Real names bound to keys:
LEFT/RIGHT/UP/DOWN -> arrows, FIRE/JUMP/SPACE -> space bar; NOOP is what plays when no key is held.
Other names (e.g. Atari's UPLEFT) stay reachable through their number key.

This module imports no pygame at load: key codes are looked up when a keymap is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genie.errors import GenieValueError

MAX_NUMBER_KEYS = 9
REAL_NAME_KEYS = {
    "LEFT": "left",
    "RIGHT": "right",
    "UP": "up",
    "DOWN": "down",
    "FIRE": "space",
    "JUMP": "space",
    "SPACE": "space",
}
IDLE_NAMES = ("NOOP", "NONE", "IDLE")


def number_keys_to_action(num_actions: int) -> dict[tuple[int, ...], int]:
    """{(ord('1'),): 0, (ord('2'),): 1, ...} for gymnasium.utils.play.play (pygame key codes of digits are
    their ASCII codes)."""
    return {(ord(str(a + 1)),): a for a in range(min(num_actions, MAX_NUMBER_KEYS))}


def parse_action_mapping(mapping, num_actions: int) -> tuple[list[str], list[int]]:
    """Validate world.json's "action_mapping" -> (real names upper-cased, latent action of each)."""
    try:
        names = [str(n).upper() for n in mapping["real_action_names"]]
        latents = [int(a) for a in mapping["latent_for_real"]]
    except (TypeError, KeyError, ValueError):
        raise GenieValueError(
            'world.json "action_mapping" must be {"real_action_names": [...], "latent_for_real": [...]}: '
            "fix or remove it."
        ) from None
    if len(names) != len(latents) or any(not 0 <= a < num_actions for a in latents):
        raise GenieValueError(
            f'world.json "action_mapping" needs one latent action in [0, {num_actions}) per real action name: '
            "fix or remove it."
        )
    return names, latents


@dataclass
class Keymap:
    """Key names (pygame.key.name spelling: '1', 'left', 'space') -> latent actions, plus the idle action."""

    num_actions: int
    actions: dict[str, int] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)  # latent action -> real name, when known
    idle_action: int = 0

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
                if name in REAL_NAME_KEYS:
                    km.actions.setdefault(REAL_NAME_KEYS[name], latent)
                if name in IDLE_NAMES and idle_action is None:
                    km.idle_action = latent
        if idle_action is not None:
            if not 0 <= idle_action < num_actions:
                raise GenieValueError(f"--idle-action must be in [0, {num_actions}), got {idle_action}.")
            km.idle_action = idle_action
        return km

    def label(self, action: int) -> str:
        name = self.labels.get(action)
        return f"{action}" + (f" ({name})" if name else "")

    def legend(self) -> list[str]:
        """Short lines for the on-screen legend."""
        digits = min(self.num_actions, MAX_NUMBER_KEYS)
        lines = [f"keys 1-{digits}: latent actions 0-{digits - 1}; none held: {self.label(self.idle_action)}"]
        named = [f"{k}={self.label(a)}" for k, a in self.actions.items() if not k.isdigit()]
        if named:
            lines.append(" ".join(named))
        lines.append("R reset  P pause  S screenshot  Esc quit")
        return lines


def latent_for_real(world, action_space: str) -> list[int] | None:
    """The latent action of each real action when `action_space` is "real" (None for "latent")."""
    if action_space not in ("latent", "real"):
        raise GenieValueError(f'action_space must be "latent" or "real", got {action_space!r}.')
    if action_space == "latent":
        return None
    mapping = world.info.get("action_mapping")
    if not mapping:
        raise GenieValueError(
            'action_space="real" needs a world with a latent<->real action mapping: train it with '
            "`genie train world` on data recorded by `genie collect` (it has the game's actions)."
        )
    return parse_action_mapping(mapping, world.num_actions)[1]

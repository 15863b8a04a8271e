"""Latent <-> real actions of a world, for the envs: number keys, and the world's action mapping.

Number keys always work: key '1' is latent action 0, '2' is action 1, ... up to '9' (|A| <= 9 is the
playable range; the paper uses 6..8).

A world may also know what its latent actions mean. `world.json` then holds

    "action_mapping": {
        "real_action_names": ["NOOP", "LEFT", "RIGHT", "UP", "DOWN", "FIRE"],
        "latent_for_real":   [0,      3,      5,       1,    2,      7]
    }

one latent action per real action of the training data (the latent that best produces it, fitted on a
few labelled transitions as in the paper's behaviour-cloning study). `action_space="real"` envs play
the game's actions through it; the pygame keymap (genie/cli/keymap.py) binds its names to keys.
"""

from __future__ import annotations

from genie.core.errors import GenieValueError

MAX_NUMBER_KEYS = 9


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

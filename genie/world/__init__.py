"""genie.world: a prompt becomes a playable world (World), and the world folder it lives in."""

from genie.world.folder import WORLD_FORMAT, WORLD_VERSION, export_world, random_world, read_world, save_world
from genie.world.prompt import load_prompt_frames
from genie.world.world import World, default_device

__all__ = [
    "WORLD_FORMAT",
    "WORLD_VERSION",
    "World",
    "default_device",
    "export_world",
    "load_prompt_frames",
    "random_world",
    "read_world",
    "save_world",
]

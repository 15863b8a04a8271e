"""Synthetic action-labelled video for learning tests: a sprite moved by a hidden action.

Action a in {0: stay, 1: up, 2: down, 3: left, 4: right} moves a bright square by `step` pixels, wrapping
around the borders, on a dark background. The dataset records the real actions, so the LAM's discovered
actions can be scored against them; the models never see them.
"""

from __future__ import annotations

import numpy as np

from genie.data import EpisodeWriter

MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])


def sprite_frame(pos, size: int, sprite: int) -> np.ndarray:
    """A square sprite at pixel position pos (y, x), drawn wrapping around the borders."""
    frame = np.full((size, size, 3), 16, dtype=np.uint8)
    frame[:sprite, :sprite] = (240, 200, 40)
    return np.roll(frame, shift=(int(pos[0]), int(pos[1])), axis=(0, 1))


def sprite_episodes(
    episodes: int,
    length: int,
    size: int = 32,
    sprite: int = 4,
    step: int = 4,
    seed: int = 0,
    wrap: bool = True,
):
    """The sprite lives on a grid of cells. wrap=True: a torus (every position alike; leaving one side
    enters the other), actions uniform. wrap=False: the policy picks among the moves that stay on the
    board (no blocked moves, but the action distribution then depends on the position)."""
    rng = np.random.default_rng(seed)
    cells = size // step if wrap else (size - sprite) // step + 1
    for _ in range(episodes):
        cell = rng.integers(0, cells, size=2)
        frames, actions = [sprite_frame(cell * step, size, sprite)], []
        for _ in range(length - 1):
            valid = [a for a, m in enumerate(MOVES) if wrap or ((cell + m >= 0) & (cell + m < cells)).all()]
            a = int(rng.choice(valid))
            cell = (cell + MOVES[a]) % cells if wrap else cell + MOVES[a]
            actions.append(a)
            frames.append(sprite_frame(cell * step, size, sprite))
        yield np.stack(frames), np.array(actions, dtype=np.int64)


def write_sprite_dataset(root, episodes: int = 40, length: int = 32, seed: int = 0, **kw):
    """Sprite video with its hidden actions; the board pays nothing, so no rewards are recorded (a world
    trained on it has no reward head to train: write_reward_dataset is the data with a reward)."""
    with EpisodeWriter(root, meta={"source": "gym", "env_id": "Sprite-v0", "num_actions": len(MOVES)}) as w:
        for frames, actions in sprite_episodes(episodes, length, seed=seed, **kw):
            w.add_episode(frames, actions=actions)
    return root


def sprite_cell(frame: np.ndarray, step: int) -> tuple[int, int]:
    """(row, col) cell of the sprite's top-left corner (no straddling when sprite == step)."""
    ys, xs = np.nonzero(frame[:, :, 0] > 128)
    return int(ys.min()) // step, int(xs.min()) // step


def write_reward_dataset(
    root, episodes: int = 40, length: int = 32, size: int = 16, step: int = 4, seed: int = 0, ends="next"
):
    """Sprite video whose transitions carry reward 1.0 when the sprite lands in the top row and terminate
    when it lands in the bottom-right cell (a signal in frame t+1 that a reward model can learn), or,
    with ends="current", when it leaves that cell (foreshadowed by frame t: a hazard's case)."""
    last = size // step - 1
    with EpisodeWriter(root, meta={"source": "gym", "env_id": "Sprite-v0", "num_actions": len(MOVES)}) as w:
        for frames, actions in sprite_episodes(
            episodes, length, size=size, sprite=step, step=step, seed=seed
        ):
            cells = [sprite_cell(f, step) for f in frames[1:]]
            rewards = np.array([1.0 if r == 0 else 0.0 for r, _ in cells], np.float32)
            if ends == "current":
                cells_t = [sprite_cell(f, step) for f in frames[:-1]]
                terminated = np.array([(r, c) == (last, last) for r, c in cells_t], bool)
            else:
                terminated = np.array([(r, c) == (last, last) for r, c in cells], bool)
            w.add_episode(
                frames,
                actions=actions,
                rewards=rewards,
                terminated=terminated,
                truncated=np.zeros(len(actions), bool),
            )
    return root


def scroll_episodes(episodes: int, length: int, size: int = 32, step: int = 2, seed: int = 0):
    """A camera over a smooth random texture (a torus 4x the view) moved by a hidden action
    {0: stay, 1: up, 2: down, 3: left, 4: right}, `step` pixels a step: the whole view shifts, as when a
    first-person player turns. x_t+1 - x_t is then about shift x image gradient, so a difference image
    alone does not tell left from right; the frames do."""
    rng = np.random.default_rng(seed)
    big = 4 * size
    noise = rng.random((big // 4, big // 4, 3))
    texture = np.kron(noise, np.ones((4, 4, 1)))  # blocky, then smoothed by rolling averages
    for axis in (0, 1):
        texture = sum(np.roll(texture, k, axis=axis) for k in range(-2, 3)) / 5
    texture = (texture * 255).astype(np.uint8)
    for _ in range(episodes):
        pos = rng.integers(0, big, size=2)
        frames, actions = [], []
        for t in range(length):
            view = np.roll(texture, shift=(-int(pos[0]), -int(pos[1])), axis=(0, 1))[:size, :size]
            frames.append(view)
            if t < length - 1:
                a = int(rng.integers(0, len(MOVES)))
                pos = (pos + MOVES[a] * step) % big
                actions.append(a)
        yield np.stack(frames), np.array(actions, dtype=np.int64)


def write_scroll_dataset(root, episodes: int = 40, length: int = 32, seed: int = 0, **kw):
    """Whole-view scrolling video with its hidden actions (see scroll_episodes)."""
    with EpisodeWriter(root, meta={"source": "gym", "env_id": "Scroll-v0", "num_actions": len(MOVES)}) as w:
        for frames, actions in scroll_episodes(episodes, length, seed=seed, **kw):
            w.add_episode(frames, actions=actions)
    return root

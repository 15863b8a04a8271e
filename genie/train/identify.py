"""How identifiable are a game's actions from its frames? A check to run before training a LAM.

Letters: B batch, T frames, H W pixels, A real actions.

A latent action model can only find an action that changes what the frames show. Two measurements on
a dataset that recorded its actions (`genie collect`), each on held-out episodes:

- **motion per action**: the mean absolute frame difference |x_{t+1} - x_t| (0-255) after each action.
  If NOOP moves the frame as much as the others (momentum, a scrolling screen), a pair of frames says
  little about the action; the frame skip is the knob (`--env-kwargs '{"frame_skip": 4}'` in VizDoom).
- **supervised probes**: a small CNN trained to predict the recorded action from the frames, with the
  labels the LAM never gets. `pair` sees (x_t, x_{t+1}) as the LAM's encoder does; `history` adds
  x_{t-1}. Their held-out accuracy is an upper bound on the latent-to-real agreement a LAM of that view
  can reach, next to `chance` (always the commonest action). A pair probe near chance means no LAM
  reading frame pairs will find these actions; a history probe well above the pair probe means the
  action shows only with a frame of history (momentum).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from genie.core.errors import GenieValueError
from genie.data import VideoDataset

VIEWS = {"pair": 2, "history": 3}  # frames each probe sees, ending at x_{t+1}


def _transitions(ds: VideoDataset, episodes: list[int], frames: int):
    """Stacked windows (n, frames, H, W, 3) uint8 and the action into the last frame (n,)."""
    xs, ys = [], []
    for e in episodes:
        ep = ds.episode(e)
        video, actions = np.asarray(ep["frames"]), np.asarray(ep["actions"])
        for t in range(frames - 1, len(video)):
            xs.append(video[t - frames + 1 : t + 1])
            ys.append(actions[t - 1])
    if not xs:
        raise GenieValueError("The episodes are too short for the probes: collect longer episodes.")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _features(x: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W, 3) uint8 -> (B, 3 + 3 (F-1), H, W): the last frame and each frame difference."""
    x = x.float() / 255.0
    diffs = x[:, 1:] - x[:, :-1]
    out = torch.cat([x[:, -1:], diffs], dim=1)  # (B, F, H, W, 3)
    return out.permute(0, 1, 4, 2, 3).flatten(1, 2)


class Probe(nn.Module):
    def __init__(self, in_channels: int, size: int, num_actions: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * (size // 8) ** 2, num_actions),
        )

    def forward(self, x):
        return self.body(x)


def motion_per_action(ds: VideoDataset, episodes: list[int], num_actions: int) -> list[float | None]:
    """Mean |x_{t+1} - x_t| (0-255) over the transitions after each action (None: action never taken)."""
    sums, counts = np.zeros(num_actions), np.zeros(num_actions)
    for e in episodes:
        ep = ds.episode(e)
        video = np.asarray(ep["frames"]).astype(np.int16)
        change = np.abs(video[1:] - video[:-1]).mean(axis=(1, 2, 3))  # (T-1,)
        np.add.at(sums, ep["actions"], change)
        np.add.at(counts, ep["actions"], 1)
    return [float(s / c) if c else None for s, c in zip(sums, counts)]


def train_probe(x_train, y_train, x_test, y_test, num_actions: int, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    size = x_train.shape[2]
    probe = Probe(3 * x_train.shape[1], size, num_actions)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (min(64, len(x_train)),), generator=gen)
        loss = nn.functional.cross_entropy(probe(_features(x_train[idx])), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe.eval()
    with torch.no_grad():
        x_test = torch.from_numpy(x_test)
        pred = torch.cat(
            [probe(_features(x_test[i : i + 256])).argmax(-1) for i in range(0, len(x_test), 256)]
        )
    return float((pred.numpy() == y_test).mean())


def identify(data, steps: int = 300, seed: int = 0, progress: bool = True) -> dict:
    """The identifiability report of a dataset with recorded actions (see the module docstring)."""
    ds = data if isinstance(data, VideoDataset) else VideoDataset(data)
    if not ds.has_actions:
        raise GenieValueError(
            f"{getattr(ds, 'root', data)} recorded no actions: record a game with `genie collect`."
        )
    if ds.frame_shape[0] % 8 or ds.frame_shape[0] != ds.frame_shape[1]:
        raise GenieValueError("The probes need square frames whose side is a multiple of 8 (e.g. --size 64).")
    num_actions = int(ds.meta.get("num_actions") or 0)
    train, test = ds.split_episodes("train"), ds.split_episodes("val")
    if not test:
        raise GenieValueError(
            "The identifiability check needs held-out episodes: collect at least 10 episodes."
        )
    report = {
        "env_id": ds.meta.get("env_id"),
        "frame_skip": ds.meta.get("frame_skip"),
        "action_names": ds.meta.get("action_names") or [str(a) for a in range(num_actions)],
        "motion_per_action": motion_per_action(ds, train + test, num_actions),
    }
    for view, frames in tqdm(VIEWS.items(), desc="identify", disable=not progress):
        x_train, y_train = _transitions(ds, train, frames)
        x_test, y_test = _transitions(ds, test, frames)
        report[f"{view}_probe_accuracy"] = train_probe(
            x_train, y_train, x_test, y_test, num_actions, steps, seed
        )
        if view == "pair":  # every transition of the held-out episodes
            report["chance"] = float(np.bincount(y_test, minlength=num_actions).max() / len(y_test))
            report["test_transitions"] = int(len(y_test))
    return report

"""genie.data: episode datasets on disk, and the sources that fill them (Gymnasium envs, videos).

    episodes.py  the on-disk format (layout, alignment contract, atomic appends) and EpisodeWriter
    dataset.py   reading it: VideoDataset (streaming, memory-mapped) and WindowDataset (training windows)
    sources.py   filling it: Gymnasium collection, video / GIF / image-folder ingestion
    video.py     writing clips (MP4, GIF) atomically

The public surface is EpisodeWriter, VideoDataset and WindowDataset, imported from here.
"""

from genie.data.dataset import VideoDataset, WindowDataset
from genie.data.episodes import EpisodeWriter

__all__ = ["EpisodeWriter", "VideoDataset", "WindowDataset"]

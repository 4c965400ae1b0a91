"""All frames of a video as one uint8 array: the input of sample extraction (SPEC 3.2).

Object-centric sequences crop the same box from up to 19 neighbouring frames, for every object, every
epoch. Decoding JPEGs (or video files) for each crop would dominate training, so each video is decoded once:
image folders into RAM, video files into a memory-mapped ``.npy`` in the cache (written atomically, reused
by later runs). Grey scenes (UCSD Ped2 stores three identical channels) keep one channel, a third of the
memory; crops are expanded back to RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io import atomic_path
from .layouts import Video, VideoFileSource


def _is_grey(frame: np.ndarray) -> bool:
    return bool(np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 0], frame[..., 2]))


def load_frames(video: Video, cache_dir: str | Path | None = None, progress: bool = False) -> np.ndarray:
    """Every frame of ``video`` as ``(T, H, W, C)`` uint8, C = 1 for grey scenes and 3 otherwise.

    Args:
        video: the video.
        cache_dir: where video files are decoded to (memory-mapped ``.npy``); image folders stay in RAM.
        progress: show a progress bar.
    """
    first = video.frame(0)
    middle = video.frame(video.num_frames // 2)
    grey = _is_grey(first) and _is_grey(middle)
    channels = 1 if grey else 3
    height, width = first.shape[:2]
    shape = (video.num_frames, height, width, channels)

    target: Path | None = None
    if isinstance(video.source, VideoFileSource) and cache_dir is not None:
        target = Path(cache_dir) / video.split / f"{video.name}.npy"
        if target.is_file():
            frames = np.load(target, mmap_mode="r")
            if frames.shape == shape:
                return frames
    if target is None:
        frames = np.empty(shape, np.uint8)
        _fill(frames, video, grey, progress)
        return frames
    with atomic_path(target, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        _fill(out, video, grey, progress)
        out.flush()
        del out
    return np.load(target, mmap_mode="r")


def _fill(out: np.ndarray, video: Video, grey: bool, progress: bool) -> None:
    for i, frame in tqdm(video.iter_frames(), total=video.num_frames, disable=not progress,
                         desc=f"decode {video.key}", unit="frame", leave=False):
        if frame.shape[:2] != out.shape[1:3]:
            from ..errors import SSMTLError

            raise SSMTLError(f"frame {i} of video {video.key} is {frame.shape[1]}x{frame.shape[0]} but the first "
                             f"frame is {out.shape[2]}x{out.shape[1]}: all frames of a video must share one size.")
        out[i] = frame[..., :1] if grey else frame

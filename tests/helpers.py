"""What several test files share: a small model trained on generated synthetic data, and small datasets
written frame by frame."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ssmtl_core.config import load_profile
from ssmtl_core.data import open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.train import train
from ssmtl_core.training_data import prepare_training_data


def train_synthetic(base: Path, size: str, overrides: dict, seed: int = 0):
    """Generate the synthetic dataset of ``size`` under ``base / "data"``, train the synthetic profile with
    ``overrides`` into ``base / "run"`` (cache in ``base / "cache"``); return the dataset."""
    root = generate_synthetic(base / "data", size, seed=seed, progress=False)
    dataset = open_dataset("synthetic", root)
    profile = load_profile("synthetic", overrides=overrides)
    data = prepare_training_data(dataset, profile, base / "cache", progress=False, log=lambda *_: None)
    train(data, profile, base / "run", progress=False, log=lambda *_: None)
    return dataset


def moving_square(i: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """A grey frame with a bright square 2 px further right in each frame (so the frames differ)."""
    frame = np.full((*size, 3), 90, np.uint8)
    frame[4:10, 2 + 2 * i:8 + 2 * i] = 230
    return frame


def jpg_tree(root: Path, train: dict[str, int], test: dict[str, int], size: tuple[int, int] = (24, 32),
             labels: np.ndarray | None | bool = True, frame: Callable[[int], np.ndarray] | None = None,
             suffix: str = ".jpg") -> Path:
    """A dataset in the frame-folder layout: ``training/frames/NN/KKK.jpg``, ``testing/frames/NN/KKK.jpg`` and
    ``ground_truth/frame_labels.npy``.

    Args:
        root: the dataset folder (created).
        train, test: video name -> number of frames.
        size: (H, W) of the default frames.
        labels: the test frames' labels: True or None all normal, an array as given, False no label file.
        frame: ``frame(i)`` draws the i-th frame of every video (default: :func:`moving_square` of ``size``).
        suffix: the image format, by its file suffix.
    """
    draw = frame or (lambda i: moving_square(i, size))
    for split, videos in (("training", train), ("testing", test)):
        for name, count in videos.items():
            folder = root / split / "frames" / name
            folder.mkdir(parents=True)
            for i in range(count):
                assert cv2.imwrite(str(folder / f"{i:03d}{suffix}"), draw(i))
    if labels is not False:
        total = sum(test.values())
        array = np.zeros(total, np.uint8) if labels is True or labels is None else labels
        (root / "ground_truth").mkdir()
        np.save(root / "ground_truth" / "frame_labels.npy", array)
    return root

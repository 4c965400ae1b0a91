"""Datasets: real layouts, the synthetic default, downloads and decoded frames (``docs/method.md``, "Datasets")."""

from .frames import load_frames
from .layouts import DATASET_NAMES, Dataset, Video, open_dataset

__all__ = ["DATASET_NAMES", "Dataset", "Video", "load_frames", "open_dataset"]

"""What several test files share: a small model trained on generated synthetic data."""

from __future__ import annotations

from pathlib import Path

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

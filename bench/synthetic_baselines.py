"""Trivial frame-score baselines on the synthetic test split: what an AUC means on this data.

Usage::

    python bench/synthetic_baselines.py [--root data/synthetic] [--cache cache] [--out bench/results/synthetic_baselines.json]

Each baseline scores a frame from the cached motion detections alone, with no learning: the number of
objects, the largest box area, the largest frame-to-frame displacement of a box centre, and random numbers.
Scores are min-max normalised per video (as the study's frame scores are), then the micro and macro frame AUCs
are computed with :mod:`ssmtl_core.metrics`. The synthetic generator is built so that no single frame statistic
gives its anomalies away; these numbers check that claim and are the floor a trained model must clear. Run
``./run_all.sh`` first (it generates the data and the detection cache).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np

from ssmtl_core.config import get_profile
from ssmtl_core.data import open_dataset
from ssmtl_core.detect import DetectionCache, make_detector
from ssmtl_core.io import code_provenance
from ssmtl_core.metrics import macro_auc, micro_auc
from ssmtl_core.score import minmax

REPO = Path(__file__).resolve().parent.parent


def frame_statistics(frame: np.ndarray, boxes: np.ndarray, num_frames: int) -> dict[str, np.ndarray]:
    """Per-frame object count, largest box area and largest box-centre displacement from the previous frame."""
    count = np.bincount(frame, minlength=num_frames).astype(float)
    area = np.zeros(num_frames)
    np.maximum.at(area, frame, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    speed = np.zeros(num_frames)
    for f in range(1, num_frames):
        current, previous = centres[frame == f], centres[frame == f - 1]
        if len(current) and len(previous):
            # the nearest box of the previous frame stands in for the same object (no tracking)
            speed[f] = np.linalg.norm(current[:, None] - previous[None], axis=2).min(1).max()
    return {"objects per frame": count, "largest box area": area, "largest box displacement": speed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO / "data" / "synthetic"))
    parser.add_argument("--cache", default=str(REPO / "cache"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "synthetic_baselines.json"))
    args = parser.parse_args(argv)

    dataset = open_dataset("synthetic", args.root)
    cache = DetectionCache(args.cache, dataset, make_detector(get_profile("synthetic").detect).key)
    rng = np.random.default_rng(0)
    scores: dict[str, list[np.ndarray]] = {}
    labels = []
    for video in dataset.test:
        detections = cache.load(video)
        stats = frame_statistics(detections.frame, detections.boxes, video.num_frames)
        stats["random"] = rng.random(video.num_frames)
        for name, values in stats.items():
            scores.setdefault(name, []).append(minmax(values))
        labels.append(video.labels)
    rows = {name: {"micro_auc": round(100 * micro_auc(labels, s), 1), "macro_auc": round(100 * macro_auc(labels, s), 1)}
            for name, s in scores.items()}
    for name, row in rows.items():
        print(f"{name:<26} micro AUC {row['micro_auc']:5.1f}  macro AUC {row['macro_auc']:5.1f}")
    result = {"benchmark": "trivial frame-score baselines on the synthetic test split", "date": dt.date.today().isoformat(),
              "dataset": dataset.summary(), "detector": cache.meta.get("detector"), "code": code_provenance(),
              "baselines": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

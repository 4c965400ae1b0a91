"""How many ground-truth anomalous regions the cached detections cover: the ceiling on RBDC/TBDC recall.

Usage::

    python bench/detector_coverage.py [--dataset ped2] [--root ../shared/datasets/ucsd_ped2] [--cache cache]
                                      [--out bench/results/detector_coverage.json]

An object-centric method can only flag a region it was given a box for. For each ground-truth anomalous
region (from the dataset's tracks, or the pixel masks as ``ssmtl evaluate`` builds them), the best IoU with
any cached detection of the same frame is measured; the share of regions reaching IoU 0.1 (RBDC's
threshold), 0.3 and 0.5 is reported for every detection cache of the dataset found under ``--cache``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np

from ssmtl_core.data import open_dataset
from ssmtl_core.evaluate import ground_truth_tracks
from ssmtl_core.metrics import box_iou

REPO = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.1, 0.3, 0.5)


def coverage(dataset, tracks, folder: Path) -> dict:
    """Share of ground-truth regions whose best-matching detection reaches each IoU threshold."""
    hits = dict.fromkeys(THRESHOLDS, 0)
    for v, video in enumerate(dataset.test):
        path = folder / f"{video.name}.npz"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: build the cache first (ssmtl detect ... --split test)")
        with np.load(path) as cached:  # an npz member is re-read on every access: take each array once
            frame, all_boxes = cached["frame"], cached["boxes"]
        for i in np.where(tracks.video == v)[0]:
            boxes = all_boxes[frame == tracks.frame[i]]
            best = float(box_iou(tracks.boxes[i:i + 1], boxes).max()) if len(boxes) else 0.0
            for t in THRESHOLDS:
                hits[t] += best >= t
    return {f"iou_{t:g}": round(hits[t] / len(tracks), 4) for t in THRESHOLDS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ped2")
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "datasets" / "ucsd_ped2"))
    parser.add_argument("--cache", default=str(REPO / "cache"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "detector_coverage.json"))
    args = parser.parse_args(argv)
    dataset = open_dataset(args.dataset, args.root)
    tracks = ground_truth_tracks(dataset)
    if tracks is None or not len(tracks):
        raise SystemExit(f"{args.root}: no ground-truth regions (pixel masks or tracks) to measure against")
    folders = sorted(Path(args.cache).glob(f"{dataset.summary()['cache_id']}/detections/*/test"))
    if not folders:
        raise SystemExit(f"no detection cache of {args.dataset} under {args.cache}: run ssmtl detect first")
    rows = {}
    for folder in folders:
        rows[folder.parent.name] = coverage(dataset, tracks, folder)
        cells = "  ".join(f"IoU>={k[4:]}: {100 * v:.1f}%" for k, v in rows[folder.parent.name].items())
        print(f"{folder.parent.name:<55} {cells}")
    result = {"benchmark": "ground-truth anomalous regions covered by cached detections",
              "date": dt.date.today().isoformat(), "dataset": args.dataset, "regions": len(tracks),
              "tracks": len(set(zip(tracks.video.tolist(), tracks.track.tolist()))), "coverage": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{len(tracks)} regions in {result['tracks']} tracks; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

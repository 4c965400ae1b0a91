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
from ssmtl_core.io import code_provenance
from ssmtl_core.metrics import box_iou

REPO = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.1, 0.3, 0.5)


def coverage(dataset, tracks, folder: Path) -> dict:
    """Share of ground-truth regions whose best-matching detection reaches each IoU threshold, and the boxes
    per test frame (all of them, and the class-agnostic motion blobs a hybrid detector added)."""
    hits = dict.fromkeys(THRESHOLDS, 0)
    boxes_total = blobs_total = 0
    for v, video in enumerate(dataset.test):
        path = folder / f"{video.name}.npz"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: build the cache first (ssmtl detect ... --split test)")
        with np.load(path) as cached:  # an npz member is re-read on every access: take each array once
            frame, all_boxes, classes = cached["frame"], cached["boxes"], cached["classes"]
        boxes_total += len(frame)
        blobs_total += int((classes < 0).sum()) if "hybrid" in folder.parent.name else 0
        for i in np.where(tracks.video == v)[0]:
            boxes = all_boxes[frame == tracks.frame[i]]
            best = float(box_iou(tracks.boxes[i:i + 1], boxes).max()) if len(boxes) else 0.0
            for t in THRESHOLDS:
                hits[t] += best >= t
    frames = sum(v.num_frames for v in dataset.test)
    return {**{f"iou_{t:g}": round(hits[t] / len(tracks), 4) for t in THRESHOLDS},
            "boxes_per_frame": round(boxes_total / frames, 2), "blobs_per_frame": round(blobs_total / frames, 2)}


def describe(folder: Path) -> str:
    """A short name of the detector settings of a cache folder, from its meta.json."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return folder.name
    if meta.get("detector") == "yolo+motion":
        yolo = meta.get("yolo", {})
        return (f"yolo+motion: {Path(str(yolo.get('weights', '?'))).name} conf {yolo.get('conf')} "
                f"img {yolo.get('input_size')}, blobs covered < {meta.get('hybrid_cover')} (margin "
                f"{meta.get('hybrid_margin')})")
    if meta.get("detector") == "yolo":
        return f"yolo: {Path(str(meta.get('weights', '?'))).name} conf {meta.get('conf')} img {meta.get('input_size')}"
    return f"{meta.get('detector', folder.name)}"


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
        row = {"detector": describe(folder.parent), **coverage(dataset, tracks, folder)}
        rows[folder.parent.name] = row
        cells = "  ".join(f"IoU>={k[4:]}: {100 * v:5.1f}%" for k, v in row.items() if k.startswith("iou_"))
        print(f"{row['detector']:<90} {cells}  boxes/frame {row['boxes_per_frame']:5.1f}")
    result = {"benchmark": "ground-truth anomalous regions covered by cached detections (read from test labels: "
                           "a sensitivity table, never used to choose a setting)",
              "date": dt.date.today().isoformat(), "code": code_provenance(), "dataset": args.dataset, "regions": len(tracks),
              "tracks": len(set(zip(tracks.video.tolist(), tracks.track.tolist()))), "coverage": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{len(tracks)} regions in {result['tracks']} tracks; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

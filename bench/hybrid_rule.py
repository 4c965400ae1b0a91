"""The detector's operating point and the hybrid rule, chosen on training videos alone (no test labels).

Usage::

    python bench/hybrid_rule.py [--root ../shared/datasets/ucsd_ped2] [--cache cache]
        [--weights ../shared/weights/yolov8n_int8_openvino_model] [--out bench/results/hybrid_rule.json]

Training videos hold only normal objects, and everything that moves in them is an object the method should
see. Two label-free measurements follow from that, read from the YOLO cache at confidence 0.1 (higher
thresholds are the same boxes filtered: greedy NMS decides a box only from higher-scored ones) and from the
motion detector's cache:

* for each confidence threshold, the share of motion blobs that some YOLO box explains (covers >= 30% of,
  grown by 10%), i.e. how much of what moves the COCO detector sees, and its boxes per frame;
* for the hybrid rule (``detect.hybrid_cover``, ``detect.hybrid_margin``), the blobs per frame it adds to the
  YOLO boxes on training videos: there, every added blob is a fragment or noise, since all normal objects
  are people the detector knows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ssmtl_core.config import DetectConfig
from ssmtl_core.data import open_dataset
from ssmtl_core.detect import covered_fraction, detect_dataset, merge_hybrid
from ssmtl_core.io import code_provenance, machine_info

REPO = Path(__file__).resolve().parent.parent
CONFS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
RULES = ((0.5, 0.0), (0.5, 0.1), (0.3, 0.1), (0.3, 0.2), (0.2, 0.1), (0.1, 0.1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ped2")
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "datasets" / "ucsd_ped2"))
    parser.add_argument("--cache", default=str(REPO / "cache"))
    parser.add_argument("--weights", default=str(REPO.parent / "shared" / "weights" / "yolov8n_int8_openvino_model"))
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "hybrid_rule.json"))
    args = parser.parse_args(argv)
    dataset = open_dataset(args.dataset, args.root)
    base = DetectConfig(detector="yolo", weights=args.weights, conf=0.1, imgsz=args.imgsz)
    yolo = detect_dataset(dataset, base, args.cache, splits=("train",), log=lambda *_: None)
    motion = detect_dataset(dataset, replace(base, detector="motion"), args.cache, splits=("train",),
                            log=lambda *_: None)
    videos = dataset.train
    frames = sum(v.num_frames for v in videos)
    coco = [yolo.load(v) for v in videos]
    blobs = [motion.load(v) for v in videos]
    operating = []
    for conf in CONFS:
        explained = total = boxes = 0
        for det, mot in zip(coco, blobs):
            det = det.select(det.scores >= conf)
            boxes += len(det)
            for index in np.unique(mot.frame):
                cover = covered_fraction(mot.boxes[mot.frame == index], det.boxes[det.frame == index], 0.1)
                total += len(cover)
                explained += int((cover >= 0.3).sum())
        operating.append({"conf": conf, "blobs_explained": round(explained / max(total, 1), 4),
                          "boxes_per_frame": round(boxes / frames, 2)})
        print(f"conf {conf:<5} moving blobs explained by a YOLO box: {100 * explained / max(total, 1):5.1f}%  "
              f"YOLO boxes/frame {boxes / frames:5.1f}")
    rules = []
    for conf in (0.25, 0.5):
        for cover, margin in RULES:
            added = sum(int((merge_hybrid(det.select(det.scores >= conf), mot, cover, margin).classes < 0).sum())
                        for det, mot in zip(coco, blobs))
            rules.append({"conf": conf, "hybrid_cover": cover, "hybrid_margin": margin,
                          "added_blobs_per_frame": round(added / frames, 3)})
            print(f"conf {conf}: blobs covered < {cover} by boxes grown {margin}: {added / frames:.2f} added/frame")
    result = {"benchmark": "detector operating point and hybrid rule on training videos (no test labels)",
              "date": dt.date.today().isoformat(), "dataset": args.dataset, "machine": machine_info(),
              "code": code_provenance(),
              "training_frames": frames, "operating_points": operating, "hybrid_rules": rules}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

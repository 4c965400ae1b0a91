"""Benchmark: end-to-end inference frames/s on UCSD Ped2 test clips, per preset, on this machine.

Measures, for each architecture (random weights: speed does not depend on training):

* ``from_cached_detections``: decoded frames + cached detections -> crops -> the network's four task scores
  -> per-video normalisation and the frame-score grid (what ``ssmtl evaluate`` does);
* ``with_yolo``: the same plus YOLO detection of every frame (the shared YOLOv8n int8 OpenVINO export);
* ``with_motion``: the same plus the motion detector;

on the OpenVINO CPU backend (the default on CPUs) and, for comparison, eager PyTorch. The paper reports
51 frames/s on a GPU. Usage: ``python bench/infer.py [--videos 3] [--out bench/results/infer.json]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ssmtl_core.config import ARCHITECTURES, DetectConfig, SampleConfig, ScoreConfig
from ssmtl_core.data import load_frames, open_dataset
from ssmtl_core.detect import MotionDetector, YoloDetector
from ssmtl_core.io import machine_info, package_versions
from ssmtl_core.model import SSMTLModel
from ssmtl_core.score import Scorer, combine_tasks, frame_scores_from_grid, score_grid

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PED2 = SHARED / "datasets" / "ucsd_ped2"
WEIGHTS = SHARED / "weights" / "yolov8n_int8_openvino_model"
PAPER_GPU_FPS = 51.0
TARGET_CPU_FPS = 20.0


def score_video(scorer: Scorer, frames: np.ndarray, detections, frame_size) -> np.ndarray:
    scores = scorer.score_objects(frames, detections)
    objects = combine_tasks(scores, tuple(scores.tasks), True)
    grid = score_grid(objects, scores.frame, scores.boxes, len(frames), frame_size, ScoreConfig())
    return frame_scores_from_grid(grid, ScoreConfig())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3, help="Ped2 test videos to time")
    parser.add_argument("--archs", default=",".join(ARCHITECTURES))
    parser.add_argument("--torch-archs", default="shallow_narrow", help="architectures also timed on eager PyTorch")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "infer.json"))
    args = parser.parse_args()
    if not PED2.is_dir() or not WEIGHTS.is_dir():
        print(f"skipped: {PED2} or {WEIGHTS} is missing (the benchmark needs ../shared)")
        return 0
    torch.set_num_threads(os.cpu_count() or 2)
    dataset = open_dataset("ped2", PED2)
    videos = dataset.test[:args.videos]
    frames = [load_frames(v) for v in videos]
    total_frames = sum(v.num_frames for v in videos)

    yolo = YoloDetector(DetectConfig(detector="yolo", weights=str(WEIGHTS), conf=0.5))
    motion = MotionDetector(DetectConfig(detector="motion"))
    start = time.perf_counter()
    yolo_detections = [yolo.detect_video(v) for v in videos]
    yolo_seconds = time.perf_counter() - start
    start = time.perf_counter()
    _ = [motion.detect_video(v) for v in videos]
    motion_seconds = time.perf_counter() - start
    objects = sum(len(d) for d in yolo_detections)
    print(f"{len(videos)} Ped2 test videos, {total_frames} frames, {objects} YOLO objects "
          f"({objects / total_frames:.1f} per frame); YOLO {total_frames / yolo_seconds:.1f} frames/s, "
          f"motion {total_frames / motion_seconds:.1f} frames/s (both including JPEG decoding)")

    rows = []
    for arch in args.archs.split(","):
        for backend in ("openvino", "torch") if arch in args.torch_archs.split(",") else ("openvino",):
            if backend == "torch":
                os.environ["SSMTL_NO_OPENVINO"] = "1"
            model = SSMTLModel(arch, kd_dim=1080, crop_size=64).eval()
            scorer = Scorer(model, SampleConfig(), {"logits": 1000, "class_scores": 80}, "cpu", compile=True)
            os.environ.pop("SSMTL_NO_OPENVINO", None)
            score_video(scorer, frames[0][:20], yolo_detections[0].select(yolo_detections[0].frame < 20),
                        videos[0].frame_size)  # warm-up
            start = time.perf_counter()
            for video, f, d in zip(videos, frames, yolo_detections):
                score_video(scorer, f, d, video.frame_size)
            seconds = time.perf_counter() - start
            row = {"arch": arch, "backend": scorer.backend, "objects_per_s": round(objects / seconds, 1),
                   "from_cached_detections_fps": round(total_frames / seconds, 1),
                   "with_yolo_fps": round(total_frames / (seconds + yolo_seconds), 1),
                   "with_motion_fps": round(total_frames / (seconds + motion_seconds), 1)}
            rows.append(row)
            print(f"{arch:<15} {row['backend']:<10} {row['objects_per_s']:>8.1f} objects/s  "
                  f"{row['from_cached_detections_fps']:>6.1f} fps from cached detections  "
                  f"{row['with_yolo_fps']:>6.1f} fps with YOLO  {row['with_motion_fps']:>6.1f} fps with motion")
    result = {
        "benchmark": "end-to-end inference on UCSD Ped2 test clips (random weights, 64x64 crops, batch 256)",
        "date": dt.date.today().isoformat(), "machine": machine_info(), "versions": package_versions(),
        "videos": [v.name for v in videos], "frames": total_frames, "yolo_objects": objects,
        "detector_fps": {"yolov8n_int8_openvino": round(total_frames / yolo_seconds, 1),
                         "motion": round(total_frames / motion_seconds, 1)},
        "paper_gpu_fps": PAPER_GPU_FPS, "target_cpu_fps_shallow_narrow": TARGET_CPU_FPS, "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"paper: {PAPER_GPU_FPS} frames/s on a GPU; target here: >= {TARGET_CPU_FPS} frames/s for shallow_narrow")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

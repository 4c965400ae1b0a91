"""Benchmark: end-to-end inference frames/s on UCSD Ped2 test clips, old and new paths side by side.

Usage: ``python bench/infer.py [--videos 3] [--archs shallow_narrow,deep_wide] [--scorers torch-fp32,auto,int8]
[--e2e-scorers auto,int8] [--rounds 2] [--out bench/results/infer.json]``

Measured in one run, interleaved so every path sees the same machine load (random weights: speed does not
depend on training), every row with the CPU model and its flags:

* detection, per frame (JPEG decoding included): ``old`` = YOLOv8n int8 at conf 0.5 on a 640x640 input, one
  request per frame (OpenVINO LATENCY), the first release's path; ``new`` = the Ped2 profile's detector:
  YOLOv8n at conf 0.25 on the 448x640 rectangle with parallel requests, plus the motion detector and the
  hybrid merge (``yolo+motion``);
* scoring the new path's objects (crops, the network, the ImageNet teacher for the blobs, per-video
  normalisation, the frame grid), per preset:
  eager PyTorch fp32, the OpenVINO default precision (``auto``: bf16 where the CPU has it natively, the
  former path) and OpenVINO int8 (post-training quantization calibrated on training objects, the new option);
* end to end, measured, per preset and scorer (``--e2e-scorers``, default ``auto`` and ``int8``): decoding,
  detection and scoring of each video as ``ssmtl score-video`` runs them, ``old`` = one step after the other
  (the detector decodes the video again, then the objects are scored: ``detect_video`` + ``score_detections``),
  ``sequential`` = decoded once, one step after the other (``ssmtl_core.stream.detect_then_score``: what
  ``score-video`` runs on two cores), ``overlap`` = decoded once, detection and scoring at work at once
  (``ssmtl_core.stream.detect_and_score``: what it runs with more cores), interleaved rounds, the best of each;
  the JSON says which one ``score.pipeline = auto`` picks on the machine. Targets for a 2-core CPU:
  >= 30 frames/s for shallow_narrow with AMX (the paper's 51 on a GPU is the goal past it), >= 20 with AVX2
  only.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ssmtl_core.config import SampleConfig, ScoreConfig, get_profile
from ssmtl_core.data import load_frames, open_dataset
from ssmtl_core.detect import make_detector
from ssmtl_core.io import code_provenance, machine_info, package_versions
from ssmtl_core.model import SSMTLModel
from ssmtl_core.samples import objects_from_detections, scoring_sequences
from ssmtl_core.score import Scorer, score_detections, score_video
from ssmtl_core.stream import chosen_pipeline, detect_and_score, detect_then_score
from ssmtl_core.teachers import load_teacher, middle_crops
from ssmtl_core.yolo import YoloDetector

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PED2 = SHARED / "datasets" / "ucsd_ped2"
WEIGHTS = SHARED / "weights" / "yolov8n_int8_openvino_model"
PAPER_GPU_FPS = 51.0
TARGETS = {"amx": 30.0, "avx2": 20.0}


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def detectors(videos, profile) -> dict:
    """Seconds of each detection path over ``videos`` (best of two rounds) and the new path's detections."""
    old_config = dataclasses.replace(profile.detect, detector="yolo", weights=str(WEIGHTS), conf=0.5, rect=False)
    old = YoloDetector(old_config)
    old.backend.properties = {"PERFORMANCE_HINT": "LATENCY"}
    new_config = dataclasses.replace(profile.detect, weights=str(WEIGHTS))
    seconds = {"old": [], "new": []}
    detections = None
    for _ in range(2):
        _, took = timed(lambda: [old.detect_video(v) for v in videos])
        seconds["old"].append(took)
        detections, took = timed(lambda: [make_detector(new_config).detect_video(v) for v in videos])
        seconds["new"].append(took)
    return {k: min(v) for k, v in seconds.items()}, detections


def int8_inputs(dataset, profile, count: int = 256) -> np.ndarray:
    """Sequences of training objects (motion detector, the first training videos) to calibrate int8 on."""
    config = dataclasses.replace(profile.detect, detector="motion")
    videos = dataset.train[:2]
    found = [make_detector(config).detect_video(v) for v in videos]
    objects = objects_from_detections(found, [v.num_frames for v in videos], profile.sample, training=True)
    pick = np.unique(np.linspace(0, len(objects) - 1, min(count, len(objects))).astype(int))
    parts = []
    for v in np.unique(objects.video[pick]):
        rows = pick[objects.video[pick] == v]
        parts.append(scoring_sequences(load_frames(videos[v]), objects.frame[rows], objects.boxes[rows],
                                       profile.sample, rgb=False))
    return np.concatenate(parts)


def score_all(scorer: Scorer, frames, detections, videos, teacher) -> None:
    """What scoring a video costs: crops, the network, the teacher for the class-agnostic blobs (whose
    distillation score needs its logits), per-video normalisation and the frame grid."""
    for video, f, d in zip(videos, frames, detections):
        def logits(rows, f=f, d=d):
            return teacher.logits(middle_crops(f, d.frame[rows], d.boxes[rows], teacher.size))

        scores = score_detections(scorer, f, d, logits)
        score_video(scores, tuple(scores.tasks), video.num_frames, video.frame_size, ScoreConfig())


PATHS = {"sequential": detect_then_score, "overlap": detect_and_score}


def end_to_end(path: str, scorer: Scorer, detector, videos, teacher) -> None:
    """One video after the other as ``ssmtl score-video`` scores it: decode, detect, score, the frame grid;
    ``old``: detection then scoring (the detector decodes the files again), ``sequential``: the same on the
    frames decoded once, ``overlap``: both at once on the frames decoded once."""
    for video in videos:
        frames = load_frames(video)
        if path == "old":
            found = detector.detect_video(video)
            scores = score_detections(scorer, frames, found, lambda rows, f=frames, d=found: teacher.logits(
                middle_crops(f, d.frame[rows], d.boxes[rows], teacher.size)))
        else:
            found, scores, _ = PATHS[path](detector, scorer, video, frames, lambda d, rows, f=frames: (
                teacher.logits(middle_crops(f, d.frame[rows], d.boxes[rows], teacher.size))))
        score_video(scores, tuple(scores.tasks), video.num_frames, video.frame_size, ScoreConfig())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3, help="Ped2 test videos to time")
    parser.add_argument("--archs", default="shallow_narrow,shallow_wide,deep_narrow,deep_wide")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "infer.json"))
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of each timing (the best kept)")
    parser.add_argument("--e2e-scorers", default="auto,int8", help="scorers timed end to end (auto, int8)")
    parser.add_argument("--scorers", default="torch-fp32,auto,int8",
                        help="scorers timed from cached detections (eager torch-fp32 takes minutes per preset)")
    args = parser.parse_args()
    if not PED2.is_dir() or not WEIGHTS.is_dir():
        print(f"skipped: {PED2} or {WEIGHTS} is missing (the benchmark needs ../shared)")
        return 0
    torch.set_num_threads(os.cpu_count() or 2)
    load_start = [round(x, 2) for x in os.getloadavg()]
    machine = machine_info()
    amx = "amx_bf16" in machine.get("cpu_flags", [])
    target = TARGETS["amx" if amx else "avx2"]
    profile = get_profile("ped2")
    dataset = open_dataset("ped2", PED2)
    videos = dataset.test[:args.videos]
    frames = [load_frames(v) for v in videos]
    total_frames = sum(v.num_frames for v in videos)
    detect_seconds, detections = detectors(videos, profile)
    objects = sum(len(d) for d in detections)
    calibration = int8_inputs(dataset, profile)
    teacher = load_teacher("efficientnet_lite0")
    print(f"CPU: {machine['cpu']} ({', '.join(machine.get('cpu_flags', []))})")
    print(f"{len(videos)} Ped2 test videos, {total_frames} frames, {objects} objects of the new detector "
          f"({objects / total_frames:.1f} per frame)")
    for path, seconds in detect_seconds.items():
        print(f"detection {path:<4} {total_frames / seconds:7.1f} frames/s")

    rows, e2e_rows = [], []
    new_config = dataclasses.replace(profile.detect, weights=str(WEIGHTS))
    e2e_scorers = [name for name in args.e2e_scorers.split(",") if name]  # empty: no end-to-end timing
    for arch in args.archs.split(","):
        model = SSMTLModel(arch, kd_dim=1080, crop_size=64, kd_probabilities=80).eval()
        scorers = {}
        wanted = set(args.scorers.split(",")) | set(e2e_scorers)
        if "torch-fp32" in wanted:
            scorers["torch-fp32"] = Scorer(model, SampleConfig(), {"logits": 1000, "class_scores": 80}, "cpu",
                                           compile=False)
        for precision in [p for p in ("auto", "int8") if p in wanted]:
            scorers[precision] = Scorer(model, SampleConfig(), {"logits": 1000, "class_scores": 80}, "cpu",
                                        compile=True, precision=precision, int8_inputs=calibration)
        best = {}
        for _ in range(args.rounds):  # interleaved rounds, the best of each
            for name, scorer in scorers.items():
                score_all(scorer, [f[:20] for f in frames[:1]], [detections[0].select(detections[0].frame < 20)],
                          videos[:1], teacher)  # warm-up
                _, seconds = timed(score_all, scorer, frames, detections, videos, teacher)
                best[name] = min(best.get(name, np.inf), seconds)
        for name, seconds in best.items():
            backend = scorers[name].backend
            row = {"arch": arch, "scorer": name, "backend": backend, "objects_per_s": round(objects / seconds, 1),
                   "scoring_fps": round(total_frames / seconds, 1),
                   "end_to_end_fps_new_detector": round(total_frames / (seconds + detect_seconds["new"]), 1),
                   "end_to_end_fps_old_detector": round(total_frames / (seconds + detect_seconds["old"]), 1),
                   "cpu": machine["cpu"], "cpu_flags": machine.get("cpu_flags", [])}
            rows.append(row)
            print(f"{arch:<15} {name:<17} {backend:<15} {row['objects_per_s']:>7.1f} objects/s  "
                  f"{row['scoring_fps']:>6.1f} fps scoring  {row['end_to_end_fps_new_detector']:>6.1f} fps end to "
                  f"end (new detector)  {row['end_to_end_fps_old_detector']:>6.1f} (old detector)")
        detector = make_detector(new_config)
        measured: dict[tuple[str, str], float] = {}
        cpu: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):  # old and new interleaved, the best of each
            for name in e2e_scorers:
                for path in ("old", "sequential", "overlap"):
                    start = time.process_time()
                    _, seconds = timed(end_to_end, path, scorers[name], detector, videos, teacher)
                    if seconds < measured.get((name, path), np.inf):
                        measured[name, path], cpu[name, path] = seconds, time.process_time() - start
        for (name, path), seconds in measured.items():
            row = {"arch": arch, "scorer": name, "backend": scorers[name].backend, "path": path,
                   "end_to_end_fps": round(total_frames / seconds, 1), "seconds": round(seconds, 2),
                   "cpu_seconds": round(cpu[name, path], 2),
                   "speedup_vs_old": round(measured[name, "old"] / seconds, 2),
                   "cpu": machine["cpu"], "cpu_flags": machine.get("cpu_flags", [])}
            e2e_rows.append(row)
            print(f"{arch:<15} {name:<5} end to end {path}: {row['end_to_end_fps']:6.1f} frames/s "
                  f"({row['speedup_vs_old']:.2f}x the old path)")
    result = {
        "benchmark": "end-to-end inference on UCSD Ped2 test clips, old and new paths (random weights, 64x64 crops)",
        "date": dt.date.today().isoformat(), "machine": machine, "versions": package_versions(), "code": code_provenance(),
        "videos": [v.name for v in videos], "frames": total_frames, "objects": objects,
        "detection_fps": {k: round(total_frames / v, 1) for k, v in detect_seconds.items()},
        "paper_gpu_fps": PAPER_GPU_FPS, "target_fps": target, "rows": rows, "end_to_end": e2e_rows,
        "auto_pipeline": chosen_pipeline("auto", "cpu"),
        "load_average_start": load_start, "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"paper: {PAPER_GPU_FPS} frames/s on a GPU; target on this CPU: >= {target} frames/s end to end "
          f"(shallow_narrow) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

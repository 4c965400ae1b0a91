"""Benchmark of the detection step (SPEC 3.1 and 7): frames/s of each detector, and the Ped2 cache wall time.

Usage::

    python bench/detect.py [--out bench/results/detect.json] [--quick]

Measured (each written to the JSON, with the machine, the package versions and the date):

(a) ``motion``: the motion detector alone on frames already in memory (no JPEG decoding), on ONE core
    (``cv2.setNumThreads(1)``, torch threads 1), on UCSD Ped2 test clips (360x240) and on synthetic clips.
(b) ``yolo``: YOLOv8n int8 (``../shared/weights/yolov8n_int8_openvino_model``) on frames in memory (the
    first two Ped2 test clips, two synthetic clips), on the machine's cores (2 here), with ``tiles`` 1, 2 and
    4 (frames packed into one 640x640 input). Packing shrinks each frame, so for tiles 2 and 4 the fraction of the tiles=1 boxes still found (same class, IoU >= 0.5)
    is reported next to the speed.
(c) ``ped2_cache``: the whole Ped2 detection cache (train + test, 4560 frames) through ``detect_dataset``
    into a temporary cache, default settings (tiles 1, conf 0.5): wall time including JPEG decoding, model
    loading and writing the cache.

Every timing also records the process's CPU time (``frames_per_cpu_s``): on a machine shared with other
work the wall-clock rate drops, the CPU-time rate much less (for the one-core motion detector it is the
uncontended rate; for two-core YOLO, twice it is an upper bound). The load average at the start and the end
is recorded too.

Targets (benchmarks, not tests): motion >= 300 frames/s on one core; YOLOv8n int8 >= 60 frames/s on two cores;
the Ped2 cache in under two minutes. ``--quick`` uses fewer clips (and only part of the Ped2 cache) to check
that the script runs; its numbers are marked ``quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PED2 = SHARED / "datasets" / "ucsd_ped2"
YOLOV8N = SHARED / "weights" / "yolov8n_int8_openvino_model"

TARGETS = {"motion_frames_per_s_1core": 300.0, "yolo_frames_per_s_2cores": 60.0, "ped2_cache_seconds": 120.0}

sys.path.insert(0, str(REPO))  # run from a checkout without installing

from ssmtl_core.config import get_profile  # noqa: E402
from ssmtl_core.data import Video, open_dataset  # noqa: E402
from ssmtl_core.data.synthetic import generate_synthetic  # noqa: E402
from ssmtl_core.detect import Detections, MotionDetector, YoloDetector, detect_dataset  # noqa: E402
from ssmtl_core.io import machine_info, package_versions  # noqa: E402


class MemorySource:
    """A frame source over frames already decoded into RAM, so a detector is timed without decoding."""

    def __init__(self, frames: np.ndarray, path: str):
        self.frames = frames
        self.path = Path(path)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:3])

    def read(self, index: int) -> np.ndarray:
        return self.frames[index]

    def iter(self, start: int = 0, stop: int | None = None, threads: int = 1):
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for i in range(start, stop):
            yield i, self.frames[i]


def in_memory(videos: list[Video]) -> list[Video]:
    """Decode every frame of ``videos`` once and wrap them as in-memory videos."""
    out = []
    for video in videos:
        frames = np.stack([frame for _, frame in video.iter_frames()])
        out.append(Video(video.name, video.split, MemorySource(frames, f"memory:{video.key}")))
    return out


def set_threads(n: int) -> None:
    import torch

    cv2.setNumThreads(n)
    torch.set_num_threads(n)


def time_detector(detector, videos: list[Video], repeats: int = 1) -> dict:
    """Run ``detector.detect_video`` on every video; the best of ``repeats`` timings."""
    best = cpu = float("inf")
    results: list[Detections] = []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        results = [detector.detect_video(v) for v in videos]
        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if elapsed < best:
            best, cpu = elapsed, elapsed_cpu
    frames = sum(v.num_frames for v in videos)
    return {"frames": frames, "seconds": round(best, 3), "frames_per_s": round(frames / best, 1),
            "cpu_seconds": round(cpu, 3), "frames_per_cpu_s": round(frames / cpu, 1),
            "boxes": int(sum(len(r) for r in results)), "frame_size_wxh": _wxh(videos[0]),
            "videos": [v.key for v in videos], "_detections": results}


def _wxh(video: Video) -> str:
    height, width = video.frame_size
    return f"{width}x{height}"


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def retention(reference: list[Detections], other: list[Detections], iou: float = 0.5,
              class_id: int | None = None) -> float | None:
    """Fraction of the reference boxes that ``other`` still finds (same frame, same class, IoU >= iou)."""
    found = total = 0
    for ref_video, other_video in zip(reference, other):
        for frame in np.unique(ref_video.frame):
            ref = ref_video.in_frame(int(frame))
            oth = other_video.in_frame(int(frame))
            if class_id is not None:
                ref = ref.select(ref.classes == class_id)
            if not len(ref):
                continue
            total += len(ref)
            if not len(oth):
                continue
            ious = _iou_matrix(ref.boxes, oth.boxes)
            same = ref.classes[:, None] == oth.classes[None, :]
            found += int(((ious >= iou) & same).any(axis=1).sum())
    return round(found / total, 4) if total else None


def bench_motion(clips: dict[str, list[Video]], notes: list[str]) -> dict:
    set_threads(1)
    detector = MotionDetector(get_profile("ped2").detect)  # default motion settings (min_area 40)
    synthetic_detector = MotionDetector(get_profile("synthetic").detect)
    out = {"threads": 1, "settings": {"ped2": detector.describe()["settings"],
                                      "synthetic": synthetic_detector.describe()["settings"]}}
    for name, videos in clips.items():
        det = synthetic_detector if name == "synthetic" else detector
        det.detect_video(videos[0])  # warm-up (first calls of OpenCV allocate)
        result = time_detector(det, videos, repeats=2)
        result.pop("_detections")
        out[name] = result
    if "ped2" not in clips:
        notes.append("motion on Ped2 skipped: ../shared/datasets/ucsd_ped2 not found")
    return out


def bench_yolo(clips: dict[str, list[Video]], notes: list[str], max_clips: int) -> dict:
    clips = {name: videos[:max_clips] for name, videos in clips.items()}
    threads = os.cpu_count() or 2
    set_threads(threads)
    config = dataclasses.replace(get_profile("ped2").detect, weights=str(YOLOV8N), conf=0.5)
    out: dict = {"weights": str(YOLOV8N.relative_to(SHARED.parent)) if YOLOV8N.is_relative_to(SHARED.parent)
                 else str(YOLOV8N), "cores": threads, "conf": config.conf, "iou": config.iou,
                 "batch": config.batch}
    # The network alone (one 640x640 input, no pre/post-processing): the floor under every tiles setting.
    detector = YoloDetector(config)
    x = np.random.default_rng(0).random((1, 3, *detector.input_shape), dtype=np.float32)
    for _ in range(3):
        detector._infer(x)
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(20):
        detector._infer(x)
    out["network_ms_per_input"] = round((time.perf_counter() - start) / 20 * 1000, 1)
    out["network_cpu_ms_per_input"] = round((time.process_time() - start_cpu) / 20 * 1000, 1)
    for name, videos in clips.items():
        per_tiles = {}
        reference = None
        for tiles in (1, 2, 4):
            detector = YoloDetector(dataclasses.replace(config, tiles=tiles))
            detector.detect_frames([videos[0].frame(0)] * tiles)  # warm-up inference
            result = time_detector(detector, videos)
            detections = result.pop("_detections")
            if tiles == 1:
                reference = detections
            else:
                result["found_of_tiles1_boxes"] = retention(reference, detections)
                result["found_of_tiles1_person_boxes"] = retention(reference, detections, class_id=0)
            per_tiles[f"tiles_{tiles}"] = result
        out[name] = per_tiles
    if "ped2" not in clips:
        notes.append("YOLO on Ped2 skipped: ../shared/datasets/ucsd_ped2 not found")
    return out


def bench_ped2_cache(quick: bool, notes: list[str]) -> dict:
    set_threads(os.cpu_count() or 2)
    config = dataclasses.replace(get_profile("ped2").detect, weights=str(YOLOV8N))  # tiles 1, conf 0.5
    dataset = open_dataset("ped2", PED2)
    videos = ["01"] if quick else None
    splits = ("test",) if quick else ("train", "test")
    with tempfile.TemporaryDirectory(prefix="ssmtl-bench-cache-") as cache_root:
        start, start_cpu = time.perf_counter(), time.process_time()
        cache = detect_dataset(dataset, config, cache_root, splits=splits, videos=videos, progress=False,
                               log=lambda _: None)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        files = sorted(Path(cache.folder).rglob("*.npz"))
        frames = sum(v.num_frames for s in splits for v in dataset.videos(s) if videos is None or v.name in videos)
        boxes = 0
        for file in files:
            with np.load(file) as data:
                boxes += len(data["frame"])
        size = sum(f.stat().st_size for f in files)
    if quick:
        notes.append("quick: the Ped2 cache timing covers test clip 01 only")
    return {"frames": frames, "videos": len(files), "seconds": round(seconds, 2),
            "frames_per_s": round(frames / seconds, 1), "cpu_seconds": round(cpu, 2),
            "frames_per_cpu_s": round(frames / cpu, 1), "boxes": boxes, "cache_bytes": size,
            "settings": {"detector": "yolo", "weights": YOLOV8N.name, "tiles": config.tiles, "conf": config.conf,
                         "iou": config.iou, "batch": config.batch},
            "includes": "dataset opening, model loading, JPEG decoding (2 threads), detection, npz writing"}


def summary_table(result: dict) -> str:
    rows = [("measurement", "data", "frames", "seconds", "frames/s", "frames/cpu-s", "target", "note")]
    target_motion = TARGETS["motion_frames_per_s_1core"]
    target_yolo = TARGETS["yolo_frames_per_s_2cores"]

    def verdict(value: float, target: float, higher: bool = True) -> str:
        ok = value >= target if higher else value <= target
        return "meets" if ok else "MISSES"

    for data, r in ((k, v) for k, v in result["motion"].items() if isinstance(v, dict) and "frames" in v):
        rows.append(("motion, 1 core", f"{data} {r['frame_size_wxh']}", str(r["frames"]), f"{r['seconds']:.2f}",
                     f"{r['frames_per_s']:.0f}", f"{r['frames_per_cpu_s']:.0f}", f">= {target_motion:.0f}",
                     verdict(r["frames_per_s"], target_motion)))
    yolo = result.get("yolo") or {}
    for data, per_tiles in ((k, v) for k, v in yolo.items() if isinstance(v, dict) and "tiles_1" in v):
        for key, r in per_tiles.items():
            note = verdict(r["frames_per_s"], target_yolo)
            if "found_of_tiles1_boxes" in r:
                note += f"; finds {_pct(r['found_of_tiles1_boxes'])} of tiles=1 boxes"
                note += f" ({_pct(r['found_of_tiles1_person_boxes'])} of persons)"
            rows.append((f"yolov8n int8 {key.replace('_', '=')}, {yolo['cores']} cores",
                         f"{data} {r['frame_size_wxh']}", str(r["frames"]), f"{r['seconds']:.2f}",
                         f"{r['frames_per_s']:.0f}", f"{r['frames_per_cpu_s']:.0f}", f">= {target_yolo:.0f}", note))
    if "network_ms_per_input" in yolo:
        ms = yolo["network_ms_per_input"]
        rows.append((f"yolov8n int8 network only, {yolo['cores']} cores", "640x640 input", "20", f"{ms * 0.02:.2f}",
                     f"{1000 / ms:.0f}", f"{1000 / yolo['network_cpu_ms_per_input']:.0f}", "",
                     "inputs/s; x tiles = frames/s"))
    cache = result.get("ped2_cache")
    if cache:
        rows.append(("Ped2 detection cache (yolo t=1)", "ped2 train+test" if not result["quick"] else "ped2 test 01",
                     str(cache["frames"]), f"{cache['seconds']:.1f}", f"{cache['frames_per_s']:.0f}",
                     f"{cache['frames_per_cpu_s']:.0f}",
                     f"< {TARGETS['ped2_cache_seconds']:.0f} s",
                     verdict(cache["seconds"], TARGETS["ped2_cache_seconds"], higher=False)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "detect.json"), help="JSON output")
    parser.add_argument("--quick", action="store_true", help="fewer clips: check the script, not the numbers")
    args = parser.parse_args(argv)

    notes: list[str] = []
    result: dict = {"benchmark": "detect", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "quick": args.quick, "machine": machine_info(), "versions": package_versions(),
                    "targets": TARGETS, "notes": notes,
                    # Other work on the machine slows every number down: the load says how busy it was.
                    "load_average_start": [round(x, 2) for x in os.getloadavg()]}

    clips: dict[str, list[Video]] = {}
    if PED2.is_dir():
        ped2 = open_dataset("ped2", PED2)
        chosen = ped2.test[:1] if args.quick else ped2.test  # the motion detector gets them all, YOLO 2
        clips["ped2"] = in_memory(chosen)
    else:
        notes.append(f"Ped2 parts skipped: {PED2} not found (a fresh clone has no ../shared)")
    with tempfile.TemporaryDirectory(prefix="ssmtl-bench-synth-") as tmp:
        size = "tiny" if args.quick else "small"
        synthetic = open_dataset("synthetic", generate_synthetic(Path(tmp) / size, size=size, seed=0,
                                                                 progress=False))
        clips["synthetic"] = in_memory(synthetic.test)
    result["clips"] = {name: {"videos": [v.key for v in videos], "frames": sum(v.num_frames for v in videos),
                              "frame_size_wxh": _wxh(videos[0])} for name, videos in clips.items()}

    print("(a) motion detector, one core ...", flush=True)
    result["motion"] = bench_motion(clips, notes)
    if YOLOV8N.is_dir():
        print("(b) YOLOv8n int8, tiles 1/2/4 ...", flush=True)
        result["yolo"] = bench_yolo(clips, notes, max_clips=1 if args.quick else 2)
        if PED2.is_dir():
            print("(c) the Ped2 detection cache ...", flush=True)
            result["ped2_cache"] = bench_ped2_cache(args.quick, notes)
    else:
        notes.append(f"YOLO parts skipped: {YOLOV8N} not found (a fresh clone has no ../shared)")

    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    cores = os.cpu_count() or 1
    if max(result["load_average_start"][0], result["load_average_end"][0]) > 0.5 * cores:
        notes.append(f"the machine was busy with other work (load average {result['load_average_start'][0]} at "
                     f"the start, {result['load_average_end'][0]} at the end, {cores} cores): wall-clock rates "
                     "are lower than on an idle machine; compare frames/cpu-s")
    table = summary_table(result)
    result["table"] = table.splitlines()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; {result['date']}; load average "
          f"{result['load_average_start'][0]} at start, {result['load_average_end'][0]} at the end")
    print(table)
    for note in notes:
        print(f"note: {note}")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the detection step (``docs/method.md``, "Detection"): the old 640x640 YOLO path next to the smaller inputs.

Usage::

    python bench/detect.py [--out bench/results/detect.json] [--quick] [--rounds 2]

Measured in one run, old and new side by side (each written to the JSON, every row with the CPU model and
its flags, the package versions and the date):

(a) ``motion``: the motion detector alone on frames already in memory (no JPEG decoding), on ONE core
    (``cv2.setNumThreads(1)``, torch threads 1), on UCSD Ped2 test clips (360x240) and on synthetic clips.
(b) ``yolo``: YOLOv8n int8 (``../shared/weights/yolov8n_int8_openvino_model``) on frames in memory (the
    first two Ped2 test clips, two synthetic clips), on the machine's cores, at conf 0.25 and 0.5, four ways,
    timed interleaved (the best of ``--rounds`` rounds, 2 by default):

    * ``640_old``: the former path: 640x640 input, the exported graph, one two-thread request per frame
      (OpenVINO ``LATENCY``);
    * ``640``: the same input and graph, the frames of a batch in parallel requests (``THROUGHPUT``, the
      backend's default now);
    * ``640_rect``: ``rect=True``: the smallest multiple-of-32 rectangle holding the frame at the 640 scale
      (448x640 on Ped2), the graph cut before its box-decoding tail, decoded in NumPy;
    * ``native``: ``imgsz=0``: the smallest multiple-of-32 input holding the frame at its own size (256x384
      on Ped2), the cut graph.

    Per variant: frames/s, boxes, the share of the ``640_old`` boxes it still finds (same class, IoU >= 0.5),
    and the network alone (ms per input over 16 random inputs; for the cut-graph variants including
    the NumPy decoding that replaces the export's tail; no letterboxing, no NMS).
(c) ``ped2``: the whole Ped2 detection cache (train + test, 4560 frames) through ``DetectionCache.compute``
    into a temporary cache, ``640``, ``640_rect`` and ``native`` built video by video in turn (conf 0.5, the
    Ped2 setting; the test split only at conf 0.25): wall time including model loading, JPEG decoding and
    writing; then the share of the ground-truth anomalous regions (``ground_truth_tracks``) that a box of
    the same frame covers at IoU 0.1 / 0.3 / 0.5 (``bench/detector_coverage.py``), and the boxes per frame.

Every timing also records the process's CPU time (``frames_per_cpu_s``): on a machine shared with other
work the wall-clock rate drops, the CPU-time rate much less. The load average at the start and the end is
recorded too.

Targets (benchmarks, not tests): motion >= 300 frames/s on one core; YOLOv8n int8 >= 60 frames/s on two cores;
the Ped2 cache in under two minutes; >= 97% of Ped2's anomalous regions covered at IoU 0.1. ``--quick`` uses
fewer clips (the Ped2 cache: test clip 01 only, no coverage) to check that the script runs; its numbers are
marked ``quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
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

TARGETS = {"motion_frames_per_s_1core": 300.0, "yolo_frames_per_s_2cores": 60.0, "ped2_cache_seconds": 120.0,
           "ped2_coverage_iou_0.1": 0.97}
CONFS = (0.25, 0.5)
# name -> (imgsz, rect, OpenVINO performance hint); see (b) in the docstring.
VARIANTS = {"640_old": (640, False, "LATENCY"), "640": (640, False, "THROUGHPUT"),
            "640_rect": (640, True, "THROUGHPUT"), "native": (0, False, "THROUGHPUT")}
CACHE_VARIANTS = ("640", "640_rect", "native")

sys.path.insert(0, str(REPO))  # run from a checkout without installing

from bench.detector_coverage import coverage  # noqa: E402
from bench.results import finish  # noqa: E402
from ssmtl_core.config import get_profile  # noqa: E402
from ssmtl_core.data import Video, open_dataset  # noqa: E402
from ssmtl_core.data.synthetic import generate_synthetic  # noqa: E402
from ssmtl_core.detect import DetectionCache, MotionDetector, YoloDetector  # noqa: E402
from ssmtl_core.detections import Detections  # noqa: E402
from ssmtl_core.evaluate import ground_truth_tracks  # noqa: E402
from ssmtl_core.io import code_provenance, machine_info, package_versions  # noqa: E402

MACHINE = machine_info()
CPU = {"cpu": MACHINE["cpu"], "cpu_flags": MACHINE["cpu_flags"]}  # carried by every JSON row


def cpu_label() -> str:
    """The CPU model and the flags that decide the fast paths, for every table row."""
    shown = [f for f in ("avx2", "avx512_bf16", "amx_bf16", "amx_int8") if f in MACHINE["cpu_flags"]]
    return f"{MACHINE['cpu']} [{' '.join(shown) or 'no avx2'}]"


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
        out[name] = result | CPU
    if "ped2" not in clips:
        notes.append("motion on Ped2 skipped: ../shared/datasets/ucsd_ped2 not found")
    return out


def yolo_config(variant: str, conf: float):
    imgsz, rect, _ = VARIANTS[variant]
    return dataclasses.replace(get_profile("ped2").detect, detector="yolo", weights=str(YOLOV8N), conf=conf,
                               imgsz=imgsz, rect=rect, tiles=1)


def yolo_detector(variant: str, conf: float) -> YoloDetector:
    """The detector of one variant of (b); the hint is set before the first (lazy) compilation."""
    hint = VARIANTS[variant][2]
    detector = YoloDetector(yolo_config(variant, conf))
    detector.backend.properties = {"PERFORMANCE_HINT": hint}
    return detector


def same_detections(a: list[Detections], b: list[Detections]) -> bool:
    return all(len(x) == len(y) and np.array_equal(x.boxes, y.boxes) and np.array_equal(x.class_scores, y.class_scores)
               for x, y in zip(a, b))


def network_ms(detectors: dict[str, YoloDetector], frame_size: tuple[int, int], rounds: int = 3) -> dict:
    """Milliseconds per input of the network alone (16 random inputs, in calls of ``batch``), interleaved,
    best round."""
    best = {name: float("inf") for name in detectors}
    for r in range(rounds):
        for name in (list(detectors) if r % 2 == 0 else list(detectors)[::-1]):
            detector = detectors[name]
            x = np.random.default_rng(0).random((16, 3, *detector.plan(frame_size).input_shape), dtype=np.float32)
            detector.infer(x[:2])  # warm-up (compiles on first use)
            start = time.perf_counter()
            detector.infer(x)
            best[name] = min(best[name], (time.perf_counter() - start) / len(x) * 1000)
    return {name: {"input_hxw": list(detectors[name].plan(frame_size).input_shape), "ms_per_input": round(ms, 2),
                   "inputs_per_s": round(1000 / ms, 1), **CPU} for name, ms in best.items()}


def bench_yolo(clips: dict[str, list[Video]], notes: list[str], max_clips: int, rounds: int) -> dict:
    clips = {name: videos[:max_clips] for name, videos in clips.items()}
    threads = os.cpu_count() or 2
    set_threads(threads)
    out: dict = {"weights": str(YOLOV8N.relative_to(SHARED.parent)) if YOLOV8N.is_relative_to(SHARED.parent)
                 else str(YOLOV8N), "cores": threads, "iou": get_profile("ped2").detect.iou,
                 "batch": get_profile("ped2").detect.batch, "rounds": rounds,
                 "variants": {name: {"imgsz": size, "rect": rect, "openvino_hint": hint}
                              for name, (size, rect, hint) in VARIANTS.items()}}
    for name, videos in clips.items():
        frame_size = videos[0].frame_size
        per_conf = {}
        for conf in CONFS:
            detectors = {variant: yolo_detector(variant, conf) for variant in VARIANTS}
            for detector in detectors.values():
                detector.detect_frames([videos[0].frame(0)] * 8)  # warm-up: compile, allocate
            best: dict[str, dict] = {}
            for r in range(rounds):  # interleaved, the order reversed every other round
                for variant in (list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]):
                    result = time_detector(detectors[variant], videos)
                    if variant not in best or result["seconds"] < best[variant]["seconds"]:
                        best[variant] = result
            reference = best["640_old"]["_detections"]
            rows = {}
            for variant in VARIANTS:
                detector = detectors[variant]
                row = {k: v for k, v in best[variant].items() if k != "_detections"}
                row.update(input_hxw=list(detector.plan(frame_size).input_shape), imgsz=VARIANTS[variant][0],
                           rect=VARIANTS[variant][1], openvino_hint=VARIANTS[variant][2], conf=conf,
                           boxes_per_frame=round(row["boxes"] / row["frames"], 2),
                           found_of_640_old_boxes=retention(reference, best[variant]["_detections"]),
                           found_of_640_old_person_boxes=retention(reference, best[variant]["_detections"], class_id=0),
                           **CPU)
                rows[variant] = row
            rows["640"]["same_boxes_as_640_old"] = same_detections(reference, best["640"]["_detections"])
            rows["speedup_native_over_640_old"] = round(rows["native"]["frames_per_s"] / rows["640_old"]["frames_per_s"], 2)
            per_conf[f"conf_{conf:g}"] = rows
        out[name] = per_conf
        out[f"{name}_network"] = network_ms({v: yolo_detector(v, 0.5) for v in VARIANTS}, frame_size)
    if "ped2" not in clips:
        notes.append("YOLO on Ped2 skipped: ../shared/datasets/ucsd_ped2 not found")
    return out


def timed_caches(dataset, variants: tuple[str, ...], conf: float, cache_root: str, splits: tuple[str, ...],
                 videos: list[str] | None) -> dict[str, tuple[dict, DetectionCache]]:
    """Build one detection cache per variant from scratch, interleaved video by video so that every variant
    sees the same load; per variant its timing row and its cache.

    Each variant's time is its model loading plus its share of the per-video ``DetectionCache.compute`` calls
    (JPEG decoding, detection, npz writing), as one ``detect_dataset`` call would spend it.
    """
    detectors, caches, seconds, cpu = {}, {}, {}, {}
    for variant in variants:
        start, start_cpu = time.perf_counter(), time.process_time()
        detectors[variant] = YoloDetector(yolo_config(variant, conf))
        caches[variant] = DetectionCache(cache_root, dataset, detectors[variant].key)
        detectors[variant].detect_frames([dataset.test[0].frame(0)])  # compiles, as the first video would
        seconds[variant], cpu[variant] = time.perf_counter() - start, time.process_time() - start_cpu
    names = sorted({v.name for split in splits for v in dataset.videos(split) if videos is None or v.name in videos})
    for i, name in enumerate(names):
        for variant in (variants if i % 2 == 0 else variants[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            caches[variant].compute(detectors[variant], splits=splits, videos=[name], progress=False,
                                    log=lambda _: None)
            seconds[variant] += time.perf_counter() - start
            cpu[variant] += time.process_time() - start_cpu
    out = {}
    for variant in variants:
        cache, config = caches[variant], detectors[variant].config
        per_split = {}
        for split in splits:
            files = sorted((cache.folder / split).glob("*.npz"))
            frames = sum(v.num_frames for v in dataset.videos(split) if videos is None or v.name in videos)
            boxes = 0
            for file in files:
                with np.load(file) as data:
                    boxes += len(data["frame"])
            per_split[split] = {"videos": len(files), "frames": frames, "boxes": boxes,
                                "boxes_per_frame": round(boxes / frames, 2)}
        frames = sum(s["frames"] for s in per_split.values())
        row = {"splits": list(splits), "frames": frames, "seconds": round(seconds[variant], 2),
               "frames_per_s": round(frames / seconds[variant], 1), "cpu_seconds": round(cpu[variant], 2),
               "frames_per_cpu_s": round(frames / cpu[variant], 1), "per_split": per_split,
               "cache_bytes": sum(f.stat().st_size for f in cache.folder.rglob("*.npz")), "key": cache.key,
               "input_hxw": list(detectors[variant].plan(dataset.test[0].frame_size).input_shape),
               "settings": {"imgsz": config.imgsz, "rect": config.rect, "conf": config.conf, "iou": config.iou,
                            "tiles": config.tiles, "batch": config.batch},
               "includes": "model loading, JPEG decoding, detection, npz writing", **CPU}
        out[variant] = (row, cache)
    return out


def bench_ped2(quick: bool, notes: list[str]) -> dict:
    """(c): the Ped2 caches at each input size, their timings and coverage of the anomalous regions."""
    set_threads(os.cpu_count() or 2)
    dataset = open_dataset("ped2", PED2)
    tracks = None if quick else ground_truth_tracks(dataset)
    videos = ["01"] if quick else None
    out: dict = {"regions": None if tracks is None else len(tracks)}
    with tempfile.TemporaryDirectory(prefix="ssmtl-bench-cache-") as cache_root:
        for conf in (0.5, 0.25):
            splits = ("test",) if quick or conf != 0.5 else ("train", "test")
            rows = {}
            for variant, (row, cache) in timed_caches(dataset, CACHE_VARIANTS, conf, cache_root, splits,
                                                      videos).items():
                if tracks is not None:
                    row["coverage"] = coverage(dataset, tracks, cache.folder / "test")
                rows[variant] = row
            for variant in CACHE_VARIANTS[1:]:
                rows[f"speedup_{variant}_over_640"] = round(rows["640"]["seconds"] / rows[variant]["seconds"], 2)
            out[f"conf_{conf:g}"] = rows
    if quick:
        notes.append("quick: the Ped2 caches cover test clip 01 only; no coverage")
    return out


def summary_table(result: dict) -> str:
    cpu = cpu_label()
    rows = [("measurement", "data", "input", "frames", "seconds", "frames/s", "frames/cpu-s", "target", "note",
             "cpu")]
    target_motion = TARGETS["motion_frames_per_s_1core"]
    target_yolo = TARGETS["yolo_frames_per_s_2cores"]

    def verdict(value: float, target: float, higher: bool = True) -> str:
        ok = value >= target if higher else value <= target
        return "meets" if ok else "MISSES"

    for data, r in ((k, v) for k, v in result["motion"].items() if isinstance(v, dict) and "frames" in v):
        rows.append(("motion, 1 core", f"{data} {r['frame_size_wxh']}", "", str(r["frames"]), f"{r['seconds']:.2f}",
                     f"{r['frames_per_s']:.0f}", f"{r['frames_per_cpu_s']:.0f}", f">= {target_motion:.0f}",
                     verdict(r["frames_per_s"], target_motion), cpu))
    yolo = result.get("yolo") or {}
    for data in ("ped2", "synthetic"):
        for conf_key, per_variant in (yolo.get(data) or {}).items():
            for variant in VARIANTS:
                r = per_variant[variant]
                note = verdict(r["frames_per_s"], target_yolo) + f"; {r['boxes_per_frame']:.2f} boxes/frame"
                if variant != "640_old":
                    note += f"; finds {_pct(r['found_of_640_old_boxes'])} of 640_old boxes"
                rows.append((f"yolov8n int8 {variant}, {conf_key.replace('_', ' ')}, {yolo['cores']} cores",
                             f"{data} {r['frame_size_wxh']}", "x".join(map(str, r["input_hxw"])), str(r["frames"]),
                             f"{r['seconds']:.2f}", f"{r['frames_per_s']:.0f}", f"{r['frames_per_cpu_s']:.0f}",
                             f">= {target_yolo:.0f}", note, cpu))
        for variant, r in (yolo.get(f"{data}_network") or {}).items():
            rows.append((f"yolov8n int8 {variant}, network only", data, "x".join(map(str, r["input_hxw"])), "16",
                         f"{r['ms_per_input'] * 0.016:.3f}", f"{r['inputs_per_s']:.0f}", "", "", "inputs/s", cpu))
    ped2 = result.get("ped2") or {}
    for conf_key in ("conf_0.5", "conf_0.25"):
        for size in CACHE_VARIANTS:
            r = (ped2.get(conf_key) or {}).get(size)
            if not r:
                continue
            full = r["splits"] == ["train", "test"]
            note = verdict(r["seconds"], TARGETS["ped2_cache_seconds"], higher=False) if full else ""
            boxes = "; ".join(f"{s} {v['boxes_per_frame']:.2f} boxes/frame" for s, v in r["per_split"].items())
            note = "; ".join(x for x in (note, boxes) if x)
            if "coverage" in r:
                note += "; covers " + " / ".join(f"{_pct(v)}" for v in r["coverage"].values()) + " at IoU 0.1/0.3/0.5"
            rows.append((f"Ped2 detection cache, {size}, {conf_key.replace('_', ' ')}",
                         "ped2 " + "+".join(r["splits"]) + (" (clip 01)" if result["quick"] else ""),
                         "x".join(map(str, r["input_hxw"])), str(r["frames"]), f"{r['seconds']:.1f}",
                         f"{r['frames_per_s']:.0f}", f"{r['frames_per_cpu_s']:.0f}",
                         f"< {TARGETS['ped2_cache_seconds']:.0f} s" if full else "", note, cpu))
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
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (b); the best one counts")
    args = parser.parse_args(argv)

    notes: list[str] = []
    result: dict = {"benchmark": "detect", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "quick": args.quick, "machine": MACHINE, "versions": package_versions(),
                    "code": code_provenance(),
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
        print(f"(b) YOLOv8n int8: {', '.join(VARIANTS)}, conf {' and '.join(map(str, CONFS))} ...", flush=True)
        result["yolo"] = bench_yolo(clips, notes, max_clips=1 if args.quick else 2, rounds=1 if args.quick else args.rounds)
        if PED2.is_dir():
            print(f"(c) the Ped2 detection caches ({', '.join(CACHE_VARIANTS)}) and their coverage ...", flush=True)
            result["ped2"] = bench_ped2(args.quick, notes)
    else:
        notes.append(f"YOLO parts skipped: {YOLOV8N} not found (a fresh clone has no ../shared)")

    return finish(result, summary_table, args.out, cpu_label())


if __name__ == "__main__":
    sys.exit(main())

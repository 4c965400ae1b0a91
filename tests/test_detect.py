"""Detectors and the detection cache (ssmtl_core.detect).

* the motion detector against the synthetic generator's ground truth (every object box is in objects.csv);
* the real YOLOv8n int8 weights in ../shared on a real photo (skipped when ../shared is absent);
* the per-video detection cache: computed once, skipped after, recomputed with force, keyed by settings.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssmtl_core.config import DetectConfig, get_profile
from ssmtl_core.data import open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.detect import DetectionCache, MotionDetector, detect_dataset, make_detector

SHARED = Path(__file__).resolve().parents[2] / "shared"
YOLOV8N = SHARED / "weights" / "yolov8n_int8_openvino_model"
BUS = SHARED / "images" / "bus.jpg"

MIN_RECALL = 0.8
MIN_IOU = 0.3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "tiny", size="tiny", seed=0, progress=False)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1,y1,x2,y2 box with each of ``boxes`` (N, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def motion_recall(root: Path, config: DetectConfig) -> tuple[float, int, dict[str, tuple[int, int]]]:
    """Recall of the motion detector over every object of every split of the synthetic dataset at ``root``.

    Returns the recall, the number of objects counted, and per object kind (found, counted).
    """
    dataset = open_dataset("synthetic", root)
    detector = MotionDetector(config)
    detections = {(v.split, v.name): detector.detect_video(v) for v in dataset.train + dataset.test}
    with open(root / "ground_truth" / "objects.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    found = counted = 0
    per_kind: dict[str, list[int]] = {}
    for row in rows:
        box = np.array([float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")])
        # The detector drops every blob smaller than min_area by design (sensor noise and speckle would
        # otherwise become objects), so an object whose whole visible box is smaller than that (a walker
        # just entering at the frame edge, a thrown ball far away) cannot be found at all; counting it would
        # measure the area filter, not the detection. Objects at least that large are all counted.
        if (box[2] - box[0]) * (box[3] - box[1]) < config.min_area:
            continue
        frame = detections[(row["split"], row["video"])].in_frame(int(row["frame_id"]))
        hit = bool(len(frame)) and float(_iou(box, frame.boxes).max()) >= MIN_IOU
        counted += 1
        found += hit
        kind = per_kind.setdefault(row["kind"], [0, 0])
        kind[0] += hit
        kind[1] += 1
    assert counted > 100, "the tiny dataset should hold hundreds of object boxes"
    return found / counted, counted, {k: (v[0], v[1]) for k, v in per_kind.items()}


def test_motion_detector_recovers_the_synthetic_objects(tiny):
    config = get_profile("synthetic").detect
    assert config.detector == "motion"
    recall, counted, per_kind = motion_recall(tiny, config)
    detail = ", ".join(f"{k} {f}/{n}" for k, (f, n) in sorted(per_kind.items()))
    print(f"motion detector recall on tiny synthetic: {recall:.3f} over {counted} objects ({detail})")
    assert recall >= MIN_RECALL, (
        f"motion detector recall {recall:.3f} < {MIN_RECALL} at IoU >= {MIN_IOU} over {counted} objects ({detail})"
    )


def test_motion_detector_outputs(tiny):
    dataset = open_dataset("synthetic", tiny)
    video = dataset.test[0]
    detections = MotionDetector(get_profile("synthetic").detect).detect_video(video)
    assert len(detections) > 0
    height, width = video.frame_size
    assert detections.frame.dtype == np.int32 and np.all(np.diff(detections.frame) >= 0)
    assert detections.frame.min() >= 0 and detections.frame.max() < video.num_frames
    boxes = detections.boxes
    assert boxes.dtype == np.float32 and boxes.shape == (len(detections), 4)
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 2] <= width)
    assert np.all(boxes[:, 1] >= 0) and np.all(boxes[:, 3] <= height)
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert np.all(detections.classes == -1)
    assert detections.class_scores.shape == (len(detections), 0)
    assert np.all((detections.scores > 0) & (detections.scores <= 1))


# -- YOLO on a real photo ---------------------------------------------------------------------------


@pytest.mark.realdata
def test_yolo_int8_finds_the_bus_and_the_people():
    if not (YOLOV8N.is_dir() and BUS.is_file()):
        pytest.skip(f"YOLO weights {YOLOV8N} or photo {BUS} not found (a fresh clone has no ../shared)")
    pytest.importorskip("openvino")
    config = DetectConfig(detector="yolo", weights=str(YOLOV8N), conf=0.5)
    detector = make_detector(config)
    image = cv2.cvtColor(cv2.imread(str(BUS)), cv2.COLOR_BGR2RGB)
    (detections,) = detector.detect_frames([image])
    classes = detections.classes.tolist()
    assert classes.count(5) >= 1, f"no bus (COCO 5) found; classes {classes}, scores {detections.scores}"
    assert classes.count(0) >= 3, f"fewer than 3 people (COCO 0) found; classes {classes}"
    assert np.all(detections.scores > config.conf)
    height, width = image.shape[:2]
    assert np.all(detections.boxes[:, [0, 2]] <= width) and np.all(detections.boxes[:, [1, 3]] <= height)
    bus = detections.boxes[detections.classes == 5][0]
    assert (bus[2] - bus[0]) > 0.5 * width, "the bus spans most of the photo's width"
    # Every kept box carries its 80 COCO class scores: argmax = its class, max = its score.
    scores = detections.class_scores.astype(np.float32)
    assert scores.shape == (len(detections), 80)
    np.testing.assert_array_equal(scores.argmax(axis=1), detections.classes)
    np.testing.assert_allclose(scores.max(axis=1), detections.scores, rtol=2e-3, atol=1e-3)  # float16 storage
    assert np.all((scores >= 0) & (scores <= 1))


# -- the detection cache ----------------------------------------------------------------------------


def _npz_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.npz"))}


def test_detection_cache_computes_once_then_skips(tiny, tmp_path):
    dataset = open_dataset("synthetic", tiny)
    config = get_profile("synthetic").detect
    cache_root = tmp_path / "cache"
    n_videos = len(dataset.train) + len(dataset.test)

    logs: list[str] = []
    cache = detect_dataset(dataset, config, cache_root, progress=False, log=logs.append)
    assert isinstance(cache, DetectionCache)
    assert cache.folder == cache_root / dataset.cache_id / "detections" / MotionDetector(config).key
    files = _npz_files(cache.folder)
    assert sorted(files) == sorted(f"{v.split}/{v.name}.npz" for v in dataset.train + dataset.test)
    assert any(f"{n_videos} video(s)" in line and "frames" in line for line in logs), logs
    assert not any("skipped" in line for line in logs), logs

    # The files: npz with the five arrays, and a meta.json naming the detector and its settings.
    for video in dataset.train + dataset.test:
        with np.load(cache.path(video)) as data:
            assert set(data.files) == {"frame", "boxes", "scores", "classes", "class_scores"}
            assert data["boxes"].shape == (len(data["frame"]), 4)
            assert data["class_scores"].shape == (len(data["frame"]), 0)
    loaded = cache.load(dataset.test[1])
    fresh = MotionDetector(config).detect_video(dataset.test[1])
    for name in ("frame", "boxes", "scores", "classes", "class_scores"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(fresh, name))
    meta = json.loads((cache.folder / "meta.json").read_text())
    assert meta["detector"] == "motion"
    assert meta["key"] == cache.folder.name
    assert meta["dataset"] == dataset.cache_id
    assert meta["settings"] == {k: getattr(config, k) for k in
                                ("min_area", "max_area_frac", "max_aspect", "var_threshold", "pad")}
    assert "numpy" in meta["versions"]

    # A second run recomputes nothing: it says so, and no file is rewritten.
    old = 1_000_000_000
    for path in files.values():
        os.utime(path, (old, old))
    logs.clear()
    detect_dataset(dataset, config, cache_root, progress=False, log=logs.append)
    assert any(f"{n_videos} video(s) already cached" in line and "skipped" in line for line in logs), logs
    assert not any("frames/s" in line for line in logs), logs
    assert {k: p.stat().st_mtime for k, p in _npz_files(cache.folder).items()} == {k: old for k in files}
    summary = cache.compute(MotionDetector(config), progress=False, log=logs.append)
    assert summary["computed"] == 0 and summary["skipped"] == n_videos and summary["frames"] == 0

    # force=True recomputes every video.
    logs.clear()
    detect_dataset(dataset, config, cache_root, force=True, progress=False, log=logs.append)
    assert all(p.stat().st_mtime > old for p in _npz_files(cache.folder).values())
    assert any(f"{n_videos} video(s)" in line and "frames/s" in line for line in logs), logs

    # A missing file (an interrupted run) is the only one recomputed.
    cache.path(dataset.train[0]).unlink()
    for path in _npz_files(cache.folder).values():
        os.utime(path, (old, old))
    summary = cache.compute(MotionDetector(config), progress=False, log=logs.append)
    assert summary["computed"] == 1 and summary["skipped"] == n_videos - 1
    assert cache.path(dataset.train[0]).stat().st_mtime > old


def test_detection_cache_key_follows_the_settings(tiny, tmp_path):
    dataset = open_dataset("synthetic", tiny)
    config = get_profile("synthetic").detect
    same = MotionDetector(dataclasses.replace(config)).key
    assert MotionDetector(config).key == same
    other_config = dataclasses.replace(config, min_area=config.min_area + 20)
    assert MotionDetector(other_config).key != same
    assert MotionDetector(dataclasses.replace(config, var_threshold=16.0)).key != same

    first = detect_dataset(dataset, config, tmp_path, splits=("test",), videos=["01"], progress=False,
                           log=lambda _: None)
    second = detect_dataset(dataset, other_config, tmp_path, splits=("test",), videos=["01"], progress=False,
                            log=lambda _: None)
    assert first.folder != second.folder and first.folder.parent == second.folder.parent
    assert first.has(dataset.test[0]) and second.has(dataset.test[0])
    assert not first.has(dataset.test[1])
    assert json.loads((second.folder / "meta.json").read_text())["settings"]["min_area"] == config.min_area + 20

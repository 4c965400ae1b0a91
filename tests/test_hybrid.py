"""The hybrid detector (COCO boxes + the motion blobs none of them explains) and what training and scoring do
with its class-agnostic blobs: distillation against the teacher's logits only, one scale for both kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssmtl_core.calibration import MIN_CALIBRATION_OBJECTS, standardize_discrepancy
from ssmtl_core.config import DetectConfig
from ssmtl_core.data import open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.detect import DetectionCache, covered_fraction, detect_dataset, merge_hybrid
from ssmtl_core.detections import Detections
from ssmtl_core.losses import DistillationTargets

SHARED = Path(__file__).resolve().parents[2] / "shared"
YOLO = SHARED / "weights" / "yolov8n_int8_openvino_model"


def detections(frames, boxes, classes=None, num_classes=80) -> Detections:
    n = len(frames)
    classes = np.zeros(n, np.int16) if classes is None else np.asarray(classes, np.int16)
    scores = np.zeros((n, num_classes), np.float16)
    if num_classes:
        scores[np.arange(n), np.maximum(classes, 0)] = 0.9
    return Detections(np.asarray(frames, np.int32), np.asarray(boxes, np.float32).reshape(-1, 4),
                      np.full(n, 0.9, np.float32), classes, scores)


def blobs(frames, boxes) -> Detections:
    n = len(frames)
    return Detections(np.asarray(frames, np.int32), np.asarray(boxes, np.float32).reshape(-1, 4),
                      np.full(n, 0.7, np.float32), np.full(n, -1, np.int16), np.zeros((n, 0), np.float16))


def test_covered_fraction_hand_values():
    person = np.array([[10, 10, 30, 50]], np.float32)  # 20 x 40
    inside = [12, 20, 28, 48]
    half_out = [20, 10, 40, 50]  # 20 x 40, its left half inside the person box
    away = [100, 100, 120, 140]
    cover = covered_fraction(np.array([inside, half_out, away], np.float32), person, margin=0.0)
    np.testing.assert_allclose(cover, [1.0, 0.5, 0.0])
    # grown by 10% per side (2 px in x), the half-out blob gains 2 of its 20 columns
    np.testing.assert_allclose(covered_fraction(np.array([half_out], np.float32), person, margin=0.1), [0.6])
    assert covered_fraction(np.array([inside], np.float32), np.zeros((0, 4), np.float32), 0.1)[0] == 0.0


def test_merge_keeps_only_blobs_no_coco_box_explains():
    coco = detections([0, 1], [[10, 10, 30, 50], [10, 10, 30, 50]])
    motion = blobs([0, 0, 1], [[12, 30, 28, 52],     # the legs of the detected person: a fragment
                               [100, 100, 130, 120],  # something the COCO detector did not see
                               [200, 10, 220, 40]])   # another one, in frame 1
    merged = merge_hybrid(coco, motion, max_cover=0.3, margin=0.1)
    assert len(merged) == 4
    np.testing.assert_array_equal(merged.frame, [0, 0, 1, 1])  # by frame, COCO boxes first
    np.testing.assert_array_equal(merged.classes, [0, -1, 0, -1])
    assert merged.class_scores.shape == (4, 80)
    assert not merged.class_scores[merged.classes == -1].any(), "blobs carry no class scores"
    np.testing.assert_allclose(merged.boxes[1], [100, 100, 130, 120])
    # the legs are 20/22 = 91% inside the box: a rule that drops only blobs covered >= 95% keeps them too
    assert len(merge_hybrid(coco, motion, max_cover=0.95, margin=0.0)) == 5


def test_hybrid_cache_reuses_both_detectors_caches(tmp_path):
    if not YOLO.is_dir():
        pytest.skip(f"{YOLO} is absent (real detector weights live in ../shared)")
    root = generate_synthetic(tmp_path / "tiny", size="tiny", seed=0, progress=False)
    dataset = open_dataset("synthetic", root)
    config = DetectConfig(detector="yolo+motion", weights=str(YOLO), conf=0.25, min_area=30)
    logs: list[str] = []
    hybrid = detect_dataset(dataset, config, tmp_path / "cache", splits=("test",), progress=False, log=logs.append)
    assert hybrid.key.startswith("hybrid-")
    video = dataset.test[0]
    motion = detect_dataset(dataset, DetectConfig(detector="motion", min_area=30), tmp_path / "cache",
                            splits=("test",), progress=False, log=logs.append)
    merged, blob_boxes = hybrid.load(video), motion.load(video)
    # The sprites are no COCO object: whatever YOLO keeps, every blob it does not explain is in the hybrid.
    assert (merged.classes == -1).sum() <= len(blob_boxes)
    assert (merged.classes == -1).any()
    assert any("already cached" in line for line in logs), "the motion cache was reused, not recomputed"
    again: list[str] = []
    detect_dataset(dataset, config, tmp_path / "cache", splits=("test",), progress=False, log=again.append)
    assert sum("already cached" in line for line in again) == 3, "yolo, motion and hybrid caches all reused"
    assert DetectionCache(tmp_path / "cache", dataset, hybrid.key).meta["yolo_key"].startswith("yolo-")


def test_distillation_loss_ignores_the_class_part_of_blobs():
    values = np.zeros((2, 6), np.float32)  # 4 logits + 2 class scores per object
    targets = DistillationTargets(values, has_classes=np.array([True, False]), logits=4)
    prediction = torch.tensor([[1.0, 1, 1, 1, 1, 1], [2.0, 2, 2, 2, 9, 9]])
    # object 0: mean over 6 values = 1; object 1: mean over its 4 logits = 2 (the 9s are not targets)
    assert targets.loss(prediction, np.array([0, 1])).item() == pytest.approx(1.5)
    # every object with classes: the paper's plain L1 over all values
    plain = DistillationTargets(values, None, 4)
    assert plain.loss(prediction, np.array([0, 1])).item() == pytest.approx(torch.mean(prediction).item())


def test_two_kinds_of_discrepancy_share_one_scale():
    rng = np.random.default_rng(0)
    kd = np.concatenate([rng.normal(0.01, 0.002, 50), rng.normal(2.0, 0.5, 50)]).astype(np.float32)
    has = np.repeat([True, False], 50)
    out = standardize_discrepancy(kd, has, None)  # no calibration: each kind by the video's own objects
    for kind in (True, False):
        assert abs(np.median(out[has == kind])) < 1e-5
    # with calibration, each kind is scaled by its validation objects
    n = MIN_CALIBRATION_OBJECTS
    calibration = {"tasks": {"kd": np.concatenate([np.full(n, 0.01), np.full(n, 1.0)]) + np.tile([0, 0.1], n)},
                   "kd_has_classes": np.repeat([True, False], n)}
    scaled = standardize_discrepancy(np.array([0.01, 0.11, 1.0, 3.0], np.float32), np.array([1, 1, 0, 0], bool),
                                     calibration)
    assert scaled[1] > scaled[0] and scaled[3] > scaled[2]
    assert scaled[3] > 10, "a blob far above its kind's validation objects stands out"

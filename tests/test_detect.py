"""Detectors and the detection cache (ssmtl_core.detect).

* the motion detector against the synthetic generator's ground truth (every object box is in objects.csv);
* the per-video detection cache: computed once, skipped after, recomputed with force, keyed by settings.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ssmtl_core.config import DetectConfig, get_profile
from ssmtl_core.data import open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.detect import DetectionCache, MotionDetector, detect_dataset

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
            assert set(data.files) == {"frame", "boxes", "scores", "classes", "class_scores", "input_signature"}
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


def _cache_arrays(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every npz of a cache folder (by path below it) with its arrays; meta.json and claim files aside."""
    from ssmtl_core.io import load_npz

    return {str(p.relative_to(folder)): load_npz(p) for p in sorted(folder.rglob("*.npz"))}


def test_two_shards_fill_the_cache_of_one_run(tiny, tmp_path):
    """``ssmtl detect --shard 0/2`` and ``--shard 1/2`` at once (with the teacher's logits) leave the same cache
    as one unsharded run: same files, same detections, same logits (float16; one run may compile the teacher
    with OpenVINO where a shard runs it eagerly, so within rounding)."""
    import subprocess
    import sys

    from ssmtl_core.cli import main

    settings = tmp_path / "settings.yaml"
    settings.write_text("train: {teacher_size: 64}\n")
    common = ["detect", "--dataset", "synthetic", "--root", str(tiny), "--detector", "motion", "--params",
              str(settings), "--teacher", "efficientnet_lite0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    shards = [subprocess.Popen([sys.executable, "-m", "ssmtl_core", *common, "--cache", str(tmp_path / "sharded"),
                                "--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env) for i in range(2)]
    outputs = [shard.communicate(timeout=600)[0] for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0], outputs
    assert main([*common, "--cache", str(tmp_path / "single")]) == 0

    sharded, single = _cache_arrays(tmp_path / "sharded"), _cache_arrays(tmp_path / "single")
    dataset = open_dataset("synthetic", tiny)
    videos = len(dataset.train) + len(dataset.test)
    assert sharded.keys() == single.keys() and len(single) == 2 * videos  # detections and logits of every video
    for name, arrays in single.items():
        assert arrays.keys() == sharded[name].keys(), name
        for key, value in arrays.items():
            if key in ("logits", "detections_version"):
                continue  # logits: below; the version is the detection file's size and time
            assert np.array_equal(value, sharded[name][key]), (name, key)
        if "logits" in arrays:
            np.testing.assert_allclose(arrays["logits"].astype(np.float32),
                                       sharded[name]["logits"].astype(np.float32), atol=0.02, rtol=0.01)
    assert not list((tmp_path / "sharded").rglob("*.claim")), "claims are removed when released"
    # each shard took its own half of the videos
    for i, output in enumerate(outputs):
        assert f"detections: {len(range(i, videos, 2))} video(s)" in output, output
        assert f": {len(range(i, videos, 2))} video(s), " in output, output  # the teacher's share


def test_shard_flag_is_checked(tiny, tmp_path, capsys):
    from ssmtl_core.cli import main

    for bad in ("2/2", "1", "a/b", "-1/2"):
        assert main(["detect", "--dataset", "synthetic", "--root", str(tiny), "--detector", "motion", "--cache",
                     str(tmp_path), f"--shard={bad}"]) == 2
        assert "--shard" in capsys.readouterr().err

"""Tests of ssmtl_core.data.synthetic on the ``tiny`` size: determinism, layout, and ground-truth consistency."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssmtl_core.data.synthetic import (
    ANOMALY_KINDS,
    GENERATOR_VERSION,
    OBJECT_KINDS,
    SIZES,
    generate_synthetic,
)
from ssmtl_core.errors import SSMTLError


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "tiny", size="tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def meta(tiny) -> dict:
    return json.loads((tiny / "dataset.json").read_text())


def test_sizes_and_version():
    assert GENERATOR_VERSION == 1
    assert set(SIZES) == {"tiny", "small", "default"}
    assert SIZES["default"].frame_size == (240, 320)
    assert (SIZES["default"].train_clips, SIZES["default"].test_clips, SIZES["default"].test_frames) == (8, 8, 160)
    assert SIZES["tiny"].frame_size == (120, 160)


def test_deterministic_per_seed(tiny, tmp_path):
    again = generate_synthetic(tmp_path / "again", size="tiny", seed=0, progress=False)
    assert _digests(again) == _digests(tiny)
    other = generate_synthetic(tmp_path / "other", size="tiny", seed=1, progress=False)
    a, b = _digests(tiny), _digests(other)
    assert a.keys() == b.keys()
    assert a["training/frames/01/000.jpg"] != b["training/frames/01/000.jpg"]
    assert a["ground_truth/objects.csv"] != b["ground_truth/objects.csv"]


def test_layout_and_shapes(tiny, meta):
    params = SIZES["tiny"]
    assert meta["name"] == "synthetic" and meta["generator_version"] == GENERATOR_VERSION
    assert meta["size"] == "tiny" and meta["seed"] == 0
    assert meta["frame_size"] == [params.height, params.width]
    assert meta["train_videos"] == {f"{i + 1:02d}": params.train_frames for i in range(params.train_clips)}
    assert meta["test_videos"] == {f"{i + 1:02d}": params.test_frames for i in range(params.test_clips)}
    for split, videos in (("training", meta["train_videos"]), ("testing", meta["test_videos"])):
        for video, frames in videos.items():
            files = sorted((tiny / split / "frames" / video).iterdir())
            assert [p.name for p in files] == [f"{k:03d}.jpg" for k in range(frames)]
    frame = cv2.imread(str(tiny / "testing" / "frames" / "01" / "000.jpg"))
    assert frame.shape == (params.height, params.width, 3)

    labels = np.load(tiny / "ground_truth" / "frame_labels.npy")
    assert labels.dtype == np.uint8
    assert labels.shape == (sum(meta["test_videos"].values()),)
    assert set(np.unique(labels)) == {0, 1}
    with np.load(tiny / "ground_truth" / "pixel_masks.npz") as data:
        masks = {key: data[key] for key in data.files}
    assert sorted(masks) == [f"Test{i + 1:03d}" for i in range(params.test_clips)]
    offset = 0
    for i, (video, frames) in enumerate(meta["test_videos"].items()):
        mask = masks[f"Test{i + 1:03d}"]
        assert mask.dtype == bool and mask.shape == (frames, params.height, params.width)
        clip_labels = labels[offset:offset + frames]
        offset += frames
        np.testing.assert_array_equal(mask.any(axis=(1, 2)), clip_labels.astype(bool))
        # Every test clip holds an anomaly and some normal frames, and starts normal.
        assert clip_labels.any() and not clip_labels.all() and clip_labels[0] == 0, video


def test_objects_table(tiny, meta):
    rows = _rows(tiny / "ground_truth" / "objects.csv")
    assert list(rows[0]) == ["split", "video", "object_id", "kind", "anomalous", "frame_id", "x_min", "y_min",
                             "x_max", "y_max"]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert train and test
    assert all(r["anomalous"] == "0" and r["kind"] == "walker" for r in train)
    assert {r["anomalous"] for r in test} == {"0", "1"}
    assert {r["kind"] for r in rows} <= set(OBJECT_KINDS)
    height, width = meta["frame_size"]
    for r in rows:
        x0, y0, x1, y1 = (int(r[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    # Every train frame shows people (2-5 are kept around; one may be just entering or leaving).
    for video, frames in meta["train_videos"].items():
        seen = {int(r["frame_id"]) for r in train if r["video"] == video}
        assert seen == set(range(frames))
    # The abnormal rows of objects.csv are exactly the rows of tracks.csv.
    tracks = _rows(tiny / "ground_truth" / "tracks.csv")
    key = ("video", "track_id", "frame_id", "x_min", "y_min", "x_max", "y_max")
    from_objects = sorted(tuple(r["object_id" if k == "track_id" else k] for k in key)
                          for r in test if r["anomalous"] == "1")
    assert from_objects == sorted(tuple(r[k] for k in key) for r in tracks)


def test_track_boxes_match_masks(tiny, meta):
    tracks = _rows(tiny / "ground_truth" / "tracks.csv")
    assert list(tracks[0]) == ["video", "track_id", "frame_id", "x_min", "y_min", "x_max", "y_max"]
    with np.load(tiny / "ground_truth" / "pixel_masks.npz") as data:
        masks = {key: data[key] for key in data.files}
    covered = {key: np.zeros_like(mask) for key, mask in masks.items()}
    per_frame: dict[tuple[str, int], list] = {}
    for r in tracks:
        key = f"Test{int(r['video']):03d}"
        f = int(r["frame_id"])
        x0, y0, x1, y1 = (int(r[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        box = masks[key][f, y0:y1, x0:x1]
        # Tight box (max exclusive): mask pixels on each of its four edges.
        assert box.any() and box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any(), r
        covered[key][f, y0:y1, x0:x1] = True
        per_frame.setdefault((key, f), []).append((x0, y0, x1, y1))
    for key, mask in masks.items():
        assert not (mask & ~covered[key]).any(), f"{key}: abnormal pixels outside every track box"
    for (key, f), boxes in per_frame.items():
        if len(boxes) == 1:
            ys, xs = np.nonzero(masks[key][f])
            assert boxes[0] == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_events_match_tracks(tiny, meta):
    tracks = _rows(tiny / "ground_truth" / "tracks.csv")
    assert meta["events"]
    assert set(meta["anomaly_kinds"]) == {e["kind"] for e in meta["events"]}
    assert set(meta["anomaly_kinds"]) <= set(ANOMALY_KINDS)
    for event in meta["events"]:
        frames = [int(r["frame_id"]) for r in tracks
                  if r["video"] == event["video"] and int(r["track_id"]) == event["track_id"]]
        assert (event["start"], event["end"]) == (min(frames), max(frames) + 1)
    assert {e["video"] for e in meta["events"]} == set(meta["test_videos"])


def test_rerun_is_skipped(tiny, capsys):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*") if p.is_file()}
    assert generate_synthetic(tiny, size="tiny", seed=0, progress=True) == tiny
    assert "already complete" in capsys.readouterr().err
    assert before == {p: p.stat().st_mtime_ns for p in tiny.rglob("*") if p.is_file()}


def test_other_settings_and_interrupted_runs_are_replaced(tmp_path):
    out = generate_synthetic(tmp_path / "d", size="tiny", seed=1, progress=False)
    generate_synthetic(out, size="tiny", seed=2, progress=False)
    assert json.loads((out / "dataset.json").read_text())["seed"] == 2
    # An interrupted run leaves its marker and no dataset.json: the next run starts over.
    (out / "dataset.json").unlink()
    (out / ".synthetic-incomplete").write_text("")
    generate_synthetic(out, size="tiny", seed=2, progress=False)
    assert (out / "dataset.json").is_file() and not (out / ".synthetic-incomplete").exists()


def test_errors(tmp_path):
    with pytest.raises(SSMTLError, match="unknown synthetic dataset size"):
        generate_synthetic(tmp_path / "x", size="huge", progress=False)
    with pytest.raises(SSMTLError, match="non-negative integer"):
        generate_synthetic(tmp_path / "x", size="tiny", seed=-1, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SSMTLError, match="not empty"):
        generate_synthetic(foreign, size="tiny", progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"
    (foreign / "dataset.json").write_text(json.dumps({"name": "ped2"}))
    with pytest.raises(SSMTLError, match="not empty"):
        generate_synthetic(foreign, size="tiny", progress=False)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(SSMTLError, match="is a file"):
        generate_synthetic(a_file, size="tiny", progress=False)

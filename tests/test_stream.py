"""Detection and scoring at once (ssmtl_core.stream): the same detections and object scores as the sequential
path (detect the video, then score its detections), from the frames decoded once.

The motion detector runs on a generated synthetic clip; the COCO and hybrid detectors on the first frames of a
UCSD Ped2 test clip with the int8 YOLOv8n export in ``../shared`` (skipped without them). The network has
random weights: the test is about the path, not the model.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmtl_core.apply import open_video
from ssmtl_core.config import IMAGENET_CLASSES, SampleConfig, get_profile, validate
from ssmtl_core.data import load_frames, open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.detect import make_detector
from ssmtl_core.detections import Detections
from ssmtl_core.errors import SSMTLError
from ssmtl_core.model import SSMTLModel
from ssmtl_core.score import Scorer, score_detections
from ssmtl_core.stream import chosen_pipeline, decoded_video, detect_and_score, detect_then_score

SHARED = Path(__file__).resolve().parents[2] / "shared"
PED2 = SHARED / "datasets" / "ucsd_ped2" / "testing" / "frames" / "01"
YOLO = SHARED / "weights" / "yolov8n_int8_openvino_model"


def _fake_teacher(frames: np.ndarray, detections: Detections, rows: np.ndarray) -> np.ndarray:
    """Logits that depend on each object's crop alone (so both paths must hand the same objects)."""
    out = np.zeros((len(rows), IMAGENET_CLASSES), np.float32)
    for i, row in enumerate(rows):
        x1, y1, x2, y2 = detections.boxes[row].astype(int)
        patch = frames[detections.frame[row], y1:y2 + 1, x1:x2 + 1].astype(np.float32)
        out[i] = np.linspace(0, 1, IMAGENET_CLASSES) * (patch.mean() if patch.size else 0.0)
    return out


def _compare(detector, video, kd_layout: dict, chunk: int) -> Detections:
    """Score ``video`` both ways with one scorer; the detections and every task's object scores agree."""
    frames = load_frames(video)
    torch.manual_seed(0)
    kd_dim = kd_layout["logits"] + kd_layout["class_scores"]
    model = SSMTLModel("shallow_narrow", kd_dim=kd_dim, crop_size=32, kd_probabilities=kd_layout["class_scores"])
    scorer = Scorer(model.eval(), SampleConfig(crop_size=32), kd_layout, "cpu", chunk=chunk)
    sequential = detector.detect_video(video)
    before = score_detections(scorer, frames, sequential,
                              lambda rows: _fake_teacher(frames, sequential, rows))
    for path in (detect_and_score, detect_then_score):
        found, after, seconds = path(detector, scorer, video, frames,
                                     lambda dets, rows: _fake_teacher(frames, dets, rows))
        assert seconds > 0
        for name, value in sequential.to_arrays().items():
            np.testing.assert_array_equal(getattr(found, name), value, err_msg=f"{path.__name__}: {name}")
        assert before.tasks.keys() == after.tasks.keys() == {"aot", "irr", "mid", "kd"}
        for task in before.tasks:
            np.testing.assert_array_equal(after.tasks[task], before.tasks[task], err_msg=f"{path.__name__}: {task}")
    assert len(sequential) > 2 * chunk, "too few objects for several groups"
    return sequential


@pytest.fixture(scope="module")
def synthetic_clip(tmp_path_factory) -> Path:
    root = generate_synthetic(tmp_path_factory.mktemp("stream") / "data", "tiny", seed=0, progress=False)
    return root


def test_motion_detector_streams_the_sequential_scores(synthetic_clip):
    dataset = open_dataset("synthetic", synthetic_clip)
    video = dataset.test[0]
    detector = make_detector(get_profile("synthetic").detect)
    parts = list(detector.iter_video(video))
    assert len(parts) > 1 and [done for done, _ in parts][-1] == video.num_frames
    found = _compare(detector, video, {"logits": IMAGENET_CLASSES, "class_scores": 0}, chunk=8)
    assert (found.classes < 0).all()  # every object needs the teacher's logits: all of them come at the end


def test_pipeline_follows_the_cores():
    """On two cores both stages want both cores and the overlap measured slower (bench/results/infer.json):
    ``auto`` runs them one after the other there, at once with cores to spare or on a GPU; asked, as asked."""
    assert chosen_pipeline("auto", "cpu", cores=2) == "sequential"
    assert chosen_pipeline("auto", "cpu", cores=1) == "sequential"
    assert chosen_pipeline("auto", "cpu", cores=8) == "overlap"
    assert chosen_pipeline("auto", "cuda:0", cores=2) == "overlap"
    assert chosen_pipeline("overlap", "cpu", cores=2) == "overlap"
    assert chosen_pipeline("sequential", "cuda", cores=16) == "sequential"
    profile = get_profile("synthetic")
    with pytest.raises(SSMTLError, match="score.pipeline"):
        validate(dataclasses.replace(profile, score=dataclasses.replace(profile.score, pipeline="fast")))


def test_decoded_frames_read_as_the_files(synthetic_clip):
    video = open_dataset("synthetic", synthetic_clip).test[0]
    decoded = decoded_video(video, load_frames(video))
    assert decoded.num_frames == video.num_frames and decoded.frame_size == video.frame_size
    for index in (0, video.num_frames - 1):
        np.testing.assert_array_equal(decoded.frame(index), video.frame(index))


def test_hybrid_detector_streams_the_sequential_scores(tmp_path):
    if not PED2.is_dir() or not YOLO.is_dir():
        pytest.skip(f"{PED2} or {YOLO} is missing (../shared)")
    folder = tmp_path / "clip"
    folder.mkdir()
    for frame in sorted(PED2.glob("*.jpg"))[:21]:
        shutil.copy(frame, folder / frame.name)
    video = open_video(folder)
    config = dataclasses.replace(get_profile("ped2").detect, weights=str(YOLO), batch=4)
    detector = make_detector(config)
    coco_parts = list(detector.coco.iter_video(video))
    assert [done for done, _ in coco_parts] == [4, 8, 12, 16, 20, 21]
    found = _compare(detector, video, {"logits": IMAGENET_CLASSES, "class_scores": 80}, chunk=16)
    assert (found.classes >= 0).any()

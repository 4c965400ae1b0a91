"""Scoring a trained run (ssmtl evaluate) and a user's own video (ssmtl score-video)."""

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers import train_synthetic

from ssmtl_core.cli import main
from ssmtl_core.config import load_profile

SMALL = {"train.epochs": 1, "sample.crop_size": 32, "train.teacher_size": 64, "train.batch_size": 16,
         "sample.max_train_objects": 48}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("apply")
    return base, train_synthetic(base, "tiny", SMALL)


def test_evaluate_writes_metrics_and_frame_scores(trained, capsys):
    base, dataset = trained
    assert main(["evaluate", "--run", str(base / "run"), "--device", "cpu"]) == 0
    assert "micro AUC" in capsys.readouterr().out
    metrics = json.loads((base / "run" / "metrics.json").read_text())
    for key in ("micro_auc", "macro_auc", "rbdc", "tbdc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert set(metrics["per_video_auc"]) == {v.name for v in dataset.test}
    assert set(metrics["per_task"]) == {"aot", "irr", "mid", "kd"} and len(metrics["ablation"]) == 15
    assert metrics["detector"]["detector"] == "motion" and metrics["teacher"].startswith("efficientnet_lite0")
    assert metrics["dataset"]["name"] == "synthetic" and metrics["seed"] == 0
    assert metrics["settings"]["score"]["gauss_taps"] == load_profile("synthetic").score.gauss_taps
    assert "torch" in metrics["versions"]
    with open(base / "run" / "frame_scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(v.num_frames for v in dataset.test)
    assert {"video", "frame", "label", "score", "aot", "irr", "mid", "kd"} <= set(rows[0])
    # the object scores are cached: a second evaluation scores nothing again and gives the same numbers
    cached = sorted((base / "run" / "eval" / "object_scores").glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert main(["evaluate", "--run", str(base / "run"), "--device", "cpu"]) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert json.loads((base / "run" / "metrics.json").read_text())["micro_auc"] == metrics["micro_auc"]


def _write_video(path, frames, fps=10):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_score_video_writes_annotated_video_csv_and_plot(trained, tmp_path):
    base, dataset = trained
    video = dataset.test[0]
    source = tmp_path / "clip.mp4"
    _write_video(source, [f for _, f in video.iter_frames()])
    out = tmp_path / "scored"
    assert main(["score-video", str(source), "--checkpoint", str(base / "run" / "best.pt"), "--out", str(out),
                 "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == video.num_frames and summary["objects"] > 0
    with open(out / "frame_scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == video.num_frames
    scores = np.array([float(r["score"]) for r in rows])
    assert scores.min() >= 0 and scores.max() <= 1 and scores.std() > 0
    capture = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == video.num_frames
    assert (out / "scores.png").stat().st_size > 1000 and (out / "objects.csv").is_file()


def test_score_video_errors_are_one_line(trained, tmp_path):
    base, _ = trained
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    result = subprocess.run([sys.executable, "-m", "ssmtl_core", "score-video", str(broken), "--checkpoint",
                             str(base / "run" / "best.pt"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(broken) in result.stderr
    wrong = tmp_path / "wrong.pt"
    import torch

    torch.save({"weights": [1, 2, 3]}, wrong)
    source = tmp_path / "ok.mp4"
    _write_video(source, [np.zeros((48, 64, 3), np.uint8)] * 5)
    result = subprocess.run([sys.executable, "-m", "ssmtl_core", "score-video", str(source), "--checkpoint", str(wrong),
                             "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not an SSMTL checkpoint" in result.stderr and str(wrong) in result.stderr


def test_score_video_and_evaluate_give_the_same_frame_scores(trained, tmp_path):
    # One scoring path: a test video scored by `score-video` (its own detection run on the frame folder, the
    # paper's per-video normalisation) and by `evaluate` (cached detections of the dataset) gets the same
    # frame scores.
    base, dataset = trained
    video = dataset.test[0]
    assert main(["evaluate", "--run", str(base / "run"), "--device", "cpu", "--out", str(tmp_path / "eval")]) == 0
    with open(tmp_path / "eval" / "frame_scores.csv") as handle:
        evaluated = np.array([float(r["score"]) for r in csv.DictReader(handle) if r["video"] == video.name])
    folder = video.source.path  # the video's frame folder
    out = tmp_path / "scored"
    assert main(["score-video", str(folder), "--checkpoint", str(base / "run" / "best.pt"), "--out", str(out),
                 "--device", "cpu", "--per-video-minmax", "--format", "gif"]) == 0
    with open(out / "frame_scores.csv") as handle:
        scored = np.array([float(r["score"]) for r in csv.DictReader(handle)])
    assert len(scored) == len(evaluated) == video.num_frames
    assert evaluated.max() > 0, "the video has scored objects"
    np.testing.assert_allclose(scored, evaluated, atol=1e-4)

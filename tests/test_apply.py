"""Scoring a trained run (ssmtl evaluate, and its reduced-precision scorers) and a user's own video
(ssmtl score-video)."""

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from helpers import train_synthetic

from ssmtl_core import viewer
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
    # The file holds what the numbers were computed from: the dataset's labels, and frame scores whose AUCs
    # (micro; per video with one normal frame scored 0 and one abnormal scored 1 added) are metrics.json's.
    from sklearn.metrics import roc_auc_score

    labels = np.array([int(r["label"]) for r in rows])
    np.testing.assert_array_equal(labels, np.concatenate([v.labels for v in dataset.test]))
    scores = np.array([float(r["score"]) for r in rows])
    assert 0 < labels.mean() < 1 and scores.std() > 0
    assert metrics["micro_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-5)
    names = np.array([r["video"] for r in rows])
    per_video = {name: roc_auc_score(np.r_[labels[names == name], 0, 1], np.r_[scores[names == name], 0.0, 1.0])
                 for name in metrics["per_video_auc"]}
    assert metrics["per_video_auc"] == pytest.approx(per_video, abs=1e-5)
    assert metrics["macro_auc"] == pytest.approx(np.mean(list(per_video.values())), abs=1e-5)
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
    _check_alerts(out, summary["calibration"]["threshold"])
    # The result viewer opens the folder as a user would (ssmtl_core.viewer; no ground truth there).
    scored = viewer.from_score_video(out)
    np.testing.assert_allclose(scored.frame_scores, scores, atol=1e-6)
    assert len(scored.frame) == summary["objects"] and scored.kind == "calibrated" and scored.labels is None
    assert viewer.render(scored, scored.peak_frame()).shape[1] > video.frame_size[1]
    # A threshold inside the scores' range makes alerts for sure: they follow it too.
    given = float(np.clip(np.median(scores[scores > 0]), 0.01, 0.99))
    out = tmp_path / "scored_given"
    assert main(["score-video", str(source), "--checkpoint", str(base / "run" / "best.pt"), "--out", str(out),
                 "--device", "cpu", "--threshold", str(given)]) == 0
    segments = _check_alerts(out, given)
    assert segments, "a threshold at the median frame score leaves some frames above it"


def _check_alerts(out, threshold: float) -> list[dict]:
    """The alert segments of a score-video folder are the runs of frames scoring at least ``threshold`` (short
    gaps joined, short runs dropped: the summary's ``min_frames``), in the summary and in both CSVs alike; an
    object is over the threshold when its own score is."""
    from ssmtl_core.alerts import alert_runs

    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"]["threshold"] == pytest.approx(threshold)
    assert summary["alert"]["threshold"] == pytest.approx(threshold, abs=1e-6)
    min_frames = summary["alert"]["min_frames"]
    with open(out / "frame_scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    scores = np.array([float(r["score"]) for r in rows])
    marked = np.array([int(r["alert_segment"]) for r in rows])
    segments = summary["alert_segments"]
    # the CSV rounds scores to 6 decimals: a frame within that of the threshold may fall on either side
    assert [(s["start"], s["end"] + 1) for s in segments] in (alert_runs(scores >= threshold - 1e-6, min_frames),
                                                             alert_runs(scores >= threshold + 1e-6, min_frames))
    assert all(s["frames"] >= min_frames for s in segments)
    expected = np.zeros(len(rows), int)
    for k, segment in enumerate(segments, 1):
        assert segment["frames"] == segment["end"] - segment["start"] + 1
        expected[segment["start"]:segment["end"] + 1] = k
        assert segment["peak_frame_score"] == pytest.approx(scores[segment["start"]:segment["end"] + 1].max(),
                                                            abs=1e-5)
    np.testing.assert_array_equal(marked, expected)
    assert all(a["end"] + min_frames < b["start"] for a, b in zip(segments, segments[1:])), "gaps are joined"
    with open(out / "objects.csv") as handle:
        objects = list(csv.DictReader(handle))
    assert objects
    for row in objects:
        score = float(row["score"])
        if abs(score - threshold) > 1e-6:
            assert int(row["over_threshold"]) == int(score >= threshold), row
        assert int(row["alert_segment"]) == expected[int(row["frame"])], row
    return segments


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


def test_score_precision_is_the_one_used(trained, tmp_path):
    """``--score-precision`` reaches the scorer: summary.json names the precision asked and the backend that
    scored (OpenVINO's own report of the precision it ran), and the scores move with it. On a CPU without native
    bf16, OpenVINO runs a bf16 request in fp32 and the summary says so."""
    from ssmtl_core.precision import native_bf16
    from ssmtl_core.runtime import openvino_available

    base, dataset = trained
    clip = dataset.test[0].source.path

    def scored(precision: str) -> tuple[dict, np.ndarray]:
        out = tmp_path / precision
        assert main(["score-video", str(clip), "--checkpoint", str(base / "run" / "best.pt"), "--out", str(out),
                     "--device", "cpu", "--format", "gif", "--score-precision", precision]) == 0
        with open(out / "objects.csv") as handle:
            raw = np.array([float(r["sum_raw"]) for r in csv.DictReader(handle)])
        return json.loads((out / "summary.json").read_text()), raw

    results = {precision: scored(precision) for precision in ("fp32", "bf16", "int8")}
    for precision, (summary, _) in results.items():
        assert summary["score_precision"]["asked"] == precision == summary["score_settings"]["inference_precision"]
    backends = {precision: summary["score_precision"]["backend"] for precision, (summary, _) in results.items()}
    if not openvino_available():
        assert set(backends.values()) == {"torch-cpu"}, backends  # PyTorch scores in fp32 whatever was asked
        return
    assert backends["fp32"] == "openvino-fp32" and backends["int8"] == "openvino-int8"
    assert backends["bf16"] == ("openvino-bf16" if native_bf16() else "openvino-fp32")
    reference = results["fp32"][1]
    for precision in ("bf16", "int8"):
        got = results[precision][1]
        assert len(got) == len(reference) > 0
        if backends[precision] == "openvino-fp32":
            np.testing.assert_allclose(got, reference, atol=1e-5)  # the fallback is fp32 indeed
        else:
            assert not np.allclose(got, reference, atol=1e-6), precision  # a reduced precision was really used
            assert np.corrcoef(got, reference)[0, 1] > 0.9, precision


def test_pipeline_changes_no_score(trained, tmp_path):
    """``--pipeline overlap`` and ``--pipeline sequential`` write the same object scores, and summary.json says
    which one ran (``auto``'s choice depends on the cores: tests/test_stream.py)."""
    base, dataset = trained
    clip = dataset.test[0].source.path
    written = {}
    for pipeline in ("overlap", "sequential"):
        out = tmp_path / pipeline
        assert main(["score-video", str(clip), "--checkpoint", str(base / "run" / "best.pt"), "--out", str(out),
                     "--device", "cpu", "--format", "gif", "--pipeline", pipeline]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["pipeline"] == {"asked": pipeline, "used": pipeline}
        written[pipeline] = (out / "objects.csv").read_text()
    assert written["overlap"] == written["sequential"] and written["overlap"].count("\n") > 10


@pytest.mark.parametrize("precision", ["auto", "int8"])
def test_reduced_precision_scorers_keep_the_ranking(trained, precision):
    """bf16 (``auto`` on CPUs with native bf16) and int8 (NNCF, calibrated on training objects) score every test
    object of the trained run (329 here) nearly as fp32 does: per task a rank correlation above 0.95 (measured
    0.993-1.0, and 0.963 for int8 on this tiny run's arrow of time, whose scores span only 0.004: there int8's
    rounding is a large part of the spread), no object further than a fifth of the scores' range (measured at most 0.10), and the top 10% of
    objects mostly the same (measured 88-100% shared)."""
    from scipy.stats import spearmanr

    from ssmtl_core.checkpoint import model_from_checkpoint
    from ssmtl_core.data.frames import load_frames
    from ssmtl_core.detect import detect_dataset
    from ssmtl_core.precision import native_bf16
    from ssmtl_core.runs import int8_calibration_inputs, load_run
    from ssmtl_core.score import Scorer

    if precision == "auto" and not native_bf16():
        pytest.skip("this CPU has no native bf16: auto scores in fp32, the reference itself")
    base, _ = trained
    state, profile, dataset, cache = load_run(base / "run", cache_root=base / "cache")
    model = model_from_checkpoint(state)
    detections = detect_dataset(dataset, profile.detect, cache, splits=("test",), progress=False, log=lambda *_: None)
    videos = [(load_frames(v, cache / dataset.cache_id / "frames"), detections.load(v)) for v in dataset.test]
    tasks = ("aot", "irr", "mid")  # the distillation score needs the teacher's logits of a motion blob

    def scores(asked: str) -> tuple[str, dict[str, np.ndarray]]:
        scorer = Scorer(model, profile.sample, state["kd_layout"], "cpu", compile=True, precision=asked,
                        tasks=tasks, int8_inputs=int8_calibration_inputs(dataset, profile, cache, log=lambda *_: None)
                        if asked == "int8" else None)
        parts = [scorer.score_objects(frames, dets) for frames, dets in videos]
        return scorer.backend, {t: np.concatenate([part.tasks[t] for part in parts]) for t in tasks}

    backend, reference = scores("fp32")
    if not backend.startswith("openvino"):
        pytest.skip("OpenVINO is not installed")
    backend, got = scores(precision)
    assert backend == ("openvino-int8" if precision == "int8" else "openvino-bf16")
    assert len(reference["aot"]) >= 200, "too few test objects to compare"
    for task in tasks:
        expected, actual = reference[task], got[task]
        assert spearmanr(actual, expected).statistic > 0.95, task
        assert np.abs(actual - expected).max() <= 0.2 * (expected.max() - expected.min()), task
        top = max(1, len(expected) // 10)
        shared = set(np.argsort(expected)[-top:]) & set(np.argsort(actual)[-top:])
        assert len(shared) >= 0.7 * top, (task, len(shared), top)

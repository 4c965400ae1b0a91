"""Calibrated scores (docs/method.md, "Calibrated scores for your own videos"): the math on hand-made numbers, and
on synthetic data a normal clip without alerts next to an abnormal clip whose alert overlaps its anomaly."""

import csv
import json

import numpy as np
import pytest
import torch

from ssmtl_core.alerts import ALERT_RATE, alert_segments
from ssmtl_core.calibration import (
    ALERT_QUANTILE,
    MIN_CALIBRATION_OBJECTS,
    Calibration,
    empirical_cdf,
    surprise,
)
from ssmtl_core.config import ScoreConfig
from ssmtl_core.errors import SSMTLError
from ssmtl_core.runs import checkpoint_calibration
from ssmtl_core.score import ObjectScores, calibrated_frame_scores

# -- the math ------------------------------------------------------------------------------------------------


def test_empirical_cdf_mid_ranks_ties_and_interpolation():
    reference = np.array([4.0, 1.0, 3.0, 2.0])
    np.testing.assert_allclose(empirical_cdf([1, 2, 3, 4], reference), [0.125, 0.375, 0.625, 0.875])
    assert empirical_cdf([2.5], reference)[0] == pytest.approx(0.5)  # linear between two reference values
    # ties count half: 1 below, 2 equal -> (1 + 1) / 4
    assert empirical_cdf([2.0], np.array([1.0, 2.0, 2.0, 3.0]))[0] == pytest.approx(0.5)
    grid = np.linspace(-1, 6, 301)
    values = empirical_cdf(grid, reference)
    assert np.all(np.diff(values) > 0) and values.min() > 0 and values.max() < 1  # increasing, inside (0, 1)


def test_tails_are_exponential_and_keep_ranking_beyond_every_reference_value():
    reference = np.arange(10.0)  # top 10%: the 90th percentile is 8.1, mean excess 0.9
    assert empirical_cdf([9.9], reference)[0] == pytest.approx(1 - 0.05 * np.exp(-1.0))
    assert empirical_cdf([-0.9], reference)[0] == pytest.approx(0.05 * np.exp(-1.0))
    far = surprise([1e3, 2e3], reference)  # both round to 1.0 as fractions, not as surprises
    np.testing.assert_allclose(empirical_cdf([1e3, 2e3], reference), 1.0)
    assert far[1] > far[0] > 100
    assert surprise([9.0], reference)[0] == pytest.approx(np.log(20))  # log(2n) at the largest value
    # a constant reference still ranks what lies beyond it
    assert empirical_cdf([5.0], np.full(5, 5.0))[0] == pytest.approx(0.5)
    assert np.log(10) < surprise([5.1], np.full(5, 5.0))[0] < surprise([5.2], np.full(5, 5.0))[0]


def _validation(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return {"objects": n, "tasks": {"aot": torch.from_numpy(rng.uniform(0, 0.2, n).astype(np.float32)),
                                    "mid": torch.from_numpy(rng.normal(0.05, 0.01, n).astype(np.float32))},
            "kd_has_classes": torch.zeros(n, dtype=torch.bool)}


def _objects(**tasks):
    n = len(next(iter(tasks.values())))
    return ObjectScores(np.arange(n), np.zeros((n, 4), np.float32), {k: np.asarray(v, np.float32) for k, v in tasks.items()})


def test_threshold_is_the_99th_percentile_of_the_validation_objects():
    validation = _validation()
    calibration = Calibration(validation)
    assert calibration.tasks == ("aot", "mid") and calibration.objects == 400
    own = calibration.object_scores(_objects(aot=validation["tasks"]["aot"], mid=validation["tasks"]["mid"]))
    assert calibration.threshold == pytest.approx(np.quantile(own, ALERT_QUANTILE))
    assert (own >= calibration.threshold).mean() == pytest.approx(1 - ALERT_QUANTILE, abs=0.005)
    # the validation objects' calibrated scores spread evenly over (0, 1): they are the fractions they exceed
    np.testing.assert_allclose(np.sort(own), (np.arange(400) + 0.5) / 400, atol=0.002)  # (ties: mid-ranks)


def test_one_task_far_out_of_range_is_enough_and_units_do_not_matter():
    calibration = Calibration(_validation())
    scores = calibration.object_scores(_objects(aot=[0.1, 0.1, 0.9, 0.1], mid=[0.05, 0.2, 0.05, 0.04]))
    ordinary, odd_mid, odd_aot, low = scores
    assert ordinary < 0.9 and low < ordinary  # typical on both tasks
    assert odd_mid > calibration.threshold and odd_aot > calibration.threshold  # one task far out is enough
    # a task in other units (x1000) gives the same calibrated scores
    validation = _validation()
    validation["tasks"]["mid"] = validation["tasks"]["mid"] * 1000
    scaled = Calibration(validation).object_scores(_objects(aot=[0.1, 0.1, 0.9, 0.1], mid=[50.0, 200.0, 50.0, 40.0]))
    np.testing.assert_allclose(scaled, scores, rtol=1e-5)
    # a subset of the tasks is read against the validation objects' evidence of the same subset
    alone = calibration.object_scores(_objects(aot=[0.1, 0.9], mid=[0.2, 0.05]), ("aot",))
    assert alone[1] > calibration.threshold > alone[0]


def test_hybrid_distillation_kinds_are_read_against_their_own_kind():
    n = 2 * MIN_CALIBRATION_OBJECTS
    rng = np.random.default_rng(1)
    has = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    kd = np.where(has, rng.normal(0.01, 0.002, n), rng.normal(3.0, 0.5, n)).astype(np.float32)  # two scales
    calibration = Calibration({"objects": n, "tasks": {"kd": torch.from_numpy(kd)},
                               "kd_has_classes": torch.from_numpy(has)})
    typical_blob = ObjectScores(np.zeros(1, int), np.zeros((1, 4)), {"kd": np.array([-9.0], np.float32)},
                                np.array([False]), np.array([3.0], np.float32))  # raw_kd is read, not tasks["kd"]
    odd_box = ObjectScores(np.zeros(1, int), np.zeros((1, 4)), {"kd": np.array([0.03], np.float32)}, np.array([True]))
    assert calibration.object_scores(typical_blob)[0] < 0.9  # typical for a blob, though far above every box
    assert calibration.object_scores(odd_box)[0] > calibration.threshold  # far out for a box, though below blobs


def test_frame_scores_take_the_most_unusual_object_and_smooth_in_surprise():
    frame = np.array([0, 0, 2])
    np.testing.assert_allclose(calibrated_frame_scores(np.array([0.3, 0.8, 0.5]), frame, 4), [0.8, 0, 0.5, 0])
    config = ScoreConfig(gauss_taps=9, gauss_sigma=2.0)
    threshold = 0.99
    # one object just over the threshold among ordinary frames: no alert after smoothing
    ordinary = np.full(30, 0.6)
    blip = ordinary.copy()
    blip[15] = 0.995
    assert calibrated_frame_scores(blip, np.arange(30), 30, config).max() < threshold
    # the same object far beyond the normal range raises an alert on its own
    far = ordinary.copy()
    far[15] = 1 - 1e-12
    assert calibrated_frame_scores(far, np.arange(30), 30, config)[15] >= threshold
    # a sustained run of unusual objects does too, around its middle
    run = ordinary.copy()
    run[10:20] = 0.998
    smoothed = calibrated_frame_scores(run, np.arange(30), 30, config)
    assert smoothed[15] >= threshold and smoothed[0] < 0.9


def test_alert_segments_are_runs_with_their_peak_object():
    frame_scores = np.array([0.1, 0.995, 0.999, 0.2, 0.2, 0.996, 0.3])
    frame = np.array([1, 2, 2, 5, 6])
    boxes = np.arange(20, dtype=np.float32).reshape(5, 4)
    objects = np.array([0.99, 0.5, 0.9999, 0.997, 0.1])
    segments = alert_segments(frame_scores, 0.99, objects, frame, boxes)
    assert [(s["start"], s["end"], s["frames"]) for s in segments] == [(1, 2, 2), (5, 5, 1)]
    assert segments[0]["peak_object"] == {"frame": 2, "box": [8.0, 9.0, 10.0, 11.0], "score": 0.9999}
    assert segments[0]["peak_frame_score"] == 0.999 and segments[1]["peak_object"]["frame"] == 5
    assert alert_segments(np.zeros(5), 0.99, objects, frame, boxes) == []


def test_a_checkpoint_without_calibration_says_how_to_get_one(tmp_path):
    assert Calibration.from_state({"profile": {}}) is None
    with pytest.raises(SSMTLError, match="ssmtl calibrate --run") as error:
        checkpoint_calibration({"profile": {}}, tmp_path / "best.pt", ("aot",), log=lambda *_: None)
    assert "--per-video-minmax" in str(error.value)


# -- on synthetic data ---------------------------------------------------------------------------------------

# A quick model that separates the synthetic anomalies: 4 training clips of 100 frames ("small"), every second
# frame, fp32 on one thread so that the run is reproducible. See the margins printed by the test.
QUICK = {"sample.crop_size": 32, "train.batch_size": 16, "train.teacher_size": 64, "train.epochs": 6,
         "sample.train_frame_stride": 2, "train.num_threads": 1, "train.precision": "fp32", "train.seed": 0}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    from helpers import train_synthetic

    base = tmp_path_factory.mktemp("calibration")
    return base, train_synthetic(base, "small", QUICK)


def _score(base, clip, out, *flags):
    from ssmtl_core.cli import main

    assert main(["score-video", str(clip), "--checkpoint", str(base / "run" / "best.pt"), "--out", str(out),
                 "--device", "cpu", "--format", "gif", *flags]) == 0
    with open(out / "frame_scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    return json.loads((out / "summary.json").read_text()), np.array([float(r["score"]) for r in rows]), rows


@pytest.mark.slow
def test_normal_clip_has_no_alert_and_abnormal_clip_alerts_on_its_anomaly(quick_run, tmp_path):
    base, dataset = quick_run
    normal, abnormal = dataset.train[0], dataset.test[0]
    summary, normal_scores, _ = _score(base, normal.source.path, tmp_path / "normal")
    threshold = summary["calibration"]["threshold"]
    print(f"threshold {threshold:.4f}; normal clip peak {normal_scores.max():.4f}")
    assert summary["scores"] == "calibrated" and summary["alert_segments"] == []
    assert normal_scores.max() < threshold

    summary, scores, rows = _score(base, abnormal.source.path, tmp_path / "abnormal")
    segments = summary["alert_segments"]
    anomaly = np.flatnonzero(abnormal.labels)
    print(f"abnormal clip peak {scores.max():.4f}; anomaly frames {anomaly[0]}-{anomaly[-1]}; segments "
          f"{[(s['start'], s['end']) for s in segments]}")
    assert segments and any(s["start"] <= anomaly[-1] and s["end"] >= anomaly[0] for s in segments)
    peak = segments[0]["peak_object"]
    assert peak["score"] >= threshold and abnormal.labels[peak["frame"]]
    assert sum(int(r["alert_segment"]) > 0 for r in rows) == sum(s["frames"] for s in segments)
    with open(tmp_path / "abnormal" / "objects.csv") as handle:
        assert any(r["over_threshold"] == "1" for r in csv.DictReader(handle))

    # the paper's per-video min-max: the normal clip's most unusual object scores 1 all the same
    summary, _, rows = _score(base, normal.source.path, tmp_path / "minmax", "--per-video-minmax")
    assert summary["alert_segments"] is None and "alert_segment" not in rows[0]
    with open(tmp_path / "minmax" / "objects.csv") as handle:
        assert max(float(r["score"]) for r in csv.DictReader(handle)) == pytest.approx(1.0)


@pytest.mark.slow
def test_calibration_reads_every_detection_of_the_validation_frames_and_stores_the_alert_rule(quick_run):
    from ssmtl_core.checkpoint import load_checkpoint
    from ssmtl_core.config import load_profile
    from ssmtl_core.detect import detect_dataset

    base, dataset = quick_run
    stored = load_checkpoint(base / "run" / "best.pt")["calibration"]
    profile = load_profile("synthetic", overrides=QUICK)
    detections = detect_dataset(dataset, profile.detect, base / "cache", splits=("train",), progress=False,
                                log=lambda *_: None)
    clips = stored["clips"]
    assert clips["video"] == list(range(len(dataset.train)))  # every training video has a validation part
    clip, frame = stored["clip"].numpy(), stored["frame"].numpy()
    for k, (video, start, frames) in enumerate(zip(clips["video"], clips["start"], clips["frames"])):
        dets = detections.load(dataset.train[video])
        assert start + frames == dataset.train[video].num_frames and 0.05 < frames / start < 0.4
        # every detection from the first validation object's frame on, not the frame-stride sample
        np.testing.assert_array_equal(np.sort(frame[clip == k]), np.sort(dets.frame[dets.frame >= start]))
        assert (dets.frame[dets.frame >= start] % 2 == 1).any()  # odd frames, which training objects skip
    assert stored["objects"] == len(clip) == len(stored["tasks"]["aot"]) == len(stored["classes"])
    assert (stored["classes"].numpy() == -1).all() and not stored["kd_has_classes"].numpy().any()  # motion blobs
    alert = stored["alert"]
    assert alert["rate"] == ALERT_RATE and alert["min_frames"] == 4 and alert["normal_clips"] == len(dataset.train)
    assert alert["normal_frames"] == sum(clips["frames"]) == len(alert["normal_frame_scores"])
    assert "cross-fitted" in alert["source"] and 0 < alert["threshold"] < 1
    assert alert["normal_over"] == pytest.approx((alert["normal_frame_scores"].numpy() >= alert["threshold"]).mean())


@pytest.mark.slow
def test_old_checkpoint_is_calibrated_from_its_run_and_evaluate_reports_both(quick_run, tmp_path, capsys):
    from ssmtl_core.checkpoint import load_checkpoint
    from ssmtl_core.cli import main

    base, dataset = quick_run
    best = base / "run" / "best.pt"
    state = load_checkpoint(best)
    stored = state.pop("calibration")
    torch.save(state, best)  # as written before calibrated scores existed
    summary, _, _ = _score(base, dataset.test[0].source.path, tmp_path / "old")  # computed on the fly
    assert summary["alert_segments"] and "holds no calibration" in capsys.readouterr().err
    assert main(["calibrate", "--run", str(base / "run"), "--device", "cpu"]) == 0
    restored = load_checkpoint(best)["calibration"]
    for task, values in stored["tasks"].items():
        np.testing.assert_allclose(restored["tasks"][task].numpy(), values.numpy(), rtol=1e-4, atol=1e-6)

    # calibrated before frame-level alerts: the per-object threshold, with a message; `ssmtl calibrate` adds the rule
    state = load_checkpoint(best)
    alert = state["calibration"].pop("alert")
    torch.save(state, best)
    fallback, _, _ = _score(base, dataset.test[0].source.path, tmp_path / "no-alert")
    assert "predates frame-level alerts" in capsys.readouterr().err
    assert fallback["alert"]["min_frames"] == 1 and fallback["alert"]["source"].startswith("fallback")
    assert fallback["calibration"]["threshold"] == pytest.approx(fallback["calibration"]["object_threshold"], abs=1e-6)
    assert main(["calibrate", "--run", str(base / "run"), "--device", "cpu"]) == 0
    assert load_checkpoint(best)["calibration"]["alert"]["threshold"] == pytest.approx(alert["threshold"])

    assert main(["evaluate", "--run", str(base / "run"), "--device", "cpu"]) == 0
    metrics = json.loads((base / "run" / "metrics.json").read_text())
    alerts = metrics["alerts"]
    assert alerts["rule"]["threshold"] == pytest.approx(alert["threshold"], abs=1e-6)
    assert alerts["events"] >= len(dataset.test) - 1 and 0 <= alerts["events_alerted"] <= alerts["events"]
    assert len(alerts["delays"]) == alerts["events_alerted"] and "object_rule" in alerts
    calibrated = metrics["calibrated"]
    print(f"paper micro/macro {metrics['micro_auc']:.4f}/{metrics['macro_auc']:.4f}; calibrated "
          f"{calibrated['micro_auc']:.4f}/{calibrated['macro_auc']:.4f}")
    assert 0.5 < calibrated["micro_auc"] <= 1 and 0.5 < calibrated["macro_auc"] <= 1
    assert calibrated["threshold"] == pytest.approx(summary["calibration"]["threshold"], abs=1e-6)

"""Alerts (docs/method.md, "Alerts"): the threshold chosen on normal frames gives the false-alarm rate it states,
segments need a minimum length, the validation clips are read cross-fitted, and the counts reported from test
labels (events alerted, delays, normal frames alerted) on hand-made frame scores."""

import numpy as np
import pytest
import torch

from ssmtl_core.alerts import (
    AlertRule,
    alert_events,
    alert_runs,
    alert_segments,
    alerted_frames,
    choose_alert_rule,
    crossfit_frame_scores,
    fallback_rule,
    frame_threshold,
    label_events,
    min_alert_frames,
)
from ssmtl_core.calibration import Calibration
from ssmtl_core.config import ScoreConfig
from ssmtl_core.score import ObjectScores


def _scores(surprises):
    """Calibrated frame scores whose surprises -log(1 - p) are ``surprises``."""
    return -np.expm1(-np.asarray(surprises, np.float64))


def test_threshold_leaves_the_stated_share_of_new_normal_frames_over_it():
    rng = np.random.default_rng(0)
    # plenty of frames: the empirical quantile and the exponential tail agree on an exponential surprise
    many = rng.exponential(1.0, 200_000)
    assert (many >= -np.log1p(-frame_threshold(_scores(many), 0.01))).mean() == pytest.approx(0.01, rel=0.1)
    # a few hundred frames cannot show a 0.5% quantile: the tail extrapolates it, and new frames of the same kind
    # land over it at about the stated rate (not at the 1/400 that the largest of 400 frames would give)
    rates = []
    for seed in range(20):
        normal = np.random.default_rng(seed).exponential(1.0, 400) + 2.0
        threshold = frame_threshold(_scores(normal), 0.005)
        assert threshold > _scores(np.quantile(normal, 0.99))
        rates.append((_scores(many + 2.0) >= threshold).mean())
    assert 0.002 < np.median(rates) < 0.01
    # never below the empirical quantile: a heavier tail than exponential keeps its own high frames over
    heavy = np.r_[np.zeros(990), np.full(10, 30.0)]
    assert frame_threshold(_scores(heavy), 0.005) >= _scores(np.quantile(heavy, 0.995)) - 1e-12
    with pytest.raises(ValueError, match="no normal frames"):
        frame_threshold(np.zeros(0))


def test_segments_need_the_minimum_length_and_short_gaps_join():
    over = np.zeros(40, bool)
    over[2:4] = True  # 2 frames: too short
    over[10:15] = True  # 5 frames, a gap of 2, 3 more: one segment 10-19
    over[17:20] = True
    over[30:34] = True  # exactly 4
    assert alert_runs(over, 1) == [(2, 4), (10, 15), (17, 20), (30, 34)]
    assert alert_runs(over, 4) == [(10, 20), (30, 34)]
    assert alert_runs(over, 5) == [(10, 20)]
    assert alert_runs(np.zeros(5, bool), 3) == []
    scores = np.where(over, 0.999, 0.5)
    assert alerted_frames(scores, 0.99, 4).sum() == 14
    frame = np.array([3, 12, 18, 31])
    objects = np.array([0.9999, 0.995, 0.9995, 0.998])
    segments = alert_segments(scores, 0.99, objects, frame, np.zeros((4, 4)), min_frames=4)
    assert [(s["start"], s["end"], s["frames"]) for s in segments] == [(10, 19, 10), (30, 33, 4)]
    assert segments[0]["peak_object"]["frame"] == 18  # the segment's most unusual object, not the dropped run's


def test_min_frames_is_the_smoothing_sigma():
    assert min_alert_frames(ScoreConfig(gauss_taps=49, gauss_sigma=20.0)) == 20
    assert min_alert_frames(ScoreConfig(gauss_taps=25, gauss_sigma=4.0)) == 4
    assert min_alert_frames(ScoreConfig(gauss_taps=0)) == 1


def test_event_counts_delays_and_false_segments_on_hand_made_scores():
    labels = [np.r_[np.zeros(50), np.ones(30), np.zeros(20)], np.r_[np.zeros(100)], np.r_[np.ones(10), np.zeros(90)]]
    high = 0.9999
    first = np.full(100, 0.5)
    first[55:85] = high  # the event 50-79 alerted from frame 55: delay 5; frames 80-84 normal but alerted
    second = np.full(100, 0.5)
    second[20:30] = high  # a false segment on an all-normal video
    second[60:62] = high  # too short to be a segment, but 2 normal frames over the threshold
    third = np.full(100, 0.5)  # the event 0-9 missed
    rule = AlertRule(0.999, min_frames=4)
    counts = alert_events(labels, [first, second, third], rule, border=10)
    assert label_events(labels[0]) == [(50, 80)]
    assert counts["events"] == 2 and counts["events_alerted"] == 1 and counts["delays"] == [5]
    normal = 70 + 100 + 90
    assert counts["normal_frames"] == normal
    assert counts["normal_frames_over_threshold"] == pytest.approx((5 + 10 + 2) / normal)
    assert counts["normal_frames_alerted"] == pytest.approx((5 + 10) / normal)
    assert counts["false_segments"] == 1  # the segment overlapping the event is not false
    assert counts["false_segments_per_1000_normal_frames"] == pytest.approx(1000 / normal)
    assert counts["alerted_normal_frames_bordering_events"] == pytest.approx(5 / 15)  # 80-84 border the event


def _stored(clips, seed=0):
    """Validation scores of objects in ``clips`` (one list of per-object aot scores per clip), a frame each."""
    rng = np.random.default_rng(seed)
    aot = np.concatenate(clips).astype(np.float32)
    clip = np.concatenate([np.full(len(c), k) for k, c in enumerate(clips)])
    frame = np.concatenate([np.arange(len(c)) for c in clips])
    mid = rng.normal(0.05, 0.01, len(aot)).astype(np.float32)
    return {"objects": len(aot), "tasks": {"aot": torch.from_numpy(aot), "mid": torch.from_numpy(mid)},
            "kd_has_classes": torch.zeros(len(aot), dtype=torch.bool), "clip": torch.from_numpy(clip),
            "frame": torch.from_numpy(frame)}


def test_validation_clips_are_read_against_the_other_clips():
    rng = np.random.default_rng(0)
    ordinary = [rng.uniform(0.0, 0.2, 60) for _ in range(4)]
    odd = rng.uniform(0.3, 0.5, 60)  # a clip unlike the others
    stored = _stored([*ordinary, odd])
    clips = [{"start": 0, "frames": 60}] * 5
    config = ScoreConfig(gauss_taps=0)
    crossfit = crossfit_frame_scores(stored, clips, config)
    assert [len(c) for c in crossfit] == [60] * 5
    # in-sample, the odd clip's objects are part of "normal" and look less unusual than they are
    own = ObjectScores(np.arange(60), np.zeros((60, 4)), {t: np.asarray(v)[-60:] for t, v in stored["tasks"].items()})
    in_sample = Calibration(stored).object_scores(own)
    assert np.median(crossfit[-1]) > np.median(in_sample) and crossfit[-1].min() > 0.9
    assert np.median(np.concatenate(crossfit[:4])) < 0.9
    # the rule chosen on them keeps their share over the threshold near the rate asked
    rule = choose_alert_rule(crossfit, ScoreConfig(gauss_taps=25, gauss_sigma=4.0), rate=0.05)
    assert rule.min_frames == 4 and rule.normal_frames == 300 and rule.normal_clips == 5
    assert rule.normal_over <= 0.05 + 1e-9 and rule.normal_alerted <= rule.normal_over + 1e-9


def test_rule_round_trip_summary_and_fallback():
    rule = AlertRule(0.9991, 20, 0.005, "cross-fitted", 380, 16, 0.004, 0.003)
    assert AlertRule.from_state(rule.to_state()) == rule
    summary = rule.summary()
    assert summary["threshold"] == 0.9991 and summary["min_frames"] == 20 and summary["target_rate"] == 0.005
    assert "0.5% of normal frames" in summary["rule"] and summary["normal_frames"] == 380
    given = rule.given(0.95)
    assert given.threshold == 0.95 and given.min_frames == 20 and given.source == "given (--threshold)"
    calibration = Calibration(_stored([np.linspace(0, 0.2, 200)]))
    old = fallback_rule(calibration)
    assert old.threshold == calibration.threshold and old.min_frames == 1 and "ssmtl calibrate" in old.source


def test_a_left_out_training_video_is_neither_trained_on_nor_calibrated_on(tmp_path):
    """``sample.exclude_train_videos`` (bench/alerts.py's leave-one-video-out): the video's objects and validation
    frames are gone, the run's settings say so (a run folder with other exclusions never resumes it), and an
    unknown name is refused with the names there are."""
    from ssmtl_core.config import load_profile
    from ssmtl_core.data import open_dataset
    from ssmtl_core.data.synthetic import generate_synthetic
    from ssmtl_core.errors import SettingError, SSMTLError
    from ssmtl_core.train import resume_key
    from ssmtl_core.training_data import prepare_training_data

    dataset = open_dataset("synthetic", generate_synthetic(tmp_path / "data", "tiny", seed=0, progress=False))
    names = [v.name for v in dataset.train]
    base = {"train.tasks": "aot,irr", "sample.crop_size": 16}
    full = load_profile("synthetic", overrides=base)
    without = load_profile("synthetic", overrides=base | {"sample.exclude_train_videos": names[0]})
    assert without.sample.exclude_train_videos == (names[0],)
    quiet = {"progress": False, "log": lambda *_: None}
    everything = prepare_training_data(dataset, full, tmp_path / "cache", **quiet)
    left_out = prepare_training_data(dataset, without, tmp_path / "cache", **quiet)
    assert len(everything.frames) == len(names) and len(left_out.frames) == len(names) - 1
    np.testing.assert_array_equal(left_out.frames[0], everything.frames[1])  # the first video is gone
    assert set(left_out.objects.video) == {0} and len(left_out.validation_frames) == 1
    assert [p.start for p in left_out.validation_frames] == [everything.validation_frames[1].start]
    assert resume_key({"profile": full.to_dict()}) != resume_key({"profile": without.to_dict()})
    with pytest.raises(SSMTLError, match=f"training videos are {', '.join(names)}"):
        prepare_training_data(dataset, load_profile("synthetic", overrides={"sample.exclude_train_videos": "nope"}),
                              tmp_path / "cache", **quiet)
    with pytest.raises(SSMTLError, match="leaves no training video"):
        prepare_training_data(dataset, load_profile("synthetic", overrides={"sample.exclude_train_videos": names}),
                              tmp_path / "cache", **quiet)
    with pytest.raises(SettingError):
        load_profile("synthetic", overrides={"sample.exclude_train_videos": [1, 2]})

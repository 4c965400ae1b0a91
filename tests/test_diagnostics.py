"""The task diagnostics (ssmtl_core.diagnostics) behind notebook 01 and bench/aot_diagnostics.py."""

from types import SimpleNamespace

import numpy as np
import pytest

from ssmtl_core import viz
from ssmtl_core.diagnostics import frame_max_sources, mean_by_bin, motion_energy


def test_motion_energy_is_zero_for_a_still_clip_and_grows_with_motion():
    still = np.full((1, 7, 16, 16, 1), 100, np.uint8)
    moving = np.zeros((2, 7, 16, 16, 1), np.uint8)
    for t in range(7):
        moving[0, t, :, t:t + 4] = 200  # a bar stepping 1 px per frame
        moving[1, t, :, 2 * t:2 * t + 4] = 200  # twice as fast
    energy = motion_energy(np.concatenate([still, moving]))
    assert energy[0] == 0 and 0 < energy[1] < energy[2]


def test_mean_by_bin_averages_each_bin_and_leaves_empty_ones_empty():
    values, by = np.array([1.0, 3.0, 10.0, 20.0]), np.array([0.1, 0.2, 0.9, 0.95])
    assert mean_by_bin(values, by, np.array([0.0, 0.5, 0.8, 1.0])) == [2.0, None, 15.0]


def test_frame_max_sources_says_whether_an_abnormal_object_holds_the_frame_max():
    dataset = SimpleNamespace(test=[SimpleNamespace(labels=np.array([0, 1, 1]), num_frames=3)])
    video = np.zeros(5, int)
    frame = np.array([0, 1, 1, 2, 2])
    values = np.array([0.9, 0.3, 0.8, 0.7, 0.2])
    abnormal = np.array([False, False, True, False, True])
    sources = frame_max_sources(dataset, video, frame, values, abnormal)
    assert sources["abnormal_object_sets_the_max"] == pytest.approx(0.5)  # frame 1 yes, frame 2 no
    assert sources["normal_objects_max_in_normal_frames"] == pytest.approx(0.9)
    assert sources["normal_objects_max_in_abnormal_frames"] == pytest.approx(0.5)
    assert sources["abnormal_objects_max_in_abnormal_frames"] == pytest.approx(0.5)


def test_score_by_motion_draws_one_line_per_detection_kind():
    rng = np.random.default_rng(0)
    motion = rng.uniform(0, 20, 300)
    scores = np.clip(0.8 - motion / 25 + rng.normal(0, 0.05, 300), 0, 1)
    blob = np.arange(300) < 60
    fig = viz.plot_score_by_motion(scores, motion, blob, "P(backward)")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    coco_means = lines[0].get_ydata()
    assert coco_means[0] > coco_means[-1], "the mean falls with motion, as the scores do"
    assert len(viz.plot_score_by_motion(scores, motion, None, "P(backward)").axes[0].get_lines()) == 1

"""Object scores to frame scores and maps (docs/method.md, "Scoring", "From objects to frames"), and the scorer's two backends."""

import numpy as np
import pytest
import torch

from ssmtl_core.config import SampleConfig, ScoreConfig
from ssmtl_core.detections import Detections
from ssmtl_core.model import SSMTLModel
from ssmtl_core.score import (
    ObjectScores,
    Scorer,
    anomaly_map,
    combine_tasks,
    frame_scores_from_grid,
    gaussian_kernel,
    minmax,
    region_scores,
    score_grid,
    task_subsets,
    temporal_smoothing,
)

NO_SMOOTHING = ScoreConfig(block=1, mean_filter=0, gauss_taps=0)


def test_minmax_and_constant_input():
    np.testing.assert_allclose(minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(minmax(np.array([5.0, 5.0])), [0.0, 0.0])


def test_combine_normalises_each_task_then_the_sum():
    # task a spans 0..100, task b spans 0..1: without the first normalisation a would dominate
    scores = ObjectScores(np.zeros(3, int), np.zeros((3, 4)), {"aot": np.array([0.0, 100.0, 50.0]),
                                                             "irr": np.array([1.0, 0.0, 1.0])})
    # normalised: a = [0, 1, .5], b = [1, 0, 1]; sum = [1, 1, 1.5] -> [0, 0, 1]
    np.testing.assert_allclose(combine_tasks(scores, ("aot", "irr"), True), [0.0, 0.0, 1.0])
    # Avenue mode (no first normalisation): sum = [1, 100, 51] -> [0, 1, 50/99]
    np.testing.assert_allclose(combine_tasks(scores, ("aot", "irr"), False), [0.0, 1.0, 50 / 99], rtol=1e-6)
    np.testing.assert_allclose(combine_tasks(scores, ("irr",), True), [1.0, 0.0, 1.0])


def test_task_subsets_is_the_full_ablation():
    subsets = task_subsets(("aot", "irr", "mid", "kd"))
    assert len(subsets) == 15 and subsets[0] == ("aot",) and subsets[-1] == ("aot", "irr", "mid", "kd")


def test_grid_paints_the_max_and_leaves_empty_frames_at_zero():
    boxes = np.array([[0, 0, 4, 4], [2, 2, 6, 6], [0, 0, 2, 2]], np.float32)
    grid = score_grid(np.array([0.3, 0.8, 0.5]), np.array([0, 0, 2]), boxes, 4, (8, 8), NO_SMOOTHING)
    assert grid.shape == (4, 8, 8)
    assert grid[0, 1, 1] == pytest.approx(0.3) and grid[0, 3, 3] == pytest.approx(0.8)  # overlap keeps the max
    assert grid[0, 7, 7] == 0 and grid[1].max() == 0 and grid[3].max() == 0
    np.testing.assert_allclose(frame_scores_from_grid(grid, NO_SMOOTHING), [0.8, 0.0, 0.5, 0.0])


def test_grid_blocks_cover_the_box():
    config = ScoreConfig(block=4, mean_filter=0, gauss_taps=0)
    grid = score_grid(np.array([1.0]), np.array([0]), np.array([[5, 1, 9, 3]], np.float32), 1, (10, 13), config)
    assert grid.shape == (1, 3, 4)  # ceil(10/4), ceil(13/4)
    np.testing.assert_array_equal(np.argwhere(grid[0] > 0), [[0, 1], [0, 2]])  # columns 5..9 -> cells 1..2
    heat = anomaly_map(grid, 0, (10, 13), 4)
    assert heat.shape == (10, 13) and heat[0, 4] == 1.0 and heat[0, 3] == 0.0


def test_mean_filter_spreads_and_keeps_the_range():
    config = ScoreConfig(block=1, mean_filter=3, gauss_taps=0)
    grid = score_grid(np.array([1.0]), np.array([1]), np.array([[2, 2, 3, 3]], np.float32), 3, (5, 5), config)
    assert grid.max() == pytest.approx(1 / 27) and grid[0, 2, 2] > 0 and grid[1, 0, 0] == 0


def test_gaussian_smoothing_repeats_the_edges():
    kernel = gaussian_kernel(49, 20.0)
    assert kernel.sum() == pytest.approx(1.0) and kernel.argmax() == 24
    constant = np.full(30, 0.7)
    np.testing.assert_allclose(temporal_smoothing(constant, ScoreConfig(gauss_taps=49, gauss_sigma=20)), 0.7, rtol=1e-6)
    step = np.r_[np.zeros(50), np.ones(50)]
    smooth = temporal_smoothing(step, ScoreConfig(gauss_taps=21, gauss_sigma=3))
    assert smooth[0] == pytest.approx(0.0) and smooth[-1] == pytest.approx(1.0)  # edges padded, not zero
    assert 0 < smooth[49] < 1 and np.all(np.diff(smooth) >= -1e-9)


def test_region_scores_read_the_grid_inside_each_box():
    grid = np.zeros((1, 4, 4), np.float32)
    grid[0, 0, 0] = 0.9
    scores = region_scores(grid, np.array([0, 0]), np.array([[0, 0, 2, 2], [2, 2, 4, 4]], np.float32), NO_SMOOTHING)
    np.testing.assert_allclose(scores, [0.9, 0.0])


@pytest.fixture(scope="module")
def scorer_inputs():
    torch.manual_seed(0)
    model = SSMTLModel("shallow_narrow", kd_dim=1080, crop_size=32).eval()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (12, 40, 48, 1), dtype=np.uint8)
    detections = Detections(np.array([0, 5, 11], np.int32), np.array([[1, 1, 20, 30], [10, 5, 40, 35], [0, 0, 48, 40]],
                                                                      np.float32),
                            np.ones(3, np.float32), np.array([0, 1, 2], np.int16),
                            rng.random((3, 80)).astype(np.float16))
    return model, frames, detections


def test_torch_and_openvino_scorers_agree(scorer_inputs, monkeypatch):
    model, frames, detections = scorer_inputs
    sample = SampleConfig(crop_size=32)
    layout = {"logits": 1000, "class_scores": 80}
    monkeypatch.setenv("SSMTL_NO_OPENVINO", "1")
    reference = Scorer(model, sample, layout, "cpu")
    assert reference.backend == "torch-cpu"
    expected = reference.score_objects(frames, detections)
    monkeypatch.delenv("SSMTL_NO_OPENVINO")
    fast = Scorer(model, sample, layout, "cpu", compile=True, precision="fp32")
    if not fast.backend.startswith("openvino"):
        pytest.skip("OpenVINO is not installed")
    assert fast.backend == "openvino-fp32"
    got = fast.score_objects(frames, detections)
    assert set(got.tasks) == {"aot", "irr", "mid", "kd"}
    for task in got.tasks:
        np.testing.assert_allclose(got.tasks[task], expected.tasks[task], atol=1e-4, err_msg=task)


def test_distillation_score_uses_detector_classes_or_teacher_logits(scorer_inputs, monkeypatch):
    model, frames, detections = scorer_inputs
    monkeypatch.setenv("SSMTL_NO_OPENVINO", "1")
    scorer = Scorer(model, SampleConfig(crop_size=32), {"logits": 1000, "class_scores": 80}, "cpu")
    prediction = np.zeros((3, 1080), np.float32)
    classes = np.full((3, 80), 0.5, np.float16)
    every = np.ones(3, bool)
    np.testing.assert_allclose(scorer.distillation_discrepancy(prediction, classes, every, None), 0.5)
    logits = np.full((3, 1000), 2.0, np.float32)
    # class-agnostic objects (the blobs of a hybrid detector) compare with the teacher's logits instead
    mixed = np.array([True, False, True])
    np.testing.assert_allclose(scorer.distillation_discrepancy(prediction, classes, mixed, logits), [0.5, 2.0, 0.5])
    assert scorer.distillation_discrepancy(prediction, classes, mixed, None) is None
    # a class-agnostic detector: every object compares with the teacher's logits
    scorer.kd_layout = {"logits": 1000, "class_scores": 0}
    none = np.zeros(3, bool)
    np.testing.assert_allclose(scorer.distillation_discrepancy(prediction[:, :1000], np.zeros((3, 0)), none, logits),
                               2.0)
    assert scorer.distillation_discrepancy(prediction[:, :1000], np.zeros((3, 0)), none, None) is None


def test_no_distillation_score_when_some_object_lacks_its_teacher_logits(scorer_inputs, monkeypatch):
    # A blob of a hybrid detector needs the teacher's logits; without them the video gets no distillation
    # score at all (never one computed for some objects only, misaligned with the others).
    model, frames, detections = scorer_inputs
    monkeypatch.setenv("SSMTL_NO_OPENVINO", "1")
    scorer = Scorer(model, SampleConfig(crop_size=32), {"logits": 1000, "class_scores": 80}, "cpu", chunk=2)
    mixed = detections.select(np.ones(len(detections), bool))
    mixed.classes[0] = -1  # the first object (of the first chunk of two) is a class-agnostic blob
    assert len(mixed) > 2, "other chunks have only objects with class scores"
    scores = scorer.score_objects(frames, mixed)
    assert "kd" not in scores.tasks and set(scores.tasks) == {"aot", "irr", "mid"}
    with_logits = scorer.score_objects(frames, mixed, np.zeros((len(mixed), 1000), np.float32))
    assert len(with_logits.tasks["kd"]) == len(mixed)

"""Tests of ssmtl_core.viz: pixel checks of the frame drawings, figure structure of the plots, video files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from ssmtl_core import viz  # noqa: E402

RNG = np.random.default_rng(0)


def _frame(h: int = 120, w: int = 160, value: int | None = None) -> np.ndarray:
    if value is not None:
        return np.full((h, w, 3), value, np.uint8)
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _labels(n: int = 60) -> np.ndarray:
    labels = np.zeros(n, np.uint8)
    labels[20:35] = 1
    return labels


def _saves(fig: Figure, tmp_path, name: str) -> None:
    out = tmp_path / f"{name}.png"
    fig.savefig(out, dpi=60)
    assert out.stat().st_size > 1000
    assert Image.open(out).size[0] > 100
    plt.close(fig)


def _rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


# ----------------------------------------------------------------------------------------------------------
# label_intervals and colours
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([], []),
        ([0, 0, 0], []),
        ([1, 1, 1], [(0, 3)]),
        ([1, 0, 0, 1], [(0, 1), (3, 4)]),
        ([0, 1, 1, 0, 1, 0], [(1, 3), (4, 5)]),
        ([1, 1, 0, 0, 1, 1, 1], [(0, 2), (4, 7)]),
    ],
)
def test_label_intervals(labels, expected):
    assert viz.label_intervals(np.array(labels, np.uint8)) == expected


def test_task_colours_and_names_cover_every_task():
    for key in ("aot", "irr", "mid", "kd", "all"):
        assert key in viz.TASK_COLORS and key in viz.TASK_NAMES
    assert len(set(viz.TASK_COLORS.values())) == 5
    assert viz.TASK_NAMES["aot"] == "arrow of time" and viz.TASK_NAMES["kd"] == "distillation"


# ----------------------------------------------------------------------------------------------------------
# frame drawings
# ----------------------------------------------------------------------------------------------------------


def test_draw_boxes_changes_outline_only_and_colours_by_score():
    frame = _frame(value=128)
    boxes = np.array([[10, 10, 50, 60], [90, 20, 150, 100]], float)
    out = viz.draw_boxes(frame, boxes, scores=np.array([0.05, 0.95]))
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(frame, _frame(value=128)), "input must not be modified"
    low, high = out[10, 30], out[20, 120]  # points on the top edges
    assert not np.array_equal(low, frame[10, 30]) and not np.array_equal(high, frame[20, 120])
    assert not np.array_equal(low, high), "low and high scores must get different colours"
    assert np.array_equal(out[35, 30], frame[35, 30]), "box interior stays untouched"
    assert np.array_equal(out[110, 5], frame[110, 5]) and np.array_equal(out[5, 80], frame[5, 80])
    changed = np.any(out != frame, axis=2)
    assert changed.sum() < 0.12 * changed.size
    # no scores: one fixed colour
    plain = viz.draw_boxes(frame, boxes)
    assert np.array_equal(plain[10, 30], plain[20, 120])


def test_draw_boxes_labels_large_frame_and_empty():
    frame = _frame(480, 640, value=0)
    boxes = np.array([[100, 100, 300, 300]], float)
    without = viz.draw_boxes(frame, boxes, np.array([0.5]), thickness=3)
    with_text = viz.draw_boxes(frame, boxes, np.array([0.5]), labels=["0.50"], thickness=3)
    assert np.any(with_text[80:100, 100:200] != without[80:100, 100:200]), "label tab above the box"
    assert np.any(without[100:103, 200] != 0)  # thick edge
    assert np.array_equal(viz.draw_boxes(frame, np.zeros((0, 4))), frame)
    with pytest.raises(ValueError):
        viz.draw_boxes(frame, boxes, scores=np.array([0.1, 0.2]))


def test_overlay_heatmap_transparent_at_zero_tinted_at_one():
    frame = _frame()
    heat = np.zeros(frame.shape[:2], np.float32)
    heat[40:80, 60:100] = 1.0
    heat[0:10, 0:10] = 0.001
    out = viz.overlay_heatmap(frame, heat, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(out[100:, :], frame[100:, :])
    assert np.abs(out[:10, :10].astype(int) - frame[:10, :10]).max() <= 10, "tiny heat is nearly transparent"
    assert np.abs(out[40:80, 60:100].astype(int) - frame[40:80, 60:100]).mean() > 20
    # a coarse grid is upscaled to the frame
    coarse = np.zeros((6, 8), np.float32)
    coarse[0, 0] = 1.0
    out = viz.overlay_heatmap(frame, coarse)
    assert np.any(out[:20, :20] != frame[:20, :20]) and np.array_equal(out[20:, 20:], frame[20:, 20:])


# ----------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------


def test_plot_score_curve(tmp_path):
    labels = _labels()
    scores = np.clip(0.2 + 0.6 * labels + 0.05 * RNG.standard_normal(60), 0, 1)
    tasks = {t: np.clip(scores + 0.1 * RNG.standard_normal(60), 0, 1) for t in ("aot", "irr", "mid", "kd")}
    fig = viz.plot_score_curve(scores, labels=labels, task_curves=tasks, title="video 01")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.lines) == 5
    assert len(ax.patches) == 1  # one shaded ground-truth interval
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("all tasks (AUC 100.0%)" in t for t in texts)
    _saves(fig, tmp_path, "score")
    # no labels: no AUC, no shading; drawing into a given axes returns its figure
    fig2, ax2 = plt.subplots()
    assert viz.plot_score_curve(scores, ax=ax2) is fig2
    assert len(ax2.patches) == 0 and "AUC" not in ax2.get_legend().get_texts()[0].get_text()
    plt.close(fig2)


def test_plot_roc(tmp_path):
    labels = _labels()
    scores = {"aot": RNG.random(60), "all": labels * 0.5 + 0.5 * RNG.random(60)}
    fig = viz.plot_roc(labels, scores)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 3
    assert fig.axes[0].lines[2].get_color() == viz.TASK_COLORS["all"]
    _saves(fig, tmp_path, "roc")
    with pytest.raises(ValueError):
        viz.plot_roc(np.zeros(5), {"all": np.zeros(5)})


def test_plot_sequence_strip_aligns_rows(tmp_path):
    seq = RNG.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    rows = {"consecutive": seq, "middle-box input": np.delete(seq, 3, axis=0),
            "target": seq[3], "grey": RNG.integers(0, 256, (7, 16, 16, 1), dtype=np.uint8)}
    fig = viz.plot_sequence_strip(rows, offsets={"grey": [-9, -6, -3, 0, 2, 4, 7]}, title="samples")
    crops = [ax for ax in fig.axes if ax.images]
    assert len(crops) == 7 + 6 + 1 + 7
    assert [ax.texts[0].get_text() for ax in fig.axes if ax.get_label() == "row name"] == list(rows)
    captions = [ax.get_xlabel() for ax in crops]
    assert captions[:7] == ["i-3", "i-2", "i-1", "i", "i+1", "i+2", "i+3"]
    assert "i" not in captions[7:13] and captions[13] == "i" and captions[14] == "i-9"
    assert crops[3].get_subplotspec().colspan.start == 4
    assert crops[13].get_subplotspec().colspan.start == 4, "a single target crop sits in the centre column"
    assert crops[10].get_subplotspec().colspan.start == 5, "the middle-box input skips the centre column"
    _saves(fig, tmp_path, "strip")
    with pytest.raises(ValueError):
        viz.plot_sequence_strip({"x": seq}, offsets={"x": [0, 1]})


def test_plot_crop_gallery(tmp_path):
    crops = [RNG.integers(0, 256, (16, 16, 3 if k % 2 else 1), dtype=np.uint8) for k in range(11)]
    fig = viz.plot_crop_gallery(crops, [f"{s:.2f}" for s in np.linspace(1, 0, 11)], title="top", columns=4)
    assert len(fig.axes) == 11
    assert fig.axes[4].get_subplotspec().rowspan.start == 1
    _saves(fig, tmp_path, "gallery")


def test_plot_detections(tmp_path):
    dets = {"yolo": np.array([[10, 10, 40, 60, 0.9]]),
            "motion": np.array([[5, 5, 30, 30], [60, 60, 90, 100]])}
    fig = viz.plot_detections(_frame(), dets)
    assert len(fig.axes) == 2
    assert [len(_rectangles(ax)) for ax in fig.axes] == [1, 2]
    assert fig.axes[1].get_title(loc="left") == "motion: 2 objects"
    colors = {tuple(_rectangles(ax)[0].get_edgecolor()) for ax in fig.axes}
    assert len(colors) == 2
    _saves(fig, tmp_path, "detections")


def test_plot_history(tmp_path):
    history = []
    for epoch in range(1, 9):
        row = {"epoch": epoch, "best": epoch in (1, 2, 5)}
        for task in ("aot", "irr", "mid", "kd", "total"):
            row[f"train_{task}"] = 1.0 / epoch
            row[f"val_{task}"] = 1.0 / epoch + 0.01 * (epoch - 5) ** 2
        history.append(row)
    fig = viz.plot_history(history, title="training")
    assert len(fig.axes) == 5
    for ax in fig.axes:
        assert len(ax.lines) == 4  # train, validation, best-epoch line, best-epoch star
        assert ax.lines[2].get_xdata()[0] == 5
    _saves(fig, tmp_path, "history")
    # only two tasks, no validation, no best flags
    fig = viz.plot_history([{"epoch": e, "train_mid": 1 / e, "train_total": 2 / e} for e in (1, 2, 3)])
    assert len(fig.axes) == 2 and all(len(ax.lines) == 1 for ax in fig.axes)
    _saves(fig, tmp_path, "history_small")


def test_plot_results_table(tmp_path):
    rows = [{"name": "shallow_narrow", "micro_auc": 0.93, "paper_micro_auc": 0.921, "macro_auc": 0.99,
             "rbdc": None, "paper_rbdc": 72.8},
            {"name": "deep_wide", "micro_auc": 0.95, "paper_micro_auc": 0.975, "macro_auc": None}]
    fig = viz.plot_results_table(rows, ["micro_auc", "macro_auc", "rbdc"], title="Ped2")
    ax = fig.axes[0]
    assert len(fig.axes) == 1
    assert len(ax.patches) == 3  # three values of ours present
    assert len(ax.lines) == 3  # three paper values
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [93.0, 95.0, 99.0]
    assert sorted(round(line.get_ydata()[0], 3) for line in ax.lines) == [72.8, 92.1, 97.5]
    _saves(fig, tmp_path, "results")


# ----------------------------------------------------------------------------------------------------------
# annotated video
# ----------------------------------------------------------------------------------------------------------


def _video_inputs(n: int = 30):
    boxes = [np.array([[10 + k, 20, 40 + k, 70]], float) for k in range(n)]
    scores = [np.array([k / (n - 1)]) for k in range(n)]
    frame_scores = np.linspace(0, 1, n)
    return boxes, scores, frame_scores


def test_write_annotated_video_mp4_from_generator(tmp_path):
    boxes, scores, frame_scores = _video_inputs()
    frames = (_frame() for _ in range(30))
    written = viz.write_annotated_video(frames, boxes, scores, frame_scores, tmp_path / "out.mp4", fps=10,
                                        labels=(frame_scores > 0.5).astype(np.uint8), threshold=0.7,
                                        heat_per_frame=(np.zeros((120, 160)) for _ in range(30)))
    assert written.exists() and written.suffix in (".mp4", ".avi")
    cap = cv2.VideoCapture(str(written))
    count, size = 0, None
    while True:
        ok, image = cap.read()
        if not ok:
            break
        count, size = count + 1, image.shape
    cap.release()
    assert count == 30
    assert size[1] == 320 and size[0] > 240, "160-wide frames are upscaled 2x and get a score strip below"


def test_write_annotated_video_gif_subsamples(tmp_path):
    boxes, scores, frame_scores = _video_inputs(30)
    frames = [_frame(240, 960) for _ in range(30)]
    written = viz.write_annotated_video(iter(frames), boxes, scores, frame_scores, tmp_path / "out.gif",
                                        max_gif_frames=10)
    assert written == tmp_path / "out.gif"
    with Image.open(written) as gif:
        assert gif.n_frames == 10
        assert gif.size[0] == 480
    with pytest.raises(ValueError):
        viz.write_annotated_video([], [], [], np.zeros(0), tmp_path / "empty.mp4")
    with pytest.raises(ValueError):
        viz.write_annotated_video(frames, boxes, scores, frame_scores, tmp_path / "out.mov")


def test_plot_score_curves_grid():
    """One axes per video, the combined curve and each task alone in each, spare cells blank."""
    tasks = ("aot", "mid")
    rng = np.random.default_rng(1)
    curves = {name: [rng.random(40) for _ in range(4)] for name in ("aot", "mid", "aot+mid")}
    labels = [_labels(40), None, _labels(40), _labels(40)]
    fig = viz.plot_score_curves(curves, labels, ["01", "02", "03", "04"], tasks, columns=3)
    axes = fig.axes
    assert len(axes) == 6 and [ax.axison for ax in axes] == [True] * 4 + [False] * 2
    assert [ax.get_title(loc="left") for ax in axes[:4]] == ["test 01", "test 02", "test 03", "test 04"]
    assert len(axes[1].lines) == 3, "two tasks alone and the combined curve"
    np.testing.assert_allclose(axes[3].lines[-1].get_ydata(), curves["aot+mid"][3])

"""The result viewer on tiny data: what it draws (pixel checks), both sources, and the widget's wiring."""

from __future__ import annotations

import csv
import json

import cv2
import matplotlib
import numpy as np
import pytest

from ssmtl_core import viewer, viz
from ssmtl_core.config import ScoreConfig
from ssmtl_core.errors import SSMTLError
from ssmtl_core.score import ObjectScores, score_video

H, W, T = 60, 80, 12
CONFIG = ScoreConfig(block=4, mean_filter=3, gauss_taps=5, gauss_sigma=1.0)


class TinyVideo:
    """Grey frames with a pixel mask on frames 4-7 (where the abnormal object is)."""

    name = "07"
    num_frames = T
    frame_size = (H, W)
    labels = np.array([0] * 4 + [1] * 4 + [0] * 4, np.uint8)

    def frame(self, index):
        return np.full((H, W, 3), 90, np.uint8)

    def pixel_masks(self):
        masks = np.zeros((T, H, W), bool)
        masks[4:8, 30:50, 40:60] = True
        return masks


def _objects() -> ObjectScores:
    """Two objects in every frame: a normal one on the left, an abnormal one on the right (frames 4-7 only)."""
    frame = np.repeat(np.arange(T), 2)
    boxes = np.tile([[5, 10, 25, 40], [40, 30, 60, 50]], (T, 1)).astype(float)
    abnormal = np.tile([0.0, 1.0], T) * np.repeat(TinyVideo.labels, 2)
    rng = np.random.default_rng(0)
    tasks = {t: 0.1 * rng.random(2 * T) + abnormal * weight for t, weight in (("aot", 0.2), ("mid", 1.0))}
    return ObjectScores(frame, boxes, tasks)


def _turbo(score: float) -> np.ndarray:
    return np.round(np.array(matplotlib.colormaps["turbo"](score)[:3]) * 255)


@pytest.fixture
def scored():
    return viewer.from_object_scores([TinyVideo()], [_objects()], CONFIG, ("aot", "mid"))[0]


def test_run_source_scores_as_the_frame_auc_does(scored):
    expected = score_video(_objects(), ("aot", "mid"), T, (H, W), CONFIG)
    np.testing.assert_allclose(scored.frame_scores, expected.frame_scores)
    np.testing.assert_allclose(scored.scores, expected.object_scores)
    assert set(scored.tasks) == {"aot", "mid"} and all(v.max() <= 1 for v in scored.tasks.values())
    assert 4 <= scored.peak_frame() <= 7
    rows = scored.objects_in(5)
    assert len(rows) == 2 and scored.scores[rows[0]] >= scored.scores[rows[1]] and scored.boxes[rows[0], 0] == 40


def test_top_object_is_drawn_in_the_hot_colour(scored):
    hottest = int(scored.frame[np.argmax(scored.scores)])
    rows = scored.objects_in(hottest)
    panel = viewer.frame_panel(scored, hottest, width=W)  # at the frame's own size: box pixels are box coordinates
    top, low = rows
    x1, y1, x2, y2 = scored.boxes[top].astype(int)
    edge = panel[(y1 + y2) // 2, x1].astype(float)
    assert scored.scores[top] == 1.0 and scored.scores[low] < 0.2
    np.testing.assert_allclose(edge, _turbo(scored.scores[top]), atol=2)  # dark red
    lx1, ly1, lx2, ly2 = scored.boxes[low].astype(int)
    np.testing.assert_allclose(panel[(ly1 + ly2) // 2, lx1].astype(float), _turbo(scored.scores[low]), atol=2)
    assert (panel[y1 - 2, (x1 + x2) // 2] == 255).all(), "the selected (top) object has a white outline"
    assert (panel[40, 50] != 90).any(), "the anomaly map tints the hot object's cells"
    assert (panel[55, 2] == 90).all(), "no object there: the frame is untouched"


def test_render_has_truth_tasks_and_a_cursor(scored):
    picture = viewer.render(scored, 5, width=2 * W)
    frame_h = 2 * H
    assert picture.shape[1] == 2 * (2 * W) + viewer.TASK_PANEL_WIDTH + 2 * viewer.GAP, "frame, truth, task bars"
    left = 2 * W + viewer.GAP
    truth = picture[viewer.HEADER:viewer.HEADER + frame_h, left:left + 2 * W]
    red = (truth == np.array(viewer._rgb(viz.GT_COLOR))).all(axis=2)
    assert red[:, 75:85].any() and red[60:80].any(), "the mask outline (x 80-120, y 60-100 at 2x) is drawn"
    assert not red[:, :70].any()
    strip = picture[viewer.HEADER + frame_h:]
    cursor = (strip == np.array([0, 114, 178])).all(axis=2).any(axis=0)
    assert cursor.any(), "the frame-score curve has its cursor"
    before = viewer.render(scored, 1, width=2 * W)
    assert not np.array_equal(before, picture)
    # picking the lower object draws its task bars (and moves the white outline to it)
    low = scored.objects_in(5)[1]
    other = viewer.render(scored, 5, selected=int(low), width=2 * W)
    bars = left + 2 * W + viewer.GAP
    assert not np.array_equal(other[:, bars:], picture[:, bars:]), "its task bars are drawn"
    png = viewer.to_png(picture)
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape[:2] == picture.shape[:2]


def test_score_video_folder(tmp_path):
    frames = tmp_path / "clip"
    frames.mkdir()
    for f in range(T):
        cv2.imwrite(str(frames / f"{f:03d}.jpg"), np.full((H, W, 3), 90, np.uint8))
    out = tmp_path / "scored"
    out.mkdir()
    objects = _objects()
    scores = np.clip(objects.tasks["mid"], 0, 1)
    with open(out / "objects.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "x1", "y1", "x2", "y2", "score", "over_threshold", "alert_segment", "sum_raw", "aot",
                         "mid"])
        for i in range(len(objects.frame)):
            writer.writerow([objects.frame[i], *objects.boxes[i], scores[i], 0, 0, 0, objects.tasks["aot"][i],
                             objects.tasks["mid"][i]])
    with open(out / "frame_scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "score", "alert_segment"])
        writer.writerows([f, TinyVideo.labels[f] * 0.99, 0] for f in range(T))
    summary = {"video": str(frames), "frames": T, "frame_size": [H, W], "tasks": ["aot", "mid"],
               "score_settings": vars(CONFIG), "calibration": {"threshold": 0.95}}
    (out / "summary.json").write_text(json.dumps(summary))
    scored = viewer.from_score_video(out)
    assert scored.num_frames == T and scored.threshold == 0.95 and scored.kind == "calibrated"
    assert scored.labels is None
    picture = viewer.render(scored, 5, width=W)
    assert picture.shape[1] == W + viewer.GAP + viewer.TASK_PANEL_WIDTH, "no ground truth: no truth panel"
    (out / "summary.json").write_text(json.dumps(summary | {"video": str(tmp_path / "gone.mp4")}))
    with pytest.raises(SSMTLError, match="video=..."):
        viewer.from_score_video(out)
    assert viewer.from_score_video(out, video=frames).num_frames == T
    with pytest.raises(SSMTLError, match="score-video"):
        viewer.from_score_video(tmp_path)


def test_widget_follows_the_controls(scored):
    second = viewer.from_object_scores([TinyVideo()], [_objects()], CONFIG, ("aot",))[0]
    second.name = "08"
    box = viewer.explore([scored, second], width=W)
    (video_pick, object_pick, _peak), (play, frame), image = (box.children[0].children, box.children[1].children,
                                                               box.children[2])
    assert frame.value == play.value == scored.peak_frame() and image.value, "the player starts where the slider does"
    assert object_pick.value == int(scored.objects_in(frame.value)[0]), "the top object by default"
    first = image.value
    frame.value = 1
    assert image.value != first and [v for _, v in object_pick.options] == list(scored.objects_in(1))
    shown = image.value
    object_pick.value = object_pick.options[1][1]
    assert image.value != shown
    video_pick.value = 1
    assert frame.value == second.peak_frame()

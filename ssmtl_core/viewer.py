"""Explore a result frame by frame: a video's scored objects, its anomaly map, its frame scores and the truth.

The frame scores and the galleries of notebook 08 summarise a test set; this viewer shows one video the way the
paper's method sees it (``docs/method.md``, "Scoring" and "From objects to frames"): every detected object's box
in the colour of its anomaly score, the grid those scores are painted into (the pixel-level anomaly map) over
the frame, the frame-score curve with a cursor at the current frame, the ground truth beside it (the frame label
and the outline of the pixel mask, where the dataset has them), and the per-task scores of one object, the top
one by default, which say which proxy task found it unusual.

Two sources, one :class:`ScoredVideo`:

* :func:`from_object_scores` - a trained run's object scores on a dataset's test videos (notebook 08), combined
  per video exactly as :func:`ssmtl_core.score.score_video` combines them for the frame AUC;
* :func:`from_score_video` - the output folder of ``ssmtl score-video`` on a video of your own
  (``summary.json``, ``frame_scores.csv``, ``objects.csv`` and the video they name; no ground truth).

Drawing (:func:`render`) is OpenCV on arrays, a few milliseconds a frame, so that :func:`explore`, the
ipywidgets layer for JupyterLab, stays responsive while it scrubs through a video.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import ipywidgets as widgets
import numpy as np

from . import viz
from .apply import open_video
from .config import TASKS, ScoreConfig
from .errors import SSMTLError
from .io import read_json
from .score import ObjectScores, anomaly_map, combine_tasks, frame_scores_from_grid, minmax, score_grid

HOT_CMAP = "turbo"  # object boxes, as in the annotated videos: blue (normal) to dark red (anomalous)
HEADER = 18  # pixels of the caption bar above each panel
TASK_PANEL_WIDTH = 220
GAP = 6  # pixels between panels
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(eq=False)
class ScoredVideo:
    """One video's scored objects and frame scores, ready to draw.

    Attributes:
        name: the video's name.
        video: its frames: anything with ``frame(i)``, ``num_frames``, ``frame_size`` and ``pixel_masks()``
            (a dataset's :class:`~ssmtl_core.data.layouts.Video`, or one opened from a file).
        frame: (N,) the frame of each object.
        boxes: (N, 4) its box, ``x1, y1, x2, y2`` in pixels.
        scores: (N,) its anomaly score in [0, 1] (the colour of its box).
        tasks: task -> (N,) each task's score, min-max normalised over the video (the parts the score sums).
        frame_scores: (T,) the frame-score curve.
        grid: (T, H/block, W/block) the cell scores of the anomaly map.
        block: pixels per grid cell.
        labels: (T,) 0/1 frame labels, or None.
        threshold: the alert threshold of calibrated scores, or None.
        kind: what the scores are (``per-video min-max`` or ``calibrated``).
    """

    name: str
    video: Any
    frame: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    tasks: dict[str, np.ndarray]
    frame_scores: np.ndarray
    grid: np.ndarray
    block: int
    labels: np.ndarray | None = None
    threshold: float | None = None
    kind: str = "per-video min-max"
    _masks: Any = field(default=None, repr=False)
    _strips: dict = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.frame_scores)

    def objects_in(self, index: int) -> np.ndarray:
        """The rows of frame ``index``'s objects, highest score first."""
        rows = np.flatnonzero(self.frame == index)
        return rows[np.argsort(-self.scores[rows], kind="stable")]

    def peak_frame(self) -> int:
        """The frame with the highest frame score."""
        return int(np.argmax(self.frame_scores)) if self.num_frames else 0

    def mask(self, index: int) -> np.ndarray | None:
        """The pixel mask of frame ``index`` (loaded once per video), or None where the dataset has none."""
        if self._masks is None:
            masks = self.video.pixel_masks() if hasattr(self.video, "pixel_masks") else None
            self._masks = False if masks is None else masks
        return None if self._masks is False else self._masks[index]

    def strip(self, width: int, height: int) -> viz.ScoreStrip:
        """The frame-score strip of this size (drawn once, then reused frame after frame)."""
        if (width, height) not in self._strips:
            self._strips[(width, height)] = viz.ScoreStrip(self.frame_scores, width, height, self.labels,
                                                           self.threshold)
        return self._strips[(width, height)]


# -- sources -----------------------------------------------------------------------------------------------------


def from_object_scores(videos: Sequence, object_scores: Sequence[ObjectScores], config: ScoreConfig,
                       tasks: Sequence[str]) -> list[ScoredVideo]:
    """A trained run's test videos: each object's score is the combination of ``tasks`` and each frame's score
    comes from the smoothed grid, both exactly as for the frame AUC (:func:`ssmtl_core.score.score_video`).

    Args:
        videos: the dataset's test videos.
        object_scores: their objects' raw task scores (``object_scores_for_run``), in the same order.
        config: the run's scoring settings (``profile.score``).
        tasks: the tasks combined (the trained ones).
    """
    result = []
    for video, scores in zip(videos, object_scores, strict=True):
        combined = combine_tasks(scores, tuple(tasks), config.normalize_tasks)
        grid = score_grid(combined, scores.frame, scores.boxes, video.num_frames, video.frame_size, config)
        result.append(ScoredVideo(video.name, video, np.asarray(scores.frame, int), np.asarray(scores.boxes, float),
                                  combined, {t: minmax(scores.tasks[t]) for t in tasks if t in scores.tasks},
                                  frame_scores_from_grid(grid, config), grid, max(1, config.block),
                                  labels=video.labels))
    return result


def from_score_video(folder: str | Path, video: str | Path | None = None) -> ScoredVideo:
    """The output folder of ``ssmtl score-video``: its frame and object scores over the video it names.

    Args:
        folder: the ``--out`` folder (``summary.json``, ``frame_scores.csv``, ``objects.csv``).
        video: the scored video file or frame folder, when it is no longer where ``summary.json`` says.
    """
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise SSMTLError(f"{summary_path} is missing: pass the --out folder of `ssmtl score-video`.")
    summary = read_json(summary_path)
    source = Path(video) if video is not None else Path(summary["video"])
    if not source.exists():
        raise SSMTLError(f"{summary_path} names the video {source}, which is not there: pass its new place as "
                         "video=... .")
    opened = open_video(source)
    with open(folder / "frame_scores.csv") as handle:
        frame_scores = np.array([float(row["score"]) for row in csv.DictReader(handle)], np.float32)
    with open(folder / "objects.csv") as handle:
        rows = list(csv.DictReader(handle))
    frame = np.array([int(r["frame"]) for r in rows], int)
    boxes = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in rows], float).reshape(-1, 4)
    scores = np.array([float(r["score"]) for r in rows], np.float32)
    tasks = {t: minmax(np.array([float(r[t]) for r in rows], np.float32)) for t in TASKS if t in summary["tasks"]}
    config = ScoreConfig(**summary["score_settings"])
    grid = score_grid(scores, frame, boxes, len(frame_scores), tuple(summary["frame_size"]), config)
    calibration = summary.get("calibration")
    return ScoredVideo(opened.name, opened, frame, boxes, scores, tasks, frame_scores, grid, max(1, config.block),
                       threshold=calibration["threshold"] if calibration else None,
                       kind="calibrated" if calibration else "per-video min-max")


# -- drawing -----------------------------------------------------------------------------------------------------


def _scale(sv: ScoredVideo, width: int) -> float:
    return width / sv.video.frame_size[1]


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)


def _caption(panel: np.ndarray, text: str, colour: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    bar = np.full((HEADER, panel.shape[1], 3), 250, np.uint8)
    cv2.putText(bar, text, (4, HEADER - 5), _FONT, 0.4, colour, 1, cv2.LINE_AA)
    return np.vstack([bar, panel])


def frame_panel(sv: ScoredVideo, index: int, selected: int | None = None, width: int = 480) -> np.ndarray:
    """Frame ``index`` at ``width`` pixels with the anomaly map over it and every object's box in the colour of
    its score (``turbo``: blue is normal, dark red anomalous); the ``selected`` object (a row of ``sv``; default
    the frame's top one) gets a white outline around its box. No caption."""
    scale = _scale(sv, width)
    heat = anomaly_map(sv.grid, index, sv.video.frame_size, sv.block)
    image = _resize(viz.overlay_heatmap(sv.video.frame(index), heat, alpha=0.5), scale)
    rows = sv.objects_in(index)
    boxes = sv.boxes[rows] * scale
    thickness = max(1, int(round(2 * scale)) // 2)
    image = viz.draw_boxes(image, boxes, sv.scores[rows], cmap=HOT_CMAP, thickness=thickness)
    if selected is None and len(rows):
        selected = int(rows[0])
    if selected is not None and sv.frame[selected] == index:
        x1, y1, x2, y2 = np.round(sv.boxes[selected] * scale).astype(int)
        pad = thickness + 1
        cv2.rectangle(image, (x1 - pad, y1 - pad), (x2 + pad, y2 + pad), (255, 255, 255), 1, cv2.LINE_8)
    return image


def truth_panel(sv: ScoredVideo, index: int, width: int = 480) -> np.ndarray | None:
    """Frame ``index`` with the outline of its ground-truth pixel mask in red; None without ground truth."""
    mask = sv.mask(index)
    if sv.labels is None and mask is None:
        return None
    image = _resize(np.ascontiguousarray(sv.video.frame(index)), _scale(sv, width)).copy()
    if mask is not None and mask.any():
        mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, _rgb(viz.GT_COLOR), max(1, width // 240))
    return image


def task_panel(sv: ScoredVideo, selected: int | None, height: int, width: int = TASK_PANEL_WIDTH) -> np.ndarray:
    """Bars of the ``selected`` object's task scores (min-max over the video), one colour per task."""
    panel = np.full((height, width, 3), 255, np.uint8)
    if selected is None:
        cv2.putText(panel, "no object in this frame", (6, 24), _FONT, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
        return panel
    cv2.putText(panel, "task scores (0-1 over the video)", (6, 16), _FONT, 0.36, (90, 90, 90), 1, cv2.LINE_AA)
    top, row = 28, max(18, min(34, (height - 34) // max(1, len(sv.tasks))))
    for k, (task, values) in enumerate(sv.tasks.items()):
        y = top + k * row
        value = float(values[selected])
        cv2.putText(panel, viz.TASK_NAMES.get(task, task), (6, y + 11), _FONT, 0.36, (30, 30, 30), 1, cv2.LINE_AA)
        x0, length = 6, int(round(value * (width - 56)))
        cv2.rectangle(panel, (x0, y + 14), (x0 + max(length, 1), y + row - 4), _rgb(viz.TASK_COLORS[task]), -1)
        cv2.putText(panel, f"{value:.2f}", (x0 + length + 4, y + row - 5), _FONT, 0.36, (30, 30, 30), 1,
                    cv2.LINE_AA)
    return panel


def render(sv: ScoredVideo, index: int, selected: int | None = None, width: int = 480) -> np.ndarray:
    """The viewer's picture of frame ``index``: the scored frame, the ground truth beside it (when there is
    one), the task scores of the ``selected`` object (default: the frame's top one), and the frame-score curve
    with a cursor under all of them. An RGB uint8 array."""
    rows = sv.objects_in(index)
    if selected is None or sv.frame[selected] != index:
        selected = int(rows[0]) if len(rows) else None
    scored = frame_panel(sv, index, selected, width)
    what = f"{sv.name}  frame {index}/{sv.num_frames - 1}  score {sv.frame_scores[index]:.3f}"
    panels = [_caption(scored, what)]
    truth = truth_panel(sv, index, width)
    if truth is not None:
        abnormal = sv.labels is not None and bool(sv.labels[index])
        panels.append(_caption(truth, "ground truth: " + ("ABNORMAL frame" if abnormal else "normal frame"),
                               _rgb(viz.GT_COLOR) if abnormal else (40, 40, 40)))
    title = "no object" if selected is None else f"object {list(rows).index(selected) + 1} of {len(rows)}: " \
                                                  f"score {sv.scores[selected]:.3f}"
    panels.append(_caption(task_panel(sv, selected, scored.shape[0]), title))
    gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)  # white between panels: two frames side by side
    top = np.hstack([part for panel in panels for part in (panel, gap)][:-1])  # never read as one wide scene
    strip = sv.strip(top.shape[1], max(60, scored.shape[0] // 3)).render(index, whole=True)
    return np.vstack([top, strip])


def to_png(image: np.ndarray) -> bytes:
    """An RGB array as PNG bytes (for an ipywidgets Image)."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("to_png: OpenCV could not encode the picture")
    return data.tobytes()


def _rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))


# -- the widget --------------------------------------------------------------------------------------------------


def object_options(sv: ScoredVideo, index: int) -> list[tuple[str, int]]:
    """The object picker's entries for frame ``index``: ``(label, row)``, highest score first."""
    return [(f"{k + 1}: score {sv.scores[r]:.3f}", int(r)) for k, r in enumerate(sv.objects_in(index))]


def explore(videos: Sequence[ScoredVideo], width: int = 480):
    """An ipywidgets viewer for JupyterLab: a video picker, a frame slider (with play), an object picker (the
    frame's objects by score; the top one by default) and the picture of :func:`render`. It opens on the video
    with the highest frame score, at that frame.

    Returns:
        The widget (display it, or leave it as a cell's last expression).
    """
    if not videos:
        raise SSMTLError("explore: no scored video to show.")
    start = int(np.argmax([v.frame_scores.max() if v.num_frames else 0 for v in videos]))
    video_pick = widgets.Dropdown(options=[(f"{v.name} (peak {v.frame_scores.max():.2f})", i)
                                           for i, v in enumerate(videos)], value=start, description="video")
    frame = widgets.IntSlider(min=0, max=videos[start].num_frames - 1, value=videos[start].peak_frame(),
                              description="frame", continuous_update=True, layout=widgets.Layout(width="60%"))
    # jslink copies the player's value to the slider when the page draws them: both start at the same frame
    play = widgets.Play(min=0, max=frame.max, value=frame.value, interval=120, description="play")
    widgets.jslink((play, "value"), (frame, "value"))
    object_pick = widgets.Dropdown(description="object", layout=widgets.Layout(width="220px"))
    peak = widgets.Button(description="peak frame", tooltip="jump to the frame with the highest score")
    image = widgets.Image(format="png")
    held = [0]  # > 0 while one change sets several widgets: draw once, at the end

    def draw(*_):
        if not held[0]:
            image.value = to_png(render(videos[video_pick.value], frame.value, object_pick.value, width))

    def frame_changed(*_):
        options = object_options(videos[video_pick.value], frame.value)
        held[0] += 1
        object_pick.options = options
        object_pick.value = options[0][1] if options else None
        held[0] -= 1
        draw()

    def video_changed(*_):
        sv = videos[video_pick.value]
        held[0] += 1
        frame.max = play.max = sv.num_frames - 1
        frame.value = play.value = sv.peak_frame()
        held[0] -= 1
        frame_changed()

    video_pick.observe(video_changed, "value")
    frame.observe(frame_changed, "value")
    object_pick.observe(draw, "value")
    peak.on_click(lambda _: setattr(frame, "value", videos[video_pick.value].peak_frame()))
    frame_changed()
    return widgets.VBox([widgets.HBox([video_pick, object_pick, peak]), widgets.HBox([play, frame]), image])

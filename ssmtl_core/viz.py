"""Pictures of SSMTL: what the network sees, what it predicts and how well it does.

SSMTL: Georgescu et al., "Anomaly Detection in Video via Self-Supervised and Multi-Task Learning", CVPR 2021.

Every ``plot_*`` function returns a new :class:`matplotlib.figure.Figure` built with the object-oriented API
(``Figure(...)``, never ``pyplot``): it is not registered with pyplot, never shown, and needs no closing;
it is freed like any Python object once unreferenced (``plt.close(fig)`` is a harmless no-op). In a notebook,
leave the figure as a cell's last expression or call ``display(fig)``; elsewhere ``fig.savefig(path)``.
The only exception is :func:`plot_score_curve` with ``ax=``, which draws into the caller's axes.
Frame drawings (:func:`draw_boxes`, :func:`overlay_heatmap`) return new RGB ``uint8`` arrays.

Conventions: frames are RGB ``uint8`` ``(H, W, 3)``; boxes are float ``(N, 4)`` ``x1, y1, x2, y2`` in pixels
(extra columns are ignored); crops are ``uint8`` ``(T, S, S, 3)`` or ``(T, S, S, 1)``; labels are 0/1 arrays;
scores are in ``[0, 1]``. Colours are fixed: one per proxy task (:data:`TASK_COLORS`), a perceptually
uniform colormap for scores (``turbo`` on boxes, ``inferno`` for pixel maps), light red for ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, NullFormatter
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve

from . import config

__all__ = [
    "TASK_COLORS", "TASK_NAMES", "label_intervals", "plot_score_curve", "plot_score_curves", "plot_roc",
    "draw_boxes", "overlay_heatmap", "plot_sequence_strip", "plot_crop_gallery", "plot_detections",
    "plot_history", "plot_results_table", "write_annotated_video",
]

#: One colour per proxy task (Okabe-Ito, colour-blind safe) and near-black for the combined score.
TASK_COLORS: dict[str, str] = {"aot": "#0072B2", "irr": "#E69F00", "mid": "#009E73", "kd": "#CC79A7",
                               "all": "#1A1A1A"}
#: Human names of the paper's four proxy tasks and of their combination.
TASK_NAMES: dict[str, str] = {**config.TASK_NAMES, "all": "all tasks"}
GT_COLOR = "#E41A1C"  # ground-truth abnormal frames, always shaded at low alpha
DETECTOR_COLORS = ("#00E5FF", "#FFD600", "#FF4081", "#76FF03", "#FF9100", "#B388FF")
_TASK_ORDER = config.TASKS
_LOSS_NAMES = {"aot": "cross-entropy", "irr": "cross-entropy", "mid": "mean abs. error",
               "kd": "mean abs. error", "total": "joint loss"}


# ------------------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _tidy(ax) -> None:
    """Light grid, no top/right spines: the house style of every chart."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#DDDDDD", linewidth=0.6)
    ax.set_axisbelow(True)


def _colors(values: np.ndarray, cmap: str, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """``(N,)`` values to ``(N, 3)`` RGB uint8 through a named matplotlib colormap."""
    span = max(vmax - vmin, 1e-12)
    rgba = matplotlib.colormaps[cmap](np.clip((np.asarray(values, float) - vmin) / span, 0.0, 1.0))
    return (np.atleast_2d(rgba)[:, :3] * 255).round().astype(np.uint8)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Frame or crop (H, W), (H, W, 1) or (H, W, 3), uint8 or float in [0, 1], to RGB uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image.astype(float), 0.0, 1.0) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return image


def _as_boxes(boxes: np.ndarray | None) -> np.ndarray:
    boxes = np.asarray(boxes if boxes is not None else np.zeros((0, 4)), dtype=float)
    return boxes.reshape(-1, boxes.shape[-1] if boxes.size else 4)[:, :4]


def _auc(labels: np.ndarray | None, scores: np.ndarray) -> float | None:
    """Frame ROC AUC, or None when the labels hold a single class."""
    if labels is None or len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def _offset_name(offset: int | str) -> str:
    if isinstance(offset, str):
        return offset
    return "i" if offset == 0 else f"i{offset:+d}"


def _default_offsets(length: int) -> list[int]:
    """Frame offsets of a crop sequence: i-t..i+t, the same without i (middle box input), or just i."""
    if length % 2:
        return list(range(-(length // 2), length // 2 + 1))
    half = length // 2
    return [*range(-half, 0), *range(1, half + 1)]


def _image_axis(ax, image: np.ndarray, caption: str = "") -> None:
    ax.imshow(_as_rgb(image), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("#BBBBBB")
    if caption:
        ax.set_xlabel(caption, fontsize=8, labelpad=2)


# ------------------------------------------------------------------------------------------------------------
# frame-level curves: the frame anomaly score and the frame-level AUC (docs/method.md: "From objects to frames", "Metrics")
# ------------------------------------------------------------------------------------------------------------


def label_intervals(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs of abnormal frames.

    Args:
        labels: ``(T,)`` 0/1 frame labels.

    Returns:
        ``[(start, end), ...]``, half-open ``[start, end)`` intervals of consecutive 1s, in order.
    """
    flags = np.concatenate([[0], np.asarray(labels).reshape(-1) != 0, [0]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(flags))
    return [(int(s), int(e)) for s, e in zip(edges[0::2], edges[1::2])]


def plot_score_curve(frame_scores: np.ndarray, labels: np.ndarray | None = None,
                     task_curves: dict[str, np.ndarray] | None = None, title: str = "", ax=None,
                     threshold: float | None = None, yscale: str = "linear") -> Figure:
    """Per-video frame anomaly score over time, the paper's kind of qualitative result.

    The combined frame score (the normalised sum of the four task scores, painted into the frame grid and
    smoothed over time) is the thick dark line; optional per-task curves are thin lines in the task colours;
    ground-truth abnormal intervals are shaded. When ``labels`` hold both classes the video's frame AUC of
    every curve is written in the legend.

    Args:
        frame_scores: ``(T,)`` frame scores in [0, 1].
        labels: ``(T,)`` 0/1 ground truth, or None.
        task_curves: ``{"aot": (T,), ...}`` curves of each task alone, or None.
        title: axes title (default "Frame anomaly score").
        ax: draw into these axes instead of a new figure.
        threshold: an alert level drawn as a dashed red line, with the frames at or over it marked, or None.
        yscale: ``linear``, or ``logit`` for calibrated scores (fractions of normal objects: 0.9, 0.99 and
            0.999 spread evenly).

    Returns:
        The figure (``ax.figure`` when ``ax`` is given): one axes.
    """
    scores = np.asarray(frame_scores, dtype=float).reshape(-1)
    if ax is None:
        fig = _figure(9.0, 3.0)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    frames = np.arange(len(scores))
    if labels is not None:
        for k, (start, end) in enumerate(label_intervals(labels)):
            ax.axvspan(start - 0.5, end - 0.5, color=GT_COLOR, alpha=0.13, linewidth=0,
                       label="abnormal (ground truth)" if k == 0 else None)

    def name(key: str, curve: np.ndarray) -> str:
        auc = _auc(labels, curve)
        return TASK_NAMES.get(key, key) + ("" if auc is None else f" (AUC {100 * auc:.1f}%)")

    for key, curve in (task_curves or {}).items():
        curve = np.asarray(curve, dtype=float).reshape(-1)
        ax.plot(np.arange(len(curve)), curve, color=TASK_COLORS.get(key, "#888888"), linewidth=1.0,
                alpha=0.85, label=name(key, curve))
    ax.plot(frames, scores, color=TASK_COLORS["all"], linewidth=2.0, label=name("all", scores))
    if threshold is not None:
        ax.axhline(threshold, color=GT_COLOR, linestyle="--", linewidth=1.2, label=f"alert threshold ({threshold:.3g})")
        over = scores >= threshold
        if over.any():
            ax.plot(frames[over], scores[over], "o", color=GT_COLOR, markersize=2.5, label="frames over it")
    if yscale == "logit":
        ax.set_yscale("logit", nonpositive="clip")
        ax.set_ylim(0.1, 1 - 1e-4)
        ax.set_yticks([0.1, 0.5, 0.9, 0.99, 0.999, 0.9999], ["0.1", "0.5", "0.9", "0.99", "0.999", "0.9999"])
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        top = max(1.0, float(np.nanmax(scores)) if len(scores) else 1.0)
        ax.set_ylim(-0.02, top * 1.03)
    ax.set_xlim(-0.5, max(len(scores) - 0.5, 0.5))
    ax.set_xlabel("frame")
    ax.set_ylabel("anomaly score")
    ax.set_title(title or "Frame anomaly score", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    _tidy(ax)
    return fig


def plot_score_curves(curves: dict[str, list[np.ndarray]], labels: list[np.ndarray | None], names: list[str],
                      tasks: Iterable[str], columns: int = 3, row_height: float = 2.6) -> Figure:
    """The frame scores of every test video in a grid, one :func:`plot_score_curve` each (the paper's
    qualitative results, Sec. 4): the combined score thick, each task alone thin, the abnormal frames shaded.

    Args:
        curves: per-video frame scores by task subset, as :func:`ssmtl_core.evaluate.evaluate_scores` returns
            them (``{"aot+irr+mid+kd": [(T,), ...], "aot": [...], ...}``).
        labels: per video ``(T,)`` 0/1 ground truth, or None.
        names: per video its name (the titles).
        tasks: the tasks combined: ``curves["+".join(tasks)]`` is the thick line; each one with a curve of its own
            is a thin line.
        columns: plots per row (fewer when there are fewer videos).
        row_height: inches per row.

    Returns:
        The figure, one axes per video (spare cells of the grid blank).
    """
    tasks = tuple(tasks)
    combined = "+".join(tasks)
    columns = max(1, min(columns, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    fig = _figure(5.5 * columns, row_height * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, (ax, name) in enumerate(zip(axes.flat, names)):
        alone = {t: curves[t][i] for t in tasks if t in curves and t != combined}
        plot_score_curve(curves[combined][i], labels[i], alone, title=f"test {name}", ax=ax)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    return fig


def plot_roc(labels: np.ndarray, scores: dict[str, np.ndarray], title: str = "") -> Figure:
    """Frame-level ROC curves of several scorings (e.g. the paper's task ablation).

    Args:
        labels: ``(T,)`` 0/1 frame labels (both classes needed).
        scores: ``{name: (T,) scores}``; task keys get their task colour and human name.
        title: axes title.

    Returns:
        Figure with one axes: one ROC line per scoring plus the dashed chance diagonal.

    Raises:
        ValueError: if the labels hold a single class.
    """
    labels = np.asarray(labels).reshape(-1)
    if len(np.unique(labels)) < 2:
        raise ValueError("plot_roc needs labels with both normal (0) and abnormal (1) frames")
    fig = _figure(4.8, 4.2)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=1.0, label="chance (AUC 50%)")
    spare = iter(DETECTOR_COLORS)
    for key, values in scores.items():
        values = np.asarray(values, dtype=float).reshape(-1)
        fpr, tpr, _ = roc_curve(labels, values)
        color = TASK_COLORS.get(key) or next(spare, None)
        ax.plot(fpr, tpr, color=color, linewidth=2.0 if key == "all" else 1.4,
                label=f"{TASK_NAMES.get(key, key)} (AUC {100 * roc_auc_score(labels, values):.1f}%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (normal frames flagged)")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "Frame-level ROC", loc="left")
    ax.legend(loc="lower right", fontsize=8, frameon=True, framealpha=0.9)
    _tidy(ax)
    return fig


# ------------------------------------------------------------------------------------------------------------
# frame drawings (RGB arrays): scored objects and the pixel-level anomaly map (docs/method.md: "Scoring", "From objects to frames")
# ------------------------------------------------------------------------------------------------------------


def draw_boxes(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None = None,
               labels: list[str] | None = None, cmap: str = "turbo", thickness: int = 1,
               color: tuple[int, int, int] = (0, 255, 0), vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Draw object boxes on a copy of a frame, coloured by anomaly score.

    Args:
        frame: RGB uint8 ``(H, W, 3)`` (grey frames are expanded).
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` in pixels.
        scores: ``(N,)`` object scores mapped through ``cmap`` over ``[vmin, vmax]``; None: all in ``color``.
        labels: ``N`` short texts written on a tab above each box (e.g. ``"0.83"`` or a class name).
        cmap: matplotlib colormap name for the scores.
        thickness: outline thickness in pixels.
        color: RGB colour of the boxes when ``scores`` is None.
        vmin, vmax: score range of the colormap.

    Returns:
        A new RGB uint8 array; high-score boxes are drawn last (on top).
    """
    out = np.ascontiguousarray(_as_rgb(frame).copy())
    boxes = _as_boxes(boxes)
    if scores is not None and len(scores) != len(boxes):
        raise ValueError(f"draw_boxes: {len(boxes)} boxes but {len(scores)} scores")
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"draw_boxes: {len(boxes)} boxes but {len(labels)} labels")
    height, width = out.shape[:2]
    font_scale = max(0.3, min(height, width) / 700)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))
    colors = _colors(np.asarray(scores), cmap, vmin, vmax) if scores is not None else None
    rgbs = [tuple(int(c) for c in (colors[i] if colors is not None else color)) for i in range(len(boxes))]
    corners = np.clip(np.round(boxes), 0, [width - 1, height - 1, width - 1, height - 1]).astype(int)
    for i in order:  # all outlines first, then the labels, so that no outline crosses a label
        cv2.rectangle(out, tuple(corners[i, :2]), tuple(corners[i, 2:]), rgbs[i], thickness, cv2.LINE_8)
    for i in order if labels is not None else []:
        if not labels[i]:
            continue
        (tw, th), base = cv2.getTextSize(str(labels[i]), cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        x1, y1 = corners[i, :2]
        ty = y1 - 1 if y1 - th - base - 1 >= 0 else y1 + th + base + 1  # tab above the box, or inside it
        tx = int(min(x1, max(width - tw - 2, 0)))
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 1, ty), rgbs[i], -1)
        bright = 0.299 * rgbs[i][0] + 0.587 * rgbs[i][1] + 0.114 * rgbs[i][2] > 140
        ink = (0, 0, 0) if bright else (255, 255, 255)
        cv2.putText(out, str(labels[i]), (tx + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, 1,
                    cv2.LINE_AA)
    return out


def overlay_heatmap(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "inferno",
                    vmax: float | None = 1.0) -> np.ndarray:
    """Blend the pixel-level anomaly map (object scores painted into the frame grid) over a frame.

    The opacity grows with the heat (``alpha * sqrt(heat / vmax)``), so cells with 0 leave the frame
    untouched and only anomalous regions are tinted.

    Args:
        frame: RGB uint8 ``(H, W, 3)``.
        heat: ``(H, W)`` float map; a coarser grid (e.g. ``H/b x W/b`` cells) is upscaled as blocks.
        alpha: opacity at the maximal heat.
        cmap: matplotlib colormap name.
        vmax: heat of full colour; None: the map's own maximum.

    Returns:
        A new RGB uint8 array.
    """
    base = _as_rgb(frame)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != base.shape[:2]:
        heat = cv2.resize(heat, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_NEAREST)
    top = float(np.nanmax(heat)) if vmax is None and heat.size else (vmax or 1.0)
    level = np.clip(np.nan_to_num(heat / max(top, 1e-12)), 0.0, 1.0)
    tint = matplotlib.colormaps[cmap](level)[..., :3] * 255
    weight = (alpha * np.sqrt(level))[..., None]
    return (base * (1 - weight) + tint * weight).round().astype(np.uint8)


def plot_sequence_strip(rows: dict[str, np.ndarray], offsets: dict[str, list[int]] | None = None,
                        title: str = "") -> Figure:
    """Object-centric crop sequences side by side, to show how each proxy task's sample is built.

    Each row is a named sequence (e.g. "forward", "reversed (arrow of time = 1)", "intermittent",
    "middle-box input", "target", "reconstruction") shown left to right, each crop captioned with its frame
    offset relative to the object's frame ``i``. Rows are aligned on ``i``: a 6-crop middle-box input leaves
    the centre column empty and a single target crop sits in it.

    Args:
        rows: ``{name: (T, S, S, C)}`` uint8 (or float in [0, 1]) crops; a single ``(S, S, C)`` crop is fine.
        offsets: ``{name: [offset, ...]}`` ints (``-3`` is shown as ``"i-3"``) or ready strings; default:
            ``i-t..i+t`` for odd T, the same without ``i`` for even T, ``i`` for one crop.
        title: figure title.

    Returns:
        Figure with one image axes per crop, and per row one invisible axes (label ``"row name"``) holding
        the row's name in a left column.
    """
    seqs = {name: np.asarray(c) for name, c in rows.items()}
    seqs = {name: c[None] if c.ndim == 3 else c for name, c in seqs.items()}  # one (S, S, C) crop
    columns = max((len(s) for s in seqs.values()), default=1)
    label_width = 0.066 * max((len(name) for name in seqs), default=1) + 0.2  # inches for the row names
    fig = _figure(1.05 * columns + label_width, 1.25 * len(seqs) + (0.4 if title else 0.1))
    grid = fig.add_gridspec(max(len(seqs), 1), columns + 1, width_ratios=[label_width / 1.05] + [1] * columns)
    centre = columns // 2
    for r, (name, seq) in enumerate(seqs.items()):
        offs = list((offsets or {}).get(name) or _default_offsets(len(seq)))
        if len(offs) != len(seq):
            raise ValueError(f"plot_sequence_strip: row {name!r}: {len(seq)} crops, {len(offs)} offsets")
        cols = list(range(len(seq)))
        if len(seq) < columns and all(isinstance(o, (int, np.integer)) for o in offs):  # align the row on i
            before, after = sum(o < 0 for o in offs), sum(o > 0 for o in offs)
            if before <= centre and after <= columns - centre - 1:
                cols = [centre - before + k for k in range(before)] + [centre] * (len(offs) - before - after)
                cols += [centre + 1 + k for k in range(after)]
        label = fig.add_subplot(grid[r, 0], label="row name")
        label.axis("off")
        label.text(1.0, 0.55, name, ha="right", va="center", fontsize=9, transform=label.transAxes)
        for crop, off, col in zip(seq, offs, cols):
            ax = fig.add_subplot(grid[r, col + 1])
            _image_axis(ax, crop, _offset_name(off))
            if off == 0 or off == "i":
                ax.xaxis.label.set_fontweight("bold")
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


def plot_crop_gallery(crops: list[np.ndarray], captions: list[str], title: str = "",
                      columns: int = 8) -> Figure:
    """A grid of object crops with captions, e.g. the most and least anomalous objects and their scores.

    Args:
        crops: ``(S, S, 3)`` or ``(S, S, 1)`` crops.
        captions: one caption per crop.
        title: figure title.
        columns: crops per row.

    Returns:
        Figure with one axes per crop.
    """
    if len(captions) != len(crops):
        raise ValueError(f"plot_crop_gallery: {len(crops)} crops but {len(captions)} captions")
    columns = max(1, min(columns, len(crops)))
    rows = max(1, math.ceil(len(crops) / columns))
    fig = _figure(1.25 * columns + 0.2, 1.4 * rows + (0.4 if title else 0.1))
    grid = fig.add_gridspec(rows, columns)
    for k, (crop, caption) in enumerate(zip(crops, captions)):
        _image_axis(fig.add_subplot(grid[k // columns, k % columns]), crop, caption)
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


def plot_detections(frame: np.ndarray, detections_by_name: dict[str, np.ndarray], title: str = "") -> Figure:
    """The same frame as seen by several object detectors (the paper's YOLOv3; our motion detector).

    Args:
        frame: RGB uint8 ``(H, W, 3)``.
        detections_by_name: ``{detector name: (N, >=4) boxes}``.
        title: figure title.

    Returns:
        Figure with one axes per detector; every box is one rectangle patch in the detector's colour.
    """
    image = _as_rgb(frame)
    count = max(len(detections_by_name), 1)
    aspect = image.shape[1] / max(image.shape[0], 1)
    fig = _figure(min(4.2, 3.2 * aspect) * count + 0.2, 3.4 + (0.3 if title else 0.0))
    for k, (name, dets) in enumerate(detections_by_name.items()):
        ax = fig.add_subplot(1, count, k + 1)
        boxes = _as_boxes(dets)
        color = DETECTOR_COLORS[k % len(DETECTOR_COLORS)]
        _image_axis(ax, image)
        for x1, y1, x2, y2 in boxes:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.4))
        ax.set_title(f"{name}: {len(boxes)} object{'s' if len(boxes) != 1 else ''}", loc="left", fontsize=9,
                     color="black")
        for spine in ax.spines.values():
            spine.set_color(color)
            spine.set_linewidth(2.0)
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


# ------------------------------------------------------------------------------------------------------------
# training curves of the joint loss and the results tables (docs/method.md: "Training", "Metrics", "Reference numbers")
# ------------------------------------------------------------------------------------------------------------


def plot_history(history: list[dict], title: str = "") -> Figure:
    """Training curves of the paper's joint loss ``L = L_aot + L_irr + L_mid + lambda * L_kd``.

    One small panel per task present (keys ``train_<task>`` / ``val_<task>``) plus ``total``; train is
    solid, validation dashed, both in the task colour. The kept checkpoint (the last row with
    ``"best": True``, else the lowest ``val_total``) is marked by a dotted vertical line and a star.

    Args:
        history: one dict per epoch, e.g. ``{"epoch": 1, "train_aot": .., "val_aot": .., "best": True}``.
        title: figure title.

    Returns:
        Figure with one axes per panel; each holds a train line, a validation line (if any values), the
        best-epoch line and the best-epoch star (if validation values exist).
    """
    def series(key: str) -> np.ndarray:
        return np.array([np.nan if row.get(key) is None else float(row[key]) for row in history])

    keys = [k for k in (*_TASK_ORDER, "total") if any(row.get(f"{s}_{k}") is not None for row in history
                                                      for s in ("train", "val"))]
    epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)], dtype=float)
    flagged = [i for i, row in enumerate(history) if row.get("best")]
    val_total = series("val_total") if history else np.zeros(0)
    best = flagged[-1] if flagged else None
    if best is None and np.isfinite(val_total).any():
        best = int(np.nanargmin(val_total))
    fig = _figure(2.7 * max(len(keys), 1) + 0.3, 2.9 + (0.3 if title else 0.0))
    for k, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), k + 1)
        color = TASK_COLORS.get(key, TASK_COLORS["all"])
        train, val = series(f"train_{key}"), series(f"val_{key}")
        ax.plot(epochs, train, color=color, linewidth=1.6, marker="." if len(epochs) < 15 else None)
        if np.isfinite(val).any():
            ax.plot(epochs, val, color=color, linewidth=1.6, linestyle="--")
        if best is not None:
            ax.axvline(epochs[best], color="#777777", linestyle=":", linewidth=1.2)
            if np.isfinite(val[best]):
                ax.plot([epochs[best]], [val[best]], marker="*", markersize=11, color=color,
                        markeredgecolor="black", markeredgewidth=0.6, linestyle="none")
        ax.set_title(TASK_NAMES[key] if key != "total" else "total (joint)", loc="left", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_LOSS_NAMES[key], fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _tidy(ax)
    handles = [Line2D([], [], color="#444444", linewidth=1.6, label="train"),
               Line2D([], [], color="#444444", linewidth=1.6, linestyle="--", label="validation")]
    if best is not None:
        handles.append(Line2D([], [], color="#777777", linestyle=":", marker="*", markersize=9,
                              markerfacecolor="#BBBBBB", markeredgecolor="black",
                              label=f"kept checkpoint (epoch {epochs[best]:g}, lowest val. loss)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=8)
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


def plot_results_table(rows: list[dict], metrics: list[str], title: str = "") -> Figure:
    """Our numbers against the paper's results: micro/macro frame AUC, RBDC, TBDC, in %.

    Groups are rows (architectures, task subsets or data sets); within a group one filled bar per metric
    with our value written on it, and the paper's value (key ``paper_<metric>``) as a black horizontal
    marker across the bar. Values are fractions (0.921) or percents (92.1): anything above 1 is taken as %.

    Args:
        rows: e.g. ``{"name": "shallow_narrow", "micro_auc": 0.93, "paper_micro_auc": 0.921}``; missing or
            None values are skipped.
        metrics: metric keys, e.g. ``["micro_auc", "macro_auc", "rbdc", "tbdc"]``.
        title: axes title.

    Returns:
        Figure with one axes: one bar patch per present value of ours, one marker line per paper value.
    """
    def pct(value) -> float | None:
        if value is None or not np.isfinite(float(value)):
            return None
        return float(value) * 100 if float(value) <= 1.0 else float(value)

    palette = matplotlib.colormaps["viridis"](np.linspace(0.15, 0.8, max(len(metrics), 1)))
    fig = _figure(max(5.0, 1.1 * len(rows) * max(len(metrics), 1) * 0.45 + 2.2), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / max(len(metrics), 1)
    paper_shown = False
    for m, metric in enumerate(metrics):
        label = metric.replace("_", " ").replace("auc", "AUC").replace("rbdc", "RBDC").replace("tbdc", "TBDC")
        drawn = False
        for g, row in enumerate(rows):
            x = g - 0.4 + width * (m + 0.5)
            ours, paper = pct(row.get(metric)), pct(row.get(f"paper_{metric}"))
            if ours is not None:
                ax.bar(x, ours, width=width * 0.92, color=palette[m], label=None if drawn else label)
                ax.text(x, max(ours, paper or 0.0) + 1.5, f"{ours:.1f}", ha="center", va="bottom", fontsize=7,
                        rotation=90)
                drawn = True
            if paper is not None:
                ax.plot([x], [paper], marker="_", markersize=max(8.0, 60 * width), markeredgewidth=2.2,
                        color="black", linestyle="none", label=None if paper_shown else "paper")
                paper_shown = True
    ax.set_xticks(np.arange(len(rows)), [str(row.get("name", i)) for i, row in enumerate(rows)])
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("%")
    ax.set_title(title or "Ours (bars) vs. the paper (black marks)", loc="left")
    handles, names = ax.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda k: names[k] == "paper")  # the paper's mark last
    ax.legend([handles[k] for k in order], [names[k] for k in order], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    _tidy(ax)
    ax.grid(False, axis="x")
    return fig


# ------------------------------------------------------------------------------------------------------------
# annotated video for people scoring their own footage
# ------------------------------------------------------------------------------------------------------------


class ScoreStrip:
    """The frame-score curve drawn once as an RGB strip; :meth:`render` shows it up to frame ``i`` with a cursor
    there (the annotated video's strip and the result viewer's, :mod:`ssmtl_core.viewer`)."""

    def __init__(self, scores: np.ndarray, width: int, height: int, labels: np.ndarray | None,
                 threshold: float | None):
        self.scores = np.clip(np.nan_to_num(np.asarray(scores, dtype=float)), 0.0, 1.0)
        self.font = max(0.35, width / 1100)
        top, bottom, margin = int(height * 0.3), 4, 4
        n = len(self.scores)
        self.xs = np.round(margin + np.arange(n) / max(n - 1, 1) * (width - 2 * margin - 1)).astype(int)
        self.ys = np.round(top + (1 - self.scores) * (height - top - bottom - 1)).astype(int)
        self.threshold = threshold
        bg = np.full((height, width, 3), 250, np.uint8)
        half = max(1, (self.xs[1] - self.xs[0]) // 2) if n > 1 else 1
        for start, end in label_intervals(np.asarray(labels)[:n]) if labels is not None else []:
            cv2.rectangle(bg, (int(self.xs[start]) - half, top), (int(self.xs[end - 1]) + half,
                                                                   height - bottom), (250, 200, 200), -1)
        cv2.line(bg, (margin, height - bottom), (width - margin, height - bottom), (170, 170, 170), 1)
        if threshold is not None:
            ty = int(round(top + (1 - np.clip(threshold, 0, 1)) * (height - top - bottom - 1)))
            for x in range(margin, width - margin, 8):
                cv2.line(bg, (x, ty), (min(x + 4, width - margin), ty), (200, 40, 40), 1)
        self.bg, self.fg = bg, bg.copy()
        points = np.stack([self.xs, self.ys], axis=1).astype(np.int32)
        cv2.polylines(self.fg, [points], False, (26, 26, 26), 2 if width >= 480 else 1, cv2.LINE_AA)

    def render(self, i: int, whole: bool = False) -> np.ndarray:
        """The strip at frame ``i``: the curve up to it (the whole curve with ``whole``) and the cursor."""
        img = self.fg.copy() if whole else self.bg.copy()
        x = int(self.xs[i])
        img[:, : x + 1] = self.fg[:, : x + 1]
        cv2.line(img, (x, 0), (x, img.shape[0] - 1), (0, 114, 178), 1)
        cv2.circle(img, (x, int(self.ys[i])), 3, (0, 114, 178), -1, cv2.LINE_AA)
        alarm = self.threshold is not None and self.scores[i] >= self.threshold
        digits = 2 if self.threshold is None else 3
        text = f"frame {i}   score {self.scores[i]:.{digits}f}" + ("   ABOVE THRESHOLD" if alarm else "")
        cv2.putText(img, text, (4, int(12 * self.font / 0.35)), cv2.FONT_HERSHEY_SIMPLEX, self.font,
                    (200, 30, 30) if alarm else (40, 40, 40), 1, cv2.LINE_AA)
        return img


def write_annotated_video(frames: Iterable[np.ndarray], boxes_per_frame: list[np.ndarray],
                          scores_per_frame: list[np.ndarray], frame_scores: np.ndarray, path: str | Path,
                          fps: float = 10.0, labels: np.ndarray | None = None, threshold: float | None = None,
                          heat_per_frame: Iterable[np.ndarray] | None = None, max_gif_width: int = 480,
                          max_gif_frames: int = 200, min_width: int = 320) -> Path:
    """Write the scored video: boxes coloured by object score over each frame, the score curve below.

    Frames are streamed (a generator is fine; only GIF output keeps its <= ``max_gif_frames`` small
    palette frames until the end). Frames narrower than ``min_width`` are upscaled by an integer factor
    with nearest neighbour so boxes and text stay readable.

    Args:
        frames: RGB uint8 frames; at most ``len(frame_scores)`` are written.
        boxes_per_frame: per frame ``(N, 4)`` boxes in original pixel coordinates (missing: none).
        scores_per_frame: per frame ``(N,)`` object scores in [0, 1].
        frame_scores: ``(T,)`` frame scores in [0, 1] drawn as the curve under the frame.
        path: ``.mp4`` (OpenCV ``mp4v``; if that encoder is missing, ``.avi`` with ``MJPG`` instead),
            ``.avi`` (``MJPG``) or ``.gif`` (Pillow; downscaled to ``max_gif_width`` and every k-th frame).
        fps: frame rate of the source.
        labels: ``(T,)`` 0/1 ground truth shaded on the curve, or None.
        threshold: alarm level drawn as a dashed line, or None; objects at or over it get a red frame and an
            ``ALERT`` tab.
        heat_per_frame: per-frame pixel-level anomaly maps blended under the boxes, or None.
        max_gif_width, max_gif_frames, min_width: size limits described above.

    Returns:
        The path actually written.

    Raises:
        ValueError: unknown suffix, or no frames.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".avi", ".gif"):
        raise ValueError(f"write_annotated_video: unsupported suffix {path.suffix!r} (.mp4, .avi or .gif)")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame_scores = np.asarray(frame_scores, dtype=float).reshape(-1)
    total = len(frame_scores)
    step = max(1, math.ceil(total / max_gif_frames)) if suffix == ".gif" else 1
    heat_iter = iter(heat_per_frame) if heat_per_frame is not None else None
    writer, strip, gif, scale, size = None, None, [], 1.0, (0, 0)
    written = 0
    try:
        for i, frame in enumerate(frames):
            if i >= total:
                break
            heat = next(heat_iter, None) if heat_iter is not None else None
            if i % step:
                continue
            frame = _as_rgb(frame)
            if strip is None:  # the output geometry is fixed by the first frame
                h, w = frame.shape[:2]
                scale = float(math.ceil(min_width / w)) if w < min_width else 1.0
                if suffix == ".gif" and w * scale > max_gif_width:
                    scale = max_gif_width / w
                size = (max(2, int(round(w * scale)) // 2 * 2), max(2, int(round(h * scale)) // 2 * 2))
                strip_height = max(48, int(size[1] * 0.28)) // 2 * 2
                strip = ScoreStrip(frame_scores, size[0], strip_height, labels, threshold)
            if heat is not None:
                frame = overlay_heatmap(frame, heat)
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST if scale > 1 else
                                   cv2.INTER_AREA)
            boxes = _as_boxes(boxes_per_frame[i] if i < len(boxes_per_frame) else None)
            boxes = boxes * np.array([size[0] / w, size[1] / h] * 2)
            scores = scores_per_frame[i] if i < len(scores_per_frame) else np.zeros(0)
            scores = np.asarray(scores, dtype=float).reshape(-1)
            labels_txt = [f"{s:.2f}" for s in scores] if size[0] >= 240 else None
            if threshold is not None and len(scores) == len(boxes):  # objects over it: a red frame and ALERT
                over = scores >= threshold
                frame = draw_boxes(frame, boxes[over], color=(228, 26, 28), thickness=max(1, size[0] // 320) + 2)
                labels_txt = [("ALERT " if o else "") + (f"{s:.3f}" if size[0] >= 240 else "")
                              for s, o in zip(scores, over)]
            frame = draw_boxes(frame, boxes, scores if len(scores) == len(boxes) else None, labels_txt,
                               thickness=max(1, size[0] // 320))
            out = np.vstack([frame, strip.render(i)])
            if suffix == ".gif":
                gif.append(Image.fromarray(out).quantize(colors=64, method=Image.Quantize.FASTOCTREE))
            else:
                if writer is None:
                    writer, path = _open_writer(path, fps, (out.shape[1], out.shape[0]))
                writer.write(cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
            written += 1
    finally:
        if writer is not None:
            writer.release()
    if written == 0:
        raise ValueError("write_annotated_video: no frames to write")
    if gif:
        gif[0].save(path, save_all=True, append_images=gif[1:], duration=int(round(1000 * step / fps)),
                    loop=0)
    return path


def _open_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, Path]:
    """OpenCV writer for ``path``; ``.mp4`` falls back to MJPG ``.avi`` when no mp4v encoder is available."""
    attempts = [(path, "mp4v"), (path.with_suffix(".avi"), "MJPG")] if path.suffix.lower() == ".mp4" else \
        [(path, "MJPG")]
    for target, fourcc in attempts:
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
        if writer.isOpened():
            return writer, target
        writer.release()
    raise OSError(f"write_annotated_video: OpenCV cannot open a video writer for {path}")


# ------------------------------------------------------------------------------------------------------------
# object scores of one task: normal vs abnormal test objects
# ------------------------------------------------------------------------------------------------------------


def plot_score_histogram(scores: np.ndarray, abnormal: np.ndarray, score_name: str, title: str = "",
                         bins: int = 40) -> Figure:
    """How one score separates the normal test objects from the abnormal ones.

    Two density histograms on shared bins, normal objects in grey-blue and abnormal ones in the ground-truth
    red; the object-level ROC AUC goes into the title when both kinds are present.

    Args:
        scores: ``(N,)`` object scores (any range: raw task scores are fine).
        abnormal: ``(N,)`` 0/1 or bool, 1 for an abnormal object.
        score_name: what the score is, for the x label (e.g. ``"P(backward)"``).
        title: figure title (default: ``"<score_name> of test objects"``).
        bins: number of shared bins.

    Returns:
        Figure with one axes holding the two histograms (normal first) and a legend with their counts.
    """
    values = np.asarray(scores, dtype=float)
    is_abnormal = np.asarray(abnormal).astype(bool)
    if values.shape != is_abnormal.shape:
        raise ValueError(f"plot_score_histogram: {values.shape} scores but {is_abnormal.shape} labels")
    auc = _auc(is_abnormal.astype(int), values)
    low, high = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1e-6, bins + 1)
    fig = _figure(7.0, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    for selected, color, name in ((~is_abnormal, TASK_COLORS["aot"], "normal"), (is_abnormal, GT_COLOR, "abnormal")):
        if selected.any():
            ax.hist(values[selected], bins=edges, density=True, alpha=0.6, color=color,
                    label=f"{name} objects ({int(selected.sum())})")
    ax.set_xlabel(score_name)
    ax.set_ylabel("density")
    heading = title or f"{score_name} of test objects"
    ax.set_title(heading + (f" (object AUC {auc:.3f})" if auc is not None else ""), loc="left", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    return fig


__all__ += ["plot_score_histogram"]


def plot_score_by_motion(scores: np.ndarray, motion: np.ndarray, blob: np.ndarray | None, score_name: str,
                         title: str = "", bins: int = 8) -> Figure:
    """One task's score of normal objects against how much they move, by detection kind (``docs/method.md``,
    "What the arrow of time learns").

    Each object is a faint dot; the line is the mean score in each of ``bins`` motion bins of equal counts, one
    line for the COCO boxes and one for the class-agnostic motion blobs (when there are some). A task that is
    sure about normal motion sits near 0; objects that barely move, whose clip looks the same forwards and
    backwards, sit higher: with ~17 objects per frame, they are what the frame maximum picks up.

    Args:
        scores: ``(N,)`` the task's scores (e.g. P(backward)).
        motion: ``(N,)`` :func:`ssmtl_core.diagnostics.motion_energy` of each object.
        blob: ``(N,)`` True for a motion blob, or None (one kind).
        score_name: what the score is, for the y label.
        title: figure title.
        bins: motion bins of the lines.

    Returns:
        Figure with one axes.
    """
    values, moving = np.asarray(scores, float), np.asarray(motion, float)
    kinds = np.zeros(len(values), bool) if blob is None else np.asarray(blob, bool)
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for kind, color, name in ((False, TASK_COLORS["aot"], "COCO boxes"), (True, TASK_COLORS["irr"], "motion blobs")):
        rows = kinds == kind
        if not rows.any():
            continue
        ax.scatter(moving[rows], values[rows], s=4, alpha=0.15, color=color, linewidths=0)
        edges = np.unique(np.quantile(moving[rows], np.linspace(0, 1, min(bins, max(2, rows.sum() // 10)) + 1)))
        if len(edges) > 1:
            index = np.clip(np.digitize(moving[rows], edges[1:-1]), 0, len(edges) - 2)
            centres = [moving[rows][index == b].mean() for b in range(len(edges) - 1) if (index == b).any()]
            means = [values[rows][index == b].mean() for b in range(len(edges) - 1) if (index == b).any()]
            ax.plot(centres, means, "o-", color=color, label=f"{name} ({int(rows.sum())}): mean per motion bin")
    ax.set_xlabel("motion (mean |difference| of consecutive crops, grey levels)")
    ax.set_ylabel(score_name)
    ax.set_title(title or f"{score_name} of normal validation objects by motion", loc="left", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax)
    return fig


__all__ += ["plot_score_by_motion"]

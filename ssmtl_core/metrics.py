"""Evaluation metrics of SSMTL: frame-level AUC (micro and macro) and the region/track detection criteria.

The SSMTL paper (Georgescu et al., "Anomaly Detection in Video via Self-Supervised and Multi-Task Learning",
CVPR 2021, Sec. 4 "Experiments", evaluation metrics) reports four numbers per data set:

* **micro frame AUC**: the ROC AUC over all test frames of all videos concatenated;
* **macro frame AUC**: the mean of the per-video ROC AUCs;
* **RBDC** and **TBDC**: the region-based and track-based detection criteria of Ramachandra & Jones,
  "Street Scene: A new dataset and evaluation protocol for video anomaly detection", WACV 2020 (Sec. 4),
  each the area under a detection-rate vs. false-positives-per-frame curve for FPR in [0, 1].

This module implements them from their published definitions (not from any reference code), with pure
numpy / scipy / scikit-learn, plus the helpers that turn ground truth into tracks: pixel masks
(:func:`tracks_from_masks`) or the ShanghaiTech-style track text files (:func:`read_track_file`).

Box convention: boxes are ``x1, y1, x2, y2`` in continuous pixel coordinates, area ``(x2-x1)*(y2-y1)``.
A pixel-mask component spanning columns ``x .. x+w-1`` therefore gets ``x1 = x, x2 = x + w``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = [
    "Regions",
    "Tracks",
    "box_iou",
    "detection_curve_area",
    "frame_roc",
    "macro_auc",
    "micro_auc",
    "per_video_auc",
    "rbdc_tbdc",
    "read_track_file",
    "tracks_from_masks",
    "tracks_from_table",
]


# ----------------------------------------------------------------------------------------------------------
# Frame-level AUC (SSMTL paper, Sec. 4: micro and macro AUC)
# ----------------------------------------------------------------------------------------------------------


def _check_frame_inputs(
    labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validate per-video labels and scores; return them as flat int8 / float64 arrays.

    Raises:
        ValueError: different numbers of videos, a video whose labels and scores differ in length (the
            message names the video index and both lengths), labels other than 0/1, non-finite scores.
    """
    if len(labels) != len(scores):
        raise ValueError(f"got labels for {len(labels)} videos but scores for {len(scores)} videos")
    if len(labels) == 0:
        raise ValueError("no videos: labels and scores are empty")
    out_labels, out_scores = [], []
    for index, (lab, sco) in enumerate(zip(labels, scores, strict=True)):
        lab = np.asarray(lab).reshape(-1)
        sco = np.asarray(sco, dtype=np.float64).reshape(-1)
        if lab.shape[0] != sco.shape[0]:
            raise ValueError(
                f"video {index}: {lab.shape[0]} labels but {sco.shape[0]} scores (one of each per frame)"
            )
        if lab.size and not np.isin(lab, (0, 1)).all():
            raise ValueError(f"video {index}: frame labels must be 0 (normal) or 1 (abnormal)")
        if not np.isfinite(sco).all():
            raise ValueError(f"video {index}: scores contain NaN or infinity")
        out_labels.append(lab.astype(np.int8))
        out_scores.append(sco)
    return out_labels, out_scores


def micro_auc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> float:
    """Micro-averaged frame AUC: ROC AUC over the frames of all videos concatenated (SSMTL paper, Sec. 4).

    Args:
        labels: one array per video of frame labels, 1 = abnormal, 0 = normal.
        scores: one array per video of frame anomaly scores (higher = more abnormal), same lengths.

    Returns:
        The ROC AUC in [0, 1].

    Raises:
        ValueError: on mismatched inputs (see :func:`per_video_auc`), or when the concatenated labels hold
            a single class (the AUC is then undefined).
    """
    labs, scos = _check_frame_inputs(labels, scores)
    y = np.concatenate(labs)
    s = np.concatenate(scos)
    if y.size == 0 or y.min() == y.max():
        raise ValueError(
            "micro AUC is undefined: the test frames must contain both normal and abnormal frames"
        )
    return float(roc_auc_score(y, s))


def per_video_auc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> list[float]:
    """ROC AUC of each video, each padded with one normal frame (score 0) and one abnormal frame (score 1).

    The padding is the convention used for the macro AUC of SSMTL (Sec. 4): many test videos are entirely
    abnormal (or entirely normal), for which the ROC AUC alone is undefined. Appending a normal frame of
    score 0 and an abnormal frame of score 1 makes every video's AUC defined while changing the AUC of a
    video with well-separated scores little. The padding only makes sense when the scores lie in [0, 1]
    (as after the per-video min-max normalisation the paper applies), so scores outside [0, 1] are refused.

    Args:
        labels: one array per video of frame labels, 1 = abnormal, 0 = normal.
        scores: one array per video of frame scores in [0, 1], same lengths as ``labels``.

    Returns:
        One AUC per video, in input order.

    Raises:
        ValueError: different numbers of videos, a video whose label and score counts differ (the message
            names the video and both lengths), labels other than 0/1, scores outside [0, 1] or not finite.
    """
    labs, scos = _check_frame_inputs(labels, scores)
    aucs = []
    for index, (lab, sco) in enumerate(zip(labs, scos, strict=True)):
        if sco.size and (sco.min() < 0.0 or sco.max() > 1.0):
            raise ValueError(
                f"video {index}: scores must lie in [0, 1] for the padded per-video AUC "
                f"(got [{sco.min():.4g}, {sco.max():.4g}]); min-max normalise each video's scores first"
            )
        y = np.concatenate([lab, np.array([0, 1], dtype=np.int8)])
        s = np.concatenate([sco, np.array([0.0, 1.0])])
        aucs.append(float(roc_auc_score(y, s)))
    return aucs


def macro_auc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> float:
    """Macro-averaged frame AUC: the mean of the padded per-video AUCs (SSMTL paper, Sec. 4).

    Args:
        labels: one array per video of frame labels, 1 = abnormal, 0 = normal.
        scores: one array per video of frame scores, expected in [0, 1] (see :func:`per_video_auc`).

    Returns:
        The mean per-video AUC in [0, 1].
    """
    return float(np.mean(per_video_auc(labels, scores)))


def frame_roc(
    labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve over all frames concatenated (the curve whose area is :func:`micro_auc`), for plotting.

    Returns:
        ``(fpr, tpr, thresholds)`` as given by :func:`sklearn.metrics.roc_curve`.
    """
    labs, scos = _check_frame_inputs(labels, scores)
    y = np.concatenate(labs)
    if y.size == 0 or y.min() == y.max():
        raise ValueError("ROC is undefined: the test frames must contain both normal and abnormal frames")
    fpr, tpr, thresholds = roc_curve(y, np.concatenate(scos))
    return fpr, tpr, thresholds


# ----------------------------------------------------------------------------------------------------------
# Boxes, predicted regions, ground-truth tracks
# ----------------------------------------------------------------------------------------------------------


def _as_boxes(boxes: np.ndarray, what: str) -> np.ndarray:
    """Return ``boxes`` as a float64 (N, 4) array with x1 <= x2 and y1 <= y2, else raise ValueError."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what}: boxes must have shape (N, 4) as x1, y1, x2, y2; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: boxes contain NaN or infinity")
    bad = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: box {i} = {arr[i].tolist()} has x2 < x1 or y2 < y1")
    return arr


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of two sets of boxes.

    Args:
        a: (N, 4) boxes ``x1, y1, x2, y2``.
        b: (M, 4) boxes ``x1, y1, x2, y2``.

    Returns:
        (N, M) float64 IoU matrix. Two empty (zero-area) boxes have IoU 0, never NaN.
    """
    a = _as_boxes(a, "box_iou(a)")
    b = _as_boxes(b, "box_iou(b)")
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0.0, None) * np.clip(iy2 - iy1, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _as_index(values: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        arr = arr.reshape(0)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{what}: expected {n} entries (one per box), got shape {arr.shape}")
    if arr.size and not np.array_equal(arr, np.round(arr)):
        raise ValueError(f"{what}: must hold integers")
    return arr.astype(np.int64)


@dataclass
class Regions:
    """Scored predicted regions (anomaly detections), one row per box.

    Attributes:
        video: (N,) int, video index.
        frame: (N,) int, frame index within the video.
        boxes: (N, 4) float, ``x1, y1, x2, y2`` in pixels.
        scores: (N,) float, anomaly score of each region (higher = more abnormal).
    """

    video: np.ndarray
    frame: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = _as_boxes(self.boxes, "Regions")
        n = self.boxes.shape[0]
        self.video = _as_index(self.video, n, "Regions.video")
        self.frame = _as_index(self.frame, n, "Regions.frame")
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != n:
            raise ValueError(f"Regions.scores: expected {n} entries (one per box), got {scores.shape[0]}")
        if not np.isfinite(scores).all():
            raise ValueError("Regions.scores: contain NaN or infinity")
        self.scores = scores

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> Regions:
        """No regions."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))

    @classmethod
    def concat(cls, parts: Sequence[Regions]) -> Regions:
        """Concatenate several :class:`Regions` (e.g. one per video) into one."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.video for p in parts]),
            np.concatenate([p.frame for p in parts]),
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
        )


@dataclass
class Tracks:
    """Ground-truth anomalous regions grouped in tracks, one row per region (box).

    A track is one anomalous object followed over time; its id is unique within a video, so a track is
    identified by the pair ``(video, track)``.

    Attributes:
        video: (M,) int, video index.
        track: (M,) int, track id (unique within a video).
        frame: (M,) int, frame index within the video.
        boxes: (M, 4) float, ``x1, y1, x2, y2`` in pixels.
    """

    video: np.ndarray
    track: np.ndarray
    frame: np.ndarray
    boxes: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = _as_boxes(self.boxes, "Tracks")
        n = self.boxes.shape[0]
        self.video = _as_index(self.video, n, "Tracks.video")
        self.track = _as_index(self.track, n, "Tracks.track")
        self.frame = _as_index(self.frame, n, "Tracks.frame")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def num_tracks(self) -> int:
        """Number of distinct ``(video, track)`` pairs."""
        if len(self) == 0:
            return 0
        return int(np.unique(np.stack([self.video, self.track], axis=1), axis=0).shape[0])

    @classmethod
    def empty(cls) -> Tracks:
        """No regions."""
        z = np.zeros(0, np.int64)
        return cls(z, z, z, np.zeros((0, 4)))

    @classmethod
    def concat(cls, parts: Sequence[Tracks]) -> Tracks:
        """Concatenate several :class:`Tracks` (e.g. one per video) into one.

        Track ids are kept as they are: they only need to be unique within a video, so the parts should
        carry different video indices (or disjoint track ids).
        """
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.video for p in parts]),
            np.concatenate([p.track for p in parts]),
            np.concatenate([p.frame for p in parts]),
            np.concatenate([p.boxes for p in parts]),
        )


# ----------------------------------------------------------------------------------------------------------
# RBDC / TBDC (Ramachandra & Jones, WACV 2020, Sec. 4)
# ----------------------------------------------------------------------------------------------------------


def detection_curve_area(
    fpr: np.ndarray, rate: np.ndarray, max_fpr: float = 1.0
) -> tuple[float, np.ndarray, np.ndarray]:
    """Area under a detection-rate vs. false-positives-per-frame curve, for FPR in [0, ``max_fpr``].

    The curve is taken as given by its points in increasing FPR (a vertical step is two points with the
    same FPR); it is prefixed with (0, 0) unless it already starts there, cut at ``max_fpr`` with linear
    interpolation on the segment that crosses it, or extended horizontally to ``max_fpr`` with its last
    rate when it ends earlier. The trapezoidal area is divided by ``max_fpr`` so the result lies in [0, 1]
    (with the standard ``max_fpr = 1`` this is the plain area, as in Ramachandra & Jones, WACV 2020).

    Args:
        fpr: false positives per frame of each curve point, non-decreasing.
        rate: detection rate (RBDC or TBDC y-value) of each point, in [0, 1].
        max_fpr: where the curve is cut, > 0.

    Returns:
        ``(area, x, y)``: the normalised area and the cut / extended curve that was integrated.
    """
    if not max_fpr > 0:
        raise ValueError(f"max_fpr must be > 0, got {max_fpr}")
    x = np.asarray(fpr, dtype=np.float64).reshape(-1)
    y = np.asarray(rate, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"fpr has {x.size} points but rate has {y.size}")
    if x.size and (np.any(np.diff(x) < 0) or x[0] < 0):
        raise ValueError("fpr must be non-negative and non-decreasing")
    if x.size == 0 or x[0] != 0 or y[0] != 0:
        x = np.concatenate([[0.0], x])
        y = np.concatenate([[0.0], y])
    # Points at or before the cut (all of a vertical step lying exactly at max_fpr are kept).
    keep = int(np.searchsorted(x, max_fpr, side="right"))
    cx, cy = x[:keep], y[:keep]
    if cx[-1] == max_fpr:
        pass  # the curve reaches the cut exactly: nothing to interpolate or extend
    elif keep < x.size:
        # Segment (x[keep-1], x[keep]) crosses max_fpr strictly (x[keep-1] < max_fpr < x[keep]).
        x0, x1, y0, y1 = x[keep - 1], x[keep], y[keep - 1], y[keep]
        y_cut = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        cx, cy = np.append(cx, max_fpr), np.append(cy, y_cut)
    else:
        cx, cy = np.append(cx, max_fpr), np.append(cy, cy[-1])
    area = float(np.sum(np.diff(cx) * (cy[1:] + cy[:-1]) / 2.0)) / max_fpr
    return area, cx, cy


def _group_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group row indices by integer key: returns (unique keys, start offsets, row order)."""
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    return uniq, np.append(starts, order.size), order


def _frames_in_common(regions: Regions, tracks: Tracks, order: np.ndarray):
    """Yield ``(ranks, gts)`` per (video, frame) holding both predictions and ground truth.

    ``ranks`` are positions in ``order`` (ascending, i.e. descending score; ties in input order) of the
    frame's predictions, ``gts`` the indices into ``tracks`` of its ground-truth regions (input order).
    """
    n = len(regions)
    both = np.concatenate(
        [
            np.stack([regions.video[order], regions.frame[order]], axis=1),
            np.stack([tracks.video, tracks.frame], axis=1),
        ]
    )
    _, key = np.unique(both, axis=0, return_inverse=True)
    key = key.reshape(-1)
    p_uniq, p_start, p_rows = _group_rows(key[:n])
    g_uniq, g_start, g_rows = _group_rows(key[n:])
    _, p_idx, g_idx = np.intersect1d(p_uniq, g_uniq, assume_unique=True, return_indices=True)
    for pi, gi in zip(p_idx, g_idx, strict=True):
        yield p_rows[p_start[pi] : p_start[pi + 1]], g_rows[g_start[gi] : g_start[gi + 1]]


def _published_match(regions: Regions, tracks: Tracks, order: np.ndarray, beta: float):
    """The published rules: per prediction, a false positive or the detection of every region it overlaps.

    Returns:
        ``(is_fp, detected_at)``: per rank in ``order``, whether the prediction is a false positive (IoU
        below ``beta`` with every ground-truth region of its frame); per ground-truth region, the first
        rank whose prediction overlaps it with IoU >= ``beta`` (``len(regions)`` when none does).
    """
    n = len(regions)
    is_fp = np.ones(n, dtype=bool)
    detected_at = np.full(len(tracks), n, dtype=np.int64)
    ranked_boxes = regions.boxes[order]
    for ranks, gts in _frames_in_common(regions, tracks, order):
        hit = box_iou(ranked_boxes[ranks], tracks.boxes[gts]) >= beta
        is_fp[ranks[hit.any(axis=1)]] = False
        detected_at[gts] = np.where(hit, ranks[:, None], n).min(axis=0)
    return is_fp, detected_at


def _one_to_one_match(regions: Regions, tracks: Tracks, order: np.ndarray, beta: float):
    """The stricter one-to-one rule (kept to measure what the published rules change).

    Each prediction, in descending score, takes the still-undetected region of highest IoU >= ``beta``
    (ties: input order); a prediction left without one is a false positive, even when it overlaps regions
    that higher-scored predictions already took. Same return values as :func:`_published_match`.
    """
    n = len(regions)
    is_fp = np.ones(n, dtype=bool)
    detected_at = np.full(len(tracks), n, dtype=np.int64)
    ranked_boxes = regions.boxes[order]
    for ranks, gts in _frames_in_common(regions, tracks, order):
        iou = box_iou(ranked_boxes[ranks], tracks.boxes[gts])
        iou[iou < beta] = -1.0  # below beta can never match
        for r in np.flatnonzero(iou.max(axis=1) >= 0.0):
            j = int(np.argmax(iou[r]))  # taken columns are -1
            if iou[r, j] < 0.0:
                continue
            is_fp[ranks[r]] = False
            detected_at[gts[j]] = ranks[r]
            iou[:, j] = -1.0
    return is_fp, detected_at


MATCHING_RULES = {"published": _published_match, "one_to_one": _one_to_one_match}


def rbdc_tbdc(
    regions: Regions,
    tracks: Tracks,
    num_frames: int,
    alpha: float = 0.1,
    beta: float = 0.1,
    max_fpr: float = 1.0,
    rules: str = "published",
) -> dict:
    """Region-based (RBDC) and track-based (TBDC) detection criteria (Ramachandra & Jones, WACV 2020).

    SSMTL's localisation metrics (paper Sec. 4; ``docs/method.md``, "Metrics"). The published rules:

    * A threshold sweeps the region scores; each distinct score is one curve point (a tie group enters
      whole), and the predictions at a threshold are the regions scoring at least that much.
    * A prediction is a **false positive** only when its IoU with every ground-truth region of its frame is
      below ``beta``. Otherwise it **detects every** region of its frame with IoU >= ``beta``; one that only
      overlaps regions already detected is neither a true nor a false positive.
    * RBDC rate = detected regions / all regions. TBDC rate = detected tracks / all tracks, a track of ``n``
      regions being detected once ``max(1, ceil(alpha * n))`` of them are.
    * x-axis of both: false positives per frame, over all ``num_frames`` test frames. Each criterion is the
      trapezoid area of its curve from (0, 0), cut at ``max_fpr`` or extended flat to it
      (:func:`detection_curve_area`).

    ``rules="one_to_one"`` is the stricter variant this project used before (each prediction detects at
    most its best still-undetected region, and a duplicate on a detected region is a false positive); it
    is kept only to report what the published rules change on the same scores.

    Args:
        regions: the scored predicted regions of all test videos.
        tracks: the ground-truth regions of all test videos, grouped in tracks.
        num_frames: total number of test frames (of all videos, with or without anomalies).
        alpha: fraction of a track's regions that must be detected for the track to be detected.
        beta: minimum IoU for a prediction to detect a ground-truth region.
        max_fpr: false positives per frame where the curves are cut (1 in the literature).
        rules: ``"published"`` (default) or ``"one_to_one"``.

    Returns:
        ``{"rbdc", "tbdc"}``: the two areas in [0, 1]; ``"fpr", "rbdc_curve", "tbdc_curve"``: the
        integrated curves (starting at (0, 0), cut or extended to ``max_fpr``, sharing the x-axis);
        ``"thresholds", "raw_fpr", "raw_rbdc", "raw_tbdc"``: one entry per distinct score, descending
        threshold, before cutting; ``"num_regions", "num_tracks"``: the ground-truth totals.

    Raises:
        ValueError: no ground-truth regions, ``num_frames`` < 1, invalid ``alpha`` / ``beta`` / ``rules``.
    """
    if len(tracks) == 0:
        raise ValueError(
            "RBDC/TBDC are undefined without ground-truth regions: the tracks are empty "
            "(check that the ground truth of the abnormal test videos was loaded)"
        )
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer (total test frames), got {num_frames}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must lie in (0, 1], got {beta}")
    if rules not in MATCHING_RULES:
        raise ValueError(f"rules must be one of {sorted(MATCHING_RULES)}, got {rules!r}")
    num_gt = len(tracks)
    _, track_index = np.unique(np.stack([tracks.video, tracks.track], axis=1), axis=0, return_inverse=True)
    track_index = track_index.reshape(-1)
    track_len = np.bincount(track_index)
    num_tracks = int(track_len.size)
    # Detected regions a track needs: the smallest integer c >= alpha * n (a small tolerance keeps e.g.
    # 0.55 * 100 = 55.00000000000001 at 55), and at least 1 so an undetected track never counts.
    need = np.maximum(1, np.ceil(alpha * track_len - 1e-9)).astype(np.int64)

    n = len(regions)
    if n == 0:
        x = np.array([0.0, max_fpr])
        zeros = np.zeros(2)
        empty = np.zeros(0)
        return {
            "rbdc": 0.0, "tbdc": 0.0, "fpr": x, "rbdc_curve": zeros, "tbdc_curve": zeros.copy(),
            "thresholds": empty, "raw_fpr": empty, "raw_rbdc": empty, "raw_tbdc": empty,
            "num_regions": num_gt, "num_tracks": num_tracks,
        }  # fmt: skip

    # Why one pass is exact: whether a prediction is a false positive, and which regions it detects,
    # depends only on itself and on higher-scored predictions of its frame. Lowering the threshold only adds
    # lower-scored predictions, which changes no earlier decision; so matching ALL predictions once in
    # descending score and counting cumulatively gives the from-scratch counts at every threshold.
    order = np.argsort(-regions.scores, kind="stable")
    is_fp, detected_at = MATCHING_RULES[rules](regions, tracks, order, beta)
    sorted_scores = regions.scores[order]
    ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))  # last rank of each tie
    fp_cum = np.cumsum(is_fp)[ends]
    regions_cum = np.searchsorted(np.sort(detected_at), ends, side="right")

    # Track detection: the rank at which a track's need-th region is detected (n when it never is).
    by_track = np.lexsort((detected_at, track_index))
    ranks_t, track_t = detected_at[by_track], track_index[by_track]
    first = np.searchsorted(track_t, np.arange(num_tracks), side="left")
    track_detected_at = ranks_t[first + need - 1]
    tracks_cum = np.searchsorted(np.sort(track_detected_at), ends, side="right")

    raw_fpr = fp_cum / float(num_frames)
    raw_rbdc = regions_cum / float(num_gt)
    raw_tbdc = tracks_cum / float(num_tracks)
    rbdc, x, y_r = detection_curve_area(raw_fpr, raw_rbdc, max_fpr)
    tbdc, _, y_t = detection_curve_area(raw_fpr, raw_tbdc, max_fpr)
    return {
        "rbdc": rbdc,
        "tbdc": tbdc,
        "fpr": x,
        "rbdc_curve": y_r,
        "tbdc_curve": y_t,
        "thresholds": sorted_scores[ends],
        "raw_fpr": raw_fpr,
        "raw_rbdc": raw_rbdc,
        "raw_tbdc": raw_tbdc,
        "num_regions": num_gt,
        "num_tracks": num_tracks,
    }


# ----------------------------------------------------------------------------------------------------------
# Ground-truth tracks: from pixel masks, or from ShanghaiTech-style track files
# ----------------------------------------------------------------------------------------------------------


def tracks_from_masks(masks: np.ndarray, video: int = 0, min_area: int = 10, link_iou: float = 0.1) -> Tracks:
    """Ground-truth tracks of one video from its pixel-level anomaly masks.

    Data sets such as UCSD Ped2 and CUHK Avenue give pixel masks rather than tracks; RBDC / TBDC
    (Ramachandra & Jones, WACV 2020) need regions grouped in tracks. Regions are the 8-connected components
    of each frame's mask with at least ``min_area`` pixels (smaller ones are annotation noise), as their
    bounding boxes ``x, y, x + w, y + h``. A region is linked to a region of the previous frame by IoU:
    candidate pairs with IoU >= ``link_iou`` are taken in descending IoU, each previous region continuing at
    most one track and each current region joining at most one; an unlinked region starts a new track.
    A frame without regions ends every track (the previous frame of the next one has nothing to link to).

    Args:
        masks: (T, H, W) masks, nonzero = anomalous pixel.
        video: the video index written into the returned tracks.
        min_area: minimum component size in pixels.
        link_iou: minimum box IoU to continue a track from the previous frame.

    Returns:
        The :class:`Tracks` of this video, track ids 0, 1, ... in order of appearance.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (T, H, W), got {masks.shape}")
    vids, tids, frames, boxes = [], [], [], []
    prev_boxes = np.zeros((0, 4))
    prev_ids = np.zeros(0, dtype=np.int64)
    next_id = 0
    for t in range(masks.shape[0]):
        binary = (masks[t] != 0).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        stats = stats[1:]  # row 0 is the background
        stats = stats[stats[:, cv2.CC_STAT_AREA] >= min_area]
        x = stats[:, cv2.CC_STAT_LEFT].astype(np.float64)
        y = stats[:, cv2.CC_STAT_TOP].astype(np.float64)
        cur_boxes = np.stack(
            [x, y, x + stats[:, cv2.CC_STAT_WIDTH], y + stats[:, cv2.CC_STAT_HEIGHT]], axis=1
        ).reshape(-1, 4)
        cur_ids = np.full(cur_boxes.shape[0], -1, dtype=np.int64)
        if cur_boxes.shape[0] and prev_boxes.shape[0]:
            iou = box_iou(cur_boxes, prev_boxes)
            used_prev = np.zeros(prev_boxes.shape[0], dtype=bool)
            pairs = np.argwhere(iou >= link_iou)
            # Descending IoU; the stable sort keeps (current, previous) index order for ties.
            pairs = pairs[np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")]
            for c, p in pairs:
                if cur_ids[c] < 0 and not used_prev[p]:
                    cur_ids[c] = prev_ids[p]
                    used_prev[p] = True
        for c in range(cur_ids.size):
            if cur_ids[c] < 0:
                cur_ids[c] = next_id
                next_id += 1
        vids.append(np.full(cur_ids.size, video, dtype=np.int64))
        tids.append(cur_ids)
        frames.append(np.full(cur_ids.size, t, dtype=np.int64))
        boxes.append(cur_boxes)
        prev_boxes, prev_ids = cur_boxes, cur_ids
    if not vids:
        return Tracks.empty()
    return Tracks(np.concatenate(vids), np.concatenate(tids), np.concatenate(frames), np.concatenate(boxes))


def tracks_from_table(table: np.ndarray | Sequence[Sequence[float]], video: int = 0) -> Tracks:
    """Tracks of one video from rows ``track_id, frame_id, x_min, y_min, x_max, y_max``.

    Args:
        table: (K, 6) array-like, the layout of the ShanghaiTech / Street Scene track files.
        video: the video index written into the returned tracks.

    Returns:
        The :class:`Tracks`; boxes are taken as given (no +1 on the max corner).
    """
    arr = np.asarray(table, dtype=np.float64)
    if arr.size == 0:
        return Tracks.empty()
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise ValueError(
            f"track table must have 6 columns (track_id, frame_id, x_min, y_min, x_max, y_max); "
            f"got shape {arr.shape}"
        )
    return Tracks(np.full(arr.shape[0], video, dtype=np.int64), arr[:, 0], arr[:, 1], arr[:, 2:6])


_SPLIT = re.compile(r"[,\s;]+")


def read_track_file(path: str | Path, video: int) -> Tracks:
    """Read a ground-truth track file: one region per line, ``track_id, frame_id, x_min, y_min, x_max, y_max``.

    This is the public layout of the region/track annotations used for RBDC / TBDC (ShanghaiTech tracks,
    Street Scene). Fields may be separated by commas and/or whitespace; blank lines and ``#`` comments are
    skipped, and a first line that is not numeric is taken as a header.

    Args:
        path: the text / CSV file.
        video: the video index written into the returned tracks.

    Returns:
        The :class:`Tracks` of the file (empty if it holds no rows).

    Raises:
        ValueError: a line that does not hold six numbers, or integer fields that are not integers; the
            message names the file and the line number.
    """
    path = Path(path)
    rows: list[list[float]] = []
    first_line = True
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f for f in _SPLIT.split(text) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if first_line:
                first_line = False  # a header: skip it; a later non-numeric line is an error
                continue
            raise ValueError(f"{path}:{number}: not numeric: {line!r}") from None
        first_line = False
        if len(values) != 6:
            raise ValueError(
                f"{path}:{number}: expected 6 fields (track_id, frame_id, x_min, y_min, x_max, y_max), "
                f"got {len(values)}: {line!r}"
            )
        if not (math.isfinite(values[0]) and math.isfinite(values[1])) or (
            values[0] != round(values[0]) or values[1] != round(values[1])
        ):
            raise ValueError(f"{path}:{number}: track_id and frame_id must be integers: {line!r}")
        rows.append(values)
    if not rows:
        return Tracks.empty()
    try:
        return tracks_from_table(np.array(rows), video=video)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None

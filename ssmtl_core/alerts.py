"""Alerts: where a user sees them, per frame and per segment, at a false-alarm rate chosen on normal frames
(not in the paper; ``docs/method.md``, "Alerts").

Calibrated object scores (:mod:`ssmtl_core.calibration`) say how unusual each object is against normal ones,
and :func:`ssmtl_core.score.calibrated_frame_scores` carries them to frames (each frame's most unusual object,
smoothed over time). A user, though, is alerted per frame, and a frame holds many objects: a threshold that 1
normal object in 100 crosses is crossed by far more than 1 normal frame in 100 (1 - 0.99^17 = 16% of frames
with 17 objects), and the temporal smoothing turns the crossings into runs. So the alert is decided on the
frame scores themselves:

* **threshold** (:func:`frame_threshold`): chosen on the frame scores of held-out normal frames (the validation
  part of each training video, every detection scored) so that a stated share of normal frames
  (:data:`ALERT_RATE`) lies over it, with an exponential tail fitted to the highest normal frames, as a few
  hundred correlated frames cannot show a 0.5% quantile by themselves;
* **cross-fitted** (:func:`crossfit_frame_scores`): the normal frames of each training video are read against
  a calibration built from the *other* videos' validation objects, so that the frames choosing the threshold
  are not the ones that defined "normal" (in-sample they would look more ordinary than any new video);
* **segments** (:func:`alert_runs`, :func:`alert_segments`): frames at or over the threshold form runs; runs
  separated by fewer than ``min_frames`` frames are joined and runs shorter than ``min_frames`` are dropped;
  the object of highest calibrated score in a segment says *which* object raised it.

:func:`alert_events` counts, from test labels, the labelled events an alert overlaps, its delay and the normal
frames alerted (reported only, never used to choose anything). Plain NumPy on stored scores, like
:mod:`ssmtl_core.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import Calibration, select_objects, to_surprise
from .config import ScoreConfig
from .score import ObjectScores, calibrated_frame_scores

#: The share of normal frames the alert threshold is chosen to leave over it: half the 1% a user can bear,
#: because the threshold is estimated from a few hundred correlated frames.
ALERT_RATE = 0.005
#: The share of the highest normal frame surprises that the threshold's exponential tail is fitted to.
FRAME_TAIL_FRACTION = 0.2
#: A frame within this many smoothing sigmas of a labelled abnormal frame "borders" it (reports only).
BORDER_SIGMAS = 2.0


def min_alert_frames(config: ScoreConfig) -> int:
    """The shortest alert segment (and the longest gap joined inside one): the temporal Gaussian's sigma in
    frames, at least 1. Smoothing turns one unusual frame into a bump about that wide, so a shorter run over
    the threshold is a bump that barely touches it, not a sustained anomaly."""
    if not config.gauss_taps or config.gauss_taps <= 1:
        return 1
    return max(1, int(round(config.gauss_sigma)))


def frame_threshold(normal_frames: np.ndarray, rate: float = ALERT_RATE) -> float:
    """The calibrated frame score that ``rate`` of normal frames reach.

    In surprise units ``-log(1 - score)``: the larger of the empirical ``1 - rate`` quantile and the quantile
    of an exponential tail fitted to the top :data:`FRAME_TAIL_FRACTION` of the normal frames (peaks over a
    threshold: the edge plus the mean excess times ``log(fraction / rate)``), so that a rate below one frame
    in a few hundred is extrapolated instead of read off the largest frame.

    Args:
        normal_frames: calibrated frame scores of normal frames, in [0, 1].
        rate: the share of normal frames to leave at or over the threshold.

    Returns:
        The threshold, in [0, 1).
    """
    surprises = to_surprise(np.asarray(normal_frames, np.float64).ravel())
    if surprises.size == 0:
        raise ValueError("no normal frames to choose an alert threshold on")
    empirical = float(np.quantile(surprises, 1.0 - rate))
    edge = float(np.quantile(surprises, 1.0 - FRAME_TAIL_FRACTION))
    excess = surprises[surprises > edge] - edge
    scale = float(excess.mean()) if excess.size else 0.0
    tail = edge + scale * np.log(FRAME_TAIL_FRACTION / rate) if rate < FRAME_TAIL_FRACTION else edge
    return float(-np.expm1(-max(empirical, tail)))


def alert_runs(over: np.ndarray, min_frames: int = 1) -> list[tuple[int, int]]:
    """Alert segments from a per-frame "at or over the threshold": runs separated by fewer than ``min_frames``
    frames are joined, then runs shorter than ``min_frames`` are dropped.

    Returns:
        ``(start, stop)`` of each segment, stop exclusive, in time order.
    """
    over = np.asarray(over, bool)
    edges = np.flatnonzero(np.diff(np.r_[0, over.astype(np.int8), 0]))
    runs: list[list[int]] = []
    for start, stop in zip(edges[::2].tolist(), edges[1::2].tolist()):
        if runs and start - runs[-1][1] < min_frames:
            runs[-1][1] = stop
        else:
            runs.append([start, stop])
    return [(start, stop) for start, stop in runs if stop - start >= min_frames]


def alerted_frames(frame_scores: np.ndarray, threshold: float, min_frames: int = 1) -> np.ndarray:
    """(T,) bool: the frames inside an alert segment."""
    out = np.zeros(len(frame_scores), bool)
    for start, stop in alert_runs(np.asarray(frame_scores) >= threshold, min_frames):
        out[start:stop] = True
    return out


def alert_segments(frame_scores: np.ndarray, threshold: float, object_scores: np.ndarray, frame: np.ndarray,
                   boxes: np.ndarray, min_frames: int = 1) -> list[dict]:
    """The alert segments of a video (:func:`alert_runs` of the frames at or over ``threshold``).

    Returns:
        One record per segment, in time order: ``start`` and ``end`` frame (inclusive), ``frames``, the highest
        frame score ``peak_frame_score``, and the segment's most unusual object ``peak_object``
        (``frame``, ``box``, ``score``; None when the segment's frames have no objects): the explanation of
        which object raised the alert.
    """
    frame_scores = np.asarray(frame_scores)
    frame = np.asarray(frame, int)
    segments = []
    for start, stop in alert_runs(frame_scores >= threshold, min_frames):
        inside = np.flatnonzero((frame >= start) & (frame < stop))
        peak = None
        if len(inside):
            i = inside[np.argmax(np.asarray(object_scores)[inside])]
            peak = {"frame": int(frame[i]), "box": [round(float(v), 1) for v in np.asarray(boxes)[i][:4]],
                    "score": round(float(object_scores[i]), 6)}
        segments.append({"start": int(start), "end": int(stop - 1), "frames": int(stop - start),
                         "peak_frame_score": round(float(np.max(frame_scores[start:stop])), 6),
                         "peak_object": peak})
    return segments


# -- the rule, chosen on normal frames -----------------------------------------------------------------------


@dataclass
class AlertRule:
    """When frames alert: calibrated frame score at or over ``threshold``, in segments of at least
    ``min_frames`` frames (gaps shorter than that joined).

    Attributes:
        threshold: on calibrated frame scores.
        min_frames: the shortest segment, and the longest gap joined inside one.
        rate: the share of normal frames the threshold was chosen to leave over it (None: not chosen so).
        source: where the threshold comes from, in words.
        normal_frames: the held-out normal frames it was chosen on (0: none).
        normal_clips: the training videos those frames come from.
        normal_over: the share of those frames at or over the threshold (cross-fitted).
        normal_alerted: the share of those frames inside an alert segment.
    """

    threshold: float
    min_frames: int = 1
    rate: float | None = None
    source: str = ""
    normal_frames: int = 0
    normal_clips: int = 0
    normal_over: float | None = None
    normal_alerted: float | None = None

    def segments(self, frame_scores: np.ndarray, object_scores: np.ndarray, frame: np.ndarray,
                 boxes: np.ndarray) -> list[dict]:
        """The alert segments of one video's frame scores (:func:`alert_segments`)."""
        return alert_segments(frame_scores, self.threshold, object_scores, frame, boxes, self.min_frames)

    def alerted(self, frame_scores: np.ndarray) -> np.ndarray:
        """(T,) bool: the frames inside an alert segment."""
        return alerted_frames(frame_scores, self.threshold, self.min_frames)

    def given(self, threshold: float) -> AlertRule:
        """The same rule at a threshold the user gave (``--threshold``)."""
        return AlertRule(float(threshold), self.min_frames, None, "given (--threshold)")

    def to_state(self) -> dict:
        """The rule as stored in a checkpoint's ``calibration["alert"]`` (plain numbers and words)."""
        return {"threshold": self.threshold, "min_frames": self.min_frames, "rate": self.rate, "source": self.source,
                "normal_frames": self.normal_frames, "normal_clips": self.normal_clips,
                "normal_over": self.normal_over, "normal_alerted": self.normal_alerted}

    @classmethod
    def from_state(cls, stored: dict) -> AlertRule:
        names = ("threshold", "min_frames", "rate", "source", "normal_frames", "normal_clips", "normal_over",
                 "normal_alerted")
        return cls(**{name: stored[name] for name in names if name in stored})

    def summary(self) -> dict:
        """What ``summary.json`` and ``metrics.json`` say about the rule."""
        out = {"threshold": round(self.threshold, 6), "min_frames": self.min_frames, "target_rate": self.rate,
               "rule": self.describe(), "source": self.source}
        if self.normal_frames:
            out |= {"normal_frames": self.normal_frames, "normal_clips": self.normal_clips,
                    "normal_frames_over_threshold": _round(self.normal_over),
                    "normal_frames_alerted": _round(self.normal_alerted)}
        return out

    def describe(self) -> str:
        """The rule in one sentence."""
        chosen = (f", the calibrated frame score that {100 * self.rate:g}% of normal frames reach"
                  if self.rate is not None else "")
        return (f"a frame alerts when its calibrated frame score is at or over {self.threshold:.6g}{chosen}; "
                f"alerts closer than {self.min_frames} frames join, and a segment needs {self.min_frames} frames")


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def fallback_rule(calibration: Calibration) -> AlertRule:
    """The rule of a checkpoint calibrated before frame-level alerts: the 99th percentile of the validation
    objects' calibrated scores, one frame enough (far more normal frames alert than 1%: see docs/method.md)."""
    return AlertRule(calibration.threshold, 1, None, "fallback: the 99th percentile of the validation objects "
                     "(the checkpoint predates frame-level alerts; `ssmtl calibrate --run DIR` chooses one on "
                     "normal frames)")


def crossfit_frame_scores(validation: dict, clips: list[dict], config: ScoreConfig,
                          tasks: tuple[str, ...] | None = None) -> list[np.ndarray]:
    """The calibrated frame scores of the normal validation clips, each read against the other clips' objects.

    Args:
        validation: the stored validation scores (``tasks``, ``kd_has_classes``, and ``clip`` and ``frame`` of
            each object: :func:`ssmtl_core.runs.validation_scores`).
        clips: each clip's ``start`` (its first frame in the training video) and ``frames`` (its length).
        config: the profile's score settings (the temporal smoothing of frame scores).
        tasks: the tasks to combine (default: all of the calibration's).

    Returns:
        One (frames,) array per clip. With a single clip there is nothing else to read it against: it is read
        against itself (in-sample).
    """
    clip = np.asarray(validation["clip"], int)
    frame = np.asarray(validation["frame"], int)
    has = np.asarray(validation.get("kd_has_classes", np.zeros(len(clip), bool)), bool)
    out = []
    for c, info in enumerate(clips):
        own = clip == c
        reference = ~own if (~own).any() and len(clips) > 1 else np.ones(len(clip), bool)
        calibration = Calibration(select_objects(validation, reference), tasks)
        rows = np.flatnonzero(own)
        raw = {t: np.asarray(validation["tasks"][t], np.float32)[rows] for t in calibration.tasks}
        objects = ObjectScores(frame[rows] - int(info["start"]), np.zeros((len(rows), 4), np.float32), raw,
                               has[rows] if len(has) == len(clip) else None)
        out.append(calibrated_frame_scores(calibration.object_scores(objects), objects.frame, int(info["frames"]),
                                           config))
    return out


def choose_alert_rule(normal_clips: list[np.ndarray], config: ScoreConfig, rate: float = ALERT_RATE,
                      source: str = "normal validation frames") -> AlertRule:
    """The alert rule of a run: :func:`frame_threshold` at ``rate`` on the normal clips' frame scores (cross-fitted:
    :func:`crossfit_frame_scores`), segments of at least :func:`min_alert_frames`."""
    scores = np.concatenate([np.asarray(c, np.float64) for c in normal_clips])
    threshold = frame_threshold(scores, rate)
    min_frames = min_alert_frames(config)
    alerted = np.concatenate([alerted_frames(c, threshold, min_frames) for c in normal_clips])
    return AlertRule(threshold, min_frames, rate, source, int(len(scores)), len(normal_clips),
                     float((scores >= threshold).mean()), float(alerted.mean()))


# -- what the test labels say (reported, never used to choose) -----------------------------------------------


def label_events(labels: np.ndarray) -> list[tuple[int, int]]:
    """The labelled abnormal events of a video: its runs of abnormal frames, ``(start, stop)``, stop exclusive."""
    return alert_runs(np.asarray(labels).astype(bool), 1)


def alert_events(labels: list[np.ndarray], frame_scores: list[np.ndarray], rule: AlertRule,
                 border: float | None = None) -> dict:
    """How the alerts of test videos meet their labels: reported, never used to choose anything.

    Args:
        labels: each video's frame labels (1 abnormal).
        frame_scores: each video's calibrated frame scores.
        rule: the alert rule.
        border: frames within this distance of an abnormal frame are counted apart as "bordering" normal
            frames (where temporal smoothing spreads an anomaly's score); None: not counted.

    Returns:
        ``events`` (labelled abnormal events, runs of abnormal frames per video), ``events_alerted`` (those an
        alert segment overlaps), ``delays`` (per alerted event, frames from its first frame to its first
        alerted frame), ``delay_median``/``delay_max``, ``normal_frames``, ``normal_frames_over_threshold``,
        ``normal_frames_alerted`` (inside a segment), ``false_segments`` (segments overlapping no abnormal
        frame) and ``false_segments_per_1000_normal_frames``, and with ``border`` the share of alerted normal
        frames that border an event.
    """
    events = alerted_events = false_segments = normal = over_normal = alerted_normal = bordering = 0
    delays: list[int] = []
    for truth, scores in zip(labels, frame_scores):
        truth = np.asarray(truth).astype(bool)
        scores = np.asarray(scores)
        alerted = rule.alerted(scores)
        for start, stop in label_events(truth):
            events += 1
            hit = np.flatnonzero(alerted[start:stop])
            if hit.size:
                alerted_events += 1
                delays.append(int(hit[0]))
        for start, stop in alert_runs(alerted, 1):
            false_segments += int(not truth[start:stop].any())
        normal += int((~truth).sum())
        over_normal += int((scores[~truth] >= rule.threshold).sum())
        alerted_normal += int(alerted[~truth].sum())
        if border is not None and truth.any():
            distance = np.abs(np.arange(len(truth))[:, None] - np.flatnonzero(truth)[None, :]).min(axis=1)
            bordering += int((alerted & ~truth & (distance <= border)).sum())
    out = {"events": events, "events_alerted": alerted_events, "delays": delays,
           "delay_median": float(np.median(delays)) if delays else None,
           "delay_max": int(max(delays)) if delays else None, "normal_frames": normal,
           "normal_frames_over_threshold": over_normal / normal if normal else None,
           "normal_frames_alerted": alerted_normal / normal if normal else None,
           "false_segments": false_segments,
           "false_segments_per_1000_normal_frames": 1000 * false_segments / normal if normal else None}
    if border is not None:
        out["alerted_normal_frames_bordering_events"] = bordering / alerted_normal if alerted_normal else None
    return out

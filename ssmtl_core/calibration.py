"""Calibrated scores: raw task scores read against a trained model's normal validation objects (NumPy only).

At the end of training, the best checkpoint's raw task scores of the validation objects (the last 15% of
each training video, normal by construction) are stored in ``best.pt`` (:mod:`ssmtl_core.runs` computes and
stores them; ``ssmtl calibrate --run DIR`` adds them to a checkpoint written before). They give a scale that
needs no test data:

* the two kinds of distillation discrepancy of the hybrid detector (detector class scores for COCO boxes,
  ImageNet logits for motion blobs) are each standardised by their own validation statistics before they are
  compared (:func:`standardize_discrepancy`; ``docs/method.md``, "Scoring");
* :class:`Calibration` turns any object's raw task scores into a calibrated score, the fraction of normal
  validation objects that are less unusual; :func:`ssmtl_core.score.calibrated_frame_scores` carries it to
  frames and :mod:`ssmtl_core.alerts` decides alerts on those frame scores (``docs/method.md``, "Calibrated
  scores for your own videos", "Alerts"). ``ssmtl score-video`` reports these by default, and ``ssmtl
  evaluate`` their AUCs beside the paper's per-video normalisation.

The validation objects are every detection of the validation frames (the last 15% of each training video):
:func:`ssmtl_core.runs.validation_frame_scores`.

This module is plain NumPy on stored scores: it runs no model and reads no file, so the scorer
(:mod:`ssmtl_core.score`) builds on it.
"""

from __future__ import annotations

import numpy as np

from .errors import SSMTLError

#: A kind of discrepancy with fewer validation objects than this is standardised by the video's own
#: objects of that kind instead (the median and spread of a handful of objects are not a scale).
MIN_CALIBRATION_OBJECTS = 20


def _robust_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and interquartile range (floored so a constant set does not divide by zero)."""
    low, centre, high = np.percentile(values, [25, 50, 75])
    return float(centre), float(max(high - low, 1e-6))


def standardize_discrepancy(kd: np.ndarray, has_classes: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Put the two kinds of distillation discrepancy of a video on one scale.

    Each kind (class-score discrepancy of COCO boxes, logit discrepancy of class-agnostic blobs) becomes
    ``(d - median) / IQR`` of the same kind on the validation objects, or, when the checkpoint holds fewer
    than :data:`MIN_CALIBRATION_OBJECTS` of that kind, of the same kind in this video.

    Args:
        kd: (N,) raw discrepancies.
        has_classes: (N,) True where the discrepancy is against the detector's class scores.
        calibration: the checkpoint's ``calibration`` entry, or None.
    """
    out = np.asarray(kd, np.float32).copy()
    reference_kd = reference_has = None
    if calibration and "kd" in calibration.get("tasks", {}):
        reference_kd = np.asarray(calibration["tasks"]["kd"], np.float32)
        reference_has = np.asarray(calibration["kd_has_classes"], bool)
    for kind in (True, False):
        rows = has_classes == kind
        if not rows.any():
            continue
        reference = out[rows]
        if reference_kd is not None and (reference_has == kind).sum() >= MIN_CALIBRATION_OBJECTS:
            reference = reference_kd[reference_has == kind]
        centre, spread = _robust_scale(reference)
        out[rows] = (out[rows] - centre) / spread
    return out


# -- calibrated scores: raw task scores -> "how unusual, against normal data" ------------------------------

#: The object level :attr:`Calibration.threshold`: the 99th percentile of the validation objects' calibrated
#: scores (an object over it is more unusual than 99% of normal objects). Not the alert threshold, which is
#: chosen on frames (:mod:`ssmtl_core.alerts`): a frame of 17 normal objects crosses this one 16% of the time.
#: Only checkpoints calibrated before frame-level alerts fall back on it.
ALERT_QUANTILE = 0.99
#: The share of the highest (and of the lowest) reference scores that each exponential tail is fitted to.
TAIL_FRACTION = 0.1
#: The largest surprise -log(1 - p) a calibrated value in (0, 1) is read back as (p rounded to 1 in float64).
MAX_SURPRISE = float(-np.log(np.finfo(np.float64).eps))


class _Reference:
    """The sorted reference (normal) scores of one quantity, with their mid-ranks and tail scales."""

    def __init__(self, reference: np.ndarray):
        reference = np.sort(np.asarray(reference, np.float64).ravel())
        if len(reference) == 0:
            raise ValueError("the reference holds no scores")
        self.n = len(reference)
        self.points, counts = np.unique(reference, return_counts=True)
        self.ranks = (np.cumsum(counts) - 0.5 * counts) / self.n  # mid-ranks of the distinct values
        self.upper = _tail_scale(reference, upper=True)
        self.lower = _tail_scale(reference, upper=False)

    def surprise(self, values: np.ndarray) -> np.ndarray:
        """-log(1 - F(x)) of :func:`empirical_cdf`, computed in logs so that the upper tail never rounds to
        infinity: beyond the largest reference value it grows linearly with the distance, in tail scales."""
        values = np.asarray(values, np.float64)
        cdf = np.interp(values, self.points, self.ranks)
        low = values < self.points[0]
        cdf[low] = self.ranks[0] * np.exp(-(self.points[0] - values[low]) / self.lower)
        out = -np.log1p(-np.minimum(cdf, self.ranks[-1]))
        high = values > self.points[-1]
        out[high] = -np.log1p(-self.ranks[-1]) + (values[high] - self.points[-1]) / self.upper
        return out


def _tail_scale(reference: np.ndarray, upper: bool) -> float:
    """Scale of the exponential tail beyond the largest (``upper``) or below the smallest reference value: the
    mean excess over the reference's 90th (10th) percentile, the maximum-likelihood fit of an exponential to
    the outer 10% of the values; floored so that a constant reference still ranks what lies beyond it."""
    if upper:
        edge = np.quantile(reference, 1 - TAIL_FRACTION)
        excess = reference[reference >= edge] - edge
    else:
        edge = np.quantile(reference, TAIL_FRACTION)
        excess = edge - reference[reference <= edge]
    floor = 1e-6 * max(1.0, float(np.abs(reference).max()))
    return max(float(excess.mean()) if excess.size else 0.0, floor)


def select_objects(validation: dict, rows: np.ndarray) -> dict:
    """The stored validation scores of some objects only (``rows``: a boolean mask or indices): every per-object
    entry (``tasks``, ``kd_has_classes``, ``classes``, ``clip``, ``frame``) cut alike, as NumPy arrays."""
    n = int(validation.get("objects") or len(next(iter(validation["tasks"].values()))))
    out = {"tasks": {t: np.asarray(v)[rows] for t, v in validation["tasks"].items()}}
    for name in ("kd_has_classes", "classes", "clip", "frame"):
        if name in validation and len(validation[name]) == n:
            out[name] = np.asarray(validation[name])[rows]
    out["objects"] = int(len(next(iter(out["tasks"].values()))))
    return out


def empirical_cdf(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The fraction of the reference (normal) scores that each value exceeds, as a smooth increasing function.

    * At a reference value: its mid-rank, (number below + half the number equal) / n. Ties count half, and the
      n reference values themselves spread evenly over (0, 1), at (k - 0.5) / n.
    * Between two reference values: linear, so distinct values keep distinct, ordered results.
    * Beyond the largest reference value: an exponential tail ``1 - 0.5 / n * exp(-(x - max) / s)``, ``s``
      fitted to the top 10% of the reference; below the smallest, the mirror image. A value above every
      reference value still ranks by how far above it is (up to float64 rounding far out; :func:`surprise`
      keeps that ranking at any distance).

    Args:
        values: (N,) raw scores.
        reference: (n,) raw scores of normal objects, n >= 1.

    Returns:
        (N,) float64 in (0, 1].
    """
    return -np.expm1(-_Reference(reference).surprise(values))


def surprise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``-log(1 - empirical_cdf(values, reference))``: 0 for the most ordinary values, log(2n) at the largest
    reference value, and growing linearly (one per tail scale) beyond it."""
    return _Reference(reference).surprise(values)


def to_surprise(calibrated: np.ndarray) -> np.ndarray:
    """Calibrated values p in [0, 1] -> surprise -log(1 - p) (capped at :data:`MAX_SURPRISE`)."""
    return np.minimum(-np.log1p(-np.clip(np.asarray(calibrated, np.float64), 0.0, 1.0 - 1e-16)), MAX_SURPRISE)


class Calibration:
    """Raw task scores -> calibrated scores, from a checkpoint's validation scores alone (``docs/method.md``,
    "Calibrated scores for your own videos").

    1. Each task's raw score is read against the validation objects' scores of that task: its surprise
       ``-log(1 - p)``, where ``p`` is the fraction of normal validation objects it exceeds
       (:func:`empirical_cdf`; ties handled, smooth tails).
    2. An object's evidence is the sum of its task surprises (Fisher's method of combining tests, up to a
       factor 2): every task weighs the same whatever its units (probabilities, pixel errors, logit distances),
       as in the paper's sum of normalised task scores, and an object that one task finds far out of the
       normal range stands out even when the other tasks find it ordinary. A mean of the fractions ``p``
       (tried first) caps what a single task can add at 1/4 and ranked the synthetic test objects worse.
       Summing raw scores would let the task with the largest units decide alone.
    3. The calibrated object score is the fraction of validation objects whose own evidence it exceeds
       (:func:`empirical_cdf` again): 0.995 means "more unusual than 99.5% of normal objects", in any video,
       whatever else the video holds.

    :attr:`threshold` is the 99th percentile (:data:`ALERT_QUANTILE`) of the validation objects' calibrated
    scores: an object-level reference, not the alert threshold (chosen on frames: :mod:`ssmtl_core.alerts`). The
    validation objects are every detection in the last 15% of each training video, never trained on.

    The hybrid detector's distillation discrepancy has two kinds (detector class scores, teacher logits) on
    different scales; each kind is read against the validation objects of its own kind when they number at
    least :data:`MIN_CALIBRATION_OBJECTS`, and against all of them otherwise.

    Args:
        validation: the ``calibration`` entry of a checkpoint (:func:`validation_scores`).
        tasks: the tasks to combine (default: every task with validation scores).
    """

    def __init__(self, validation: dict, tasks: tuple[str, ...] | None = None):
        stored = {task: np.asarray(values, np.float64) for task, values in validation["tasks"].items()}
        names = [t for t in ("aot", "irr", "mid", "kd") if t in stored and len(stored[t])
                 and (tasks is None or t in tasks)]
        if not names:
            raise SSMTLError("the calibration holds no validation scores of the trained tasks")
        self.tasks = tuple(names)
        self.validation = validation
        self.objects = int(min(len(stored[t]) for t in self.tasks))
        self._tasks = {t: _Reference(stored[t]) for t in self.tasks}
        has = np.asarray(validation.get("kd_has_classes", np.zeros(0, bool)), bool)
        has = has if "kd" in self.tasks and len(has) == len(stored["kd"]) else None
        self._kd_kinds = {kind: _Reference(stored["kd"][has == kind]) for kind in (True, False)
                          if has is not None and (has == kind).sum() >= MIN_CALIBRATION_OBJECTS}
        evidence = self.evidence(stored, has)
        self._evidence = _Reference(evidence)
        self.threshold = float(np.quantile(-np.expm1(-self._evidence.surprise(evidence)), ALERT_QUANTILE))

    @classmethod
    def from_state(cls, state: dict, tasks: tuple[str, ...] | None = None) -> Calibration | None:
        """The calibration of a checkpoint, or None when it holds none (made before calibration existed, or
        without validation objects)."""
        validation = state.get("calibration")
        if not validation or not validation.get("objects"):
            return None
        return cls(validation, tasks)

    def task_surprises(self, tasks: dict[str, np.ndarray], kd_has_classes: np.ndarray | None = None
                       ) -> dict[str, np.ndarray]:
        """Each task's surprise ``-log(1 - p)`` against the validation objects.

        Args:
            tasks: task -> (N,) raw scores (the distillation discrepancy not standardised).
            kd_has_classes: (N,) the kind of each object's distillation discrepancy (None: unknown; every
                object is then read against all validation objects).
        """
        out = {}
        for task in self.tasks:
            values = np.asarray(tasks[task], np.float64)
            out[task] = self._tasks[task].surprise(values)
            if task == "kd" and kd_has_classes is not None:
                for kind, reference in self._kd_kinds.items():
                    rows = np.asarray(kd_has_classes, bool) == kind
                    out[task][rows] = reference.surprise(values[rows])
        return out

    def evidence(self, tasks: dict[str, np.ndarray], kd_has_classes: np.ndarray | None = None) -> np.ndarray:
        """(N,) the sum of the task surprises of each object (step 2)."""
        surprises = self.task_surprises(tasks, kd_has_classes)
        return np.sum([surprises[t] for t in self.tasks], axis=0)

    def object_scores(self, scores, tasks: tuple[str, ...] | None = None) -> np.ndarray:
        """(N,) float64 calibrated scores in (0, 1] of the objects of one video.

        Args:
            scores: the video's raw task scores (:class:`~ssmtl_core.score.ObjectScores`).
            tasks: a subset of the calibration's tasks (each task alone for the per-task curves); the subset's
                evidence is read against the validation objects' evidence of the same subset.

        Raises:
            SSMTLError: the scores lack a task of the calibration.
        """
        if tasks is not None and tuple(tasks) != self.tasks:
            return self.subset(tasks).object_scores(scores)
        missing = [t for t in self.tasks if t not in scores.tasks]
        if missing:
            raise SSMTLError(f"the object scores have no {', '.join(missing)} scores, which the calibration needs.")
        if len(scores.frame) == 0:
            return np.zeros(0, np.float64)
        raw = {t: scores.tasks[t] for t in self.tasks}
        if "kd" in raw and getattr(scores, "raw_kd", None) is not None:
            raw["kd"] = scores.raw_kd
        return -np.expm1(-self._evidence.surprise(self.evidence(raw, getattr(scores, "kd_has_classes", None))))

    def subset(self, tasks: tuple[str, ...]) -> Calibration:
        """The calibration of a subset of the tasks (cached)."""
        key = tuple(t for t in self.tasks if t in tasks)
        if key == self.tasks:
            return self
        cache = self.__dict__.setdefault("_subsets", {})
        if key not in cache:
            cache[key] = Calibration(self.validation, key)
        return cache[key]

    def summary(self) -> dict:
        """What ``summary.json`` and ``metrics.json`` say about the calibration."""
        return {"validation_objects": self.objects, "tasks": list(self.tasks),
                "object_threshold": round(self.threshold, 6),
                "object_threshold_rule": f"{100 * ALERT_QUANTILE:g}th percentile of the calibrated scores of the "
                                         f"{self.objects} normal validation objects (not the alert threshold)",
                "score": "fraction of the normal validation objects that are less unusual (per-task surprises "
                         "-log(1 - p) summed, read against the validation objects' sums)"}

"""From a trained model to object, frame and pixel anomaly scores (paper Sec. 3.4; ``docs/method.md``, "Scoring", "From objects to frames").

An object's anomaly score is the sum of four task scores: P(backward) of its forward sequence (arrow of
time), P(intermittent) of its consecutive sequence (motion irregularity), the mean absolute error of its
middle-crop reconstruction, and the distillation discrepancy (mean absolute difference between the
detector's class scores and the student's prediction of them; with a class-agnostic detector, between the
ImageNet teacher's logits of the test object and the student's). Per video each task's scores are min-max
normalised, summed and normalised again (the authors skip the first normalisation on Avenue).

Object scores become frame scores through a grid of ``H/b x W/b x T`` cells: each object's score is painted
into the cells of its box (the max where boxes overlap; frames without objects score 0), the grid is
optionally smoothed by a 3D mean filter, each frame takes the max over its cells, and a 1D Gaussian
smooths over time with the first/last frame repeated at the edges. The same grid is the pixel-level
anomaly map, and the regions scored for RBDC/TBDC are the detected boxes with the grid's value inside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch
from scipy.ndimage import convolve1d, uniform_filter
from torch import nn

from .calibration import standardize_discrepancy, to_surprise
from .config import IMAGENET_CLASSES, TASKS, SampleConfig, ScoreConfig
from .detections import Detections
from .errors import SSMTLError
from .model import SSMTLModel, as_input
from .runtime import compile_module
from .samples import scoring_sequences


@dataclass
class ObjectScores:
    """The raw per-task scores of the objects of one video.

    Attributes:
        frame: (N,) frame index of each object.
        boxes: (N, 4) its box.
        tasks: task name -> (N,) raw score (``aot``, ``irr``, ``mid``, ``kd`` as available).
        kd_has_classes: (N,) True where the distillation score compares detector class scores (False: teacher
            logits), or None (unknown).
        raw_kd: (N,) the distillation scores before the hybrid detector's standardisation, where ``tasks["kd"]``
            was standardised (None: ``tasks["kd"]`` is raw); the calibrated scores read the raw ones.
    """

    frame: np.ndarray
    boxes: np.ndarray
    tasks: dict[str, np.ndarray]
    kd_has_classes: np.ndarray | None = None
    raw_kd: np.ndarray | None = None

    def to_arrays(self) -> dict[str, np.ndarray]:
        extra = {k: v for k, v in (("kd_has_classes", self.kd_has_classes), ("raw_kd", self.raw_kd)) if v is not None}
        return {"frame": self.frame, "boxes": self.boxes, **{f"task_{k}": v for k, v in self.tasks.items()}, **extra}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ObjectScores:
        tasks = {k[5:]: v for k, v in arrays.items() if k.startswith("task_")}
        return cls(arrays["frame"], arrays["boxes"], tasks, arrays.get("kd_has_classes"), arrays.get("raw_kd"))


@dataclass
class PartScores:
    """The scores of one group of objects (:meth:`Scorer.score_part`), before :meth:`Scorer.finish`.

    Attributes:
        count: the objects of the group (n).
        tasks: ``aot``, ``irr``, ``mid`` -> (n,) raw scores.
        kd: (n,) distillation discrepancies, those of ``teacher_rows`` still 0; None: no score (no head, or an
            object that needs the teacher's logits where the model predicts none).
        teacher_rows: the group's rows whose discrepancy compares the ImageNet teacher's logits.
        teacher_predictions: the student's predicted logits of those rows.
    """

    count: int
    tasks: dict[str, np.ndarray]
    kd: np.ndarray | None = None
    teacher_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    teacher_predictions: np.ndarray | None = None


class ScoringHeads(nn.Module):
    """Everything a test object needs in one graph, from its consecutive sequence (N, 3, 2t+1, S, S):
    P(backward), P(intermittent), the middle-crop reconstruction error and the distillation prediction, for
    the trained tasks only (a model trained without the middle-box task skips its whole second encoder pass).

    Attributes:
        names: the outputs in order, among ``aot``, ``irr``, ``mid``, ``kd_pred``.
    """

    def __init__(self, model: SSMTLModel, temporal_half: int, tasks: tuple[str, ...] = TASKS):
        super().__init__()
        self.model, self.t = model, temporal_half
        self.names = [t for t in TASKS if t in tasks and t != "kd"]
        if "kd" in tasks and model.kd_head is not None:
            self.names.append("kd_pred")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out: dict[str, torch.Tensor] = {}
        if {"aot", "irr", "kd_pred"} & set(self.names):
            heads = self.model.sequence_heads(x)
            out.update(aot=torch.softmax(heads["aot"], 1)[:, 1], irr=torch.softmax(heads["irr"], 1)[:, 1])
            if "kd" in heads:
                out["kd_pred"] = heads["kd"]
        if "mid" in self.names:
            t = self.t
            reconstruction = self.model.middle(torch.cat([x[:, :, :t], x[:, :, t + 1:]], dim=2))
            out["mid"] = (reconstruction - x[:, :, t]).abs().mean(dim=(1, 2, 3))
        return tuple(out[name] for name in self.names)


def _as_float_input(sequences: np.ndarray) -> np.ndarray:
    """Uint8 (N, T, S, S, C) -> float32 (N, 3, T, S, S) in [0, 1], grey expanded to RGB (OpenVINO's input)."""
    x = sequences.transpose(0, 4, 1, 2, 3)
    if x.shape[1] == 1:  # a view, not a copy: the one pass below writes the three channels (np.repeat was 10x slower)
        x = np.broadcast_to(x, (x.shape[0], 3, *x.shape[2:]))
    return np.multiply(x, np.float32(1 / 255), dtype=np.float32)


class Scorer:
    """Runs a trained model over the objects of a video (paper Sec. 3.4; ``docs/method.md``, "Scoring").

    On a CPU the model runs through OpenVINO when available (:mod:`ssmtl_core.runtime`); on a GPU through
    PyTorch.

    Args:
        model: the trained model (eval mode).
        sample: crop settings used in training.
        kd_layout: ``{"logits": 1000|0, "class_scores": 80|0}``, the parts of the distillation target.
        device: where the model runs.
        chunk: objects per forward pass.
        compile: compile with OpenVINO now (True), never (False) or from the first full chunk (None).
        calibration: the validation scores stored in the checkpoint (:mod:`ssmtl_core.calibration`); they put
            the two kinds of distillation discrepancy of a hybrid detector on one scale.
        tasks: the tasks to score (the trained ones; the others are not computed).
        precision: OpenVINO's precision on a CPU: ``auto`` (bf16 where the CPU has it natively, else
            fp32), ``fp32``, ``bf16`` or ``int8`` (post-training quantization calibrated on ``int8_inputs``).
        int8_inputs: for ``int8``: uint8 sequences (N, 2t+1, S, S, C) of training objects to calibrate on.
    """

    def __init__(self, model: SSMTLModel, sample: SampleConfig, kd_layout: dict, device: str | torch.device = "cpu",
                 chunk: int = 256, compile: bool | None = None, calibration: dict | None = None,
                 tasks: tuple[str, ...] = TASKS, precision: str = "auto", int8_inputs: np.ndarray | None = None):
        self.device = torch.device(device)
        self.heads = ScoringHeads(model.eval(), sample.temporal_half, tasks).to(self.device)
        self.sample = sample
        self.kd_layout = kd_layout
        self.chunk = chunk
        self.compiled = None
        self.calibration = calibration
        self.precision = precision
        self.int8_inputs = int8_inputs
        # Compiling takes seconds; it pays from a full chunk of objects on (None: decide at the first call).
        self._compile = compile
        if compile:
            self._compile_now()

    def _compile_now(self) -> None:
        size, frames = self.sample.crop_size, 2 * self.sample.temporal_half + 1
        calibration = None
        if self.precision == "int8" and self.int8_inputs is not None:
            calibration = [_as_float_input(self.int8_inputs[i:i + 32]) for i in range(0, len(self.int8_inputs), 32)]
        self.compiled = compile_module(self.heads, torch.zeros(2, 3, frames, size, size), self.device,
                                       self.precision, calibration)
        self._compile = False

    @property
    def backend(self) -> str:
        return f"openvino-{self.compiled.precision}" if self.compiled is not None else f"torch-{self.device.type}"

    def needs_teacher(self, detections: Detections) -> np.ndarray:
        """(N,) bool: the objects whose distillation score compares with the ImageNet teacher's logits (those
        without detector class scores: every object of a class-agnostic detector, the blobs of a hybrid)."""
        if not self.kd_layout.get("logits"):
            return np.zeros(len(detections), bool)
        return ~self._has_classes(detections)

    def _has_classes(self, detections: Detections) -> np.ndarray:
        n_classes = self.kd_layout.get("class_scores", 0)
        if not n_classes or detections.class_scores.shape[1] != n_classes:
            return np.zeros(len(detections), bool)
        return detections.classes >= 0

    @torch.inference_mode()
    def predict(self, sequences: np.ndarray) -> dict[str, np.ndarray]:
        """Head outputs for (N, 2t+1, S, S, C) uint8 sequences: P(backward), P(intermittent), the middle-crop
        reconstruction error and the distillation prediction."""
        out: dict[str, list[np.ndarray]] = {"aot": [], "irr": [], "mid": [], "kd_pred": []}
        if self._compile is None and len(sequences) >= self.chunk:
            self._compile_now()
        for i in range(0, len(sequences), self.chunk):
            part = sequences[i:i + self.chunk]
            if self.compiled is not None:
                results = self.compiled(_as_float_input(part))
            else:
                results = [r.float().cpu().numpy() for r in self.heads(as_input(part, self.device))]
            for name, value in zip(self.heads.names, results):
                out[name].append(value)
        return {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in out.items()}

    def score_objects(self, frames: np.ndarray, detections: Detections,
                      teacher_logits: np.ndarray | None = None, raw: bool = False) -> ObjectScores:
        """Raw task scores of every detection of one video (paper Sec. 3.4).

        Args:
            frames: the video's decoded frames (T, H, W, C).
            detections: its detections.
            teacher_logits: (N, 1000) ImageNet logits of the objects; only the rows of
                :meth:`needs_teacher` are read (the others may be anything).
            raw: keep the two kinds of distillation discrepancy as they are (no standardisation).
        """
        parts = [self.score_part(frames, detections.select(part)) for part in self.parts(len(detections))]
        return self.finish(detections, parts, teacher_logits, raw)

    def parts(self, n: int) -> list[slice]:
        """The groups of objects the network sees together (``chunk`` at a time, in order): a path that scores
        objects as they come (:mod:`ssmtl_core.stream`) takes the same groups, so each object's scores are the
        same as :meth:`score_objects` gives."""
        return [slice(i, min(i + self.chunk, n)) for i in range(0, n, self.chunk)]

    def score_part(self, frames: np.ndarray, detections: Detections) -> PartScores:
        """The scores of one group of :meth:`parts`, but for the distillation scores that need the teacher's
        logits (kept as predictions until :meth:`finish`)."""
        sequences = scoring_sequences(frames, detections.frame, detections.boxes, self.sample, rgb=False)
        pred = self.predict(sequences)
        tasks = {task: pred[task] for task in ("aot", "irr", "mid") if task in self.heads.names}
        if "kd_pred" not in self.heads.names:
            return PartScores(len(detections), tasks)
        has_classes = self._has_classes(detections)
        kd = self.distillation_discrepancy(pred["kd_pred"], detections.class_scores, has_classes,
                                           np.zeros((len(detections), self.kd_layout.get("logits", 0)), np.float32))
        waiting = np.flatnonzero(~has_classes) if kd is not None else np.zeros(0, np.int64)
        return PartScores(len(detections), tasks, kd, waiting, pred["kd_pred"][waiting, :self.kd_layout.get("logits", 0)])

    def finish(self, detections: Detections, parts: list[PartScores], teacher_logits: np.ndarray | None = None,
               raw: bool = False) -> ObjectScores:
        """The video's :class:`ObjectScores` from its :meth:`score_part` groups, in order (see
        :meth:`score_objects`)."""
        n = len(detections)
        has_classes = self._has_classes(detections)
        tasks: dict[str, list[np.ndarray]] = {"aot": [], "irr": [], "mid": [], "kd": []}
        kd_missing = False
        start = 0
        for part in parts:
            for task, value in part.tasks.items():
                tasks[task].append(value)
            if "kd_pred" in self.heads.names:
                kd = part.kd
                if kd is not None and len(part.teacher_rows):
                    if teacher_logits is None:
                        kd = None  # some object lacks what its score needs: no distillation score for this video
                    else:
                        kd = kd.copy()
                        logits = teacher_logits[start + part.teacher_rows].astype(np.float32)
                        kd[part.teacher_rows] = np.abs(logits - part.teacher_predictions).mean(1)
                if kd is None:
                    kd_missing = True
                else:
                    tasks["kd"].append(kd)
            start += part.count
        if kd_missing:
            tasks["kd"] = []
        result = {k: np.concatenate(v).astype(np.float32) for k, v in tasks.items() if v}
        if n == 0:
            result = {k: np.zeros(0, np.float32) for k in ("aot", "irr", "mid") if k in self.heads.names}
            if "kd_pred" in self.heads.names:
                result["kd"] = np.zeros(0, np.float32)
        raw_kd = None
        if not raw and "kd" in result and has_classes.any() and not has_classes.all():
            raw_kd = result["kd"]
            result["kd"] = standardize_discrepancy(result["kd"], has_classes, self.calibration)
        return ObjectScores(detections.frame.copy(), detections.boxes.copy(), result,
                            has_classes if "kd" in result else None, raw_kd)

    def distillation_discrepancy(self, prediction: np.ndarray, class_scores: np.ndarray, has_classes: np.ndarray,
                                 teacher_logits: np.ndarray | None) -> np.ndarray | None:
        """Mean |detector class scores - predicted ones| (the paper's test-time score, no ImageNet teacher
        needed) for objects with class scores; mean |teacher logits - predicted logits| for the others.

        Returns None when the model has no distillation head, or some object lacks what its score needs.
        """
        if prediction.size == 0:
            return None
        n_logits, n_classes = self.kd_layout.get("logits", 0), self.kd_layout.get("class_scores", 0)
        out = np.zeros(len(prediction), np.float32)
        if has_classes.any():
            predicted = prediction[has_classes, n_logits:n_logits + n_classes]
            out[has_classes] = np.abs(class_scores[has_classes].astype(np.float32) - predicted).mean(1)
        rest = ~has_classes
        if rest.any():
            if not n_logits or teacher_logits is None:
                return None
            out[rest] = np.abs(teacher_logits[rest].astype(np.float32) - prediction[rest, :n_logits]).mean(1)
        return out


def score_detections(scorer: Scorer, frames: np.ndarray, detections: Detections,
                     teacher_logits_for: Callable[[np.ndarray], np.ndarray] | None = None) -> ObjectScores:
    """The one path from a video's detections to their raw task scores (evaluation and ``score-video``).

    Args:
        scorer: the trained model's scorer.
        frames: the video's decoded frames.
        detections: its detections.
        teacher_logits_for: given detection rows, their ImageNet teacher logits (N, 1000); called only for
            the objects whose distillation score needs them (:meth:`Scorer.needs_teacher`).
    """
    return scorer.score_objects(frames, detections, needed_teacher_logits(scorer, detections, teacher_logits_for))


def needed_teacher_logits(scorer: Scorer, detections: Detections,
                          teacher_logits_for: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray | None:
    """The ImageNet teacher logits (N, 1000) the distillation score of ``detections`` needs (zeros where it does
    not), or None when no object needs them; ``teacher_logits_for`` (given detection rows) is called once."""
    rows = np.flatnonzero(scorer.needs_teacher(detections))
    if not len(rows):
        return None
    if teacher_logits_for is None:
        raise SSMTLError("the distillation score of these objects needs the ImageNet teacher's logits, and no "
                         "teacher was given.")
    logits = np.zeros((len(detections), IMAGENET_CLASSES), np.float32)
    logits[rows] = teacher_logits_for(rows)
    return logits


# -- combining tasks ------------------------------------------------------------------------------


def minmax(values: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 1] (all zeros when the values are constant)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return values.astype(np.float32)
    low, high = values.min(), values.max()
    return ((values - low) / (high - low) if high > low else np.zeros_like(values)).astype(np.float32)


def combine_tasks(scores: ObjectScores, tasks: tuple[str, ...], normalize_tasks: bool = True) -> np.ndarray:
    """Object anomaly scores of one video from a subset of tasks: normalise each, sum, normalise again."""
    parts = [minmax(scores.tasks[t]) if normalize_tasks else scores.tasks[t] for t in tasks if t in scores.tasks]
    if not parts:
        return np.zeros(len(scores.frame), np.float32)
    return minmax(np.sum(parts, axis=0))


def task_subsets(available: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The ablation: each task alone, every pair and triple, and all of them."""
    ordered = tuple(t for t in TASKS if t in available)
    return [c for r in range(1, len(ordered) + 1) for c in combinations(ordered, r)]


# -- object scores to frame scores --------------------------------------------------------------


def box_cells(boxes: np.ndarray, block: int, grid_shape: tuple[int, int]) -> np.ndarray:
    """(N, 4) int cell bounds ``x1, y1, x2, y2`` (end-exclusive) of boxes on a grid of ``block``-pixel cells,
    clipped to the grid and at least one cell wide."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    rows, cols = grid_shape
    x1 = np.clip(np.floor(boxes[:, 0] / block), 0, cols - 1)
    y1 = np.clip(np.floor(boxes[:, 1] / block), 0, rows - 1)
    x2 = np.clip(np.ceil(boxes[:, 2] / block), x1 + 1, cols)
    y2 = np.clip(np.ceil(boxes[:, 3] / block), y1 + 1, rows)
    return np.stack([x1, y1, x2, y2], axis=1).astype(int)


def score_grid(object_scores: np.ndarray, frame: np.ndarray, boxes: np.ndarray, num_frames: int,
               frame_size: tuple[int, int], config: ScoreConfig) -> np.ndarray:
    """The (T, H/b, W/b) grid of cell scores: each object's score painted into its box (max on overlap),
    then the optional 3D mean filter (``docs/method.md``, "From objects to frames")."""
    block = max(1, config.block)
    height, width = frame_size
    grid = np.zeros((num_frames, -(-height // block), -(-width // block)), np.float32)
    for f, (x1, y1, x2, y2), s in zip(frame, box_cells(boxes, block, grid.shape[1:]), object_scores):
        cells = grid[f, y1:y2, x1:x2]
        np.maximum(cells, s, out=cells)
    if config.mean_filter and config.mean_filter > 1:
        grid = uniform_filter(grid, size=config.mean_filter, mode="nearest")
    return grid


def gaussian_kernel(taps: int, sigma: float) -> np.ndarray:
    """A normalised 1D Gaussian of ``taps`` coefficients."""
    x = np.arange(taps) - (taps - 1) / 2
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def temporal_smoothing(values: np.ndarray, config: ScoreConfig) -> np.ndarray:
    """The 1D Gaussian over time, first/last frame repeated at the edges."""
    if not config.gauss_taps or config.gauss_taps <= 1 or len(values) == 0:
        return values.astype(np.float32)
    return convolve1d(values.astype(np.float64), gaussian_kernel(config.gauss_taps, config.gauss_sigma),
                      mode="nearest").astype(np.float32)


def frame_scores_from_grid(grid: np.ndarray, config: ScoreConfig) -> np.ndarray:
    """Frame scores: max over each frame's cells, then the temporal Gaussian."""
    return temporal_smoothing(grid.reshape(len(grid), -1).max(axis=1) if grid.size else np.zeros(len(grid)), config)


def region_scores(grid: np.ndarray, frame: np.ndarray, boxes: np.ndarray, config: ScoreConfig) -> np.ndarray:
    """The score of each detected box for RBDC/TBDC: the max of the (filtered) grid inside it."""
    out = np.zeros(len(frame), np.float32)
    for i, (f, (x1, y1, x2, y2)) in enumerate(zip(frame, box_cells(boxes, max(1, config.block), grid.shape[1:]))):
        out[i] = grid[f, y1:y2, x1:x2].max()
    return out


def anomaly_map(grid: np.ndarray, index: int, frame_size: tuple[int, int], block: int) -> np.ndarray:
    """The pixel-level anomaly map of frame ``index`` at the frame's size (each cell covers block x block)."""
    height, width = frame_size
    return grid[index].repeat(block, axis=0).repeat(block, axis=1)[:height, :width]


@dataclass
class VideoResult:
    """Frame and region scores of one video for one subset of tasks."""

    object_scores: np.ndarray
    frame_scores: np.ndarray
    region_scores: np.ndarray


def score_video(scores: ObjectScores, tasks: tuple[str, ...], num_frames: int, frame_size: tuple[int, int],
                config: ScoreConfig, with_regions: bool = False) -> VideoResult:
    """Object scores of a task subset -> frame scores (and region scores) for one video."""
    objects = combine_tasks(scores, tasks, config.normalize_tasks)
    grid = score_grid(objects, scores.frame, scores.boxes, num_frames, frame_size, config)
    frames = frame_scores_from_grid(grid, config)
    regions = region_scores(grid, scores.frame, scores.boxes, config) if with_regions else np.zeros(0, np.float32)
    return VideoResult(objects, frames, regions)


# -- calibrated object scores to frame scores --------------------------------------------------


def calibrated_frame_scores(object_scores: np.ndarray, frame: np.ndarray, num_frames: int,
                            config: ScoreConfig | None = None) -> np.ndarray:
    """Calibrated frame scores: how unusual the most unusual object of each frame is, against normal data.

    Each frame takes the maximum calibrated score of its objects (0 without objects), as the paper's frame
    score is the maximum over the frame (no spatial mean filter: it would average an object with the empty
    cells around it, and the value would no longer be an object's). Then the profile's temporal Gaussian
    (``score.gauss_taps``, ``score.gauss_sigma``, as in the paper) smooths the frames' surprises
    ``-log(1 - p)``, and the result is read back as a fraction: a geometric mean of the tail probabilities
    ``1 - p`` over the Gaussian window. A frame is then over the threshold when, around it, the most unusual
    objects are consistently more unusual than the threshold's share of normal objects: a single normal object
    that the per-object threshold flags by chance (1 in 100) does not raise an alert, an object far beyond the
    normal range does even alone, and a sustained anomaly does.

    Args:
        object_scores: (N,) calibrated object scores in [0, 1] (:meth:`~ssmtl_core.calibration.Calibration.object_scores`).
        frame: (N,) the frame of each object.
        num_frames: frames in the video.
        config: the profile's score settings (None or ``gauss_taps`` <= 1: no smoothing).

    Returns:
        (num_frames,) float64 in [0, 1].
    """
    peaks = np.zeros(num_frames, np.float64)
    np.maximum.at(peaks, np.asarray(frame, int), to_surprise(object_scores))
    if config is not None:
        peaks = temporal_smoothing(peaks, config).astype(np.float64)
    return -np.expm1(-np.maximum(peaks, 0.0))

"""From a trained model to object, frame and pixel anomaly scores (SPEC 3.6-3.7, paper Sec. 3.4).

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

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from scipy.ndimage import convolve1d, uniform_filter
from torch import nn

from .config import TASKS, SampleConfig, ScoreConfig
from .detect import Detections
from .model import SSMTLModel
from .samples import scoring_sequences


@dataclass
class ObjectScores:
    """The raw per-task scores of the objects of one video.

    Attributes:
        frame: (N,) frame index of each object.
        boxes: (N, 4) its box.
        tasks: task name -> (N,) raw score (``aot``, ``irr``, ``mid``, ``kd`` as available).
    """

    frame: np.ndarray
    boxes: np.ndarray
    tasks: dict[str, np.ndarray]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"frame": self.frame, "boxes": self.boxes, **{f"task_{k}": v for k, v in self.tasks.items()}}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ObjectScores:
        tasks = {k[5:]: v for k, v in arrays.items() if k.startswith("task_")}
        return cls(arrays["frame"], arrays["boxes"], tasks)


class ScoringHeads(nn.Module):
    """Everything a test object needs in one graph: P(backward), P(intermittent), the middle-crop
    reconstruction error and the distillation prediction, from its consecutive sequence (N, 3, 2t+1, S, S)."""

    def __init__(self, model: SSMTLModel, temporal_half: int):
        super().__init__()
        self.model, self.t = model, temporal_half

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        heads = self.model.sequence_heads(x)
        t = self.t
        reconstruction = self.model.middle(torch.cat([x[:, :, :t], x[:, :, t + 1:]], dim=2))
        error = (reconstruction - x[:, :, t]).abs().mean(dim=(1, 2, 3))
        out = (torch.softmax(heads["aot"], 1)[:, 1], torch.softmax(heads["irr"], 1)[:, 1], error)
        return out + (heads["kd"],) if "kd" in heads else out


class Scorer:
    """Runs a trained model over the objects of a video.

    On a CPU the model runs through OpenVINO when available (:mod:`ssmtl_core.runtime`, about three times
    faster than eager PyTorch here); on a GPU through PyTorch.

    Args:
        model: the trained model (eval mode).
        sample: crop settings used in training.
        kd_layout: ``{"logits": 1000|0, "class_scores": 80|0}``, the parts of the distillation target.
        device: where the model runs.
        chunk: objects per forward pass.
    """

    def __init__(self, model: SSMTLModel, sample: SampleConfig, kd_layout: dict, device: str | torch.device = "cpu",
                 chunk: int = 256, compile: bool | None = None):
        self.device = torch.device(device)
        self.heads = ScoringHeads(model.eval(), sample.temporal_half).to(self.device)
        self.sample = sample
        self.kd_layout = kd_layout
        self.chunk = chunk
        self.compiled = None
        # Compiling takes seconds; it pays from a full chunk of objects on (None: decide at the first call).
        self._compile = compile
        if compile:
            self._compile_now()

    def _compile_now(self) -> None:
        from .runtime import compile_module

        size, frames = self.sample.crop_size, 2 * self.sample.temporal_half + 1
        self.compiled = compile_module(self.heads, torch.zeros(2, 3, frames, size, size), self.device)
        self._compile = False

    @property
    def backend(self) -> str:
        return "openvino" if self.compiled is not None else f"torch-{self.device.type}"

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
                x = part.transpose(0, 4, 1, 2, 3).astype(np.float32) * np.float32(1 / 255)
                if x.shape[1] == 1:
                    x = np.repeat(x, 3, axis=1)
                results = self.compiled(x)
            else:
                x = torch.from_numpy(np.ascontiguousarray(part)).to(self.device)
                x = x.permute(0, 4, 1, 2, 3).float().div_(255.0)
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1, -1)
                results = [r.float().cpu().numpy() for r in
                           self.heads(x.contiguous(memory_format=torch.channels_last_3d))]
            for name, value in zip(("aot", "irr", "mid", "kd_pred"), results):
                out[name].append(value)
        return {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in out.items()}

    def score_objects(self, frames: np.ndarray, detections: Detections,
                      teacher_logits: np.ndarray | None = None) -> ObjectScores:
        """Raw task scores of every detection of one video (SPEC 3.6).

        Args:
            frames: the video's decoded frames (T, H, W, C).
            detections: its detections.
            teacher_logits: (N, 1000) ImageNet logits of the test objects, needed for the distillation score
                only when the detector has no classes.
        """
        n = len(detections)
        tasks: dict[str, list[np.ndarray]] = {"aot": [], "irr": [], "mid": [], "kd": []}
        for i in range(0, n, self.chunk):
            part = slice(i, i + self.chunk)
            sequences = scoring_sequences(frames, detections.frame[part], detections.boxes[part], self.sample,
                                          rgb=False)
            pred = self.predict(sequences)
            for task in ("aot", "irr", "mid"):
                tasks[task].append(pred[task])
            kd = self.distillation_discrepancy(pred["kd_pred"], detections.class_scores[part],
                                               None if teacher_logits is None else teacher_logits[part])
            if kd is not None:
                tasks["kd"].append(kd)
        result = {k: np.concatenate(v).astype(np.float32) for k, v in tasks.items() if v}
        if n == 0:
            result = {k: np.zeros(0, np.float32) for k in ("aot", "irr", "mid")}
            if self.kd_layout.get("logits") or self.kd_layout.get("class_scores"):
                result["kd"] = np.zeros(0, np.float32)
        return ObjectScores(detections.frame.copy(), detections.boxes.copy(), result)

    def distillation_discrepancy(self, prediction: np.ndarray, class_scores: np.ndarray,
                                 teacher_logits: np.ndarray | None) -> np.ndarray | None:
        """Mean |detector class scores - predicted ones| (the paper's test-time score, no ImageNet teacher
        needed); with a class-agnostic detector, mean |teacher logits - predicted logits|."""
        if prediction.size == 0:
            return None
        n_logits, n_classes = self.kd_layout.get("logits", 0), self.kd_layout.get("class_scores", 0)
        if n_classes and class_scores.shape[1] == n_classes:
            return np.abs(class_scores.astype(np.float32) - prediction[:, n_logits:n_logits + n_classes]).mean(1)
        if n_logits and teacher_logits is not None:
            return np.abs(teacher_logits.astype(np.float32) - prediction[:, :n_logits]).mean(1)
        return None


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


def score_grid(object_scores: np.ndarray, frame: np.ndarray, boxes: np.ndarray, num_frames: int,
               frame_size: tuple[int, int], config: ScoreConfig) -> np.ndarray:
    """The (T, H/b, W/b) grid of cell scores: each object's score painted into its box (max on overlap),
    then the optional 3D mean filter (SPEC 3.7)."""
    block = max(1, config.block)
    height, width = frame_size
    grid = np.zeros((num_frames, -(-height // block), -(-width // block)), np.float32)
    if len(frame):
        x1 = np.clip(np.floor(boxes[:, 0] / block), 0, grid.shape[2] - 1).astype(int)
        y1 = np.clip(np.floor(boxes[:, 1] / block), 0, grid.shape[1] - 1).astype(int)
        x2 = np.clip(np.ceil(boxes[:, 2] / block), x1 + 1, grid.shape[2]).astype(int)
        y2 = np.clip(np.ceil(boxes[:, 3] / block), y1 + 1, grid.shape[1]).astype(int)
        for f, a, b, c, d, s in zip(frame, y1, y2, x1, x2, object_scores):
            cells = grid[f, a:b, c:d]
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
    block = max(1, config.block)
    out = np.zeros(len(frame), np.float32)
    for i, (f, box) in enumerate(zip(frame, boxes)):
        x1, y1 = int(box[0] // block), int(box[1] // block)
        x2, y2 = max(int(np.ceil(box[2] / block)), x1 + 1), max(int(np.ceil(box[3] / block)), y1 + 1)
        cells = grid[f, y1:y2, x1:x2]
        out[i] = cells.max() if cells.size else 0.0
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

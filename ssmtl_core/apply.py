"""Score a video of your own with a trained model (``ssmtl score-video``; ``docs/method.md``, "Scoring").

Any video file OpenCV reads (or a folder of frames) goes through the checkpoint's detector (or the one you
name), the trained 3D CNN and the profile's scoring, and comes out as an annotated video (boxes coloured by
anomaly score and the frame-score curve), a CSV of frame scores, a CSV of scored objects and a plot.

Scores are calibrated by default (``docs/method.md``, "Calibrated scores for your own videos", "Alerts"): an
object's score is the fraction of normal validation objects (every detection of the last 15% of each training
video) that are less unusual, a frame's is that of its most unusual object (smoothed over time as in the
paper), and frames at or over the checkpoint's alert threshold form alert segments of at least its minimum
length, listed in ``summary.json`` and marked in the CSVs, the plot and the video. The threshold was chosen on
held-out normal frames for a stated false-alarm rate (:mod:`ssmtl_core.alerts`): on normal footage of the
scene, that share of frames alerts. ``per_video_minmax`` (``--per-video-minmax``) gives the paper's
normalisation instead: the most anomalous object of the video scores 1 even when nothing unusual happens, so
those scores rank the frames of one video and say nothing across videos.

:func:`score_video_file` runs the named steps below in order: decode the frames once, detect
(:func:`ssmtl_core.detect.make_detector`) and score the objects at the same time
(:func:`detect_and_score_objects`: the scores of :func:`score_objects` on the detector's detections, each stage
at work while the other runs where that pays, on a GPU or more than two CPU cores), turn their raw task scores
into the reported scores (:func:`calibrated_video_scores` or :func:`minmax_video_scores`), then write the two
CSVs, the plot and the annotated video.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import viz
from .alerts import AlertRule
from .calibration import Calibration
from .checkpoint import load_checkpoint, model_from_checkpoint, pick_device
from .config import TASKS, Profile, ScoreConfig, apply_overrides, profile_from_dict, validate
from .data.frames import load_frames
from .data.layouts import ImageFolderSource, Video, VideoFileSource
from .detect import make_detector
from .detections import Detections
from .errors import SSMTLError
from .io import atomic_path, code_provenance, package_versions, write_json
from .runs import alert_rule, checkpoint_calibration, int8_calibration_inputs, load_run
from .score import ObjectScores, Scorer, calibrated_frame_scores, score_detections, score_video
from .stream import chosen_pipeline, detect_and_score, detect_then_score
from .teachers import Teacher, load_teacher, middle_crops


def open_video(path: str | Path) -> Video:
    """A :class:`Video` over a video file or a folder of frames, with a clear error when unreadable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SSMTLError(f"video not found: {path}. Pass an .mp4/.avi file or a folder of frames.")
    source = ImageFolderSource(path) if path.is_dir() else VideoFileSource(path)
    return Video(path.stem, "test", source)


@dataclass
class VideoScores:
    """What ``score-video`` reports for one video.

    Attributes:
        tasks: the tasks scored.
        objects: (N,) the score of each object: calibrated, or the paper's per-video min-max.
        frames: (T,) the score of each frame.
        task_curves: each task's frame scores alone.
        calibration: the checkpoint's calibration for ``tasks`` (None: per-video min-max scores).
        threshold: the alert threshold of calibrated frame scores (None without calibration).
        segments: the alert segments (:func:`~ssmtl_core.alerts.alert_segments`; none without calibration).
        rule: the alert rule (None without calibration).
    """

    tasks: tuple[str, ...]
    objects: np.ndarray
    frames: np.ndarray
    task_curves: dict[str, np.ndarray]
    calibration: Calibration | None = None
    threshold: float | None = None
    segments: list[dict] | None = None
    rule: AlertRule | None = None

    def frame_segment(self) -> np.ndarray:
        """(T,) the 1-based alert segment of each frame, 0 outside any."""
        out = np.zeros(len(self.frames), int)
        for k, segment in enumerate(self.segments or [], 1):
            out[segment["start"]:segment["end"] + 1] = k
        return out


def score_video_file(video_path: str | Path, checkpoint: str | Path, out_dir: str | Path,
                     overrides: dict | None = None, device: str = "auto", video_format: str = "mp4",
                     teacher_weights: str | None = None, progress: bool = True, per_video_minmax: bool = False,
                     threshold: float | None = None, log=print) -> dict:
    """Detect, score and annotate one video.

    Args:
        video_path: the video file or frame folder.
        checkpoint: ``best.pt`` of a trained run.
        out_dir: output folder (``annotated.mp4``/``.gif``, ``frame_scores.csv``, ``objects.csv``,
            ``scores.png``, ``summary.json``).
        overrides: settings to change, e.g. ``{"detect.detector": "motion"}``.
        device: ``auto``, ``cpu`` or ``cuda``.
        video_format: ``mp4`` or ``gif``.
        teacher_weights: ImageNet teacher weights, if the checkpoint's default teacher is not wanted.
        progress: progress bars.
        per_video_minmax: the paper's per-video min-max normalisation instead of calibrated scores.
        threshold: the alert threshold of calibrated frame scores (default: the checkpoint's, chosen on held-out
            normal frames).
        log: where messages go (a checkpoint without calibration says how it gets one).

    Returns:
        A summary (also written to ``summary.json``).
    """
    state = load_checkpoint(checkpoint)
    profile = apply_overrides(profile_from_dict(state["profile"]), overrides)
    validate(profile)
    out = Path(out_dir)
    video = open_video(video_path)
    torch_device = pick_device(device)
    calibration = rule = None  # first, so that a checkpoint without one fails (or is calibrated) before detection
    if not per_video_minmax:
        calibration = checkpoint_calibration(state, checkpoint, tuple(profile.train.tasks), device, progress, log)
        rule = alert_rule(calibration, checkpoint, log)
        rule = rule if threshold is None else rule.given(threshold)
    started = time.perf_counter()
    frames = load_frames(video, progress=progress)
    detector = make_detector(profile.detect, str(torch_device))
    detections, raw, backend, detect_seconds, pipeline = detect_and_score_objects(
        state, profile, checkpoint, detector, video, frames, torch_device, teacher_weights, progress)
    if calibration is None:
        scores = minmax_video_scores(raw, video, profile.score)
    else:
        scores = calibrated_video_scores(raw, video, profile.score, calibration, rule)
    elapsed = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    write_frame_scores(out / "frame_scores.csv", scores)
    write_object_scores(out / "objects.csv", raw, scores)
    plot_scores(out / "scores.png", video.name, scores)
    written = write_annotated_video(out / f"annotated.{video_format}", video, frames, raw, scores)
    calibrated = scores.calibration
    summary = {"video": str(video_path), "frames": video.num_frames, "frame_size": list(video.frame_size),
               "objects": int(len(detections)), "tasks": list(scores.tasks), "checkpoint": str(checkpoint),
               "arch": profile.train.arch, "detector": detector.describe() | {"class_names": None},
               "score_settings": profile.to_dict()["score"],
               "score_precision": {"asked": profile.score.inference_precision, "backend": backend},
               "pipeline": {"asked": profile.score.pipeline, "used": pipeline},
               "most_anomalous_frames": np.argsort(-scores.frames)[:5].tolist(),
               "scores": "per-video min-max (the paper's)" if calibrated is None else "calibrated",
               "calibration": None if calibrated is None else calibrated.summary() | {
                   "threshold": scores.threshold, "threshold_rule": scores.rule.describe()},
               "alert": None if calibrated is None else scores.rule.summary(),
               "alert_segments": scores.segments,
               "seconds": round(elapsed, 2), "detect_seconds": round(detect_seconds, 2),
               "frames_per_s": round(video.num_frames / elapsed, 1), "device": str(torch_device),
               "annotated_video": str(written), "versions": package_versions(),
               "code": code_provenance()}
    write_json(out / "summary.json", summary)
    return summary


# -- the steps -----------------------------------------------------------------------------------------------


def score_objects(state: dict, profile: Profile, checkpoint: str | Path, frames: np.ndarray, detections: Detections,
                  device: torch.device, teacher_weights: str | None = None) -> tuple[ObjectScores, str]:
    """The raw task scores of a video's detections under a checkpoint, in the profile's
    ``score.inference_precision`` (``--score-precision``; ``int8`` is quantized on the run's training objects);
    the ImageNet teacher is loaded only when some object's distillation score needs its logits.

    Returns:
        The scores, and the backend that computed them (``openvino-bf16``, ``torch-cpu``, ...): the precision
        actually used, which a CPU without native bf16 or a GPU may make differ from the one asked.
    """
    scorer = _scorer(state, profile, checkpoint, device)
    teacher = None
    if scorer.needs_teacher(detections).any():
        teacher = load_teacher(profile.train.teacher, size=profile.train.teacher_size, weights=teacher_weights)
    scores = score_detections(scorer, frames, detections, partial(_teacher_logits, teacher, frames, detections))
    return scores, scorer.backend


def detect_and_score_objects(state: dict, profile: Profile, checkpoint: str | Path, detector, video: Video,
                             frames: np.ndarray, device: torch.device, teacher_weights: str | None = None,
                             progress: bool = False) -> tuple[Detections, ObjectScores, str, float, str]:
    """The detections of ``video`` and their raw task scores (those of ``detector.detect_video`` and
    :func:`score_objects`) on the decoded ``frames``, detection and scoring at work at once
    (:func:`ssmtl_core.stream.detect_and_score`) or one after the other
    (:func:`ssmtl_core.stream.detect_then_score`), as ``score.pipeline`` says
    (:func:`ssmtl_core.stream.chosen_pipeline`).

    Returns:
        The detections, their scores, the backend that computed them, the seconds the detector took and the
        pipeline that ran (``overlap`` or ``sequential``).
    """
    scorer = _scorer(state, profile, checkpoint, device)

    def teacher_logits(detections: Detections, rows: np.ndarray) -> np.ndarray:
        teacher = load_teacher(profile.train.teacher, size=profile.train.teacher_size, weights=teacher_weights)
        return _teacher_logits(teacher, frames, detections, rows)

    pipeline = chosen_pipeline(profile.score.pipeline, str(device))
    run = detect_and_score if pipeline == "overlap" else detect_then_score
    detections, scores, detect_seconds = run(detector, scorer, video, frames, teacher_logits, progress)
    return detections, scores, scorer.backend, detect_seconds, pipeline


def _scorer(state: dict, profile: Profile, checkpoint: str | Path, device: torch.device) -> Scorer:
    """The checkpoint's scorer in the profile's ``score.inference_precision``."""
    precision = profile.score.inference_precision
    # A reduced precision asked for is used whatever the number of objects (by default, compiling waits for a
    # full chunk of objects, where it pays).
    return Scorer(model_from_checkpoint(state, device, checkpoint), profile.sample, state["kd_layout"], device,
                  calibration=state.get("calibration"), tasks=profile.train.tasks, precision=precision,
                  compile=True if precision != "auto" else None,
                  int8_inputs=_int8_inputs(checkpoint, profile) if precision == "int8" else None)


def _int8_inputs(checkpoint: str | Path, profile: Profile) -> np.ndarray:
    """Training objects of the checkpoint's run to quantize on (never the video being scored)."""
    run = Path(checkpoint).parent
    if not (run / "run.json").is_file():
        raise SSMTLError(f"--score-precision int8 quantizes the model on its run's training objects, and {run} has "
                         "no run.json saying where they are: score from the run folder, or use --score-precision "
                         "bf16 or fp32.")
    _, _, dataset, cache = load_run(run)
    return int8_calibration_inputs(dataset, profile, cache, progress=False, log=lambda *_: None)


def _teacher_logits(teacher: Teacher, frames: np.ndarray, detections: Detections, rows: np.ndarray) -> np.ndarray:
    return teacher.logits(middle_crops(frames, detections.frame[rows], detections.boxes[rows], teacher.size))


def _scored_tasks(raw: ObjectScores) -> tuple[str, ...]:
    return tuple(t for t in TASKS if t in raw.tasks)


def calibrated_video_scores(raw: ObjectScores, video: Video, config: ScoreConfig, calibration: Calibration,
                            rule: AlertRule | None = None) -> VideoScores:
    """Calibrated object and frame scores, each task's frame curve and the alert segments of ``rule`` (default:
    the one stored with the calibration)."""
    rule = rule or alert_rule(calibration, "the checkpoint")
    calibration = calibration.subset(_scored_tasks(raw))  # all trained tasks, unless one lacks a score
    objects = calibration.object_scores(raw)
    frames = calibrated_frame_scores(objects, raw.frame, video.num_frames, config)
    curves = {task: calibrated_frame_scores(calibration.object_scores(raw, (task,)), raw.frame, video.num_frames,
                                            config) for task in calibration.tasks}
    segments = rule.segments(frames, objects, raw.frame, raw.boxes)
    return VideoScores(_scored_tasks(raw), objects, frames, curves, calibration, rule.threshold, segments, rule)


def minmax_video_scores(raw: ObjectScores, video: Video, config: ScoreConfig) -> VideoScores:
    """The paper's scores: each task min-max normalised over this video, summed and normalised again."""
    tasks = _scored_tasks(raw)
    result = score_video(raw, tasks, video.num_frames, video.frame_size, config)
    curves = {task: score_video(raw, (task,), video.num_frames, video.frame_size, config).frame_scores
              for task in tasks}
    return VideoScores(tasks, result.object_scores, result.frame_scores, curves)


def write_frame_scores(path: Path, scores: VideoScores) -> None:
    """``frame_scores.csv``: frame, score, its alert segment (calibrated scores) and each task's score."""
    calibrated = scores.calibration is not None
    segment = scores.frame_segment()
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "score", *(["alert_segment"] if calibrated else []), *scores.task_curves])
        for f in range(len(scores.frames)):
            writer.writerow([f, f"{scores.frames[f]:.6f}", *([segment[f]] if calibrated else []),
                             *(f"{curve[f]:.6f}" for curve in scores.task_curves.values())])


def write_object_scores(path: Path, raw: ObjectScores, scores: VideoScores) -> None:
    """``objects.csv``: each object's frame, box and score (over the threshold? in which alert segment?), the
    sum of its raw task scores and each raw task score."""
    calibrated = scores.calibration is not None
    segment = scores.frame_segment()
    raw_sum = np.sum([raw.tasks[t] for t in scores.tasks], axis=0) if len(raw.frame) else np.zeros(0)
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "x1", "y1", "x2", "y2", "score", *(["over_threshold", "alert_segment"]
                                                                       if calibrated else []), "sum_raw", *scores.tasks])
        for i in range(len(raw.frame)):
            alert = [int(scores.objects[i] >= scores.threshold), segment[int(raw.frame[i])]] if calibrated else []
            writer.writerow([int(raw.frame[i]), *(f"{v:.1f}" for v in raw.boxes[i]), f"{scores.objects[i]:.6f}",
                             *alert, f"{raw_sum[i]:.6f}", *(f"{raw.tasks[t][i]:.6f}" for t in scores.tasks)])


def plot_scores(path: Path, name: str, scores: VideoScores) -> None:
    """``scores.png``: the frame scores over time, each task's curve, and the threshold of calibrated scores."""
    calibrated = scores.calibration is not None
    kind = "calibrated score (fraction of normal objects)" if calibrated else "per-video min-max score"
    figure = viz.plot_score_curve(scores.frames, task_curves=scores.task_curves, title=f"{name}: {kind}",
                                  threshold=scores.threshold, yscale="logit" if calibrated else "linear")
    figure.savefig(path, dpi=120, bbox_inches="tight")


def write_annotated_video(path: Path, video: Video, frames: np.ndarray, raw: ObjectScores,
                          scores: VideoScores) -> Path:
    """The annotated video: every object's box coloured by its score, and the frame-score curve."""
    boxes_per_frame = [raw.boxes[raw.frame == f] for f in range(video.num_frames)]
    scores_per_frame = [scores.objects[raw.frame == f] for f in range(video.num_frames)]
    rgb = (frames[f] if frames.shape[-1] == 3 else np.repeat(frames[f], 3, axis=2) for f in range(video.num_frames))
    return viz.write_annotated_video(rgb, boxes_per_frame, scores_per_frame, scores.frames, path,
                                     fps=getattr(video.source, "fps", 10.0), threshold=scores.threshold)

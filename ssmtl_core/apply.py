"""Score a video of your own with a trained model (``ssmtl score-video``; ``docs/method.md``, "Scoring").

Any video file OpenCV reads (or a folder of frames) goes through the checkpoint's detector (or the one you
name), the trained 3D CNN and the profile's scoring, and comes out as an annotated video (boxes coloured by
anomaly score and the frame-score curve), a CSV of frame scores, a CSV of scored objects and a plot.

Scores are calibrated by default (``docs/method.md``, "Calibrated scores for your own videos"): an object's
score is the fraction of normal validation objects (the last 15% of each training video) that are less
unusual, a frame's is that of its most unusual object (smoothed over time as in the paper), and frames at or
over the checkpoint's threshold (the 99th percentile of the validation objects) form alert segments, listed
in ``summary.json`` and marked in the CSVs, the plot and the video. A video where nothing unusual happens
therefore stays under the threshold. ``per_video_minmax`` (``--per-video-minmax``) gives the paper's
normalisation instead: the most anomalous object of the video scores 1 even when nothing unusual happens, so
those scores rank the frames of one video and say nothing across videos.
"""

from __future__ import annotations

import csv
import time
from functools import partial
from pathlib import Path

import numpy as np

from .calibration import alert_segments
from .checkpoint import load_checkpoint, model_from_checkpoint, pick_device
from .config import TASKS, apply_overrides, profile_from_dict, validate
from .data.frames import load_frames
from .data.layouts import ImageFolderSource, Video, VideoFileSource
from .detect import make_detector
from .detections import Detections
from .errors import SSMTLError
from .io import atomic_path, package_versions, write_json
from .runs import checkpoint_calibration
from .score import Scorer, calibrated_frame_scores, score_detections, score_video
from .teachers import Teacher, load_teacher, middle_crops


def open_video(path: str | Path) -> Video:
    """A :class:`Video` over a video file or a folder of frames, with a clear error when unreadable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SSMTLError(f"video not found: {path}. Pass an .mp4/.avi file or a folder of frames.")
    source = ImageFolderSource(path) if path.is_dir() else VideoFileSource(path)
    return Video(path.stem, "test", source)


def _teacher_logits(teacher: Teacher, frames: np.ndarray, detections: Detections, rows: np.ndarray) -> np.ndarray:
    return teacher.logits(middle_crops(frames, detections.frame[rows], detections.boxes[rows], teacher.size))


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
        threshold: the alert threshold of calibrated scores (default: the checkpoint's, from its validation
            objects).
        log: where messages go (a checkpoint without calibration says how it gets one).

    Returns:
        A summary (also written to ``summary.json``).
    """
    from . import viz

    state = load_checkpoint(checkpoint)
    profile = apply_overrides(profile_from_dict(state["profile"]), overrides)
    validate(profile)
    out = Path(out_dir)
    video = open_video(video_path)
    torch_device = pick_device(device)
    calibration = None  # first, so that a checkpoint without one fails (or is calibrated) before detection
    if not per_video_minmax:
        calibration = checkpoint_calibration(state, checkpoint, tuple(profile.train.tasks), device, progress, log)
    started = time.perf_counter()
    frames = load_frames(video, progress=progress)
    detector = make_detector(profile.detect, str(torch_device))
    detections = detector.detect_video(video, progress)
    detect_seconds = time.perf_counter() - started

    scorer = Scorer(model_from_checkpoint(state, torch_device, checkpoint), profile.sample, state["kd_layout"],
                    torch_device, calibration=state.get("calibration"), tasks=profile.train.tasks)
    teacher = None
    if scorer.needs_teacher(detections).any():
        teacher = load_teacher(profile.train.teacher, size=profile.train.teacher_size, weights=teacher_weights)
    scores = score_detections(scorer, frames, detections, partial(_teacher_logits, teacher, frames, detections))
    tasks = tuple(t for t in TASKS if t in scores.tasks)
    segments = []
    if calibration is None:
        result = score_video(scores, tasks, video.num_frames, video.frame_size, profile.score)
        object_scores, frame_scores = result.object_scores, result.frame_scores
        task_curves = {task: score_video(scores, (task,), video.num_frames, video.frame_size,
                                         profile.score).frame_scores for task in tasks}
    else:
        calibration = calibration.subset(tasks)  # the tasks scored (all trained ones, unless one lacks a score)
        threshold = calibration.threshold if threshold is None else float(threshold)
        object_scores = calibration.object_scores(scores)
        frame_scores = calibrated_frame_scores(object_scores, scores.frame, video.num_frames, profile.score)
        task_curves = {task: calibrated_frame_scores(calibration.object_scores(scores, (task,)), scores.frame,
                                                     video.num_frames, profile.score) for task in calibration.tasks}
        segments = alert_segments(frame_scores, threshold, object_scores, scores.frame, scores.boxes)
    frame_segment = np.zeros(video.num_frames, int)  # 1-based alert segment of each frame, 0 outside
    for k, segment in enumerate(segments, 1):
        frame_segment[segment["start"]:segment["end"] + 1] = k
    elapsed = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)

    raw_sum = np.sum([scores.tasks[t] for t in tasks], axis=0) if len(detections) else np.zeros(0)
    with atomic_path(out / "frame_scores.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "score", *(["alert_segment"] if calibration else []), *task_curves])
        for f in range(video.num_frames):
            writer.writerow([f, f"{frame_scores[f]:.6f}", *([frame_segment[f]] if calibration else []),
                             *(f"{curve[f]:.6f}" for curve in task_curves.values())])
    with atomic_path(out / "objects.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "x1", "y1", "x2", "y2", "score", *(["over_threshold", "alert_segment"]
                                                                       if calibration else []), "sum_raw", *tasks])
        for i in range(len(detections)):
            alert = ([int(object_scores[i] >= threshold), frame_segment[int(scores.frame[i])]] if calibration
                     else [])
            writer.writerow([int(scores.frame[i]), *(f"{v:.1f}" for v in scores.boxes[i]), f"{object_scores[i]:.6f}",
                             *alert, f"{raw_sum[i]:.6f}", *(f"{scores.tasks[t][i]:.6f}" for t in tasks)])

    kind = "per-video min-max score" if calibration is None else "calibrated score (fraction of normal objects)"
    figure = viz.plot_score_curve(frame_scores, task_curves=task_curves, title=f"{video.name}: {kind}",
                                  threshold=None if calibration is None else threshold,
                                  yscale="linear" if calibration is None else "logit")
    figure.savefig(out / "scores.png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    boxes_per_frame = [scores.boxes[scores.frame == f] for f in range(video.num_frames)]
    scores_per_frame = [object_scores[scores.frame == f] for f in range(video.num_frames)]
    fps = getattr(video.source, "fps", 10.0)
    written = viz.write_annotated_video((frames[f] if frames.shape[-1] == 3 else np.repeat(frames[f], 3, axis=2)
                                         for f in range(video.num_frames)), boxes_per_frame, scores_per_frame,
                                        frame_scores, out / f"annotated.{video_format}", fps=fps,
                                        threshold=None if calibration is None else threshold)
    top = np.argsort(-frame_scores)[:5]
    summary = {"video": str(video_path), "frames": video.num_frames, "frame_size": list(video.frame_size),
               "objects": int(len(detections)), "tasks": list(tasks), "checkpoint": str(checkpoint),
               "arch": profile.train.arch,
               "detector": detector.describe() | {"class_names": None},
               "score_settings": profile.to_dict()["score"], "most_anomalous_frames": top.tolist(),
               "scores": "per-video min-max (the paper's)" if calibration is None else "calibrated",
               "calibration": None if calibration is None else calibration.summary() | {"threshold": threshold} | (
                   {} if threshold == calibration.threshold else {"threshold_rule": "given (--threshold)"}),
               "alert_segments": None if calibration is None else segments,
               "seconds": round(elapsed, 2), "detect_seconds": round(detect_seconds, 2),
               "frames_per_s": round(video.num_frames / elapsed, 1), "device": str(torch_device),
               "annotated_video": str(written), "versions": package_versions()}
    write_json(out / "summary.json", summary)
    return summary

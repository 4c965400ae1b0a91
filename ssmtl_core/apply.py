"""Score a video of your own with a trained model (``ssmtl score-video``, SPEC 1 "Applying it").

Any video file OpenCV reads (or a folder of frames) goes through the checkpoint's detector (or the one you
name), the trained 3D CNN and the profile's scoring, and comes out as an annotated video (boxes coloured by
anomaly score and the frame-score curve), a CSV of frame scores, a CSV of scored objects and a plot.

Scores are normalised per video, as in the paper's protocol: the most anomalous object of the video scores
1 even in a video with nothing unusual, so compare videos by their raw ``sum_raw`` columns, not by ``score``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from .config import apply_overrides, profile_from_dict
from .data.frames import load_frames
from .data.layouts import ImageFolderSource, Video, VideoFileSource
from .detect import make_detector
from .errors import SSMTLError
from .io import atomic_path, package_versions, write_json
from .score import Scorer, combine_tasks, frame_scores_from_grid, score_grid
from .teachers import load_teacher
from .train import load_checkpoint, model_from_checkpoint, pick_device


def open_video(path: str | Path) -> Video:
    """A :class:`Video` over a video file or a folder of frames, with a clear error when unreadable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SSMTLError(f"video not found: {path}. Pass an .mp4/.avi file or a folder of frames.")
    source = ImageFolderSource(path) if path.is_dir() else VideoFileSource(path)
    return Video(path.stem, "test", source)


def score_video_file(video_path: str | Path, checkpoint: str | Path, out_dir: str | Path,
                     overrides: dict | None = None, device: str = "auto", video_format: str = "mp4",
                     teacher_weights: str | None = None, progress: bool = True) -> dict:
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

    Returns:
        A summary (also written to ``summary.json``).
    """
    from . import viz

    state = load_checkpoint(checkpoint)
    profile = apply_overrides(profile_from_dict(state["profile"]), overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video = open_video(video_path)
    torch_device = pick_device(device)
    started = time.perf_counter()
    frames = load_frames(video, progress=progress)
    detector = make_detector(profile.detect, device=str(torch_device))
    detections = detector.detect_video(video, progress=progress)
    detect_seconds = time.perf_counter() - started

    layout = state["kd_layout"]
    logits = None
    if layout.get("logits") and not (layout.get("class_scores") and detections.class_scores.shape[1]) and len(detections):
        teacher = load_teacher(profile.train.teacher, size=profile.train.teacher_size, weights=teacher_weights)
        from .samples import box_pixels, crop_object

        pixels = box_pixels(detections.boxes, *frames.shape[1:3]).tolist()
        crops = np.stack([crop_object(frames, np.array([f]), None, teacher.size, pixels=p)[0]
                          for f, p in zip(detections.frame, pixels)])
        logits = teacher.logits(crops)
    scorer = Scorer(model_from_checkpoint(state, torch_device), profile.sample, layout, torch_device)
    scores = scorer.score_objects(frames, detections, logits)
    tasks = tuple(t for t in ("aot", "irr", "mid", "kd") if t in scores.tasks)
    object_scores = combine_tasks(scores, tasks, profile.score.normalize_tasks)
    grid = score_grid(object_scores, scores.frame, scores.boxes, video.num_frames, video.frame_size, profile.score)
    frame_scores = frame_scores_from_grid(grid, profile.score)
    task_curves = {}
    for task in tasks:
        alone = combine_tasks(scores, (task,), True)
        task_curves[task] = frame_scores_from_grid(score_grid(alone, scores.frame, scores.boxes, video.num_frames,
                                                              video.frame_size, profile.score), profile.score)
    elapsed = time.perf_counter() - started

    raw_sum = np.sum([scores.tasks[t] for t in tasks], axis=0) if len(detections) else np.zeros(0)
    with atomic_path(out / "frame_scores.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "score", *tasks])
        for f in range(video.num_frames):
            writer.writerow([f, f"{frame_scores[f]:.6f}", *(f"{task_curves[t][f]:.6f}" for t in tasks)])
    with atomic_path(out / "objects.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "x1", "y1", "x2", "y2", "score", "sum_raw", *tasks])
        for i in range(len(detections)):
            writer.writerow([int(scores.frame[i]), *(f"{v:.1f}" for v in scores.boxes[i]), f"{object_scores[i]:.6f}",
                             f"{raw_sum[i]:.6f}", *(f"{scores.tasks[t][i]:.6f}" for t in tasks)])

    figure = viz.plot_score_curve(frame_scores, task_curves=task_curves, title=f"{video.name}: anomaly score")
    figure.savefig(out / "scores.png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    boxes_per_frame = [scores.boxes[scores.frame == f] for f in range(video.num_frames)]
    scores_per_frame = [object_scores[scores.frame == f] for f in range(video.num_frames)]
    fps = getattr(video.source, "fps", 10.0)
    written = viz.write_annotated_video((frames[f] if frames.shape[-1] == 3 else np.repeat(frames[f], 3, axis=2)
                                         for f in range(video.num_frames)), boxes_per_frame, scores_per_frame,
                                        frame_scores, out / f"annotated.{video_format}", fps=fps)
    top = np.argsort(-frame_scores)[:5]
    summary = {"video": str(video_path), "frames": video.num_frames, "frame_size": list(video.frame_size),
               "objects": int(len(detections)), "tasks": list(tasks), "checkpoint": str(checkpoint),
               "arch": profile.train.arch, "detector": detector.describe() | {"class_names": None},
               "score_settings": profile.to_dict()["score"], "most_anomalous_frames": top.tolist(),
               "seconds": round(elapsed, 2), "detect_seconds": round(detect_seconds, 2),
               "frames_per_s": round(video.num_frames / elapsed, 1), "device": str(torch_device),
               "annotated_video": str(written), "versions": package_versions()}
    write_json(out / "summary.json", summary)
    return summary

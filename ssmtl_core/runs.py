"""A trained run as a whole: its checkpoint, data and caches brought together for scoring and calibration.

The stages below this module each do one thing (:mod:`ssmtl_core.checkpoint` reads a checkpoint,
:mod:`ssmtl_core.detect` detects, :mod:`ssmtl_core.score` scores objects, :mod:`ssmtl_core.calibration` reads
scores against normal ones); a run needs them together, in this order, and that orchestration is written
here once:

* :func:`load_run` - a run folder -> its best checkpoint, profile, dataset and cache folder;
* :func:`object_scores_for_run` - the raw task scores of every test object (cached per video), what
  :mod:`ssmtl_core.evaluate` and the notebooks turn into frame scores;
* :func:`validation_frame_scores` - the raw task scores of every detection of the validation frames (the last
  15% of each training video: normal footage never trained on), per training video;
* :func:`validation_scores` and :func:`store_validation_scores` - those scores and the alert rule chosen on them
  (:mod:`ssmtl_core.alerts`), stored in ``best.pt`` at the end of training (:func:`ssmtl_core.train.train`);
* :func:`calibrate_run` (``ssmtl calibrate``) and :func:`checkpoint_calibration` - the same for a checkpoint
  written before calibration existed, rebuilt from its run folder.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .alerts import ALERT_RATE, AlertRule, choose_alert_rule, crossfit_frame_scores, fallback_rule
from .calibration import Calibration
from .checkpoint import load_checkpoint, model_from_checkpoint, pick_device
from .config import TASKS, Profile, profile_from_dict
from .data.frames import load_frames
from .data.layouts import Dataset, open_dataset
from .detect import detect_dataset
from .detections import Detections
from .errors import SSMTLError
from .io import atomic_path, file_sha256, load_npz, read_json, save_npz, stable_hash
from .samples import objects_from_detections, scoring_sequences
from .score import ObjectScores, Scorer, score_detections
from .teachers import TeacherCache, load_teacher
from .training_data import TrainingData, prepare_training_data, training_videos


def load_run(run_dir: str | Path, root: str | Path | None = None, cache_root: str | Path | None = None
             ) -> tuple[dict, Profile, Dataset, Path]:
    """The best checkpoint of a run, its profile, its dataset (``root`` overrides the recorded one) and
    its cache folder."""
    run = Path(run_dir)
    state = load_checkpoint(run / "best.pt")
    info = read_json(run / "run.json") if (run / "run.json").is_file() else {}
    profile = profile_from_dict(state["profile"])
    recorded = info.get("dataset", {}).get("root")
    dataset_root = root or recorded
    if dataset_root is None:
        raise SSMTLError(f"{run} does not say where its dataset is; pass --root.")
    dataset = open_dataset(profile.dataset, dataset_root)
    cache = Path(cache_root or info.get("cache_root") or "cache")
    return state, profile, dataset, cache


# -- the test objects of a run -------------------------------------------------------------------------------


def object_scores_for_run(run_dir: Path, state: dict, profile: Profile, dataset: Dataset, cache_root: Path,
                          device: str = "auto", progress: bool = True, log=print,
                          teacher_weights: str | None = None) -> tuple[list[ObjectScores], dict]:
    """Raw task scores of every test object (cached per video, keyed by checkpoint, dataset copy, detections and
    teacher)."""
    device = pick_device(device)
    detections = detect_dataset(dataset, profile.detect, cache_root, splits=("test",), progress=progress, log=log)
    model = model_from_checkpoint(state, device, run_dir / "best.pt")
    precision = profile.score.inference_precision
    int8_inputs = (int8_calibration_inputs(dataset, profile, cache_root, progress, log) if precision == "int8"
                   else None)
    scorer = Scorer(model, profile.sample, state["kd_layout"], device, calibration=state.get("calibration"),
                    tasks=profile.train.tasks, precision=precision, int8_inputs=int8_inputs)
    checkpoint_hash = file_sha256(run_dir / "best.pt")[:12] + ("" if precision == "auto" else f"-{precision}")
    folder = run_dir / "eval" / "object_scores"
    teacher = None
    results, objects, seconds, frames_total = [], 0, 0.0, 0
    for video in tqdm(dataset.test, desc="score test videos", unit="video", disable=not progress):
        path = folder / f"{video.name}.npz"
        # The cached scores are reused only for the same checkpoint, dataset copy, detections (their file's
        # size and time) and teacher: evaluating against another cache or re-made detections rescores.
        det_file = detections.path(video).stat()
        key = stable_hash([checkpoint_hash, dataset.cache_id, str(Path(dataset.root).resolve()), detections.key,
                           det_file.st_size, det_file.st_mtime_ns, teacher_weights], 16)
        if path.is_file():
            with contextlib.suppress(Exception):  # a damaged cache file is simply recomputed
                arrays = load_npz(path)
                if str(arrays.pop("key", np.array(""))) == key:
                    arrays.pop("checkpoint", None)
                    results.append(ObjectScores.from_arrays(arrays))
                    continue
        frames = load_frames(video, cache_root / dataset.cache_id / "frames")
        dets = detections.load(video)
        if teacher is None and scorer.needs_teacher(dets).any():
            model_teacher = load_teacher(profile.train.teacher, size=profile.train.teacher_size,
                                         weights=teacher_weights)
            teacher = TeacherCache(cache_root, dataset, model_teacher, detections)

        start = time.perf_counter()
        scores = score_detections(scorer, frames, dets, partial(_cached_logits, teacher, video, frames, dets))
        seconds += time.perf_counter() - start
        objects += len(dets)
        frames_total += video.num_frames
        save_npz(path, key=np.array(key), **scores.to_arrays())
        results.append(scores)
    timing = {"objects": objects, "frames": frames_total, "seconds": round(seconds, 2),
              "objects_per_s": round(objects / seconds, 1) if seconds else None,
              "frames_per_s_from_cached_detections": round(frames_total / seconds, 1) if seconds else None,
              "backend": scorer.backend if objects else "cached scores", "precision_asked": precision}
    return results, {"detections": detections.meta, "timing": timing, "checkpoint_sha256": checkpoint_hash}


def _cached_logits(cache: TeacherCache, video, frames: np.ndarray, dets, rows: np.ndarray) -> np.ndarray:
    return cache.logits(video, frames, dets.frame[rows], dets.boxes[rows], rows)


def int8_calibration_inputs(dataset: Dataset, profile: Profile, cache_root: Path, progress: bool = False, log=print,
                            count: int = 256) -> np.ndarray:
    """The consecutive sequences of ``count`` training objects spread evenly over the training videos: what
    int8 quantization calibrates on (never a test object)."""
    detections = detect_dataset(dataset, profile.detect, cache_root, splits=("train",), progress=progress, log=log)
    videos = training_videos(dataset, profile.sample)  # not a video the run left out
    per_video = [detections.load(v) for v in videos]
    objects = objects_from_detections(per_video, [v.num_frames for v in videos], profile.sample, training=True)
    pick = np.unique(np.linspace(0, len(objects) - 1, min(count, len(objects))).astype(int))
    parts = []
    for v in np.unique(objects.video[pick]):
        rows = pick[objects.video[pick] == v]
        frames = load_frames(videos[v], cache_root / dataset.cache_id / "frames")
        parts.append(scoring_sequences(frames, objects.frame[rows], objects.boxes[rows], profile.sample, rgb=False))
    return np.concatenate(parts)


# -- the validation objects of a run: what calibrates its scores ---------------------------------------------


@dataclass
class ValidationClip:
    """The raw task scores of every detection in the validation frames of one training video.

    Attributes:
        video: the video's index among the run's training videos (:attr:`TrainingData.frames`).
        start: its first validation frame; the clip runs to the video's end.
        frames: the clip's length in frames.
        scores: raw task scores (the distillation discrepancy not standardised), frame numbers of the whole
            video, ``kd_has_classes`` the kind of each distillation score.
        classes: (N,) each detection's COCO class, -1 for a class-agnostic motion blob.
    """

    video: int
    start: int
    frames: int
    scores: ObjectScores
    classes: np.ndarray


def validation_frame_scores(state: dict, data: TrainingData, profile: Profile, device: torch.device
                            ) -> list[ValidationClip]:
    """The raw task scores of every detection in the validation frames of each training video, as ``score-video``
    scores a video: the normal footage (never trained on) that calibrates scores and chooses the alert rule.

    Args:
        state: the checkpoint (its model and distillation layout are used).
        data: the run's training data, with its :attr:`~ssmtl_core.training_data.TrainingData.validation_frames`.
        profile: the run's settings.
        device: where to score.

    Returns:
        One :class:`ValidationClip` per training video with validation frames (none when the data has none).
    """
    if not data.validation_frames:
        return []
    precision = profile.score.inference_precision
    scorer = Scorer(model_from_checkpoint(state, device), profile.sample, state["kd_layout"], device,
                    tasks=profile.train.tasks, precision="auto" if precision == "int8" else precision)
    clips = []
    for part in data.validation_frames:
        frames = data.frames[part.video]
        scores = scorer.score_objects(frames, part.detections, part.teacher_logits, raw=True)
        clips.append(ValidationClip(part.video, part.start, len(frames) - part.start, scores,
                                    part.detections.classes.astype(np.int16)))
    return clips


def validation_scores(state: dict, data: TrainingData, profile, device: torch.device) -> dict:
    """What calibrates a checkpoint (stored in it as ``calibration``): the raw task scores of every detection of
    the validation frames (:func:`validation_frame_scores`) and the alert rule chosen on their frames.

    Args:
        state: the checkpoint (its model and distillation layout are used).
        data: the training data the run used (its validation frames and their detections).
        profile: the run's settings.
        device: where to score.

    Returns:
        ``{"objects": n, "tasks": {task: (n,) float32 tensor}, "kd_has_classes": (n,) bool tensor, "classes":
        (n,) int16 tensor (-1: motion blob), "clip": (n,) and "frame": (n,) int32 tensors (each object's
        validation clip and frame), "clips": {"video", "start", "frames"}, "alert": the rule
        (:class:`~ssmtl_core.alerts.AlertRule`) with the cross-fitted normal frame scores it was chosen on}``.
        Training data without validation frames (unpacked from a bundle) gives the scores of the validation
        objects alone, and no alert rule.
    """
    clips = validation_frame_scores(state, data, profile, device)
    if not clips:
        return validation_object_scores(state, data, profile, device)
    tasks = sorted({t for c in clips for t in c.scores.tasks}, key=TASKS.index)
    tasks = [t for t in tasks if all(t in c.scores.tasks for c in clips)]
    has = [c.scores.kd_has_classes if c.scores.kd_has_classes is not None else np.zeros(len(c.classes), bool)
           for c in clips]
    stored = {"objects": int(sum(len(c.classes) for c in clips)),
              "source": "every detection of the validation frames (the last "
                        f"{100 * profile.train.val_fraction:g}% of each training video)",
              "tasks": {t: torch.from_numpy(np.concatenate([c.scores.tasks[t] for c in clips]).astype(np.float32))
                        for t in tasks},
              "kd_has_classes": torch.from_numpy(np.concatenate(has).astype(bool)),
              "classes": torch.from_numpy(np.concatenate([c.classes for c in clips]).astype(np.int16)),
              "clip": torch.from_numpy(np.concatenate([np.full(len(c.classes), k, np.int32)
                                                       for k, c in enumerate(clips)])),
              "frame": torch.from_numpy(np.concatenate([c.scores.frame for c in clips]).astype(np.int32)),
              "clips": {"video": [c.video for c in clips], "start": [c.start for c in clips],
                        "frames": [c.frames for c in clips]}}
    if stored["objects"]:
        info = [{"start": c.start, "frames": c.frames} for c in clips]
        normal = crossfit_frame_scores(stored, info, profile.score)
        source = ("cross-fitted normal validation frames: each training video's validation frames read against "
                  "the other videos' validation objects" if len(clips) > 1 else
                  "normal validation frames of the one training video, read against themselves (in-sample)")
        rule = choose_alert_rule(normal, profile.score, ALERT_RATE, source)
        stored["alert"] = rule.to_state() | {
            "normal_frame_scores": torch.from_numpy(np.concatenate(normal).astype(np.float64))}
    return stored


def validation_object_scores(state: dict, data: TrainingData, profile, device: torch.device) -> dict:
    """Raw task scores of the validation objects of the 85/15 split alone (what calibrated checkpoints before
    :func:`validation_frame_scores` existed; still the way for training data without validation frames).

    Returns:
        ``{"objects": n, "tasks": {task: (n,) float32 tensor}, "kd_has_classes": (n,) bool tensor}``.
    """
    layout = state["kd_layout"]
    scorer = Scorer(model_from_checkpoint(state, device), profile.sample, layout, device, tasks=profile.train.tasks)
    n_logits = int(layout.get("logits", 0))
    index = np.sort(data.val_index)
    parts: dict[str, list[np.ndarray]] = {}
    has_parts = []
    for v in np.unique(data.objects.video[index]):
        rows = index[data.objects.video[index] == v]
        objects = data.objects.subset(rows)
        targets = data.kd_targets[rows] if data.kd_targets is not None else np.zeros((len(rows), 0), np.float32)
        has = (np.ones(len(rows), bool) if data.kd_has_classes is None else data.kd_has_classes[rows])
        has &= bool(layout.get("class_scores"))
        detections = Detections(objects.frame, objects.boxes, np.ones(len(rows), np.float32),
                                np.where(has, 0, -1).astype(np.int16), targets[:, n_logits:])
        scores = scorer.score_objects(data.frames[v], detections, targets[:, :n_logits] if n_logits else None,
                                       raw=True)
        for task, values in scores.tasks.items():
            parts.setdefault(task, []).append(values)
        has_parts.append(has)
    return {"objects": int(len(index)),
            "tasks": {task: torch.from_numpy(np.concatenate(values).astype(np.float32))
                      for task, values in parts.items()},
            "kd_has_classes": torch.from_numpy(np.concatenate(has_parts) if has_parts else np.zeros(0, bool))}


def store_validation_scores(best: Path, data: TrainingData, profile: Profile, device: torch.device) -> None:
    """Store the raw task scores of the validation objects in ``best`` (normal data the model never trained
    on), unless it holds them already: they put a test object's scores on a common scale
    (:mod:`ssmtl_core.calibration`). Written atomically; nothing to do without ``best`` or validation objects."""
    if not best.is_file() or not len(data.val_index):
        return
    state = load_checkpoint(best, device)
    if "alert" in (state.get("calibration") or {}):
        return
    state["calibration"] = validation_scores(state, data, profile, device)
    _save_state(best, state)


def _save_state(path: Path, state: dict) -> None:
    """Rewrite a checkpoint read by :func:`~ssmtl_core.checkpoint.load_checkpoint`, atomically."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def run_validation_scores(run_dir: str | Path, root: str | Path | None = None, cache_root: str | Path | None = None,
                          device: str = "auto", progress: bool = True, log=print) -> dict:
    """The validation scores of a run's ``best.pt``, rebuilt from the run's training data (its dataset and cache
    folders are read from ``run.json``; ``root`` and ``cache_root`` override them). Detections, frames and
    teacher logits come from the caches when they are there."""
    state, profile, dataset, cache = load_run(run_dir, root, cache_root)
    data = prepare_training_data(dataset, profile, cache, progress=progress, log=log)
    if not len(data.val_index):
        raise SSMTLError(f"{run_dir}: its training data has no validation objects (train.val_fraction "
                         f"{profile.train.val_fraction}), so there is nothing normal to calibrate on.")
    return validation_scores(state, data, profile, pick_device(device))


def calibrate_run(run_dir: str | Path, root: str | Path | None = None, cache_root: str | Path | None = None,
                  device: str = "auto", force: bool = False, progress: bool = True, log=print) -> dict:
    """``ssmtl calibrate``: add the validation scores and the alert rule to a run's ``best.pt`` (checkpoints
    written before training stored them, or before frame-level alerts existed); written atomically. Returns the
    calibration's summary, with the alert rule's."""
    best = Path(run_dir) / "best.pt"
    state = load_checkpoint(best)
    stored = state.get("calibration") or {}
    if force or not stored.get("objects") or "alert" not in stored:
        state["calibration"] = run_validation_scores(run_dir, root, cache_root, device, progress, log)
        _save_state(best, state)
        log(f"{best}: calibration stored ({state['calibration']['objects']} validation objects)")
    else:
        log(f"{best} already holds its calibration ({state['calibration']['objects']} validation objects) and "
            "alert rule; --force recomputes them")
    calibration = Calibration(state["calibration"], tuple(state["profile"]["train"]["tasks"]))
    return calibration.summary() | {"alert": alert_rule(calibration, best, log).summary()}


def checkpoint_calibration(state: dict, checkpoint: str | Path, tasks: tuple[str, ...], device: str = "auto",
                           progress: bool = True, log=print, root: str | Path | None = None,
                           cache_root: str | Path | None = None) -> Calibration:
    """The calibration of a checkpoint; for one written before calibration existed, computed now from its run
    folder (the checkpoint's folder, with its ``run.json``; ``root`` and ``cache_root`` override the dataset and
    cache folders it names), or a clear error saying how to get one.

    Raises:
        SSMTLError: no calibration and none can be computed.
    """
    calibration = Calibration.from_state(state, tasks)
    if calibration is not None:
        return calibration
    run_dir = Path(checkpoint).parent
    how = (f"run `ssmtl calibrate --run {run_dir}` (add --root DATASET if the dataset moved) to store it in the "
           "checkpoint, or pass --per-video-minmax for the paper's per-video normalisation")
    if not (run_dir / "run.json").is_file():
        raise SSMTLError(f"{checkpoint} holds no calibration (it predates calibrated scores) and {run_dir} has no "
                         f"run.json to rebuild it from: {how}.")
    log(f"{checkpoint} holds no calibration (it predates calibrated scores): computing it from the run's "
        f"validation objects; {how.split(' (')[0]} to store it once")
    try:
        validation = run_validation_scores(run_dir, root, cache_root, device=device, progress=progress, log=log)
    except SSMTLError as exc:
        raise SSMTLError(f"{checkpoint} holds no calibration and it could not be rebuilt from {run_dir} ({exc}): "
                         f"{how}.") from None
    return Calibration(validation, tasks)


def alert_rule(calibration: Calibration, checkpoint: str | Path, log=print) -> AlertRule:
    """The alert rule stored with a checkpoint's calibration, or, for one calibrated before frame-level alerts,
    the fallback (the 99th percentile of the validation objects, one frame enough) with a message saying how to
    get a rule chosen on normal frames."""
    stored = calibration.validation.get("alert")
    if stored:
        return AlertRule.from_state(stored)
    log(f"{checkpoint} predates frame-level alerts: its threshold is the 99th percentile of the validation "
        "objects, which many normal frames cross; run `ssmtl calibrate --run "
        f"{Path(checkpoint).parent}` to choose one on normal frames")
    return fallback_rule(calibration)

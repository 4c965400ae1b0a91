"""What training consumes, prepared once from the caches (``docs/method.md``, "Object-centric sequences").

:func:`prepare_training_data` runs the stages before training in order: detection of the training videos
(cached), the training objects, their decoded frames (cached), the distillation targets (teacher logits,
cached, and the detector's class scores), the 85/15 split, and every detection of the validation frames
(the held-out normal footage that calibrates scores and alerts: :class:`ValidationFrames`). :func:`ssmtl_core.train.train` receives the
result and knows nothing of detectors, teachers or files, so data flows one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import IMAGENET_CLASSES, Profile
from .data.frames import load_frames
from .data.layouts import Dataset
from .detect import detect_dataset
from .detections import Detections
from .errors import SSMTLError
from .samples import ObjectIndex, objects_from_detections, require_objects, split_train_val
from .teachers import TeacherCache, load_teacher


@dataclass
class ValidationFrames:
    """The validation part of one training video, as held-out normal footage: every detection in it.

    The validation objects of the 85/15 split are a sample (a frame stride, a cap on objects); calibration and
    the alert threshold read *every* detection of the frames they come from, as ``score-video`` would.

    Attributes:
        video: the video's index in :attr:`TrainingData.frames`.
        start: its first validation frame (the frame of its first validation object); the part runs to the end.
        detections: every detection of frames ``start`` on (frame numbers of the whole video).
        teacher_logits: (N, 1000) the ImageNet teacher's logits of the detections whose distillation score
            needs them (those without the detector's class scores; other rows zero), or None when none does.
    """

    video: int
    start: int
    detections: Detections
    teacher_logits: np.ndarray | None = None


@dataclass
class TrainingData:
    """Everything training needs, built once from the caches (and reusable across runs of one profile).

    Attributes:
        frames: decoded frames of each training video.
        objects: all training objects.
        kd_targets: (N, kd_dim) float32 distillation targets (teacher logits, then detector class scores),
            or None when distillation is off.
        kd_layout: lengths of the two parts of the target: ``{"logits": 1000|0, "class_scores": 80|0}``.
        kd_has_classes: (N,) bool, False for class-agnostic objects (motion blobs of the hybrid detector),
            whose class-score part is not a target; None when every object has it (or none needs it).
        train_index, val_index: the 85/15 split (indices into ``objects``).
        caches: keys of the dataset, detection and teacher caches used.
        dataset: the dataset's summary (name, layout, root, sizes), for the run's records.
        cache_root: the cache folder the data came from.
        kd_sigmoid: predict the detector's class scores through a sigmoid (``train.kd_sigmoid``).
        validation_frames: every detection of the validation frames of each training video with validation
            objects (None: not prepared, e.g. data unpacked from a bundle; calibration then reads the
            validation objects alone and chooses no frame-level alert rule).
    """

    frames: list[np.ndarray]
    objects: ObjectIndex
    kd_targets: np.ndarray | None
    kd_layout: dict
    train_index: np.ndarray
    val_index: np.ndarray
    caches: dict
    kd_has_classes: np.ndarray | None = None
    dataset: dict | None = None
    cache_root: str | None = None
    kd_sigmoid: bool = True
    validation_frames: list[ValidationFrames] | None = None

    @property
    def kd_dim(self) -> int:
        return 0 if self.kd_targets is None else self.kd_targets.shape[1]

    @property
    def kd_probabilities(self) -> int:
        """The trailing target values that the student predicts through a sigmoid: the detector's class scores
        (none with ``train.kd_sigmoid`` off, the linear head of the first releases)."""
        if self.kd_targets is None or not self.kd_sigmoid:
            return 0
        return int(self.kd_layout.get("class_scores", 0))


def _subsample(objects: ObjectIndex, limit: int) -> ObjectIndex:
    """At most ``limit`` objects, spread evenly over time so every video and the 85/15 cut stay meaningful."""
    if not limit or len(objects) <= limit:
        return objects
    return objects.subset(np.unique(np.linspace(0, len(objects) - 1, limit).astype(int)))


def _class_scores(per_video: list[Detections], objects: ObjectIndex) -> tuple[np.ndarray, np.ndarray]:
    """The detector's class scores of every object (ObjectIndex is ordered by video) and whether it has them."""
    rows = [objects.row[objects.video == v] for v in range(len(per_video))]
    scores = np.concatenate([d.class_scores[r] for d, r in zip(per_video, rows)]).astype(np.float32)
    has = np.concatenate([d.classes[r] >= 0 for d, r in zip(per_video, rows)])
    return scores, has


def training_videos(dataset: Dataset, sample) -> list:
    """The training videos a profile trains on: all of them but ``sample.exclude_train_videos``.

    Raises:
        SSMTLError: an excluded name that is not a training video, or nothing left to train on.
    """
    excluded = set(sample.exclude_train_videos)
    names = [v.name for v in dataset.train]
    unknown = sorted(excluded - set(names))
    if unknown:
        raise SSMTLError(f"sample.exclude_train_videos names {', '.join(unknown)}, which {dataset.root} has no "
                         f"training video of; its training videos are {', '.join(names)}.")
    videos = [v for v in dataset.train if v.name not in excluded]
    if not videos:
        raise SSMTLError(f"sample.exclude_train_videos leaves no training video of {dataset.root} to train on.")
    return videos


def prepare_training_data(dataset: Dataset, profile: Profile, cache_root: str | Path, progress: bool = True,
                          log=print, teacher_weights: str | None = None) -> TrainingData:
    """Detections (cached), decoded frames, training objects, distillation targets (cached) and the split.

    Args:
        dataset: the dataset (its ``train`` videos are used).
        profile: settings.
        cache_root: the cache folder.
        progress: progress bars.
        log: where messages go.
        teacher_weights: optional state dict for the ImageNet teacher.
    """
    sample, train = profile.sample, profile.train
    detections = detect_dataset(dataset, profile.detect, cache_root, splits=("train",), progress=progress,
                                log=log)
    videos = training_videos(dataset, sample)
    per_video = [detections.load(v) for v in videos]
    objects = objects_from_detections(per_video, [v.num_frames for v in videos], sample, training=True)
    require_objects(objects, f"training ({detections.key}, {dataset.root})",
                    "The detector found nothing usable: lower detect.conf, check --weights, or use --detector "
                    "motion (a COCO detector does not see the synthetic sprites).")
    objects = _subsample(objects, sample.max_train_objects)
    frames_dir = Path(cache_root) / dataset.cache_id / "frames"
    frames = [load_frames(v, frames_dir) for v in
              tqdm(videos, desc="decode frames", unit="video", disable=not progress, leave=False)]

    kd_targets, layout, teacher_key, has_classes = None, {"logits": 0, "class_scores": 0}, None, None
    teacher_cache = None
    if "kd" in train.tasks:
        parts = []
        class_scores, has = _class_scores(per_video, objects)
        if train.teacher != "none":
            teacher = load_teacher(train.teacher, size=train.teacher_size, weights=teacher_weights)
            teacher_cache = TeacherCache(cache_root, dataset, teacher, detections)
            logits = np.zeros((len(objects), IMAGENET_CLASSES), np.float32)
            for v, video in enumerate(tqdm(videos, desc=f"teacher {teacher.name}", unit="video",
                                           disable=not progress, leave=False)):
                rows = np.flatnonzero(objects.video == v)
                if len(rows):
                    logits[rows] = teacher_cache.logits(video, frames[v], objects.frame[rows], objects.boxes[rows],
                                                        objects.row[rows])
            log(f"teacher {teacher.key}: {teacher_cache.hits} objects from cache, {teacher_cache.computed} computed")
            parts.append(logits)
            layout["logits"] = IMAGENET_CLASSES
            teacher_key = teacher.key
        if class_scores.shape[1] > 0 and has.any():
            if not has.all() and not layout["logits"]:
                raise SSMTLError("class-agnostic objects (motion blobs of --detector yolo+motion) need the ImageNet "
                                 "teacher's logits as their distillation target: use --teacher efficientnet_lite0.")
            parts.append(class_scores)
            layout["class_scores"] = class_scores.shape[1]
            has_classes = None if has.all() else has
        if not parts:
            raise SSMTLError("the distillation task has no target: the detector has no classes and the teacher is "
                             "'none'. Use --teacher efficientnet_lite0, a COCO detector, or drop kd from --tasks.")
        kd_targets = np.concatenate(parts, axis=1)
    train_index, val_index = split_train_val(objects, train.val_fraction)
    validation = validation_frames(objects, val_index, per_video, videos, frames, layout, teacher_cache)
    caches = {"dataset": dataset.cache_id, "detections": detections.key, "teacher": teacher_key}
    return TrainingData(frames, objects, kd_targets, layout, train_index, val_index, caches, has_classes,
                        dataset.summary(), str(Path(cache_root).resolve()), train.kd_sigmoid, validation)


def needs_teacher_logits(detections: Detections, kd_layout: dict) -> np.ndarray:
    """(N,) bool: the detections whose distillation score compares the teacher's logits, not the detector's
    class scores (as :meth:`ssmtl_core.score.Scorer.needs_teacher` decides at scoring time)."""
    if not kd_layout.get("logits"):
        return np.zeros(len(detections), bool)
    n_classes = kd_layout.get("class_scores", 0)
    if not n_classes or detections.class_scores.shape[1] != n_classes:
        return np.ones(len(detections), bool)
    return detections.classes < 0


def validation_frames(objects: ObjectIndex, val_index: np.ndarray, per_video: list[Detections], videos: list,
                      frames: list[np.ndarray], kd_layout: dict, teacher_cache: TeacherCache | None
                      ) -> list[ValidationFrames]:
    """Every detection from the first validation object of each training video to its end, with the teacher
    logits their distillation scores need (cached per detection, like the training objects')."""
    out = []
    for v in np.unique(objects.video[val_index]):
        start = int(objects.frame[val_index[objects.video[val_index] == v]].min())
        keep = per_video[v].frame >= start
        detections = per_video[v].select(keep)
        logits = None
        rows = np.flatnonzero(needs_teacher_logits(detections, kd_layout))
        if len(rows) and teacher_cache is not None:
            logits = np.zeros((len(detections), IMAGENET_CLASSES), np.float32)
            logits[rows] = teacher_cache.logits(videos[v], frames[v], detections.frame[rows],
                                                detections.boxes[rows], np.flatnonzero(keep)[rows])
        out.append(ValidationFrames(int(v), start, detections, logits))
    return out

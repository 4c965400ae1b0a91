"""Object detection and its cache (paper Sec. 3.1; ``docs/method.md``, "Detection").

Three detectors share one interface, ``detect_video(video)``, which returns
:class:`~ssmtl_core.detections.Detections`: per kept box the frame index, the box (x1, y1, x2, y2 in pixels),
its score, its class id and the 80 COCO class scores (an empty vector for detectors without classes).
:func:`make_detector` builds the one a configuration names.

* ``yolo``: a COCO detector through ultralytics (the paper used YOLOv3; ``yolov3u.pt`` is the faithful
  default for users with internet). Any weights: a model name, a ``.pt`` path, or an exported folder such as
  ``yolov8n_int8_openvino_model``. The raw network output ``(B, 84, N)`` is decoded in :mod:`.yolo`, not by
  ultralytics' predictor, so that every kept box keeps its full 80-score vector, the target of the
  knowledge-distillation task.
* ``motion``: OpenCV background subtraction (the video's median background, updated where no object is),
  morphology and connected components with area/aspect filters. It finds objects a COCO detector cannot name,
  which is the point made by SSMTL++, and it is the only detector that sees the synthetic sprites.
* ``yolo+motion``: the COCO boxes plus the moving blobs none of them explains (:func:`merge_hybrid`).

Detections are computed once per video and cached under
``<cache>/<dataset>/detections/<detector key>/<split>/<video>.npz`` with a ``meta.json`` saying what made them;
an entry is recomputed when its video's frame files change or the file is damaged.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .config import DETECTORS, DetectConfig
from .data.layouts import Dataset, Video
from .detections import COCO_CLASSES, Detections
from .errors import SSMTLError
from .io import (
    Claim,
    load_npz,
    package_versions,
    read_json,
    remove_stale_temps,
    save_npz,
    stable_hash,
    write_json,
)
from .metrics import box_iou
from .yolo import YoloDetector

HYBRID = "yolo+motion"


# -- motion detector ------------------------------------------------------------------------------


class MotionDetector:
    """Background subtraction + morphology + connected components (SSMTL++'s class-agnostic detector).

    Args:
        config: thresholds (``min_area``, ``max_area_frac``, ``max_aspect``, ``var_threshold``, ``pad``).
    """

    name = "motion"
    has_classes = False

    def __init__(self, config: DetectConfig):
        self.config = config

    @property
    def key(self) -> str:
        c = self.config
        settings = {"min_area": c.min_area, "max_area_frac": c.max_area_frac, "max_aspect": c.max_aspect,
                    "var_threshold": c.var_threshold, "pad": c.pad, "version": 3}
        return f"motion-{stable_hash(settings, 8)}"

    def describe(self) -> dict:
        return {"detector": "motion", "settings": {k: v for k, v in asdict(self.config).items()
                                                   if k in ("min_area", "max_area_frac", "max_aspect",
                                                            "var_threshold", "pad")}}

    @staticmethod
    def _median_background(video: Video, samples: int = 25) -> tuple[np.ndarray, float]:
        """The median of frames spread over the video, and the scene's noise level.

        The median is the empty scene as long as no object stays in one place for most of the video; the
        median absolute deviation around it measures sensor noise, which sets the foreground threshold.
        """
        indices = np.unique(np.linspace(0, video.num_frames - 1, min(samples, video.num_frames)).astype(int))
        greys = np.stack([cv2.cvtColor(video.frame(int(i)), cv2.COLOR_RGB2GRAY) for i in indices]).astype(np.float32)
        background = np.median(greys, axis=0)
        noise = float(np.median(np.abs(greys - background))) * 1.4826
        return background, noise

    def detect_video(self, video: Video, progress: bool = False) -> Detections:
        """Detect moving objects in every frame of ``video`` (:meth:`iter_video`, all at once)."""
        return Detections.concat([found for _, found in self.iter_video(video, progress)])

    def iter_video(self, video: Video, progress: bool = False, chunk: int = 8) -> Iterator[tuple[int, Detections]]:
        """Detect moving objects in every frame of ``video``: ``(frames done, their detections)`` every ``chunk``
        frames.

        Background subtraction against the median background, updated selectively (only where no object
        is) so it follows slow lighting changes without absorbing slow objects; then an opening removes
        speckle noise, a closing joins the parts of one object, and connected components become boxes.
        """
        c = self.config
        height, width = video.frame_size
        background, noise = self._median_background(video)
        # var_threshold is a squared Mahalanobis distance, as in OpenCV's MOG2, so sqrt gives sigmas.
        threshold = max(float(np.sqrt(c.var_threshold)) * max(noise, 1.0), 10.0)
        # The clean-up kernels and the padding are sized for 240-pixel-high frames (UCSD, the synthetic
        # default) and scale with the frame: on small frames a 3x3 opening erases limbs and splits people.
        scale = height / 240.0
        open_size = 3 if scale >= 0.75 else 1
        close_size = max(3, int(7 * scale) | 1)
        pad = max(1, int(round(c.pad * scale)))
        open_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open_size, open_size))
        close_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_size, close_size))
        max_area = c.max_area_frac * height * width
        parts = []
        for index, frame in tqdm(video.iter_frames(), total=video.num_frames, disable=not progress,
                                 desc=f"motion {video.key}", unit="frame", leave=False):
            if index % chunk == 0 and index:
                yield index, Detections.concat(parts)
                parts = []
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            diff = cv2.absdiff(grey.astype(np.float32), background)
            mask = np.where(diff > threshold, np.uint8(255), np.uint8(0))
            cv2.accumulateWeighted(grey.astype(np.float32), background, 0.02, mask=cv2.bitwise_not(mask))
            if open_size > 1:
                mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, open_kernel)
            mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close_kernel)
            count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            if count <= 1:
                continue
            stats = stats[1:]
            area = stats[:, cv2.CC_STAT_AREA].astype(np.float32)
            w = stats[:, cv2.CC_STAT_WIDTH].astype(np.float32)
            h = stats[:, cv2.CC_STAT_HEIGHT].astype(np.float32)
            aspect = np.maximum(w, h) / np.maximum(np.minimum(w, h), 1)
            keep = (area >= c.min_area) & (area <= max_area) & (aspect <= c.max_aspect)
            if not keep.any():
                continue
            x1 = stats[keep, cv2.CC_STAT_LEFT].astype(np.float32) - pad
            y1 = stats[keep, cv2.CC_STAT_TOP].astype(np.float32) - pad
            boxes = np.stack([x1, y1, x1 + w[keep] + 2 * pad, y1 + h[keep] + 2 * pad], axis=1)
            boxes = _clip_boxes(boxes, width, height)
            # The score is the blob's fill ratio: solid blobs are objects, thin ones are noise or shadows.
            fill = area[keep] / np.maximum(w[keep] * h[keep], 1)
            n = len(boxes)
            parts.append(Detections(np.full(n, index, np.int32), boxes, fill.astype(np.float32),
                                    np.full(n, -1, np.int16), np.zeros((n, 0), np.float16)))
        yield video.num_frames, Detections.concat(parts)


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes = boxes.astype(np.float32, copy=True)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


def box_recall(detections: Detections, gt_frame: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.3) -> float:
    """Fraction of ground-truth boxes overlapped (IoU >= ``iou``) by a detection of the same frame."""

    if len(gt_frame) == 0:
        return float("nan")
    found = 0
    for frame in np.unique(gt_frame):
        gt = gt_boxes[gt_frame == frame]
        pred = detections.boxes[detections.frame == frame]
        if len(pred):
            found += int((box_iou(gt, pred).max(axis=1) >= iou).sum())
    return found / len(gt_frame)


# -- hybrid: COCO boxes plus the moving blobs no COCO box explains --------------------------------


def covered_fraction(blobs: np.ndarray, boxes: np.ndarray, margin: float) -> np.ndarray:
    """Share of each blob's area inside the union of ``boxes``, each grown by ``margin`` of its size per side.

    Args:
        blobs: (B, 4) blob boxes of one frame.
        boxes: (K, 4) detector boxes of the same frame.
        margin: growth of every detector box on each side, as a fraction of its width / height.

    Returns:
        (B,) fractions in [0, 1]; 0 for every blob when ``boxes`` is empty.
    """
    out = np.zeros(len(blobs), np.float32)
    if not len(boxes) or not len(blobs):
        return out
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    grown = boxes + margin * size * np.array([-1, -1, 1, 1], np.float32)
    for i, blob in enumerate(np.round(blobs).astype(int)):
        x1, y1, x2, y2 = blob
        if x2 <= x1 or y2 <= y1:
            continue
        mask = np.zeros((y2 - y1, x2 - x1), bool)  # the blob's pixels, painted where a grown box covers them
        for gx1, gy1, gx2, gy2 in np.round(grown).astype(int):
            a, b = max(gy1 - y1, 0), min(gy2 - y1, y2 - y1)
            c, d = max(gx1 - x1, 0), min(gx2 - x1, x2 - x1)
            if b > a and d > c:
                mask[a:b, c:d] = True
        out[i] = mask.mean()
    return out


def merge_hybrid(coco: Detections, blobs: Detections, max_cover: float = 0.3, margin: float = 0.1) -> Detections:
    """COCO boxes plus the motion blobs they do not explain (the hybrid detector of ``docs/method.md``).

    A blob is explained, and dropped, when at least ``max_cover`` of its area lies inside the union of the
    frame's COCO boxes grown by ``margin``: the fragments of a detected person (a leg, a shadow, two halves
    split by a pole) and a blob merging two detected people both fall inside their boxes, so only motion
    the COCO detector did not see at all becomes a new object. Kept blobs are class-agnostic: class id -1
    and an all-zero 80-score row, which training and scoring treat as "no detector target" (the
    distillation then uses the ImageNet teacher's logits alone for them).

    Args:
        coco: the COCO detector's boxes of one video (with their 80 class scores).
        blobs: the motion detector's boxes of the same video.
        max_cover: a blob covered at least this much by COCO boxes is dropped.
        margin: growth of the COCO boxes, as a fraction of their size per side.
    """
    num_classes = coco.class_scores.shape[1] if len(coco) else COCO_CLASSES
    keep = np.zeros(len(blobs), bool)
    for index in np.unique(blobs.frame):
        rows = np.flatnonzero(blobs.frame == index)
        cover = covered_fraction(blobs.boxes[rows], coco.boxes[coco.frame == index], margin)
        keep[rows] = cover < max_cover
    added = blobs.select(keep)
    n = len(added)
    added = Detections(added.frame, added.boxes, added.scores, np.full(n, -1, np.int16),
                       np.zeros((n, num_classes), np.float16))
    merged = Detections.concat([coco, added], num_classes)
    order = np.argsort(merged.frame, kind="stable")  # by frame, COCO boxes first within each frame
    return merged.select(order)


class HybridDetector:
    """The COCO detector's boxes plus the motion blobs they do not explain (:func:`merge_hybrid`).

    Its two parts are detectors, or the detection caches of :func:`detect_dataset` (a cache reads as the
    detector that filled it), so a hybrid cache costs no second pass of either detector when their own caches
    exist.

    Args:
        coco: the COCO detector, or the cache of its boxes.
        motion: the motion detector, or the cache of its boxes.
        config: ``hybrid_cover`` and ``hybrid_margin``.
    """

    name = HYBRID
    has_classes = True

    def __init__(self, coco: YoloDetector | DetectionCache, motion: MotionDetector | DetectionCache,
                 config: DetectConfig):
        self.coco, self.motion, self.config = coco, motion, config

    @property
    def key(self) -> str:
        rule = {"cover": self.config.hybrid_cover, "margin": self.config.hybrid_margin, "version": 1}
        return f"hybrid-{stable_hash([self.coco.key, self.motion.key, rule], 10)}"

    def describe(self) -> dict:
        coco = self.coco.describe()
        return {"detector": HYBRID, "yolo": {**coco, "key": self.coco.key},
                "motion": self.motion.describe().get("settings"), "yolo_key": self.coco.key,
                "motion_key": self.motion.key, "hybrid_cover": self.config.hybrid_cover,
                "hybrid_margin": self.config.hybrid_margin, "class_names": coco.get("class_names")}

    def detect_video(self, video: Video, progress: bool = False) -> Detections:
        return merge_hybrid(self.coco.detect_video(video, progress), self.motion.detect_video(video, progress),
                            self.config.hybrid_cover, self.config.hybrid_margin)

    def iter_video(self, video: Video, progress: bool = False) -> Iterator[tuple[int, Detections]]:
        """:meth:`detect_video` part by part, as the COCO detector's parts come (the merge is frame by frame)."""
        blobs = self.motion.iter_video(video, progress)
        waiting, blobs_done = [], 0
        for done, coco in self.coco.iter_video(video, progress):
            while blobs_done < done:
                blobs_done, found = next(blobs)
                waiting.append(found)
            ahead = Detections.concat(waiting)
            yield done, merge_hybrid(coco, ahead.select(ahead.frame < done), self.config.hybrid_cover,
                                     self.config.hybrid_margin)
            waiting = [ahead.select(ahead.frame >= done)]


Detector = MotionDetector | YoloDetector | HybridDetector
"""What :func:`make_detector` builds: ``key``, ``describe()``, ``detect_video(video, progress)`` and
``iter_video(video, progress)`` (the same detections part by part: ``(frames done, their detections)``)."""


def make_detector(config: DetectConfig, device: str = "cpu",
                  parts: tuple[DetectionCache, DetectionCache] | None = None) -> Detector:
    """The detector named by ``config.detector``: the one place where a name becomes a detector.

    Args:
        config: the detection settings.
        device: torch device for YOLO ``.pt`` weights.
        parts: for ``yolo+motion``, the caches of its COCO and motion detectors to read instead of running
            them (:func:`detect_dataset`); by default both detectors are built here.
    """
    if config.detector == "motion":
        return MotionDetector(config)
    if config.detector == "yolo":
        return YoloDetector(config, device=device)
    if config.detector == HYBRID:
        coco, motion = parts or (make_detector(part, device) for part in hybrid_parts(config))
        return HybridDetector(coco, motion, config)
    raise SSMTLError(f"unknown detector {config.detector!r}: choose one of {', '.join(DETECTORS)}.")


def hybrid_parts(config: DetectConfig) -> tuple[DetectConfig, DetectConfig]:
    """The settings of the COCO and the motion detector of a ``yolo+motion`` configuration."""
    return replace(config, detector="yolo"), replace(config, detector="motion")


# -- cache ----------------------------------------------------------------------------------------


class DetectionCache:
    """Per-video detections under ``<cache>/<dataset>/detections/<detector key>/<split>/<video>.npz``.

    Each entry stores, next to its arrays, the input signature of its video (size and modification time of
    every frame file, or of the video file): an entry whose video changed since, or whose file is damaged, is
    recomputed. A complete cache is only read, never written (it may be read-only). Concurrent runs split the
    work: each video is claimed (:class:`~ssmtl_core.io.Claim`) by the run that computes it, and a run that
    finds a video claimed does the others first, then waits for it.

    Args:
        cache_root: the cache folder.
        dataset: the dataset the detections belong to.
        detector_key: the key of the detector and its settings (``detector.key``).
    """

    ARRAYS = ("frame", "boxes", "scores", "classes", "class_scores")

    def __init__(self, cache_root: str | Path, dataset: Dataset, detector_key: str):
        self.dataset = dataset
        self.key = detector_key
        self.folder = Path(cache_root) / dataset.cache_id / "detections" / detector_key

    def path(self, video: Video) -> Path:
        return self.folder / video.split / f"{video.name}.npz"

    def has(self, video: Video) -> bool:
        """Whether a sound entry made from the video as it is now is cached."""
        return self.state(video) == "ok"

    def state(self, video: Video) -> str:
        """``ok``, ``missing``, ``damaged`` (unreadable file), ``changed`` (the video's files changed since) or
        ``unsigned`` (written before entries kept their input signature, so unverifiable)."""
        path = self.path(video)
        if not path.is_file():
            return "missing"
        try:
            arrays = load_npz(path)  # reads every array, so zip CRC errors and truncation show here
        except Exception:  # BadZipFile, OSError, ValueError, EOFError, ...: all mean "recompute it"
            return "damaged"
        if any(name not in arrays for name in self.ARRAYS):
            return "damaged"
        if "input_signature" not in arrays:
            return "unsigned"
        if str(arrays["input_signature"]) != video.input_signature:
            return "changed"
        return "ok"

    @property
    def meta(self) -> dict:
        file = self.folder / "meta.json"
        return read_json(file) if file.is_file() else {}

    def load(self, video: Video) -> Detections:
        """The cached detections of ``video``; a clear error if they were never computed or are damaged."""
        path = self.path(video)
        if not path.is_file():
            raise SSMTLError(f"no cached detections for {video.key} at {path}. Run `ssmtl detect` with the same "
                             "dataset, detector and settings first.")
        try:
            arrays = load_npz(path)
            return Detections(*(arrays[name] for name in self.ARRAYS))
        except Exception as exc:
            raise SSMTLError(f"cached detections {path} are damaged ({type(exc).__name__}). Rerun `ssmtl detect` "
                             "(or the same command): damaged cache files are recomputed.") from None

    def describe(self) -> dict:
        """What the detector that filled this cache is (its ``meta.json`` without the dataset and versions)."""
        return {k: v for k, v in self.meta.items() if k not in ("versions", "dataset", "dataset_root", "key")}

    def detect_video(self, video: Video, progress: bool = False) -> Detections:
        """The cached detections of ``video``: a cache reads as the detector that filled it."""
        return self.load(video)

    def iter_video(self, video: Video, progress: bool = False) -> Iterator[tuple[int, Detections]]:
        """:meth:`detect_video` as one part (every frame done)."""
        yield video.num_frames, self.load(video)

    def _write_meta(self, meta: dict) -> None:
        """Write ``meta.json`` only when it says something new (a complete cache may be read-only)."""
        with contextlib.suppress(OSError, ValueError):
            if self.meta == json.loads(json.dumps(meta, default=str)):
                return
        write_json(self.folder / "meta.json", meta)

    def compute(self, detector: Detector, splits: tuple[str, ...] = ("train", "test"),
                videos: list[str] | None = None, force: bool = False, progress: bool = True,
                log=print, shard: tuple[int, int] | None = None) -> dict:
        """Detect every selected video not soundly cached (all of them with ``force``), atomically per video.

        ``shard=(i, n)`` keeps every n-th selected video from the i-th (0-based): n processes, or machines
        sharing the cache folder, each given its own i, fill one cache between them.

        Returns:
            A summary: videos computed and skipped, frames processed, frames/s, boxes.
        """
        if detector.key != self.key:
            raise SSMTLError(f"detector key {detector.key} does not match this cache ({self.key}).")
        selected = [v for split in splits for v in self.dataset.videos(split) if videos is None or v.name in videos]
        if videos is not None and not selected:
            raise SSMTLError(f"none of the videos {','.join(videos)} is in the {'/'.join(splits)} split(s) of "
                             f"{self.dataset.root}.")
        if shard is not None:
            selected = selected[shard[0]::shard[1]]
        for split in splits:
            remove_stale_temps(self.folder / split)  # what killed runs left; a live run's files are kept
        states = {v.key: "force" if force else self.state(v) for v in selected}
        todo = [v for v in selected if states[v.key] != "ok"]
        skipped = len(selected) - len(todo)
        if skipped:
            log(f"detections: {skipped} video(s) already cached in {self.folder}, skipped (use --force to redo).")
        for reason, why in (("changed", "their frames changed (size or time) since they were cached"),
                            ("damaged", "their cache files are damaged"),
                            ("unsigned", "they were cached without the input signature that tells whether their "
                                         "frames changed since")):
            names = [v.key for v in todo if states[v.key] == reason]
            if names:
                log(f"detections: recomputing {', '.join(names)}: {why}.")
        frames = sum(v.num_frames for v in todo)
        boxes, computed, waited = 0, 0, []
        start = time.perf_counter()
        if todo:
            self._write_meta({"dataset": self.dataset.cache_id, "dataset_root": str(self.dataset.root),
                              **detector.describe(), "key": self.key, "versions": package_versions()})
        with tqdm(total=frames, disable=not progress or not todo, desc=f"detect ({detector.name})",
                  unit="frame") as bar:
            for video in todo:
                claim = Claim(self.path(video))
                if not claim.acquire():  # another run is detecting it: do the others first
                    waited.append((video, claim))
                    continue
                try:
                    if force or self.state(video) != "ok":  # another run may have finished it meanwhile
                        boxes += self._detect_one(detector, video)
                        computed += 1
                finally:
                    claim.release()
                bar.update(video.num_frames)
            for video, claim in waited:
                log(f"detections: {video.key} is being computed by {claim.holder()}; waiting for it.")
                with claim:  # returns when that run is done, or died (its claim then lapses)
                    if self.state(video) != "ok":
                        boxes += self._detect_one(detector, video)
                        computed += 1
                bar.update(video.num_frames)
        elapsed = time.perf_counter() - start
        summary = {"computed": computed, "skipped": skipped, "waited": len(waited), "frames": frames,
                   "boxes": boxes, "seconds": round(elapsed, 2),
                   "frames_per_s": round(frames / elapsed, 1) if frames else None, "folder": str(self.folder)}
        if todo:
            log(f"detections: {len(todo)} video(s), {frames} frames, {boxes} boxes in {elapsed:.1f}s "
                f"({summary['frames_per_s']} frames/s) -> {self.folder}")
        return summary

    def _detect_one(self, detector: Detector, video: Video) -> int:
        """Detect one video and store it with its input signature (taken before reading its frames)."""
        signature = video.input_signature
        detections = detector.detect_video(video)
        save_npz(self.path(video), **detections.to_arrays(), input_signature=np.array(signature))
        return len(detections)


def detect_dataset(dataset: Dataset, config: DetectConfig, cache_root: str | Path,
                   splits: tuple[str, ...] = ("train", "test"), videos: list[str] | None = None,
                   force: bool = False, progress: bool = True, device: str = "cpu", log=print,
                   shard: tuple[int, int] | None = None) -> DetectionCache:
    """Build (or reuse) the detection cache of ``dataset`` and return it.

    ``yolo+motion`` first builds (or reuses) the caches of its two detectors, then merges them per video
    (:func:`merge_hybrid`); ``force`` recomputes all three. ``shard=(i, n)``: this process's share of the
    videos only (:meth:`DetectionCache.compute`).
    """
    parts = None
    if config.detector == HYBRID:  # the hybrid reads its two detectors' caches, built (or reused) first
        parts = tuple(detect_dataset(dataset, part, cache_root, splits, videos, force, progress, device, log, shard)
                      for part in hybrid_parts(config))
    detector = make_detector(config, device, parts)
    cache = DetectionCache(cache_root, dataset, detector.key)
    cache.compute(detector, splits=splits, videos=videos, force=force, progress=progress, log=log, shard=shard)
    return cache

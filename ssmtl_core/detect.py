"""Object detection and its cache (SPEC 3.1, step 1 of the method).

Two detectors share one interface, :meth:`detect_video`, which returns :class:`Detections`: per kept box the
frame index, the box (x1, y1, x2, y2 in pixels), its score, its class id and the 80 COCO class scores (an
empty vector for detectors without classes).

* ``yolo``: a COCO detector through ultralytics (the paper used YOLOv3; ``yolov3u.pt`` is the faithful
  default for users with internet). Any weights: a model name, a ``.pt`` path, or an exported folder such as
  ``yolov8n_int8_openvino_model``. The raw network output ``(B, 84, N)`` is decoded here, not by
  ultralytics' predictor, so that every kept box keeps its full 80-score vector, the target of the
  knowledge-distillation task.
* ``motion``: OpenCV background subtraction (the video's median background, updated where no object is),
  morphology and connected components with area/aspect filters. It finds objects a COCO detector cannot name, which is the
  point made by SSMTL++, and it is the only detector that sees the synthetic sprites.

Detections are computed once per video and cached under
``<cache>/<dataset>/detections/<detector key>/<split>/<video>.npz`` with a ``meta.json`` saying what made them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .config import DetectConfig
from .data.layouts import Dataset, Video
from .errors import SSMTLError
from .io import file_sha256, load_npz, package_versions, read_json, save_npz, stable_hash, write_json

NUM_COCO_CLASSES = 80


@dataclass
class Detections:
    """The kept boxes of one video.

    Attributes:
        frame: (N,) int32 frame index of each box.
        boxes: (N, 4) float32 x1, y1, x2, y2 in pixels of the original frame.
        scores: (N,) float32 confidence.
        classes: (N,) int16 COCO class id (-1 for detectors without classes).
        class_scores: (N, 80) float16 per-class scores, or (N, 0) without classes.
    """

    frame: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_scores: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def empty(cls, num_classes: int = 0) -> Detections:
        return cls(np.zeros(0, np.int32), np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int16), np.zeros((0, num_classes), np.float16))

    @classmethod
    def concat(cls, parts: list[Detections], num_classes: int = 0) -> Detections:
        if not parts:
            return cls.empty(num_classes)
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("frame", "boxes", "scores", "classes", "class_scores")))

    def select(self, mask: np.ndarray) -> Detections:
        return Detections(self.frame[mask], self.boxes[mask], self.scores[mask], self.classes[mask],
                          self.class_scores[mask])

    def in_frame(self, index: int) -> Detections:
        return self.select(self.frame == index)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"frame": self.frame, "boxes": self.boxes, "scores": self.scores, "classes": self.classes,
                "class_scores": self.class_scores}


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
        """Detect moving objects in every frame of ``video``.

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
        return Detections.concat(parts)


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes = boxes.astype(np.float32, copy=True)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes


# -- YOLO detector --------------------------------------------------------------------------------


class YoloDetector:
    """A COCO detector through ultralytics, decoded from its raw output so boxes keep all 80 class scores.

    Args:
        config: ``weights`` (name, ``.pt`` path or exported folder), ``conf``, ``iou``, ``imgsz``, ``tiles``,
            ``batch``.
        device: torch device for ``.pt`` weights (``cpu`` or ``cuda``); exported OpenVINO folders run on the CPU.
    """

    name = "yolo"
    has_classes = True

    def __init__(self, config: DetectConfig, device: str = "cpu"):
        self.config = config
        weights = config.weights or "yolov3u.pt"
        self.weights = weights
        path = Path(weights).expanduser()
        self._ov_model = None
        self._torch_model = None
        try:
            if path.is_dir():
                self._load_openvino(path)
            else:
                self._load_torch(weights, device)
        except SSMTLError:
            raise
        except Exception as exc:  # ultralytics/openvino raise many kinds; the user needs one sentence
            raise SSMTLError(
                f"cannot load YOLO weights {weights!r} ({type(exc).__name__}: {exc}). Pass --weights with a model "
                "name (downloaded by ultralytics, needs internet), a .pt file or an exported *_openvino_model "
                "folder such as ../shared/weights/yolov8n_int8_openvino_model."
            ) from None
        if self.num_classes != NUM_COCO_CLASSES:
            raise SSMTLError(f"{weights} predicts {self.num_classes} classes; SSMTL's distillation target needs a "
                             "COCO (80-class) detector.")

    def _load_openvino(self, folder: Path) -> None:
        import openvino as ov
        import yaml

        xml = next(iter(sorted(folder.glob("*.xml"))), None)
        if xml is None:
            raise SSMTLError(f"no .xml model in {folder}: expected an exported *_openvino_model folder.")
        meta_file = folder / "metadata.yaml"
        meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else {}
        core = ov.Core()
        model = core.read_model(str(xml))
        shape = model.input().get_partial_shape()
        if shape.is_static:
            self.input_shape = (int(shape[2].get_length()), int(shape[3].get_length()))
        else:
            size = meta.get("imgsz", [self.config.imgsz, self.config.imgsz])
            self.input_shape = (int(size[0]), int(size[1]))
            model.reshape([1, 3, *self.input_shape])
        self._ov_model = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        names = meta.get("names", {})
        self.class_names = [names[i] for i in sorted(names)] if names else [str(i) for i in range(80)]
        self.num_classes = len(self.class_names)
        self.weights_path = folder
        self.static = True

    def _load_torch(self, weights: str, device: str) -> None:
        import torch
        from ultralytics import YOLO

        yolo = YOLO(weights, task="detect")
        model = yolo.model
        if not isinstance(model, torch.nn.Module):
            raise SSMTLError(f"{weights} is not a PyTorch detection model.")
        self.device = torch.device(device)
        self._torch_model = model.to(self.device).float().eval()
        names = model.names
        self.class_names = [names[i] for i in sorted(names)]
        self.num_classes = len(self.class_names)
        self.weights_path = Path(yolo.ckpt_path) if getattr(yolo, "ckpt_path", None) else Path(weights)
        size = self.config.imgsz
        self.input_shape = (size, size)
        self.static = False

    @property
    def key(self) -> str:
        c = self.config
        digest = file_sha256(self.weights_path)[:8] if self.weights_path.exists() else "nohash"
        stem = self.weights_path.name.replace("_openvino_model", "").replace(".pt", "")
        return f"yolo-{stem}-{digest}-conf{c.conf:g}-iou{c.iou:g}-img{self.input_shape[0]}-t{self.tiles_for(None)}"

    def describe(self) -> dict:
        return {"detector": "yolo", "weights": str(self.weights), "weights_path": str(self.weights_path),
                "weights_sha256": file_sha256(self.weights_path) if self.weights_path.exists() else None,
                "conf": self.config.conf, "iou": self.config.iou, "input_shape": list(self.input_shape),
                "tiles": self.tiles_for(None), "class_names": self.class_names}

    def tiles_for(self, frame_size: tuple[int, int] | None) -> int:
        """Frames per network input: packing several small frames into one fixed-size input is the cheapest
        way to raise the throughput of a fixed-shape export on a CPU."""
        return max(1, int(self.config.tiles))

    # The layout of the tiles inside the network input: (rows, cols).
    @staticmethod
    def _grid(tiles: int, frame_size: tuple[int, int]) -> tuple[int, int]:
        if tiles == 1:
            return 1, 1
        if tiles == 2:
            return (2, 1) if frame_size[1] >= frame_size[0] else (1, 2)
        if tiles == 4:
            return 2, 2
        raise SSMTLError(f"detect.tiles must be 1, 2 or 4, not {tiles}.")

    def _letterbox_plan(self, frame_size: tuple[int, int], tiles: int):
        rows, cols = self._grid(tiles, frame_size)
        in_h, in_w = self.input_shape
        if not self.static and tiles == 1:
            # PyTorch models take any multiple of 32: a rectangular input wastes no compute on padding.
            scale = min(in_h / frame_size[0], in_w / frame_size[1])
            new_h, new_w = round(frame_size[0] * scale), round(frame_size[1] * scale)
            in_h, in_w = int(np.ceil(new_h / 32) * 32), int(np.ceil(new_w / 32) * 32)
        cell_h, cell_w = in_h // rows, in_w // cols
        scale = min(cell_h / frame_size[0], cell_w / frame_size[1])
        new_h, new_w = round(frame_size[0] * scale), round(frame_size[1] * scale)
        offsets = []
        for t in range(tiles):
            r, col = divmod(t, cols)
            offsets.append((col * cell_w + (cell_w - new_w) // 2, r * cell_h + (cell_h - new_h) // 2))
        return (in_h, in_w), scale, (new_h, new_w), offsets, (cell_h, cell_w), cols

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Raw output (B, 4 + C, N) for a float32 batch (B, 3, H, W) in [0, 1]."""
        if self._ov_model is not None:
            outputs = [next(iter(self._ov_model(batch[i:i + 1]).values())) for i in range(len(batch))]
            return np.concatenate(outputs)
        import torch

        with torch.inference_mode():
            out = self._torch_model(torch.from_numpy(batch).to(self.device))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float().cpu().numpy()

    def detect_frames(self, frames: list[np.ndarray]) -> list[Detections]:
        """Detect objects in RGB frames of one size; one :class:`Detections` per frame (frame index 0)."""
        if not frames:
            return []
        frame_size = frames[0].shape[:2]
        tiles = self.tiles_for(frame_size)
        (in_h, in_w), scale, (new_h, new_w), offsets, (cell_h, cell_w), cols = self._letterbox_plan(frame_size, tiles)
        groups = [frames[i:i + tiles] for i in range(0, len(frames), tiles)]
        canvases = np.full((len(groups), in_h, in_w, 3), 114, np.uint8)
        for g, group in enumerate(groups):
            for t, frame in enumerate(group):
                x0, y0 = offsets[t]
                canvases[g, y0:y0 + new_h, x0:x0 + new_w] = cv2.resize(frame, (new_w, new_h),
                                                                       interpolation=cv2.INTER_LINEAR)
        batch = canvases.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        raw = np.concatenate([self._infer(batch[i:i + self.config.batch])
                              for i in range(0, len(batch), self.config.batch)])
        results = []
        for g, group in enumerate(groups):
            per_tile = self._decode(raw[g], tiles, offsets, (cell_h, cell_w), cols, scale, frame_size)
            results.extend(per_tile[:len(group)])
        return results

    def _decode(self, raw: np.ndarray, tiles, offsets, cell, cols, scale, frame_size) -> list[Detections]:
        import torch
        from torchvision.ops import batched_nms

        raw = raw.T  # (N, 4 + C)
        class_scores = raw[:, 4:]
        best = class_scores.max(axis=1)
        keep = best > self.config.conf
        raw, class_scores, best = raw[keep], class_scores[keep], best[keep]
        classes = class_scores.argmax(axis=1)
        xy, wh = raw[:, :2], raw[:, 2:4]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        cell_h, cell_w = cell
        # Each box belongs to the tile that holds its centre.
        tile_of = (np.floor(xy[:, 1] / cell_h) * cols + np.floor(xy[:, 0] / cell_w)).astype(int)
        out = []
        height, width = frame_size
        for t in range(tiles):
            sel = tile_of == t
            x0, y0 = offsets[t]
            tile_boxes = (boxes[sel] - np.array([x0, y0, x0, y0], np.float32)) / scale
            tile_boxes = _clip_boxes(tile_boxes, width, height)
            scores, cls, cs = best[sel], classes[sel], class_scores[sel]
            valid = (tile_boxes[:, 2] - tile_boxes[:, 0] > 1) & (tile_boxes[:, 3] - tile_boxes[:, 1] > 1)
            tile_boxes, scores, cls, cs = tile_boxes[valid], scores[valid], cls[valid], cs[valid]
            if len(tile_boxes):
                kept = batched_nms(torch.from_numpy(tile_boxes), torch.from_numpy(scores),
                                   torch.from_numpy(cls), self.config.iou).numpy()[:300]
                tile_boxes, scores, cls, cs = tile_boxes[kept], scores[kept], cls[kept], cs[kept]
            n = len(tile_boxes)
            out.append(Detections(np.zeros(n, np.int32), tile_boxes.astype(np.float32), scores.astype(np.float32),
                                  cls.astype(np.int16), cs.astype(np.float16)))
        return out

    def detect_video(self, video: Video, progress: bool = False) -> Detections:
        """Detect objects in every frame of ``video``, ``batch * tiles`` frames per call."""
        chunk = max(1, self.config.batch) * self.tiles_for(video.frame_size)
        parts: list[Detections] = []
        buffer: list[np.ndarray] = []
        indices: list[int] = []

        def flush() -> None:
            for index, det in zip(indices, self.detect_frames(buffer)):
                det.frame[:] = index
                parts.append(det)
            buffer.clear()
            indices.clear()

        for index, frame in tqdm(video.iter_frames(), total=video.num_frames, disable=not progress,
                                 desc=f"yolo {video.key}", unit="frame", leave=False):
            buffer.append(frame)
            indices.append(index)
            if len(buffer) == chunk:
                flush()
        if buffer:
            flush()
        return Detections.concat(parts, NUM_COCO_CLASSES)


def box_recall(detections: Detections, gt_frame: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.3) -> float:
    """Fraction of ground-truth boxes overlapped (IoU >= ``iou``) by a detection of the same frame."""
    from .metrics import box_iou

    if len(gt_frame) == 0:
        return float("nan")
    found = 0
    for frame in np.unique(gt_frame):
        gt = gt_boxes[gt_frame == frame]
        pred = detections.boxes[detections.frame == frame]
        if len(pred):
            found += int((box_iou(gt, pred).max(axis=1) >= iou).sum())
    return found / len(gt_frame)


def make_detector(config: DetectConfig, device: str = "cpu") -> MotionDetector | YoloDetector:
    """The detector named by ``config.detector``."""
    if config.detector == "motion":
        return MotionDetector(config)
    if config.detector == "yolo":
        return YoloDetector(config, device=device)
    raise SSMTLError(f"unknown detector {config.detector!r}: choose yolo or motion.")


# -- cache ----------------------------------------------------------------------------------------


class DetectionCache:
    """Per-video detections under ``<cache>/<dataset>/detections/<detector key>/<split>/<video>.npz``.

    Args:
        cache_root: the cache folder.
        dataset: the dataset the detections belong to.
        detector_key: the key of the detector and its settings (``detector.key``).
    """

    def __init__(self, cache_root: str | Path, dataset: Dataset, detector_key: str):
        self.dataset = dataset
        self.key = detector_key
        self.folder = Path(cache_root) / dataset.cache_id / "detections" / detector_key

    def path(self, video: Video) -> Path:
        return self.folder / video.split / f"{video.name}.npz"

    def has(self, video: Video) -> bool:
        return self.path(video).is_file()

    @property
    def meta(self) -> dict:
        file = self.folder / "meta.json"
        return read_json(file) if file.is_file() else {}

    def load(self, video: Video) -> Detections:
        """The cached detections of ``video``; a clear error if they were never computed."""
        path = self.path(video)
        if not path.is_file():
            raise SSMTLError(f"no cached detections for {video.key} at {path}. Run `ssmtl detect` with the same "
                             "dataset, detector and settings first.")
        arrays = load_npz(path)
        return Detections(arrays["frame"], arrays["boxes"], arrays["scores"], arrays["classes"],
                          arrays["class_scores"])

    def compute(self, detector: MotionDetector | YoloDetector, splits: tuple[str, ...] = ("train", "test"),
                videos: list[str] | None = None, force: bool = False, progress: bool = True,
                log=print) -> dict:
        """Detect every selected video not yet cached (all of them with ``force``), atomically per video.

        Returns:
            A summary: videos computed and skipped, frames processed, frames/s, boxes.
        """
        if detector.key != self.key:
            raise SSMTLError(f"detector key {detector.key} does not match this cache ({self.key}).")
        selected = [v for split in splits for v in self.dataset.videos(split) if videos is None or v.name in videos]
        if videos is not None and not selected:
            raise SSMTLError(f"none of the videos {','.join(videos)} is in the {'/'.join(splits)} split(s) of "
                             f"{self.dataset.root}.")
        todo = [v for v in selected if force or not self.has(v)]
        skipped = len(selected) - len(todo)
        if skipped:
            log(f"detections: {skipped} video(s) already cached in {self.folder}, skipped (use --force to redo).")
        meta = {"dataset": self.dataset.cache_id, "dataset_root": str(self.dataset.root), **detector.describe(),
                "key": self.key, "versions": package_versions()}
        write_json(self.folder / "meta.json", meta)
        frames = sum(v.num_frames for v in todo)
        boxes = 0
        start = time.perf_counter()
        with tqdm(total=frames, disable=not progress or not todo, desc=f"detect ({detector.name})",
                  unit="frame") as bar:
            for video in todo:
                detections = detector.detect_video(video)
                save_npz(self.path(video), **detections.to_arrays())
                boxes += len(detections)
                bar.update(video.num_frames)
        elapsed = time.perf_counter() - start
        summary = {"computed": len(todo), "skipped": skipped, "frames": frames, "boxes": boxes,
                   "seconds": round(elapsed, 2), "frames_per_s": round(frames / elapsed, 1) if frames else None,
                   "folder": str(self.folder)}
        if todo:
            log(f"detections: {len(todo)} video(s), {frames} frames, {boxes} boxes in {elapsed:.1f}s "
                f"({summary['frames_per_s']} frames/s) -> {self.folder}")
        return summary


def detect_dataset(dataset: Dataset, config: DetectConfig, cache_root: str | Path,
                   splits: tuple[str, ...] = ("train", "test"), videos: list[str] | None = None,
                   force: bool = False, progress: bool = True, device: str = "cpu", log=print
                   ) -> DetectionCache:
    """Build (or reuse) the detection cache of ``dataset`` and return it."""
    detector = make_detector(config, device=device)
    cache = DetectionCache(cache_root, dataset, detector.key)
    cache.compute(detector, splits=splits, videos=videos, force=force, progress=progress, log=log)
    return cache

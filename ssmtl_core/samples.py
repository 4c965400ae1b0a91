"""Object-centric sequences for the four proxy tasks (paper Sec. 3.1-3.2; ``docs/method.md``, "Object-centric sequences", "Proxy tasks").

For a box detected in frame ``i``, the *same box* is cropped from frames ``i-t .. i+t`` (t = 3) and each crop
is resized to 64x64 RGB. From that one object the four tasks build their inputs:

* arrow of time: the 7 crops forwards (label 0) or reversed (label 1), each with probability 0.5;
* motion irregularity: the 7 consecutive crops (label 0) or an intermittent sequence (label 1) that keeps
  frame ``i`` and steps outwards 3 times on each side with gaps drawn uniformly from {1, 2, 3};
* middle box prediction: the 6 crops without the middle one as input, the middle crop as target;
* knowledge distillation: the student sees the object sequence (the arrow-of-time input, forwards or
  reversed, so the same encoder pass serves both tasks) and regresses the teachers' outputs for the middle
  crop.

Reversals and gaps are drawn afresh for every batch, never frozen. Frames are decoded once per video
(:func:`ssmtl_core.data.load_frames`) and each object's crops are resized in one call by stacking its K crops
along the channel axis (OpenCV resizes up to 512 channels at once), so no per-sample patch files exist.

Video borders: a training object needs its 7 consecutive frames inside the video (``t <= i <= T-1-t``); the
gaps of an intermittent side that would leave the video are redrawn until they fit (a side always fits
with gaps of 1). At test time every detection is scored; its window is clamped at the borders, repeating
the first or last frame.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from .config import SampleConfig
from .detections import Detections
from .errors import SSMTLError


@dataclass
class ObjectIndex:
    """Objects to sample: one row per detected box.

    Attributes:
        video: (N,) index of the object's video in the list of frame arrays.
        frame: (N,) frame index of the box (the middle frame of its sequences).
        boxes: (N, 4) float32 x1, y1, x2, y2 in pixels.
        row: (N,) the box's row in its video's detection arrays (aligns teacher targets and class scores).
    """

    video: np.ndarray
    frame: np.ndarray
    boxes: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def subset(self, index: np.ndarray) -> ObjectIndex:
        return ObjectIndex(self.video[index], self.frame[index], self.boxes[index], self.row[index])

    @classmethod
    def concat(cls, parts: list[ObjectIndex]) -> ObjectIndex:
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros((0, 4), np.float32),
                       np.zeros(0, np.int64))
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("video", "frame", "boxes", "row")))


def objects_from_detections(detections: list[Detections], num_frames: list[int], config: SampleConfig,
                            training: bool) -> ObjectIndex:
    """Select the objects to sample from per-video detections.

    Args:
        detections: one :class:`Detections` per video.
        num_frames: frame count of each video.
        config: sampling settings (``min_box_size``, ``temporal_half``, ``train_frame_stride``).
        training: training objects need their consecutive window inside the video and follow the frame
            stride; test objects are all boxes.
    """
    parts = []
    t = config.temporal_half
    for v, (det, count) in enumerate(zip(detections, num_frames)):
        width = det.boxes[:, 2] - det.boxes[:, 0]
        height = det.boxes[:, 3] - det.boxes[:, 1]
        keep = (width >= config.min_box_size) & (height >= config.min_box_size)
        if training:
            keep &= (det.frame >= t) & (det.frame <= count - 1 - t)
            keep &= det.frame % max(1, config.train_frame_stride) == 0
        rows = np.flatnonzero(keep)
        parts.append(ObjectIndex(np.full(len(rows), v, np.int32), det.frame[rows].astype(np.int32),
                                 det.boxes[rows].astype(np.float32), rows.astype(np.int64)))
    return ObjectIndex.concat(parts)


def split_train_val(objects: ObjectIndex, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per video, the first ``1 - val_fraction`` of the samples (in frame order) train, the rest validate.

    Returns:
        Indices into ``objects`` of the training and of the validation samples.
    """
    train, val = [], []
    for v in np.unique(objects.video):
        rows = np.flatnonzero(objects.video == v)
        rows = rows[np.argsort(objects.frame[rows], kind="stable")]
        cut = int(round(len(rows) * (1.0 - val_fraction)))
        if val_fraction > 0 and len(rows) > 1:
            cut = min(max(cut, 1), len(rows) - 1)
        train.append(rows[:cut])
        val.append(rows[cut:])
    return np.concatenate(train) if train else np.zeros(0, int), np.concatenate(val) if val else np.zeros(0, int)


# -- cropping -------------------------------------------------------------------------------------


def box_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Integer pixel bounds (x1, y1, x2, y2), end-exclusive, at least one pixel wide, inside the frame."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    x1 = np.clip(np.floor(boxes[:, 0]), 0, width - 1)
    y1 = np.clip(np.floor(boxes[:, 1]), 0, height - 1)
    x2 = np.clip(np.ceil(boxes[:, 2]), x1 + 1, width)
    y2 = np.clip(np.ceil(boxes[:, 3]), y1 + 1, height)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)


def crop_object(frames: np.ndarray, frame_indices: np.ndarray, box: np.ndarray, size: int, rgb: bool = True,
                pixels: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop ``box`` from ``frames[frame_indices]`` and resize every crop to ``size`` x ``size``.

    Args:
        frames: (T, H, W, C) uint8, C = 1 or 3.
        frame_indices: (K,) frame indices (already inside the video).
        box: (4,) x1, y1, x2, y2.
        size: output side.
        rgb: expand grey frames to three channels (False keeps one channel: cheaper to move around).
        pixels: the box's integer bounds from :func:`box_pixels`, when already computed.

    Returns:
        (K, size, size, 3) uint8 RGB crops, or (K, size, size, 1) for grey frames with ``rgb=False``.
    """
    _, height, width, channels = frames.shape
    x1, y1, x2, y2 = pixels if pixels is not None else box_pixels(box, height, width)[0]
    stack = frames[frame_indices, y1:y2, x1:x2]  # (K, h, w, C)
    k, h, w, c = stack.shape
    # One resize for all K crops: channels last, K*C channels (OpenCV handles up to 512).
    flat = np.ascontiguousarray(stack.transpose(1, 2, 0, 3).reshape(h, w, k * c))
    if h > size or w > size:
        # Shrinking: INTER_AREA averages the source pixels (no aliasing). OpenCV's area resize takes at most 4
        # channels for non-integer scales, so it goes 4 channels at a time.
        resized = _resize_channels(flat, size, cv2.INTER_AREA, 4)
    else:
        resized = _resize_channels(flat, size, cv2.INTER_LINEAR, 512)
    out = resized.reshape(size, size, k, c).transpose(2, 0, 1, 3)
    if c == 1 and rgb:
        out = np.repeat(out, 3, axis=3)
    return out


def _resize_channels(image: np.ndarray, size: int, interpolation: int, max_channels: int) -> np.ndarray:
    channels = image.shape[2]
    if channels <= max_channels:
        out = cv2.resize(image, (size, size), interpolation=interpolation)
        return out.reshape(size, size, channels)
    return np.concatenate([cv2.resize(image[..., j:j + max_channels], (size, size), interpolation=interpolation)
                           .reshape(size, size, -1) for j in range(0, channels, max_channels)], axis=2)


def consecutive_offsets(temporal_half: int) -> np.ndarray:
    """Offsets ``-t .. t`` of a consecutive sequence."""
    return np.arange(-temporal_half, temporal_half + 1)


def draw_intermittent_offsets(rng: np.random.Generator, count: int, temporal_half: int, max_gap: int,
                              room_before: np.ndarray, room_after: np.ndarray, max_tries: int = 64) -> np.ndarray:
    """Offsets of intermittent sequences: 0 kept, ``t`` steps outwards on each side with gaps in {1..max_gap}.

    Args:
        rng: random generator.
        count: number of sequences.
        temporal_half: t, steps on each side.
        max_gap: largest gap.
        room_before: (count,) frames available before the middle frame (>= t).
        room_after: (count,) frames available after it (>= t).

    Returns:
        (count, 2t+1) int offsets, strictly increasing, middle column 0.
    """
    def side(room: np.ndarray) -> np.ndarray:
        gaps = rng.integers(1, max_gap + 1, size=(count, temporal_half))
        for _ in range(max_tries):
            bad = gaps.sum(axis=1) > room
            if not bad.any():
                break
            gaps[bad] = rng.integers(1, max_gap + 1, size=(int(bad.sum()), temporal_half))
        gaps[gaps.sum(axis=1) > room] = 1  # gaps of 1 always fit: training objects have room >= t
        return np.cumsum(gaps, axis=1)

    before = side(np.asarray(room_before))
    after = side(np.asarray(room_after))
    return np.concatenate([-before[:, ::-1], np.zeros((count, 1), int), after], axis=1)


@dataclass
class Batch:
    """Uint8 crops and labels of one training batch; the task inputs are derived on the training device.

    Keeping only the consecutive crops and the intermittent crops on the host (reversal, the 6-frame
    middle-box input and its target are views of the consecutive crops) keeps host memory traffic low;
    grey scenes keep one channel until the device expands them to RGB.

    Attributes:
        index: (N,) the objects of the batch.
        consecutive: (N, 2t+1, S, S, C) uint8, frames i-t .. i+t.
        aot_label: (N,) 1 = reversed (arrow-of-time input is ``consecutive`` reversed where 1).
        irr_label: (N,) 1 = intermittent.
        intermittent: (N, 2t+1, S, S, C) uint8; rows with ``irr_label`` 0 are unused (left zero).
        irr_offsets: (N, 2t+1) frame offsets of the irregularity input.
    """

    index: np.ndarray
    consecutive: np.ndarray
    aot_label: np.ndarray
    irr_label: np.ndarray
    intermittent: np.ndarray | None = None
    irr_offsets: np.ndarray | None = None


class SequenceSampler:
    """Builds the crops behind the four tasks' inputs for any set of objects, from decoded frames.

    Args:
        frames: one (T, H, W, C) uint8 array per video (see :func:`ssmtl_core.data.load_frames`).
        objects: the objects.
        config: sampling settings.
        tasks: the tasks whose inputs are needed (intermittent crops only when ``irr`` is trained).
        seed: seed of the random reversals and gaps (a new draw for every batch).
    """

    def __init__(self, frames: list[np.ndarray], objects: ObjectIndex, config: SampleConfig,
                 tasks: tuple[str, ...], seed: int = 0):
        self.frames = frames
        self.objects = objects
        self.config = config
        self.tasks = tasks
        self.rng = np.random.default_rng(seed)
        self.consecutive = consecutive_offsets(config.temporal_half)
        self.workers = 2
        self.channels = frames[0].shape[-1] if frames else 3
        if any(f.shape[-1] != self.channels for f in frames):
            self.channels = 3

    def make_batch(self, index: np.ndarray, rng: np.random.Generator | None = None) -> Batch:
        """The crops of the objects ``index``, with reversal and gaps drawn from ``rng``."""
        rng = rng or self.rng
        t, size, c = self.config.temporal_half, self.config.crop_size, self.channels
        obj = self.objects.subset(index)
        n, k = len(index), 2 * self.config.temporal_half + 1
        aot_label = rng.integers(0, 2, size=n).astype(np.int64)
        irr_label = np.zeros(n, np.int64)
        offsets = np.tile(self.consecutive, (n, 1))
        intermittent = None
        if "irr" in self.tasks:
            lengths = np.array([len(self.frames[v]) for v in obj.video])
            irr_label = rng.integers(0, 2, size=n).astype(np.int64)
            drawn = draw_intermittent_offsets(rng, n, t, self.config.max_gap, obj.frame, lengths - 1 - obj.frame)
            offsets[irr_label == 1] = drawn[irr_label == 1]
            intermittent = np.zeros((n, k, size, size, c), np.uint8)
        consecutive = np.empty((n, k, size, size, c), np.uint8)
        pixels = np.empty((n, 4), np.int64)
        for v in np.unique(obj.video):
            rows = obj.video == v
            pixels[rows] = box_pixels(obj.boxes[rows], *self.frames[v].shape[1:3])
        pixels = pixels.tolist()

        def crop_rows(rows: range) -> None:
            for j in rows:
                indices = obj.frame[j] + self.consecutive
                if irr_label[j]:
                    indices = np.concatenate([indices, obj.frame[j] + offsets[j]])
                crops = crop_object(self.frames[obj.video[j]], indices, None, size, rgb=c == 3, pixels=pixels[j])
                consecutive[j] = crops[:k]
                if irr_label[j]:
                    intermittent[j] = crops[k:]

        # OpenCV's resize releases the GIL, so two halves of the batch crop in parallel.
        if self.workers > 1 and n >= 16:
            half = (n + 1) // 2
            list(_pool(self.workers).map(crop_rows, [range(0, half), range(half, n)]))
        else:
            crop_rows(range(n))
        return Batch(index, consecutive, aot_label, irr_label, intermittent, offsets)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers)
    return _POOLS[workers]


def prefetch(generator: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Items of ``generator`` prepared ``depth`` ahead in a background thread (OpenCV releases the GIL)."""
    if depth <= 0:
        yield from generator
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    sentinel = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in generator:
                if stop.is_set():
                    return
                items.put(item)
        except BaseException as exc:  # hand the error to the consumer thread
            items.put(exc)
        finally:
            items.put(sentinel)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def scoring_sequences(frames: np.ndarray, frame_index: np.ndarray, boxes: np.ndarray, config: SampleConfig,
                      rgb: bool = True) -> np.ndarray:
    """The consecutive 7-frame sequences of test objects, windows clamped at the video's borders.

    Args:
        frames: (T, H, W, C) uint8 frames of the video.
        frame_index: (N,) middle frame of each object.
        boxes: (N, 4) boxes.
        config: crop settings.
        rgb: expand grey frames to RGB (False keeps one channel; the scorer expands it later).

    Returns:
        (N, 2t+1, S, S, 3) uint8, or (N, 2t+1, S, S, 1) for grey frames with ``rgb=False``.
    """
    t, size = config.temporal_half, config.crop_size
    offsets = consecutive_offsets(t)
    channels = 3 if rgb else frames.shape[-1]
    out = np.empty((len(frame_index), 2 * t + 1, size, size, channels), np.uint8)
    last = len(frames) - 1
    pixels = box_pixels(boxes, *frames.shape[1:3]).tolist()
    for j, i in enumerate(frame_index):
        out[j] = crop_object(frames, np.clip(i + offsets, 0, last), None, size, rgb=rgb, pixels=pixels[j])
    return out


def require_objects(objects: ObjectIndex, what: str, hint: str) -> None:
    """Fail with a clear message when a split yields no objects (e.g. a COCO detector on synthetic sprites)."""
    if len(objects) == 0:
        raise SSMTLError(f"no objects to sample for {what}. {hint}")

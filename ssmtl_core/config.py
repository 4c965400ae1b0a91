"""Configuration: plain dataclasses, named presets and dataset profiles.

Notebook parameters, CLI flags and the YAML files under ``params/`` all map onto these dataclasses; no
configuration logic lives anywhere else. Defaults follow ``SPEC.md`` section 3 (the paper's protocol, with
the numbers the paper leaves out filled in from the authors' runs).

* :class:`DetectConfig`  - step 1, object detection (COCO detector or motion detector).
* :class:`SampleConfig`  - step 2, object-centric sequences (64x64 crops, t = 3).
* :class:`TrainConfig`   - steps 3-5, the 3D CNN, its four proxy tasks and the joint training.
* :class:`ScoreConfig`   - steps 6-7, object scores to frame scores (per-dataset published settings).
* :class:`Profile`       - all of the above for one dataset (``synthetic``, ``ped2``, ``avenue``, ``shanghaitech``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import SSMTLError

TASKS: tuple[str, ...] = ("aot", "irr", "mid", "kd")
"""The four proxy tasks: arrow of time, motion irregularity, middle box prediction, knowledge distillation."""

ARCHITECTURES: tuple[str, ...] = ("shallow_narrow", "shallow_wide", "deep_narrow", "deep_wide")
DATASETS: tuple[str, ...] = ("synthetic", "ped2", "avenue", "shanghaitech")


@dataclass
class DetectConfig:
    """Object detection (SPEC 3.1).

    Attributes:
        detector: ``yolo`` (a COCO detector through ultralytics) or ``motion`` (background subtraction).
        weights: YOLO weights: a model name such as ``yolov3u.pt`` (downloaded by ultralytics where there is
            internet), a ``.pt`` path or an exported folder such as ``yolov8n_int8_openvino_model``.
        conf: confidence threshold for kept boxes (0.5 on Ped2, 0.8 on Avenue and ShanghaiTech).
        iou: NMS IoU threshold.
        imgsz: network input size of the YOLO detector.
        tiles: frames packed side by side into one network input (1, 2 or 4; 0 = choose from the frame
            size so that frames are not shrunk below their native size). Trades resolution for speed on
            fixed-shape exports.
        batch: frames per detector call.
        min_area: motion detector: smallest blob area in pixels (at the frame's native size).
        max_area_frac: motion detector: largest blob area as a fraction of the frame.
        max_aspect: motion detector: largest box aspect ratio (long side / short side).
        var_threshold: motion detector: squared distance, in noise sigmas, that makes a pixel foreground.
        pad: motion detector: box padding in pixels around each blob (at 240-pixel-high frames; scaled).
    """

    detector: str = "motion"
    weights: str | None = None
    conf: float = 0.5
    iou: float = 0.7
    imgsz: int = 640
    tiles: int = 1
    batch: int = 8
    min_area: int = 40
    max_area_frac: float = 0.25
    max_aspect: float = 6.0
    var_threshold: float = 24.0
    pad: int = 2


@dataclass
class SampleConfig:
    """Object-centric sequences (SPEC 3.2, 3.3).

    Attributes:
        crop_size: side of every crop (64 in the paper).
        temporal_half: t, the number of frames on each side of the middle frame (3 -> 7 frames).
        max_gap: intermittent sequences step outwards with gaps drawn uniformly from {1, ..., max_gap}.
        min_box_size: boxes smaller than this (pixels, either side) are ignored.
        train_frame_stride: take training objects from every k-th frame (1 = all; CPU runs subsample).
        max_train_objects: cap on training objects (0 = no cap), drawn evenly over the videos.
    """

    crop_size: int = 64
    temporal_half: int = 3
    max_gap: int = 3
    min_box_size: int = 4
    train_frame_stride: int = 1
    max_train_objects: int = 0


@dataclass
class TrainConfig:
    """The 3D CNN and its joint training (SPEC 3.3-3.5).

    Attributes:
        arch: one of ``shallow_narrow``, ``shallow_wide``, ``deep_narrow``, ``deep_wide``.
        tasks: the proxy tasks trained (any non-empty subset of ``aot, irr, mid, kd``).
        epochs: training epochs (30 in the paper).
        batch_size: objects per step (64 in the paper).
        lr: Adam learning rate (1e-3 in the paper).
        kd_weight: lambda, the weight of the distillation loss (0.5).
        val_fraction: per video, the last fraction of the samples validates (0.15).
        dropout: dropout in the classification/distillation heads (0.3 in the authors' code).
        teacher: ImageNet teacher: ``efficientnet_lite0`` (offline default), ``resnet50`` (the paper's)
            or ``none``.
        teacher_size: the teacher's input side (224 for both teachers; smaller is faster, less faithful).
        seed: seed of everything random in training.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        amp: mixed precision on CUDA.
        num_threads: CPU threads for torch (0 = torch's default).
    """

    arch: str = "shallow_narrow"
    tasks: tuple[str, ...] = TASKS
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    kd_weight: float = 0.5
    val_fraction: float = 0.15
    dropout: float = 0.3
    teacher: str = "efficientnet_lite0"
    teacher_size: int = 224
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_threads: int = 0


@dataclass
class ScoreConfig:
    """Object scores to frame scores (SPEC 3.6-3.7), the authors' published per-dataset settings.

    Attributes:
        normalize_tasks: min-max normalise each task's object scores per video before summing
            (the authors skip this on Avenue).
        block: side, in pixels, of a cell of the score grid.
        mean_filter: window of the 3D mean filter over the grid, in cells (0 = none).
        gauss_taps: length of the temporal Gaussian filter (0 = none).
        gauss_sigma: its standard deviation in frames.
    """

    normalize_tasks: bool = True
    block: int = 1
    mean_filter: int = 9
    gauss_taps: int = 49
    gauss_sigma: float = 20.0


@dataclass
class Profile:
    """Everything that describes a run on one dataset.

    Attributes:
        name: profile name (``synthetic``, ``ped2``, ``avenue``, ``shanghaitech``).
        dataset: the dataset reader to use (same names).
        detect: detection settings.
        sample: object-centric sequence settings.
        train: training settings.
        score: scoring settings.
    """

    name: str
    dataset: str
    detect: DetectConfig = field(default_factory=DetectConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every setting."""
        return dataclasses.asdict(self)


# -- presets -----------------------------------------------------------------------------------------

#: The four encoder configurations of Sec. 2.2 of the paper: filters of each 3D conv and where the 2x2
#: spatial max pools go ("P"). Time is collapsed by a max over frames at the end.
ARCH_LAYERS: dict[str, tuple[int | str, ...]] = {
    "shallow_narrow": (16, "P", 32, "P", 32, "P"),
    "shallow_wide": (32, "P", 64, "P", 64, "P"),
    "deep_narrow": (16, 16, "P", 32, 32, "P", 32, "P", 32, "P"),
    "deep_wide": (32, 32, "P", 64, 64, "P", 64, "P", 64, "P"),
}


def _profiles() -> dict[str, Profile]:
    return {
        # The embedded default: synthetic sprites that no COCO detector knows, so the motion detector
        # finds them and the distillation target is the ImageNet teacher alone. Smoothing is scaled to its
        # short clips (160 frames): a 49-tap Gaussian with sigma 6 and a 5-cell mean filter on 4 px cells.
        "synthetic": Profile(
            name="synthetic",
            dataset="synthetic",
            detect=DetectConfig(detector="motion", min_area=30),
            # Sprites are about 14x34 px, so 32x32 crops lose nothing that 64x64 upsampled crops would show,
            # at a quarter of the compute: the CPU default. Real-data profiles use the paper's 64x64.
            sample=SampleConfig(crop_size=32, train_frame_stride=2),
            train=TrainConfig(epochs=6, teacher_size=128),
            score=ScoreConfig(block=4, mean_filter=5, gauss_taps=25, gauss_sigma=4.0),
        ),
        "ped2": Profile(
            name="ped2",
            dataset="ped2",
            detect=DetectConfig(detector="yolo", weights="yolov3u.pt", conf=0.5),
            score=ScoreConfig(block=1, mean_filter=9, gauss_taps=49, gauss_sigma=20.0),
        ),
        "avenue": Profile(
            name="avenue",
            dataset="avenue",
            detect=DetectConfig(detector="yolo", weights="yolov3u.pt", conf=0.8),
            score=ScoreConfig(normalize_tasks=False, block=20, mean_filter=9, gauss_taps=301, gauss_sigma=25.0),
        ),
        "shanghaitech": Profile(
            name="shanghaitech",
            dataset="shanghaitech",
            detect=DetectConfig(detector="yolo", weights="yolov3u.pt", conf=0.8),
            score=ScoreConfig(block=20, mean_filter=0, gauss_taps=201, gauss_sigma=31.0),
        ),
    }


def get_profile(name: str) -> Profile:
    """Return a fresh copy of the named dataset profile.

    Args:
        name: ``synthetic``, ``ped2``, ``avenue`` or ``shanghaitech``.
    """
    profiles = _profiles()
    if name not in profiles:
        raise SSMTLError(f"unknown profile {name!r}: choose one of {', '.join(profiles)}.")
    return profiles[name]


_SECTIONS = {"detect": DetectConfig, "sample": SampleConfig, "train": TrainConfig, "score": ScoreConfig}


def apply_overrides(profile: Profile, overrides: dict[str, Any] | None, skip_none: bool = True) -> Profile:
    """Return ``profile`` with ``overrides`` applied.

    Overrides are either nested (``{"train": {"epochs": 3}}``) or dotted (``{"train.epochs": 3}``). Unknown
    keys are an error, so a typo never silently leaves a default in place. ``None`` values mean "not given"
    (CLI flags left out) and are skipped unless ``skip_none`` is False.
    """
    if not overrides:
        return profile
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if value is None and skip_none:
            continue
        if "." in key:
            section, name = key.split(".", 1)
            nested.setdefault(section, {})[name] = value
        elif isinstance(value, dict):
            nested.setdefault(key, {}).update({k: v for k, v in value.items() if v is not None or not skip_none})
        else:
            raise SSMTLError(f"setting {key!r} must be written as section.name (e.g. train.epochs).")
    updates: dict[str, Any] = {}
    for section, values in nested.items():
        if section not in _SECTIONS:
            raise SSMTLError(f"unknown settings section {section!r}: choose one of {', '.join(_SECTIONS)}.")
        current = getattr(profile, section)
        known = {f.name: f for f in fields(current)}
        for name in values:
            if name not in known:
                raise SSMTLError(
                    f"unknown setting {section}.{name}: known ones are {', '.join(sorted(known))}."
                )
        coerced = {name: _coerce(getattr(current, name), value) for name, value in values.items()}
        updates[section] = replace(current, **coerced)
    return replace(profile, **updates)


def _coerce(default: Any, value: Any) -> Any:
    """Coerce YAML/CLI values to the type of the default (tuples of tasks from "aot,irr" strings)."""
    if isinstance(default, tuple) and isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(default, bool) and isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, float) and isinstance(value, (int, str)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, str):
        return int(value)
    return value


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """Rebuild a :class:`Profile` from :meth:`Profile.to_dict` output (e.g. read back from a checkpoint)."""
    base = get_profile(data.get("dataset", data.get("name", "synthetic")))
    base = replace(base, name=data.get("name", base.name), dataset=data.get("dataset", base.dataset))
    return apply_overrides(base, {k: v for k, v in data.items() if k in _SECTIONS}, skip_none=False)


def load_profile(name: str, yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None
                 ) -> Profile:
    """The named profile, updated by a YAML file (sections ``detect/sample/train/score``) and overrides.

    Args:
        name: the base profile.
        yaml_path: optional YAML file with nested settings.
        overrides: optional dict of settings applied last.
    """
    profile = get_profile(name)
    if yaml_path is not None:
        import yaml

        path = Path(yaml_path)
        if not path.is_file():
            raise SSMTLError(f"settings file not found: {path}. Pass an existing YAML file.")
        data = yaml.safe_load(path.read_text()) or {}
        settings = {k: v for k, v in data.items() if k in _SECTIONS}
        profile = apply_overrides(profile, settings)
    profile = apply_overrides(profile, overrides)
    validate(profile)
    return profile


def validate(profile: Profile) -> None:
    """Raise :class:`SSMTLError` for settings that cannot work."""
    train = profile.train
    if train.arch not in ARCHITECTURES:
        raise SSMTLError(f"unknown architecture {train.arch!r}: choose one of {', '.join(ARCHITECTURES)}.")
    bad = [t for t in train.tasks if t not in TASKS]
    if bad or not train.tasks:
        raise SSMTLError(f"tasks must be a non-empty subset of {','.join(TASKS)}; got {','.join(train.tasks)}.")
    if profile.detect.detector not in ("yolo", "motion"):
        raise SSMTLError(f"unknown detector {profile.detect.detector!r}: choose yolo or motion.")
    if train.teacher not in ("efficientnet_lite0", "resnet50", "none"):
        raise SSMTLError(f"unknown teacher {train.teacher!r}: choose efficientnet_lite0, resnet50 or none.")

"""One name per setting: notebook parameter <-> profile field <-> command-line flag.

A setting of the study is written in four places: an UPPERCASE parameter of a notebook (and of the
``params/<profile>.yaml`` files that feed the notebooks), a field of the dataclasses of
:mod:`ssmtl_core.config`, a flag of ``ssmtl`` (:mod:`ssmtl_core.cli`) and a flag of ``./run_all.sh``
(:mod:`ssmtl_core.study`). :data:`SETTINGS` below is the only place where these names meet; the CLI builds
its flags from it, the runner checks the params files and translates its flags with it, and the notebooks turn
their parameters into profile overrides with it (through :mod:`ssmtl_core.study_task`).

Settings without a profile field (``field`` None) say where things are (dataset, caches, runs, reports) or
shape a notebook's pictures; they are parameters and flags, never part of a :class:`~ssmtl_core.config.Profile`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import (
    ARCHITECTURES,
    COMPILES,
    DATASETS,
    DETECTORS,
    PIPELINES,
    PRECISIONS,
    SCHEDULES,
    TASKS,
    TEACHERS,
    Profile,
)
from .errors import SettingError, SSMTLError


@dataclass(frozen=True)
class Setting:
    """One setting under all its names.

    Attributes:
        parameter: the notebook parameter and ``params/*.yaml`` key (UPPERCASE).
        field: ``section.name`` of the :class:`~ssmtl_core.config.Profile` dataclasses, or None.
        flags: command-line flags, the canonical one first (later ones are accepted spellings).
        help: one line for ``--help`` and for the notebooks' parameter comments.
        unset: the notebook value that means "the profile's default" (e.g. ``""`` or ``0``); None: none.
        choices: allowed values, when the set is closed.
        value_type: the flag's type where there is no profile field to take it from (``str`` otherwise).
    """

    parameter: str
    field: str | None
    flags: tuple[str, ...]
    help: str
    unset: Any = None
    choices: tuple[Any, ...] | None = None
    value_type: type | None = None

    @property
    def dest(self) -> str:
        """The ``argparse`` attribute of the flag (from the canonical flag)."""
        return self.flags[0].lstrip("-").replace("-", "_")

    def arg_type(self) -> type:
        """The type of the flag's value: that of the profile field's default (``str`` for text and lists)."""
        if self.field is None:
            return self.value_type or str
        section, name = self.field.split(".")
        default = getattr(getattr(_DEFAULTS, section), name)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            return str
        return type(default)


#: Every setting of the study, under all its names. Keep one row per setting; add a row before a new name.
SETTINGS: tuple[Setting, ...] = (
    # where things are
    Setting("PROFILE", None, ("--dataset", "--profile"), "dataset profile (settings and reader)", choices=DATASETS),
    Setting("DATA_ROOT", None, ("--root", "--data-root"), "dataset folder (its layout is recognised from it)"),
    Setting("SYNTH_SIZE", None, (), "size of the generated synthetic dataset", choices=("tiny", "small", "default")),
    Setting("CACHE_DIR", None, ("--cache",), "cache folder (detections, decoded frames, teacher logits)"),
    Setting("RUNS_DIR", None, ("--runs",), "folder of the training runs (checkpoints)"),
    Setting("REPORTS_DIR", None, ("--reports",), "reports folder of a profile"),
    Setting("OUT_DIR", None, (), "where a notebook writes metrics.json and its figures"),
    Setting("ARCHS", None, ("--archs",), "comma-separated architectures"),
    Setting("SHARD", None, ("--shard",), "this process's share of the videos: i/n takes every n-th video from the "
            "i-th (0-based), so n processes or machines fill one cache"),
    Setting("PROCS", None, ("--procs",), "training processes on this machine (torchrun, DistributedDataParallel; "
            "the runner hands it to the notebooks as SSMTL_PROCS)", value_type=int),
    # step 1: detection
    Setting("DETECTOR", "detect.detector", ("--detector",), "object detector", unset="", choices=DETECTORS),
    Setting("DETECTOR_WEIGHTS", "detect.weights", ("--weights", "--detector-weights"),
            "YOLO weights: a name (yolov3u.pt), a .pt file or an exported folder", unset=""),
    Setting("CONF", "detect.conf", ("--conf",), "confidence threshold of kept boxes"),
    Setting("TILES", "detect.tiles", ("--tiles",), "frames packed into one YOLO input (speed)", choices=(1, 2, 4)),
    # step 2: object-centric sequences
    Setting("CROP_SIZE", "sample.crop_size", ("--crop-size",), "crop side (64 in the paper)"),
    Setting("FRAME_STRIDE", "sample.train_frame_stride", ("--frame-stride",),
            "training objects from every k-th frame", unset=0),
    Setting("MAX_OBJECTS", "sample.max_train_objects", ("--max-objects",), "cap on training objects (0: none)"),
    # steps 3-5: the network and its training
    Setting("ARCH", "train.arch", ("--arch",), "encoder architecture", choices=ARCHITECTURES),
    Setting("TASKS", "train.tasks", ("--tasks",), f"comma-separated subset of {','.join(TASKS)} (the ablation)"),
    Setting("EPOCHS", "train.epochs", ("--epochs",), "training epochs (30 in the paper)"),
    Setting("BATCH_SIZE", "train.batch_size", ("--batch-size",), "objects per step (64 in the paper)"),
    Setting("LR", "train.lr", ("--lr",), "Adam learning rate (1e-3 in the paper)"),
    Setting("TEACHER", "train.teacher", ("--teacher",), "ImageNet teacher",
            choices=(*TEACHERS, "none")),
    Setting("SEED", "train.seed", ("--seed",), "seed of everything random in training"),
    Setting("DEVICE", "train.device", ("--device",), "auto (CUDA when present), cpu or cuda"),
    Setting("PRECISION", "train.precision", ("--precision",), "training precision (auto: bf16 where native and faster)",
            choices=PRECISIONS),
    Setting("COMPILE", "train.compile", ("--compile",), "compiled training passes (torch.compile; auto: on a CPU "
            "where it builds, for runs long enough to pay, when faster)", choices=COMPILES),
    Setting("BUDGET_MINUTES", "train.budget_minutes", ("--budget-minutes",),
            "CPU-time budget of training in minutes: whole epochs while they fit (0: none)"),
    Setting("SCHEDULE", "train.schedule", ("--schedule",),
            "learning rate over the run: cosine (warm-up, then a decay that ends with the run) or constant (the "
            "paper's)", unset="", choices=SCHEDULES),
    # steps 6-7: scoring
    Setting("SCORE_PRECISION", "score.inference_precision", ("--score-precision",),
            "precision of CPU inference (auto: bf16 where native; int8: quantized on training objects)",
            choices=("auto", "fp32", "bf16", "int8")),
    Setting("PIPELINE", "score.pipeline", ("--pipeline",), "score-video: detection and scoring at once (overlap), "
            "one after the other (sequential) or auto (overlap with more than two CPU cores or on a GPU)",
            choices=PIPELINES),
    # notebook pictures and tables
    Setting("MAX_SHOWN", None, (), "test videos shown in a label timeline (0: all)"),
    Setting("COMPARE_WEIGHTS", None, (), "YOLO weights shown next to the motion detector"),
    Setting("GALLERY_SIZE", None, (), "objects in each row of a gallery"),
    Setting("CLIP_FORMAT", None, (), "annotated clip format", choices=("gif", "mp4")),
    Setting("CLIP_WIDTH", None, (), "width of the annotated GIF in pixels"),
    Setting("CLIP_FRAMES", None, (), "frames of the annotated GIF at most"),
    Setting("SYNTH_SEED", None, (), "seed of the generated synthetic dataset"),
    # the settings that have no name of their own
    Setting("ENSEMBLE_SEEDS", None, (), "comma-separated seeds whose runs of ARCH are scored as one ensemble "
            "(empty: the run of SEED alone)"),
    Setting("OVERRIDES", None, (), "more profile settings by field, e.g. {'sample.temporal_half': 1} (a notebook's "
            "exercises change them; validated like every other setting)"),
)

_DEFAULTS = Profile(name="defaults", dataset="synthetic")
_SECTIONS = ("detect", "sample", "train", "score")
BY_PARAMETER: dict[str, Setting] = {s.parameter: s for s in SETTINGS}
PARAMETERS: tuple[str, ...] = tuple(BY_PARAMETER)


def setting(parameter: str) -> Setting:
    """The row of a notebook parameter; unknown names are an error naming the known ones."""
    if parameter not in BY_PARAMETER:
        raise SSMTLError(f"unknown setting {parameter!r}: known ones are {', '.join(PARAMETERS)} "
                         "(ssmtl_core/settings.py).")
    return BY_PARAMETER[parameter]


def notebook_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The settings among a notebook's variables (``globals()``): only names of :data:`SETTINGS`, so the
    notebook's own constants never pass for parameters."""
    return {name: namespace[name] for name in PARAMETERS if name in namespace}


def profile_overrides(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Notebook parameters (or ``params/*.yaml`` values) -> dotted profile overrides (``train.epochs``...).

    Parameters without a profile field are left out; a value equal to the setting's ``unset`` (e.g. an
    empty ``DETECTOR_WEIGHTS`` or ``FRAME_STRIDE = 0``) keeps the profile's default.
    """
    overrides = {}
    for name, value in parameters.items():
        row = setting(name)
        if name == "OVERRIDES":
            overrides.update(field_overrides(value, declared=parameters))
            continue
        if row.field is None or value is None or (row.unset is not None and value == row.unset):
            continue
        overrides[row.field] = value
    return overrides


def field_overrides(value: Any, declared: Iterable[str] = ()) -> dict[str, Any]:
    """The ``OVERRIDES`` parameter: profile fields by their dotted name (``{"sample.temporal_half": 1}``), for
    the settings that have no parameter where they are set. A field whose parameter is ``declared`` there too
    (``train.epochs`` next to ``EPOCHS``) is refused with the parameter's name: each value is set one way. Unknown
    fields and bad values are refused by :func:`ssmtl_core.config.load_profile`.
    """
    if value is None or value == "" or value == {}:
        return {}
    if not isinstance(value, Mapping):
        raise SSMTLError(f"OVERRIDES must be a dict of profile fields, e.g. {{'sample.temporal_half': 1}}; got "
                         f"{value!r}. Fix the notebook parameter or the params/*.yaml value.")
    declared = set(declared)
    for key in value:
        if not isinstance(key, str) or key.count(".") != 1:
            raise SSMTLError(f"OVERRIDES: {key!r} must be a profile field written as section.name (e.g. "
                             "sample.temporal_half).")
        row = next((s for s in SETTINGS if s.field == key), None)
        if row is not None and row.parameter in declared:
            raise SSMTLError(f"OVERRIDES: {key} is also the parameter {row.parameter}: set {row.parameter} instead.")
    return dict(value)


def check_parameters(names: Iterable[str], where: str) -> None:
    """Raise for names that are not settings (a typo in a params file must not leave a default in place)."""
    unknown = sorted(set(names) - set(BY_PARAMETER))
    if unknown:
        raise SSMTLError(f"{where}: unknown setting(s) {', '.join(unknown)}; known ones are {', '.join(PARAMETERS)} "
                         "(ssmtl_core/settings.py).")


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, parameters: Iterable[str],
                  required: Iterable[str] = (), **defaults: Any) -> None:
    """Add the flags of ``parameters`` to ``parser``, with their types, choices and help from the table.

    Args:
        parser: a parser or an argument group.
        parameters: notebook parameter names of the flags to add.
        required: the ones the command cannot do without.
        defaults: ``PARAMETER=value`` defaults (otherwise None: "not given, keep the profile's").
    """
    required = set(required)
    for name in parameters:
        row = setting(name)
        if not row.flags:
            raise SSMTLError(f"setting {name} has no command-line flag.")
        kwargs: dict[str, Any] = {"help": row.help, "dest": row.dest, "type": row.arg_type()}
        if row.choices is not None:
            kwargs["choices"] = row.choices
        if name in required:
            kwargs["required"] = True
        if name in defaults:
            kwargs["default"] = defaults[name]
        parser.add_argument(*row.flags, **kwargs)


def args_to_overrides(args: argparse.Namespace, parameters: Iterable[str]) -> dict[str, Any]:
    """Flags given on the command line -> dotted profile overrides (flags left out are not overrides)."""
    overrides = {}
    for name in parameters:
        row = setting(name)
        value = getattr(args, row.dest, None)
        if row.field is not None and value is not None:
            overrides[row.field] = value
    return overrides


def args_to_parameters(args: argparse.Namespace, parameters: Iterable[str]) -> dict[str, Any]:
    """Flags given on the command line -> notebook parameters (for the runner; None: not given)."""
    return {name: getattr(args, setting(name).dest, None) for name in parameters}


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """A YAML file of settings (``--params``) -> dotted profile overrides.

    The file may use either vocabulary: notebook parameters (``EPOCHS: 3``), profile sections
    (``train: {epochs: 3}``) or dotted fields (``train.epochs: 3``). Unknown names are an error.
    """
    path = Path(path)
    if not path.is_file():
        raise SSMTLError(f"settings file not found: {path}. Pass an existing YAML file.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SSMTLError(f"{path}: expected a mapping of settings, got {type(data).__name__}.")
    if {"common", "notebooks", "archs", "quick"} & set(data):
        raise SSMTLError(f"{path} is a study parameters file (common/notebooks/archs/quick) for ./run_all.sh; "
                         "--params takes one flat mapping, e.g. 'EPOCHS: 3' or 'train: {epochs: 3}'.")
    overrides: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS and isinstance(value, dict):
            overrides.update({f"{key}.{name}": v for name, v in value.items()})
        elif "." in key and key.split(".", 1)[0] in _SECTIONS:
            overrides[key] = value
        else:
            parameters[key] = value
    check_parameters(parameters, str(path))
    return {**profile_overrides(parameters), **overrides}


def error_message(error: Exception) -> str:
    """The message of an error for the person who set the value: a :class:`~ssmtl_core.errors.SettingError`
    (raised by :mod:`ssmtl_core.config`, which knows only profile fields) also names the setting's flag and
    notebook parameter, e.g. ``setting train.batch_size (--batch-size, BATCH_SIZE) must be >= 1``."""
    if not isinstance(error, SettingError):
        return str(error)
    row = next((s for s in SETTINGS if s.field == error.field), None)
    if row is None:
        return str(error)
    return str(SettingError(error.field, error.value, error.expected, ", ".join([*row.flags[:1], row.parameter])))


def _check_table() -> None:
    """Every field of the table exists in the profile dataclasses (import-time guard against stale rows)."""
    for row in SETTINGS:
        if row.field:
            section, name = row.field.split(".")
            if not hasattr(getattr(_DEFAULTS, section), name):
                raise SSMTLError(f"settings.py: {row.parameter} names a field {row.field} that does not exist.")


_check_table()

"""What the study's notebooks share: their setup from the parameters, one run trained, one task scored.

Notebooks 01-04 each train the 3D CNN on one proxy task alone and score the test objects with it; notebook 05
trains all four tasks together; 00-08 all start from the same parameters. The steps they have in common live
here, so that each notebook keeps only its own prose, its sample pictures and its figures:

* :func:`repo_path`, :func:`open_or_generate` and :func:`run_name` - where a parameter's path lies, the dataset
  (the synthetic one generated when missing) and a run's folder name, shared with the runner
  (:mod:`ssmtl_core.study`, which imports them from here);
* :func:`setup` - notebook parameters -> profile (through the one table of :mod:`ssmtl_core.settings`),
  dataset, output, cache and runs folders;
* :func:`prepare_data`, :func:`train_run` and :func:`trained_model` - the only place the notebooks call
  training and read its checkpoints;
* :func:`score_task` - a trained run's frame metrics (``evaluate_run``), every test object's score for one
  task, the object-level ground truth and the object AUC;
* :func:`object_gallery` - crops of the most and least anomalous test objects, at the network's crop size;
* :func:`score_clip` - ``ssmtl score-video`` on one clip, with calibrated and per-video min-max frame scores;
* :func:`write_task_metrics` - the ``metrics.json`` of a single-task notebook.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import report, settings
from .config import TASKS, Profile, load_profile
from .errors import SettingError, SSMTLError
from .io import read_json

if TYPE_CHECKING:
    from .data.layouts import Dataset
    from .score import ObjectScores
    from .training_data import TrainingData


# -- paths and names the notebooks share with the runner (ssmtl_core.study) --------------------------------


#: The repository root: relative paths of notebook parameters start here.
REPO = Path(__file__).resolve().parents[1]


def repo_path(path: str | Path) -> Path:
    """A path from a notebook parameter: relative paths are relative to the repository root, so notebooks
    opened from ``notebooks/`` in JupyterLab and run by papermill from the root see the same folders."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO / path


def open_or_generate(profile: str, data_root: str | Path, synth_size: str = "default", synth_seed: int = 0):
    """Open the dataset of ``profile`` at ``data_root``; the synthetic one is generated there when missing."""
    from .data import open_dataset  # cv2: the runner imports this module for its paths alone

    root = repo_path(data_root)
    if profile == "synthetic" and not (root / "dataset.json").is_file():
        from .data.synthetic import generate_synthetic  # cv2, as above

        generate_synthetic(root, size=synth_size, seed=synth_seed)
    return open_dataset(profile, root)


def run_name(arch: str, seed: int = 0) -> str:
    """The folder name of an architecture's run (and report) with a seed: ``deep_wide``, ``deep_wide-seed1``."""
    return arch if not seed else f"{arch}-seed{seed}"


@dataclass
class NotebookSetup:
    """One notebook's parameters and what follows from them.

    Attributes:
        notebook: the notebook's name (``01_arrow_of_time``), written into its ``metrics.json``.
        parameters: the notebook's settings (names of :data:`ssmtl_core.settings.SETTINGS` only).
        tasks: the proxy tasks trained (None: the profile's, all four).
        out: the notebook's output folder (created).
    """

    notebook: str
    parameters: dict[str, Any]
    tasks: tuple[str, ...] | None = None
    out: Path = field(init=False)

    def __post_init__(self) -> None:
        self.out = repo_path(self.parameters["OUT_DIR"])
        self.out.mkdir(parents=True, exist_ok=True)

    @cached_property
    def profile(self) -> Profile:
        """The profile named by ``PROFILE`` with the notebook's settings (and ``tasks``) applied."""
        overrides = settings.profile_overrides(self.parameters)
        if self.tasks is not None:
            overrides["train.tasks"] = self.tasks
        try:
            return load_profile(self.parameters["PROFILE"], overrides=overrides)
        except SettingError as exc:  # name the notebook parameter that set the value, not only its profile field
            raise SSMTLError(settings.error_message(exc)) from None

    @cached_property
    def dataset(self) -> Dataset:
        """The dataset at ``DATA_ROOT``; the synthetic one is generated there when it is missing."""
        return open_or_generate(self.parameters["PROFILE"], self.parameters["DATA_ROOT"],
                                self.parameters.get("SYNTH_SIZE", "default"), int(self.parameters.get("SYNTH_SEED", 0)))

    @property
    def data_root(self) -> Path | None:
        """``DATA_ROOT`` as a path (relative ones are relative to the repository, wherever the kernel runs);
        None when the notebook has none or it is empty (a trained run then knows its own)."""
        root = self.parameters.get("DATA_ROOT")
        return repo_path(root) if root else None

    @property
    def cache_root(self) -> Path:
        return repo_path(self.parameters.get("CACHE_DIR", "cache"))

    @property
    def device(self) -> str:
        return self.parameters.get("DEVICE", "auto")

    @property
    def reports_dir(self) -> Path:
        """``REPORTS_DIR``: the reports of a whole study (``./run_all.sh``), which notebooks 07 and 08 read."""
        return repo_path(self.parameters["REPORTS_DIR"])

    def ensemble_run_dirs(self, name: str) -> list[Path]:
        """The runs of ``name`` with the seeds ``ENSEMBLE_SEEDS`` lists (``"0,1,2"``), which notebook 06 scores as
        one ensemble (``docs/method.md``, "Seed ensembles"); ``[]`` when it is empty (one run: :meth:`run_dir`)."""
        text = str(self.parameters.get("ENSEMBLE_SEEDS") or "").strip()
        if not text:
            return []
        try:
            seeds = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise SSMTLError(f"ENSEMBLE_SEEDS must list seeds separated by commas (e.g. \"0,1,2\"); got {text!r}."
                             ) from None
        if len(set(seeds)) < 2:
            raise SSMTLError(f"ENSEMBLE_SEEDS names {len(set(seeds))} seed: an ensemble needs two or more (or leave it "
                             "empty to evaluate the run of SEED).")
        tag = overrides_tag(self.parameters.get("OVERRIDES"))
        return [repo_path(self.parameters["RUNS_DIR"]) / (run_name(name, seed) + tag) for seed in seeds]

    def run_dir(self, name: str) -> Path:
        """A training run's folder under ``RUNS_DIR``: ``name``, then ``-seed<k>`` for a ``SEED`` other than 0
        (:func:`run_name`, as the runner names the seed study's runs), then the notebook's
        ``OVERRIDES`` (:func:`overrides_tag`). A run with other settings (an exercise's) so never lands in the
        default run's folder, where training would refuse to resume it."""
        seed = int(self.parameters.get("SEED") or 0)
        return repo_path(self.parameters["RUNS_DIR"]) / (run_name(name, seed)
                                                         + overrides_tag(self.parameters.get("OVERRIDES")))


def overrides_tag(overrides: Mapping[str, Any] | None) -> str:
    """The part of a run's folder name that says which ``OVERRIDES`` made it: ``""`` without any,
    ``-temporal_half=1`` for ``{"sample.temporal_half": 1}``, ``-max_gap=2-temporal_half=1`` for two; a tag that
    would be longer than 60 characters becomes a short hash of the settings."""
    if not overrides:
        return ""
    parts = []
    for key, value in sorted(overrides.items()):
        text = "+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(re.sub(r"[^A-Za-z0-9._+=]", "_", f"{key.split('.')[-1]}={text}".replace(",", "+")))
    tag = "-" + "-".join(parts)
    if len(tag) > 60:
        tag = "-overrides" + hashlib.sha256(json.dumps(sorted(overrides.items()), default=str).encode()).hexdigest()[:8]
    return tag


def setup(notebook: str, namespace: Mapping[str, Any], tasks: str | tuple[str, ...] | None = None) -> NotebookSetup:
    """A notebook's setup from its variables: pass ``globals()``; only the names of
    :data:`ssmtl_core.settings.SETTINGS` are read, so the notebook's own constants are never parameters.

    Args:
        notebook: the notebook's name.
        namespace: the notebook's variables.
        tasks: the proxy task(s) trained (a single-task notebook passes its task).
    """
    parameters = settings.notebook_parameters(namespace)
    if "OUT_DIR" not in parameters:
        raise SSMTLError(f"notebook {notebook} has no OUT_DIR parameter: it must say where it writes.")
    if isinstance(tasks, str):
        tasks = (tasks,)
    if tasks is not None and "train.tasks" in (parameters.get("OVERRIDES") or {}):
        raise SSMTLError(f"notebook {notebook} trains {','.join(tasks)} alone: its OVERRIDES cannot change "
                         "train.tasks (notebook 05 trains any subset).")
    return NotebookSetup(notebook, parameters, tasks)


# -- training: the only calls into ssmtl_core.train from the notebooks ----------------------------------------


def prepare_data(nb: NotebookSetup) -> TrainingData:
    """Detections, decoded frames, training objects, distillation targets and the 85/15 split of the training
    videos (cached; see :func:`ssmtl_core.training_data.prepare_training_data`)."""
    # torch: imported where used, since the runner imports this module for its paths alone
    from .training_data import prepare_training_data

    return prepare_training_data(nb.dataset, nb.profile, nb.cache_root)


def train_run(nb: NotebookSetup, run_dir: Path, data: TrainingData) -> tuple[dict, list[dict]]:
    """Train (or resume) the notebook's model into ``run_dir``; return the summary and the per-epoch history.

    With ``SSMTL_PROCS=N`` (``./run_all.sh --procs N``) and N > 1 the kernel, which torchrun cannot start,
    starts ``torchrun --nproc_per_node N -m ssmtl_core train`` with the notebook's whole profile and waits for
    it (:func:`ssmtl_core.distributed.train_in_processes`; the processes read the caches ``data`` came from).
    """
    # torch: imported where used, since the runner imports this module for its paths alone
    from .distributed import requested_processes, train_in_processes
    from .train import train

    procs = requested_processes()
    if procs > 1:
        summary = train_in_processes(nb.profile, nb.dataset.root, nb.cache_root, run_dir, procs)
    else:
        summary = train(data, nb.profile, run_dir)
    return summary, read_json(Path(run_dir) / "history.json")


def trained_model(run_dir: Path):
    """The best checkpoint of a training run as a model in evaluation mode, on the CPU."""
    # torch: imported where used, since the runner imports this module for its paths alone
    from .checkpoint import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(Path(run_dir) / "best.pt"))


def require_run(run_dir: Path, notebook: str = "05_train_architecture") -> None:
    """Stop with a clear message when ``run_dir`` holds no trained model yet."""
    if not (Path(run_dir) / "best.pt").is_file():
        raise SSMTLError(f"no trained model in {run_dir}: run notebook {notebook} first with the same PROFILE, "
                         "RUNS_DIR and ARCH (or ./run_all.sh).")


def example_batch(nb: NotebookSetup, data: TrainingData, count: int = 3):
    """A training batch of ``count`` objects spread over the training data, drawn as training draws them
    (forward or reversed, consecutive or intermittent, with probability 0.5 each), for the pictures."""
    # torch: imported where used, since the runner imports this module for its paths alone
    from .samples import SequenceSampler

    seed = nb.profile.train.seed
    sampler = SequenceSampler(data.frames, data.objects, nb.profile.sample, nb.profile.train.tasks, seed=seed)
    shown = data.train_index[np.linspace(0, len(data.train_index) - 1, count).astype(int)]
    return sampler.make_batch(shown, np.random.default_rng(seed))


# -- scoring one task ---------------------------------------------------------------------------------------


@dataclass
class TaskScores:
    """A trained run scored on the test split, seen through one task.

    Attributes:
        task: the task.
        evaluation: the run's frame-level metrics (``metrics.json`` of :func:`ssmtl_core.evaluate.evaluate_run`).
        state: the best checkpoint.
        profile: the run's profile.
        objects: every test video's raw task scores.
        values: (N,) the task's raw score of every test object, videos concatenated.
        abnormal: (N,) bool, the object-level ground truth (at least 20% of its box on the pixel mask).
        where: (N, 2) int, the video (index into ``dataset.test``) and row of each object.
        object_auc: ROC AUC of ``values`` against ``abnormal`` (None with a single class).
    """

    task: str
    evaluation: dict
    state: dict
    profile: Profile
    objects: list[ObjectScores]
    values: np.ndarray
    abnormal: np.ndarray
    where: np.ndarray
    object_auc: float | None


def score_task(nb: NotebookSetup, run_dir: Path, task: str) -> TaskScores:
    """Evaluate a trained run (frame AUCs, RBDC, TBDC into ``<out>/evaluation``) and collect one task's object
    scores with the object-level ground truth. Object scores are cached per video, so this scores once."""
    from sklearn.metrics import roc_auc_score  # heavy too

    # torch: imported where used, since the runner imports this module for its paths alone
    from .evaluate import evaluate_run, object_labels
    from .runs import load_run, object_scores_for_run

    dataset = nb.dataset
    evaluation = evaluate_run(run_dir, root=dataset.root, cache_root=nb.cache_root, out_dir=nb.out / "evaluation",
                              device=nb.device)
    state, run_profile, _, run_cache = load_run(run_dir, dataset.root, nb.cache_root)
    objects, _ = object_scores_for_run(Path(run_dir), state, run_profile, dataset, run_cache, device=nb.device,
                                       progress=False)
    values = np.concatenate([s.tasks[task] for s in objects])
    abnormal = np.concatenate(object_labels(dataset, objects)).astype(bool)
    where = np.array([(v, i) for v, s in enumerate(objects) for i in range(len(s.frame))], dtype=int).reshape(-1, 2)
    auc = float(roc_auc_score(abnormal, values)) if 0 < abnormal.sum() < len(abnormal) else None
    return TaskScores(task, evaluation, state, run_profile, objects, values, abnormal, where, auc)


def object_gallery(dataset: Dataset, objects: list[ObjectScores], values: np.ndarray, abnormal: np.ndarray,
                   count: int, crop_size: int) -> tuple[list[np.ndarray], list[str], list[dict]]:
    """Middle crops of the ``count`` highest- and ``count`` lowest-scored test objects, at ``crop_size`` (the
    size the network saw), captioned with the score, the ground truth and where the object is.

    Returns:
        crops, captions, and one record per crop (video, frame, score, abnormal), highest first.
    """
    # torch: imported where used, since the runner imports this module for its paths alone
    from .samples import crop_object

    where = [(v, i) for v, s in enumerate(objects) for i in range(len(s.frame))]
    order = np.argsort(-values)
    picked = list(order[:count]) + list(order[-count:])
    crops, captions, records = [], [], []
    for k in picked:
        v, i = where[k]
        video = dataset.test[v]
        frame = int(objects[v].frame[i])
        crops.append(crop_object(video.frame(frame)[None], np.array([0]), objects[v].boxes[i], crop_size)[0])
        captions.append(f"{values[k]:.2f} {'ABN' if abnormal[k] else 'norm'}\n{video.name}:{frame}")
        records.append({"video": video.name, "frame": frame, "score": float(values[k]), "abnormal": bool(abnormal[k])})
    return crops, captions, records


@dataclass
class ScoredClip:
    """One clip through ``ssmtl score-video`` (:func:`ssmtl_core.apply.score_video_file`).

    Attributes:
        summary: its ``summary.json`` (``alert_segments``, ``calibration`` with the threshold, ...).
        calibrated: (T,) the calibrated frame scores it reports by default.
        minmax: (T,) the paper's per-video min-max frame scores of the same objects (``--per-video-minmax``).
    """

    summary: dict
    calibrated: np.ndarray
    minmax: np.ndarray


def score_clip(video, run_dir: Path, profile: Profile, device: str = "auto") -> ScoredClip:
    """Score one clip of a dataset (its frame folder or video file) as ``ssmtl score-video`` does, with the run's
    best checkpoint; its outputs go to a temporary folder (the annotated video is not kept). The per-video
    min-max curve is computed from the same object scores (``objects.csv``), as ``--per-video-minmax`` would."""
    # torch: imported where used, since the runner imports this module for its paths alone
    from .apply import score_video_file
    from .score import ObjectScores, score_video

    with tempfile.TemporaryDirectory() as tmp:
        summary = score_video_file(video.source.path, Path(run_dir) / "best.pt", tmp, device=device,
                                   video_format="gif", progress=False, log=lambda *_: None)
        with open(Path(tmp) / "frame_scores.csv") as handle:
            calibrated = np.array([float(row["score"]) for row in csv.DictReader(handle)])
        with open(Path(tmp) / "objects.csv") as handle:
            rows = list(csv.DictReader(handle))
    tasks = tuple(t for t in TASKS if t in summary["tasks"])
    objects = ObjectScores(np.array([int(r["frame"]) for r in rows], int),
                           np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in rows]).reshape(-1, 4),
                           {t: np.array([float(r[t]) for r in rows], np.float32) for t in tasks})
    minmax = score_video(objects, tasks, summary["frames"], tuple(summary["frame_size"]), profile.score).frame_scores
    return ScoredClip(summary, calibrated, minmax)


def write_task_metrics(nb: NotebookSetup, result: TaskScores, summary: dict) -> Path:
    """The ``metrics.json`` of a single-task notebook: the frame metrics, the object AUC, the paper's Ped2
    number for the task alone, the training summary and the provenance."""
    evaluation = result.evaluation
    paper = report.PAPER_PED2_TASK_MICRO[result.task] if nb.profile.name == "ped2" else None
    metrics = {
        "task": result.task,
        "micro_auc": evaluation["micro_auc"], "macro_auc": evaluation["macro_auc"],
        "rbdc": evaluation["rbdc"], "tbdc": evaluation["tbdc"],
        "object_auc": result.object_auc, "paper_ped2_micro_auc": paper,
        "train": summary, "detector": evaluation["detector"], "teacher": evaluation["teacher"],
    }
    print(report.dumps({k: metrics[k] for k in ("micro_auc", "macro_auc", "rbdc", "tbdc", "object_auc",
                                                "paper_ped2_micro_auc")}))
    return report.write_metrics(nb.out, nb.notebook, metrics, nb.parameters, nb.profile, nb.dataset)

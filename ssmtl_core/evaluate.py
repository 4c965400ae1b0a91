"""Evaluate a trained run: the paper's four numbers, per video, per task and the task ablation (paper Sec. 4; ``docs/method.md``, "Metrics").

``evaluate_run(run_dir)`` scores every test object with the run's best checkpoint
(:func:`ssmtl_core.runs.object_scores_for_run`: raw task scores cached in ``<run>/eval/object_scores/`` and
reused while checkpoint, dataset copy, detections and teacher are unchanged), turns them into frame and
region scores with the profile's published smoothing (never tuned on test labels), and writes
``metrics.json`` (micro/macro frame AUC, RBDC, TBDC, per-video AUCs, each task alone and every task subset,
and what produced them) and ``frame_scores.csv``. Beside the paper's protocol, ``metrics.json`` holds the
micro and macro AUC of the calibrated scores (``calibrated``; ``docs/method.md``, "Calibrated scores for your
own videos"): scores read against the run's normal validation objects instead of min-max normalised per test
video, with the alert threshold chosen on held-out normal frames, so no test label chooses anything; and
``alerts``: how the alerts meet the labelled events (events alerted, delays, normal frames alerted;
:func:`ssmtl_core.alerts.alert_events`), reported only.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .alerts import BORDER_SIGMAS, AlertRule, alert_events, fallback_rule
from .calibration import Calibration
from .config import TASKS, Profile, ScoreConfig, apply_overrides
from .data.layouts import Dataset
from .errors import SSMTLError
from .io import atomic_path, code_provenance, package_versions, read_json, write_json
from .metrics import Regions, Tracks, macro_auc, micro_auc, per_video_auc, rbdc_tbdc, tracks_from_masks
from .runs import alert_rule, checkpoint_calibration, load_run, object_scores_for_run
from .score import ObjectScores, calibrated_frame_scores, minmax, score_video, task_subsets


def ground_truth_tracks(dataset: Dataset) -> Tracks | None:
    """Ground-truth object tracks of the test videos: shipped with the dataset (synthetic, ShanghaiTech
    track files) or built from the pixel masks (connected components linked over time by IoU)."""
    if dataset.tracks_fn is not None:
        tracks = dataset.tracks_fn()
        if tracks is not None:
            return tracks
    parts = []
    for i, video in enumerate(dataset.test):
        masks = video.pixel_masks()
        if masks is None:
            return None
        parts.append(tracks_from_masks(masks, video=i))
    return Tracks.concat(parts) if parts else None


def object_labels(dataset: Dataset, object_scores: list[ObjectScores], min_cover: float = 0.2) -> list[np.ndarray]:
    """Object-level ground truth for pictures and object AUCs: an object is abnormal when at least
    ``min_cover`` of its box lies on the pixel mask of its frame (or, without masks, when its frame is
    labelled abnormal)."""
    labels = []
    for video, scores in zip(dataset.test, object_scores):
        masks = video.pixel_masks()
        if masks is None:
            frame_labels = video.labels
            labels.append(np.zeros(len(scores.frame), np.uint8) if frame_labels is None
                          else frame_labels[scores.frame].astype(np.uint8))
            continue
        height, width = masks.shape[1:]
        out = np.zeros(len(scores.frame), np.uint8)
        for i, (f, box) in enumerate(zip(scores.frame, scores.boxes)):
            x1, y1 = int(max(box[0], 0)), int(max(box[1], 0))
            x2, y2 = int(min(np.ceil(box[2]), width)), int(min(np.ceil(box[3]), height))
            if x2 > x1 and y2 > y1:
                out[i] = masks[f, y1:y2, x1:x2].mean() >= min_cover
        labels.append(out)
    return labels


def evaluate_scores(dataset: Dataset, object_scores: list[ObjectScores], config: ScoreConfig,
                    tracks: Tracks | None, tasks: tuple[str, ...] = TASKS) -> tuple[dict, dict]:
    """Micro/macro AUC for every task subset, RBDC/TBDC and per-video AUCs for all tasks together.

    Returns:
        (metrics, frame_curves): metrics as in ``metrics.json``; frame_curves maps a subset name
        (``aot+irr+mid+kd``, ``aot``, ...) to per-video frame scores.
    """
    labels = [v.labels for v in dataset.test]
    if any(lab is None for lab in labels):
        raise SSMTLError(f"the test videos of {dataset.root} have no frame labels: evaluation needs the ground "
                         "truth (see README: real-data runs).")
    # Only the trained tasks count: an untrained head's output is noise.
    available = tuple(t for t in tasks if all(t in s.tasks for s in object_scores))
    if not available:
        raise SSMTLError(f"none of the tasks {','.join(tasks)} has test scores; was the run trained on them?")
    subsets = task_subsets(available)
    full = available
    curves: dict[str, list[np.ndarray]] = {}
    ablation: dict[str, dict] = {}
    full_regions = []
    for subset in subsets:
        name = "+".join(subset)
        per_video = []
        for i, (video, scores) in enumerate(zip(dataset.test, object_scores)):
            result = score_video(scores, subset, video.num_frames, video.frame_size, config,
                                 with_regions=subset == full)
            per_video.append(result.frame_scores)
            if subset == full:
                full_regions.append(Regions(np.full(len(scores.frame), i), scores.frame, scores.boxes,
                                            result.region_scores))
        curves[name] = per_video
        ablation[name] = {"micro_auc": micro_auc(labels, per_video), "macro_auc": macro_auc(labels, per_video)}
    full_name = "+".join(full)
    metrics = {"micro_auc": ablation[full_name]["micro_auc"], "macro_auc": ablation[full_name]["macro_auc"],
               "rbdc": None, "tbdc": None}
    if tracks is not None and len(tracks):
        regions = Regions.concat(full_regions)
        total_frames = int(sum(v.num_frames for v in dataset.test))
        detection = rbdc_tbdc(regions, tracks, total_frames)
        metrics["rbdc"], metrics["tbdc"] = float(detection["rbdc"]), float(detection["tbdc"])
        # The stricter one-to-one matching on the same scores, only to show what the published rules change.
        strict = rbdc_tbdc(regions, tracks, total_frames, rules="one_to_one")
        metrics["rbdc_tbdc_one_to_one"] = {"rbdc": float(strict["rbdc"]), "tbdc": float(strict["tbdc"])}
    metrics["per_video_auc"] = dict(zip([v.name for v in dataset.test],
                                        per_video_auc(labels, curves[full_name])))
    metrics["per_task"] = {t: ablation[t] for t in available}
    metrics["ablation"] = ablation
    metrics["tasks"] = list(full)
    return metrics, curves


def calibrated_scores(dataset: Dataset, object_scores: list[ObjectScores], calibration: Calibration,
                      config: ScoreConfig, rule: AlertRule | None = None) -> tuple[dict, list[np.ndarray]]:
    """The calibrated variant: frame scores read against the normal validation objects, and their AUCs.

    Returns:
        (metrics, curves): micro and macro AUC, the alert threshold (``rule``'s, default the one stored with the
        calibration) and the share of normal and of abnormal test frames at or over it (reported, never used to
        choose anything); the per-video calibrated frame scores.
    """
    rule = rule or alert_rule(calibration, "the checkpoint")
    labels = [v.labels for v in dataset.test]
    curves = [calibrated_frame_scores(calibration.object_scores(s), s.frame, v.num_frames, config)
              for v, s in zip(dataset.test, object_scores)]
    over, truth = np.concatenate(curves) >= rule.threshold, np.concatenate(labels).astype(bool)
    metrics = {"micro_auc": micro_auc(labels, curves), "macro_auc": macro_auc(labels, curves),
               "threshold": rule.threshold, "validation_objects": calibration.objects,
               "normal_frames_over_threshold": float(over[~truth].mean()) if (~truth).any() else None,
               "abnormal_frames_over_threshold": float(over[truth].mean()) if truth.any() else None}
    return metrics, curves


def alert_report(dataset: Dataset, object_scores: list[ObjectScores], curves: list[np.ndarray],
                 calibration: Calibration, rule: AlertRule, config: ScoreConfig) -> dict:
    """``metrics.json``'s ``alerts``: how the run's alerts meet the labelled abnormal events of the test videos
    (:func:`ssmtl_core.alerts.alert_events`): reported, never used to choose anything.

    Beside the rule's numbers, the same counts for the per-object rule it replaced (the 99th percentile of the
    validation objects, one frame enough) and the mean objects per test frame, which together say why a
    per-object threshold alerts on so many normal frames.
    """
    labels = [v.labels for v in dataset.test]
    border = BORDER_SIGMAS * config.gauss_sigma if config.gauss_taps and config.gauss_taps > 1 else None
    report = {"rule": rule.summary(), **alert_events(labels, curves, rule, border)}
    if border is not None:
        report["border_frames"] = border
    old = fallback_rule(calibration)
    if old.threshold != rule.threshold or old.min_frames != rule.min_frames:
        counts = alert_events(labels, curves, old)
        report["object_rule"] = {"threshold": round(old.threshold, 6), "rule": old.describe(),
                                 **{k: counts[k] for k in ("events_alerted", "normal_frames_over_threshold",
                                                           "false_segments_per_1000_normal_frames")}}
    frames = sum(v.num_frames for v in dataset.test)
    report["objects_per_frame"] = round(sum(len(s.frame) for s in object_scores) / frames, 2) if frames else None
    report["note"] = "from the test labels: reported, never used to choose the rule or anything else"
    return report


def evaluate_run(run_dir: str | Path, root: str | Path | None = None, cache_root: str | Path | None = None,
                 out_dir: str | Path | None = None, device: str = "auto", progress: bool = True, log=print,
                 score_overrides: dict | None = None, teacher_weights: str | None = None) -> dict:
    """Score a trained run on its dataset's test split and write ``metrics.json`` and ``frame_scores.csv``.

    Args:
        run_dir: the folder written by ``ssmtl train``.
        root: the dataset folder (default: the one the run was trained on).
        cache_root: the cache folder (default: the one the run used).
        out_dir: where to write (default: ``run_dir``).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress bars.
        log: where messages go.
        score_overrides: settings of :class:`~ssmtl_core.config.ScoreConfig` to change (e.g. for a user's own
            data); the published per-dataset settings are the default.
        teacher_weights: state dict of the ImageNet teacher, if not the default one.
    """
    run = Path(run_dir)
    out = Path(out_dir) if out_dir else run
    state, profile, dataset, cache = load_run(run, root, cache_root)
    if (missing := dataset.missing_ground_truth()) is not None:
        raise SSMTLError(missing)
    if score_overrides:
        profile = apply_overrides(profile, {"score": score_overrides})
    object_scores, info = object_scores_for_run(run, state, profile, dataset, cache, device, progress, log,
                                                teacher_weights)
    tracks = ground_truth_tracks(dataset)
    metrics, curves = evaluate_scores(dataset, object_scores, profile.score, tracks, profile.train.tasks)
    try:
        calibration = checkpoint_calibration(state, run / "best.pt", tuple(metrics["tasks"]), device, progress, log,
                                             root=dataset.root, cache_root=cache)
        rule = alert_rule(calibration, run / "best.pt", log)
        calibrated, calibrated_curves = calibrated_scores(dataset, object_scores, calibration, profile.score, rule)
        alerts = alert_report(dataset, object_scores, calibrated_curves, calibration, rule, profile.score)
    except SSMTLError as exc:  # the paper's numbers stand without it
        log(f"calibrated scores skipped: {exc}")
        calibrated = alerts = {"skipped": str(exc)}
    teacher = state["caches"].get("teacher")
    report = {
        **metrics,
        "calibrated": calibrated,
        "alerts": alerts,
        "dataset": dataset.summary(),
        "profile": profile.name,
        "arch": profile.train.arch,
        "trained_tasks": list(profile.train.tasks),
        "detector": {k: v for k, v in info["detections"].items() if k != "class_names"},
        "teacher": teacher,
        "settings": {"score": profile.to_dict()["score"], "profile": profile.to_dict()},
        "checkpoint": {"path": str(run / "best.pt"), "epoch": state["epoch"],
                       "best_val_loss": state.get("best_val_loss"), "sha256_12": info["checkpoint_sha256"]},
        "seed": profile.train.seed,
        # how the run was trained: epochs run (a time budget may stop it early), precision, time, speed
        "training": read_json(run / "train_summary.json") if (run / "train_summary.json").is_file() else {},
        "timing": info["timing"],
        "versions": package_versions(),
        "code": code_provenance(),
        "ground_truth_tracks": None if tracks is None else {"regions": len(tracks), "tracks": tracks.num_tracks},
    }
    write_json(out / "metrics.json", report)
    _write_frame_scores(out / "frame_scores.csv", dataset, curves, metrics["tasks"])
    log(f"{profile.name} {profile.train.arch}: micro AUC {report['micro_auc']:.4f}, macro AUC "
        f"{report['macro_auc']:.4f}, RBDC {_fmt(report['rbdc'])}, TBDC {_fmt(report['tbdc'])}; calibrated micro AUC "
        f"{_fmt(calibrated.get('micro_auc'))} -> {out / 'metrics.json'}")
    return report


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _write_frame_scores(path: Path, dataset: Dataset, curves: dict[str, list[np.ndarray]], tasks: list[str]) -> None:
    full = "+".join(tasks)
    columns = ["video", "frame", "label", "score"] + [t for t in tasks if t in curves and t != full]
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i, video in enumerate(dataset.test):
            labels = video.labels
            for f in range(video.num_frames):
                row = [video.name, f, int(labels[f]), f"{curves[full][i][f]:.6f}"]
                row += [f"{curves[t][i][f]:.6f}" for t in columns[4:]]
                writer.writerow(row)


# -- seed ensembles ------------------------------------------------------------------------------------------


def ensemble_object_scores(members: list[list[ObjectScores]], normalize_tasks: bool = True) -> list[ObjectScores]:
    """One set of object scores from several trained runs of the same detections (``docs/method.md``, "Seed
    ensembles").

    Per video and per task, each member's scores are min-max normalised (the paper's per-video normalisation,
    Sec. 3.4; raw scores when ``normalize_tasks`` is False, as on Avenue) and averaged over the members; the
    averaged task scores then go through the same scoring as one run's (normalise, sum, normalise, paint,
    smooth). A task counts when every member has it.

    Args:
        members: per member, the raw task scores of every test video (:func:`ssmtl_core.runs.object_scores_for_run`).
        normalize_tasks: the profile's ``score.normalize_tasks``.

    Raises:
        SSMTLError: the members scored different objects (other detections or another dataset).
    """
    if not members:
        raise SSMTLError("an ensemble needs at least one run.")
    videos = len(members[0])
    if any(len(m) != videos for m in members):
        raise SSMTLError("the runs of an ensemble scored different numbers of test videos: they must share the "
                         "dataset and the detections.")
    combined = []
    for v in range(videos):
        first = members[0][v]
        for member in members[1:]:
            other = member[v]
            if len(other.frame) != len(first.frame) or not (np.array_equal(other.frame, first.frame)
                                                            and np.allclose(other.boxes, first.boxes)):
                raise SSMTLError("the runs of an ensemble scored different objects: they must share the detector "
                                 "and its settings (the same detections cache).")
        tasks = [t for t in TASKS if all(t in member[v].tasks for member in members)]
        averaged = {}
        for task in tasks:
            parts = [minmax(m[v].tasks[task]) if normalize_tasks else np.asarray(m[v].tasks[task], np.float32)
                     for m in members]
            averaged[task] = np.mean(parts, axis=0).astype(np.float32)
        combined.append(ObjectScores(first.frame.copy(), first.boxes.copy(), averaged, first.kd_has_classes))
    return combined


@dataclass
class EnsembleScores:
    """The test scores of several runs combined (:func:`ensemble_test_scores`).

    Attributes:
        profile: the first member's profile (the scoring settings all members share).
        dataset: the test dataset.
        objects: per test video, the combined task scores (:func:`ensemble_object_scores`).
        members: per member, its run folder, architecture, seed, tasks, epoch, validation loss and checkpoint.
        detections: the detector's settings and cache, as in one run's ``metrics.json``.
        teacher: the ImageNet teacher of the first member.
    """

    profile: Profile
    dataset: Dataset
    objects: list[ObjectScores]
    members: list[dict]
    detections: dict
    teacher: str | None


def ensemble_test_scores(run_dirs: list[str | Path], root: str | Path | None = None,
                         cache_root: str | Path | None = None, device: str = "auto", progress: bool = True,
                         log=print, teacher_weights: str | None = None) -> EnsembleScores:
    """The test scores of several trained runs (e.g. one architecture trained with different seeds), combined.

    Each member's scores come from its own cache (``<run>/eval/object_scores``), so an ensemble of evaluated runs
    costs no network pass. The members must share the dataset and the detections.

    Raises:
        SSMTLError: fewer than two runs, or runs trained on other detections or another dataset.
    """
    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise SSMTLError("an ensemble needs at least two runs (pass --run once per run).")
    loaded = [load_run(run, root, cache_root) for run in runs]
    profile, dataset = loaded[0][1], loaded[0][2]
    for run, (_, other, _, _) in zip(runs[1:], loaded[1:]):
        if other.to_dict()["detect"] != profile.to_dict()["detect"] or other.dataset != profile.dataset:
            raise SSMTLError(f"{run} was trained on other detections than {runs[0]}: an ensemble's runs share the "
                             "dataset and the detector settings.")
    scores, members, detections = [], [], None
    for run, (state, run_profile, run_dataset, cache) in zip(runs, loaded):
        objects, info = object_scores_for_run(run, state, run_profile, run_dataset, cache, device, progress, log,
                                              teacher_weights)
        scores.append(objects)
        detections = detections or {k: v for k, v in info["detections"].items() if k != "class_names"}
        members.append({"run": str(run), "arch": run_profile.train.arch, "seed": run_profile.train.seed,
                        "tasks": list(run_profile.train.tasks), "epoch": state["epoch"],
                        "best_val_loss": state.get("best_val_loss"), "checkpoint_sha256_12": info["checkpoint_sha256"]})
    return EnsembleScores(profile, dataset, ensemble_object_scores(scores, profile.score.normalize_tasks), members,
                          detections, loaded[0][0]["caches"].get("teacher"))


def evaluate_ensemble(run_dirs: list[str | Path], out_dir: str | Path, root: str | Path | None = None,
                      cache_root: str | Path | None = None, device: str = "auto", progress: bool = True, log=print,
                      teacher_weights: str | None = None) -> dict:
    """Score several trained runs as one ensemble (:func:`ensemble_test_scores`; ``docs/method.md``, "Seed
    ensembles") and write ``metrics.json`` and ``frame_scores.csv`` into ``out_dir``."""
    ensemble = ensemble_test_scores(run_dirs, root, cache_root, device, progress, log, teacher_weights)
    profile, dataset, infos = ensemble.profile, ensemble.dataset, ensemble.members
    if (missing := dataset.missing_ground_truth()) is not None:
        raise SSMTLError(missing)
    tasks = tuple(t for t in TASKS if all(t in m["tasks"] for m in infos))
    metrics, curves = evaluate_scores(dataset, ensemble.objects, profile.score, ground_truth_tracks(dataset), tasks)
    report = {
        **metrics,
        "ensemble": {"members": infos, "combination": "per video and task, each member's scores min-max "
                     "normalised, then averaged over the members; then the paper's scoring"},
        "dataset": dataset.summary(), "profile": profile.name,
        "arch": ",".join(sorted({m["arch"] for m in infos})),
        "trained_tasks": list(tasks), "seed": [m["seed"] for m in infos],
        "detector": ensemble.detections, "teacher": ensemble.teacher,
        "settings": {"score": profile.to_dict()["score"], "profile": profile.to_dict()},
        "versions": package_versions(), "code": code_provenance(),
    }
    out = Path(out_dir)
    write_json(out / "metrics.json", report)
    _write_frame_scores(out / "frame_scores.csv", dataset, curves, metrics["tasks"])
    log(f"ensemble of {len(infos)} runs: micro AUC {report['micro_auc']:.4f}, macro AUC {report['macro_auc']:.4f}, "
        f"RBDC {_fmt(report['rbdc'])}, TBDC {_fmt(report['tbdc'])} -> {out / 'metrics.json'}")
    return report

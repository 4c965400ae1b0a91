"""False alerts on normal footage the model never saw: leave one training video out, train and calibrate
without it, then ``ssmtl score-video`` it.

Usage::

    python bench/alerts.py [--dataset synthetic|ped2|all] [--folds 4] [--root PATH] [--cache cache]
        [--weights ../shared/weights/yolov8n_int8_openvino_model] [--work runs/bench-alerts]
        [--out bench/results/alerts.json]

Every training video is normal footage of the scene, so a model trained and calibrated without one of them
(``sample.exclude_train_videos``) meets it as a user's own new footage: every alert on it is a false alarm.
For each fold, the held-out video goes through ``score-video`` as a user's would (detector, model, calibrated
frame scores, the checkpoint's alert rule), and the benchmark reports the share of its frames at or over the
alert threshold, the share inside alert segments, and the alert segments per 1,000 frames; next to them, the
same counts for the per-object threshold the rule replaced (the 99th percentile of the validation objects, one
frame enough). No test video and no label is read.

The budget is in epochs and objects (not minutes), so the machine's load changes the time it takes, not the
result: shallow_narrow, ``--epochs`` epochs on at most ``--max-objects`` training objects per fold (bf16 where the
CPU has it natively, fp32 elsewhere). The folds' videos are spread evenly over the training videos. Finished
folds are reused (a fold's record is kept with the hash of the checkpoint it scored); an interrupted fold
resumes its training. The synthetic dataset is the study's ``default`` set (seed 0; generated when missing);
Ped2 is read from ``../shared`` and skipped, with a message, when it is not there.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import time
from pathlib import Path

import numpy as np

from ssmtl_core.alerts import ALERT_RATE, alert_runs
from ssmtl_core.apply import score_video_file
from ssmtl_core.config import load_profile
from ssmtl_core.data import open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.io import code_provenance, file_sha256, machine_info, read_json, write_json
from ssmtl_core.precision import native_bf16
from ssmtl_core.runs import calibrate_run
from ssmtl_core.train import train
from ssmtl_core.training_data import prepare_training_data

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
#: The issue's targets on held-out normal videos.
TARGET_FRAMES_OVER = 0.01
TARGET_SEGMENTS_PER_1000 = 1.0
#: Per-dataset budget: epochs and a cap on training objects (the profile's frame stride otherwise).
BUDGETS = {"synthetic": {"epochs": 4, "max_objects": 1500, "frame_stride": 2},
           "ped2": {"epochs": 3, "max_objects": 1500, "frame_stride": 5}}


def fold_videos(names: list[str], folds: int) -> list[str]:
    """``folds`` training videos spread evenly over the list (its first and last included)."""
    picks = np.unique(np.round(np.linspace(0, len(names) - 1, min(folds, len(names)))).astype(int))
    return [names[i] for i in picks]


def over_and_segments(scores: np.ndarray, threshold: float, min_frames: int) -> dict:
    """Frames at or over ``threshold``, frames inside alert segments, and the segments."""
    runs = alert_runs(scores >= threshold, min_frames)
    alerted = sum(stop - start for start, stop in runs)
    return {"frames_over_threshold": int((scores >= threshold).sum()), "frames_alerted": int(alerted),
            "segments": len(runs), "segment_spans": [[int(a), int(b - 1)] for a, b in runs]}


def run_fold(dataset, dataset_name: str, held_out, overrides: dict, work: Path, cache: Path, log,
             recalibrate: bool = False) -> dict:
    """Train and calibrate without ``held_out``, then score it with ``score-video``; reuse a finished fold
    (``recalibrate``: keep its training, choose its calibration and alert rule again and rescore)."""
    folder = work / dataset_name / f"without-{held_out.name}"
    record_path = folder / "fold.json"
    best = folder / "run" / "best.pt"
    if recalibrate and best.is_file() and (folder / "run" / "train_summary.json").is_file():
        calibrate_run(folder / "run", cache_root=cache, device="cpu", force=True, progress=False,
                      log=lambda *_: None)
    elif record_path.is_file() and best.is_file():
        record = read_json(record_path)
        if record.get("checkpoint_sha256") == file_sha256(best):
            log(f"{dataset_name} fold {held_out.name}: reused {record_path}")
            return record
    profile = load_profile(dataset_name, overrides=overrides | {"sample.exclude_train_videos": (held_out.name,)})
    started = time.perf_counter()
    data = prepare_training_data(dataset, profile, cache, progress=False, log=lambda *_: None)
    summary = train(data, profile, folder / "run", progress=False, log=lambda *_: None)
    trained = time.perf_counter() - started
    scored = score_video_file(held_out.source.path, best, folder / "score-video", device="cpu", progress=False,
                              log=log)
    with open(folder / "score-video" / "frame_scores.csv") as handle:
        scores = np.array([float(row["score"]) for row in csv.DictReader(handle)])
    alert = scored["alert"]
    frames = len(scores)
    rule = over_and_segments(scores, alert["threshold"], alert["min_frames"])
    old = over_and_segments(scores, scored["calibration"]["object_threshold"], 1)
    record = {"held_out": held_out.name, "frames": frames, "objects": scored["objects"],
              "train_videos": len(data.frames), "train_objects": int(len(data.train_index)),
              "epochs": summary.get("epochs"), "precision": summary.get("precision"),
              "validation_objects": scored["calibration"]["validation_objects"], "alert_rule": alert,
              **rule, "frames_over_threshold_share": rule["frames_over_threshold"] / frames,
              "frames_alerted_share": rule["frames_alerted"] / frames,
              "segments_per_1000_frames": 1000 * rule["segments"] / frames,
              "peak_frame_score": float(scores.max()),
              "object_rule": old | {"threshold": scored["calibration"]["object_threshold"],
                                    "frames_over_threshold_share": old["frames_over_threshold"] / frames,
                                    "segments_per_1000_frames": 1000 * old["segments"] / frames},
              "seconds": {"prepare_and_train": round(trained, 1), "score_video": scored["seconds"]},
              "checkpoint_sha256": file_sha256(best)}
    write_json(record_path, record)
    log(f"{dataset_name} fold {held_out.name}: {rule['frames_over_threshold']}/{frames} frames over "
        f"{alert['threshold']:.4f}, {rule['segments']} segment(s) (per-object rule: {old['frames_over_threshold']} "
        f"frames, {old['segments']} segments)")
    return record


def pooled(records: list[dict]) -> dict:
    """The folds together: shares of all their frames, segments per 1,000 of them."""
    frames = sum(r["frames"] for r in records)
    if not frames:
        return {}
    out = {"folds": len(records), "frames": frames,
           "frames_over_threshold_share": sum(r["frames_over_threshold"] for r in records) / frames,
           "frames_alerted_share": sum(r["frames_alerted"] for r in records) / frames,
           "segments_per_1000_frames": 1000 * sum(r["segments"] for r in records) / frames,
           "worst_fold_frames_over_threshold_share": max(r["frames_over_threshold_share"] for r in records),
           "object_rule": {"frames_over_threshold_share":
                           sum(r["object_rule"]["frames_over_threshold"] for r in records) / frames,
                           "segments_per_1000_frames": 1000 * sum(r["object_rule"]["segments"] for r in records)
                           / frames}}
    out["meets_targets"] = bool(out["frames_over_threshold_share"] <= TARGET_FRAMES_OVER
                                and out["segments_per_1000_frames"] <= TARGET_SEGMENTS_PER_1000)
    return out


def table(result: dict) -> str:
    lines = ["| dataset | folds (held-out videos) | frames | over threshold | in alert segments | segments / 1,000 "
             "frames | per-object rule: over / segments per 1,000 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, part in result["datasets"].items():
        if "skipped" in part:
            lines.append(f"| {name} | skipped: {part['skipped']} | | | | | |")
            continue
        p = part["pooled"]
        lines.append(f"| {name} | {p['folds']} ({', '.join(part['held_out'])}) | {p['frames']} | "
                     f"{100 * p['frames_over_threshold_share']:.2f}% | {100 * p['frames_alerted_share']:.2f}% | "
                     f"{p['segments_per_1000_frames']:.2f} | {100 * p['object_rule']['frames_over_threshold_share']:.1f}%"
                     f" / {p['object_rule']['segments_per_1000_frames']:.2f} |")
    return "\n".join(lines)


def _write(out: Path, result: dict, name: str | None) -> dict:
    """Write ``result`` with dataset ``name``'s part replaced in what ``out`` holds now (another process may be
    running the other dataset), and the table of all of it."""
    on_disk = read_json(out).get("datasets", {}) if out.is_file() else {}
    result["datasets"] = on_disk | ({name: result["datasets"][name]} if name else {})
    result["table"] = table(result).splitlines()
    write_json(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("synthetic", "ped2", "all"), default="all")
    parser.add_argument("--folds", type=int, default=4, help="held-out training videos per dataset")
    parser.add_argument("--root", help="Ped2 folder (default ../shared/datasets/ucsd_ped2)")
    parser.add_argument("--synthetic-root", default=str(REPO / "data" / "synthetic"),
                        help="the synthetic default set (generated with seed 0 when missing)")
    parser.add_argument("--cache", default=str(REPO / "cache"))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "yolov8n_int8_openvino_model"))
    parser.add_argument("--work", default=str(REPO / "runs" / "bench-alerts"), help="folds' run folders")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "alerts.json"))
    parser.add_argument("--recalibrate", action="store_true",
                        help="keep the folds' training, choose their calibration and alert rule again, rescore")
    args = parser.parse_args(argv)
    work = Path(args.work)
    log = print
    precision = "bf16" if native_bf16() else "fp32"
    result = {"benchmark": "false alerts on held-out normal training videos (leave one video out; no test video, "
                           "no label)", "date": dt.date.today().isoformat(), "machine": machine_info(),
              "code": code_provenance(), "load_average_start": [round(x, 2) for x in os.getloadavg()],
              "targets": {"frames_over_threshold_share": TARGET_FRAMES_OVER,
                          "segments_per_1000_frames": TARGET_SEGMENTS_PER_1000},
              "alert_rate_asked": ALERT_RATE, "datasets": {}, "notes": []}
    if Path(args.out).is_file():  # keep the other dataset's part when one is rerun
        result["datasets"] = read_json(Path(args.out)).get("datasets", {})
    names = ("synthetic", "ped2") if args.dataset == "all" else (args.dataset,)
    for name in names:
        if name == "synthetic":
            root = Path(args.synthetic_root)
            if not (root / "training").is_dir():
                generate_synthetic(root, "default", seed=0, progress=False)
        else:
            root = Path(args.root) if args.root else SHARED / "datasets" / "ucsd_ped2"
            if not root.is_dir():
                message = f"no Ped2 at {root} (pass --root; ../shared is absent on a fresh clone)"
                print(f"skipping ped2: {message}")
                result["datasets"][name] = {"skipped": message}
                _write(Path(args.out), result, name)
                continue
        dataset = open_dataset(name, root)
        budget = BUDGETS[name]
        overrides = {"train.arch": "shallow_narrow", "train.epochs": budget["epochs"],
                     "sample.max_train_objects": budget["max_objects"],
                     "sample.train_frame_stride": budget["frame_stride"], "train.precision": precision,
                     "train.device": "cpu"}
        if name != "synthetic":
            overrides["detect.weights"] = args.weights
        held_out = fold_videos([v.name for v in dataset.train], args.folds)
        records = []
        for video in held_out:  # the JSON is rewritten after every fold: an interrupted run shows what it has
            records.append(run_fold(dataset, name, next(v for v in dataset.train if v.name == video), overrides,
                                    work, Path(args.cache), log, args.recalibrate))
            result["datasets"][name] = {"root": str(root), "train_videos": len(dataset.train),
                                        "held_out": held_out[:len(records)], "folds_planned": held_out,
                                        "budget": overrides, "folds": records, "pooled": pooled(records)}
            _write(Path(args.out), result, name)
        _write(Path(args.out), result, name)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result = _write(Path(args.out), result, None)
    print(table(result))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What moved Ped2's localisation numbers: the metric's rules, the detector settings, the distillation head.

Usage::

    python bench/ped2_attribution.py [--root ../shared/datasets/ucsd_ped2] [--seeds 0,1,2]
        [--settings yolo0.5,yolo0.25+motion] [--reuse-only]
        [--weights ../shared/weights/yolov8n_int8_openvino_model] [--out bench/results/ped2_attribution.json]

One preset (shallow_narrow), one fixed training budget (epochs and objects, not minutes, so the machine's load
changes how long it takes but not what it computes; fp32), trained and evaluated for each setting below with
the same seeds; every run is scored under the published RBDC/TBDC rules and the stricter one-to-one rule:

* ``yolo0.5-linear``: the first release (YOLOv8n at 0.5, a linear distillation head);
* ``yolo0.5``: the sigmoid distillation head;
* ``yolo0.25``: the detector's own operating point;
* ``yolo0.25+motion``: plus the moving blobs no box explains (the default since);
* ``yolo0.5+motion``: the blobs at the old threshold;
* ``yolo0.25+motion+cosine``: the default detector with the learning rate warmed up and decayed to the end of
  the run (``train.schedule = cosine``, ``docs/method.md``, "Learning within a budget").

Every setting trained with two or more seeds also gets an ``ensemble`` row: its seeds' runs scored as one
(``ssmtl_core.evaluate.evaluate_ensemble``, ``docs/method.md``, "Seed ensembles").

The settings were fixed before any of these results (docs/method.md, "Detection"); the table is read from test
labels and only says how much each cause is worth, with its spread over seeds. Runs are resumable (the run
folders and their cached scores are reused).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np

from ssmtl_core.config import load_profile
from ssmtl_core.data import open_dataset
from ssmtl_core.evaluate import evaluate_ensemble, evaluate_run
from ssmtl_core.io import code_provenance, machine_info, read_json
from ssmtl_core.train import train
from ssmtl_core.training_data import prepare_training_data

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
BUDGET = {"train.arch": "shallow_narrow", "train.epochs": 3, "sample.max_train_objects": 2000,
          "sample.train_frame_stride": 5, "train.precision": "fp32", "train.schedule": "constant"}
SETTINGS = {
    "yolo0.5-linear": {"detect.detector": "yolo", "detect.conf": 0.5, "train.kd_sigmoid": False},
    "yolo0.5": {"detect.detector": "yolo", "detect.conf": 0.5},
    "yolo0.25": {"detect.detector": "yolo", "detect.conf": 0.25},
    "yolo0.25+motion": {"detect.detector": "yolo+motion", "detect.conf": 0.25},
    "yolo0.5+motion": {"detect.detector": "yolo+motion", "detect.conf": 0.5},
    "yolo0.25+motion+cosine": {"detect.detector": "yolo+motion", "detect.conf": 0.25, "train.schedule": "cosine"},
}
METRICS = ("micro_auc", "macro_auc", "rbdc", "tbdc", "rbdc_one_to_one", "tbdc_one_to_one", "kd_alone_micro_auc")


def run_one(name: str, seed: int, args: argparse.Namespace, dataset) -> dict:
    out = Path(args.runs) / f"{name}-seed{seed}"
    profile = load_profile("ped2", overrides={**BUDGET, **SETTINGS[name], "detect.weights": args.weights,
                                              "train.seed": seed})
    if not (out / "train_summary.json").is_file():
        data = prepare_training_data(dataset, profile, args.cache, progress=False, log=lambda *_: None)
        train(data, profile, out, progress=False, log=lambda *_: None)
    metrics = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else None
    if metrics is None or metrics.get("checkpoint", {}).get("sha256_12") is None:
        metrics = evaluate_run(out, root=args.root, cache_root=args.cache, progress=False, log=lambda *_: None)
    strict = metrics.get("rbdc_tbdc_one_to_one", {})
    return {"setting": name, "seed": seed, "micro_auc": metrics["micro_auc"], "macro_auc": metrics["macro_auc"],
            "rbdc": metrics["rbdc"], "tbdc": metrics["tbdc"], "rbdc_one_to_one": strict.get("rbdc"),
            "tbdc_one_to_one": strict.get("tbdc"), "kd_alone_micro_auc": metrics["per_task"]["kd"]["micro_auc"],
            "per_task_micro_auc": {task: value["micro_auc"] for task, value in metrics["per_task"].items()},
            "test_objects": metrics["timing"]["objects"], "epochs": metrics.get("training", {}).get("epochs"),
            "train_objects": metrics.get("training", {}).get("train_objects")}


def ensemble_row(name: str, seeds: list[int], args: argparse.Namespace) -> dict:
    """The runs of ``name`` with ``seeds`` scored as one ensemble (their cached test scores reused)."""
    out = Path(args.runs) / f"{name}-ensemble"
    runs = [Path(args.runs) / f"{name}-seed{seed}" for seed in seeds]
    metrics = evaluate_ensemble(runs, out, root=args.root, cache_root=args.cache, progress=False, log=lambda *_: None)
    strict = metrics.get("rbdc_tbdc_one_to_one", {})
    return {"setting": name, "seed": "ensemble", "members": seeds, "micro_auc": metrics["micro_auc"],
            "macro_auc": metrics["macro_auc"], "rbdc": metrics["rbdc"], "tbdc": metrics["tbdc"],
            "rbdc_one_to_one": strict.get("rbdc"), "tbdc_one_to_one": strict.get("tbdc"),
            "kd_alone_micro_auc": metrics["per_task"]["kd"]["micro_auc"] if "kd" in metrics["per_task"] else None,
            "per_task_micro_auc": {task: value["micro_auc"] for task, value in metrics["per_task"].items()}}


def table(rows: list[dict]) -> str:
    """Mean ± standard deviation over seeds, in %, one line per setting (and one per ensemble of its seeds)."""
    lines = ["| setting | seeds | micro AUC | macro AUC | RBDC | TBDC | RBDC one-to-one | TBDC one-to-one | "
             "distillation alone (micro) |", "|---" * 9 + "|"]
    for name in SETTINGS:
        mine = [r for r in rows if r["setting"] == name and r["seed"] != "ensemble"]
        if not mine:
            continue
        cells = []
        for metric in METRICS:
            values = 100 * np.array([r[metric] for r in mine if r[metric] is not None], float)
            spread = f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.1f}{spread}" if len(values) else "—")
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
        for ensemble in (r for r in rows if r["setting"] == name and r["seed"] == "ensemble"):
            cells = ["—" if ensemble[m] is None else f"{100 * ensemble[m]:.1f}" for m in METRICS]
            lines.append(f"| {name}, ensemble of its seeds | {len(ensemble['members'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(SHARED / "datasets" / "ucsd_ped2"))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "yolov8n_int8_openvino_model"))
    parser.add_argument("--cache", default=str(REPO / "cache"))
    parser.add_argument("--runs", default=str(REPO / "runs" / "ped2-attribution"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of the settings")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ped2_attribution.json"))
    parser.add_argument("--reuse-only", action="store_true",
                        help="tabulate the runs already trained among --seeds x --settings; train nothing")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        raise SystemExit(f"{args.root} is absent: this benchmark needs the real UCSD Ped2 (../shared)")
    dataset = open_dataset("ped2", args.root)
    rows = []

    def write() -> None:
        Path(args.out).write_text(json.dumps({
            "benchmark": "Ped2 attribution: metric rules, detector settings, distillation head, learning-rate "
                         "schedule, seed ensembles (test labels read: a sensitivity table, never used to choose)",
            "date": dt.date.today().isoformat(), "machine": machine_info(), "code": code_provenance(),
            "budget": BUDGET, "settings": SETTINGS, "runs": rows, "table": table(rows).splitlines()}, indent=2))

    names = args.settings.split(",")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in names:
            if args.reuse_only and not (Path(args.runs) / f"{name}-seed{seed}" / "train_summary.json").is_file():
                continue
            rows.append(run_one(name, seed, args, dataset))
            print(json.dumps(rows[-1]), flush=True)
            write()
    for name in names:
        seeds = [r["seed"] for r in rows if r["setting"] == name]
        if len(seeds) >= 2:
            rows.append(ensemble_row(name, seeds, args))
            print(json.dumps(rows[-1]), flush=True)
            write()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
  the run (``train.schedule = cosine``, ``docs/method.md``, "Learning within a budget");
* ``aot:yolo0.25+motion+cosine``: the arrow of time trained alone (``train.tasks = aot``) on the default
  detections, cosine schedule; its micro AUC is the task's own;
* ``aot:yolo0.5+cosine``: the same on the authors' operating point (COCO boxes at 0.5, no motion blobs): how
  much of the arrow of time's failure the uncertain extra objects explain (``docs/method.md``, "What the arrow
  of time learns").

Every setting trained with two or more seeds also gets an ``ensemble`` row: its seeds' runs scored as one
(``ssmtl_core.evaluate.evaluate_ensemble``, ``docs/method.md``, "Seed ensembles").

``--settings`` reruns some settings: the rows of the others are kept from the JSON, each with the date and code
that made it (rows made before the JSON recorded code say so in the table).

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
    "aot:yolo0.25+motion+cosine": {"detect.detector": "yolo+motion", "detect.conf": 0.25, "train.schedule": "cosine",
                                   "train.tasks": ("aot",)},
    "aot:yolo0.5+cosine": {"detect.detector": "yolo", "detect.conf": 0.5, "train.schedule": "cosine",
                           "train.tasks": ("aot",)},
}
METRICS = ("micro_auc", "macro_auc", "rbdc", "tbdc", "rbdc_one_to_one", "tbdc_one_to_one", "kd_alone_micro_auc",
           "aot_micro_auc")


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
            "tbdc_one_to_one": strict.get("tbdc"), "kd_alone_micro_auc": _task_auc(metrics, "kd"),
            "aot_micro_auc": _task_auc(metrics, "aot"),
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
            "kd_alone_micro_auc": _task_auc(metrics, "kd"), "aot_micro_auc": _task_auc(metrics, "aot"),
            "per_task_micro_auc": {task: value["micro_auc"] for task, value in metrics["per_task"].items()}}


def _task_auc(metrics: dict, task: str) -> float | None:
    """The micro AUC of one task's own score (None when the run did not train it)."""
    return metrics["per_task"][task]["micro_auc"] if task in metrics["per_task"] else None


def table(rows: list[dict]) -> str:
    """Mean ± standard deviation over seeds, in %, one line per setting (and one per ensemble of its seeds)."""
    lines = ["| setting | seeds | micro AUC | macro AUC | RBDC | TBDC | RBDC one-to-one | TBDC one-to-one | "
             "distillation alone (micro) | arrow of time's score (micro) | made |", "|---" * 11 + "|"]
    for name in SETTINGS:
        mine = [r for r in rows if r["setting"] == name and r["seed"] != "ensemble"]
        if not mine:
            continue
        cells = []
        for metric in METRICS:
            values = 100 * np.array([r[metric] for r in mine if r.get(metric) is not None], float)
            spread = f" ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.1f}{spread}" if len(values) else "—")
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + f" | {_made(mine[0])} |")
        for ensemble in (r for r in rows if r["setting"] == name and r["seed"] == "ensemble"):
            cells = ["—" if ensemble.get(m) is None else f"{100 * ensemble[m]:.1f}" for m in METRICS]
            lines.append(f"| {name}, ensemble of its seeds | {len(ensemble['members'])} | " + " | ".join(cells)
                         + f" | {_made(ensemble)} |")
    return "\n".join(lines)


def _made(row: dict) -> str:
    """When and with which commit a row was made (rows older than the JSON's provenance: their date only)."""
    code = row.get("code") or {}
    commit = code.get("commit")
    dirty = " + changes" if code.get("dirty") else ""
    return f"{row.get('date', '?')}, {commit[:7]}{dirty}" if commit else f"{row.get('date', '?')}, code not recorded"


def _kept_rows(path: Path, rerun: list[str]) -> list[dict]:
    """The rows of the settings not rerun now, from the JSON of an earlier run (dated, with their code if known)."""
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text())
    rows = [r for r in earlier.get("runs", []) if r["setting"] not in rerun]
    for row in rows:
        row.setdefault("date", earlier.get("date"))
        row.setdefault("code", earlier.get("code"))
        row.setdefault("aot_micro_auc", row.get("per_task_micro_auc", {}).get("aot"))
    return rows


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
    names = args.settings.split(",")
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown settings {unknown}: choose among {', '.join(SETTINGS)}")
    kept = _kept_rows(Path(args.out), names)
    rows: list[dict] = []
    today, code = dt.date.today().isoformat(), code_provenance()  # the code at the start is the code that runs

    def write() -> None:
        for row in rows:
            row.setdefault("date", today)
            row.setdefault("code", code)
        everything = kept + rows
        Path(args.out).write_text(json.dumps({
            "benchmark": "Ped2 attribution: metric rules, detector settings, distillation head, learning-rate "
                         "schedule, seed ensembles, the arrow of time alone (test labels read: a sensitivity "
                         "table, never used to choose)",
            "date": today, "machine": machine_info(), "code": code, "budget": BUDGET,
            "settings": {name: {k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()}
                         for name, setting in SETTINGS.items()},
            "runs": everything, "table": table(everything).splitlines()}, indent=2))

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
    print(table(kept + rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

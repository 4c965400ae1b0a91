"""How the four tasks' scores are combined, and whether the joint model then beats its own subsets.

Usage::

    python bench/combination.py --runs runs/synthetic/shallow_narrow,runs/synthetic/deep_wide,...
        [--metrics reports/synthetic/06_evaluate/shallow_narrow/metrics.json,...] [--cache cache]
        [--out bench/results/combination.json]

For each trained run (its cached test object scores, no model run), every subset of its tasks is combined two
ways and read as frame micro / macro AUC:

* ``minmax``: the paper's (Sec. 3.4): each task's object scores min-max normalised per test video, summed,
  normalised again; frames from the score grid (``ssmtl_core.score.score_video``);
* ``calibrated``: each task's score read against the same task's scores on the run's normal validation objects
  (its surprise ``-log(1 - p)``, ``ssmtl_core.calibration``), summed over the tasks, read against the validation
  objects' sums; a frame takes its most surprising object (``ssmtl_core.score.calibrated_frame_scores``).

The question the table answers: with which combination is the four-task model at or above every subset of its
own tasks (the paper's ablation, and issue 19's target)? The per-video min-max rescales each task by its most
extreme object of the video, so one task whose normal objects are noisy (the arrow of time on Ped2,
``docs/method.md``, "What the arrow of time learns") weighs as much as a sure one; the calibrated sum weighs a
task by how far an object is in that task's normal tail.

The synthetic set is the development set: its test labels may choose between the two. Ped2's rows are read
from its test labels for reporting only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from ssmtl_core.evaluate import evaluate_scores
from ssmtl_core.io import code_provenance, machine_info, read_json
from ssmtl_core.metrics import macro_auc, micro_auc
from ssmtl_core.runs import checkpoint_calibration, load_run, object_scores_for_run
from ssmtl_core.score import calibrated_frame_scores, task_subsets

REPO = Path(__file__).resolve().parent.parent


def combinations_of_run(run: Path, cache: str | None, metrics_path: Path | None = None) -> dict:
    """Micro/macro AUC of every task subset of one run, under both combinations (the min-max ablation is read
    from ``metrics_path``, the run's evaluation, when that evaluated the same checkpoint)."""
    state, profile, dataset, cache_root = load_run(run, None, cache)
    scores, info = object_scores_for_run(run, state, profile, dataset, cache_root, "cpu", False, lambda *_: None)
    evaluated = read_json(metrics_path) if metrics_path and metrics_path.is_file() else {}
    if evaluated.get("checkpoint", {}).get("sha256_12") == info["checkpoint_sha256"] and "ablation" in evaluated:
        minmax = {"ablation": evaluated["ablation"], "tasks": evaluated["tasks"]}
    else:
        minmax, _ = evaluate_scores(dataset, scores, profile.score, None, profile.train.tasks)
    tasks = tuple(minmax["tasks"])
    calibration = checkpoint_calibration(state, run / "best.pt", tasks, "cpu", False, lambda *_: None)
    labels = [video.labels for video in dataset.test]
    calibrated = {}
    for subset in task_subsets(tasks):
        curves = [calibrated_frame_scores(calibration.object_scores(s, subset), s.frame, v.num_frames, profile.score)
                  for v, s in zip(dataset.test, scores)]
        calibrated["+".join(subset)] = {"micro_auc": micro_auc(labels, curves), "macro_auc": macro_auc(labels, curves)}
    return {"run": str(run), "dataset": profile.dataset, "arch": profile.train.arch, "seed": profile.train.seed,
            "tasks": list(tasks), "minmax": minmax["ablation"], "calibrated": calibrated}


def verdict(rule: dict, tasks: list[str]) -> dict:
    """The joint model's micro AUC against its best strict subset under one combination."""
    full = "+".join(tasks)
    subsets = {name: value["micro_auc"] for name, value in rule.items() if name != full}
    best = max(subsets, key=subsets.get)
    return {"joint": rule[full]["micro_auc"], "best_subset": best, "best_subset_micro_auc": subsets[best],
            "joint_at_or_above_every_subset": rule[full]["micro_auc"] >= subsets[best]}


def table(rows: list[dict]) -> str:
    lines = ["| run | combination | all tasks (micro / macro) | best other subset (micro) | joint >= every subset |",
             "|---|---|---|---|---|"]
    for row in rows:
        for rule in ("minmax", "calibrated"):
            full = "+".join(row["tasks"])
            v = row["verdict"][rule]
            lines.append(f"| {row['dataset']} {Path(row['run']).name} | {rule} | "
                         f"{100 * row[rule][full]['micro_auc']:.1f} / {100 * row[rule][full]['macro_auc']:.1f} | "
                         f"{v['best_subset']} {100 * v['best_subset_micro_auc']:.1f} | "
                         f"{'yes' if v['joint_at_or_above_every_subset'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="comma-separated run folders (trained with all four tasks)")
    parser.add_argument("--cache", default=None, help="the cache folder (default: the one each run used)")
    parser.add_argument("--metrics", default="", help="comma-separated metrics.json of the runs' evaluations, in "
                        "the order of --runs: their min-max ablation is reused when they evaluated the same checkpoint")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "combination.json"))
    args = parser.parse_args(argv)
    rows = []
    runs = [Path(r) for r in args.runs.split(",")]
    metrics = [Path(m) for m in args.metrics.split(",")] if args.metrics else [None] * len(runs)
    if len(metrics) != len(runs):
        raise SystemExit(f"--metrics names {len(metrics)} files for {len(runs)} runs")
    for run, metrics_path in zip(runs, metrics):
        row = combinations_of_run(run, args.cache, metrics_path)
        row["verdict"] = {rule: verdict(row[rule], row["tasks"]) for rule in ("minmax", "calibrated")}
        rows.append(row)
        print(json.dumps({"run": row["run"], "verdict": row["verdict"]}), flush=True)
    Path(args.out).write_text(json.dumps({
        "benchmark": "task combination: the paper's per-video min-max sum vs the sum of validation-calibrated "
                     "surprises, every subset of the tasks (synthetic test labels choose; Ped2's only report)",
        "date": dt.date.today().isoformat(), "machine": machine_info(), "code": code_provenance(), "runs": rows,
        "table": table(rows).splitlines()}, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

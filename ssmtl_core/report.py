"""What the notebooks write and read: provenance-stamped ``metrics.json``, the paper's numbers, the tables.

Every ``metrics.json`` says what produced it: the notebook and its parameters, the dataset, the detector,
the teacher, the package versions, the code (``code``: commit, uncommitted changes, source digest) and the
seed. ``07_results_tables`` reads them all back and renders the paper-style tables next to the authors' numbers
(``docs/method.md``, "Reference numbers"); it never retrains.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_path, code_provenance, package_versions, read_json, write_json

#: The authors' object-level results (micro AUC, macro AUC, RBDC, TBDC), ``docs/method.md`` "Reference numbers", as fractions.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "avenue": {"micro_auc": 0.915, "macro_auc": 0.919, "rbdc": 0.570, "tbdc": 0.583},
    "shanghaitech": {"micro_auc": 0.824, "macro_auc": 0.893, "rbdc": 0.428, "tbdc": 0.839},
    "ped2": {"micro_auc": 0.975, "macro_auc": 0.998, "rbdc": 0.728, "tbdc": 0.912},
}

#: Ped2 micro AUC reported by the authors per architecture (all four tasks) and per task trained alone.
PAPER_PED2_ARCH_MICRO: dict[str, float] = {"shallow_narrow": 0.921, "deep_narrow": 0.942, "shallow_wide": 0.929,
                                            "deep_wide": 0.975}
PAPER_PED2_TASK_MICRO: dict[str, float] = {"aot": 0.818, "irr": 0.820, "mid": 0.936, "kd": 0.964}

METRICS = ("micro_auc", "macro_auc", "rbdc", "tbdc")
#: The report folder of the ensemble of an architecture's seeds: ``06_evaluate/<arch>-ensemble``.
ENSEMBLE_SUFFIX = "-ensemble"
ARCH_ORDER = ("shallow_narrow", "deep_narrow", "shallow_wide", "deep_wide")


def write_metrics(out_dir: str | Path, notebook: str, metrics: dict[str, Any], parameters: dict[str, Any],
                  profile=None, dataset=None, extra: dict | None = None) -> Path:
    """Write ``<out_dir>/metrics.json`` with the numbers and what produced them."""
    out = Path(out_dir)
    data: dict[str, Any] = {"notebook": notebook, **metrics, "parameters": parameters}
    if profile is not None:
        data.setdefault("profile", profile.name)
        data["settings"] = profile.to_dict()
        data.setdefault("seed", profile.train.seed)
    if dataset is not None:
        data.setdefault("dataset", dataset.summary())
    data.update(extra or {})
    data["versions"] = package_versions()
    data["code"] = code_provenance()  # which code made it (commit, uncommitted changes, source digest)
    path = out / "metrics.json"
    write_json(path, data)
    return path


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.1f}"


def _diff(ours: float | None, paper: float | None) -> str:
    if ours is None or paper is None:
        return "—"
    return f"{100 * (ours - paper):+.1f}"


def collect_results(reports_dir: str | Path) -> dict[str, Any]:
    """Every metrics.json of one profile's reports: per architecture (06), its other seeds and their ensemble
    (``06_evaluate/<arch>-seed<k>``, ``06_evaluate/<arch>-ensemble``) and per single task (01-04)."""
    reports = Path(reports_dir)
    archs: dict[str, dict] = {}
    seeds: dict[str, dict[int, dict]] = {}
    ensembles: dict[str, dict] = {}
    for path in sorted(reports.glob("06_evaluate/*/metrics.json")):
        name = path.parent.name
        arch, _, seed = name.partition("-seed")
        if name.endswith(ENSEMBLE_SUFFIX):
            ensembles[name[:-len(ENSEMBLE_SUFFIX)]] = read_json(path)
        elif seed:
            seeds.setdefault(arch, {})[int(seed)] = read_json(path)
        else:
            archs[name] = read_json(path)
    for arch in seeds:
        if arch in archs:
            seeds[arch][0] = archs[arch]
    tasks: dict[str, dict] = {}
    for name, task in (("01_arrow_of_time", "aot"), ("02_motion_irregularity", "irr"),
                       ("03_middle_box_prediction", "mid"), ("04_knowledge_distillation", "kd")):
        path = reports / name / "metrics.json"
        if path.is_file():
            tasks[task] = read_json(path)
    return {"archs": archs, "tasks": tasks, "seeds": {a: dict(sorted(v.items())) for a, v in seeds.items()},
            "ensembles": ensembles}


def architecture_rows(results: dict[str, Any], profile: str) -> list[dict]:
    """One row per trained architecture: our four numbers, the paper's and the difference."""
    paper = PAPER_RESULTS.get(profile, {})
    rows = []
    for arch in sorted(results["archs"], key=lambda a: ARCH_ORDER.index(a) if a in ARCH_ORDER else 9):
        metrics = results["archs"][arch]
        settings = metrics.get("settings", {}).get("profile", {})
        train, sample = settings.get("train", {}), settings.get("sample", {})
        row = {"name": arch, **{m: metrics.get(m) for m in METRICS},
               "epochs_trained": metrics.get("training", {}).get("epochs", train.get("epochs")),
               "best_epoch": metrics.get("checkpoint", {}).get("epoch"),
               "max_train_objects": sample.get("max_train_objects"),
               "best_val_loss": metrics.get("checkpoint", {}).get("best_val_loss")}
        for m in METRICS:
            row[f"paper_{m}"] = paper.get(m)
        if profile == "ped2":
            # The paper reports every metric only for its best model; per architecture only micro AUC.
            row["paper_micro_auc"] = PAPER_PED2_ARCH_MICRO.get(arch)
            if arch != "deep_wide":
                for m in ("macro_auc", "rbdc", "tbdc"):
                    row[f"paper_{m}"] = None
        rows.append(row)
    return rows


def seed_rows(results: dict[str, Any]) -> list[dict]:
    """The seed study: each seed's four numbers for the repeated architecture, then their mean, standard
    deviation (n - 1) and range, and the ensemble of the seeds (their scores averaged) when it was evaluated."""
    rows = []
    for arch, by_seed in results.get("seeds", {}).items():
        for seed, metrics in by_seed.items():
            rows.append({"arch": arch, "seed": seed, **{m: metrics.get(m) for m in METRICS},
                         "epochs": metrics.get("training", {}).get("epochs"),
                         "best_val_loss": metrics.get("checkpoint", {}).get("best_val_loss")})
        values = {m: np.array([r[m] for r in rows if r["arch"] == arch and r[m] is not None], float) for m in METRICS}
        for stat, fn in (("mean", np.mean), ("std", lambda v: np.std(v, ddof=1) if len(v) > 1 else np.nan),
                         ("min", np.min), ("max", np.max)):
            rows.append({"arch": arch, "seed": stat, **{m: float(fn(v)) if len(v) else None for m, v in values.items()}})
        ensemble = results.get("ensembles", {}).get(arch)
        if ensemble is not None:
            members = [m["seed"] for m in ensemble.get("ensemble", {}).get("members", [])]
            rows.append({"arch": arch, "seed": f"ensemble of seeds {', '.join(map(str, members))}",
                         **{m: ensemble.get(m) for m in METRICS}})
    return rows


def markdown_seed_table(rows: list[dict]) -> str:
    """The seed study as a markdown table (%), the mean and spread under the seeds."""
    if not rows:
        return ""
    lines = ["| architecture | seed | " + " | ".join(m.replace("_", " ") for m in METRICS) + " | epochs |",
             "|---" * (len(METRICS) + 3) + "|"]
    for row in rows:
        seed = row["seed"] if isinstance(row["seed"], str) else f"{row['seed']}"
        cells = [_fmt(row[m]) for m in METRICS]
        if row["seed"] == "mean" or str(row["seed"]).startswith("ensemble"):
            cells = [f"**{c}**" for c in cells]
        lines.append(f"| {row['arch']} | {seed} | " + " | ".join(cells) + f" | {row.get('epochs') or ''} |")
    return "\n".join(lines)


def markdown_architecture_table(rows: list[dict]) -> str:
    """The paper-style table: micro/macro AUC, RBDC, TBDC in %, ours | paper | difference."""
    header = "| architecture | " + " | ".join(f"{m.replace('_', ' ')} (ours / paper / diff)" for m in METRICS)
    lines = [header + " | epochs (best) |", "|---" * (len(METRICS) + 2) + "|"]
    for row in rows:
        cells = [f"{_fmt(row[m])} / {_fmt(row[f'paper_{m}'])} / {_diff(row[m], row[f'paper_{m}'])}" for m in METRICS]
        epochs = f"{row.get('epochs_trained') or '—'} ({row.get('best_epoch') or '—'})"
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {epochs} |")
    return "\n".join(lines)


def ablation_rows(results: dict[str, Any], profile: str) -> list[dict]:
    """The task ablation: micro/macro AUC of every task subset, scored from each jointly trained model,
    and each task trained alone (notebooks 01-04) next to the paper's Ped2 numbers."""
    rows = []
    subsets: list[str] = []
    for metrics in results["archs"].values():
        for name in metrics.get("ablation", {}):
            if name not in subsets:
                subsets.append(name)
    subsets.sort(key=lambda s: (s.count("+"), s))
    for subset in subsets:
        row: dict[str, Any] = {"tasks": subset}
        for arch, metrics in results["archs"].items():
            entry = metrics.get("ablation", {}).get(subset, {})
            row[f"{arch}_micro"] = entry.get("micro_auc")
            row[f"{arch}_macro"] = entry.get("macro_auc")
        if "+" not in subset:
            alone = results["tasks"].get(subset, {})
            row["alone_micro"] = alone.get("micro_auc")
            row["alone_macro"] = alone.get("macro_auc")
            row["paper_alone_micro"] = PAPER_PED2_TASK_MICRO.get(subset) if profile == "ped2" else None
        rows.append(row)
    return rows


def markdown_ablation_table(rows: list[dict], archs: list[str]) -> str:
    """Micro AUC (%) of each task subset per architecture, plus each task trained alone."""
    header = "| tasks | " + " | ".join(archs) + " | trained alone (ours / paper Ped2) |"
    lines = [header, "|---" * (len(archs) + 2) + "|"]
    for row in rows:
        alone = (f"{_fmt(row.get('alone_micro'))} / {_fmt(row.get('paper_alone_micro'))}"
                 if "+" not in row["tasks"] else "")
        cells = [_fmt(row.get(f"{a}_micro")) for a in archs]
        lines.append(f"| {row['tasks']} | " + " | ".join(cells) + f" | {alone} |")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Rows of dicts to CSV (union of keys as columns)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def provenance_line(metrics: dict[str, Any]) -> str:
    """One sentence saying which detector, teacher and dataset produced a metrics.json."""
    detector = metrics.get("detector", {})
    det = detector.get("detector", "?")
    if det == "yolo":
        det = f"YOLO ({Path(str(detector.get('weights', '?'))).name}, conf {detector.get('conf')})"
    dataset = metrics.get("dataset", {})
    partial = ""
    if dataset.get("partial"):  # a copy with fewer videos than the official release
        official = dataset.get("official_videos") or {}
        partial = (f"; PARTIAL copy ({dataset.get('train', {}).get('videos')} of {official.get('train')} training, "
                   f"{dataset.get('test', {}).get('videos')} of {official.get('test')} test videos), not comparable "
                   "with published results")
    return (f"detector {det}; teacher {metrics.get('teacher') or 'none'}; dataset {dataset.get('name')} "
            f"({dataset.get('test', {}).get('videos')} test videos, {dataset.get('test', {}).get('frames')} frames)"
            f"{partial}")


def dumps(data: Any) -> str:
    """Pretty JSON for notebook output."""
    return json.dumps(data, indent=2, default=str)

"""Why the arrow of time fails on Ped2: what it learns epoch by epoch, and what the frame maximum does with it.

Usage::

    python bench/aot_diagnostics.py [--datasets ped2,synthetic] [--epochs 8] [--scored 2,5,8]
        [--root ../shared/datasets/ucsd_ped2] [--synthetic-root data/synthetic]
        [--weights ../shared/weights/yolov8n_int8_openvino_model] [--out bench/results/aot_diagnostics.json]

The arrow of time trained alone (shallow_narrow, the paper's constant learning rate, fp32, a fixed budget in
epochs and objects so the machine's load changes how long it takes and not what it computes), with a checkpoint
after every epoch. For the checkpoints of ``--scored`` epochs:

* label-free, on the **normal validation frames** (the last 15% of each training video, every detection in
  them): P(backward) of the forward sequence by detection kind (COCO box, motion blob) and by how much the
  object moves (the mean absolute difference of consecutive crops, in grey levels): how sure the network is
  about normal objects, and which ones it gets wrong;
* from the **test labels, to diagnose only** (never to choose): the object-level AUC of P(backward), the frame
  micro/macro AUC of the paper's pipeline, the same without the motion blobs, and what sets the frame maximum
  (in abnormal frames, how often an abnormal object is the frame's highest-scored one).

On the synthetic dataset (the development set) the test labels may guide choices; on Ped2 they only report.
Runs are resumable (checkpoints and scores are kept under ``--runs``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ssmtl_core.config import load_profile
from ssmtl_core.data import open_dataset
from ssmtl_core.diagnostics import frame_max_sources, held_out_objects, mean_by_bin, task_scores
from ssmtl_core.evaluate import evaluate_scores, object_labels
from ssmtl_core.io import code_provenance, machine_info, read_json, write_json
from ssmtl_core.score import ObjectScores
from ssmtl_core.train import train
from ssmtl_core.training_data import prepare_training_data

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
BUDGET = {"train.arch": "shallow_narrow", "train.tasks": ("aot",), "train.precision": "fp32",
          "train.schedule": "constant", "sample.max_train_objects": 2000}
#: per dataset: the profile's own frame stride for training objects is kept, except Ped2's (every 5th frame, as
#: the study's CPU profile)
DATASET_SETTINGS = {"ped2": {"sample.train_frame_stride": 5}, "synthetic": {}}


def _quiet(*_args, **_kwargs) -> None:
    pass


def epoch_checkpoints(dataset, profile, cache: Path, out: Path, epochs: int) -> list[dict]:
    """Train epoch by epoch (a run resumes with one more epoch each time), keeping ``ep<k>.pt``; the history."""
    data = prepare_training_data(dataset, profile, cache, progress=False, log=_quiet)
    for k in range(1, epochs + 1):
        if (out / f"ep{k}.pt").is_file():
            continue
        longer = load_profile(profile.name, overrides={**_flat(profile), "train.epochs": k})
        train(data, longer, out, progress=False, log=_quiet)
        shutil.copy(out / "last.pt", out / f"ep{k}.pt")
    return read_json(out / "history.json")


def _flat(profile) -> dict:
    return {f"{section}.{name}": value for section, values in profile.to_dict().items() if isinstance(values, dict)
            for name, value in values.items()}


def frame_auc(dataset, profile, test: dict, values: np.ndarray, keep: np.ndarray | None = None) -> tuple[float, float]:
    """Micro and macro frame AUC of one task's object scores through the paper's pipeline."""
    keep = np.ones(len(values), bool) if keep is None else keep
    per_video = [ObjectScores(test["frame"][keep & (test["video"] == v)], test["boxes"][keep & (test["video"] == v)],
                              {"aot": values[keep & (test["video"] == v)].astype(np.float32)})
                 for v in range(len(dataset.test))]
    metrics, _ = evaluate_scores(dataset, per_video, profile.score, None, ("aot",))
    return metrics["micro_auc"], metrics["macro_auc"]


def diagnose(name: str, args: argparse.Namespace) -> list[dict]:
    root = args.root if name == "ped2" else args.synthetic_root
    if not Path(root).is_dir():
        print(f"skipped {name}: {root} is absent")
        return []
    dataset = open_dataset(name, root)
    overrides = {**BUDGET, **DATASET_SETTINGS[name]}
    if name == "ped2":
        overrides["detect.weights"] = args.weights
    profile = load_profile(name, overrides=overrides)
    cache = Path(args.cache)
    out = Path(args.runs) / name
    history = epoch_checkpoints(dataset, profile, cache, out, args.epochs)
    val = held_out_objects(dataset, profile, cache, "train", log=_quiet)
    test = held_out_objects(dataset, profile, cache, "test", log=_quiet)
    abnormal = np.concatenate(object_labels(dataset, [
        ObjectScores(test["frame"][test["video"] == v], test["boxes"][test["video"] == v], {})
        for v in range(len(dataset.test))])).astype(bool)
    edges = np.quantile(val["motion"], [0, 1 / 3, 2 / 3, 1])
    rows = []
    for epoch in [int(e) for e in args.scored.split(",") if int(e) <= args.epochs]:
        checkpoint = out / f"ep{epoch}.pt"
        val_p = task_scores(checkpoint, val["sequences"], "aot", precision="fp32")
        test_p = task_scores(checkpoint, test["sequences"], "aot", precision="fp32")
        micro, macro = frame_auc(dataset, profile, test, test_p)
        coco = ~test["blob"]
        row = {"dataset": name, "epoch": epoch, "val_cross_entropy": history[epoch - 1]["val_aot"],
               "val_objects": int(len(val_p)), "val_blobs": int(val["blob"].sum()),
               "val_p_backward_over_half_coco": float(np.mean(val_p[~val["blob"]] > 0.5)),
               "val_p_backward_over_half_blobs": (float(np.mean(val_p[val["blob"]] > 0.5)) if val["blob"].any()
                                                  else None),
               "val_p_backward_by_motion_tercile": [None if v is None else round(v, 3)
                                                    for v in mean_by_bin(val_p, val["motion"], edges)],
               "motion_terciles": [round(float(e), 2) for e in edges],
               "test_object_auc": float(roc_auc_score(abnormal, test_p)), "test_micro_auc": micro,
               "test_macro_auc": macro,
               **frame_max_sources(dataset, test["video"], test["frame"], test_p, abnormal)}
        if test["blob"].any():
            row["test_micro_auc_without_blobs"], row["test_macro_auc_without_blobs"] = frame_auc(
                dataset, profile, test, test_p, coco)
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| dataset | epoch | val CE | val P(b)>0.5 COCO / blobs | test object AUC | frame micro / macro | "
             "micro without blobs | abnormal object sets the frame max |", "|---" * 8 + "|"]
    for r in rows:
        blobs = "—" if r["val_p_backward_over_half_blobs"] is None else f"{100 * r['val_p_backward_over_half_blobs']:.0f}%"
        without = r.get("test_micro_auc_without_blobs")
        lines.append(f"| {r['dataset']} | {r['epoch']} | {r['val_cross_entropy']:.3f} | "
                     f"{100 * r['val_p_backward_over_half_coco']:.0f}% / {blobs} | {100 * r['test_object_auc']:.1f} | "
                     f"{100 * r['test_micro_auc']:.1f} / {100 * r['test_macro_auc']:.1f} | "
                     f"{'—' if without is None else f'{100 * without:.1f}'} | "
                     f"{100 * r['abnormal_object_sets_the_max']:.0f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ped2,synthetic")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--scored", default="2,5,8", help="the epochs whose checkpoints are scored")
    parser.add_argument("--root", default=str(SHARED / "datasets" / "ucsd_ped2"))
    parser.add_argument("--synthetic-root", default=str(REPO / "data" / "synthetic"))
    parser.add_argument("--weights", default=str(SHARED / "weights" / "yolov8n_int8_openvino_model"))
    parser.add_argument("--cache", default=str(REPO / "cache"))
    parser.add_argument("--runs", default=str(REPO / "runs" / "aot-diagnostics"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "aot_diagnostics.json"))
    args = parser.parse_args(argv)
    if "synthetic" in args.datasets and not (Path(args.synthetic_root) / "dataset.json").is_file():
        from ssmtl_core.data.synthetic import generate_synthetic

        generate_synthetic(args.synthetic_root, size="default", seed=0)
    started = os.getloadavg()[0]
    rows = [row for name in args.datasets.split(",") for row in diagnose(name, args)]
    result = {"benchmark": "arrow of time alone, epoch by epoch: validation (label-free) and test (diagnosis only)",
              "date": dt.date.today().isoformat(), "machine": machine_info(), "code": code_provenance(),
              "budget": {k: list(v) if isinstance(v, tuple) else v for k, v in BUDGET.items()},
              "dataset_settings": DATASET_SETTINGS, "load_average_start": started, "rows": rows,
              "table": table(rows).splitlines()}
    write_json(args.out, result)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

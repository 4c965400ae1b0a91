"""Diagnostics of the knowledge-distillation task of a trained run, on validation objects only (no test labels).

Usage::

    python bench/distillation.py --run runs/ped2/task_kd_shallow_narrow [--root PATH] [--cache cache]
        [--out bench/results/distillation.json]

For the run's validation objects (the last 15% of each training video) it reports, for each part of the
distillation target (the teacher's 1000 ImageNet logits, the detector's 80 class scores):

* the student's mean absolute error, next to that of the best constant (the per-value median of the
  training targets): a student that does not beat the constant has learned nothing object-specific, and its
  test-time discrepancy measures its own noise;
* how often the student's top class agrees with the detector's (and the majority-class rate);
* what the teacher's logits look like on these crops (how peaked its softmax is, its most frequent classes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch

from ssmtl_core.checkpoint import load_checkpoint, model_from_checkpoint
from ssmtl_core.config import profile_from_dict
from ssmtl_core.data import open_dataset
from ssmtl_core.io import code_provenance, machine_info, read_json
from ssmtl_core.model import as_input
from ssmtl_core.samples import SequenceSampler
from ssmtl_core.train import VAL_EPOCH, epoch_batches
from ssmtl_core.training_data import prepare_training_data


def part_errors(prediction: np.ndarray, target: np.ndarray, constant: np.ndarray) -> dict:
    """Mean absolute error of the student and of the constant on one part of the target."""
    return {"student": round(float(np.abs(prediction - target).mean()), 5),
            "constant_median": round(float(np.abs(constant - target).mean()), 5)}


def diagnose(run: Path, root: str | None, cache: str | None) -> dict:
    state = load_checkpoint(run / "best.pt")
    info = read_json(run / "run.json")
    profile = profile_from_dict(state["profile"])
    dataset = open_dataset(profile.dataset, root or info["dataset"]["root"])
    data = prepare_training_data(dataset, profile, cache or info["cache_root"], progress=False, log=lambda *_: None)
    if data.kd_targets is None:
        raise SystemExit(f"{run} was not trained on the distillation task")
    model = model_from_checkpoint(state)
    sampler = SequenceSampler(data.frames, data.objects, profile.sample, ("kd",), seed=profile.train.seed)
    index = np.sort(data.val_index)
    predictions = []
    with torch.no_grad():
        for batch in epoch_batches(sampler, index, 64, profile.train.seed, VAL_EPOCH):
            predictions.append(model.kd_head(model.encoder(as_input(batch.consecutive))).numpy())
    prediction, target = np.concatenate(predictions), data.kd_targets[index]
    constant = np.median(data.kd_targets[data.train_index], axis=0)
    cut = data.kd_layout.get("logits", 0)
    has = np.ones(len(index), bool) if data.kd_has_classes is None else data.kd_has_classes[index]
    result = {"run": str(run), "validation_objects": int(len(index)), "kd_layout": data.kd_layout,
              "model_config": state["model_config"]}
    if cut:
        logits = data.kd_targets[:, :cut]
        softmax = torch.softmax(torch.from_numpy(logits), 1).numpy()
        classes, counts = np.unique(logits.argmax(1), return_counts=True)
        top = np.argsort(-counts)[:5]
        result["teacher_logits"] = {
            **part_errors(prediction[:, :cut], target[:, :cut], constant[:cut]),
            "top1_agreement": round(float((prediction[:, :cut].argmax(1) == target[:, :cut].argmax(1)).mean()), 4),
            "teacher_softmax_max_mean": round(float(softmax.max(1).mean()), 4),
            "teacher_top_classes": {int(c): int(n) for c, n in zip(classes[top], counts[top])}}
    if target.shape[1] > cut and has.any():
        p, t = prediction[has, cut:], target[has, cut:]
        majority = np.bincount(data.kd_targets[data.train_index, cut:].argmax(1)).argmax()
        result["detector_class_scores"] = {
            **part_errors(p, t, constant[cut:]),
            "top_class_agreement": round(float((p.argmax(1) == t.argmax(1)).mean()), 4),
            "majority_class_rate": round(float((t.argmax(1) == majority).mean()), 4)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, nargs="+", help="run folder(s) written by ssmtl train")
    parser.add_argument("--root", help="dataset folder (default: the run's)")
    parser.add_argument("--cache", help="cache folder (default: the run's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "distillation.json"))
    args = parser.parse_args(argv)
    rows = [diagnose(Path(run), args.root, args.cache) for run in args.run]
    for row in rows:
        print(json.dumps(row, indent=1))
    Path(args.out).write_text(json.dumps({"benchmark": "distillation diagnostics on validation objects",
                                          "date": dt.date.today().isoformat(), "machine": machine_info(),
                                          "code": code_provenance(), "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

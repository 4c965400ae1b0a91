"""Seed ensembles: several trained runs scored as one (ssmtl_core.evaluate.evaluate_ensemble, ssmtl evaluate
--run A --run B)."""

import json

import numpy as np
import pytest
from helpers import train_synthetic

from ssmtl_core.cli import main
from ssmtl_core.config import load_profile
from ssmtl_core.data import open_dataset
from ssmtl_core.errors import SSMTLError
from ssmtl_core.evaluate import ensemble_object_scores
from ssmtl_core.score import ObjectScores, minmax
from ssmtl_core.train import train
from ssmtl_core.training_data import prepare_training_data

SMALL = {"train.epochs": 1, "sample.crop_size": 32, "train.teacher_size": 64, "train.batch_size": 16,
         "sample.max_train_objects": 48, "train.precision": "fp32"}


def _scores(values: dict[str, list[float]], frames=(0, 0, 1)) -> ObjectScores:
    n = len(frames)
    boxes = np.tile(np.array([[0, 0, 4, 4]], np.float32), (n, 1))
    return ObjectScores(np.array(frames), boxes, {t: np.array(v, np.float32) for t, v in values.items()})


def test_members_are_normalised_per_task_then_averaged():
    a = _scores({"aot": [0.0, 1.0, 0.5], "mid": [10.0, 20.0, 30.0]})
    b = _scores({"aot": [2.0, 0.0, 1.0], "mid": [1.0, 1.0, 3.0], "irr": [0.1, 0.2, 0.3]})
    [combined] = ensemble_object_scores([[a], [b]])
    assert set(combined.tasks) == {"aot", "mid"}, "a task counts only when every member has it"
    np.testing.assert_allclose(combined.tasks["aot"], (minmax(a.tasks["aot"]) + minmax(b.tasks["aot"])) / 2)
    np.testing.assert_allclose(combined.tasks["mid"], [0.0, 0.25, 1.0])
    [raw] = ensemble_object_scores([[a], [b]], normalize_tasks=False)
    np.testing.assert_allclose(raw.tasks["mid"], [5.5, 10.5, 16.5])


def test_members_that_scored_other_objects_are_refused():
    a = _scores({"aot": [0.0, 1.0, 0.5]})
    b = _scores({"aot": [0.0, 1.0, 0.5]}, frames=(0, 1, 1))
    with pytest.raises(SSMTLError, match="different objects"):
        ensemble_object_scores([[a], [b]])
    with pytest.raises(SSMTLError, match="different numbers"):
        ensemble_object_scores([[a], [a, a]])


def test_an_ensemble_of_seeds_from_the_command_line(tmp_path, capsys):
    dataset = train_synthetic(tmp_path, "tiny", SMALL)
    profile = load_profile("synthetic", overrides={**SMALL, "train.seed": 1})
    data = prepare_training_data(open_dataset("synthetic", dataset.root), profile, tmp_path / "cache", progress=False,
                                 log=lambda *_: None)
    train(data, profile, tmp_path / "run-seed1", progress=False, log=lambda *_: None)
    runs = [str(tmp_path / "run"), str(tmp_path / "run-seed1")]
    for run in runs:
        assert main(["evaluate", "--run", run, "--device", "cpu"]) == 0
    single = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("run", "run-seed1")]

    # a run with itself is the run: averaging identical normalised scores changes nothing
    assert main(["evaluate", "--run", runs[0], "--run", runs[0], "--out", str(tmp_path / "same"), "--device",
                 "cpu"]) == 0
    same = json.loads((tmp_path / "same" / "metrics.json").read_text())
    for key in ("micro_auc", "macro_auc", "rbdc", "tbdc"):
        assert same[key] == pytest.approx(single[0][key], abs=1e-9), key

    assert main(["evaluate", "--run", runs[0], "--run", runs[1], "--out", str(tmp_path / "both"), "--device",
                 "cpu"]) == 0
    assert "ensemble of 2 runs" in capsys.readouterr().out
    both = json.loads((tmp_path / "both" / "metrics.json").read_text())
    assert [m["seed"] for m in both["ensemble"]["members"]] == [0, 1] and both["seed"] == [0, 1]
    assert both["micro_auc"] not in (single[0]["micro_auc"], single[1]["micro_auc"])
    assert len(both["ablation"]) == 15 and (tmp_path / "both" / "frame_scores.csv").is_file()
    assert "commit" in both["code"]

    assert main(["evaluate", "--run", runs[0], "--run", runs[1]]) == 2, "an ensemble needs --out"
    assert "--out" in capsys.readouterr().err

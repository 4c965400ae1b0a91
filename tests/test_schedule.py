"""The learning-rate schedule (ssmtl_core.schedule) and its use by training."""

from __future__ import annotations

import numpy as np
import pytest

from ssmtl_core.config import apply_overrides, get_profile, validate
from ssmtl_core.data import open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.errors import SSMTLError
from ssmtl_core.io import read_json
from ssmtl_core.schedule import FINAL_FRACTION, WARMUP_START, lr_factor, planned_epochs
from ssmtl_core.train import train
from ssmtl_core.training_data import prepare_training_data


def test_constant_is_the_papers_rate_at_every_step():
    assert {lr_factor("constant", step, 10, 3) for step in range(40)} == {1.0}


def test_cosine_warms_up_holds_then_decays_to_its_floor():
    spe, planned = 20, 4
    factors = np.array([lr_factor("cosine", step, spe, planned, warmup_epochs=0.5) for step in range(spe * planned)])
    assert factors[0] == pytest.approx(WARMUP_START)
    assert np.all(np.diff(factors[:10]) > 0), "the warm-up rises step by step"
    assert np.all(factors[10:spe] == 1.0), "the rest of epoch 1 runs at the full rate"
    assert np.all(np.diff(factors[spe:]) <= 0), "then the rate only decays"
    assert factors[-1] == pytest.approx(FINAL_FRACTION, abs=2e-3)
    assert factors[spe + (planned - 1) * spe // 2] == pytest.approx(0.5 * (1 + FINAL_FRACTION), abs=0.02)


def test_cosine_without_a_plan_or_with_one_epoch_keeps_the_full_rate_after_warm_up():
    assert lr_factor("cosine", 30, 20, None) == 1.0  # a time budget not planned yet
    assert lr_factor("cosine", 15, 20, 1) == 1.0  # a one-epoch run has nothing to decay over


@pytest.mark.parametrize("budget, first, expected", [(0, 50.0, 30), (9, 60.0, 9), (9, 200.0, 2), (9, 999.0, 1),
                                                     (100, 1.0, 30)])
def test_planned_epochs_fit_the_budget(budget, first, expected):
    assert planned_epochs(30, budget, first) == expected


def test_an_unknown_schedule_is_refused():
    with pytest.raises(SSMTLError, match="train.schedule"):
        validate(apply_overrides(get_profile("synthetic"), {"train.schedule": "linear"}))


def test_training_follows_the_schedule_and_records_it(tmp_path):
    root = generate_synthetic(tmp_path / "tiny", size="tiny", seed=0, progress=False)
    profile = apply_overrides(get_profile("synthetic"), {
        "train.epochs": 3, "train.schedule": "cosine", "train.precision": "fp32", "train.arch": "shallow_narrow",
        "sample.max_train_objects": 96, "train.batch_size": 16, "train.teacher_size": 64})
    data = prepare_training_data(open_dataset("synthetic", root), profile, tmp_path / "cache", progress=False,
                                 log=lambda *_: None)
    summary = train(data, profile, tmp_path / "run", progress=False, log=lambda *_: None)
    history = read_json(tmp_path / "run" / "history.json")
    rates = [h["lr"] / profile.train.lr for h in history]
    assert summary["schedule"] == "cosine" and summary["planned_epochs"] == 3 and summary["epochs"] == 3
    assert rates[0] == 1.0 and rates[0] > rates[1] > rates[2]
    assert rates[2] == pytest.approx(FINAL_FRACTION, abs=0.02), "the last step runs at the floor"

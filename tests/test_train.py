"""Tests of ssmtl_core.train on the tiny synthetic dataset (motion detector, EfficientNet-Lite0 at 64 px).

The data (detections, frames, teacher targets) are prepared once per module and passed to every ``train``
call; crops are 32x32 and batches 16, so a 2-epoch run takes a few seconds on a CPU. Training uses one torch
thread (``train.num_threads``): on a shared 2-core machine it is several times faster than two threads that
wait on each other, and the thread count is restored afterwards.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmtl_core.config import apply_overrides, get_profile, profile_from_dict
from ssmtl_core.data import open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.errors import SSMTLError
from ssmtl_core.io import read_json
from ssmtl_core.train import load_checkpoint, model_from_checkpoint, prepare_training_data, train

SETTINGS = {"sample.crop_size": 32, "train.teacher_size": 64, "train.batch_size": 16, "train.epochs": 2,
            "train.device": "cpu", "train.seed": 3, "train.num_threads": 1}
LOSS_KEYS = ("aot", "irr", "mid", "kd", "total")


def _quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    root = generate_synthetic(base / "tiny", size="tiny", seed=0, progress=False)
    dataset = open_dataset("synthetic", root)
    profile = apply_overrides(get_profile("synthetic"), SETTINGS)
    cache = base / "cache"
    threads = torch.get_num_threads()
    data = prepare_training_data(dataset, profile, cache, progress=False, log=_quiet)
    yield {"base": base, "dataset": dataset, "profile": profile, "cache": cache, "data": data}
    torch.set_num_threads(threads)


def _train(setup, out: Path, profile=None, **kwargs) -> dict:
    return train(setup["dataset"], profile or setup["profile"], setup["cache"], out, data=setup["data"],
                 progress=False, log=_quiet, **kwargs)


@pytest.fixture(scope="module")
def baseline(setup):
    out = setup["base"] / "run_a"
    summary = _train(setup, out)
    return {"out": out, "summary": summary, "history": read_json(out / "history.json")}


def _tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prepared_data(setup):
    data = setup["data"]
    assert len(data.objects) > 50
    assert len(data.train_index) > len(data.val_index) > 0
    # motion detector: no class scores, the target is the teacher's 1000 logits
    assert data.kd_layout == {"logits": 1000, "class_scores": 0} and data.kd_dim == 1000
    assert data.kd_targets.shape == (len(data.objects), 1000) and np.isfinite(data.kd_targets).all()
    assert set(data.caches) == {"dataset", "detections", "teacher"} and all(data.caches.values())


def test_two_epochs_lower_the_training_loss(baseline):
    history = baseline["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_total"] < history[0]["train_total"]
    for h in history:
        for key in LOSS_KEYS:
            assert np.isfinite(h[f"train_{key}"]) and np.isfinite(h[f"val_{key}"])
        total = h["train_aot"] + h["train_irr"] + h["train_mid"] + 0.5 * h["train_kd"]
        assert h["train_total"] == pytest.approx(total)
    summary = baseline["summary"]
    assert summary["epochs"] == 2 and summary["best_epoch"] in (1, 2)
    assert (baseline["out"] / "history.csv").is_file() and (baseline["out"] / "run.json").is_file()


def test_same_seed_same_losses(setup, baseline):
    out = setup["base"] / "run_b"
    _train(setup, out)
    assert read_json(out / "history.json") == baseline["history"]
    a = load_checkpoint(baseline["out"] / "last.pt")
    b = load_checkpoint(out / "last.pt")
    assert _tensors_equal(a["model"], b["model"])


def test_interrupted_run_resumes_to_the_same_history(setup, baseline):
    out = setup["base"] / "run_c"
    steps_per_epoch = -(-len(setup["data"].train_index) // setup["profile"].train.batch_size)
    assert steps_per_epoch >= 4
    middle = steps_per_epoch // 2
    first = _train(setup, out, stop_after_steps=middle)  # mid-way through epoch 1
    assert first == {"interrupted": True, "epoch": 0, "step": middle}
    assert (out / "last.pt").is_file() and not (out / "best.pt").exists()
    assert load_checkpoint(out / "last.pt")["step"] == middle
    # finishes epoch 1, stops after the first step of epoch 2
    second = _train(setup, out, stop_after_steps=steps_per_epoch - middle + 1)
    assert second == {"interrupted": True, "epoch": 1, "step": 1}
    assert len(read_json(out / "history.json")) == 1
    summary = _train(setup, out)
    assert summary["epochs"] == 2
    assert read_json(out / "history.json") == baseline["history"]
    resumed = load_checkpoint(out / "last.pt")
    assert resumed["epoch"] == 2 and resumed["step"] == 0
    assert _tensors_equal(resumed["model"], load_checkpoint(baseline["out"] / "last.pt")["model"])
    # a finished run rerun does nothing more
    again = _train(setup, out)
    assert again["objects_per_s"] is None
    assert read_json(out / "history.json") == baseline["history"]


def test_more_epochs_extend_a_finished_run(setup, baseline):
    out = setup["base"] / "run_d"
    shutil.copytree(baseline["out"], out)
    longer = replace(setup["profile"], train=replace(setup["profile"].train, epochs=3))
    _train(setup, out, profile=longer)
    history = read_json(out / "history.json")
    assert len(history) == 3 and history[:2] == baseline["history"]


@pytest.mark.parametrize("change", [{"train.lr": 5e-4}, {"train.arch": "deep_narrow"},
                                    {"train.tasks": ("aot", "mid")}])
def test_resuming_with_other_settings_is_refused(setup, baseline, change):
    other = apply_overrides(setup["profile"], change)
    before = (baseline["out"] / "last.pt").stat().st_mtime_ns
    with pytest.raises(SSMTLError, match="other settings"):
        _train(setup, baseline["out"], profile=other)
    assert (baseline["out"] / "last.pt").stat().st_mtime_ns == before


@pytest.mark.parametrize("tasks", [("mid",), ("aot", "kd")])
def test_training_a_subset_of_tasks(setup, tasks):
    profile = apply_overrides(setup["profile"], {"train.tasks": tasks, "train.epochs": 1})
    out = setup["base"] / f"run_{'_'.join(tasks)}"
    _train(setup, out, profile=profile)
    (record,) = read_json(out / "history.json")
    logged = {k for k in record if k.startswith(("train_", "val_"))}
    assert logged == {f"{split}_{t}" for split in ("train", "val") for t in (*tasks, "total")}
    expected = sum(record[f"train_{t}"] * (0.5 if t == "kd" else 1.0) for t in tasks)
    assert record["train_total"] == pytest.approx(expected)
    state = load_checkpoint(out / "best.pt")
    assert tuple(state["profile"]["train"]["tasks"]) == tasks


def test_best_checkpoint_contents(setup, baseline):
    state = load_checkpoint(baseline["out"] / "best.pt")
    for key in ("model", "optimizer", "epoch", "profile", "model_config", "caches", "kd_layout", "history",
                "best_val_loss", "versions"):
        assert key in state, key
    history = baseline["history"]
    best = min(history, key=lambda h: h["val_total"])
    assert state["epoch"] == best["epoch"] == baseline["summary"]["best_epoch"]
    assert state["best_val_loss"] == pytest.approx(best["val_total"])
    assert state["caches"] == setup["data"].caches
    assert state["caches"]["dataset"] == setup["dataset"].cache_id
    assert state["caches"]["detections"].startswith("motion-")
    assert state["caches"]["teacher"].startswith("efficientnet_lite0-") and state["caches"]["teacher"].endswith("-64")
    assert state["profile"] == setup["profile"].to_dict()
    assert profile_from_dict(state["profile"]) == setup["profile"]
    assert state["model_config"] == {"arch": "shallow_narrow", "kd_dim": 1000, "crop_size": 32, "dropout": 0.3}
    assert state["optimizer"]["state"], "the optimizer state (Adam moments) is saved"
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    model = model_from_checkpoint(state)
    assert not model.training
    assert _tensors_equal(model.state_dict(), state["model"])


def test_load_checkpoint_refuses_other_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(SSMTLError, match="junk.pt"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(SSMTLError, match="not an SSMTL checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(SSMTLError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_cuda_request_without_gpu_is_clear(setup, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    profile = apply_overrides(setup["profile"], {"train.device": "cuda"})
    with pytest.raises(SSMTLError, match="no CUDA GPU"):
        _train(setup, tmp_path / "run", profile=profile)

"""Training's compiled path (ssmtl_core.compiled): the same pooling as eager PyTorch, the same losses as the eager
path, the same losses again for the same seed, and the choice ``train.compile`` makes and records.

The compiled run trains the arrow-of-time task alone (one encoder pass: one graph) on the tiny synthetic dataset;
it is skipped where inductor cannot build (no C++ compiler or no Python headers). Its graph is compiled into
a cache kept between test runs (``$SSMTL_TEST_GRAPHS``, default ``~/.cache/ssmtl-tests``; inductor keys every
graph by its code, settings and torch), as a training run's are kept in its cache folder: the first run on a
machine compiles (0.5-2 minutes on 2 shared cores), later runs load it (seconds).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssmtl_core.compiled import choose_compile, compile_unavailable
from ssmtl_core.config import apply_overrides, get_profile, validate
from ssmtl_core.data import open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.errors import SSMTLError
from ssmtl_core.io import read_json
from ssmtl_core.model import MaxPool2x2, SSMTLModel, _FirstMaxPool
from ssmtl_core.settings import BY_PARAMETER
from ssmtl_core.train import train
from ssmtl_core.training_data import prepare_training_data

SETTINGS = {"sample.crop_size": 32, "train.teacher_size": 64, "train.batch_size": 16, "train.epochs": 1,
            "train.device": "cpu", "train.seed": 3, "train.num_threads": 1, "train.tasks": "aot",
            "train.precision": "fp32"}


def _quiet(*_args, **_kwargs) -> None:
    pass


@pytest.mark.parametrize("shape", [(2, 4, 3, 8, 8), (1, 3, 2, 6, 10)])
def test_the_compiled_pooling_is_max_pool3d(shape):
    # Few distinct values: most windows hold ties, where the gradient must go to the first maximum in row order.
    x = torch.randint(0, 3, shape).float().contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    grad = torch.randn(shape[0], shape[1], shape[2], shape[3] // 2, shape[4] // 2)
    expected = F.max_pool3d(x, (1, 2, 2), (1, 2, 2))
    expected.backward(grad)
    expected_grad, x.grad = x.grad.clone(), None
    got = _FirstMaxPool.apply(x)
    got.backward(grad)
    assert torch.equal(got, expected) and torch.equal(x.grad, expected_grad)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    odd = torch.rand(1, 2, 2, 5, 7)
    assert torch.equal(MaxPool2x2()(odd), F.max_pool3d(odd, (1, 2, 2), (1, 2, 2)))


def test_the_setting_and_its_checks(tmp_path):
    assert BY_PARAMETER["COMPILE"].field == "train.compile" and "--compile" in BY_PARAMETER["COMPILE"].flags
    profile = apply_overrides(get_profile("synthetic"), {"train.compile": "sometimes"})
    with pytest.raises(SSMTLError, match="train.compile"):
        validate(profile)
    model = SSMTLModel("shallow_narrow", 0, crop_size=16)
    cpu = torch.device("cpu")
    off = apply_overrides(get_profile("synthetic"), {"train.compile": "off"})
    assert choose_compile(model, None, off, None, cpu, planned_steps=10**6) == (None, {"compiled": False,
                                                                                   "reason": "asked for"})
    auto = apply_overrides(get_profile("synthetic"), {"train.compile": "auto"})
    losses, info = choose_compile(model, None, auto, None, cpu, planned_steps=1)  # short whatever a step costs
    assert losses is None and "short run" in info["reason"]
    losses, info = choose_compile(model, None, auto, None, cpu, planned_steps=1000, eager_seconds=0.05)
    assert losses is None and "about 50 s of eager steps" in info["reason"]
    losses, info = choose_compile(model, None, auto, None, cpu, planned_steps=10**6, processes=2)
    assert losses is None and "several processes" in info["reason"]
    on = apply_overrides(get_profile("synthetic"), {"train.compile": "on"})
    with pytest.raises(SSMTLError, match="several processes"):
        choose_compile(model, None, on, None, cpu, processes=2)


def test_without_a_compiler_auto_trains_eager_and_on_says_why(monkeypatch):
    monkeypatch.setattr("ssmtl_core.compiled._cxx", lambda: None)
    cpu = torch.device("cpu")
    assert "C++ compiler" in compile_unavailable(cpu)
    model = SSMTLModel("shallow_narrow", 0, crop_size=16)
    auto = apply_overrides(get_profile("synthetic"), {"train.compile": "auto"})
    losses, info = choose_compile(model, None, auto, None, cpu, planned_steps=10**6)
    assert losses is None and "C++ compiler" in info["reason"]
    on = apply_overrides(get_profile("synthetic"), {"train.compile": "on"})
    with pytest.raises(SSMTLError, match=r"C\+\+ compiler.*--compile auto or off"):
        choose_compile(model, None, on, None, cpu)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("compiled")
    root = generate_synthetic(base / "tiny", size="tiny", seed=0, progress=False)
    profile = apply_overrides(get_profile("synthetic"), SETTINGS)
    threads = torch.get_num_threads()
    prepared = prepare_training_data(open_dataset("synthetic", root), profile, base / "cache", progress=False,
                                     log=_quiet)
    graphs = Path(os.environ.get("SSMTL_TEST_GRAPHS", Path.home() / ".cache" / "ssmtl-tests")).expanduser()
    yield base, dataclasses.replace(prepared, cache_root=str(graphs))
    torch.set_num_threads(threads)


def test_compiled_training_is_eager_training(data):
    """Compiled fp32 steps give the eager steps' losses (the same dropout masks: inductor draws them from
    PyTorch's generator), up to float rounding; and the same seed gives the same losses again."""
    if (why := compile_unavailable(torch.device("cpu"))) is not None:
        pytest.skip(why)
    base, prepared = data
    histories, summaries = {}, {}
    for name, mode in (("eager", "off"), ("compiled", "on"), ("again", "on")):
        profile = apply_overrides(get_profile("synthetic"), {**SETTINGS, "train.compile": mode})
        summaries[name] = train(prepared, profile, base / name, progress=False, log=_quiet)
        histories[name] = read_json(base / name / "history.json")
    assert not summaries["eager"]["compiled"] and summaries["compiled"]["compiled"]
    choice = read_json(base / "compiled" / "run.json")["compile_choice"]
    assert choice["compiled"] and choice["reason"] == "asked for"
    assert choice["check_losses"]["compiled"]["aot"] == pytest.approx(choice["check_losses"]["eager_fp32"]["aot"],
                                                                     rel=1e-4)
    assert len(prepared.train_index) % SETTINGS["train.batch_size"], "no smaller last batch: its eager step untested"
    for eager, compiled in zip(histories["eager"], histories["compiled"], strict=True):
        for key in ("train_aot", "val_aot"):
            assert compiled[key] == pytest.approx(eager[key], rel=1e-3), key
    assert histories["again"] == histories["compiled"]
    assert np.isfinite(summaries["compiled"]["best_val_loss"])

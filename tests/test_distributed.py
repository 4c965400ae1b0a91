"""Training on several processes: torchrun, gloo, 2 CPU processes on the tiny synthetic dataset.

The caches (motion detections, EfficientNet-Lite0 logits at 64 px) are filled once in this process; each
torchrun launch then only reads them. Four launches of 2 processes: the study's launcher
(``ssmtl_core.distributed.train_in_processes``: ``torchrun -m ssmtl_core train``) trains 2 epochs; this file,
run as the worker script, trains the same run with a stop in the middle of epoch 1, then resumes it, and takes
one step that is compared with one step computed in this process. Each worker rank records the objects of every
batch it trained on (the test's own record, next to the run folder).

Run as ``torchrun --nproc_per_node 2 tests/test_distributed.py --root R --cache C --out O --record F``, this
file is that worker.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SETTINGS = {"sample.crop_size": 32, "train.teacher_size": 64, "train.batch_size": 16, "train.epochs": 2,
            "train.device": "cpu", "train.seed": 3, "train.num_threads": 1, "train.precision": "fp32"}
PROCS = 2


def _profile(overrides: dict | None = None):
    from ssmtl_core.config import apply_overrides, get_profile

    return apply_overrides(get_profile("synthetic"), {**SETTINGS, **(overrides or {})})


def _quiet(*_args, **_kwargs) -> None:
    pass


# -- the worker (under torchrun) -----------------------------------------------------------------------------


def worker(argv: list[str]) -> int:
    """Train the test's run in this torchrun process, recording the objects of every batch this rank trains on."""
    import ssmtl_core.train as training
    from ssmtl_core.data import open_dataset
    from ssmtl_core.distributed import join, leave
    from ssmtl_core.training_data import prepare_training_data

    parser = argparse.ArgumentParser()
    for flag in ("--root", "--cache", "--out", "--record"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--stop-after-steps", type=int)
    parser.add_argument("--override", action="append", default=[], help="a setting as KEY=JSON")
    args = parser.parse_args(argv)
    profile = _profile({key: json.loads(value) for key, value in (o.split("=", 1) for o in args.override)})
    world = join(profile.train.device)
    data = prepare_training_data(open_dataset("synthetic", args.root), profile, args.cache, progress=False,
                                 log=_quiet)
    seen: list[dict] = []
    original = training.epoch_batches

    def recording(sampler, order, batch_size, seed, epoch, start=0, world=world):
        for batch in original(sampler, order, batch_size, seed, epoch, start, world):
            seen.append({"epoch": epoch, "index": batch.index.tolist()})
            yield batch

    training.epoch_batches = recording
    summary = training.train(data, profile, args.out, progress=False, log=_quiet,
                             stop_after_steps=args.stop_after_steps)
    Path(f"{args.record}.rank{world.rank}.json").write_text(json.dumps({"summary": summary, "seen": seen}))
    leave()
    return 0


# -- the tests -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from ssmtl_core.data import open_dataset
    from ssmtl_core.data.synthetic import generate_synthetic
    from ssmtl_core.training_data import prepare_training_data

    base = tmp_path_factory.mktemp("distributed")
    root = generate_synthetic(base / "tiny", size="tiny", seed=0, progress=False)
    threads = torch.get_num_threads()
    data = prepare_training_data(open_dataset("synthetic", root), _profile(), base / "cache", progress=False,
                                 log=_quiet)
    torch.set_num_threads(threads)
    return {"base": base, "root": root, "cache": base / "cache", "data": data}


def _torchrun(tiny, out: Path, record: Path, *extra: str) -> None:
    from ssmtl_core.distributed import torchrun_command

    command = torchrun_command(PROCS, [])[:-2] + [__file__, "--root", str(tiny["root"]), "--cache",
                                                  str(tiny["cache"]), "--out", str(out), "--record", str(record),
                                                  *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _seen(record: Path) -> list[list[dict]]:
    return [json.loads(Path(f"{record}.rank{r}.json").read_text())["seen"] for r in range(PROCS)]


@pytest.fixture(scope="module")
def launched(tiny):
    """Two epochs on 2 processes through the study's launcher (``torchrun -m ssmtl_core train``)."""
    from ssmtl_core.distributed import train_in_processes

    out = tiny["base"] / "run_launched"
    lines: list[str] = []
    summary = train_in_processes(_profile(), tiny["root"], tiny["cache"], out, PROCS, log=lines.append)
    return {"out": out, "summary": summary, "lines": lines}


def test_epoch_shard_one_process_is_the_plain_batches():
    from ssmtl_core.distributed import epoch_shard, epoch_steps

    order = np.random.default_rng(0).permutation(103)
    plain = [order[i:i + 16] for i in range(0, 103, 16)]
    shard = epoch_shard(order, 16)
    assert [b for b, _ in shard] == list(range(len(plain)))
    assert all(np.array_equal(a, b) for (_, a), b in zip(shard, plain))
    assert epoch_steps(103, 16) == len(plain) == 7


@pytest.mark.parametrize("count", [96, 103, 97, 65])
def test_epoch_shard_ranks_are_disjoint_and_in_step(count):
    from ssmtl_core.distributed import epoch_shard, epoch_steps

    order = np.random.default_rng(1).permutation(count)
    shards = [epoch_shard(order, 16, PROCS, r) for r in range(PROCS)]
    assert len(shards[0]) == len(shards[1]) == epoch_steps(count, 16, PROCS)  # the ranks take the same steps
    taken = [np.concatenate([chunk for _, chunk in shard]) for shard in shards]
    assert not set(taken[0]) & set(taken[1])
    assert len(set(taken[0]) | set(taken[1])) >= count - (PROCS - 1)  # at most one object left out (2 ranks)
    # whole steps are the one-process batches, numbered as one process numbers them
    plain = epoch_shard(order, 16)
    for r, shard in enumerate(shards):
        for b, chunk in shard:
            if len(chunk) == 16:
                assert np.array_equal(chunk, plain[b][1])
            assert b % PROCS == r


def test_two_processes_write_one_run_that_evaluates(tiny, launched):
    from ssmtl_core.checkpoint import load_checkpoint
    from ssmtl_core.cli import main
    from ssmtl_core.io import read_json

    out, summary = launched["out"], launched["summary"]
    assert summary["processes"] == PROCS and summary["epochs"] == 2
    assert read_json(out / "run.json")["processes"] == PROCS
    history = read_json(out / "history.json")
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["val_total"]) for h in history)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.pt", "history.csv", "history.json", "last.pt", "launch_settings.yaml", "run.json",
                     "train_summary.json"], names  # one writer: no second history, no temporary files left
    # rank 0 alone logs: one summary, one line per epoch
    assert sum(line.startswith("epoch ") for line in launched["lines"]) == 2, launched["lines"]
    state = load_checkpoint(out / "best.pt")
    assert state["processes"] == PROCS and "calibration" in state
    # The validation loss of 2 processes is the one-process one (the batches dealt, the sums added): the best
    # checkpoint's model, validated here in one process, gives the loss its epoch recorded.
    import torch

    from ssmtl_core.checkpoint import model_from_checkpoint
    from ssmtl_core.losses import DistillationTargets
    from ssmtl_core.samples import SequenceSampler
    from ssmtl_core.train import validation_losses

    data, profile = tiny["data"], _profile()
    sampler = SequenceSampler(data.frames, data.objects, profile.sample, profile.train.tasks, seed=profile.train.seed)
    losses = validation_losses(model_from_checkpoint(state), sampler, data.val_index, profile,
                               DistillationTargets.from_data(data, profile.train.kd_balance), torch.device("cpu"))
    best = history[summary["best_epoch"] - 1]
    assert best["best"] and {task: best[f"val_{task}"] for task in losses} == pytest.approx(losses, rel=1e-5)
    # evaluate scores the run; its AUC is the one of the frame scores it writes
    from sklearn.metrics import roc_auc_score

    assert main(["evaluate", "--run", str(out), "--device", "cpu"]) == 0
    metrics = read_json(out / "metrics.json")
    with open(out / "frame_scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    labels, scores = np.array([int(r["label"]) for r in rows]), np.array([float(r["score"]) for r in rows])
    assert metrics["micro_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-5)


def test_interrupted_two_process_run_resumes_to_the_same_model(tiny, launched):
    import torch

    from ssmtl_core.checkpoint import load_checkpoint
    from ssmtl_core.config import apply_overrides
    from ssmtl_core.distributed import epoch_shard
    from ssmtl_core.errors import SSMTLError
    from ssmtl_core.io import read_json
    from ssmtl_core.train import epoch_order, train

    data = tiny["data"]
    out = tiny["base"] / "run_resumed"
    steps = -(-len(data.train_index) // (16 * PROCS))
    middle = max(1, steps // 2)
    _torchrun(tiny, out, tiny["base"] / "first", "--stop-after-steps", str(middle))
    state = load_checkpoint(out / "last.pt")
    assert (state["epoch"], state["step"], state["processes"]) == (0, middle, PROCS)
    assert not (out / "best.pt").exists()

    # one process cannot take over mid-epoch (a step of 2 processes covers 2 batches)
    other = tiny["base"] / "run_other"
    shutil.copytree(out, other)
    with pytest.raises(SSMTLError, match="interrupted mid-epoch"):
        train(data, apply_overrides(_profile(), {}), other, progress=False, log=_quiet)

    _torchrun(tiny, out, tiny["base"] / "second")
    assert read_json(out / "history.json") == read_json(launched["out"] / "history.json")
    resumed, reference = load_checkpoint(out / "last.pt"), load_checkpoint(launched["out"] / "last.pt")
    assert resumed["epoch"] == 2 and resumed["step"] == 0
    assert all(torch.equal(resumed["model"][k], reference["model"][k]) for k in reference["model"])

    # each rank trained on its own objects: disjoint, and over the two sessions every step of both epochs once
    first, second = _seen(tiny["base"] / "first"), _seen(tiny["base"] / "second")
    for epoch in (0, 1):
        taken = []
        for r in range(PROCS):
            batches = [b["index"] for b in first[r] + second[r] if b["epoch"] == epoch]
            expected = epoch_shard(epoch_order(3, epoch, data.train_index), 16, PROCS, r)
            assert batches == [chunk.tolist() for _, chunk in expected]
            taken.append({i for batch in batches for i in batch})
        assert not taken[0] & taken[1]
        assert len(taken[0] | taken[1]) >= len(data.train_index) - (PROCS - 1)


# -- one step of 2 processes against one process --------------------------------------------------------------

NO_DROPOUT = {"train.dropout": 0.0}  # the ranks' dropout draws differ by design; without dropout none are drawn


def _first_step_here(data, profile, ranks: int):
    """The first optimisation step of ``ranks`` processes, computed in this one process from the package's
    parts: each rank's batch (its shard of the epoch's order, with its global batch's draws), the mean of their
    joint-loss gradients (DistributedDataParallel averages each backward), Adam's step on it, and rank 0's
    BatchNorm statistics (DDP broadcasts rank 0's buffers). Returns the model, the optimizer and the loss sums
    (loss x objects, added over the ranks) that the run's ``last.pt`` records.

    It runs on the training's thread count: PyTorch's CPU convolutions sum in another order on another count
    (the first layer's gradient then differs by up to 1% of its largest value), and on the same count a
    one-process step is reproduced bit for bit."""
    from ssmtl_core.train import thread_settings

    with thread_settings(profile.train.num_threads):
        return _first_step(data, profile, ranks)


def _first_step(data, profile, ranks: int):
    import torch

    from ssmtl_core.distributed import epoch_shard
    from ssmtl_core.losses import DistillationTargets, backward_groups, task_losses, weighted_total
    from ssmtl_core.model import SSMTLModel
    from ssmtl_core.samples import SequenceSampler
    from ssmtl_core.train import batch_rng, epoch_order

    cfg = profile.train
    sampler = SequenceSampler(data.frames, data.objects, profile.sample, cfg.tasks, seed=cfg.seed)
    kd_targets = DistillationTargets.from_data(data, cfg.kd_balance)
    torch.manual_seed(cfg.seed)  # the initial weights of every run with this seed
    model = SSMTLModel(cfg.arch, data.kd_dim, cfg.dropout, profile.sample.crop_size, data.kd_probabilities)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    order = epoch_order(cfg.seed, 0, data.train_index)
    sums: dict[str, float] = {}
    for rank in range(ranks):
        number, chunk = epoch_shard(order, cfg.batch_size, ranks, rank)[0]
        batch = sampler.make_batch(chunk, batch_rng(cfg.seed, 0, number))
        for group in backward_groups(cfg.tasks):
            losses = task_losses(model, batch, group, kd_targets, torch.device("cpu"))
            (weighted_total(losses, cfg.kd_weight) / ranks).backward()
            for task, value in losses.items():
                sums[task] = sums.get(task, 0.0) + value.item() * len(chunk)
        if rank == 0:
            rank0_buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    model.load_state_dict(rank0_buffers, strict=False)
    optimizer.step()
    return model, optimizer, sums


def _same_step(state: dict, model, optimizer, sums: dict) -> None:
    """A run's ``last.pt`` after its first step holds this step: the same gradient (Adam's first moment is a
    tenth of it), BatchNorm statistics and losses, to float rounding."""
    import torch

    recorded = state["optimizer"]["state"]
    ours = optimizer.state_dict()["state"]
    assert len(recorded) == len(ours) == len(list(model.parameters()))
    for index, moments in ours.items():
        scale = float(moments["exp_avg"].abs().max()) or 1.0
        torch.testing.assert_close(recorded[index]["exp_avg"], moments["exp_avg"], rtol=1e-4, atol=1e-5 * scale)
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(state["model"][name].float(), buffer.float(), rtol=1e-5, atol=1e-6)
    assert state["epoch_sums"] == pytest.approx(sums, rel=1e-5)


def test_a_two_process_step_is_one_process_step_on_the_mean_gradient(tiny):
    """Design (ssmtl_core.distributed): one step of 2 processes trains on the two batches one process would take
    first and second, with the mean of their gradients (effective batch 2 x 16) and rank 0's BatchNorm
    statistics. Checked against that step computed in one process, itself first checked against a real
    one-process run's first step, to float rounding (gloo adds in another order)."""
    from ssmtl_core.checkpoint import load_checkpoint
    from ssmtl_core.train import train

    profile = _profile(NO_DROPOUT)
    data = tiny["data"]
    one = tiny["base"] / "run_one_step"
    train(data, profile, one, progress=False, log=_quiet, stop_after_steps=1)
    _same_step(load_checkpoint(one / "last.pt"), *_first_step_here(data, profile, 1))

    two = tiny["base"] / "run_two_step"
    _torchrun(tiny, two, tiny["base"] / "two_step", "--stop-after-steps", "1",
              *[f"--override={key}={json.dumps(value)}" for key, value in NO_DROPOUT.items()])
    state = load_checkpoint(two / "last.pt")
    assert (state["epoch"], state["step"], state["processes"]) == (0, 1, PROCS)
    _same_step(state, *_first_step_here(data, profile, PROCS))
    # and it is not the one-process step: the second rank's batch counts
    assert state["epoch_sums"] != pytest.approx(load_checkpoint(one / "last.pt")["epoch_sums"], rel=1e-3)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(worker(sys.argv[1:]))

"""Training on several processes: torchrun, gloo, 2 CPU processes on the tiny synthetic dataset.

The caches (motion detections, EfficientNet-Lite0 logits at 64 px) are filled once in this process; each
torchrun launch then only reads them. Three launches of 2 processes: the study's launcher
(``ssmtl_core.distributed.train_in_processes``: ``torchrun -m ssmtl_core train``) trains 2 epochs; this file,
run as the worker script, trains the same run with a stop in the middle of epoch 1, then resumes it. Each worker
rank records the objects of every batch it trained on (the test's own record, next to the run folder).

Run as ``torchrun --nproc_per_node 2 tests/test_distributed.py --root R --cache C --out O --record F``, this
file is that worker.
"""

from __future__ import annotations

import argparse
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


def _profile():
    from ssmtl_core.config import apply_overrides, get_profile

    return apply_overrides(get_profile("synthetic"), SETTINGS)


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
    args = parser.parse_args(argv)
    profile = _profile()
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
    assert main(["evaluate", "--run", str(out), "--device", "cpu"]) == 0
    metrics = read_json(out / "metrics.json")
    assert 0.0 <= metrics["micro_auc"] <= 1.0


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


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(worker(sys.argv[1:]))

"""Training on several processes: torchrun and DistributedDataParallel (``docs/method.md``, "Training").

``torchrun --nproc_per_node N -m ssmtl_core train ...`` starts N copies of ``ssmtl train``; each finds its place
(:func:`join`: rank, world size, local rank from torchrun's environment) and :func:`ssmtl_core.train.train`
then trains one model together with the others:

* **Process group**: gloo on a CPU, nccl on CUDA (rank ``r`` uses GPU ``LOCAL_RANK``). Outside torchrun
  (no ``WORLD_SIZE``) there is one process and nothing here does anything: the one-process path is the same
  code, with the same draws, as before this module existed.
* **Shards** (:func:`epoch_shard`): every rank draws the same global order of the epoch's training objects
  (``(seed, epoch)``); step ``s`` takes the next ``N x batch_size`` objects of that order and rank ``r`` the
  ``r``-th of their ``N`` equal parts, with the reversals and gaps of the global batch ``s N + r``. While the
  parts are whole, they are exactly the batches one process would train on, and the ranks' objects are
  disjoint. The last step of an epoch splits what is left evenly (objects fewer than ranks are left out of that
  epoch), so every rank takes the same number of steps. One step of N processes averages the gradients of
  ``N x batch_size`` objects: the effective batch is N times the per-process batch (the learning rate is kept).
* **Gradients** (:meth:`World.wrap`): DistributedDataParallel around the joint loss. A training step runs one
  backward per encoder pass (:func:`ssmtl_core.precision.training_step`); both passes synchronise (the first
  pass's encoder gradient is averaged, the second adds its own average), and ``find_unused_parameters`` lets
  each pass leave the other pass's heads alone. After each epoch the ranks compare a checksum of their weights
  (:meth:`World.check_in_sync`) and stop with an error should they ever differ.
* **BatchNorm**: plain, per-process BatchNorm, deliberately not SyncBatchNorm: each rank normalises its own
  batch of ``batch_size`` objects, which is the batch statistic of the paper's single-GPU training (64
  objects), and SyncBatchNorm does not run on a CPU (gloo) at all. The running statistics are rank 0's
  (DistributedDataParallel broadcasts the buffers before each forward, :meth:`World.sync_buffers` before
  validation), so every rank validates, and rank 0 saves, the same model.
* **Validation** (:meth:`World.deal`): the validation batches of one process, dealt round-robin; the loss
  sums are added over the ranks (:meth:`World.sum`), so the validation loss is the one-process one.
* **Files**: rank 0 alone writes checkpoints, history, ``run.json``, the summary and logs; the others train
  silently. A run resumes as in one process, at epoch ends with any number of processes, mid-epoch with the
  number it was interrupted with (a step of N processes covers N batches).
* **Data**: each process prepares its own :class:`~ssmtl_core.training_data.TrainingData` from the caches, rank
  0 first (:func:`main_first`: it fills the caches, the others only read them). Decoded frames of JPEG
  datasets are held in RAM once per process.

:func:`launch` runs the same training from Python (``./run_all.sh --procs N``, ``SSMTL_PROCS``): a notebook
kernel cannot be torchrun'd, so :func:`ssmtl_core.study_task.train_run` starts ``torchrun ... -m ssmtl_core
train`` as a child process with the notebook's whole profile and waits for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import pick_device
from .errors import SSMTLError
from .io import read_json

#: Seeds of different ranks' dropout draws are this far apart (rank 0 keeps the one-process seeds).
RANK_SEED_STRIDE = 1_000_000_007
#: The environment variable that asks the study's notebooks for N training processes.
PROCS_ENV = "SSMTL_PROCS"


def epoch_shard(order: np.ndarray, batch_size: int, size: int = 1, rank: int = 0) -> list[tuple[int, np.ndarray]]:
    """Rank ``rank``'s batches of one epoch, each with the number of the global batch whose draws it makes.

    Step ``s`` takes ``order[s N B : (s + 1) N B]`` (``N = size``, ``B = batch_size``) and this rank the
    ``rank``-th of its ``N`` near-equal contiguous parts. With one process, the batches of ``batch_size``
    objects in order, numbered 0, 1, 2, ...
    """
    step = batch_size * size
    shard = []
    for s, start in enumerate(range(0, len(order), step)):
        parts = np.array_split(order[start:start + step], size)
        if len(parts[-1]) == 0:  # fewer objects left than processes: left out of this epoch
            break
        shard.append((s * size + rank, parts[rank]))
    return shard


def epoch_steps(count: int, batch_size: int, size: int = 1) -> int:
    """Optimisation steps of an epoch of ``count`` objects (the length of every rank's :func:`epoch_shard`)."""
    full, rest = divmod(count, batch_size * size)
    return full + (rest >= size)


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one model (one process: the defaults).

    Attributes:
        rank: this process's number, 0 to ``size - 1``.
        size: the number of processes.
        local_rank: its number on this machine (its GPU).
        collective: where the tensors of collective operations live (``cpu`` for gloo, ``cuda:N`` for nccl).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    collective: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and logs."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The training device of ``train.device``: this rank's GPU on CUDA."""
        device = pick_device(name)
        if device.type == "cuda" and self.size > 1:
            device = torch.device("cuda", self.local_rank)
        return device

    def shard(self, order: np.ndarray, batch_size: int) -> list[tuple[int, np.ndarray]]:
        """This rank's training batches of an epoch (:func:`epoch_shard`)."""
        return epoch_shard(order, batch_size, self.size, self.rank)

    def steps(self, count: int, batch_size: int) -> int:
        """Optimisation steps of an epoch of ``count`` training objects."""
        return epoch_steps(count, batch_size, self.size)

    def deal(self, order: np.ndarray, batch_size: int) -> list[tuple[int, np.ndarray]]:
        """One process's batches of ``order`` (numbered), every ``size``-th one from this rank's (validation)."""
        return [(b, order[i:i + batch_size]) for b, i in enumerate(range(0, len(order), batch_size))
                if b % self.size == self.rank]

    def sum(self, values: Sequence[float]) -> list[float]:
        """``values`` added over the ranks (float64), the same list on every rank."""
        if self.size == 1:
            return list(values)
        total = torch.tensor(list(values), dtype=torch.float64, device=self.collective)
        dist.all_reduce(total)
        return total.tolist()

    def share(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=torch.device(self.collective))
        return box[0]

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's BatchNorm running statistics on every rank."""
        if self.size == 1:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)

    def check_in_sync(self, model: nn.Module) -> None:
        """Raise when the ranks' weights differ (they never should: every rank takes the same averaged steps)."""
        if self.size == 1:
            return
        with torch.no_grad():
            mine = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if low.item() != high.item():
            raise SSMTLError(f"the {self.size} training processes hold different weights (checksums {low.item()!r} "
                             f"to {high.item()!r}): a bug; rerun with one process and report it.")

    def wrap(self, model: nn.Module, losses: Callable) -> Callable | None:
        """The joint loss's forward through DistributedDataParallel (None with one process).

        Args:
            model: the network on this rank's device.
            losses: ``losses(model, batch, tasks) -> {task: loss}`` (:func:`ssmtl_core.losses.task_losses`).

        Returns:
            ``forward(batch, tasks) -> {task: loss}``, whose backward averages the gradients over the ranks.
        """
        if self.size == 1:
            return None
        return DistributedDataParallel(_Losses(model, losses), device_ids=None, find_unused_parameters=True)


class _Losses(nn.Module):
    """The joint loss as a module, so that DistributedDataParallel sees every forward of a training step."""

    def __init__(self, model: nn.Module, losses: Callable):
        super().__init__()
        self.model = model
        self.losses = losses

    def forward(self, batch, tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return self.losses(self.model, batch, tasks)


def join(device: str = "auto") -> World:
    """This process's :class:`World`; under torchrun, the process group is set up on the first call.

    Args:
        device: ``train.device``: CUDA means nccl (and this rank's GPU), anything else gloo.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = pick_device(device).type == "cuda"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    collective = f"cuda:{local_rank}" if dist.get_backend() == "nccl" else "cpu"
    return World(dist.get_rank(), dist.get_world_size(), local_rank, collective)


def leave() -> None:
    """End this process's part in the process group (nothing outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first(world: World, hours: float = 24.0):
    """Rank 0 runs the block first (filling the caches), then the other ranks (reading them).

    The others wait in a gloo group of its own with a long timeout: detection and teacher logits of a large
    dataset take far longer than the training collectives' timeout.
    """
    if world.size == 1:
        yield
        return
    waiting = dist.new_group(backend="gloo", timeout=dt.timedelta(hours=hours))
    if not world.main:
        dist.barrier(group=waiting)
    try:
        yield
    finally:
        if world.main:
            dist.barrier(group=waiting)


# -- launching from Python (the study's runner) -------------------------------------------------------------


def requested_processes() -> int:
    """The training processes asked for by ``SSMTL_PROCS`` (``./run_all.sh --procs N`` sets it); 1 if unset."""
    value = os.environ.get(PROCS_ENV, "").strip() or "1"
    try:
        procs = int(value)
    except ValueError:
        procs = 0
    if procs < 1:
        raise SSMTLError(f"{PROCS_ENV}={value!r} must be a whole number of training processes, at least 1.")
    return procs


def torchrun_command(procs: int, args: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m ssmtl_core ARGS`` (this interpreter:
    the same environment; ``--standalone`` picks a free port, so concurrent runs do not clash)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
            "-m", "ssmtl_core", *args]


def launch(procs: int, args: Sequence[str], log=print) -> None:
    """Run ``ssmtl ARGS`` as ``procs`` torchrun processes, passing their output to ``log`` line by line.

    Each process gets ``cores / procs`` threads (``OMP_NUM_THREADS``) unless the environment sets it.

    Raises:
        SSMTLError: the processes failed (with the last ``error:`` line they printed).
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // procs)))
    env.setdefault("TQDM_DISABLE", "1")  # progress bars do not survive a pipe
    env.pop(PROCS_ENV, None)
    command = torchrun_command(procs, args)
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as child:
        assert child.stdout is not None
        for line in child.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            log(line)
    if child.returncode != 0:
        errors = [line for line in lines if line.startswith("error:")]
        reason = errors[-1] if errors else (lines[-1] if lines else "no output")
        raise SSMTLError(f"training with {procs} processes failed (exit status {child.returncode}): {reason}")


def train_in_processes(profile, dataset_root: str | Path, cache_root: str | Path, out_dir: str | Path, procs: int,
                       log=print) -> dict:
    """Train ``profile`` into ``out_dir`` with ``procs`` torchrun processes; return the training summary.

    The whole profile travels as a settings file (``out_dir/launch_settings.yaml``), so the processes train
    exactly what a one-process call of :func:`ssmtl_core.train.train` with ``profile`` would.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings_file = out / "launch_settings.yaml"
    sections = {k: v for k, v in profile.to_dict().items() if k in ("detect", "sample", "train", "score")}
    settings_file.write_text(json.dumps(sections, indent=1, default=str) + "\n")  # JSON is YAML
    launch(procs, ["train", "--dataset", profile.name, "--root", str(dataset_root), "--cache", str(cache_root),
                   "--params", str(settings_file), "--out", str(out)], log=log)
    return read_json(out / "train_summary.json")

"""The precision training computes in, chosen at run time (``train.precision``; ``docs/method.md``, "Training").

* :class:`Precision` - the choice: a base precision (``fp32`` or ``bf16``) and the encoder passes kept in
  fp32 under a bf16 base; ``str()`` gives the form the reports record (``"bf16+fp32:mid"``).
* :func:`training_step` - one optimisation step on the joint loss, each encoder pass in its precision, stopped
  before a non-finite loss or gradient reaches the weights.
* :func:`choose_precision` - ``auto``, ``fp32`` or ``bf16`` (:data:`~ssmtl_core.config.PRECISIONS`) -> a
  :class:`Precision`: bf16 on CUDA; on a CPU with native bf16 a few timed steps of each, the faster kept and
  remembered; fp32 elsewhere. Whatever chose bf16, one bf16 step per pass first checks that its gradients are
  finite on this machine, and a pass whose are not runs in fp32 (:func:`checked_bf16`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import PRECISIONS, Profile
from .errors import SSMTLError
from .io import machine_info, read_json, stable_hash, write_json
from .losses import backward_groups, task_losses, weighted_total
from .model import SSMTLModel
from .samples import Batch


@dataclass(frozen=True)
class Precision:
    """What training computes in.

    Attributes:
        base: ``fp32`` or ``bf16`` (autocast; the weights and the losses stay float32).
        fp32_passes: under a bf16 base, the tasks whose encoder pass (:func:`~ssmtl_core.losses.backward_groups`)
            runs in fp32 all the same, because this machine's bf16 kernels give it non-finite gradients (PyTorch
            2.14's oneDNN bf16 Conv3d weight gradient with 32 channels at 64x64 over 6 frames, the middle-box
            pass of deep_wide, is NaN on AMX CPUs).
    """

    base: str = "fp32"
    fp32_passes: tuple[str, ...] = ()

    def __str__(self) -> str:
        """``fp32``, ``bf16`` or ``bf16+fp32:mid``: the form run.json, summaries and checkpoints record."""
        return f"{self.base}+fp32:{','.join(self.fp32_passes)}" if self.fp32_passes else self.base

    @classmethod
    def parse(cls, text: str) -> Precision:
        """Read back the recorded form of :meth:`__str__` (the choices remembered in ``precision.json``)."""
        base, _, kept = str(text).partition("+fp32:")
        if base not in ("fp32", "bf16"):
            raise SSMTLError(f"unknown training precision {text!r}: expected fp32, bf16 or bf16+fp32:TASKS.")
        return cls(base, tuple(t for t in kept.split(",") if t))

    def of_pass(self, group: tuple[str, ...]) -> str:
        """The precision of the encoder pass computing the tasks ``group``."""
        return "fp32" if set(group) & set(self.fp32_passes) else self.base

    def autocast(self, device: torch.device, group: tuple[str, ...] = ()):
        """The autocast context of the pass ``group``: bf16 on CUDA or a CPU, nothing for fp32."""
        if self.of_pass(group) == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


FP32 = Precision("fp32")
BF16 = Precision("bf16")


# -- one step ------------------------------------------------------------------------------------


def training_step(model: SSMTLModel, optimizer: torch.optim.Optimizer, batch: Batch, tasks: tuple[str, ...],
                  kd_targets, kd_weight: float, device: torch.device, precision: Precision = FP32,
                  forward=None) -> dict[str, torch.Tensor]:
    """One optimisation step on the joint loss; returns the detached losses.

    One backward per encoder pass (:func:`~ssmtl_core.losses.backward_groups`), each in its precision: the
    gradients add up to those of the summed loss, but the first pass's activations are freed before the
    middle-box pass runs (deep_wide at batch 64: peak RSS 6.1 -> 4.6 GB on a CPU). ``forward(batch, tasks)``,
    when given, computes the losses instead of :func:`~ssmtl_core.losses.task_losses` (the
    DistributedDataParallel one of :meth:`ssmtl_core.distributed.World.wrap`).
    """
    optimizer.zero_grad(set_to_none=True)
    losses: dict[str, torch.Tensor] = {}
    for group in backward_groups(tasks):
        with precision.autocast(device, group):
            part = forward(batch, group) if forward else task_losses(model, batch, group, kd_targets, device)
            part_loss = weighted_total(part, kd_weight)
        part_loss.backward()
        losses.update({task: value.detach() for task, value in part.items()})
        _refuse_non_finite(model, group, part, precision)
    optimizer.step()
    return losses


def _refuse_non_finite(model: torch.nn.Module, group: tuple[str, ...], losses: dict[str, torch.Tensor],
                       precision: Precision) -> None:
    """Stop before a non-finite loss or gradient reaches the weights (a NaN weight ruins every later step and
    the checkpoints written after it)."""
    if all_finite([*losses.values(), *(p.grad for p in model.parameters() if p.grad is not None)]):
        return
    raise SSMTLError(
        f"training diverged: the {'+'.join(group)} pass gave a non-finite loss or gradient (precision "
        f"{precision}); the weights were left as they were before this step and the checkpoints on disk are "
        "intact. Rerun with --precision fp32 (train.precision, PRECISION) or a lower --lr (train.lr, LR).")


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every value of every tensor is finite, read back once (one device sync per step, not one per
    parameter)."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


# -- the choice ----------------------------------------------------------------------------------


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    return bool({"avx512_bf16", "amx_bf16"} & set(machine_info().get("cpu_flags", [])))


def choose_precision(model: SSMTLModel, batch: Batch, profile: Profile, kd_targets, device: torch.device,
                     trials: int = 3, memory: Path | None = None) -> tuple[Precision, dict]:
    """The precision training runs in, and why (``train.precision``; ``docs/method.md``, "Training").

    ``auto``: bf16 on CUDA; on a CPU with native bf16, ``trials`` timed steps of each of fp32 and bf16 on a
    throw-away copy of the model (after one warm-up step each), keeping the faster; fp32 on other CPUs, where
    bf16 is emulated. The copy keeps the real run's weights and random draws untouched. A timed choice is
    remembered in ``memory`` (a JSON file, per CPU, model and batch shape), so later runs on the same machine
    make the same choice instead of a new one that the load of the moment could tip.

    Whatever chose bf16 (``auto`` or ``bf16`` asked for), :func:`checked_bf16` first checks that every encoder
    pass gives finite bf16 gradients; a pass that does not runs in fp32, and if none does, the run is fp32. A
    bf16 kernel bug then costs speed, not the run (a NaN weight after the first step would otherwise end it).

    Returns:
        ``(precision, info)``: the choice, and why (with the seconds per step of each timed candidate).
    """
    cfg = profile.train
    if cfg.precision not in PRECISIONS:
        raise SSMTLError(f"train.precision must be one of {', '.join(PRECISIONS)}, not {cfg.precision!r}.")
    if cfg.precision == "fp32":
        return FP32, {"reason": "asked for"}
    if cfg.precision == "bf16":
        return _finite_bf16(model, batch, profile, kd_targets, device, {"reason": "asked for"})
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            return FP32, {"reason": "CUDA"}
        return _finite_bf16(model, batch, profile, kd_targets, device, {"reason": "CUDA"})
    if not native_bf16():
        return FP32, {"reason": "this CPU has no native bf16 (no AVX512-BF16 or AMX)"}
    # "finite-check" in the key: choices remembered before the gradient check existed are made again.
    key = stable_hash([machine_info().get("cpu"), model.config(), cfg.tasks, cfg.batch_size, torch.__version__,
                       "finite-check"], 16)
    remembered = _remembered(memory).get(key)
    if remembered:
        return (Precision.parse(remembered["precision"]),
                {**remembered, "reason": f"timed earlier on this machine ({memory})"})
    bf16, checked = _finite_bf16(model, batch, profile, kd_targets, device, {})
    if bf16 == FP32:
        return FP32, {**checked, "reason": "bf16 gives non-finite gradients on this machine"}
    seconds = {}
    state = torch.random.get_rng_state()
    for precision in (FP32, bf16):
        trial = copy.deepcopy(model).train()
        optimizer = torch.optim.Adam(trial.parameters(), lr=cfg.lr)
        for step in range(trials + 1):
            if step == 1:
                start = time.perf_counter()
            training_step(trial, optimizer, batch, cfg.tasks, kd_targets, cfg.kd_weight, device, precision)
        seconds[precision] = round((time.perf_counter() - start) / trials, 4)
    torch.random.set_rng_state(state)
    choice = min(seconds, key=seconds.get)
    record = {"precision": str(choice), "seconds_per_step": {str(p): s for p, s in seconds.items()}, **checked}
    if memory is not None:
        with contextlib.suppress(OSError):  # a read-only cache only loses the memory
            write_json(memory, {**_remembered(memory), key: record})
    return choice, {**record, "reason": "timed"}


def _finite_bf16(model: SSMTLModel, batch: Batch, profile: Profile, kd_targets, device: torch.device,
                 info: dict) -> tuple[Precision, dict]:
    """:func:`checked_bf16` with the profile's tasks, and why."""
    cfg = profile.train
    precision, unsafe = checked_bf16(model, batch, cfg.tasks, kd_targets, cfg.kd_weight, device)
    return precision, ({**info, "non_finite_bf16_gradients": unsafe} if unsafe else info)


def checked_bf16(model: SSMTLModel, batch: Batch, tasks: tuple[str, ...], kd_targets, kd_weight: float,
                 device: torch.device) -> tuple[Precision, list[str]]:
    """bf16 for the encoder passes whose bf16 gradients are finite on this machine, fp32 for the others.

    One bf16 forward and backward of each pass on a throw-away copy of ``model`` (the random state restored).

    Returns:
        ``(precision, tasks)``: bf16, bf16 with the failing passes in fp32, or fp32 (no pass is finite); and the
        tasks of the passes with non-finite bf16 gradients.
    """
    state = torch.random.get_rng_state()
    groups = backward_groups(tasks)
    unsafe = []
    for group in groups:
        trial = copy.deepcopy(model).train()
        with BF16.autocast(device):
            loss = weighted_total(task_losses(trial, batch, group, kd_targets, device), kd_weight)
        loss.backward()
        if not all_finite([p.grad for p in trial.parameters() if p.grad is not None]):
            unsafe.append(group)
    torch.random.set_rng_state(state)
    names = sorted(task for group in unsafe for task in group)
    if not unsafe:
        return BF16, names
    return (FP32 if len(unsafe) == len(groups) else Precision("bf16", tuple(names))), names


def _remembered(memory: Path | None) -> dict:
    with contextlib.suppress(Exception):
        return read_json(memory) if memory is not None and memory.is_file() else {}
    return {}

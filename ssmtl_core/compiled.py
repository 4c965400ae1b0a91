"""Training's compiled path: each encoder pass as one ``torch.compile`` graph, compiled once per machine (``train.compile``; ``docs/method.md``, "Training").

Eager PyTorch runs a training step as hundreds of kernels, and on a CPU most of its time goes around the
convolutions, not in them: BatchNorm, ReLU and pooling forward and backward, dtype casts and fills, each a
pass over memory. Inductor (``torch.compile``'s compiler) fuses them into a few loops per pass; the
convolutions stay oneDNN's. The maths is the same: the same losses up to float rounding (a test compares
them), the same pooling gradients (:class:`~ssmtl_core.model.MaxPool2x2`).

* :class:`CompiledLosses` - the losses of one pass (:func:`~ssmtl_core.losses.pass_losses`) through a compiled
  graph, for full batches in training mode; any other batch (the smaller last one of an epoch) runs eager, so
  a run compiles two graphs (the sequence pass, 7 frames, and the middle-box pass, 6 frames), not four.
  Validation runs eager (BatchNorm in eval mode, no backward: a few percent of an epoch).
* :func:`graph_cache` - where the compiled graphs are kept: inductor's FX graph cache and AOTAutograd cache in
  ``<cache>/compiled/<torch, CPU, compiler>``, so that a later run on the same machine loads them (seconds)
  instead of compiling (a minute or more per pass on 2 cores).
* :func:`choose_compile` - ``auto``, ``on`` or ``off`` (:data:`~ssmtl_core.config.COMPILES`) -> the compiled
  losses or None, and why. ``auto`` compiles on a CPU where inductor can build (a C++ compiler and Python's
  headers), for a run long enough to pay for a cold compile, if compiled steps time faster than eager ones;
  the timing is remembered per machine and model as the precision's is.

Reproducibility: the compiled graphs draw their dropout masks from PyTorch's generator as eager steps do
(inductor's ``fallback_random``), so on a CPU the same seed gives the same losses, and the compiled path's
losses are the eager path's up to float rounding (a test checks both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from .config import COMPILES, Profile
from .errors import SSMTLError
from .io import machine_info, read_json, stable_hash, write_json
from .losses import (
    DistillationTargets,
    backward_groups,
    loss_inputs,
    pass_losses,
    task_losses,
    weighted_total,
)
from .model import SSMTLModel
from .precision import FP32, Precision, all_finite, training_step
from .samples import Batch

#: ``auto`` compiles a run whose eager steps would take at least this long (or its time budget, whose clock
#: starts after the compile): the first time on a machine a cold compile (both passes of a preset, 1-4 minutes
#: on 2 cores) then costs about what the compiled steps save, and every later run loads the graphs ...
PAYS_AFTER_SECONDS = 180.0
#: ... in seconds: with graphs compiled here before (the remembered timing says so), this long suffices.
PAYS_AFTER_SECONDS_WARM = 60.0
#: More than any eager step takes on 2 cores (deep_wide at 64x64, batch 64, fp32: 11.5 s): a run of fewer
#: than ``PAYS_AFTER_SECONDS_WARM / SLOWEST_STEP_SECONDS`` steps is short without timing one.
SLOWEST_STEP_SECONDS = 30.0
#: Largest relative difference of a task's loss, compiled against eager fp32 on the same batch, that passes
#: the check (the bf16 tolerance of the training tests; dropout masks differ between the two paths).
LOSS_TOLERANCE = 0.10


class CompiledLosses:
    """``forward(batch, tasks) -> {task: loss}`` through compiled graphs, for :func:`~ssmtl_core.precision.training_step`.

    Args:
        model: the network (its parameters are the graphs' inputs, so the optimiser's updates are seen).
        kd_targets: the distillation targets (weighted or not, one kind per run: one graph per pass).
        device: where the model is.
        batch_size: the batch the graphs are compiled for; other batches run eager.
    """

    def __init__(self, model: SSMTLModel, kd_targets: DistillationTargets | None, device: torch.device,
                 batch_size: int):
        self.model, self.kd_targets, self.device, self.batch_size = model, kd_targets, device, batch_size
        self.graphs: dict[tuple[str, ...], object] = {}
        self.eager_steps = 0

    def __call__(self, batch: Batch, tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
        if len(batch.index) != self.batch_size or not self.model.training:
            self.eager_steps += 1
            return task_losses(self.model, batch, tasks, self.kd_targets, self.device)
        if tasks not in self.graphs:
            # dynamic=False: one static graph per pass; the parameters are inputs, not constants.
            self.graphs[tasks] = torch.compile(_pass_losses, dynamic=False)
        inputs = loss_inputs(batch, tasks, self.kd_targets, self.device, always_weighted=True)
        return self.graphs[tasks](self.model, inputs, tasks)


def _pass_losses(model: SSMTLModel, inputs: dict, tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return pass_losses(model, inputs, tasks)


# -- where the graphs are kept -------------------------------------------------------------------


def cache_folder(cache_root: str | Path) -> Path:
    """``<cache_root>/compiled/<key>``: graphs compiled by this torch for this CPU with this compiler.

    Inductor keys every graph by its code, its inputs, its settings and the torch version already; the folder's
    key keeps what one machine and one torch made apart from another's, so a copied cache or an upgraded
    torch starts a fresh folder instead of mixing (and an old one can be deleted whole).
    """
    machine = machine_info()
    key = stable_hash([torch.__version__, machine.get("cpu"), machine.get("cpu_flags"), _compiler_version()], 10)
    return Path(cache_root) / "compiled" / f"torch{torch.__version__.split('+')[0]}-{key}"


@contextlib.contextmanager
def graph_cache(cache_root: str | Path | None):
    """Inductor's settings for training, for the duration (restored afterwards): its on-disk caches (FX graphs,
    AOTAutograd) in :func:`cache_folder` (without a cache root, inductor's own default folder), and dropout
    drawn by PyTorch's own generator (``fallback_random``), so that compiled and eager steps draw the same
    masks from the same seed."""
    import torch._inductor.config as inductor  # torch's compiler, imported where compiling starts

    folder = cache_folder(cache_root) if cache_root is not None else None
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    try:
        with inductor.patch(fallback_random=True):
            yield folder
    finally:
        if folder is not None and previous is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        elif folder is not None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def _compiler_version() -> str:
    compiler = _cxx()
    if compiler is None:
        return "none"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=10
                              ).stdout.splitlines()[0]
    return compiler


def _cxx() -> str | None:
    return next((found for name in (os.environ.get("CXX"), "g++", "c++", "clang++") if name
                 for found in [shutil.which(name)] if found), None)


def compile_unavailable(device: torch.device) -> str | None:
    """Why inductor cannot compile training on ``device`` here, or None when it can.

    On a CPU it builds C++ kernels as Python extensions: a C++ compiler and Python's headers must be present.
    """
    if device.type == "cpu":
        if _cxx() is None:
            return "no C++ compiler (g++, c++ or clang++; or $CXX) for inductor's CPU kernels"
        if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
            return "Python's C headers (Python.h) are missing: inductor builds its CPU kernels against them"
    return None


# -- the choice ----------------------------------------------------------------------------------


def choose_compile(model: SSMTLModel, batch: Batch, profile: Profile, kd_targets, device: torch.device,
                   precision: Precision = FP32, planned_steps: int = 0, processes: int = 1,
                   eager_seconds: float | None = None, memory: Path | None = None, trials: int = 2,
                   log=print) -> tuple[CompiledLosses | None, dict]:
    """Whether training runs compiled, and why (``train.compile``; ``docs/method.md``, "Training").

    ``off``: eager. ``on``: compiled, after a check on ``batch``: the compiled step's gradients are finite and
    its losses within :data:`LOSS_TOLERANCE` of eager fp32's (else eager, and the info says why). ``auto``:
    as ``on`` on a CPU where inductor builds, with one process, for a run of ``planned_steps`` whose eager
    steps (or its time budget) would take :data:`PAYS_AFTER_SECONDS` or more (:data:`PAYS_AFTER_SECONDS_WARM`
    where its graphs were compiled here before), if ``trials`` compiled steps time faster than eager ones
    (interleaved, after the first of each); the outcome is remembered in ``memory`` per CPU, model, batch,
    precision and torch, as :func:`~ssmtl_core.precision.choose_precision` remembers its own, and a later run
    loads the compiled graphs from :func:`graph_cache` instead of timing again.

    The checks and timings run on ``model`` itself and put back its weights, buffers and random state: its
    graphs are then compiled for the run.

    Args:
        eager_seconds: the seconds of one eager step in ``precision``, if timed already (the precision choice).

    Returns:
        ``(losses, info)``: the compiled losses (None: eager) and why, with the seconds of the first compiled
        step (the compile, cold or from the cache), the check's losses and any timing.
    """
    cfg = profile.train
    mode = getattr(cfg, "compile", "auto")
    if mode not in COMPILES:
        raise SSMTLError(f"train.compile must be one of {', '.join(COMPILES)}, not {mode!r}.")
    if mode == "off":
        return None, {"compiled": False, "reason": "asked for"}
    unavailable = compile_unavailable(device)
    if processes > 1:
        unavailable = "several processes (DistributedDataParallel runs eager)"
    elif mode == "auto" and device.type != "cpu":
        unavailable = f"auto compiles on CPUs only (train.compile=on compiles on {device.type} too, unmeasured)"
    if unavailable:
        if mode == "on":
            raise SSMTLError(f"train.compile=on, but {unavailable}. Use --compile auto or off.")
        return None, {"compiled": False, "reason": unavailable}
    compiled = CompiledLosses(model, kd_targets, device, cfg.batch_size)
    if mode == "on":
        return _checked(compiled, model, batch, profile, kd_targets, device, precision, {"reason": "asked for"}, log)
    if planned_steps * SLOWEST_STEP_SECONDS < PAYS_AFTER_SECONDS_WARM:  # short whatever its steps cost
        return None, {"compiled": False, "reason": f"a short run ({planned_steps} steps): compiling would cost more "
                                                   "than it saves"}
    key = stable_hash([machine_info().get("cpu"), model.config(), cfg.tasks, cfg.batch_size, str(precision),
                       torch.__version__, "compile"], 16)
    remembered = _remembered(memory).get(key)
    if eager_seconds is None:
        eager_seconds = _time_steps(model, batch, profile, kd_targets, device, precision, None, 1)
    planned = planned_steps * eager_seconds
    if cfg.budget_minutes:
        planned = min(planned, cfg.budget_minutes * 60)
    pays_after = PAYS_AFTER_SECONDS_WARM if remembered and remembered.get("compiled") else PAYS_AFTER_SECONDS
    if planned < pays_after:
        return None, {"compiled": False, "eager_seconds_per_step": round(eager_seconds, 4),
                      "reason": f"a short run (about {planned:.0f} s of eager steps): compiling would cost more "
                                "than it saves"}
    if remembered is not None and not remembered.get("compiled"):
        return None, {**remembered, "reason": f"timed earlier on this machine ({memory}): eager was faster"}
    compiled_losses, info = _checked(compiled, model, batch, profile, kd_targets, device, precision, {}, log)
    if compiled_losses is None:
        return None, info
    if remembered is not None:
        return compiled_losses, {**remembered, **info, "reason": f"timed earlier on this machine ({memory})"}
    seconds = {"eager": [], "compiled": []}
    for _ in range(trials):
        seconds["eager"].append(_time_steps(model, batch, profile, kd_targets, device, precision, None, 0))
        seconds["compiled"].append(_time_steps(model, batch, profile, kd_targets, device, precision, compiled, 0))
    per_step = {path: round(float(np.median(values)), 4) for path, values in seconds.items()}
    record = {"compiled": per_step["compiled"] < per_step["eager"], "seconds_per_step": per_step}
    if memory is not None:
        with contextlib.suppress(OSError):  # a read-only cache only loses the memory
            write_json(memory, {**_remembered(memory), key: record})
    return (compiled_losses if record["compiled"] else None), {**info, **record, "reason": "timed"}


def _checked(compiled: CompiledLosses, model: SSMTLModel, batch: Batch, profile: Profile, kd_targets,
             device: torch.device, precision: Precision, info: dict, log) -> tuple[CompiledLosses | None, dict]:
    """One compiled step on ``batch`` (compiling its graphs), checked: finite gradients, and every task's loss
    within :data:`LOSS_TOLERANCE` of eager fp32's on the same batch."""
    cfg = profile.train
    with _restored(model):
        reference = {task: value.item() for task, value in _losses(model, batch, cfg.tasks, kd_targets, device,
                                                                   FP32, None).items()}
    log("compiling the training passes (cold: minutes; from the cache of an earlier run: seconds) ...")
    start = time.perf_counter()
    with _restored(model):
        try:
            losses = _losses(model, batch, cfg.tasks, kd_targets, device, precision, compiled, backward=True)
            finite = all_finite([*losses.values(), *(p.grad for p in model.parameters() if p.grad is not None)])
        except Exception as exc:  # an inductor failure must cost the speed, not the run
            if profile.train.compile == "on":
                raise SSMTLError(f"train.compile=on, but compiling failed ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}). Use --compile off.") from exc
            return None, {**info, "compiled": False, "reason": f"compiling failed ({type(exc).__name__})"}
    first = time.perf_counter() - start
    values = {task: value.item() for task, value in losses.items()}
    info = {**info, "compiled": True, "first_step_seconds": round(first, 1),
            "check_losses": {"eager_fp32": _rounded(reference), "compiled": _rounded(values)}}
    far = [task for task in reference if not abs(values[task] - reference[task]) <= LOSS_TOLERANCE * abs(reference[task])]
    if not finite or far:
        why = "non-finite gradients" if not finite else f"losses of {', '.join(far)} off eager fp32's by over 10%"
        return None, {**info, "compiled": False, "reason": f"the compiled step gave {why}"}
    return compiled, info


def _losses(model: SSMTLModel, batch: Batch, tasks: tuple[str, ...], kd_targets, device: torch.device,
            precision: Precision, compiled: CompiledLosses | None, backward: bool = False) -> dict[str, torch.Tensor]:
    """The losses of every pass on ``batch`` in ``precision`` (and their gradients with ``backward``)."""
    model.train()
    out: dict[str, torch.Tensor] = {}
    for group in backward_groups(tasks):
        with torch.set_grad_enabled(backward), precision.autocast(device, group):
            part = compiled(batch, group) if compiled else task_losses(model, batch, group, kd_targets, device)
        if backward:
            weighted_total(part, 1.0).backward()
        out.update({task: value.detach() for task, value in part.items()})
    return out


def _time_steps(model: SSMTLModel, batch: Batch, profile: Profile, kd_targets, device: torch.device,
                precision: Precision, compiled: CompiledLosses | None, warmup: int) -> float:
    """Seconds of one training step (after ``warmup`` untimed ones) on ``model``, its state put back."""
    cfg = profile.train
    with _restored(model):
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for _ in range(warmup):
            training_step(model, optimizer, batch, cfg.tasks, kd_targets, cfg.kd_weight, device, precision, compiled)
        start = time.perf_counter()
        training_step(model, optimizer, batch, cfg.tasks, kd_targets, cfg.kd_weight, device, precision, compiled)
        return time.perf_counter() - start


@contextlib.contextmanager
def _restored(model: SSMTLModel):
    """Put back the model's weights, buffers (BatchNorm's running statistics), gradients and the random state."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    try:
        yield
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        torch.random.set_rng_state(rng)


def _rounded(losses: dict[str, float]) -> dict[str, float]:
    return {task: round(value, 5) for task, value in losses.items()}


def _remembered(memory: Path | None) -> dict:
    with contextlib.suppress(Exception):
        return read_json(memory) if memory is not None and memory.is_file() else {}
    return {}

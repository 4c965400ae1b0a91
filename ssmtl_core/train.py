"""The training loop: joint training of the four proxy tasks (paper Sec. 3.2-3.3; ``docs/method.md``, "Training").

The joint loss ``L = L_aot + L_irr + L_mid + lambda * L_kd`` is :mod:`ssmtl_core.losses`; one optimisation step
on it, and the precision it runs in, are :mod:`ssmtl_core.precision`. Here: Adam, lr 1e-3, batch 64; per
video, the first 85% of the samples (in time) train and the last 15% validate; the checkpoint with the lowest
validation loss is kept, with the validation objects' scores that calibrate it
(:func:`ssmtl_core.runs.store_validation_scores`). Any subset of the tasks can be trained (the paper's
ablation).

The caller prepares the data (:func:`ssmtl_core.training_data.prepare_training_data`) and hands it to
:func:`train`, which knows nothing of detectors or teachers; of the cache folder it uses one file, where the
timed precision choice is remembered (``precision.json``). Runs resume: ``last.pt``
is written every few minutes, at the end of each epoch and on Ctrl-C; every batch draws its order,
reversals and gaps from ``(seed, epoch, batch)``, so an interrupted run that resumes makes exactly the draws
an uninterrupted one would. On a CPU, in fp32, the same seed gives the same losses.

Under torchrun the same :func:`train` runs in every process and trains one model with DistributedDataParallel:
each rank takes its own part of every step's objects, rank 0 alone writes files and logs, and BatchNorm stays
per process (:mod:`ssmtl_core.distributed` says how and why). With one process it does what it always did.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .compiled import choose_compile, graph_cache
from .config import Profile, profile_from_dict
from .distributed import RANK_SEED_STRIDE, World, join
from .errors import SSMTLError
from .io import Claim, atomic_path, code_provenance, package_versions, read_json, stable_hash, write_json
from .losses import DistillationTargets, backward_groups, task_losses, weighted_total
from .model import SSMTLModel
from .precision import FP32, Precision, choose_precision, training_step
from .runs import store_validation_scores
from .samples import Batch, SequenceSampler, prefetch
from .schedule import lr_factor, planned_epochs
from .training_data import TrainingData

VAL_EPOCH = 999_983  # the "epoch" whose draws validation uses, the same at every epoch


# -- draws ---------------------------------------------------------------------------------------


def batch_rng(seed: int, epoch: int, batch: int) -> np.random.Generator:
    """The generator of one batch's reversals and gaps: a function of (seed, epoch, batch) alone."""
    return np.random.default_rng([seed, epoch, batch])


def epoch_order(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    """The shuffled order of the training objects in one epoch."""
    return np.random.default_rng([seed, epoch, 1 << 20]).permutation(index)


def epoch_batches(sampler: SequenceSampler, order: np.ndarray, batch_size: int, seed: int, epoch: int,
                  start: int = 0, world: World = World()) -> Iterator[Batch]:
    """Batches ``start..`` of an epoch (this rank's, :func:`ssmtl_core.distributed.epoch_shard`), prepared one
    ahead in a background thread."""
    return _prepared(sampler, world.shard(order, batch_size)[start:], seed, epoch)


def _prepared(sampler: SequenceSampler, chunks: list[tuple[int, np.ndarray]], seed: int, epoch: int
              ) -> Iterator[Batch]:
    """The batches of numbered chunks of objects, each drawn from ``(seed, epoch, number)``, prepared ahead."""
    return prefetch((sampler.make_batch(chunk, batch_rng(seed, epoch, b)) for b, chunk in chunks), 2)


def validation_losses(model: SSMTLModel, sampler: SequenceSampler, index: np.ndarray, profile: Profile,
                      kd_targets, device: torch.device, precision: Precision = FP32, world: World = World()
                      ) -> dict[str, float]:
    """Mean validation losses; the draws are fixed (seed, VAL_EPOCH, b) so epochs compare on equal terms.
    Several processes share the batches and add up their sums (the same losses, up to rounding)."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    with torch.no_grad():
        for batch in _prepared(sampler, world.deal(np.sort(index), profile.train.batch_size), profile.train.seed,
                               VAL_EPOCH):
            losses = {}
            for group in backward_groups(profile.train.tasks):  # each pass in the precision it trains in
                with precision.autocast(device, group):
                    losses.update(task_losses(model, batch, group, kd_targets, device))
            n = len(batch.index)
            for task, value in losses.items():
                sums[task] = sums.get(task, 0.0) + value.item() * n
            count += n
    model.train()
    if world.size > 1:
        tasks = list(profile.train.tasks)
        *totals, count = world.sum([sums.get(task, 0.0) for task in tasks] + [count])
        sums = dict(zip(tasks, totals))
    means = {task: value / max(count, 1) for task, value in sums.items()}
    means["total"] = weighted_total(means, profile.train.kd_weight)
    return means


@contextlib.contextmanager
def thread_settings(num_threads: int):
    """Torch's and OpenCV's thread counts for the duration of training, restored afterwards (a notebook
    kernel keeps its own settings). OpenCV gets one thread: crops run in the sampler's own two threads."""
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        if num_threads:
            torch.set_num_threads(num_threads)
        cv2.setNumThreads(1)
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)


# -- the loop ------------------------------------------------------------------------------------


def resume_key(settings: dict) -> str:
    """What must match for a run to resume: everything but the epoch count and where and how fast it runs.

    The stored profile is read back through :func:`~ssmtl_core.config.profile_from_dict` first, so that a setting
    added to the code since the run started counts with its default (a run made before ``score.pipeline``
    existed resumes under the code that has it) rather than as a difference.
    """
    settings = copy.deepcopy(settings)
    settings.get("profile", {}).get("train", {}).pop("amp", None)  # a setting of older releases, gone since
    if settings.get("profile"):
        with contextlib.suppress(SSMTLError):  # a setting the code no longer knows: compared as stored
            settings["profile"] = profile_from_dict(settings["profile"]).to_dict()
        for section, names in RUNTIME_SETTINGS.items():
            for name in names:
                settings["profile"].get(section, {}).pop(name, None)
    return stable_hash(settings, 16)


#: Settings of how a run executes that change none of its numbers: a run resumes whatever they are.
RUNTIME_SETTINGS = {"train": ("epochs", "device", "num_threads", "precision", "compile", "budget_minutes"),
                    "score": ("pipeline",)}


@dataclass
class _RunState:
    """What changes as a run goes: where it is, its history and the best validation loss so far."""

    epoch: int = 0
    step: int = 0
    history: list | None = None
    best: float = float("inf")
    epoch_sums: dict | None = None
    epoch_seen: int = 0
    seconds: float = 0.0  # training time of the whole run so far, resumed sessions included
    finished: bool = False  # the time budget ended the run before cfg.epochs
    planned: int | None = None  # the epochs the learning-rate schedule plans for (ssmtl_core.schedule)


def _resume(out: Path, model: SSMTLModel, optimizer, settings: dict, device: torch.device, world: World
            ) -> _RunState:
    """The state of ``out/last.pt`` loaded into ``model`` and ``optimizer``, or a fresh state."""
    last = out / "last.pt"
    if not last.is_file():
        return _RunState(history=[])
    state = load_checkpoint(last, device)
    if resume_key(state.get("settings", {})) != resume_key(settings):
        raise SSMTLError(f"{out} holds a run with other settings (see {out / 'run.json'}). Use another --out, "
                         "or delete the folder to start over.")
    processes = int(state.get("processes", 1))
    if state["step"] and processes != world.size:  # a step of N processes covers N batches
        raise SSMTLError(f"{out} was interrupted mid-epoch while training with {processes} process(es); resume it "
                         f"with {processes} (torchrun --nproc_per_node {processes}, or --procs {processes}), not "
                         f"{world.size}.")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return _RunState(state["epoch"], state["step"], list(state.get("history", [])),
                     state.get("best_val_loss", float("inf")), dict(state.get("epoch_sums", {})),
                     int(state.get("epoch_seen", 0)), float(state.get("train_seconds", 0.0)),
                     bool(state.get("budget_finished", False)), state.get("planned_epochs"))


def train(data: TrainingData, profile: Profile, out_dir: str | Path, progress: bool = True, log=print,
          checkpoint_minutes: float = 5.0, stop_after_steps: int | None = None) -> dict:
    """Train (or resume training) the SSMTL model of ``profile`` on prepared data; return a summary.

    Writes ``best.pt`` (lowest validation loss, with the validation scores that calibrate it), ``last.pt``
    (resume point), ``history.csv`` / ``history.json`` (per-epoch losses of every task, train and
    validation), ``run.json`` and ``train_summary.json`` into ``out_dir``.

    Args:
        data: from :func:`ssmtl_core.training_data.prepare_training_data`.
        profile: settings (``profile.train`` above all).
        out_dir: the run folder.
        progress: progress bars.
        log: where messages go.
        checkpoint_minutes: wall time between mid-epoch resume points.
        stop_after_steps: stop (as if interrupted) after this many optimisation steps; for tests.

    Under torchrun (:mod:`ssmtl_core.distributed`) every process calls this with the same arguments; rank 0
    writes the files and logs, and every rank returns the summary.

    Raises:
        SSMTLError: another process is training into ``out_dir`` right now (it holds the folder's claim,
            :class:`~ssmtl_core.io.Claim`), or the run there has other settings.
    """
    cfg = profile.train
    out = Path(out_dir)
    world = join(cfg.device)
    device = world.device(cfg.device)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    else:  # the other ranks train silently
        progress, log = False, _silent
    if len(data.train_index) == 0:
        raise SSMTLError("no training samples after the 85/15 split; use more videos or a smaller frame stride.")
    # One writer per run folder: two runs on one --out would both run to the end, each overwriting the other's
    # checkpoints and history. The claim dies with its process (kill -9 included), so none is ever stale.
    claim = Claim(out / "train") if world.main else None
    if claim is not None and not claim.acquire():
        raise SSMTLError(f"{out} is being trained right now by {claim.holder()}: two runs in one folder would "
                         "overwrite each other's checkpoints and history. Wait for that run to end (or stop it; "
                         "a rerun resumes it), or pass another --out.")
    try:
        with thread_settings(cfg.num_threads), graph_cache(data.cache_root):
            return _train(data, profile, out, device, progress, log, checkpoint_minutes, stop_after_steps, world)
    finally:
        if claim is not None:
            claim.release()


def _silent(*_args, **_kwargs) -> None:
    pass


def _train(data: TrainingData, profile: Profile, out: Path, device: torch.device, progress: bool, log,
           checkpoint_minutes: float, stop_after_steps: int | None, world: World) -> dict:
    cfg = profile.train
    sampler = SequenceSampler(data.frames, data.objects, profile.sample, cfg.tasks, seed=cfg.seed)
    kd_targets = DistillationTargets.from_data(data, cfg.kd_balance)
    torch.manual_seed(cfg.seed)
    model = SSMTLModel(cfg.arch, data.kd_dim, cfg.dropout, profile.sample.crop_size,
                       data.kd_probabilities).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    settings = {"profile": profile.to_dict(), "caches": data.caches}
    run = _resume(out, model, optimizer, settings, device, world)
    if (run.epoch >= cfg.epochs or run.finished) and (out / "train_summary.json").is_file():
        log(f"{out} is already trained ({run.epoch} epochs); nothing to do (raise --epochs to train on).")
        summary = read_json(out / "train_summary.json")
        trained_by = summary.get("code") or {}
        if trained_by.get("source_digest") != code_provenance()["source_digest"]:
            log(f"note: its model was trained by other code (commit {trained_by.get('commit') or 'unknown'}); its "
                "summary says so. Delete the folder to train it with this code.")
        return summary
    if run.epoch or run.step:
        log(f"resuming {out} at epoch {run.epoch + 1}, step {run.step}")
    trial_batch = sampler.make_batch(np.sort(data.train_index)[:cfg.batch_size],
                                     batch_rng(cfg.seed, VAL_EPOCH + 1, 0))
    memory = Path(data.cache_root) / "precision.json" if data.cache_root else None
    # Rank 0 chooses (a timed choice could differ between processes) and the others follow.
    precision, precision_info = world.share(
        choose_precision(model, trial_batch, profile, kd_targets, device, memory=memory) if world.main else None)
    log(f"training precision: {precision} ({precision_info.get('reason')}"
        + (f": {precision_info['seconds_per_step']} s/step" if "seconds_per_step" in precision_info else "") + ")")
    steps_per_epoch = world.steps(len(data.train_index), cfg.batch_size)
    # Every process decides alike (several processes run eager), so nothing needs sharing.
    planned_steps = (cfg.epochs - run.epoch) * steps_per_epoch - run.step
    compiled, compile_info = choose_compile(model, trial_batch, profile, kd_targets, device, precision, planned_steps,
                                            world.size, precision_info.get("seconds_per_step", {}).get(str(precision)),
                                            memory, log=log)
    log(f"training passes: {'compiled' if compiled else 'eager'} ({compile_info.get('reason')}"
        + (f": {compile_info['seconds_per_step']} s/step" if "seconds_per_step" in compile_info else "") + ")")
    earlier = _earlier_code(out) if run.epoch or run.step else {}
    if world.main:
        write_json(out / "run.json", {"settings": settings, "dataset": data.dataset, "device": str(device),
                                      "processes": world.size, "precision": str(precision),
                                      "precision_choice": precision_info, "compiled": compiled is not None,
                                      "compile_choice": compile_info, "cache_root": data.cache_root,
                                      "train_objects": int(len(data.train_index)),
                                      "val_objects": int(len(data.val_index)), "versions": package_versions(),
                                      "code": code_provenance(), **earlier})
    records = {"caches": data.caches, "kd_layout": data.kd_layout, "settings": settings, "precision": str(precision),
               "compiled": compiled is not None, "processes": world.size}
    forward = compiled or world.wrap(model, lambda net, batch, tasks: task_losses(net, batch, tasks, kd_targets,
                                                                                 device))

    def save(path: Path, **extra) -> None:
        if not world.main:
            return
        save_checkpoint(path, model, optimizer, run.epoch, run.step, profile.to_dict(), **records,
                        history=run.history, best_val_loss=run.best,
                        train_seconds=run.seconds + time.perf_counter() - session_start,
                        budget_finished=run.finished, planned_epochs=run.planned, **extra)

    started, trained, steps = time.perf_counter(), 0, 0
    session_start, session_seconds = started, run.seconds
    last_save = time.monotonic()
    if not cfg.budget_minutes:  # the plan is known now; under a time budget, after epoch 1
        run.planned = cfg.epochs
    while run.epoch < cfg.epochs and not run.finished:
        epoch_start = time.perf_counter()
        model.train()
        sums, seen = (run.epoch_sums or {}, run.epoch_seen) if run.step else ({}, 0)
        bar = tqdm(total=steps_per_epoch, initial=run.step, disable=not progress, unit="step",
                   desc=f"{cfg.arch} epoch {run.epoch + 1}/{cfg.epochs}", leave=False)
        batches = epoch_batches(sampler, epoch_order(cfg.seed, run.epoch, data.train_index), cfg.batch_size,
                                cfg.seed, run.epoch, run.step, world)
        try:
            for batch in batches:
                # Dropout draws depend on the step (and rank) alone, so a resumed run draws what an
                # uninterrupted one would.
                torch.manual_seed(cfg.seed * 1_000_003 + run.epoch * 10_007 + run.step
                                  + world.rank * RANK_SEED_STRIDE)
                rate = cfg.lr * lr_factor(cfg.schedule, run.epoch * steps_per_epoch + run.step, steps_per_epoch,
                                          run.planned, cfg.warmup_epochs)
                for group in optimizer.param_groups:
                    group["lr"] = rate
                losses = training_step(model, optimizer, batch, cfg.tasks, kd_targets, cfg.kd_weight, device,
                                       precision, forward)
                n = len(batch.index)
                step_sums = [value.item() * n for value in losses.values()]
                if world.size > 1:  # every rank keeps the sums of all ranks (so does the checkpoint)
                    *step_sums, n = world.sum([*step_sums, n])
                    n = int(n)
                for task, value in zip(losses, step_sums):
                    sums[task] = sums.get(task, 0.0) + value
                seen, trained, steps, run.step = seen + n, trained + n, steps + 1, run.step + 1
                bar.update(1)
                bar.set_postfix(loss=f"{weighted_total(losses, cfg.kd_weight).item():.3f}")
                run.epoch_sums, run.epoch_seen = sums, seen
                stop = stop_after_steps is not None and steps >= stop_after_steps
                if stop or time.monotonic() - last_save > checkpoint_minutes * 60:
                    save(out / "last.pt", epoch_sums=sums, epoch_seen=seen)
                    last_save = time.monotonic()
                if stop:
                    log(f"stopped after {steps} steps (epoch {run.epoch + 1}, step {run.step}); rerun to resume")
                    return {"interrupted": True, "epoch": run.epoch, "step": run.step}
        except KeyboardInterrupt:
            save(out / "last.pt", epoch_sums=sums, epoch_seen=seen)
            log(f"interrupted at epoch {run.epoch + 1}, step {run.step}: saved {out / 'last.pt'}; rerun to resume")
            raise
        finally:
            bar.close()
        world.check_in_sync(model)
        world.sync_buffers(model)
        val_losses = _end_epoch(run, model, sampler, data, profile, kd_targets, device, precision, sums, seen, log,
                                world)
        epoch_seconds = time.perf_counter() - epoch_start
        run.history[-1]["lr"] = optimizer.param_groups[0]["lr"]
        if run.planned is None:  # a time budget: the schedule plans the epochs that fit, from the first one
            run.planned = world.share(planned_epochs(cfg.epochs, cfg.budget_minutes, epoch_seconds))
            if cfg.schedule != "constant":
                log(f"learning-rate schedule {cfg.schedule}: {run.planned} epoch(s) planned in "
                    f"{cfg.budget_minutes:g} min (the first took {epoch_seconds:.0f} s)")
        if cfg.schedule != "constant" and run.epoch >= run.planned and run.epoch < cfg.epochs:
            run.finished = True  # the schedule's plan is done: its rate has decayed
        # The time budget: stop when the next epoch, as long as this one, would end past it (at least 1 epoch).
        # (Epoch times stay out of the history, which is a function of the seed alone.) Rank 0's clock decides.
        spent = session_seconds + time.perf_counter() - session_start
        if (cfg.budget_minutes and not run.finished and run.epoch < cfg.epochs
                and spent + epoch_seconds > cfg.budget_minutes * 60):
            run.finished = True
            log(f"time budget of {cfg.budget_minutes:g} min reached after {run.epoch} epochs ({spent / 60:.1f} min)")
        run.finished = world.share(run.finished)
        if run.history[-1]["best"]:
            save(out / "best.pt", val_losses=val_losses)
        save(out / "last.pt")
        last_save = time.monotonic()
        if world.main:
            _write_history(out, run.history)
    elapsed = time.perf_counter() - started
    if world.main:
        store_validation_scores(out / "best.pt", data, profile, device)
    summary = {"epochs": run.epoch, "epochs_asked": cfg.epochs, "budget_minutes": cfg.budget_minutes,
               "stopped_by_budget": run.finished, "best_val_loss": run.best, "best_epoch": _best_epoch(run.history),
               "train_objects": int(len(data.train_index)), "val_objects": int(len(data.val_index)),
               "objects_per_s": round(trained / elapsed, 2) if trained else None,
               "seconds": round(elapsed, 1), "device": str(device), "processes": world.size,
               "precision": str(precision), "precision_choice": precision_info,
               "compiled": compiled is not None, "compile_choice": compile_info,
               "schedule": cfg.schedule, "planned_epochs": run.planned,
               "checkpoint": str(out / "best.pt"), "code": code_provenance(), **earlier}
    if world.main:
        write_json(out / "train_summary.json", summary)
    return summary


def _earlier_code(out: Path) -> dict:
    """``{"resumed_from_code": code}`` when a resumed run's earlier sessions ran other package code (None: they
    did not record theirs), else ``{}``: a run's summary names every code its model was trained with."""
    try:
        previous = read_json(out / "run.json")
    except (OSError, ValueError):
        previous = {}
    if "resumed_from_code" in previous:
        return {"resumed_from_code": previous["resumed_from_code"]}
    code = previous.get("code")
    if code and code.get("source_digest") == code_provenance()["source_digest"]:
        return {}
    return {"resumed_from_code": code}


def _end_epoch(run: _RunState, model, sampler, data: TrainingData, profile: Profile, kd_targets, device,
               precision: Precision, sums: dict, seen: int, log, world: World) -> dict[str, float]:
    """Validation losses (returned), the history record, and whether this epoch is the best so far."""
    cfg = profile.train
    train_losses = {task: value / max(seen, 1) for task, value in sums.items()}
    train_losses["total"] = weighted_total(train_losses, cfg.kd_weight)
    val_losses = (validation_losses(model, sampler, data.val_index, profile, kd_targets, device, precision, world)
                  if len(data.val_index) else dict(train_losses))
    improved = val_losses["total"] < run.best
    run.epoch, run.step, run.epoch_sums, run.epoch_seen = run.epoch + 1, 0, None, 0
    if improved:
        run.best = val_losses["total"]
    run.history.append({"epoch": run.epoch, **{f"train_{k}": v for k, v in train_losses.items()},
                        **{f"val_{k}": v for k, v in val_losses.items()}, "best": improved})
    log(f"epoch {run.epoch}/{cfg.epochs}: train {train_losses['total']:.4f} val {val_losses['total']:.4f}"
        + (" (best)" if improved else ""))
    return val_losses


def _best_epoch(history: list[dict]) -> int | None:
    best = [h["epoch"] for h in history if h.get("best")]
    return best[-1] if best else None


def _write_history(out: Path, history: list[dict]) -> None:
    write_json(out / "history.json", history)
    keys = sorted({k for h in history for k in h}, key=lambda k: (k != "epoch", k))
    with atomic_path(out / "history.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)

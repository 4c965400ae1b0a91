"""Joint training of the four proxy tasks (SPEC 3.3-3.5, paper Sec. 3.2 "Joint learning").

``L = L_aot + L_irr + L_mid + lambda * L_kd`` with cross-entropy for the two binary tasks and mean
absolute error for the middle-box reconstruction and the distillation; Adam, lr 1e-3, batch 64. Per video,
the first 85% of the samples (in time) train and the last 15% validate; the checkpoint with the lowest
validation loss is kept. Any subset of the tasks can be trained (the paper's ablation).

One encoder pass serves the arrow-of-time and distillation heads (the distillation target does not depend
on the direction), one the irregularity head, one the middle-box decoder; the first two share a single call
to the encoder.

Runs resume: ``last.pt`` is written every few minutes and at the end of each epoch; every batch draws its
order, reversals and gaps from ``(seed, epoch, batch)``, so an interrupted run that resumes makes exactly
the draws an uninterrupted one would. On CPU the same seed gives the same losses.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import Profile
from .data.frames import load_frames
from .data.layouts import Dataset
from .detect import detect_dataset
from .errors import SSMTLError
from .io import atomic_path, package_versions, write_json
from .model import SSMTLModel
from .samples import (
    Batch,
    ObjectIndex,
    SequenceSampler,
    objects_from_detections,
    require_objects,
    split_train_val,
)
from .teachers import TeacherCache, load_teacher

CHECKPOINT_KIND = "ssmtl-checkpoint"
VAL_EPOCH = 999_983  # the "epoch" whose draws validation uses, the same at every epoch


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSMTLError("device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto.")
    return torch.device(name)


@dataclass
class TrainingData:
    """Everything training needs, built once from the caches (and reusable across runs of one profile).

    Attributes:
        frames: decoded frames of each training video.
        objects: all training objects.
        kd_targets: (N, kd_dim) float32 distillation targets, or None when distillation is off.
        kd_layout: lengths of the two parts of the target: ``{"logits": 1000|0, "class_scores": 80|0}``.
        train_index, val_index: the 85/15 split (indices into ``objects``).
        caches: keys of the dataset, detection and teacher caches used.
    """

    frames: list[np.ndarray]
    objects: ObjectIndex
    kd_targets: np.ndarray | None
    kd_layout: dict
    train_index: np.ndarray
    val_index: np.ndarray
    caches: dict

    @property
    def kd_dim(self) -> int:
        return 0 if self.kd_targets is None else self.kd_targets.shape[1]


def prepare_training_data(dataset: Dataset, profile: Profile, cache_root: str | Path, progress: bool = True,
                          log=print, teacher_weights: str | None = None) -> TrainingData:
    """Detections (cached), decoded frames, training objects, teacher targets (cached) and the split.

    Args:
        dataset: the dataset (its ``train`` videos are used).
        profile: settings.
        cache_root: the cache folder.
        progress: progress bars.
        log: where messages go.
        teacher_weights: optional state dict for the ImageNet teacher.
    """
    sample, train = profile.sample, profile.train
    detections = detect_dataset(dataset, profile.detect, cache_root, splits=("train",), progress=progress,
                                log=log)
    videos = dataset.train
    per_video = [detections.load(v) for v in videos]
    objects = objects_from_detections(per_video, [v.num_frames for v in videos], sample, training=True)
    require_objects(objects, f"training ({detections.key}, {dataset.root})",
                    "The detector found nothing usable: lower detect.conf, check --weights, or use --detector "
                    "motion (a COCO detector does not see the synthetic sprites).")
    if sample.max_train_objects and len(objects) > sample.max_train_objects:
        # An even spread over time keeps every video and the 85/15 cut meaningful.
        keep = np.unique(np.linspace(0, len(objects) - 1, sample.max_train_objects).astype(int))
        objects = objects.subset(keep)
    frames_dir = Path(cache_root) / dataset.cache_id / "frames"
    frames = [load_frames(v, frames_dir) for v in
              tqdm(videos, desc="decode frames", unit="video", disable=not progress, leave=False)]

    kd_targets, layout, teacher_key = None, {"logits": 0, "class_scores": 0}, None
    if "kd" in train.tasks:
        parts = []
        if train.teacher != "none":
            teacher = load_teacher(train.teacher, size=profile.train.teacher_size, weights=teacher_weights)
            teacher_cache = TeacherCache(cache_root, dataset, teacher, detections.key)
            logits = np.zeros((len(objects), 1000), np.float32)
            for v, video in enumerate(tqdm(videos, desc=f"teacher {teacher.name}", unit="video",
                                           disable=not progress, leave=False)):
                rows = np.flatnonzero(objects.video == v)
                if len(rows):
                    logits[rows] = teacher_cache.logits(video, frames[v], objects.frame[rows], objects.boxes[rows],
                                                        objects.row[rows])
            log(f"teacher {teacher.key}: {teacher_cache.hits} objects from cache, {teacher_cache.computed} computed")
            parts.append(logits)
            layout["logits"] = 1000
            teacher_key = teacher.key
        if per_video and per_video[0].class_scores.shape[1] > 0:
            class_scores = np.concatenate([per_video[v].class_scores[objects.row[objects.video == v]]
                                           for v in range(len(videos))]).astype(np.float32)
            # ObjectIndex is ordered by video, so the concatenation lines up with ``objects``.
            parts.append(class_scores)
            layout["class_scores"] = class_scores.shape[1]
        if not parts:
            raise SSMTLError("the distillation task has no target: the detector has no classes and the teacher is "
                             "'none'. Use --teacher efficientnet_lite0, a COCO detector, or drop kd from --tasks.")
        kd_targets = np.concatenate(parts, axis=1)
    train_index, val_index = split_train_val(objects, train.val_fraction)
    caches = {"dataset": dataset.cache_id, "detections": detections.key, "teacher": teacher_key}
    return TrainingData(frames, objects, kd_targets, layout, train_index, val_index, caches)


# -- one step ------------------------------------------------------------------------------------


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, T, S, S, C) uint8 -> (N, 3, T, S, S) float in [0, 1] on ``device`` (grey expanded to RGB)."""
    x = torch.from_numpy(array).to(device, non_blocking=True)
    x = x.permute(0, 4, 1, 2, 3).float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1, -1)
    # channels_last_3d makes oneDNN's 3D convolutions several times faster on CPUs.
    return x.contiguous(memory_format=torch.channels_last_3d)


def task_losses(model: SSMTLModel, batch: Batch, tasks: tuple[str, ...], kd_targets: np.ndarray | None,
                device: torch.device) -> dict[str, torch.Tensor]:
    """The loss of every trained task on one batch (SPEC 3.3).

    The arrow-of-time input is the consecutive sequence reversed where ``aot_label`` is 1; the distillation
    head reads the same encoder features; the irregularity input is the intermittent sequence where
    ``irr_label`` is 1; the middle-box input drops the middle frame, which is the target.
    """
    consecutive = _to_device(batch.consecutive, device)
    t = consecutive.shape[2] // 2
    losses: dict[str, torch.Tensor] = {}
    inputs, heads = [], []
    if "aot" in tasks or "kd" in tasks:
        label = torch.from_numpy(batch.aot_label if "aot" in tasks else np.zeros_like(batch.aot_label)).to(device)
        reverse = label.view(-1, 1, 1, 1, 1).bool()
        inputs.append(torch.where(reverse, consecutive.flip(2), consecutive))
        heads.append("aot")
    if "irr" in tasks:
        intermittent = _to_device(batch.intermittent, device)
        irr_label = torch.from_numpy(batch.irr_label).to(device)
        inputs.append(torch.where(irr_label.view(-1, 1, 1, 1, 1).bool(), intermittent, consecutive))
        heads.append("irr")
    if inputs:
        features = model.encoder(torch.cat(inputs) if len(inputs) > 1 else inputs[0])
        chunks = dict(zip(heads, features.chunk(len(inputs)) if len(inputs) > 1 else [features]))
        if "aot" in tasks:
            losses["aot"] = F.cross_entropy(model.aot_head(chunks["aot"]).float(), label)
        if "kd" in tasks:
            target = torch.from_numpy(kd_targets[batch.index]).to(device)
            losses["kd"] = F.l1_loss(model.kd_head(chunks["aot"]).float(), target)
        if "irr" in tasks:
            losses["irr"] = F.cross_entropy(model.irr_head(chunks["irr"]).float(), irr_label)
    if "mid" in tasks:
        keep = [i for i in range(consecutive.shape[2]) if i != t]
        reconstruction = model.middle(consecutive[:, :, keep].contiguous(memory_format=torch.channels_last_3d))
        losses["mid"] = F.l1_loss(reconstruction.float(), consecutive[:, :, t])
    return losses


def backward_groups(tasks: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The trained tasks grouped by encoder pass: arrow of time, irregularity and distillation share one pass
    (:func:`task_losses`), middle-box prediction has its own."""
    sequence = tuple(t for t in tasks if t != "mid")
    return [group for group in (sequence, ("mid",) if "mid" in tasks else ()) if group]


def total_loss(losses: dict[str, torch.Tensor], kd_weight: float) -> torch.Tensor:
    """``L_aot + L_irr + L_mid + lambda * L_kd`` over the trained tasks."""
    return sum(loss * (kd_weight if task == "kd" else 1.0) for task, loss in losses.items())


# -- the loop ------------------------------------------------------------------------------------


def training_step(model: SSMTLModel, optimizer: torch.optim.Optimizer, batch: Batch, tasks: tuple[str, ...],
                  kd_targets: np.ndarray | None, kd_weight: float, device: torch.device,
                  amp: bool = False) -> dict[str, torch.Tensor]:
    """One optimisation step on ``L_aot + L_irr + L_mid + lambda * L_kd`` (SPEC 3.3); returns the detached losses.

    One backward per encoder pass (:func:`backward_groups`): the gradients add up to those of the summed
    loss, but the first pass's activations are freed before the middle-box pass runs (deep_wide at batch 64:
    peak RSS 6.1 -> 4.6 GB on a CPU).
    """
    optimizer.zero_grad(set_to_none=True)
    losses: dict[str, torch.Tensor] = {}
    for group in backward_groups(tasks):
        with _autocast(device, amp):
            part = task_losses(model, batch, group, kd_targets, device)
            part_loss = total_loss(part, kd_weight)
        part_loss.backward()
        losses.update({task: value.detach() for task, value in part.items()})
    optimizer.step()
    return losses


def _batch_seed(seed: int, epoch: int, batch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, batch])


def _order(seed: int, epoch: int, index: np.ndarray) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 1 << 20]).permutation(index)


def _batches(sampler: SequenceSampler, order: np.ndarray, batch_size: int, seed: int, epoch: int, start: int):
    """Batches ``start..`` of an epoch, prepared one ahead in a background thread."""
    from .samples import _prefetch

    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return _prefetch((sampler.make_batch(chunks[b], _batch_seed(seed, epoch, b)) for b in range(start, len(chunks))),
                     2)


def _evaluate(model: SSMTLModel, sampler: SequenceSampler, index: np.ndarray, profile: Profile,
              kd_targets: np.ndarray | None, device: torch.device, amp: bool) -> dict[str, float]:
    """Mean validation losses; the draws are fixed (seed, VAL_EPOCH, b) so epochs compare on equal terms."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    with torch.no_grad(), _autocast(device, amp):
        for batch in _batches(sampler, np.sort(index), profile.train.batch_size, profile.train.seed, VAL_EPOCH, 0):
            losses = task_losses(model, batch, profile.train.tasks, kd_targets, device)
            n = len(batch.index)
            for task, value in losses.items():
                sums[task] = sums.get(task, 0.0) + value.item() * n
            count += n
    model.train()
    means = {task: value / max(count, 1) for task, value in sums.items()}
    means["total"] = sum(v * (profile.train.kd_weight if k == "kd" else 1.0) for k, v in means.items())
    return means


def _autocast(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def save_checkpoint(path: Path, model: SSMTLModel, optimizer, epoch: int, step: int, profile: Profile,
                    data: TrainingData, extra: dict) -> None:
    """Model, optimizer, epoch and config, and the cache keys the run used; written atomically."""
    state = {"kind": CHECKPOINT_KIND, "version": 1, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step, "model_config": model.config(),
             "profile": profile.to_dict(), "caches": data.caches, "kd_layout": data.kd_layout,
             "versions": package_versions(), **extra}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`train`, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise SSMTLError(f"checkpoint not found: {path}. Train a model first (ssmtl train ... --out DIR) and pass "
                         "DIR/best.pt.")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # pickle/zip errors of damaged or foreign files
        raise SSMTLError(f"cannot read checkpoint {path} ({type(exc).__name__}): it is damaged or not a "
                         "PyTorch file. Pass the best.pt written by ssmtl train.") from None
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise SSMTLError(f"{path} is not an SSMTL checkpoint (no 'kind: {CHECKPOINT_KIND}'); pass the best.pt "
                         "written by ssmtl train.")
    return state


def model_from_checkpoint(state: dict, device: str | torch.device = "cpu") -> SSMTLModel:
    """Rebuild the trained model of a checkpoint, in eval mode."""
    config = state["model_config"]
    model = SSMTLModel(config["arch"], config["kd_dim"], config.get("dropout", 0.3), config["crop_size"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def train(dataset: Dataset, profile: Profile, cache_root: str | Path, out_dir: str | Path,
          data: TrainingData | None = None, progress: bool = True, log=print,
          teacher_weights: str | None = None, checkpoint_minutes: float = 5.0,
          stop_after_steps: int | None = None) -> dict:
    """Train (or resume training) the SSMTL model of ``profile`` and return a summary.

    Writes ``best.pt`` (lowest validation loss), ``last.pt`` (resume point), ``history.csv`` and
    ``history.json`` (per-epoch losses of every task, train and validation) and ``run.json`` into ``out_dir``.

    Args:
        dataset: the dataset.
        profile: settings (``profile.train`` above all).
        cache_root: the cache folder.
        out_dir: the run folder.
        data: prepared training data (built when None).
        progress: progress bars.
        log: where messages go.
        teacher_weights: optional state dict of the ImageNet teacher.
        checkpoint_minutes: wall time between mid-epoch resume points.
        stop_after_steps: stop (as if interrupted) after this many optimisation steps; for tests.
    """
    cfg = profile.train
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    cv2.setNumThreads(1)  # crops run in our own two threads; OpenCV's pool would oversubscribe the cores
    if data is None:
        data = prepare_training_data(dataset, profile, cache_root, progress=progress, log=log,
                                     teacher_weights=teacher_weights)
    if len(data.train_index) == 0:
        raise SSMTLError("no training samples after the 85/15 split; use more videos or a smaller frame stride.")
    sampler = SequenceSampler(data.frames, data.objects, profile.sample, cfg.tasks, seed=cfg.seed)

    torch.manual_seed(cfg.seed)
    model = SSMTLModel(cfg.arch, data.kd_dim, cfg.dropout, profile.sample.crop_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    settings = {"profile": profile.to_dict(), "caches": data.caches}

    start_epoch, start_step, history, best = 0, 0, [], float("inf")
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.is_file():
        state = load_checkpoint(last_path, device)
        if _resume_key(state.get("settings", {})) != _resume_key(settings):
            raise SSMTLError(f"{out} holds a run with other settings (see {out / 'run.json'}). Use another --out, "
                             "or delete the folder to start over.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, start_step = state["epoch"], state["step"]
        history, best = state.get("history", []), state.get("best_val_loss", float("inf"))
        log(f"resuming {out} at epoch {start_epoch + 1}, step {start_step}")

    write_json(out / "run.json", {"settings": settings, "dataset": dataset.summary(), "device": str(device),
                                  "cache_root": str(Path(cache_root).resolve()),
                                  "train_objects": int(len(data.train_index)), "val_objects": int(len(data.val_index)),
                                  "versions": package_versions()})
    steps_per_epoch = int(np.ceil(len(data.train_index) / cfg.batch_size))
    steps_done = 0
    last_save = time.monotonic()
    started = time.perf_counter()
    trained_objects = 0
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = _order(cfg.seed, epoch, data.train_index)
        first = start_step if epoch == start_epoch else 0
        sums: dict[str, float] = {}
        seen = 0
        # Partial sums of an epoch interrupted mid-way come back from the checkpoint.
        if first and last_path.is_file():
            sums, seen = dict(state.get("epoch_sums", {})), int(state.get("epoch_seen", 0))
        bar = tqdm(total=steps_per_epoch, initial=first, disable=not progress, unit="step",
                   desc=f"{cfg.arch} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for b, batch in enumerate(_batches(sampler, order, cfg.batch_size, cfg.seed, epoch, first), start=first):
            torch.manual_seed(cfg.seed * 1_000_003 + epoch * 10_007 + b)  # dropout draws depend on the step only
            losses = training_step(model, optimizer, batch, cfg.tasks, data.kd_targets, cfg.kd_weight, device,
                                   cfg.amp)
            loss = total_loss(losses, cfg.kd_weight)
            n = len(batch.index)
            for task, value in losses.items():
                sums[task] = sums.get(task, 0.0) + value.item() * n
            seen += n
            trained_objects += n
            steps_done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            interrupted = stop_after_steps is not None and steps_done >= stop_after_steps
            if interrupted or time.monotonic() - last_save > checkpoint_minutes * 60:
                save_checkpoint(last_path, model, optimizer, epoch, b + 1, profile, data,
                                {"history": history, "best_val_loss": best, "settings": settings,
                                 "epoch_sums": sums, "epoch_seen": seen})
                last_save = time.monotonic()
            if interrupted:
                bar.close()
                log(f"stopped after {steps_done} steps (epoch {epoch + 1}, step {b + 1}); rerun to resume")
                return {"interrupted": True, "epoch": epoch, "step": b + 1}
        bar.close()
        train_losses = {task: value / max(seen, 1) for task, value in sums.items()}
        train_losses["total"] = sum(v * (cfg.kd_weight if k == "kd" else 1.0) for k, v in train_losses.items())
        val_losses = (_evaluate(model, sampler, data.val_index, profile, data.kd_targets, device, cfg.amp)
                      if len(data.val_index) else dict(train_losses))
        improved = val_losses["total"] < best
        record = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_losses.items()},
                  **{f"val_{k}": v for k, v in val_losses.items()}, "best": improved}
        history.append(record)
        log(f"epoch {epoch + 1}/{cfg.epochs}: train {train_losses['total']:.4f} val {val_losses['total']:.4f}"
            + (" (best)" if improved else ""))
        extra = {"history": history, "settings": settings, "val_losses": val_losses}
        if improved:
            best = val_losses["total"]
            save_checkpoint(best_path, model, optimizer, epoch + 1, 0, profile, data,
                            {**extra, "best_val_loss": best})
        save_checkpoint(last_path, model, optimizer, epoch + 1, 0, profile, data, {**extra, "best_val_loss": best})
        last_save = time.monotonic()
        _write_history(out, history)
    elapsed = time.perf_counter() - started
    summary = {"epochs": cfg.epochs, "best_val_loss": best, "best_epoch": _best_epoch(history),
               "train_objects": int(len(data.train_index)), "val_objects": int(len(data.val_index)),
               "objects_per_s": round(trained_objects / elapsed, 2) if trained_objects else None,
               "seconds": round(elapsed, 1), "device": str(device), "checkpoint": str(best_path)}
    write_json(out / "train_summary.json", summary)
    return summary


def _best_epoch(history: list[dict]) -> int | None:
    best = [h["epoch"] for h in history if h.get("best")]
    return best[-1] if best else None


def _resume_key(settings: dict) -> str:
    """What must match for a run to resume: everything but the epoch count and where it runs."""
    import copy

    from .io import stable_hash

    settings = copy.deepcopy(settings)
    for name in ("epochs", "device", "num_threads", "amp"):
        settings.get("profile", {}).get("train", {}).pop(name, None)
    return stable_hash(settings, 16)


def _write_history(out: Path, history: list[dict]) -> None:
    write_json(out / "history.json", history)
    keys = sorted({k for h in history for k in h}, key=lambda k: (k != "epoch", k))
    with atomic_path(out / "history.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)

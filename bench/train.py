"""Benchmark of sample generation and training (``docs/method.md``, "Object-centric sequences", "Training"): objects/s, memory and disk on Ped2.

Usage::

    python bench/train.py [--out bench/results/train.json] [--cache DIR] [--quick]
        [--presets all|shallow_narrow,...] [--paths old,new] [--compile cold,warm] [--rounds 3]

Measured (each written to the JSON, with the machine, the package versions, the date and the load average):

(a) ``pipeline``: training objects/s of :meth:`SequenceSampler.make_batch` alone, the crops behind all four
    tasks' inputs (7 consecutive crops, plus 7 intermittent crops for the objects drawn intermittent) at
    64x64, batch 64, on the real UCSD Ped2 training frames (``../shared``) and the motion detector's
    training objects; the sampler's default 2 worker threads, ``cv2.setNumThreads(1)``. Also through the
    trainer's prefetching iterator (``train.epoch_batches``: one more thread, batches prepared ahead).
    Target: >= 3000 objects/s on this 2-core machine.
(b) ``training``: objects/s of full training steps (``precision.training_step``: the four losses, backward, Adam)
    over all four tasks, batch 64, for every preset at 64x64 and for ``shallow_narrow`` at 32x32, on batches
    made beforehand (so data loading is not timed), after warm-up steps. The distillation target is 1080
    values (1000 ImageNet logits + 80 COCO class scores, the shape with a COCO detector), random here:
    the step's cost does not depend on its values. Per preset, the paths of ``--paths``, their steps
    interleaved (A B C A B C ...) so that every path sees the same machine load, each row with its ratio to
    eager fp32 (the target: >= 2.0x on a CPU with AMX): ``old`` = eager PyTorch in fp32 and, where the CPU has
    native bf16, in bf16 (the precision check's passes in fp32: deep_wide's middle-box pass); ``new`` = the
    compiled path (``ssmtl_core.compiled``) in the precision ``auto`` trains in here. ``compile``: what the
    compiled path costs, each in a process of its own on the same graph cache folder: ``cold`` (the folder
    empty: inductor compiles) and ``warm`` (a second process: the graphs are loaded), each the seconds of
    ``compiled.choose_compile`` (the eager fp32 reference and the first compiled step, compile included) and of
    a steady step after it; the warm-start overhead is their difference (target <= 30 s). Then
    ``end_to_end``: ``shallow_narrow`` steps fed by the trainer's prefetching sampler, to see whether data
    loading starves training.
(c) ``memory``: peak RSS of this process after preparing the Ped2 training data (detections, decoded frames,
    objects, 85/15 split), after the pipeline and after each preset's training steps (presets run from the
    lightest to the heaviest, so each row's figure is that preset's peak or an earlier one's).
(d) ``disk``: bytes of the Ped2 caches built here: the motion detections of train and test (measured), the
    teacher logits (EfficientNet-Lite0 at 224, float16) measured on the objects of the first
    ``--teacher-videos`` training videos (at most ``--teacher-objects`` each) and extrapolated per object to every training object and every test
    detection (a class-agnostic detector needs the teacher's logits of test objects too), and decoded frames
    (none for Ped2's JPEG folders: they are decoded into RAM; video files would be memory-mapped ``.npy``).
    Target: <= 1.5 GB. The teacher's CPU speed (objects/s) is recorded as well.

Every timing also records the process's CPU time: on a machine shared with other work the wall-clock rate
drops, the CPU-time rate much less. Without ``../shared`` the Ped2 parts are skipped with a note and training
runs on random crops. ``--quick`` runs every part with few batches and steps to check the script; its numbers
are marked ``quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PED2 = SHARED / "datasets" / "ucsd_ped2"

TARGETS = {"pipeline_objects_per_s": 3000.0, "ped2_cache_bytes": 1.5e9}
PRESETS = ("shallow_narrow", "shallow_wide", "deep_narrow", "deep_wide")
TASKS = ("aot", "irr", "mid", "kd")
KD_DIM = 1080
BATCH = 64

sys.path.insert(0, str(REPO))  # run from a checkout without installing

from bench.results import finish  # noqa: E402
from ssmtl_core.compiled import CompiledLosses, cache_folder, choose_compile, graph_cache  # noqa: E402
from ssmtl_core.config import apply_overrides, get_profile  # noqa: E402
from ssmtl_core.data import open_dataset  # noqa: E402
from ssmtl_core.detect import detect_dataset  # noqa: E402
from ssmtl_core.io import code_provenance, machine_info, package_versions  # noqa: E402
from ssmtl_core.losses import DistillationTargets, backward_groups, task_losses, weighted_total  # noqa: E402
from ssmtl_core.model import SSMTLModel  # noqa: E402
from ssmtl_core.precision import FP32, Precision, checked_bf16, native_bf16, training_step  # noqa: E402
from ssmtl_core.samples import Batch, SequenceSampler  # noqa: E402
from ssmtl_core.teachers import TeacherCache, load_teacher  # noqa: E402
from ssmtl_core.train import batch_rng, epoch_batches  # noqa: E402
from ssmtl_core.training_data import TrainingData, prepare_training_data  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb(notes: list[str]) -> float | None:
    """The resident set size now (psutil, the ``bench`` extra); None, with a note saying how to get it, without."""
    try:
        import psutil  # optional: pip install -e '.[bench]'
    except ImportError:
        notes.append("current RSS not measured: psutil is missing (pip install -e '.[bench]')")
        return None
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class Timer:
    """Wall and process CPU time of a block."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


# -- (c) preparing the Ped2 training data -----------------------------------------------------------


def prepare_ped2(cache: Path, notes: list[str]) -> tuple[object, object, TrainingData, dict]:
    """Motion detections of train and test, decoded training frames, objects and split (no teacher yet)."""
    dataset = open_dataset("ped2", PED2)
    # The motion detector: the COCO detector the paper used (YOLOv3) needs a download; the int8 YOLOv8n export
    # is benchmarked in bench/detect.py. The distillation targets are handled in part (d).
    profile = apply_overrides(get_profile("ped2"), {"detect.detector": "motion", "train.tasks": ("aot", "irr", "mid"),
                                                    "train.device": "cpu"})
    with Timer() as detect_time:
        detections = detect_dataset(dataset, profile.detect, cache, splits=("train", "test"), progress=False,
                                    log=lambda *_: None)
    with Timer() as prep_time:
        data = prepare_training_data(dataset, profile, cache, progress=False, log=lambda *_: None)
    info = {
        "dataset": dataset.cache_id, "detector": detections.key, "train_videos": len(dataset.train),
        "train_frames": int(sum(v.num_frames for v in dataset.train)),
        "train_objects": int(len(data.objects)), "train_split": int(len(data.train_index)),
        "val_split": int(len(data.val_index)),
        "test_detections": int(sum(len(detections.load(v)) for v in dataset.test)),
        "detect_seconds": round(detect_time.wall, 2),
        "prepare_seconds": round(prep_time.wall, 2),
        "frames_in_ram_mb": round(sum(f.nbytes for f in data.frames) / 2**20, 1),
        "frame_channels": int(data.frames[0].shape[-1]),
        "peak_rss_mb_after_prepare": peak_rss_mb(),
    }
    notes.append("Ped2 objects come from the motion detector (background subtraction); prepare_seconds covers "
                 "the objects, JPEG decoding of the 2550 training frames and the split (detections already cached "
                 "by the detect step, timed separately as detect_seconds, train + test).")
    return dataset, profile, data, info


# -- (a) the data pipeline ----------------------------------------------------------------------------


def bench_pipeline(sampler: SequenceSampler, index: np.ndarray, batches: int) -> dict:
    """Objects/s of make_batch alone, and through the trainer's prefetching iterator."""
    rng = np.random.default_rng(0)
    chunks = [rng.choice(index, BATCH, replace=False) for _ in range(batches)]
    sampler.make_batch(chunks[0], batch_rng(0, 0, 0))  # warm-up (thread pool, caches)
    with Timer() as direct:
        for b, chunk in enumerate(chunks):
            sampler.make_batch(chunk, batch_rng(0, 1, b))
    order = rng.permutation(index)[:batches * BATCH]
    with Timer() as prefetched:
        count = sum(len(batch.index) for batch in epoch_batches(sampler, order, BATCH, 0, 2, 0))
    n = batches * BATCH
    return {
        "objects": n, "batch": BATCH, "crop": sampler.config.crop_size, "workers": sampler.workers,
        "tasks": list(sampler.tasks), "cv2_threads": cv2.getNumThreads(),
        "make_batch_objects_per_s": round(n / direct.wall, 1),
        "make_batch_objects_per_cpu_s": round(n / direct.cpu, 1),
        "prefetched_objects_per_s": round(count / prefetched.wall, 1),
        "target_objects_per_s": TARGETS["pipeline_objects_per_s"],
    }


# -- (b) training steps -------------------------------------------------------------------------------


def random_batches(count: int, crop: int, seed: int = 0) -> list[Batch]:
    """Random uint8 crops in the Batch layout (grey, like Ped2), for machines without ../shared."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(count):
        shape = (BATCH, 7, crop, crop, 1)
        irr = rng.integers(0, 2, BATCH)
        offsets = np.tile(np.arange(-3, 4), (BATCH, 1))
        out.append(Batch(np.arange(b * BATCH, (b + 1) * BATCH), rng.integers(0, 256, shape, dtype=np.uint8),
                         rng.integers(0, 2, BATCH), irr, rng.integers(0, 256, shape, dtype=np.uint8), offsets))
    return out


def time_steps(arch: str, batches: list[Batch], kd_targets: np.ndarray, crop: int, warmup: int, steps: int,
               budget_s: float, precision: str = "fp32") -> dict:
    """Full training steps: forward of the four tasks, joint loss, backward, Adam, in ``precision``."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = SSMTLModel(arch, KD_DIM, crop_size=crop, kd_probabilities=80).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    chosen = FP32
    if precision == "bf16":  # what training would run: passes with non-finite bf16 gradients in fp32
        chosen, _ = checked_bf16(model, batches[0], TASKS, kd_targets, 0.5, device)

    def step(batch: Batch) -> float:
        losses = training_step(model, optimizer, batch, TASKS, kd_targets, 0.5, device, chosen)
        return weighted_total(losses, 0.5).item()

    for i in range(warmup):
        step(batches[i % len(batches)])
    done, objects = 0, 0
    with Timer() as timer:
        while done < steps:
            batch = batches[(warmup + done) % len(batches)]
            step(batch)
            done += 1
            objects += len(batch.index)
            if done >= 2 and time.perf_counter() - timer.wall > budget_s:
                break
    return {"arch": arch, "crop": crop, "batch": BATCH, "path": "old", "compiled": False, "precision": str(chosen),
            "warmup_steps": warmup, "steps": done,
            "seconds_per_step": round(timer.wall / done, 3), "objects_per_s": round(objects / timer.wall, 1),
            "objects_per_cpu_s": round(objects / timer.cpu, 1),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "peak_rss_mb_after": peak_rss_mb(), "load_average_1min_after": round(os.getloadavg()[0], 2)}


def path_precision(arch: str, batch: Batch, kd_targets: np.ndarray, crop: int) -> Precision:
    """bf16 (its non-finite passes in fp32) where the CPU has native bf16, else fp32: what ``auto`` trains in."""
    if not native_bf16():
        return FP32
    torch.manual_seed(0)
    model = SSMTLModel(arch, KD_DIM, crop_size=crop, kd_probabilities=80).train()
    return checked_bf16(model, batch, TASKS, kd_targets, 0.5, torch.device("cpu"))[0]


def compare_paths(arch: str, batches: list[Batch], kd_targets: np.ndarray, crop: int, paths: tuple[str, ...],
                  rounds: int, warmup: int, graphs_root: Path) -> list[dict]:
    """Training steps of each path of ``arch``, interleaved round by round; one row per path, with its ratio to
    eager fp32. ``graphs_root``: the cache root of the compiled path's graphs (filled by :func:`compile_costs`)."""
    device = torch.device("cpu")
    targets = DistillationTargets(kd_targets)
    chosen = path_precision(arch, batches[0], kd_targets, crop)
    candidates: dict[str, tuple[Precision, bool]] = {}
    if "old" in paths:
        candidates["eager fp32"] = (FP32, False)
        if chosen != FP32:
            candidates[f"eager {chosen}"] = (chosen, False)
    if "new" in paths:
        candidates[f"compiled {chosen}"] = (chosen, True)
    runs = {}
    with graph_cache(graphs_root):
        for name, (precision, compiled) in candidates.items():
            torch.manual_seed(0)
            model = SSMTLModel(arch, KD_DIM, crop_size=crop, kd_probabilities=80).to(device).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            forward = CompiledLosses(model, targets, device, BATCH) if compiled else None
            runs[name] = (model, optimizer, precision, forward)
            for i in range(warmup):  # the compiled path's first step loads its graphs
                training_step(model, optimizer, batches[i % len(batches)], TASKS, targets, 0.5, device, precision,
                              forward)
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(rounds):
            for name, (model, optimizer, precision, forward) in runs.items():
                batch = batches[(warmup + r) % len(batches)]
                with Timer() as timer:
                    training_step(model, optimizer, batch, TASKS, targets, 0.5, device, precision, forward)
                wall[name].append(timer.wall)
                cpu[name].append(timer.cpu)
    # Validation runs eager in every path (BatchNorm in eval mode, no backward): one forward of each pass.
    model, _, precision, _ = runs[next(reversed(runs))]
    model.eval()
    with torch.no_grad(), Timer() as validation:
        for group in backward_groups(TASKS):
            with precision.autocast(device, group):
                task_losses(model, batches[0], group, targets, device)
    model.train()
    rows = []
    for name, (model, _, precision, forward) in runs.items():
        seconds, cpu_seconds = float(np.median(wall[name])), float(np.median(cpu[name]))
        rows.append({"arch": arch, "crop": crop, "batch": BATCH, "path": "new" if forward else "old",
                     "compiled": forward is not None, "precision": str(precision), "warmup_steps": warmup,
                     "steps": rounds, "seconds_per_step": round(seconds, 3),
                     "seconds_per_step_all": [round(x, 3) for x in wall[name]],
                     "objects_per_s": round(BATCH / seconds, 1), "objects_per_cpu_s": round(BATCH / cpu_seconds, 1),
                     "parameters": int(sum(p.numel() for p in model.parameters())),
                     "validation_objects_per_s": round(BATCH / validation.wall, 1),
                     "peak_rss_mb_after": peak_rss_mb(), "load_average_1min_after": round(os.getloadavg()[0], 2)})
    base = next((row for row in rows if row["precision"] == "fp32" and not row["compiled"]), None)
    for row in rows:
        if base is not None and row is not base:
            row["speedup_vs_fp32"] = round(row["objects_per_s"] / base["objects_per_s"], 2)
            row["cpu_speedup_vs_fp32"] = round(row["objects_per_cpu_s"] / base["objects_per_cpu_s"], 2)
    return rows


def compile_costs(arch: str, crop: int, precision: Precision, graphs_root: Path, kinds: tuple[str, ...]) -> dict:
    """The compiled path's start-up in fresh processes on one graph cache: ``cold`` (empty) then ``warm``."""
    out = {}
    for kind in ("cold", "warm"):
        if kind == "cold" and graphs_root.exists() and kind in kinds:
            shutil.rmtree(graphs_root)
        if kind not in kinds:
            continue
        command = [sys.executable, str(Path(__file__).resolve()), "--compile-child", arch, "--child-crop", str(crop),
                   "--child-precision", str(precision), "--child-cache", str(graphs_root),
                   "--child-threads", str(torch.get_num_threads())]
        with Timer() as timer:
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        out[kind] = {**json.loads(done.stdout.strip().splitlines()[-1]), "process_seconds": round(timer.wall, 1)}
    return out


def compile_child(arch: str, crop: int, precision: str, cache_root: Path, threads: int) -> dict:
    """In a process of its own: what a training run pays to start the compiled path (``choose_compile`` with
    ``train.compile=on``: the eager fp32 reference and the first compiled step), and a steady step after it."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    batches = random_batches(2, crop)
    targets = DistillationTargets(np.random.default_rng(0).normal(size=(2 * BATCH, KD_DIM)).astype(np.float32))
    torch.manual_seed(0)
    model = SSMTLModel(arch, KD_DIM, crop_size=crop, kd_probabilities=80).to(device).train()
    profile = apply_overrides(get_profile("ped2"), {"train.arch": arch, "train.compile": "on",
                                                    "train.device": "cpu"})
    chosen = Precision.parse(precision)
    with graph_cache(cache_root) as folder:
        with Timer() as choose:
            compiled, info = choose_compile(model, batches[0], profile, targets, device, chosen, log=lambda *_: None)
        if compiled is None:
            raise RuntimeError(f"the compiled path was refused: {info}")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        with Timer() as steady:
            training_step(model, optimizer, batches[1], TASKS, targets, 0.5, device, chosen, compiled)
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"arch": arch, "crop": crop, "precision": precision, "threads": threads,
            "choose_compile_seconds": round(choose.wall, 1), "first_step_seconds": info["first_step_seconds"],
            "steady_step_seconds": round(steady.wall, 2),
            "start_up_overhead_seconds": round(choose.wall - steady.wall, 1),
            "check_losses": info["check_losses"], "cache_files": len(files),
            "cache_bytes": sum(p.stat().st_size for p in files)}


def end_to_end(sampler: SequenceSampler, index: np.ndarray, kd_targets: np.ndarray, steps: int) -> dict:
    """shallow_narrow steps fed by the trainer's prefetching iterator (data loading included)."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = SSMTLModel("shallow_narrow", KD_DIM, crop_size=sampler.config.crop_size).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = np.random.default_rng(1).permutation(index)[:(steps + 1) * BATCH]
    iterator = epoch_batches(sampler, order, BATCH, 0, 3, 0)

    def step(batch: Batch) -> None:
        training_step(model, optimizer, batch, TASKS, kd_targets, 0.5, device)

    step(next(iterator))  # warm-up; the clock starts after it
    waited, objects = 0.0, 0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(iterator)
        waited += time.perf_counter() - t0
        step(batch)
        objects += len(batch.index)
    wall = time.perf_counter() - start
    iterator.close()
    return {"arch": "shallow_narrow", "crop": sampler.config.crop_size, "steps": steps,
            "objects_per_s": round(objects / wall, 1),
            "seconds_waiting_for_data": round(waited, 3),
            "fraction_waiting_for_data": round(waited / wall, 4),
            "load_average_1min_after": round(os.getloadavg()[0], 2)}


# -- (d) teacher targets and disk ----------------------------------------------------------------------


def bench_teacher_and_disk(dataset, data: TrainingData, info: dict, cache: Path, videos: int, max_objects: int | None,
                           notes: list[str]) -> dict:
    teacher = load_teacher("efficientnet_lite0", size=224)
    teacher_cache = TeacherCache(cache, dataset, teacher, info["detector"])
    objects = 0
    with Timer() as timer:
        for v in range(min(videos, len(dataset.train))):
            rows = np.flatnonzero(data.objects.video == v)
            if max_objects is not None:
                rows = rows[:max_objects]
            if len(rows):
                teacher_cache.logits(dataset.train[v], data.frames[v], data.objects.frame[rows],
                                     data.objects.boxes[rows], data.objects.row[rows])
                objects += len(rows)
    teacher_files = list(teacher_cache.folder.rglob("*.npz"))
    teacher_bytes = sum(p.stat().st_size for p in teacher_files)
    per_object = teacher_bytes / max(objects, 1)
    all_objects = info["train_objects"] + info["test_detections"]
    detections_bytes = folder_bytes(cache / info["dataset"] / "detections")
    frames_bytes = folder_bytes(cache / info["dataset"] / "frames")
    teacher_total = per_object * all_objects + folder_bytes(teacher_cache.folder / "meta.json")
    total = detections_bytes + frames_bytes + teacher_total
    notes.append(f"teacher logits computed for {objects} objects of the first {videos} training video(s) only "
                 f"(at most {max_objects or 'all'} per video) "
                 f"(EfficientNet-Lite0 at 224 on this CPU); the teacher cache size is extrapolated per object to "
                 f"{all_objects} objects ({info['train_objects']} training + {info['test_detections']} test).")
    return {
        "teacher": {"name": teacher.name, "key": teacher.key, "input": 224, "objects": objects,
                    "seconds": round(timer.wall, 2), "objects_per_s": round(objects / timer.wall, 1),
                    "objects_per_cpu_s": round(objects / timer.cpu, 1)},
        "disk": {
            "detections_bytes": detections_bytes,
            "frames_bytes": frames_bytes,
            "frames_note": "JPEG folders are decoded into RAM, no frame cache on disk",
            "teacher_bytes_measured": teacher_bytes,
            "teacher_objects_measured": objects,
            "teacher_bytes_per_object": round(per_object, 1),
            "teacher_bytes_extrapolated": int(teacher_total),
            "teacher_objects_extrapolated": all_objects,
            "total_bytes": int(total),
            "total_is_extrapolated": True,
            "target_bytes": int(TARGETS["ped2_cache_bytes"]),
        },
    }


# -- report ---------------------------------------------------------------------------------------------


def summary_table(result: dict) -> str:
    lines = []

    def verdict(ok: bool) -> str:
        return "meets target" if ok else "BELOW TARGET"

    pipe = result.get("pipeline")
    if pipe:
        lines.append(f"data pipeline (Ped2, {pipe['crop']}x{pipe['crop']}, batch {pipe['batch']}, "
                     f"{pipe['workers']} workers, cv2 threads {pipe['cv2_threads']}):")
        lines.append(f"  make_batch            {pipe['make_batch_objects_per_s']:>9,.0f} objects/s "
                     f"({pipe['make_batch_objects_per_cpu_s']:,.0f} per CPU-s)  target >= "
                     f"{pipe['target_objects_per_s']:,.0f}: {verdict(pipe['make_batch_objects_per_s'] >= pipe['target_objects_per_s'])}")
        lines.append(f"  trainer's prefetcher  {pipe['prefetched_objects_per_s']:>9,.0f} objects/s")
    lines.append(f"training steps (all four tasks, batch {BATCH}, Adam, torch threads {result['torch_threads']}, "
                 f"{result['training_data']}):")
    machine = result["machine"]
    lines.append(f"  CPU: {machine['cpu']} ({', '.join(machine.get('cpu_flags', [])) or 'no flags read'})")
    lines.append(f"  {'preset':<16}{'crop':>5}{'path':>6}{'precision':>24}{'s/step':>9}{'objects/s':>11}"
                 f"{'per CPU-s':>11}{'vs fp32':>9}{'(CPU)':>7}{'params':>11}")
    for row in result["training"]:
        ratio = f"{row['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in row else ""
        cpu_ratio = f"{row['cpu_speedup_vs_fp32']:.2f}x" if "cpu_speedup_vs_fp32" in row else ""
        kind = f"{'compiled' if row.get('compiled') else 'eager'} {row.get('precision', 'fp32')}"
        lines.append(f"  {row['arch']:<16}{row['crop']:>5}{row.get('path', 'old'):>6}{kind:>24}"
                     f"{row['seconds_per_step']:>9.2f}{row['objects_per_s']:>11.1f}"
                     f"{row['objects_per_cpu_s']:>11.1f}{ratio:>9}{cpu_ratio:>7}{row['parameters']:>11,}")
    for arch, costs in result.get("compile", {}).items():
        parts = [f"{kind} {c['choose_compile_seconds']:.0f} s to start (first step {c['first_step_seconds']:.0f} s, "
                 f"steady step {c['steady_step_seconds']:.1f} s: overhead {c['start_up_overhead_seconds']:.0f} s)"
                 for kind, c in costs.items() if isinstance(c, dict)]
        lines.append(f"  compiled path, {arch}: " + "; ".join(parts) + (
            f"; warm-start overhead <= 30 s: {verdict(costs['warm']['start_up_overhead_seconds'] <= 30)}"
            if "warm" in costs else ""))
    e2e = result.get("end_to_end")
    if e2e:
        lines.append(f"  end to end (shallow_narrow {e2e['crop']}, prefetching sampler): {e2e['objects_per_s']:.1f} "
                     f"objects/s, {100 * e2e['fraction_waiting_for_data']:.1f}% of the time waiting for data")
    mem = result.get("memory")
    if mem:
        lines.append(f"peak RSS: {mem['after_prepare_mb']:.0f} MB after preparing Ped2, {mem['after_pipeline_mb']:.0f} MB "
                     f"after the pipeline, {mem['after_training_mb']:.0f} MB after training")
    disk = result.get("disk")
    if disk:
        teacher = result["teacher"]
        lines.append(f"Ped2 caches: detections {disk['detections_bytes'] / 1e6:.1f} MB, frames "
                     f"{disk['frames_bytes'] / 1e6:.1f} MB, teacher {disk['teacher_bytes_extrapolated'] / 1e6:.1f} MB "
                     f"(extrapolated from {disk['teacher_objects_measured']} objects to "
                     f"{disk['teacher_objects_extrapolated']}) = {disk['total_bytes'] / 1e6:.1f} MB; target <= "
                     f"{disk['target_bytes'] / 1e9:.1f} GB: {verdict(disk['total_bytes'] <= disk['target_bytes'])}")
        lines.append(f"teacher (EfficientNet-Lite0, 224): {teacher['objects_per_s']:.1f} objects/s "
                     f"({teacher['objects_per_cpu_s']:.1f} per CPU-s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train.json"), help="JSON output")
    parser.add_argument("--cache", help="cache folder to build/reuse (default: a temporary one, removed after)")
    parser.add_argument("--teacher-videos", type=int, default=1, help="training videos whose teacher logits are "
                        "computed for the disk figure")
    parser.add_argument("--teacher-objects", type=int, default=400, help="at most this many objects per video "
                        "for the teacher (0 = all)")
    parser.add_argument("--pipeline-batches", type=int, default=40)
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per preset (at most)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps per preset")
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of timed steps per preset (>= 2 steps)")
    parser.add_argument("--presets", default="all", help="comma-separated presets, or all")
    parser.add_argument("--paths", default="old,new", help="old (eager fp32, and bf16 where native), new (compiled)")
    parser.add_argument("--compile", default="cold,warm", help="compile costs measured in fresh processes: cold, "
                        "warm, both, or none")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed steps of every path per preset")
    parser.add_argument("--quick", action="store_true", help="few batches and steps: checks that the script runs")
    parser.add_argument("--compile-child", help=argparse.SUPPRESS)  # a preset: run compile_child, print its JSON
    parser.add_argument("--child-crop", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--child-precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--child-cache", help=argparse.SUPPRESS)
    parser.add_argument("--child-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile_child:
        print(json.dumps(compile_child(args.compile_child, args.child_crop, args.child_precision,
                                       Path(args.child_cache), args.child_threads or torch.get_num_threads())))
        return 0
    if args.quick:
        args.pipeline_batches, args.steps, args.warmup, args.budget, args.teacher_objects = 4, 2, 1, 5.0, 64
        args.rounds = 1
    presets = PRESETS if args.presets == "all" else tuple(args.presets.split(","))
    paths = tuple(p for p in args.paths.split(",") if p)
    kinds = tuple(k for k in args.compile.replace("both", "cold,warm").split(",") if k in ("cold", "warm"))
    if set(presets) - set(PRESETS) or set(paths) - {"old", "new"}:
        parser.error(f"--presets takes all or some of {', '.join(PRESETS)}; --paths old and/or new")

    cv2.setNumThreads(1)
    notes: list[str] = []
    result: dict = {"benchmark": "train", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine_info(), "versions": package_versions(), "code": code_provenance(), "quick": args.quick,
                    "torch_threads": torch.get_num_threads(), "presets": list(presets), "paths_run": list(paths),
                    "compile_kinds": list(kinds), "rounds": args.rounds,
                    # Other work on the machine slows every number down: the load says how busy it was.
                    "load_average_start": [round(x, 2) for x in os.getloadavg()], "targets": TARGETS, "notes": notes}
    temporary = args.cache is None
    cache = Path(tempfile.mkdtemp(prefix="ssmtl-bench-train-")) if temporary else Path(args.cache)
    try:
        have_ped2 = PED2.is_dir()
        sampler64 = sampler32 = None
        if have_ped2:
            print("(c) preparing the Ped2 training data (motion detections, frames, objects) ...", flush=True)
            dataset, profile, data, info = prepare_ped2(cache, notes)
            result["ped2"] = info
            sample64 = dataclasses.replace(profile.sample, crop_size=64)
            sampler64 = SequenceSampler(data.frames, data.objects, sample64, TASKS, seed=0)
            print("(a) data pipeline ...", flush=True)
            result["pipeline"] = bench_pipeline(sampler64, data.train_index, args.pipeline_batches)
            after_pipeline = peak_rss_mb()
            batches64 = [sampler64.make_batch(data.train_index[i * BATCH:(i + 1) * BATCH], batch_rng(0, 9, i))
                         for i in range(4)]
            sampler32 = SequenceSampler(data.frames, data.objects, dataclasses.replace(sample64, crop_size=32), TASKS)
            batches32 = [sampler32.make_batch(b.index, batch_rng(0, 9, i)) for i, b in enumerate(batches64)]
            n_targets = len(data.objects)
            result["training_data"] = "Ped2 batches from the sampler"
        else:
            notes.append(f"{PED2} is absent: the data pipeline, memory and disk parts are skipped and training runs "
                         "on random crops.")
            batches64, batches32 = random_batches(4, 64), random_batches(4, 32)
            n_targets = 4 * BATCH
            result["training_data"] = "random crops (no Ped2)"
        kd_targets = np.random.default_rng(0).normal(size=(n_targets, KD_DIM)).astype(np.float32)

        print("(b) training steps ...", flush=True)
        result["training"], result["compile"] = [], {}
        result["paths"] = {"old": "eager PyTorch, fp32 (and bf16 where native)",
                           "new": "compiled (torch.compile, inductor), in the precision auto trains in"}
        for arch in presets:
            graphs = cache / "graphs" / arch
            if "new" in paths and kinds:
                precision = path_precision(arch, batches64[0], kd_targets, 64)
                print(f"    {arch} 64x64 {precision}: compiling in fresh processes ({', '.join(kinds)})", flush=True)
                result["compile"][arch] = compile_costs(arch, 64, precision, graphs, kinds)
                result["compile"][arch]["graph_folder"] = str(cache_folder(graphs).relative_to(cache))
            print(f"    {arch} 64x64: {', '.join(paths)} paths, {args.rounds} interleaved rounds", flush=True)
            result["training"].extend(compare_paths(arch, batches64, kd_targets, 64, paths, args.rounds, args.warmup,
                                                    graphs))
            if arch == "shallow_narrow" and have_ped2 and "old" in paths:
                # right after the step-only timing, so that both see the same machine load
                print("    shallow_narrow 64x64 fed by the prefetching sampler", flush=True)
                result["end_to_end"] = end_to_end(sampler64, data.train_index, kd_targets, max(args.steps, 3))
        print("    shallow_narrow 32x32", flush=True)
        result["training"].append(time_steps("shallow_narrow", batches32, kd_targets, 32, args.warmup, args.steps,
                                             args.budget))
        if have_ped2:
            result["memory"] = {"after_prepare_mb": info["peak_rss_mb_after_prepare"],
                                "after_pipeline_mb": after_pipeline, "after_training_mb": peak_rss_mb(),
                                "current_rss_mb": current_rss_mb(notes),
                                "note": "peak RSS (getrusage ru_maxrss) of the whole process, cumulative"}
            print("(d) teacher logits and disk ...", flush=True)
            result.update(bench_teacher_and_disk(dataset, data, info, cache, args.teacher_videos,
                                                 args.teacher_objects or None, notes))
    finally:
        if temporary:
            shutil.rmtree(cache, ignore_errors=True)
    return finish(result, summary_table, args.out, result["machine"]["cpu"])


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of scaling past one process: training with 1 and 2 torchrun processes, detection with 1 and 2 shards.

Usage::

    python bench/scale.py [--out bench/results/scale.json] [--repeats 2] [--objects 1536] [--quick]

Measured (written to the JSON with the machine (``machine_info``: CPU model, flags, cores), the package
versions, the date and the load average before and after every run):

(a) ``training``: ``ssmtl train`` on the synthetic default dataset (motion detector, EfficientNet-Lite0 logits
    at 128 px, all four tasks, ``shallow_narrow``, crop 32, batch 64, fp32, one epoch on ``--objects`` training
    objects), as

    * 1 process, 2 threads (the whole machine, what ``ssmtl train`` does today),
    * 1 process, 1 thread,
    * 2 processes x 1 thread (``torchrun --nproc_per_node 2 -m ssmtl_core train``, gloo).

    ``objects_per_s`` is the run's own figure (``train_summary.json``: training objects over the training loop's
    wall time, validation included); ``wall_s`` is the whole command (start-up, cached data, training).
(b) ``detection``: ``ssmtl detect`` with the motion detector (one thread per process) over every training and
    test video of UCSD Ped2 (``../shared``; the synthetic default set without it), into an empty cache, as one
    process and as two concurrent ``--shard 0/2`` and ``--shard 1/2`` processes. ``frames_per_s`` counts the
    frames over the wall time of the whole command(s); ``detect_frames_per_s`` over the detection loop alone.

The caches (detections, teacher logits) of (a) are filled once before any timing. Runs are interleaved
(1-2-1-2...) and repeated, so that the load of other work on a shared machine falls on both alike.
``--quick`` runs every part once on the tiny dataset to check the script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PED2 = REPO.parent / "shared" / "datasets" / "ucsd_ped2"
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from ssmtl_core.distributed import torchrun_command  # noqa: E402
from ssmtl_core.io import code_provenance, machine_info, package_versions, read_json  # noqa: E402

TRAINING = (("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1), ("1 process x 1 thread", 1, 1))


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(command: list[str], threads: int, cwd: Path = REPO) -> tuple[float, str]:
    """Run a command with ``threads`` OpenMP threads; its wall seconds and output (raises on failure)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, done.stdout + done.stderr


def training(root: Path, cache: Path, work: Path, objects: int, repeats: int) -> list[dict]:
    """(a): the three ways of training, interleaved, ``repeats`` times."""
    rows = []
    for repeat in range(repeats):
        for name, procs, threads in TRAINING:
            settings = work / f"train_{procs}x{threads}.yaml"
            settings.write_text(json.dumps({
                "sample": {"max_train_objects": objects},
                "train": {"arch": "shallow_narrow", "epochs": 1, "batch_size": 64, "precision": "fp32",
                          "device": "cpu", "num_threads": threads}}) + "\n")
            out = work / f"run_{procs}x{threads}_{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            args = ["train", "--dataset", "synthetic", "--root", str(root), "--cache", str(cache), "--params",
                    str(settings), "--out", str(out)]
            command = (torchrun_command(procs, args) if procs > 1
                       else [sys.executable, "-m", "ssmtl_core", *args])
            before = load()
            wall, _ = run(command, threads)
            summary = read_json(out / "train_summary.json")
            rows.append({"setup": name, "processes": procs, "threads_per_process": threads, "repeat": repeat,
                         "objects_per_s": summary["objects_per_s"], "train_objects": summary["train_objects"],
                         "loop_s": summary["seconds"], "wall_s": round(wall, 1), "load_before": before,
                         "load_after": load()})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def detection(dataset: str, root: Path, work: Path, repeats: int) -> list[dict]:
    """(b): one process and two concurrent shards, interleaved, into an empty cache each time."""
    rows = []
    for repeat in range(repeats):
        for shards in (1, 2):
            cache = work / f"detect_{shards}_{repeat}"
            shutil.rmtree(cache, ignore_errors=True)
            base = [sys.executable, "-m", "ssmtl_core", "detect", "--dataset", dataset, "--root", str(root),
                    "--detector", "motion", "--cache", str(cache)]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1", "TQDM_DISABLE": "1",
                   "PYTHONWARNINGS": "ignore"}
            before = load()
            start = time.perf_counter()
            children = [subprocess.Popen(base + ([f"--shard={i}/{shards}"] if shards > 1 else []), cwd=REPO,
                                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                        for i in range(shards)]
            outputs = [child.communicate()[0] for child in children]
            wall = time.perf_counter() - start
            if any(child.returncode for child in children):
                raise SystemExit("detection failed:\n" + "\n".join(o[-2000:] for o in outputs))
            # "detections: K video(s), F frames, B boxes in S s (R frames/s)"
            parts = [re.search(r"detections: \d+ video\(s\), (\d+) frames, \d+ boxes in ([\d.]+)s", o)
                     for o in outputs]
            frames = sum(int(p.group(1)) for p in parts)
            loop = max(float(p.group(2)) for p in parts)
            rows.append({"shards": shards, "repeat": repeat, "frames": frames, "wall_s": round(wall, 2),
                         "frames_per_s": round(frames / wall, 1), "detect_s": loop,
                         "detect_frames_per_s": round(frames / loop, 1), "load_before": before,
                         "load_after": load()})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "scale.json"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--objects", type=int, default=1536, help="training objects of the timed epoch")
    parser.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    parser.add_argument("--quick", action="store_true", help="tiny data, one repeat: check the script")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="ssmtl-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    size = "tiny" if args.quick else "default"
    repeats = 1 if args.quick else args.repeats
    started = dt.datetime.now().isoformat(timespec="seconds")
    try:
        from ssmtl_core.config import apply_overrides, get_profile
        from ssmtl_core.data import open_dataset
        from ssmtl_core.data.synthetic import generate_synthetic
        from ssmtl_core.training_data import prepare_training_data

        root = work / f"synthetic-{size}"
        if not (root / "dataset.json").is_file():
            generate_synthetic(root, size=size, seed=0, progress=False)
        cache = work / "cache"
        profile = apply_overrides(get_profile("synthetic"), {"sample.max_train_objects": args.objects})
        prepare_training_data(open_dataset("synthetic", root), profile, cache, progress=False)  # fill the caches
        train_rows = training(root, cache, work, args.objects, repeats)
        detect_on = ("ped2", PED2) if PED2.is_dir() and not args.quick else ("synthetic", root)
        detect_rows = detection(*detect_on, work, repeats)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    summary = {
        "training_objects_per_s": {name: _median([r["objects_per_s"] for r in train_rows if r["setup"] == name])
                                   for name, _, _ in TRAINING},
        "detection_frames_per_s": {f"{n} shard(s)": _median([r["frames_per_s"] for r in detect_rows
                                                             if r["shards"] == n]) for n in (1, 2)},
        "detection_loop_frames_per_s": {f"{n} shard(s)": _median([r["detect_frames_per_s"] for r in detect_rows
                                                                  if r["shards"] == n]) for n in (1, 2)},
    }
    result = {"benchmark": "scale", "quick": args.quick, "started": started,
              "finished": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
              "versions": package_versions(), "code": code_provenance(), "training_data": f"synthetic {size}, {args.objects} objects",
              "detection_data": detect_on[0], "summary": summary, "training": train_rows,
              "detection": detect_rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

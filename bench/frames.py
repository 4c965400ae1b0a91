"""Decoded-frame stores of video files: disk per frame and the sampler's speed, raw memory map vs JPEG tiles.

Usage::

    python bench/frames.py [--frames 300] [--out bench/results/frames.json]

Avenue and ShanghaiTech come as video files, which are decoded once into the cache before training samples
crops from them. A raw store keeps every pixel (0.69 MB per 640x360 colour frame: ~21 GB for Avenue); the
default tile store keeps 128x128 JPEG tiles and decodes only those under a box. No Avenue copy is on this
machine, so the video here is built from real UCSD Ped2 frames (``../shared``) upscaled to Avenue's 640x360
and given colour (a random tint per frame region that moves with the scene), or, without ``../shared``, a
synthetic colour scene; the JPEG size depends on the content, so real Avenue frames may compress differently.

Measured in one run: bytes per frame of each store, the time to build it, and objects/s of
:meth:`SequenceSampler.make_batch` (the crops behind all four tasks' inputs, 64x64, batch 64) reading each
store, for the same objects, and of shallow_narrow training steps fed by the trainer's prefetching sampler from
each store (does reading it slow training down?). Then the cache size of whole datasets at the measured
bytes per frame.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ssmtl_core.config import SampleConfig
from ssmtl_core.data.frames import load_frames
from ssmtl_core.data.layouts import Video, VideoFileSource
from ssmtl_core.io import code_provenance, machine_info
from ssmtl_core.samples import ObjectIndex, SequenceSampler
from ssmtl_core.train import batch_rng

REPO = Path(__file__).resolve().parent.parent
PED2 = REPO.parent / "shared" / "datasets" / "ucsd_ped2"
#: Frames (train + test) and frame size of the video-file benchmarks, from their official releases.
DATASETS = {"avenue": (15328 + 15324, (360, 640)), "shanghaitech": (274515 + 42883, (480, 856))}


def build_video(path: Path, count: int) -> Path:
    """A 640x360 colour MJPG video (quality 95) of real Ped2 frames upscaled, or a synthetic scene."""
    frames = sorted((PED2 / "training" / "frames" / "01").glob("*.jpg")) if PED2.is_dir() else []
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 360))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    tint = cv2.resize(np.random.default_rng(0).uniform(0.7, 1.3, (6, 10, 3)).astype(np.float32), (640, 360))
    yy, xx = np.mgrid[:360, :640]
    for k in range(count):
        if frames:
            grey = cv2.imread(str(frames[k % len(frames)]), cv2.IMREAD_GRAYSCALE)
            image = cv2.resize(grey, (640, 360), interpolation=cv2.INTER_CUBIC)[..., None].astype(np.float32) * tint
        else:
            image = np.stack([(xx * 0.5 + k) % 256, (yy * 0.7) % 256, (xx + yy) * 0.2 % 256], axis=2) * tint
        writer.write(np.clip(image, 0, 255).astype(np.uint8))
    writer.release()
    return path


def sampler_speed(frames, rounds: int = 8) -> float:
    """Objects/s of make_batch: 64 person-sized boxes (40x90 to 80x180 px) at random places and frames."""
    rng = np.random.default_rng(1)
    n = 64 * rounds
    size = rng.uniform(40, 80, n)
    x, y = rng.uniform(0, 640 - 80, n), rng.uniform(0, 360 - 180, n)
    boxes = np.stack([x, y, x + size, y + 2.25 * size], axis=1).astype(np.float32)
    objects = ObjectIndex(np.zeros(n, np.int32), rng.integers(9, len(frames) - 9, n).astype(np.int32), boxes,
                          np.arange(n))
    sampler = SequenceSampler([frames], objects, SampleConfig(crop_size=64), ("aot", "irr", "mid", "kd"))
    sampler.make_batch(np.arange(64), batch_rng(0, 0, 0))  # warm-up
    start = time.perf_counter()
    for b in range(rounds):
        sampler.make_batch(np.arange(b * 64, (b + 1) * 64), batch_rng(0, 1, b))
    return n / (time.perf_counter() - start)


def training_speed(frames, steps: int = 4) -> float:
    """Objects/s of shallow_narrow training steps (bf16 where native, else fp32) fed by the trainer's prefetching
    sampler from this store: whether reading the store slows training down."""
    import torch

    from ssmtl_core.model import SSMTLModel
    from ssmtl_core.precision import BF16, FP32, native_bf16, training_step
    from ssmtl_core.train import epoch_batches

    rng = np.random.default_rng(2)
    n = 64 * (steps + 1)
    size = rng.uniform(40, 80, n)
    x, y = rng.uniform(0, 640 - 80, n), rng.uniform(0, 360 - 180, n)
    boxes = np.stack([x, y, x + size, y + 2.25 * size], axis=1).astype(np.float32)
    objects = ObjectIndex(np.zeros(n, np.int32), rng.integers(9, len(frames) - 9, n).astype(np.int32), boxes,
                          np.arange(n))
    tasks = ("aot", "irr", "mid", "kd")
    sampler = SequenceSampler([frames], objects, SampleConfig(crop_size=64), tasks)
    torch.manual_seed(0)
    model = SSMTLModel("shallow_narrow", 1080, kd_probabilities=80).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    targets = rng.random((n, 1080)).astype(np.float32)
    precision = BF16 if native_bf16() else FP32
    batches = epoch_batches(sampler, np.arange(n), 64, 0, 0)
    training_step(model, optimizer, next(batches), tasks, targets, 0.5, torch.device("cpu"), precision)
    start = time.perf_counter()
    for batch in batches:
        training_step(model, optimizer, batch, tasks, targets, 0.5, torch.device("cpu"), precision)
    return 64 * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "frames.json"))
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="ssmtl-bench-frames-") as tmp:
        video = Video("01", "train", VideoFileSource(build_video(Path(tmp) / "01.avi", args.frames)))
        rows = {}
        for store in ("raw", "tiles"):
            start = time.perf_counter()
            frames = load_frames(video, Path(tmp) / store, store=store)
            seconds = time.perf_counter() - start
            files = [p for p in (Path(tmp) / store).rglob("*") if p.is_file() and not p.name.startswith(".")]
            size = sum(p.stat().st_size for p in files)
            rows[store] = {"bytes_per_frame": round(size / args.frames), "build_frames_per_s": round(args.frames / seconds, 1)}
        for _ in range(2):  # interleaved, so both see the same load; the best of two
            for store in ("raw", "tiles"):
                frames = load_frames(video, Path(tmp) / store, store=store)
                speed = sampler_speed(frames)
                rows[store]["sampler_objects_per_s"] = max(rows[store].get("sampler_objects_per_s", 0), round(speed, 1))
                speed = training_speed(frames)
                rows[store]["training_objects_per_s"] = max(rows[store].get("training_objects_per_s", 0),
                                                            round(speed, 1))
    ratio = rows["raw"]["bytes_per_frame"] / rows["tiles"]["bytes_per_frame"]
    datasets = {name: {"frames": count, "raw_gb": round(count * h * w * 3 / 1e9, 1),
                       "tiles_gb_estimate": round(count * h * w * 3 / ratio / 1e9, 1)}
                for name, (count, (h, w)) in DATASETS.items()}
    result = {"benchmark": "decoded-frame stores of video files (640x360 colour)", "date": dt.date.today().isoformat(),
              "machine": machine_info(), "code": code_provenance(), "source": "Ped2 frames upscaled and tinted" if PED2.is_dir() else "synthetic",
              "frames": args.frames, "stores": rows, "raw_over_tiles": round(ratio, 1), "datasets": datasets}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"CPU: {result['machine']['cpu']} ({', '.join(result['machine'].get('cpu_flags', []))})")
    for store, row in rows.items():
        print(f"{store:<6} {row['bytes_per_frame'] / 1e3:8.1f} KB/frame  built at {row['build_frames_per_s']:6.1f} "
              f"frames/s  sampler {row['sampler_objects_per_s']:7.1f} objects/s  training (shallow_narrow, fed by it) "
              f"{row['training_objects_per_s']:6.1f} objects/s")
    for name, row in datasets.items():
        print(f"{name:<13} raw {row['raw_gb']:6.1f} GB  tiles ~{row['tiles_gb_estimate']:5.1f} GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

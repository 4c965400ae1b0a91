"""The GPU run: a CUDA smoke test, the paper's protocol for the four presets on Ped2, and scoring speed.

The GPU machine gets the working tree and what ``carry`` names (64 MiB per call together), and has PyTorch,
OpenCV, scikit-learn and friends but neither ultralytics, OpenVINO nor the EfficientNet-Lite0 package. So the
data travel as a *bundle* built here, on the CPU, by the project's own pipeline, and the GPU machine never
loads YOLO or the teacher::

    # 1. here, once (minutes: YOLO detections and teacher logits of every training object, unless cached)
    .venv/bin/python bench/gpu_run.py prepare --data-root ../shared/datasets/ucsd_ped2 \\
        --detector-weights ../shared/weights/yolov8n_int8_openvino_model          # -> .gpu/ped2
    # 2. on the GPU machine (the device tool): run(command="bash bench/gpu_run.sh", carry=[".gpu"],
    #    timeout_s=600), then give_back; its files come back from $OUT: copy gpu.json to bench/results/
    #    and run bench/summarize.py
    # 0. here, any time: the whole run on the CPU on tiny data (about a minute; tests/test_gpu_run.py)
    bash bench/gpu_run.sh --dry

A bundle (``.gpu/<name>/``, ignored by git) holds:

* ``bundle.json``: the profile (``--full``: every training object, 30 epochs), the dataset's summary, the
  cache keys the data came from, the videos, and how the frames and targets were packed;
* ``frames/{train,test}_NNN.mp4``: every frame of every video, MPEG-4 Part 2 at OpenCV's highest quality
  (Ped2: about 3.7 kB a frame, PSNR about 41 dB against the original JPEGs, whose own noise is most of the
  difference). The JPEGs (109 MB) do not fit a call; training and scoring on the GPU see these re-encoded
  frames, which is the one way the GPU run's data differ from the CPU runs';
* ``train.npz``: the training objects (video, frame, box, detection row), the 85/15 split and the distillation
  targets, packed: the teacher logits in 6 bits per value, per object from their min to their max (on Ped2's
  30k objects: error 0.039 on average, 0.124 at most, against logits of mean magnitude 1.15; 8 bits would not
  fit a call), the detector's class scores in steps of 1/255;
* ``test.npz``: the test detections (boxes, scores, classes, the 80 class scores in steps of 1/255), the
  teacher logits of the class-agnostic test objects (none with YOLO), and the frame labels.

``prepare`` ends by saying how much a device call would carry (the working tree, about 19 MiB, and ``.gpu``)
and fails when that passes the 64 MiB a call may carry.

``run`` does, in order, within ``--minutes`` (9: the issue allows 12, but one device call runs 10 minutes at
most, and a session has 15 minutes of device time, the machine's start included):

1. **smoke**: ``shallow_narrow`` one epoch on tiny data (the bundle's first 256 training objects), on CUDA
   with bf16 autocast (``train.precision=bf16``); its losses must be finite;
2. **protocol**: the four presets at once (one process each, one GPU), 30 epochs on every training object of
   the Ped2 bundle, ``train.precision=auto`` (bf16 on CUDA), with ``train.budget_minutes`` set to the time left
   (whole epochs while they fit): a preset that cannot finish 30 epochs says how many it ran;
3. **scoring**: each preset's ``best.pt`` scores every test object, one preset at a time (after a warm-up
   video): frames/s end to end from the video file (decoding, crops, the network, frame scores), next to the
   paper's 51 and our target of 500, and the micro / macro frame AUC of the protocol's model. Detection is not
   in the figure: YOLO does not run there (its boxes are the cached ones).

The results go to ``--results`` (``$OUT/gpu.json`` on the GPU machine, ``bench/results/gpu.json`` by default),
where ``bench/summarize.py`` reads them. ``--dry`` runs the same steps on the CPU on a tiny bundle of the tiny
synthetic dataset (``prepare --dry``: a few objects per preset, a few frames of one test video) to check the
script before a GPU is lent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the GPU machine runs from the working tree, without installing

from ssmtl_core.config import ARCHITECTURES, apply_overrides, profile_from_dict  # noqa: E402
from ssmtl_core.detections import Detections  # noqa: E402
from ssmtl_core.io import code_provenance, machine_info, package_versions, read_json, write_json  # noqa: E402
from ssmtl_core.samples import ObjectIndex  # noqa: E402
from ssmtl_core.training_data import TrainingData  # noqa: E402

PAPER_FPS = 51.0
TARGET_FPS = 500.0
FULL = {"sample.max_train_objects": 0, "train.epochs": 30,  # --full (FRAME_STRIDE unset: the profile's stride)
        "train.schedule": "constant"}  # the paper's constant learning rate
TINY = {"sample.crop_size": 32, "train.teacher_size": 32, "train.batch_size": 16}
FOURCC = "mp4v"
CARRY_LIMIT = 64 * 2**20  # what one device call may carry: the working tree and the carried folders
SMOKE_OBJECTS = 256
LOGIT_BITS = 6  # the teacher logits of Ped2's 30k objects: 22 MiB at 6 bits (28 MiB at 8 would not fit)


# -- packing (here, on the CPU) -------------------------------------------------------------------------------


def write_video(path: Path, frames: np.ndarray) -> float:
    """Write ``(T, H, W, C)`` uint8 frames as MPEG-4; return the PSNR (dB) of the decoded frames."""
    height, width, channels = frames.shape[1:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), 25, (width, height),
                             isColor=channels == 3)
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {FOURCC} video to {path}.")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 100)
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., 0] if channels == 1 else frame))
    writer.release()
    decoded = read_video(path, channels)
    if decoded.shape != frames.shape:
        raise SystemExit(f"{path}: wrote {frames.shape}, read back {decoded.shape}.")
    error = np.mean((decoded.astype(np.float64) - frames) ** 2)
    return float("inf") if error == 0 else float(10 * np.log10(255.0 ** 2 / error))


def read_video(path: Path, channels: int) -> np.ndarray:
    """Every frame of an MPEG-4 file as ``(T, H, W, channels)`` uint8."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., :channels] if frame.ndim == 3 else frame[..., None])
    capture.release()
    if not frames:
        raise SystemExit(f"cannot decode {path} (OpenCV without an MPEG-4 decoder?).")
    return np.stack(frames)


def _pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """(N, D) uint8 values below ``2**bits`` -> (N, ceil(D * bits / 8)) uint8, ``bits`` bits each."""
    planes = np.unpackbits(values[..., None], axis=-1)[..., 8 - bits:]
    return np.packbits(planes.reshape(len(values), -1), axis=-1)


def _unpack_bits(packed: np.ndarray, bits: int, width: int) -> np.ndarray:
    planes = np.zeros((len(packed), width, 8), np.uint8)
    planes[..., 8 - bits:] = np.unpackbits(packed, axis=-1)[:, :width * bits].reshape(len(packed), width, bits)
    return np.packbits(planes, axis=-1)[..., 0]


def _quantize(values: np.ndarray, logits: int, bits: int = LOGIT_BITS) -> dict[str, np.ndarray]:
    """Packed distillation targets: the logit part per object from its min to its max in ``2**bits`` levels, the
    detector's class scores in 1/255 steps."""
    packed: dict[str, np.ndarray] = {}
    head, tail = values[:, :logits], values[:, logits:]
    if logits:
        low = head.min(1, keepdims=True)
        step = np.maximum(head.max(1, keepdims=True) - low, 1e-6) / (2 ** bits - 1)
        levels = np.round((head - low) / step).astype(np.uint8)
        packed.update(kd_logits=_pack_bits(levels, bits), kd_bits=np.array(bits), kd_low=low.astype(np.float32),
                      kd_step=step.astype(np.float32))
    if tail.shape[1]:
        packed["kd_scores"] = np.round(np.clip(tail, 0, 1) * 255).astype(np.uint8)
    return packed


def _dequantize(arrays: dict, logits: int, scores: int) -> np.ndarray:
    parts = []
    if logits:
        levels = _unpack_bits(arrays["kd_logits"], int(arrays["kd_bits"]), logits)
        parts.append(arrays["kd_low"] + levels.astype(np.float32) * arrays["kd_step"])
    if scores:
        parts.append(arrays["kd_scores"].astype(np.float32) / 255.0)
    return np.concatenate(parts, axis=1).astype(np.float32)


def prepare(name: str, dataset, profile, cache_root: Path, out: Path, log=print) -> Path:
    """Build the bundle ``out/name`` of ``dataset`` with ``profile``'s training data (caches reused)."""
    from ssmtl_core.data.frames import load_frames
    from ssmtl_core.detect import detect_dataset
    from ssmtl_core.teachers import TeacherCache, load_teacher
    from ssmtl_core.training_data import prepare_training_data

    folder = out / name
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    data = prepare_training_data(dataset, profile, cache_root, log=log)
    detections = detect_dataset(dataset, profile.detect, cache_root, splits=("test",), log=log)
    layout = data.kd_layout
    np.savez_compressed(folder / "train.npz", video=data.objects.video, frame=data.objects.frame,
                        boxes=data.objects.boxes, row=data.objects.row, train_index=data.train_index,
                        val_index=data.val_index,
                        **({"has_classes": data.kd_has_classes} if data.kd_has_classes is not None else {}),
                        **(_quantize(data.kd_targets, layout["logits"]) if data.kd_targets is not None else {}))
    psnr, videos = [], {"train": [], "test": []}
    for v, video in enumerate(dataset.train):
        path = folder / "frames" / f"train_{v:03d}.mp4"
        psnr.append(write_video(path, data.frames[v]))
        videos["train"].append({"name": video.name, "file": path.name, "frames": int(video.num_frames),
                                "channels": int(data.frames[v].shape[-1])})
    teacher = None
    test: dict[str, list] = {k: [] for k in ("video", "frame", "boxes", "scores", "classes", "class_scores")}
    logits, labels = [], []
    for v, video in enumerate(dataset.test):
        frames = load_frames(video, cache_root / dataset.cache_id / "frames")
        path = folder / "frames" / f"test_{v:03d}.mp4"
        psnr.append(write_video(path, frames))
        dets = detections.load(video)
        for key in ("frame", "boxes", "scores", "classes", "class_scores"):
            test[key].append(getattr(dets, key))
        test["video"].append(np.full(len(dets), v, np.int32))
        agnostic = np.flatnonzero(dets.classes < 0)
        rows = np.zeros((len(dets), 1000), np.float16)
        if layout["logits"] and len(agnostic):  # the class-agnostic objects' score compares teacher logits
            if teacher is None:
                teacher = TeacherCache(cache_root, dataset, load_teacher(profile.train.teacher,
                                                                         size=profile.train.teacher_size),
                                       detections)
            rows[agnostic] = teacher.logits(video, frames, dets.frame[agnostic], dets.boxes[agnostic], agnostic)
        logits.append(rows)
        labels.append(np.asarray(video.labels, np.uint8))
        videos["test"].append({"name": video.name, "file": path.name, "frames": int(video.num_frames),
                               "channels": int(frames.shape[-1]), "frame_size": list(video.frame_size)})
    test_arrays = {k: np.concatenate(v) for k, v in test.items()}
    test_arrays["class_scores"] = np.round(test_arrays["class_scores"].astype(np.float32) * 255).astype(np.uint8)
    np.savez_compressed(folder / "test.npz", **test_arrays, teacher_logits=np.concatenate(logits),
                        labels=np.concatenate(labels))
    write_json(folder / "bundle.json", {
        "name": name, "profile": profile.to_dict(), "dataset": data.dataset, "caches": data.caches,
        "kd_layout": layout, "videos": videos, "frames": {"codec": FOURCC, "quality": 100,
                                                          "psnr_db_mean": round(float(np.mean(psnr)), 2),
                                                          "psnr_db_min": round(float(np.min(psnr)), 2)},
        "train_objects": int(len(data.train_index)), "val_objects": int(len(data.val_index)),
        "made": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info()})
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    log(f"bundle {folder}: {size / 2**20:.1f} MiB, {len(data.train_index)} training objects, frames at "
        f"{np.mean(psnr):.1f} dB PSNR")
    return folder


# -- unpacking (on the GPU machine) ---------------------------------------------------------------------------


@dataclass
class TestVideo:
    name: str
    path: Path
    channels: int
    frame_size: tuple[int, int]
    detections: Detections
    teacher_logits: np.ndarray
    labels: np.ndarray


class Bundle:
    """A bundle folder: its profile, its training data and its test videos."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "bundle.json").is_file():
            raise SystemExit(f"no bundle at {self.folder}: build it first (bench/gpu_run.py prepare, see its "
                             "docstring) and carry .gpu to the GPU machine.")
        self.meta = read_json(self.folder / "bundle.json")
        self.profile = profile_from_dict(self.meta["profile"])

    def training_data(self, max_objects: int = 0) -> TrainingData:
        """The training data as :func:`ssmtl_core.training_data.prepare_training_data` made it (frames
        re-encoded, targets unpacked); ``max_objects`` > 0 keeps that many training and validation objects."""
        arrays = dict(np.load(self.folder / "train.npz"))
        layout = self.meta["kd_layout"]
        frames = [read_video(self.folder / "frames" / v["file"], v["channels"]) for v in self.meta["videos"]["train"]]
        kd = (_dequantize(arrays, layout["logits"], layout["class_scores"])
              if layout["logits"] or layout["class_scores"] else None)
        train_index, val_index = arrays["train_index"], arrays["val_index"]
        if max_objects:
            train_index, val_index = train_index[:max_objects], val_index[:max(1, max_objects // 4)]
        return TrainingData(frames, ObjectIndex(arrays["video"], arrays["frame"], arrays["boxes"], arrays["row"]),
                            kd, layout, train_index, val_index, self.meta["caches"], arrays.get("has_classes"),
                            self.meta["dataset"], None)

    def test_videos(self) -> list[TestVideo]:
        arrays = dict(np.load(self.folder / "test.npz"))
        videos, start = [], 0
        for v, info in enumerate(self.meta["videos"]["test"]):
            rows = arrays["video"] == v
            class_scores = (arrays["class_scores"][rows].astype(np.float32) / 255).astype(np.float16)
            dets = Detections(arrays["frame"][rows], arrays["boxes"][rows], arrays["scores"][rows],
                              arrays["classes"][rows], class_scores)
            videos.append(TestVideo(info["name"], self.folder / "frames" / info["file"], info["channels"],
                                    tuple(info["frame_size"]), dets, arrays["teacher_logits"][rows],
                                    arrays["labels"][start:start + info["frames"]]))
            start += info["frames"]
        return videos


def train_one(bundle: str, arch: str, out: str, epochs: int, budget_minutes: float, device: str, precision: str,
              max_objects: int) -> dict:
    """Train ``arch`` on a bundle with its profile (the run folder as ``ssmtl train`` leaves it)."""
    from ssmtl_core.train import train

    source = Bundle(bundle)
    profile = apply_overrides(source.profile, {"train.arch": arch, "train.epochs": epochs,
                                               "train.budget_minutes": budget_minutes, "train.device": device,
                                               "train.precision": precision})
    return train(source.training_data(max_objects), profile, out, progress=False)


def score(run_dir: Path, videos: list[TestVideo], device: str, warm_up: bool = True) -> dict:
    """Score every test object with ``run_dir/best.pt``: frames/s end to end from the video files, and the AUCs.

    With ``warm_up``, the first video is scored once before the timed pass (CUDA start-up, cuDNN's algorithm
    choice).
    """
    import torch

    from ssmtl_core.checkpoint import load_checkpoint, model_from_checkpoint
    from ssmtl_core.metrics import macro_auc, micro_auc
    from ssmtl_core.score import Scorer, score_detections, score_video

    state = load_checkpoint(run_dir / "best.pt", device)
    profile = profile_from_dict(state["profile"])
    scorer = Scorer(model_from_checkpoint(state, device), profile.sample, state["kd_layout"], device,
                    calibration=state.get("calibration"), tasks=profile.train.tasks)

    def one(video: TestVideo) -> tuple[np.ndarray, int]:
        frames = read_video(video.path, video.channels)
        scores = score_detections(scorer, frames, video.detections, lambda rows: video.teacher_logits[rows])
        tasks = tuple(t for t in profile.train.tasks if t in scores.tasks)
        result = score_video(scores, tasks, len(frames), video.frame_size, profile.score)
        return result.frame_scores, len(frames)

    if warm_up:
        one(videos[0])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    per_video, frames = [], 0
    for video in videos:
        frame_scores, count = one(video)
        per_video.append(frame_scores)
        frames += count
    seconds = time.perf_counter() - start
    objects = sum(len(v.detections) for v in videos)
    labels = [v.labels for v in videos]
    aucs = {}
    for name, metric in (("micro_auc", micro_auc), ("macro_auc", macro_auc)):
        try:
            aucs[name] = round(float(metric(labels, per_video)), 4)
        except ValueError:  # a single class among the scored frames (a dry run's one video)
            aucs[name] = None
    return {"frames": frames, "objects": objects, "seconds": round(seconds, 2),
            "frames_per_s": round(frames / seconds, 1), "objects_per_s": round(objects / seconds, 1),
            "paper_frames_per_s": PAPER_FPS, "target_frames_per_s": TARGET_FPS,
            "meets_target": frames / seconds >= TARGET_FPS, "backend": scorer.backend, **aucs}


# -- the run --------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import torch

    deadline = time.monotonic() + args.minutes * 60
    device = "cpu" if args.dry else "cuda"
    if not args.dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible: run with --dry on a CPU.")
    gpu = Path(args.gpu)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    protocol = gpu / ("tiny" if args.dry else "ped2")
    per_preset = 16 if args.dry else 0  # a dry run trains one batch per preset
    result: dict = {"benchmark": "gpu_run", "dry": args.dry, "started": dt.datetime.now().isoformat(timespec="seconds"),
                    "machine": machine_info(), "versions": package_versions(), "code": code_provenance(),
                    "minutes": args.minutes,
                    "bundle": Bundle(protocol).meta}
    if device == "cuda":
        result["machine"]["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)

    def save() -> None:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.results, result)

    # 1. smoke: CUDA, bf16 autocast, tiny data (the first objects of the bundle)
    start = time.perf_counter()
    smoke = train_one(str(protocol), "shallow_narrow", str(runs / "smoke"), 1, 0.0, device, "bf16",
                      per_preset or SMOKE_OBJECTS)
    history = read_json(runs / "smoke" / "history.json")
    finite = all(np.isfinite(v) for h in history for k, v in h.items() if k.startswith(("train_", "val_")))
    result["smoke"] = {"ok": finite and smoke["precision"] == "bf16", "seconds": round(time.perf_counter() - start, 1),
                       "precision": smoke["precision"], "device": smoke["device"], "history": history}
    print(f"smoke: {result['smoke']['ok']} ({smoke['precision']} on {smoke['device']}, "
          f"{result['smoke']['seconds']} s)", flush=True)
    save()
    if not result["smoke"]["ok"]:
        raise SystemExit(f"the smoke run failed: {history}")

    # 2. the protocol: four presets at once
    archs = args.archs.split(",")
    left = (deadline - time.monotonic()) / 60 - args.reserve_minutes
    budget = round(max(left, 0.5), 2)
    print(f"protocol: {', '.join(archs)} at once, {budget} min of training each", flush=True)
    children = {}
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // len(archs)))}
    for arch in archs:
        log = open(runs / f"{arch}.log", "w")  # closed once the process ends
        children[arch] = (subprocess.Popen(
            [sys.executable, __file__, "train-one", "--bundle", str(protocol), "--arch", arch, "--out",
             str(runs / arch), "--epochs", str(1 if args.dry else 30), "--budget-minutes", str(budget),
             "--device", device, "--precision", "auto", "--max-objects", str(per_preset)],
            stdout=log, stderr=subprocess.STDOUT, env=env), log)
    hard_stop = time.monotonic() + (budget + args.grace_minutes) * 60
    for child, log in children.values():
        try:
            child.wait(timeout=max(1.0, hard_stop - time.monotonic()))
        except subprocess.TimeoutExpired:  # Ctrl-C: it saves last.pt; best.pt holds its best whole epoch
            child.send_signal(signal.SIGINT)
            child.wait(timeout=60)
        log.close()
    result["protocol"] = {}
    for arch in archs:
        summary_file = runs / arch / "train_summary.json"
        summary = read_json(summary_file) if summary_file.is_file() else None
        history = runs / arch / "history.json"
        result["protocol"][arch] = {"summary": summary, "returncode": children[arch][0].returncode,
                                    "epochs_done": len(read_json(history)) if history.is_file() else 0,
                                    "log_tail": (runs / f"{arch}.log").read_text()[-1500:]}
        if summary:
            print(f"  {arch}: {summary['epochs']}/{summary['epochs_asked']} epochs, "
                  f"{summary['objects_per_s']} objects/s, best val {summary['best_val_loss']:.4f}", flush=True)
        else:
            print(f"  {arch}: no summary (exit {children[arch][0].returncode}); see {runs / arch}.log", flush=True)
    save()

    # 3. scoring speed and AUC, one preset at a time
    videos = Bundle(protocol).test_videos()
    if args.dry:  # the objects of a few frames of one video
        early = videos[0].detections.frame < 8
        videos = [replace(videos[0], detections=videos[0].detections.select(early),
                          teacher_logits=videos[0].teacher_logits[early])]
    result["scoring"] = {}
    for arch in archs:
        if not (runs / arch / "best.pt").is_file():
            continue
        result["scoring"][arch] = score(runs / arch, videos, device, warm_up=not args.dry)
        r = result["scoring"][arch]
        print(f"  {arch}: {r['frames_per_s']} frames/s ({r['objects_per_s']} objects/s, {r['backend']}), micro AUC "
              f"{r['micro_auc']}, macro AUC {r['macro_auc']}", flush=True)
        save()
    result["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    result["seconds"] = round(args.minutes * 60 - (deadline - time.monotonic()), 1)
    save()
    print(f"done in {result['seconds']} s -> {args.results}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build the bundles on the CPU (here)")
    p.add_argument("--data-root", help="the Ped2 folder (default: ../shared/datasets/ucsd_ped2)")
    p.add_argument("--detector-weights", help="YOLO weights (default: the ped2 profile's)")
    p.add_argument("--cache", default=str(REPO / "cache"), help="the cache folder to read and fill")
    p.add_argument("--out", default=str(REPO / ".gpu"))
    p.add_argument("--tiny-root", default=str(REPO / "data" / "synthetic-tiny"),
                   help="the tiny synthetic dataset (generated there when missing)")
    p.add_argument("--dry", action="store_true", help="the tiny bundle of the --dry run instead of Ped2's")
    p = sub.add_parser("run", help="the GPU run (or --dry on the CPU)")
    p.add_argument("--gpu", default=str(REPO / ".gpu"), help="the bundles' folder")
    p.add_argument("--runs", default=str(REPO / "runs" / "gpu"), help="the run folders (not carried)")
    p.add_argument("--results", default=str(REPO / "bench" / "results" / "gpu.json"))
    p.add_argument("--minutes", type=float, default=9.0,
                   help="the whole run's time (one device call runs 10 minutes at most)")
    p.add_argument("--reserve-minutes", type=float, default=2.0,
                   help="kept from the training budget for start-up, calibration and scoring")
    p.add_argument("--grace-minutes", type=float, default=0.75, help="past its budget, a preset is interrupted")
    p.add_argument("--archs", default=",".join(ARCHITECTURES))
    p.add_argument("--dry", action="store_true", help="on the CPU, on the tiny bundle")
    p = sub.add_parser("train-one", help=argparse.SUPPRESS)
    for flag in ("--bundle", "--arch", "--out", "--device", "--precision"):
        p.add_argument(flag, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--budget-minutes", type=float, default=0.0)
    p.add_argument("--max-objects", type=int, default=0)
    args = parser.parse_args(argv)

    if args.command == "train-one":
        print(json.dumps(train_one(args.bundle, args.arch, args.out, args.epochs, args.budget_minutes, args.device,
                                   args.precision, args.max_objects)), flush=True)
        return 0
    if args.command == "run":
        return run(args)
    from ssmtl_core.config import get_profile, load_profile
    from ssmtl_core.data import open_dataset
    from ssmtl_core.data.synthetic import generate_synthetic

    out, cache, root = Path(args.out), Path(args.cache), Path(args.tiny_root)
    if args.dry:
        if not (root / "dataset.json").is_file():
            generate_synthetic(root, size="tiny", seed=0, progress=False)
        prepare("tiny", open_dataset("synthetic", root), apply_overrides(get_profile("synthetic"), TINY), cache, out)
    else:
        overrides = dict(FULL)
        if args.detector_weights:
            overrides["detect.weights"] = args.detector_weights
        data_root = Path(args.data_root or REPO.parent / "shared" / "datasets" / "ucsd_ped2")
        prepare("ped2", open_dataset("ped2", data_root), load_profile("ped2", overrides=overrides), cache, out)
    travels = tree_bytes() + sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"a device call would carry {travels / 2**20:.1f} MiB (the working tree and {out}) of its 64 MiB"
          + ("" if travels < CARRY_LIMIT else ": TOO MUCH, the call would be refused"), flush=True)
    return 0 if travels < CARRY_LIMIT or args.dry else 1


def tree_bytes() -> int:
    """The bytes of the working tree that a device call sends (tracked and untracked files git does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True).stdout.split(b"\0")
    return sum((REPO / name.decode()).stat().st_size for name in listed if name and (REPO / name.decode()).is_file())


if __name__ == "__main__":
    raise SystemExit(main())

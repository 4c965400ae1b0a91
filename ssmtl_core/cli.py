"""The ``ssmtl`` command line: every stage of the study, one sub-command each.

``ssmtl info | download | synth | detect | model | train | evaluate | score-video``. Flags map onto the
dataclasses of :mod:`ssmtl_core.config` (``--params FILE.yaml`` loads a profile file first; flags given on the
command line win). Problems a user can fix end in one message and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import ARCHITECTURES, DATASETS, load_profile
from .errors import SSMTLError

DEFAULT_CACHE = os.environ.get("SSMTL_CACHE", "cache")


def _add_dataset(parser: argparse.ArgumentParser, root_required: bool = True) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS,
                        help="dataset profile; the layout is recognised from the folder")
    parser.add_argument("--root", required=root_required, help="the dataset folder")


def _add_detect(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detection")
    group.add_argument("--detector", choices=("yolo", "motion"), help="object detector (default: the profile's)")
    group.add_argument("--weights", help="YOLO weights: a name (yolov3u.pt), a .pt file or an exported folder")
    group.add_argument("--conf", type=float, help="confidence threshold of kept boxes")
    group.add_argument("--tiles", type=int, choices=(1, 2, 4), help="frames packed into one YOLO input (speed)")
    group.add_argument("--cache", default=DEFAULT_CACHE, help="cache folder (default: ./cache or $SSMTL_CACHE)")
    group.add_argument("--params", help="YAML file of settings (sections detect/sample/train/score)")


def _profile(args: argparse.Namespace, extra: dict | None = None):
    overrides = {"detect.detector": getattr(args, "detector", None), "detect.weights": getattr(args, "weights", None),
                 "detect.conf": getattr(args, "conf", None), "detect.tiles": getattr(args, "tiles", None)}
    overrides.update(extra or {})
    return load_profile(args.dataset, getattr(args, "params", None), overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssmtl", description="SSMTL (CVPR 2021) video anomaly detection study")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="videos, frames and abnormal frames of a dataset")
    _add_dataset(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("download", help="download and unpack a dataset from its official page")
    p.add_argument("--dataset", required=True, choices=("ped2", "avenue", "shanghaitech"))
    p.add_argument("--root", required=True, help="where to put the dataset")

    p = sub.add_parser("synth", help="generate the synthetic surveillance dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", default="default", choices=("tiny", "small", "default"))
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("detect", help="detect objects in every frame and cache them")
    _add_dataset(p)
    _add_detect(p)
    p.add_argument("--split", choices=("train", "test", "all"), default="all")
    p.add_argument("--videos", help="comma-separated video names (default: all)")
    p.add_argument("--force", action="store_true", help="recompute cached videos")
    p.add_argument("--device", default="cpu", help="torch device for .pt weights")

    p = sub.add_parser("model", help="print the layers of an architecture")
    p.add_argument("--arch", required=True, choices=ARCHITECTURES)
    p.add_argument("--kd-dim", type=int, default=1080, help="length of the distillation target")
    p.add_argument("--crop-size", type=int, default=64)

    p = sub.add_parser("train", help="train the 3D CNN on the four proxy tasks (resumes an interrupted run)")
    _add_dataset(p)
    _add_detect(p)
    p.add_argument("--arch", choices=ARCHITECTURES)
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", required=True, help="run folder (best.pt, last.pt, history.csv, run.json)")
    p.add_argument("--tasks", help="comma-separated subset of aot,irr,mid,kd (the ablation)")
    p.add_argument("--teacher", choices=("efficientnet_lite0", "resnet50", "none"))
    p.add_argument("--teacher-weights", help="state dict of the ImageNet teacher")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--frame-stride", type=int, help="training objects from every k-th frame")
    p.add_argument("--max-objects", type=int, help="cap on training objects")
    p.add_argument("--crop-size", type=int, help="crop side (64 in the paper)")

    p = sub.add_parser("evaluate", help="score a trained run and write metrics.json")
    p.add_argument("--run", required=True, help="run folder written by ssmtl train")
    p.add_argument("--root", help="dataset folder (default: the one the run used)")
    p.add_argument("--cache", help="cache folder (default: the one the run used)")
    p.add_argument("--out", help="output folder (default: the run folder)")
    p.add_argument("--device", default="auto")
    p.add_argument("--teacher-weights", help="state dict of the ImageNet teacher")

    p = sub.add_parser("score-video", help="score a video file with a trained model")
    p.add_argument("video", help="an .mp4/.avi file (or a folder of frames)")
    p.add_argument("--checkpoint", required=True, help="best.pt of a trained run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--detector", choices=("yolo", "motion"), help="default: the checkpoint's")
    p.add_argument("--weights", help="YOLO weights (default: the checkpoint's)")
    p.add_argument("--conf", type=float)
    p.add_argument("--device", default="auto")
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="annotated video format")
    p.add_argument("--teacher-weights", help="state dict of the ImageNet teacher")
    return parser


def _cmd_info(args: argparse.Namespace) -> int:
    from .data import open_dataset

    summary = open_dataset(args.dataset, args.root).summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['name']} ({summary['layout']}) at {summary['root']}, frames {summary['frame_size'][1]}x"
              f"{summary['frame_size'][0]}")
        print(f"  train: {summary['train']['videos']} videos, {summary['train']['frames']} frames")
        test = summary["test"]
        print(f"  test:  {test['videos']} videos, {test['frames']} frames, {test['abnormal_frames']} abnormal")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .data.download import download_dataset

    root = download_dataset(args.dataset, args.root)
    print(f"{args.dataset} is ready at {root}; try: ssmtl info --dataset {args.dataset} --root {root}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_synthetic

    root = generate_synthetic(args.out, size=args.size, seed=args.seed)
    print(f"synthetic dataset ({args.size}, seed {args.seed}) at {root}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    from .data import open_dataset
    from .detect import detect_dataset

    profile = _profile(args)
    dataset = open_dataset(args.dataset, args.root)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    videos = [v.strip() for v in args.videos.split(",")] if args.videos else None
    cache = detect_dataset(dataset, profile.detect, args.cache, splits=splits, videos=videos, force=args.force,
                           device=args.device)
    print(f"detections cached in {cache.folder}")
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    from .model import SSMTLModel, layer_table

    model = SSMTLModel(args.arch, args.kd_dim, crop_size=args.crop_size)
    rows = layer_table(model)
    print(f"{args.arch}: input (3, 7, {args.crop_size}, {args.crop_size}) for the sequence heads, "
          f"(3, 6, {args.crop_size}, {args.crop_size}) for the middle-box decoder")
    print(f"{'layer':<34}{'type':<14}{'output shape':<22}{'params':>10}")
    for row in rows:
        shape = "x".join(str(s) for s in row["output"]) if row["output"] else ""
        print(f"{row['layer']:<34}{row['type']:<14}{shape:<22}{row['params']:>10,}")
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    print(f"total parameters: {total:,} (encoder {encoder:,})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .data import open_dataset
    from .train import train

    extra = {"train.arch": args.arch, "train.epochs": args.epochs, "train.tasks": args.tasks,
             "train.teacher": args.teacher, "train.batch_size": args.batch_size, "train.lr": args.lr,
             "train.seed": args.seed, "train.device": args.device, "sample.train_frame_stride": args.frame_stride,
             "sample.max_train_objects": args.max_objects, "sample.crop_size": args.crop_size}
    profile = _profile(args, extra)
    dataset = open_dataset(args.dataset, args.root)
    summary = train(dataset, profile, args.cache, args.out, teacher_weights=args.teacher_weights)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    evaluate_run(args.run, root=args.root, cache_root=args.cache, out_dir=args.out, device=args.device,
                 teacher_weights=args.teacher_weights)
    return 0


def _cmd_score_video(args: argparse.Namespace) -> int:
    from .apply import score_video_file

    overrides = {"detect.detector": args.detector, "detect.weights": args.weights, "detect.conf": args.conf}
    result = score_video_file(args.video, args.checkpoint, args.out, overrides=overrides, device=args.device,
                              video_format=args.format, teacher_weights=args.teacher_weights)
    print(json.dumps(result, indent=2))
    return 0


COMMANDS = {"info": _cmd_info, "download": _cmd_download, "synth": _cmd_synth, "detect": _cmd_detect,
            "model": _cmd_model, "train": _cmd_train, "evaluate": _cmd_evaluate, "score-video": _cmd_score_video}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssmtl`` and ``python -m ssmtl_core``."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SSMTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume where it stopped", file=sys.stderr)
        return 130

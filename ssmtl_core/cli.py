"""The ``ssmtl`` command line: every stage of the study, one sub-command each.

``ssmtl info | download | synth | detect | model | train | calibrate | evaluate | score-video``. Flags map onto the
dataclasses of :mod:`ssmtl_core.config` (``--params FILE.yaml`` loads a profile file first; flags given on the
command line win). Every flag that is also a notebook parameter or a profile field takes its name, type and
help from the one table of :mod:`ssmtl_core.settings`. Problems a user can fix end in one message and exit
status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from tqdm import tqdm

from . import settings
from .config import load_profile
from .errors import SSMTLError
from .io import os_error_message

DEFAULT_CACHE = os.environ.get("SSMTL_CACHE", "cache")
#: The flags (by notebook parameter name, ssmtl_core/settings.py) of detection and of training.
DETECT_SETTINGS = ("DETECTOR", "DETECTOR_WEIGHTS", "CONF", "TILES")
TRAIN_SETTINGS = ("ARCH", "EPOCHS", "TASKS", "TEACHER", "BATCH_SIZE", "LR", "SEED", "DEVICE", "PRECISION", "COMPILE",
                  "FRAME_STRIDE", "MAX_OBJECTS", "CROP_SIZE")


def _add_dataset(parser: argparse.ArgumentParser, root_required: bool = True) -> None:
    settings.add_arguments(parser, ("PROFILE", "DATA_ROOT"), required=("PROFILE", "DATA_ROOT")[:1 + root_required])


def _add_detect(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("detection")
    settings.add_arguments(group, DETECT_SETTINGS)
    settings.add_arguments(group, ("CACHE_DIR",), CACHE_DIR=DEFAULT_CACHE)
    group.add_argument("--params", help="YAML file of settings: notebook parameters (EPOCHS: 3), sections "
                                        "(train: {epochs: 3}) or dotted fields (train.epochs: 3)")


def _profile(args: argparse.Namespace, parameters: tuple[str, ...] = ()):
    """The profile of ``--dataset``, then ``--params``, then the flags of ``DETECT_SETTINGS + parameters``."""
    params_file = getattr(args, "params", None)
    overrides = settings.read_settings_file(params_file) if params_file else {}
    overrides.update(settings.args_to_overrides(args, DETECT_SETTINGS + tuple(parameters)))
    return load_profile(args.dataset, None, overrides)


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
    settings.add_arguments(p, ("SHARD",))
    settings.add_arguments(p.add_argument_group("teacher logits (cached with the detections when --teacher is given)"),
                           ("TEACHER",))
    p.add_argument("--teacher-weights", help="state dict of the ImageNet teacher")

    p = sub.add_parser("model", help="print the layers of an architecture")
    settings.add_arguments(p, ("ARCH", "CROP_SIZE"), required=("ARCH",), CROP_SIZE=64)
    p.add_argument("--kd-dim", type=int, default=1080, help="length of the distillation target")

    p = sub.add_parser("train", help="train the 3D CNN on the four proxy tasks (resumes an interrupted run)")
    _add_dataset(p)
    _add_detect(p)
    settings.add_arguments(p.add_argument_group("training"), TRAIN_SETTINGS)
    p.add_argument("--out", required=True, help="run folder (best.pt, last.pt, history.csv, run.json)")
    p.add_argument("--teacher-weights", help="state dict of the ImageNet teacher")

    p = sub.add_parser("calibrate", help="store a run's validation scores and alert rule in its best.pt (for a "
                                         "checkpoint written before they existed)")
    p.add_argument("--run", required=True, help="run folder written by ssmtl train")
    p.add_argument("--root", help="dataset folder (default: the one the run used)")
    p.add_argument("--cache", help="cache folder (default: the one the run used)")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="recompute a calibration the checkpoint already holds")

    p = sub.add_parser("evaluate", help="score a trained run (or an ensemble of runs) and write metrics.json")
    p.add_argument("--run", required=True, action="append",
                   help="run folder written by ssmtl train; give it several times to score the runs as one ensemble "
                        "(e.g. one architecture trained with seeds 0, 1, 2; --out is then required)")
    p.add_argument("--root", help="dataset folder (default: the one the run used)")
    p.add_argument("--cache", help="cache folder (default: the one the run used)")
    p.add_argument("--out", help="output folder (default: the run folder)")
    p.add_argument("--device", default="auto")
    p.add_argument("--teacher-weights", help="state dict of the ImageNet teacher")
    settings.add_arguments(p, ("SCORE_PRECISION",))

    p = sub.add_parser("score-video", help="score a video file with a trained model")
    p.add_argument("video", help="an .mp4/.avi file (or a folder of frames)")
    p.add_argument("--checkpoint", required=True, help="best.pt of a trained run")
    p.add_argument("--out", required=True, help="output folder")
    settings.add_arguments(p, ("DETECTOR", "DETECTOR_WEIGHTS", "CONF", "SCORE_PRECISION", "PIPELINE"))  # default: the checkpoint's
    p.add_argument("--device", default="auto")
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="annotated video format")
    p.add_argument("--teacher-weights", help="state dict of the ImageNet teacher")
    p.add_argument("--per-video-minmax", action="store_true",
                   help="the paper's per-video min-max normalisation instead of calibrated scores (the most unusual "
                        "object of any video then scores 1, and there are no alerts)")
    p.add_argument("--threshold", type=float,
                   help="alert threshold of the calibrated frame scores, in (0, 1) (default: the checkpoint's, "
                        "chosen on held-out normal frames for a 0.5%% false-alarm rate)")
    return parser


def _cmd_info(args: argparse.Namespace) -> int:
    # a command imports its own stage (torch & co.): --help stays quick
    from .data import open_dataset

    dataset = open_dataset(args.dataset, args.root)
    summary = dataset.summary()
    if (missing := dataset.missing_ground_truth()) is not None:
        print(f"warning: {missing}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['name']} ({summary['layout']}) at {summary['root']}, frames {summary['frame_size'][1]}x"
              f"{summary['frame_size'][0]}")
        print(f"  train: {summary['train']['videos']} videos, {summary['train']['frames']} frames")
        test = summary["test"]
        abnormal = "no ground truth" if test["abnormal_frames"] is None else f"{test['abnormal_frames']} abnormal"
        print(f"  test:  {test['videos']} videos, {test['frames']} frames, {abnormal}")
        if summary["partial"]:
            official = summary["official_videos"]
            print(f"  partial copy: the official release has {official['train']} training and {official['test']} "
                  "test videos")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    # a command imports its own stage (torch & co.): --help stays quick
    from .data.download import download_dataset

    root = download_dataset(args.dataset, args.root)
    print(f"{args.dataset} is ready at {root}; try: ssmtl info --dataset {args.dataset} --root {root}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    # a command imports its own stage (torch & co.): --help stays quick
    from .data.synthetic import generate_synthetic

    root = generate_synthetic(args.out, size=args.size, seed=args.seed)
    print(f"synthetic dataset ({args.size}, seed {args.seed}) at {root}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    # a command imports its own stage (torch & co.): --help stays quick
    from .data import open_dataset
    from .detect import detect_dataset

    profile = _profile(args, ("TEACHER",))
    dataset = open_dataset(args.dataset, args.root)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    videos = [v.strip() for v in args.videos.split(",")] if args.videos else None
    shard = parse_shard(args.shard)
    cache = detect_dataset(dataset, profile.detect, args.cache, splits=splits, videos=videos, force=args.force,
                           device=args.device, shard=shard)
    print(f"detections cached in {cache.folder}")
    if args.teacher not in (None, "none"):
        # a command imports its own stage (torch & co.): --help stays quick
        from .teachers import fill_teacher_cache

        teacher = fill_teacher_cache(args.cache, dataset, cache, profile.train, splits=splits, videos=videos,
                                     shard=shard, weights=args.teacher_weights)
        print(f"teacher logits cached in {teacher.folder}")
    return 0


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``--shard i/n`` -> ``(i, n)``: this process takes every n-th video from the i-th (0-based)."""
    if not text:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if count < 1 or not 0 <= index < count:
        raise SSMTLError(f"--shard {text}: expected i/n with 0 <= i < n, e.g. --shard 0/2 and --shard 1/2 for two "
                         "processes.")
    return index, count


def _cmd_model(args: argparse.Namespace) -> int:
    # a command imports its own stage (torch & co.): --help stays quick
    from .model import SSMTLModel, layer_table

    if args.crop_size < 8 or args.kd_dim < 0:
        raise SSMTLError(f"--crop-size must be at least 8 and --kd-dim at least 0; got {args.crop_size} and "
                         f"{args.kd_dim}.")
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
    # a command imports its own stage (torch & co.): --help stays quick
    from . import distributed
    from .data import open_dataset
    from .train import train
    from .training_data import prepare_training_data

    profile = _profile(args, TRAIN_SETTINGS)
    dataset = open_dataset(args.dataset, args.root)
    if (missing := dataset.missing_ground_truth()) is not None:  # found now, not after training and scoring
        raise SSMTLError(missing)
    world = distributed.join(profile.train.device)  # one process unless started by torchrun
    with distributed.main_first(world):  # rank 0 fills the caches, the other ranks read them
        data = prepare_training_data(dataset, profile, args.cache, teacher_weights=args.teacher_weights,
                                     progress=world.main, log=print if world.main else _silent)
    summary = train(data, profile, args.out)
    if world.main:
        print(json.dumps(summary, indent=2))
    distributed.leave()
    return 0


def _silent(*_args, **_kwargs) -> None:
    pass


def _cmd_evaluate(args: argparse.Namespace) -> int:
    # a command imports its own stage (torch & co.): --help stays quick
    from .evaluate import evaluate_ensemble, evaluate_run

    score = {"inference_precision": args.score_precision} if args.score_precision else None
    if len(args.run) > 1:
        if not args.out:
            raise SSMTLError("an ensemble (--run given several times) needs --out: the folder its metrics.json goes to.")
        if score:
            raise SSMTLError("--score-precision applies to one run; evaluate each member with it first, then the "
                             "ensemble reuses their scores.")
        evaluate_ensemble(args.run, args.out, root=args.root, cache_root=args.cache, device=args.device,
                          teacher_weights=args.teacher_weights)
        return 0
    evaluate_run(args.run[0], root=args.root, cache_root=args.cache, out_dir=args.out, device=args.device,
                 teacher_weights=args.teacher_weights, score_overrides=score)
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    # a command imports its own stage (torch & co.): --help stays quick
    from .runs import calibrate_run

    summary = calibrate_run(args.run, root=args.root, cache_root=args.cache, device=args.device, force=args.force)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_score_video(args: argparse.Namespace) -> int:
    # a command imports its own stage (torch & co.): --help stays quick
    from .apply import score_video_file

    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise SSMTLError(f"--threshold must lie in (0, 1) (a fraction of normal objects); got {args.threshold}.")
    overrides = settings.args_to_overrides(args, ("DETECTOR", "DETECTOR_WEIGHTS", "CONF", "SCORE_PRECISION", "PIPELINE"))
    result = score_video_file(args.video, args.checkpoint, args.out, overrides=overrides, device=args.device,
                              video_format=args.format, teacher_weights=args.teacher_weights,
                              per_video_minmax=args.per_video_minmax, threshold=args.threshold,
                              log=lambda message: print(message, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))
    return 0


COMMANDS = {"info": _cmd_info, "download": _cmd_download, "synth": _cmd_synth, "detect": _cmd_detect,
            "model": _cmd_model, "train": _cmd_train, "calibrate": _cmd_calibrate, "evaluate": _cmd_evaluate,
            "score-video": _cmd_score_video}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssmtl`` and ``python -m ssmtl_core``.

    Exit status 0 on success; 2 with one ``error:`` line naming the file and the fix for anything a user can
    fix (bad settings, files or folders, a full or read-only disk); 1 with one line for an unexpected error (a
    bug: ``SSMTL_DEBUG=1`` shows its traceback); 130 after Ctrl-C. No traceback reaches the terminal.
    """
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SSMTLError as exc:
        return _fail(settings.error_message(exc), 2)
    except OSError as exc:  # a full disk, a read-only cache, a file that vanished: what and where
        return _fail(os_error_message(exc), 2)
    except MemoryError:
        return _fail("out of memory: use smaller settings (--batch-size, --max-objects, --crop-size) or a machine "
                     "with more memory.", 2)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("SSMTL_DEBUG"):
            raise
        where = ""
        if (tb := exc.__traceback__) is not None:
            while tb.tb_next is not None:
                tb = tb.tb_next
            where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
        text = str(exc).strip().splitlines()
        return _fail(f"unexpected {type(exc).__name__}{where}: {text[0] if text else ''} (a bug: please report it; "
                     "rerun with SSMTL_DEBUG=1 to see the traceback).", 1)


def _fail(message: str, status: int) -> int:
    """Print ``error: message`` as the last line, on a line of its own, and return ``status``."""
    for bar in list(getattr(tqdm, "_instances", ())):  # progress bars the error interrupted: end their lines
        with contextlib.suppress(Exception):
            bar.close()
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status

"""The bad-input and fault table (issue 12): nothing accepted silently, no tracebacks, nothing lost.

One parametrized table, :data:`CASES`. Each row builds a bad input (or a fault) on the tiny synthetic dataset
or on a small dataset laid out exactly as an official archive unpacks, runs the ``ssmtl`` command line on it
(in process through :func:`ssmtl_core.cli.main`, or in a real ``python -m ssmtl_core`` subprocess where a kill or
a real traceback matters) and asserts:

* the exit status: 2 with exactly one ``error:`` line, printed last, naming the offending path (or setting)
  and what to do; or 0 with the correct result (and a ``warning:`` line where one is due);
* that no traceback is printed;
* that nothing already cached or trained is lost: the shared dataset, detection cache and trained run are
  fingerprinted once and checked after every row, and rows that work on copies check their own files.

Fault rows kill a subprocess with SIGKILL at a chosen point (a function of the package is wrapped to kill its
own process before or after its n-th call), rerun the command and compare with an uninterrupted run.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import jpg_tree

from ssmtl_core.cli import main
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.errors import SSMTLError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
ENV.pop("SSMTL_DEBUG", None)

#: Tiny training settings: the whole table runs in about two minutes on 2 cores.
TINY = {"train.epochs": 1, "train.batch_size": 16, "train.num_threads": 1, "train.teacher": "none",
        "train.tasks": "aot,irr,mid", "train.precision": "fp32", "train.device": "cpu", "sample.crop_size": 32,
        "sample.max_train_objects": 64}


# -- running the command line -----------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Ctx:
    """What a row gets: its own folder, the shared fixtures (read-only for rows) and capsys."""

    tmp: Path
    base: Base
    capsys: pytest.CaptureFixture

    def cli(self, *argv: str | Path) -> Result:
        """``ssmtl argv`` in this process."""
        self.capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def params(self, **extra) -> Path:
        """A ``--params`` file of the tiny settings (plus ``extra``, dotted names with ``__`` for ``.``)."""
        path = self.tmp / f"params-{len(list(self.tmp.glob('params-*')))}.yaml"
        values = {**TINY, **{k.replace("__", "."): v for k, v in extra.items()}}
        path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
        return path


def run_subprocess(argv: list, cwd: Path, timeout: float = 120) -> Result:
    result = subprocess.run([sys.executable, "-m", "ssmtl_core", *map(str, argv)], capture_output=True, text=True,
                            cwd=cwd, env=ENV, timeout=timeout)
    return Result(result.returncode, result.stdout, result.stderr)


KILL_WRAPPER = r"""
import os, signal, sys
import importlib
owner = importlib.import_module({module!r})
*path, attr = {attr!r}.split(".")
for name in path:
    owner = getattr(owner, name)
real = getattr(owner, attr)
calls = [0]
def wrapped(*args, **kwargs):
    if {match!r} not in repr(args):
        return real(*args, **kwargs)
    calls[0] += 1
    if calls[0] == {n} and {when!r} == "before":
        os.kill(os.getpid(), {signal})
    result = real(*args, **kwargs)
    if calls[0] == {n} and {when!r} == "after":
        if {truncate!r}:
            path = str(args[0]); size = os.path.getsize(path)
            with open(path, "r+b") as handle:
                handle.truncate(size // 2)
        os.kill(os.getpid(), {signal})
    return result
setattr(owner, attr, wrapped)
# A job started in the background (`cmd &`, CI runners) inherits SIGINT ignored, and Python then keeps it
# ignored; a user's Ctrl-C in a terminal is not, so that is what the Ctrl-C rows simulate.
signal.signal(signal.SIGINT, signal.default_int_handler)
from ssmtl_core.cli import main
from ssmtl_core.errors import SSMTLError
sys.exit(main({argv!r}))
"""


def run_killed(argv: list, cwd: Path, target: str, n: int, when: str = "before", truncate: bool = False,
               sig: int = signal.SIGKILL, match: str = "") -> Result:
    """Run ``ssmtl argv`` in a subprocess that sends itself ``sig`` before/after the n-th call of ``target``
    (``module:attribute`` or ``module:Class.method``) whose arguments mention ``match``; the returned code is
    then ``-sig``. With ``truncate``, the file named by the call's first argument is cut to half its size first
    (a half-written file)."""
    module, attr = target.split(":")
    code = KILL_WRAPPER.format(module=module, attr=attr, n=n, when=when, truncate=truncate, signal=int(sig),
                               argv=[str(a) for a in argv], match=match)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=ENV,
                            timeout=120)
    return Result(result.returncode, result.stdout, result.stderr)


def expect_error(res: Result, *names: str | Path, phrase: str = "", code: int = 2) -> str:
    """One ``error:`` line, last, naming every one of ``names``, with ``phrase``; no traceback."""
    text = res.out + res.err
    assert res.code == code, f"exit status {res.code}, expected {code}:\n{text[-3000:]}"
    assert "Traceback" not in text, text
    errors = [line for line in res.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one 'error:' line:\n{res.err[-3000:]}"
    message = errors[0]
    assert res.err.rstrip().splitlines()[-1] == message, res.err[-2000:]
    for name in names:
        assert str(name) in message, f"the message does not name {name}: {message}"
    assert phrase in message, message
    return message


def expect_ok(res: Result, *phrases: str) -> str:
    text = res.out + res.err
    assert res.code == 0, f"exit status {res.code}:\n{text[-3000:]}"
    assert "Traceback" not in text and "error:" not in res.err, text[-3000:]
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text[-3000:]}"
    return text


def fingerprint(*roots: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """Every file under ``roots``: (modification time, sha256); what "nothing lost" is checked against."""
    found = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = str(path.relative_to(root.parent))
            if not any(s in rel for s in skip):
                found[rel] = (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    return dst


# -- shared fixtures --------------------------------------------------------------------------------


@dataclass
class Base:
    """The tiny synthetic dataset, its motion-detection cache, a 1-epoch run and a 2-epoch reference run."""

    root: Path
    cache: Path
    run: Path
    params: Path
    folder: Path

    @property
    def detections(self) -> Path:
        return next((self.cache).glob("synthetic-*/detections/motion-*"))

    def model_weights(self, checkpoint: Path) -> dict:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    folder = tmp_path_factory.mktemp("bad_inputs")
    root = generate_synthetic(folder / "syn", "tiny", seed=0, progress=False)
    params = folder / "tiny.yaml"
    params.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in TINY.items()))
    cache, run = folder / "cache", folder / "run"
    assert main(["train", "--dataset", "synthetic", "--root", str(root), "--cache", str(cache), "--params",
                 str(params), "--out", str(run)]) == 0
    assert main(["detect", "--dataset", "synthetic", "--root", str(root), "--cache", str(cache)]) == 0
    return Base(root, cache, run, params, folder)


@pytest.fixture(scope="module")
def base_fingerprint(base) -> dict:
    return fingerprint(base.root, base.cache, base.run)


@pytest.fixture(scope="module")
def reference_two_epochs(base, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run: what every interrupted and resumed one must equal."""
    out = tmp_path_factory.mktemp("reference") / "run2"
    assert main(["train", "--dataset", "synthetic", "--root", str(base.root), "--cache", str(base.cache),
                 "--params", str(base.params), "--epochs", "2", "--out", str(out)]) == 0
    return out


def same_run(a: Path, b: Path) -> None:
    """Two runs are the same: identical weights in best.pt and last.pt, identical history."""
    for name in ("best.pt", "last.pt"):
        wa = torch.load(a / name, map_location="cpu", weights_only=True)
        wb = torch.load(b / name, map_location="cpu", weights_only=True)
        assert wa["epoch"] == wb["epoch"]
        for key, tensor in wa["model"].items():
            assert torch.equal(tensor, wb["model"][key]), f"{name}: {key} differs"
    assert json.loads((a / "history.json").read_text()) == json.loads((b / "history.json").read_text())


def same_detections(cache_a: Path, cache_b: Path) -> None:
    files_a = sorted(p.relative_to(cache_a) for p in cache_a.rglob("*.npz"))
    assert files_a == sorted(p.relative_to(cache_b) for p in cache_b.rglob("*.npz")), (cache_a, cache_b)
    for rel in files_a:
        with np.load(cache_a / rel) as a, np.load(cache_b / rel) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])


def no_leftovers(folder: Path) -> None:
    """No temporary file of an atomic write and no claim file is left under ``folder``."""
    left = [p for p in folder.rglob(".*") if ".tmp" in p.name or p.name.endswith(".claim")]
    assert not left, left


# -- datasets built by hand --------------------------------------------------------------------------


def write_avi(path: Path, count: int, size: tuple[int, int] = (24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (size[1], size[0]))
    for i in range(count):
        frame = np.full((*size, 3), 60, np.uint8)
        frame[4:12, i % size[1]:i % size[1] + 6] = 240
        writer.write(frame)
    writer.release()
    return path


def avenue_as_unzipped(folder: Path, train: int = 2, test: int = 2, masks: bool = True) -> Path:
    """Avenue exactly as its two official zips unpack side by side in ``folder``: ``Avenue Dataset/``
    (training_videos, testing_videos, training_vol, testing_vol) and ``ground_truth_demo/``
    (testing_label_mask/N_label.mat, ground_truth_show.m)."""
    import scipy.io

    videos = folder / "Avenue Dataset"
    for i in range(train):
        write_avi(videos / "training_videos" / f"{i + 1:02d}.avi", 12)
    for i in range(test):
        write_avi(videos / "testing_videos" / f"{i + 1:02d}.avi", 10)
    for name in ("training_vol", "testing_vol"):
        (videos / name).mkdir()
        scipy.io.savemat(str(videos / name / "vol01.mat"), {"vol": np.zeros((2, 2, 2), np.uint8)})
    if masks:
        gt = folder / "ground_truth_demo"
        (gt / "testing_label_mask").mkdir(parents=True)
        (gt / "ground_truth_show.m").write_text("% shows the ground truth\n")
        for i in range(test):
            cells = np.empty((1, 10), dtype=object)
            for k in range(10):
                mask = np.zeros((24, 32), np.uint8)
                if 3 <= k < 6:
                    mask[5:10, 5:10] = 1
                cells[0, k] = mask
            scipy.io.savemat(str(gt / "testing_label_mask" / f"{i + 1}_label.mat"), {"volLabel": cells})
    return folder


def info(ctx: Ctx, root: Path, dataset: str = "synthetic", *extra: str) -> Result:
    return ctx.cli("info", "--dataset", dataset, "--root", root, *extra)


def detect(ctx: Ctx, root: Path, cache: Path, dataset: str = "synthetic", *extra: str) -> Result:
    return ctx.cli("detect", "--dataset", dataset, "--root", root, "--detector", "motion", "--cache", cache, *extra)


def train(ctx: Ctx, root: Path, cache: Path, out: Path, *extra: str, dataset: str = "synthetic") -> Result:
    return ctx.cli("train", "--dataset", dataset, "--root", root, "--cache", cache, "--params", ctx.base.params,
                   "--out", out, *extra)


def private_copy(ctx: Ctx, cache: bool = True, run: bool = False) -> tuple[Path, Path, Path]:
    """A copy of the dataset (and its cache, and the run) that a row may damage."""
    root = copy(ctx.base.root, ctx.tmp / "syn")
    cache_dir = copy(ctx.base.cache, ctx.tmp / "cache") if cache else ctx.tmp / "cache"
    out = copy(ctx.base.run, ctx.tmp / "run") if run else ctx.tmp / "run"
    return root, cache_dir, out


def copied_detections(cache: Path) -> Path:
    return next(cache.glob("synthetic-*/detections/motion-*"))


# -- rows: frames ------------------------------------------------------------------------------------


def truncated_jpeg(ctx: Ctx) -> None:
    """A frame cut to half its bytes is refused (OpenCV would decode it with a grey lower half)."""
    root, cache, _ = private_copy(ctx)
    bad = root / "training" / "frames" / "02" / "010.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    kept = fingerprint(copied_detections(cache) / "train", skip=("02.npz",))
    expect_error(detect(ctx, root, cache), bad, phrase="truncated JPEG")
    assert fingerprint(copied_detections(cache) / "train", skip=("02.npz",)) == kept


def repaired_frame_is_redetected(ctx: Ctx) -> None:
    """After a frame changes (repaired, re-extracted), its video's detections are recomputed; others kept."""
    root, cache, _ = private_copy(ctx)
    frame = root / "testing" / "frames" / "01" / "005.jpg"
    image = cv2.imread(str(frame))
    image[:40, :40] = 255  # a different frame
    assert cv2.imwrite(str(frame), image)
    folder = copied_detections(cache)
    before = fingerprint(folder)
    text = expect_ok(detect(ctx, root, cache), "recomputing test/01", "changed")
    after = fingerprint(folder)
    changed = {k for k in after if after[k] != before.get(k)} - {f"{folder.name}/meta.json"}  # names this copy
    assert changed == {f"{folder.name}/test/01.npz"}, (changed, text)
    # and the rerun is quiet: nothing changed since
    expect_ok(detect(ctx, root, cache), "4 video(s) already cached")
    assert fingerprint(folder) == after


def garbage_frame(ctx: Ctx) -> None:
    root = jpg_tree(ctx.tmp / "d", {"01": 6, "02": 6}, {"01": 6})
    bad = root / "training" / "frames" / "02" / "003.jpg"
    bad.write_bytes(b"this is not a JPEG \x00\x01\x02" * 20)
    expect_error(detect(ctx, root, ctx.tmp / "cache"), bad, phrase="cannot read frame")
    assert not list((ctx.tmp / "cache").rglob("02.npz"))


def empty_frame_file(ctx: Ctx) -> None:
    root = jpg_tree(ctx.tmp / "d", {"01": 6}, {"01": 6})
    bad = root / "testing" / "frames" / "01" / "002.jpg"
    bad.write_bytes(b"")
    expect_error(detect(ctx, root, ctx.tmp / "cache"), bad, phrase="cannot read frame")


def mixed_frame_sizes(ctx: Ctx) -> None:
    """A frame of another size within a video is refused, naming it (was a cv2.error traceback)."""
    root = jpg_tree(ctx.tmp / "d", {"01": 8}, {"01": 6})
    bad = root / "training" / "frames" / "01" / "004.jpg"
    assert cv2.imwrite(str(bad), np.full((30, 40, 3), 90, np.uint8))
    expect_error(detect(ctx, root, ctx.tmp / "cache"), bad, phrase="is 40x30 but the first frame")


def mixed_sizes_in_training(ctx: Ctx) -> None:
    """The same during training's frame decoding (a NumPy shape error before), with the cache kept."""
    root, cache, out = private_copy(ctx)
    bad = root / "training" / "frames" / "01" / "020.jpg"
    assert cv2.imwrite(str(bad), np.full((60, 80, 3), 90, np.uint8))
    kept = fingerprint(copied_detections(cache) / "test")
    expect_error(train(ctx, root, cache, out), bad, phrase="all frames of a video must share one size")
    assert fingerprint(copied_detections(cache) / "test") == kept
    assert not (out / "best.pt").exists()


def folder_without_frames(ctx: Ctx) -> None:
    root = jpg_tree(ctx.tmp / "d", {"01": 6}, {"01": 6})
    empty = root / "training" / "frames" / "02"
    empty.mkdir()
    expect_error(info(ctx, root), empty, phrase="no frames in")


def truncated_video_file(ctx: Ctx) -> None:
    """A video file cut short: its header promises more frames than it holds."""
    root = avenue_as_unzipped(ctx.tmp / "avenue", train=1, test=1)
    bad = root / "Avenue Dataset" / "training_videos" / "01.avi"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size * 2 // 3])
    res = ctx.cli("detect", "--dataset", "avenue", "--root", root, "--detector", "motion", "--cache",
                  ctx.tmp / "cache")
    expect_error(res, bad, phrase="truncated or damaged")


def truncated_jpeg_real_process(ctx: Ctx) -> None:
    """The same in a real ``python -m ssmtl_core`` process: what proves that no traceback reaches a terminal."""
    root = jpg_tree(ctx.tmp / "d", {"01": 6}, {"01": 6})
    bad = root / "testing" / "frames" / "01" / "004.jpg"
    bad.write_bytes(bad.read_bytes()[:-40])
    res = run_subprocess(["detect", "--dataset", "synthetic", "--root", root, "--detector", "motion", "--cache",
                          ctx.tmp / "cache"], ctx.tmp)
    expect_error(res, bad, phrase="truncated JPEG")


def bad_setting_real_process(ctx: Ctx) -> None:
    res = run_subprocess(["train", "--dataset", "synthetic", "--root", ctx.base.root, "--cache", ctx.base.cache,
                          "--params", ctx.base.params, "--batch-size", "0", "--out", ctx.tmp / "run"], ctx.tmp)
    expect_error(res, "train.batch_size", phrase="must be >= 1")
    assert not (ctx.tmp / "run").exists()


def missing_root(ctx: Ctx) -> None:
    root = ctx.tmp / "no" / "such" / "ped2"
    expect_error(info(ctx, root, "ped2"), root, phrase="does not exist")


def root_is_a_file(ctx: Ctx) -> None:
    root = ctx.tmp / "ped2.tar.gz"
    root.write_bytes(b"\x1f\x8b not really")
    expect_error(info(ctx, root, "ped2"), root, phrase="is a file, not a folder")


def wrong_layout(ctx: Ctx) -> None:
    root = ctx.tmp / "not_a_dataset"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "clip.txt").write_text("not a video\n")
    expect_error(info(ctx, root, "ped2"), root, phrase="does not look like a ped2 dataset")


# -- rows: labels ------------------------------------------------------------------------------------


def _labels_row(ctx: Ctx, labels, phrase: str, save=np.save) -> None:
    root = jpg_tree(ctx.tmp / "d", {"01": 4}, {"01": 5, "02": 4}, labels=False)
    path = root / "ground_truth" / "frame_labels.npy"
    path.parent.mkdir()
    if isinstance(labels, bytes):
        path.write_bytes(labels)
    else:
        save(path, labels)
    expect_error(info(ctx, root), path, phrase=phrase)


def labels_floats(ctx: Ctx) -> None:
    """0.7 was cast to 0 ("0 abnormal"); now refused."""
    _labels_row(ctx, np.full(9, 0.7), "values other than 0 and 1 (0.7")


def labels_out_of_range(ctx: Ctx) -> None:
    _labels_row(ctx, np.array([0, 1, 2, 0, 0, 0, 0, 0, 0]), "values other than 0 and 1 (2")


def labels_nan(ctx: Ctx) -> None:
    _labels_row(ctx, np.array([0, 1, np.nan, 0, 0, 0, 0, 0, 0]), "values other than 0 and 1 (nan")


def labels_strings(ctx: Ctx) -> None:
    _labels_row(ctx, np.array(list("010000000")), "hold <U1 values, not numbers")


def labels_objects(ctx: Ctx) -> None:
    """An object array needs pickle to load: refused, never unpickled."""
    _labels_row(ctx, np.array([0, 1, None, 0, 0, 0, 0, 0, 0], dtype=object), "cannot read frame labels",
                save=lambda p, a: np.save(p, a, allow_pickle=True))


def labels_garbage(ctx: Ctx) -> None:
    _labels_row(ctx, b"\x93NUMPY garbage garbage garbage" * 3, "cannot read frame labels")


def labels_npz_named_npy(ctx: Ctx) -> None:
    def save(path, array):
        with open(path, "wb") as handle:
            np.savez(handle, labels=array)
    _labels_row(ctx, np.zeros(9, np.uint8), "is an .npz archive", save=save)


def labels_count_mismatch(ctx: Ctx) -> None:
    _labels_row(ctx, np.zeros(8, np.uint8), "holds 8 frame labels but the 2 test videos have 9 frames")


def labels_exact_floats_accepted(ctx: Ctx) -> None:
    """Float labels that are exactly 0 and 1 are read, not refused: the count is right."""
    labels = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0], np.float64)
    root = jpg_tree(ctx.tmp / "d", {"01": 4}, {"01": 5, "02": 4}, labels=labels)
    res = info(ctx, root, "synthetic", "--json")
    expect_ok(res)
    assert json.loads(res.out)["test"]["abnormal_frames"] == 3


def per_video_label_file_missing(ctx: Ctx) -> None:
    root = jpg_tree(ctx.tmp / "d", {"01": 4}, {"01": 5, "02": 4}, labels=False)
    labels = root / "testing" / "frame_labels"
    labels.mkdir()
    np.save(labels / "01.npy", np.zeros(5, np.uint8))
    expect_error(info(ctx, root), labels / "02.npy", phrase="missing frame labels")


def per_video_label_file_floats(ctx: Ctx) -> None:
    root = jpg_tree(ctx.tmp / "d", {"01": 4}, {"01": 5}, labels=False)
    (root / "testing" / "frame_labels").mkdir()
    bad = root / "testing" / "frame_labels" / "01.npy"
    np.save(bad, np.array([0, 0.5, 1, 1, 0]))
    expect_error(info(ctx, root), bad, phrase="values other than 0 and 1")


# -- rows: ground truth, official layouts, partial copies -------------------------------------------


def missing_ground_truth_info(ctx: Ctx) -> None:
    """``info`` says there is no ground truth and where it looked (it printed "None abnormal")."""
    root = jpg_tree(ctx.tmp / "d", {"01": 4}, {"01": 5}, labels=False)
    res = info(ctx, root)
    expect_ok(res, "no ground truth", "warning: no frame labels", str(root / "ground_truth" / "frame_labels.npy"))
    assert "None abnormal" not in res.out


def missing_ground_truth_train(ctx: Ctx) -> None:
    """``train`` refuses before any work, naming where it looked (evaluate failed only at the very end)."""
    root, cache, out = private_copy(ctx)
    (root / "ground_truth" / "frame_labels.npy").unlink()
    (root / "ground_truth" / "pixel_masks.npz").unlink()
    expect_error(train(ctx, root, cache, out), root / "ground_truth" / "frame_labels.npy",
                 phrase="no frame labels (ground truth)")
    assert not out.exists()


def avenue_zips_side_by_side(ctx: Ctx) -> None:
    """The two official zips unpacked side by side: masks found next to ``Avenue Dataset/``, from either folder."""
    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=2, test=2)
    for root in (folder, folder / "Avenue Dataset"):
        res = info(ctx, root, "avenue", "--json")
        expect_ok(res, "partial")
        summary = json.loads(res.out)
        assert summary["layout"] == "avenue_official"
        assert summary["test"] == {"videos": 2, "frames": 20, "abnormal_frames": 6}


def avenue_without_ground_truth(ctx: Ctx) -> None:
    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=1, test=1, masks=False)
    looked = folder / "ground_truth_demo" / "testing_label_mask"
    expect_ok(info(ctx, folder, "avenue"), "no ground truth", str(looked))
    res = ctx.cli("train", "--dataset", "avenue", "--root", folder, "--cache", ctx.tmp / "cache", "--params",
                  ctx.base.params, "--detector", "motion", "--out", ctx.tmp / "run")
    expect_error(res, looked, phrase="no frame labels")
    assert not (ctx.tmp / "run").exists() and not (ctx.tmp / "cache").exists()


def avenue_damaged_mask_file(ctx: Ctx) -> None:
    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=1, test=1)
    bad = folder / "ground_truth_demo" / "testing_label_mask" / "1_label.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file, but cut")
    expect_error(info(ctx, folder, "avenue"), bad, phrase="cannot read Avenue mask file")


def partial_copy_warned(ctx: Ctx) -> None:
    """Fewer videos than the official release: a warning with both counts, and ``partial`` in the summary
    (which metrics.json carries)."""
    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=2, test=1)
    res = info(ctx, folder, "avenue", "--json")
    expect_ok(res, "warning:", "holds 2 training and 1 test videos", "has 16 and 21")
    summary = json.loads(res.out)
    assert summary["partial"] is True and summary["official_videos"] == {"train": 16, "test": 21}
    from ssmtl_core.report import provenance_line

    assert "PARTIAL copy (2 of 16 training, 1 of 21 test videos)" in provenance_line({"dataset": summary})


def complete_copy_not_partial(ctx: Ctx) -> None:
    res = info(ctx, ctx.base.root, "synthetic", "--json")
    expect_ok(res)
    assert "warning" not in res.err and json.loads(res.out)["partial"] is False


def ucsd_official_without_ground_truth(ctx: Ctx) -> None:
    root = ctx.tmp / "UCSDped2"
    for split, prefix in (("Train", "Train"), ("Test", "Test")):
        folder = root / split / f"{prefix}001"
        folder.mkdir(parents=True)
        for i in range(5):
            assert cv2.imwrite(str(folder / f"{i + 1:03d}.tif"), np.full((24, 32), 100, np.uint8))
    expect_ok(info(ctx, root, "ped2"), "no ground truth", str(root / "Test" / "*.m"), "has 16 and 12")


def synth_marker_refused(ctx: Ctx) -> None:
    """A synthetic folder still marked incomplete is refused by info and detect (both accepted it)."""
    root, cache, _ = private_copy(ctx)
    (root / ".synthetic-incomplete").write_text("generation in progress\n")
    expect_error(info(ctx, root), root, phrase="generation was interrupted")
    kept = fingerprint(cache)
    expect_error(detect(ctx, root, cache), root, phrase="generation was interrupted")
    assert fingerprint(cache) == kept


# -- rows: settings (validated once in config.validate) ----------------------------------------------


def _setting_row(ctx: Ctx, flag_args: tuple[str, ...], setting: str, phrase: str, command: str = "train") -> None:
    """A bad setting ends in one message naming it, before anything is read or written: the trained run
    given as --out is untouched."""
    out = copy(ctx.base.run, ctx.tmp / "run")
    kept = fingerprint(out)
    if command == "train":
        res = train(ctx, ctx.base.root, ctx.base.cache, out, *flag_args)
    else:
        res = detect(ctx, ctx.base.root, ctx.base.cache, "synthetic", *flag_args)
    expect_error(res, setting, phrase=phrase)
    assert fingerprint(out) == kept


def batch_size_negative(ctx: Ctx) -> None:
    """``--batch-size -4`` ran zero steps and wrote an untrained best.pt."""
    _setting_row(ctx, ("--batch-size", "-4"), "train.batch_size", "--batch-size")


def batch_size_zero(ctx: Ctx) -> None:
    """``--batch-size 0`` was a ZeroDivisionError."""
    _setting_row(ctx, ("--batch-size", "0"), "train.batch_size", "must be >= 1; got 0")


def epochs_zero(ctx: Ctx) -> None:
    """``--epochs 0`` exited 0 without a checkpoint."""
    _setting_row(ctx, ("--epochs", "0"), "train.epochs", "must be >= 1")


def epochs_negative(ctx: Ctx) -> None:
    _setting_row(ctx, ("--epochs", "-3"), "train.epochs", "got -3")


def crop_size_zero(ctx: Ctx) -> None:
    """``--crop-size 0`` was a cv2.error / conv3d RuntimeError."""
    _setting_row(ctx, ("--crop-size", "0"), "sample.crop_size", "must be >= 8")


def crop_size_tiny(ctx: Ctx) -> None:
    _setting_row(ctx, ("--crop-size", "4"), "sample.crop_size", "got 4")


def conf_zero(ctx: Ctx) -> None:
    _setting_row(ctx, ("--conf", "0"), "detect.conf", "in (0, 1]", command="detect")


def conf_above_one(ctx: Ctx) -> None:
    _setting_row(ctx, ("--conf", "1.5"), "detect.conf", "in [0.0, 1.0]", command="detect")


def _params_row(ctx: Ctx, setting: str, value, phrase: str) -> None:
    out = copy(ctx.base.run, ctx.tmp / "run")
    kept = fingerprint(out)
    params = ctx.params(**{setting.replace(".", "__"): value})
    res = ctx.cli("train", "--dataset", "synthetic", "--root", ctx.base.root, "--cache", ctx.base.cache,
                  "--params", params, "--out", out)
    expect_error(res, setting, phrase=phrase)
    assert fingerprint(out) == kept


def val_fraction_one(ctx: Ctx) -> None:
    _params_row(ctx, "train.val_fraction", 1.0, "in [0.0, 1.0)")


def budget_negative(ctx: Ctx) -> None:
    _params_row(ctx, "train.budget_minutes", -5, "must be >= 0")


def precision_unknown(ctx: Ctx) -> None:
    _params_row(ctx, "train.precision", "fp16", "auto, fp32 or bf16")


def epochs_not_a_number(ctx: Ctx) -> None:
    """A YAML typo was a ValueError traceback."""
    _params_row(ctx, "train.epochs", "three", "a whole number")


def lr_zero(ctx: Ctx) -> None:
    _params_row(ctx, "train.lr", 0.0, "must be >=")


def params_file_missing(ctx: Ctx) -> None:
    missing = ctx.tmp / "nope.yaml"
    res = ctx.cli("detect", "--dataset", "synthetic", "--root", ctx.base.root, "--cache", ctx.base.cache,
                  "--params", missing)
    expect_error(res, missing, phrase="settings file not found")


def model_crop_size_zero(ctx: Ctx) -> None:
    expect_error(ctx.cli("model", "--arch", "shallow_narrow", "--crop-size", "0"), "--crop-size",
                 phrase="at least 8")


# -- rows: the detection cache -----------------------------------------------------------------------


def damaged_npz_detect(ctx: Ctx) -> None:
    """A damaged cached .npz was skipped as cached; now it is noticed and recomputed, identical."""
    root = ctx.base.root
    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    bad = copied_detections(cache) / "train" / "01.npz"
    bad.write_bytes(bad.read_bytes()[:100])
    expect_ok(detect(ctx, root, cache), "recomputing train/01", "damaged")
    same_detections(copied_detections(cache), ctx.base.detections)


def damaged_npz_train(ctx: Ctx) -> None:
    """``train`` died with BadZipFile on a damaged cache file; now it recomputes it and trains."""
    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    bad = copied_detections(cache) / "train" / "02.npz"
    data = bytearray(bad.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64  # bit rot inside an array: a CRC error
    bad.write_bytes(bytes(data))
    expect_ok(train(ctx, ctx.base.root, cache, ctx.tmp / "run"), "damaged")
    same_detections(copied_detections(cache), ctx.base.detections)
    same_run(ctx.tmp / "run", ctx.base.run)


def unsigned_legacy_entry(ctx: Ctx) -> None:
    """An entry written before entries carried their input signature cannot be trusted: recomputed, identical."""
    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    path = copied_detections(cache) / "test" / "02.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "input_signature"}
    np.savez(path, **arrays)
    expect_ok(detect(ctx, ctx.base.root, cache), "recomputing test/02", "without the input signature")
    same_detections(copied_detections(cache), ctx.base.detections)


def changed_video_file_redecoded(ctx: Ctx) -> None:
    """Decoded frames of a video file are cached; a re-encoded file (same length and size) or a damaged cache
    file is decoded again (the cache only compared the shape)."""
    from ssmtl_core.data import open_dataset
    from ssmtl_core.data.frames import load_frames

    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=1, test=1)
    cache = ctx.tmp / "frames"
    first = np.array(load_frames(open_dataset("avenue", folder).train[0], cache))
    video = folder / "Avenue Dataset" / "training_videos" / "01.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for _ in range(12):
        writer.write(np.full((24, 32, 3), 200, np.uint8))
    writer.release()
    second = np.array(load_frames(open_dataset("avenue", folder).train[0], cache))
    assert first.shape == second.shape and not np.array_equal(first, second)
    assert abs(int(second.mean()) - 200) < 5
    store = cache / "train" / "01.jpgtiles"  # the compact store of decoded frames (JPEG tiles)
    store.write_bytes(store.read_bytes()[:200])
    third = np.array(load_frames(open_dataset("avenue", folder).train[0], cache))
    np.testing.assert_array_equal(third, second)
    no_leftovers(cache)


def read_only_complete_cache(ctx: Ctx) -> None:
    """A complete cache is read, never written (meta.json was rewritten on every call: EROFS)."""
    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    for path in sorted(cache.rglob("*"), reverse=True):
        path.chmod(0o555 if path.is_dir() else 0o444)
    kept = fingerprint(cache)
    listing = sorted(map(str, cache.rglob("*")))
    try:
        expect_ok(detect(ctx, ctx.base.root, cache), "already cached")
        assert fingerprint(cache) == kept and sorted(map(str, cache.rglob("*"))) == listing
    finally:
        for path in cache.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)


def read_only_cache_needing_work(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only cache that must be written: one message naming the folder (was an OSError traceback)."""
    cache = ctx.tmp / "cache"
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).startswith(str(cache)) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    real_mkdir = Path.mkdir

    def no_mkdir(self, *args, **kwargs):
        if str(self).startswith(str(cache)) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", no_mkdir)
    expect_error(detect(ctx, ctx.base.root, cache), cache, phrase="read-only")


def full_disk_during_detect(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while writing a detection file: one message; no partial file; finished entries kept."""
    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    folder = copied_detections(cache)
    (folder / "test" / "02.npz").unlink()
    (folder / "test" / "01.npz").unlink()
    kept = fingerprint(folder / "train")
    import ssmtl_core.io as io

    calls = [0]
    real_savez = np.savez

    def savez(handle, **arrays):
        calls[0] += 1
        if calls[0] == 2:
            handle.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(handle, **arrays)

    monkeypatch.setattr(io.np, "savez", savez)
    expect_error(detect(ctx, ctx.base.root, cache), folder / "test" / "02.npz", phrase="no space left")
    assert fingerprint(folder / "train") == kept and (folder / "test" / "01.npz").is_file()
    assert not (folder / "test" / "02.npz").exists()
    no_leftovers(cache)


def full_disk_before_frame_memmap(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding a video file into the cache checks the free space first (a nearly full disk was a SIGBUS)."""
    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=1, test=1)
    import ssmtl_core.data.frames as frames

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(frames.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    res = ctx.cli("train", "--dataset", "avenue", "--root", folder, "--cache", ctx.tmp / "cache", "--params",
                  ctx.base.params, "--detector", "motion", "--out", ctx.tmp / "run")
    message = expect_error(res, folder / "Avenue Dataset" / "training_videos" / "01.avi",
                           phrase="not enough disk space")
    assert "MB free" in message
    assert not list((ctx.tmp / "cache").rglob("*.npy"))
    no_leftovers(ctx.tmp / "cache")


def full_disk_while_preallocating(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    """The raw frame memmap is preallocated: a disk that cannot hold it fails at once, with no temp file left."""
    from ssmtl_core.data import open_dataset
    from ssmtl_core.data.frames import load_frames

    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=1, test=1)

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(SSMTLError, match=r"(?i)no space left.*01\.npy"):
        load_frames(open_dataset("avenue", folder).train[0], ctx.tmp / "cache", store="raw")
    assert not list((ctx.tmp / "cache").rglob("*.npy"))
    no_leftovers(ctx.tmp / "cache")


def full_disk_while_writing_frame_tiles(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills up while the JPEG tiles of a video are written: one message, no temp file left."""
    import ssmtl_core.data.frames as frames

    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=1, test=1)

    def no_space(tile):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frames, "_encode", no_space)
    res = ctx.cli("train", "--dataset", "avenue", "--root", folder, "--cache", ctx.tmp / "cache", "--params",
                  ctx.base.params, "--detector", "motion", "--out", ctx.tmp / "run")
    expect_error(res, "01.jpgtiles", phrase="no space left")
    assert not list((ctx.tmp / "cache").rglob("*.jpgtiles"))
    no_leftovers(ctx.tmp / "cache")


def stale_temp_files_removed(ctx: Ctx) -> None:
    """Temporary files of killed writers are removed on the next run; a live writer's are kept."""
    from ssmtl_core.io import _HOST

    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    folder = copied_detections(cache) / "train"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = folder / f".01.tmp{dead}@{_HOST}.k2j4h5.npz"
    live = folder / f".02.tmp{os.getpid()}@{_HOST}.a8b7c6.npz"
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    expect_ok(detect(ctx, ctx.base.root, cache), "already cached")
    assert not stale.exists() and live.exists()


def stale_claim_file(ctx: Ctx) -> None:
    """A claim file left by a dead run (its lock died with it) does not block the work."""
    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    folder = copied_detections(cache) / "test"
    (folder / "01.npz").unlink()
    (folder / ".01.npz.claim").write_text('{"host": "elsewhere", "pid": 1, "since": "yesterday"}')
    expect_ok(detect(ctx, ctx.base.root, cache), "1 video(s)")
    same_detections(copied_detections(cache), ctx.base.detections)
    no_leftovers(cache)


def concurrent_detect_runs(ctx: Ctx) -> None:
    """Two detect runs at once on one dataset: each video is detected once, and both return complete."""
    from ssmtl_core.config import get_profile
    from ssmtl_core.data import open_dataset
    from ssmtl_core.detect import MotionDetector, detect_dataset

    calls: list[str] = []
    real = MotionDetector.detect_video

    def slow(self, video, progress=False):
        calls.append(video.key)
        time.sleep(0.3)
        return real(self, video, progress)

    dataset = open_dataset("synthetic", ctx.base.root)
    config = get_profile("synthetic").detect
    cache = ctx.tmp / "cache"
    logs: list[str] = []
    MotionDetector.detect_video = slow
    try:
        threads = [threading.Thread(target=detect_dataset, args=(dataset, config, cache),
                                    kwargs={"progress": False, "log": logs.append}) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        MotionDetector.detect_video = real
    assert sorted(calls) == sorted(v.key for v in dataset.train + dataset.test), calls
    same_detections(next(cache.glob("synthetic-*/detections/motion-*")), ctx.base.detections)
    no_leftovers(cache)


def claim_held_by_another_process(ctx: Ctx) -> None:
    """A video claimed by another process: detect does the others, waits, and takes over when that process is
    killed (kill -9 drops its claim)."""
    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    folder = copied_detections(cache)
    for name in ("train/01.npz", "test/02.npz"):
        (folder / name).unlink()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ssmtl_core.io import Claim; "
                               f"c = Claim({str(folder / 'train' / '01.npz')!r}); assert c.acquire(); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        threading.Timer(1.5, holder.kill).start()
        started = time.monotonic()
        text = expect_ok(detect(ctx, ctx.base.root, cache), "is being computed by process", "waiting for it")
        assert time.monotonic() - started >= 1.0, text
    finally:
        holder.kill()
        holder.wait()
    same_detections(folder, ctx.base.detections)
    no_leftovers(cache)


# -- rows: checkpoints and runs (fixed in ssmtl_core/checkpoint.py and train.py) ---------------------


class _Payload:
    def __reduce__(self):
        return (print, ("PWNED: code ran while loading a checkpoint",))


def foreign_pickle_checkpoint(ctx: Ctx) -> None:
    """A checkpoint holding foreign pickled objects is refused, and its code never runs."""
    run = copy(ctx.base.run, ctx.tmp / "run")
    torch.save({"kind": "ssmtl-checkpoint", "payload": _Payload()}, run / "best.pt")
    res = ctx.cli("evaluate", "--run", run)
    expect_error(res, run / "best.pt", phrase="not loaded for safety")
    assert "PWNED" not in res.out + res.err


def damaged_checkpoint(ctx: Ctx) -> None:
    run = copy(ctx.base.run, ctx.tmp / "run")
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:5000])
    expect_error(ctx.cli("evaluate", "--run", run), run / "best.pt", phrase="damaged")


def not_an_ssmtl_checkpoint(ctx: Ctx) -> None:
    run = copy(ctx.base.run, ctx.tmp / "run")
    torch.save({"weights": torch.zeros(3)}, run / "best.pt")
    expect_error(ctx.cli("evaluate", "--run", run), run / "best.pt", phrase="not an SSMTL checkpoint")


def arch_mismatch_checkpoint(ctx: Ctx) -> None:
    """A checkpoint whose arch does not match its weights (was a size-mismatch traceback)."""
    run = copy(ctx.base.run, ctx.tmp / "run")
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    state["model_config"]["arch"] = "deep_wide"
    torch.save(state, run / "best.pt")
    expect_error(ctx.cli("evaluate", "--run", run), run / "best.pt", phrase="do not fit its model configuration")


def damaged_last_pt(ctx: Ctx) -> None:
    """A damaged last.pt: the message names it and says to delete it (it gave advice about best.pt)."""
    run = copy(ctx.base.run, ctx.tmp / "run")
    (run / "last.pt").write_bytes(b"\x00" * 100)
    kept = fingerprint(run, skip=("last.pt",))
    res = train(ctx, ctx.base.root, ctx.base.cache, run, "--epochs", "2")
    expect_error(res, run / "last.pt", phrase="delete it")
    assert fingerprint(run, skip=("last.pt",)) == kept


def rerun_finished_train(ctx: Ctx) -> None:
    """Rerunning a finished run says so and keeps train_summary.json (it rewrote its time as 0)."""
    run = copy(ctx.base.run, ctx.tmp / "run")
    kept = fingerprint(run, skip=("run.json",))
    expect_ok(train(ctx, ctx.base.root, ctx.base.cache, run), "already trained")
    assert fingerprint(run, skip=("run.json",)) == kept


def other_settings_same_out(ctx: Ctx) -> None:
    run = copy(ctx.base.run, ctx.tmp / "run")
    kept = fingerprint(run)
    expect_error(train(ctx, ctx.base.root, ctx.base.cache, run, "--lr", "0.01"), run,
                 phrase="holds a run with other settings")
    assert fingerprint(run) == kept


def evaluate_other_cache_rescores(ctx: Ctx) -> None:
    """Object scores cached by evaluate are keyed by the detections too: another --cache rescores (it returned
    the old scores)."""
    run = copy(ctx.base.run, ctx.tmp / "run")
    expect_ok(ctx.cli("evaluate", "--run", run), "micro AUC")
    scores = run / "eval" / "object_scores"
    first = fingerprint(scores)
    # A damaged score file is recomputed, the others reused.
    (scores / "01.npz").write_bytes(b"garbage")
    expect_ok(ctx.cli("evaluate", "--run", run), "micro AUC")
    second = fingerprint(scores)
    assert second["object_scores/02.npz"] == first["object_scores/02.npz"]
    assert second["object_scores/01.npz"] != first["object_scores/01.npz"]
    # Another cache (re-made detections): rescored.
    expect_ok(ctx.cli("evaluate", "--run", run, "--cache", ctx.tmp / "other_cache"), "micro AUC")
    third = fingerprint(scores)
    assert all(third[k][0] != second[k][0] for k in second), (second, third)
    # Another copy of the dataset (same files, same times, so the same detections): rescored too.
    root = copy(ctx.base.root, ctx.tmp / "syn_copy")
    expect_ok(ctx.cli("evaluate", "--run", run, "--root", root, "--cache", ctx.tmp / "other_cache"), "micro AUC")
    fourth = fingerprint(scores)
    assert all(fourth[k][0] != third[k][0] for k in third), (third, fourth)


def evaluate_missing_ground_truth(ctx: Ctx) -> None:
    """evaluate refuses a dataset without ground truth before scoring, naming where it looked."""
    root, _, _ = private_copy(ctx, cache=False)
    (root / "ground_truth" / "frame_labels.npy").unlink()
    (root / "ground_truth" / "pixel_masks.npz").unlink()
    run = copy(ctx.base.run, ctx.tmp / "run")
    res = ctx.cli("evaluate", "--run", run, "--root", root, "--cache", ctx.base.cache)
    expect_error(res, root / "ground_truth" / "frame_labels.npy", phrase="no frame labels")
    assert not (run / "eval").exists()


def score_video_bad_video(ctx: Ctx) -> None:
    """score-video on an unreadable video: one message, and no empty output folder left."""
    video = ctx.tmp / "clip.mp4"
    video.write_bytes(b"not a video at all" * 50)
    out = ctx.tmp / "scored"
    expect_error(ctx.cli("score-video", video, "--checkpoint", ctx.base.run / "best.pt", "--out", out), video,
                 phrase="cannot open video")
    assert not out.exists()


def score_video_missing_video(ctx: Ctx) -> None:
    video = ctx.tmp / "missing.mp4"
    expect_error(ctx.cli("score-video", video, "--checkpoint", ctx.base.run / "best.pt", "--out", ctx.tmp / "o"),
                 video, phrase="video not found")


def score_video_bad_conf(ctx: Ctx) -> None:
    """score-video's setting overrides go through the same validation as every other entry point."""
    out = ctx.tmp / "scored"
    res = ctx.cli("score-video", ctx.base.root / "testing" / "frames" / "01", "--checkpoint",
                  ctx.base.run / "best.pt", "--out", out, "--conf", "5")
    expect_error(res, "detect.conf", phrase="in [0.0, 1.0]")
    assert not out.exists()


def evaluate_missing_run(ctx: Ctx) -> None:
    run = ctx.tmp / "no_run"
    expect_error(ctx.cli("evaluate", "--run", run), run / "best.pt", phrase="checkpoint not found")


def unknown_video_selected(ctx: Ctx) -> None:
    expect_error(detect(ctx, ctx.base.root, ctx.base.cache, "synthetic", "--videos", "99"), ctx.base.root,
                 phrase="none of the videos 99")


# -- rows: faults (kill -9 / Ctrl-C, then rerun; compared with an uninterrupted run) ----------------


def _detect_fault(ctx: Ctx, target: str, n: int, when: str, leftover: bool = False, match: str = "") -> None:
    cache = ctx.tmp / "cache"
    argv = ["detect", "--dataset", "synthetic", "--root", ctx.base.root, "--detector", "motion", "--cache", cache]
    killed = run_killed(argv, ctx.tmp, target, n, when, match=match)
    assert killed.code == -signal.SIGKILL, killed
    assert not leftover or [p for p in cache.rglob(".*") if ".tmp" in p.name], "the kill left no temporary file"
    expect_ok(ctx.cli(*argv), "detections cached in")
    same_detections(next(cache.glob("synthetic-*/detections/motion-*")), ctx.base.detections)
    no_leftovers(cache)


def kill_detect_at_start(ctx: Ctx) -> None:
    """kill -9 while the first video is being detected (holding its claim)."""
    _detect_fault(ctx, "ssmtl_core.detect:MotionDetector.detect_video", 1, "before")


def kill_detect_after_first_video(ctx: Ctx) -> None:
    _detect_fault(ctx, "ssmtl_core.detect:save_npz", 1, "after")


def kill_detect_before_rename(ctx: Ctx) -> None:
    """kill -9 with the second video's temporary file written but not renamed: the rerun removes it."""
    _detect_fault(ctx, "os:replace", 2, "before", leftover=True, match=".npz")


def _train_fault(ctx: Ctx, reference: Path, target: str, n: int, when: str, sig: int = signal.SIGKILL,
                 code: int | None = None, leftover: bool = False, match: str = "") -> Result:
    out = ctx.tmp / "run"
    argv = ["train", "--dataset", "synthetic", "--root", ctx.base.root, "--cache", ctx.base.cache, "--params",
            ctx.base.params, "--epochs", "2", "--out", out]
    killed = run_killed(argv, ctx.tmp, target, n, when, sig=sig, match=match)
    assert killed.code == (-sig if code is None else code), killed
    assert not leftover or [p for p in out.glob(".*") if ".tmp" in p.name], "the kill left no temporary file"
    expect_ok(ctx.cli(*argv))
    same_run(out, reference)
    no_leftovers(out)
    return killed


def kill_train_mid_epoch(ctx: Ctx, reference: Path) -> None:
    """kill -9 in epoch 2 (epoch 1 saved): the rerun resumes and ends bit-identical."""
    _train_fault(ctx, reference, "ssmtl_core.train:training_step", 6, "before")


def kill_train_between_checkpoints(ctx: Ctx, reference: Path) -> None:
    """kill -9 right after best.pt is written, before last.pt."""
    _train_fault(ctx, reference, "ssmtl_core.train:save_checkpoint", 1, "after", match="best.pt")


def kill_train_while_saving(ctx: Ctx, reference: Path) -> None:
    """kill -9 with last.pt's temporary file written, not renamed: the rerun removes it."""
    _train_fault(ctx, reference, "torch:save", 1, "after", leftover=True, match=".last.")


def ctrl_c_train_mid_epoch(ctx: Ctx, reference: Path) -> None:
    """Ctrl-C mid-epoch saves last.pt at that step (it lost the partial epoch); the rerun resumes from it."""
    killed = _train_fault(ctx, reference, "ssmtl_core.train:training_step", 7, "before", sig=signal.SIGINT,
                          code=130)
    assert "interrupted at epoch 2, step 2" in killed.out + killed.err, killed


def _synth_fault(ctx: Ctx, target: str, n: int, when: str, truncate: bool = False, match: str = "") -> None:
    root = ctx.tmp / "syn"
    argv = ["synth", "--out", root, "--size", "tiny", "--seed", "0"]
    killed = run_killed(argv, ctx.tmp, target, n, when, truncate=truncate, match=match)
    assert killed.code == -signal.SIGKILL, killed
    expect_error(info(ctx, root), root, phrase="generation was interrupted")
    expect_error(detect(ctx, root, ctx.tmp / "cache"), root, phrase="generation was interrupted")
    assert not (ctx.tmp / "cache").exists()
    expect_ok(ctx.cli(*argv))
    ours = {k: v[1] for k, v in fingerprint(root).items()}
    reference = {k: v[1] for k, v in fingerprint(ctx.base.root).items()}
    assert ours == reference, set(ours) ^ set(reference) or [k for k in ours if ours[k] != reference[k]]


def kill_synth_half_written_test_frame(ctx: Ctx) -> None:
    """kill -9 in the middle of a test frame (the JPEG half-written): info and detect refuse the folder; the rerun
    is byte-identical to an uninterrupted run."""
    _synth_fault(ctx, "cv2:imwrite", 20, "after", truncate=True, match="testing")


def kill_synth_at_start(ctx: Ctx) -> None:
    _synth_fault(ctx, "cv2:imwrite", 1, "before")


def kill_synth_before_ground_truth(ctx: Ctx) -> None:
    _synth_fault(ctx, "ssmtl_core.data.synthetic:_write_csv", 1, "before")


# -- rows: what a copy holds besides its frames (ssmtl_core/data/layouts.py: frame_files) -----------------

#: The header of a macOS AppleDouble ``._*`` twin (resource fork and Finder info of the file it shadows).
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(60)


def macos_and_windows_leftovers_ignored(ctx: Ctx) -> None:
    """A copy unpacked on a Mac and browsed on Windows: ``._*`` twins of every frame (they end in .jpg too; one
    has zero bytes), ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, ``.ipynb_checkpoints``: left out with one note
    (the twins failed as unreadable frames). The frames, and so the cached detections, are the same."""
    root, cache, _ = private_copy(ctx)
    video = root / "training" / "frames" / "01"
    for frame in sorted(video.glob("*.jpg")):
        (video / f"._{frame.name}").write_bytes(APPLEDOUBLE)
    next(video.glob("._*")).write_bytes(b"")
    for folder in (video, root / "testing" / "frames" / "02", root / "training" / "frames"):
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(40))
    (root / "testing" / "frames" / "01" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    (root / "testing" / "frames" / "01" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    checkpoints = root / "training" / "frames" / ".ipynb_checkpoints"
    checkpoints.mkdir()
    shutil.copy2(next(video.glob("[0-9]*.jpg")), checkpoints / "000-checkpoint.jpg")
    kept = fingerprint(cache)
    text = expect_ok(detect(ctx, root, cache), "note:", "are not frames and are left out", "training/frames/01/._",
                     "4 video(s) already cached")
    assert "warning:" not in text, text
    assert fingerprint(cache) == kept


def macosx_folder_of_a_mac_zip(ctx: Ctx) -> None:
    """A zip made on a Mac unpacks a ``__MACOSX/`` mirror of ``._*`` files next to the dataset. Pointed at the
    folder above, ``info`` finds the dataset, not the mirror (which sorted first and failed on its ``._*``)."""
    top = ctx.tmp / "unzipped"
    root = jpg_tree(top / "dataset", {"01": 6}, {"01": 6})
    for frame in root.rglob("*.jpg"):
        twin = top / "__MACOSX" / frame.parent.relative_to(top) / f"._{frame.name}"
        twin.parent.mkdir(parents=True, exist_ok=True)
        twin.write_bytes(APPLEDOUBLE)
    res = info(ctx, top, "synthetic", "--json")
    expect_ok(res)
    summary = json.loads(res.out)
    assert summary["root"] == str(root) and summary["train"] == {"videos": 1, "frames": 6}


def appledouble_video_file_ignored(ctx: Ctx) -> None:
    """``._01.avi`` next to Avenue's videos (a copy from a Mac): left out with a note (it failed as a video)."""
    folder = avenue_as_unzipped(ctx.tmp / "avenue", train=2, test=2)
    (folder / "Avenue Dataset" / "training_videos" / "._01.avi").write_bytes(APPLEDOUBLE)
    res = info(ctx, folder, "avenue", "--json")
    expect_ok(res, "note:", "training_videos/._01.avi")
    assert json.loads(res.out)["train"]["videos"] == 2


def upper_case_extensions_accepted(ctx: Ctx) -> None:
    """Frames named ``.JPG`` (a camera's or Windows' export) are frames like ``.jpg``: no note, same count."""
    root = jpg_tree(ctx.tmp / "d", {"01": 6}, {"01": 6})
    for frame in (root / "training" / "frames" / "01").glob("*.jpg"):
        frame.rename(frame.with_suffix(".JPG"))
    res = info(ctx, root, "synthetic", "--json")
    text = expect_ok(res)
    assert "note:" not in text and "warning:" not in text, text
    assert json.loads(res.out)["train"] == {"videos": 1, "frames": 6}


def unpadded_frame_numbers_in_numeric_order(ctx: Ctx) -> None:
    """``1.jpg`` ... ``12.jpg``: frame k is the k-th by number (1, 2, ..., 10, 11, 12), never by text
    (1, 10, 11, 12, 2): checked on the pixels, where each frame's bright block sits at its own column."""
    from ssmtl_core.data import open_dataset

    root = jpg_tree(ctx.tmp / "d", {"01": 12}, {"01": 6})
    video = root / "training" / "frames" / "01"
    for frame in sorted(video.glob("*.jpg")):
        frame.rename(video / f"{int(frame.stem) + 1}.jpg")
    text = expect_ok(info(ctx, root))
    assert "warning:" not in text, text
    (train_video,) = open_dataset("synthetic", root).train
    assert [p.name for p in train_video.source.files] == [f"{k}.jpg" for k in range(1, 13)]
    for k in range(12):  # jpg_tree draws frame k's block over columns 2 + 2k to 7 + 2k
        bright = np.flatnonzero(train_video.frame(k)[6].mean(axis=1) > 160)
        assert abs(bright.mean() - (4.5 + 2 * k)) <= 1, (k, bright)


def gap_in_frame_numbers_warned(ctx: Ctx) -> None:
    """A lost frame (``005.jpg`` gone): a warning naming the folder and the number (it was silent, and each later
    frame took the place, and label, of the one before it); the frames there are read."""
    root = jpg_tree(ctx.tmp / "d", {"01": 8}, {"01": 6})
    video = root / "training" / "frames" / "01"
    (video / "005.jpg").unlink()
    res = info(ctx, root, "synthetic", "--json")
    expect_ok(res, "warning:", f"{video} has no frame number 5 (1 missing between 0 and 7)")
    assert json.loads(res.out)["train"]["frames"] == 7


def frames_in_two_formats_warned(ctx: Ctx) -> None:
    """Half a video re-saved as PNG: every frame is there, and a warning says the video mixes two formats."""
    root = jpg_tree(ctx.tmp / "d", {"01": 6}, {"01": 6})
    video = root / "training" / "frames" / "01"
    for frame in sorted(video.glob("*.jpg"))[3:]:
        assert cv2.imwrite(str(frame.with_suffix(".png")), cv2.imread(str(frame)))
        frame.unlink()
    res = info(ctx, root, "synthetic", "--json")
    expect_ok(res, "warning:", f"{video} holds frames in 2 image formats (.jpg, .png)")
    assert json.loads(res.out)["train"]["frames"] == 6


def one_frame_number_twice_refused(ctx: Ctx) -> None:
    """Two files with one frame number (``003.png`` next to ``003.jpg``; ``3.jpg`` next to ``003.jpg``): refused,
    naming both (each was one more frame, shifting every later one)."""
    for i, extra in enumerate(("003.png", "3.jpg")):
        root = jpg_tree(ctx.tmp / f"d{i}", {"01": 6}, {"01": 6})
        video = root / "training" / "frames" / "01"
        shutil.copy2(video / "003.jpg", video / extra)
        expect_error(info(ctx, root), video / "003.jpg", video / extra, phrase="are both frame 3")


def second_copy_of_a_frame_refused(ctx: Ctx) -> None:
    """``004 (1).jpg`` (an archive extracted twice), ``004 - Copy.jpg`` (Windows), ``004 copy.jpg`` and
    ``004 2.jpg`` (macOS): refused, naming the copy (it was one more frame)."""
    for i, name in enumerate(("004 (1).jpg", "004 - Copy.jpg", "004 copy.jpg", "004 2.jpg")):
        root = jpg_tree(ctx.tmp / f"d{i}", {"01": 6}, {"01": 6})
        video = root / "testing" / "frames" / "01"
        shutil.copy2(video / "004.jpg", video / name)
        expect_error(info(ctx, root), video / name, phrase="is a second copy of frame 004")


def partial_download_refused(ctx: Ctx) -> None:
    """A frame still downloading (``007.jpg.crdownload``, ``007.jpg.part``): refused, naming it (it was left
    out, and the video silently one frame short)."""
    for i, suffix in enumerate((".crdownload", ".part")):
        root = jpg_tree(ctx.tmp / f"d{i}", {"01": 8}, {"01": 6})
        video = root / "training" / "frames" / "01"
        partial = video / f"007.jpg{suffix}"
        (video / "007.jpg").rename(partial)
        expect_error(info(ctx, root), partial, phrase="is a download that did not finish")


def frames_one_level_too_deep_refused(ctx: Ctx) -> None:
    """An archive unpacked one level too deep (``01/01/000.jpg``): refused, saying where the frames are."""
    root = jpg_tree(ctx.tmp / "d", {"01": 6}, {"01": 6})
    video = root / "training" / "frames" / "01"
    nested = video / "01"
    nested.mkdir()
    for frame in video.glob("*.jpg"):
        frame.rename(nested / frame.name)
    expect_error(info(ctx, root), video, phrase="Its subfolder 01 holds images")


def subfolder_next_to_frames_noted(ctx: Ctx) -> None:
    """A subfolder among a video's frames (an export's extras): its files are not frames, and the note says so."""
    root = jpg_tree(ctx.tmp / "d", {"01": 6}, {"01": 6})
    video = root / "training" / "frames" / "01"
    (video / "extra").mkdir()
    shutil.copy2(video / "000.jpg", video / "extra" / "000.jpg")
    res = info(ctx, root, "synthetic", "--json")
    expect_ok(res, "note:", "training/frames/01/extra")
    assert json.loads(res.out)["train"]["frames"] == 6


def symlinked_frames_accepted(ctx: Ctx) -> None:
    """Frames that are symbolic links (into a shared store) are read through them: the same detections as the
    files themselves. A dangling link is refused, naming it."""
    root = copy(ctx.base.root, ctx.tmp / "syn")
    store = ctx.tmp / "store"
    store.mkdir()
    video = root / "training" / "frames" / "01"
    frames = sorted(video.glob("*.jpg"))
    for frame in frames:
        frame.rename(store / frame.name)
        frame.symlink_to(store / frame.name)
    expect_ok(detect(ctx, root, ctx.tmp / "cache"), "detections cached in")
    same_detections(copied_detections(ctx.tmp / "cache"), ctx.base.detections)
    (store / frames[3].name).unlink()
    expect_error(detect(ctx, root, ctx.tmp / "cache2"), frames[3], phrase="cannot read")


# -- rows: two runs at once on one run folder ----------------------------------------------------------

HOLD_WRAPPER = r"""
import sys, time
import ssmtl_core.train as train
real = train.training_step
def held(*args, **kwargs):
    print("<training>", flush=True)
    time.sleep(300)
    return real(*args, **kwargs)
train.training_step = held
from ssmtl_core.cli import main
sys.exit(main({argv!r}))
"""


def two_trains_one_out_folder(ctx: Ctx) -> None:
    """A second ``ssmtl train`` on the --out of one still training refuses at once, naming the folder and the
    running process (both ran to the end, each overwriting the other's checkpoints). Once the first is killed
    (kill -9, its claim dies with it), a rerun trains, equal to an uninterrupted run."""
    out = ctx.tmp / "run"
    argv = ["train", "--dataset", "synthetic", "--root", ctx.base.root, "--cache", ctx.base.cache, "--params",
            ctx.base.params, "--out", out]
    first = subprocess.Popen([sys.executable, "-c", HOLD_WRAPPER.format(argv=[str(a) for a in argv])],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ctx.tmp, env=ENV)
    try:
        lines = iter(first.stdout.readline, "")  # its log, up to its first training step (or its end)
        assert any(line.strip() == "<training>" for line in lines), "the first run did not start training"
        expect_error(ctx.cli(*argv), out, f"process {first.pid}", phrase="is being trained right now by")
        assert first.poll() is None, "the refused run disturbed the running one"
    finally:
        first.kill()
        first.wait()
    expect_ok(ctx.cli(*argv))
    same_run(out, ctx.base.run)
    no_leftovers(out)


def train_claim_released_after_each_run(ctx: Ctx) -> None:
    """The folder's claim ends with each run, however it ends: a refused run (other settings), then a finished
    one, then a rerun in the same process all go through, and no claim file is left."""
    run = copy(ctx.base.run, ctx.tmp / "run")
    expect_error(train(ctx, ctx.base.root, ctx.base.cache, run, "--lr", "0.01"), run, phrase="other settings")
    expect_ok(train(ctx, ctx.base.root, ctx.base.cache, run, "--epochs", "2"))
    expect_ok(train(ctx, ctx.base.root, ctx.base.cache, run, "--epochs", "2"), "already trained")
    no_leftovers(run)


# -- rows owned elsewhere, failing until fixed -------------------------------------------------------


def teacher_cache_damaged(ctx: Ctx) -> None:
    """A damaged teacher-logit cache file is recomputed (it is a BadZipFile, now 'unexpected', exit 1)."""
    cache = copy(ctx.base.cache, ctx.tmp / "cache")
    params = ctx.params(train__teacher="efficientnet_lite0", train__tasks="aot,kd", train__teacher_size=64,
                        sample__max_train_objects=16)
    argv = ["train", "--dataset", "synthetic", "--root", ctx.base.root, "--cache", cache, "--params", params]
    expect_ok(ctx.cli(*argv, "--out", ctx.tmp / "run1"))
    bad = next(cache.glob("synthetic-*/teachers/*/*/train/01.npz"))
    bad.write_bytes(b"garbage")
    expect_ok(ctx.cli(*argv, "--out", ctx.tmp / "run2"))


CASES: dict[str, tuple[Callable, tuple]] = {
    # frames
    "truncated_jpeg": (truncated_jpeg, ()),
    "repaired_frame_is_redetected": (repaired_frame_is_redetected, ()),
    "garbage_frame": (garbage_frame, ()),
    "empty_frame_file": (empty_frame_file, ()),
    "mixed_frame_sizes": (mixed_frame_sizes, ()),
    "mixed_sizes_in_training": (mixed_sizes_in_training, ()),
    "folder_without_frames": (folder_without_frames, ()),
    "truncated_video_file": (truncated_video_file, ()),
    "truncated_jpeg_real_process": (truncated_jpeg_real_process, ()),
    "bad_setting_real_process": (bad_setting_real_process, ()),
    "missing_root": (missing_root, ()),
    "root_is_a_file": (root_is_a_file, ()),
    "wrong_layout": (wrong_layout, ()),
    # labels
    "labels_floats": (labels_floats, ()),
    "labels_out_of_range": (labels_out_of_range, ()),
    "labels_nan": (labels_nan, ()),
    "labels_strings": (labels_strings, ()),
    "labels_objects": (labels_objects, ()),
    "labels_garbage": (labels_garbage, ()),
    "labels_npz_named_npy": (labels_npz_named_npy, ()),
    "labels_count_mismatch": (labels_count_mismatch, ()),
    "labels_exact_floats_accepted": (labels_exact_floats_accepted, ()),
    "per_video_label_file_missing": (per_video_label_file_missing, ()),
    "per_video_label_file_floats": (per_video_label_file_floats, ()),
    # ground truth, official layouts, partial copies, the synthetic marker
    "missing_ground_truth_info": (missing_ground_truth_info, ()),
    "missing_ground_truth_train": (missing_ground_truth_train, ()),
    "avenue_zips_side_by_side": (avenue_zips_side_by_side, ()),
    "avenue_without_ground_truth": (avenue_without_ground_truth, ()),
    "avenue_damaged_mask_file": (avenue_damaged_mask_file, ()),
    "partial_copy_warned": (partial_copy_warned, ()),
    "complete_copy_not_partial": (complete_copy_not_partial, ()),
    "ucsd_official_without_ground_truth": (ucsd_official_without_ground_truth, ()),
    "synth_marker_refused": (synth_marker_refused, ()),
    # settings
    "batch_size_negative": (batch_size_negative, ()),
    "batch_size_zero": (batch_size_zero, ()),
    "epochs_zero": (epochs_zero, ()),
    "epochs_negative": (epochs_negative, ()),
    "crop_size_zero": (crop_size_zero, ()),
    "crop_size_tiny": (crop_size_tiny, ()),
    "conf_zero": (conf_zero, ()),
    "conf_above_one": (conf_above_one, ()),
    "val_fraction_one": (val_fraction_one, ()),
    "budget_negative": (budget_negative, ()),
    "precision_unknown": (precision_unknown, ()),
    "epochs_not_a_number": (epochs_not_a_number, ()),
    "lr_zero": (lr_zero, ()),
    "params_file_missing": (params_file_missing, ()),
    "model_crop_size_zero": (model_crop_size_zero, ()),
    # the detection cache and the disk
    "damaged_npz_detect": (damaged_npz_detect, ()),
    "damaged_npz_train": (damaged_npz_train, ()),
    "unsigned_legacy_entry": (unsigned_legacy_entry, ()),
    "changed_video_file_redecoded": (changed_video_file_redecoded, ()),
    "read_only_complete_cache": (read_only_complete_cache, ()),
    "read_only_cache_needing_work": (read_only_cache_needing_work, ("monkeypatch",)),
    "full_disk_during_detect": (full_disk_during_detect, ("monkeypatch",)),
    "full_disk_before_frame_memmap": (full_disk_before_frame_memmap, ("monkeypatch",)),
    "full_disk_while_preallocating": (full_disk_while_preallocating, ("monkeypatch",)),
    "full_disk_while_writing_frame_tiles": (full_disk_while_writing_frame_tiles, ("monkeypatch",)),
    "stale_temp_files_removed": (stale_temp_files_removed, ()),
    "stale_claim_file": (stale_claim_file, ()),
    "concurrent_detect_runs": (concurrent_detect_runs, ()),
    "claim_held_by_another_process": (claim_held_by_another_process, ()),
    "unknown_video_selected": (unknown_video_selected, ()),
    # checkpoints, runs, evaluate, score-video
    "foreign_pickle_checkpoint": (foreign_pickle_checkpoint, ()),
    "damaged_checkpoint": (damaged_checkpoint, ()),
    "not_an_ssmtl_checkpoint": (not_an_ssmtl_checkpoint, ()),
    "arch_mismatch_checkpoint": (arch_mismatch_checkpoint, ()),
    "damaged_last_pt": (damaged_last_pt, ()),
    "rerun_finished_train": (rerun_finished_train, ()),
    "other_settings_same_out": (other_settings_same_out, ()),
    "evaluate_other_cache_rescores": (evaluate_other_cache_rescores, ()),
    "evaluate_missing_run": (evaluate_missing_run, ()),
    "score_video_bad_video": (score_video_bad_video, ()),
    "score_video_missing_video": (score_video_missing_video, ()),
    # faults
    "kill_detect_at_start": (kill_detect_at_start, ()),
    "kill_detect_after_first_video": (kill_detect_after_first_video, ()),
    "kill_detect_before_rename": (kill_detect_before_rename, ()),
    "kill_train_mid_epoch": (kill_train_mid_epoch, ("reference",)),
    "kill_train_between_checkpoints": (kill_train_between_checkpoints, ("reference",)),
    "kill_train_while_saving": (kill_train_while_saving, ("reference",)),
    "ctrl_c_train_mid_epoch": (ctrl_c_train_mid_epoch, ("reference",)),
    "kill_synth_half_written_test_frame": (kill_synth_half_written_test_frame, ()),
    "kill_synth_at_start": (kill_synth_at_start, ()),
    "kill_synth_before_ground_truth": (kill_synth_before_ground_truth, ()),
    "evaluate_missing_ground_truth": (evaluate_missing_ground_truth, ()),
    "score_video_bad_conf": (score_video_bad_conf, ()),
    "teacher_cache_damaged": (teacher_cache_damaged, ()),
    # what a copy holds besides its frames
    "macos_and_windows_leftovers_ignored": (macos_and_windows_leftovers_ignored, ()),
    "macosx_folder_of_a_mac_zip": (macosx_folder_of_a_mac_zip, ()),
    "appledouble_video_file_ignored": (appledouble_video_file_ignored, ()),
    "upper_case_extensions_accepted": (upper_case_extensions_accepted, ()),
    "unpadded_frame_numbers_in_numeric_order": (unpadded_frame_numbers_in_numeric_order, ()),
    "gap_in_frame_numbers_warned": (gap_in_frame_numbers_warned, ()),
    "frames_in_two_formats_warned": (frames_in_two_formats_warned, ()),
    "one_frame_number_twice_refused": (one_frame_number_twice_refused, ()),
    "second_copy_of_a_frame_refused": (second_copy_of_a_frame_refused, ()),
    "partial_download_refused": (partial_download_refused, ()),
    "frames_one_level_too_deep_refused": (frames_one_level_too_deep_refused, ()),
    "subfolder_next_to_frames_noted": (subfolder_next_to_frames_noted, ()),
    "symlinked_frames_accepted": (symlinked_frames_accepted, ()),
    # two runs at once on one run folder
    "two_trains_one_out_folder": (two_trains_one_out_folder, ()),
    "train_claim_released_after_each_run": (train_claim_released_after_each_run, ()),
}

def _params():
    return [pytest.param(name, id=name) for name in CASES]


@pytest.mark.parametrize("case", _params())
def test_bad_input(case, base, base_fingerprint, request, tmp_path, capsys):
    function, needs = CASES[case]
    extra = {"monkeypatch": lambda: request.getfixturevalue("monkeypatch"),
             "reference": lambda: request.getfixturevalue("reference_two_epochs")}
    ctx = Ctx(tmp_path, base, capsys)
    function(ctx, *(extra[name]() for name in needs))
    # Nothing shared was lost or touched: the dataset, its detection cache and the trained run.
    assert fingerprint(base.root, base.cache, base.run) == base_fingerprint


def test_table_size():
    """The issue asks for at least 40 rows; the README states the count."""
    assert len(CASES) >= 40
    readme = (REPO / "README.md").read_text()
    assert f"{len(CASES)} bad inputs and faults" in readme

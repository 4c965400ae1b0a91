"""The ``ssmtl`` command line: bad inputs end in one clear message, and the data commands chain.

Every bad input is run through :func:`ssmtl_core.cli.main` (in-process, with capsys) and once more through a
real ``python -m ssmtl_core`` subprocess, which is what proves that no traceback reaches the terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import jpg_tree

from ssmtl_core.cli import main
from ssmtl_core.data.synthetic import SIZES

REPO = Path(__file__).resolve().parents[1]


def _missing_root(tmp: Path) -> tuple[list[str], Path]:
    root = tmp / "no" / "such" / "ped2"
    return ["info", "--dataset", "ped2", "--root", str(root)], root


def _wrong_layout(tmp: Path) -> tuple[list[str], Path]:
    root = tmp / "not_a_dataset"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "clip.txt").write_text("not a video\n")
    (root / "notes.txt").write_text("hello\n")
    return ["info", "--dataset", "ped2", "--root", str(root)], root


def _unreadable_frame(tmp: Path) -> tuple[list[str], Path]:
    root = jpg_tree(tmp / "broken_frame", {"01": 6, "02": 6}, {"01": 6}, labels=False)
    bad = root / "training" / "frames" / "02" / "003.jpg"
    bad.write_bytes(b"this is not a JPEG \x00\x01\x02" * 20)
    cache = tmp / "cache"
    return ["detect", "--dataset", "synthetic", "--root", str(root), "--detector", "motion",
            "--cache", str(cache)], bad


def _label_count_mismatch(tmp: Path) -> tuple[list[str], Path]:
    root = jpg_tree(tmp / "short_labels", {"01": 4}, {"01": 5, "02": 4}, labels=False)
    labels = root / "ground_truth" / "frame_labels.npy"
    labels.parent.mkdir()
    np.save(labels, np.zeros(5 + 4 - 1, np.uint8))  # one frame short
    return ["info", "--dataset", "ped2", "--root", str(root)], labels


BAD_INPUTS = {
    "missing_root": (_missing_root, "does not exist"),
    "wrong_layout": (_wrong_layout, "does not look like a ped2 dataset"),
    "unreadable_frame": (_unreadable_frame, "cannot read frame"),
    "label_count_mismatch": (_label_count_mismatch, "holds 8 frame labels but the 2 test videos have 9 frames"),
}


def _check_error(returncode: int, stdout: str, stderr: str, path: Path, phrase: str) -> None:
    assert returncode == 2, f"exit status {returncode}; stderr:\n{stderr}"
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one 'error:' line, got:\n{stderr}"
    message = errors[0]
    assert str(path) in message, f"the message does not name {path}: {message}"
    assert phrase in message, message
    # The message is the last thing printed (a progress bar may come before it, nothing after).
    assert stderr.rstrip().splitlines()[-1] == message
    assert "detections cached" not in stdout


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_in_process(case, tmp_path, capsys):
    make, phrase = BAD_INPUTS[case]
    argv, path = make(tmp_path)
    code = main(argv)
    out = capsys.readouterr()
    _check_error(code, out.out, out.err, path, phrase)
    if case == "unreadable_frame":
        # Nothing half-done was cached for the broken video.
        assert not list((tmp_path / "cache").rglob("02.npz"))


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_in_a_real_process(case, tmp_path):
    make, phrase = BAD_INPUTS[case]
    argv, path = make(tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "ssmtl_core", *argv], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    _check_error(result.returncode, result.stdout, result.stderr, path, phrase)


def test_synth_info_detect_chain(tmp_path, capsys):
    root = tmp_path / "synthetic"
    cache = tmp_path / "cache"
    size = SIZES["tiny"]

    assert main(["synth", "--out", str(root), "--size", "tiny"]) == 0
    assert str(root) in capsys.readouterr().out

    assert main(["info", "--dataset", "synthetic", "--root", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] == {"videos": size.train_clips, "frames": size.train_clips * size.train_frames}
    assert info["test"]["videos"] == size.test_clips
    assert info["test"]["frames"] == size.test_clips * size.test_frames
    labels = np.load(root / "ground_truth" / "frame_labels.npy")
    assert info["test"]["abnormal_frames"] == int(labels.sum())
    assert info["layout"] == "jpg_frames" and info["frame_size"] == [size.height, size.width]

    detect = ["detect", "--dataset", "synthetic", "--root", str(root), "--detector", "motion", "--cache", str(cache)]
    assert main(detect) == 0
    out = capsys.readouterr().out
    assert "detections cached in" in out and "skipped" not in out
    videos = size.train_clips + size.test_clips
    files = sorted(cache.rglob("*.npz"))
    assert len(files) == videos
    mtimes = [f.stat().st_mtime_ns for f in files]

    assert main(detect) == 0
    out = capsys.readouterr().out
    assert f"{videos} video(s) already cached" in out and "skipped" in out, out
    assert [f.stat().st_mtime_ns for f in sorted(cache.rglob("*.npz"))] == mtimes

"""The GPU run's script on the CPU (``bash bench/gpu_run.sh --dry``), so it is known to work before a GPU is lent.

The dry run builds the tiny bundle (synthetic tiny dataset, motion detector, EfficientNet-Lite0 logits at 32 px),
then runs the smoke run (bf16 autocast, on the CPU here), two presets at once as separate processes (one
batch each) and their scoring from the re-encoded frames, and writes the results JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def test_targets_pack_within_their_step():
    import gpu_run

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (50, 1000)).astype(np.float32)
    scores = rng.uniform(0, 1, (50, 80)).astype(np.float32)
    values = np.concatenate([logits, scores], axis=1)
    packed = gpu_run._quantize(values, 1000, bits=6)
    assert packed["kd_logits"].shape == (50, 750) and packed["kd_scores"].dtype == np.uint8  # 6 bits a logit
    back = gpu_run._dequantize(packed, 1000, 80)
    step = (logits.max(1) - logits.min(1)) / 63
    assert np.all(np.abs(back[:, :1000] - logits) <= step[:, None] / 2 + 1e-5)
    assert np.abs(back[:, 1000:] - scores).max() <= 0.5 / 255 + 1e-6


def test_frames_survive_the_video_file(tmp_path):
    import gpu_run

    frames = np.zeros((12, 48, 64, 1), np.uint8)
    frames[:, 10:30, 20:40] = 200
    psnr = gpu_run.write_video(tmp_path / "v.mp4", frames)
    assert gpu_run.read_video(tmp_path / "v.mp4", 1).shape == frames.shape and psnr > 30


def test_dry_run_end_to_end(tmp_path):
    results = tmp_path / "gpu.json"
    env = {**os.environ, "SSMTL_GPU_DIR": str(tmp_path / "gpu"), "DRY_RESULTS": str(results),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_run.sh"), "--dry", "--archs", "shallow_narrow,deep_wide"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(results.read_text())
    assert result["dry"] and result["smoke"]["ok"] and result["smoke"]["precision"] == "bf16"
    assert set(result["protocol"]) == set(result["scoring"]) == {"shallow_narrow", "deep_wide"}
    for arch, run in result["protocol"].items():
        assert run["returncode"] == 0 and run["summary"]["epochs"] == 1, (arch, run["log_tail"])
    for r in result["scoring"].values():
        assert r["frames_per_s"] > 0 and r["objects"] > 0 and r["paper_frames_per_s"] == 51.0
    bundle = tmp_path / "gpu" / "tiny"
    assert {p.name for p in bundle.iterdir()} == {"bundle.json", "frames", "train.npz", "test.npz"}
    assert sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) < 4 * 2**20

"""What a proxy task learns, seen on normal data and through the frame maximum (``docs/method.md``, "Arrow of
time", "What the arrow of time learns").

The arrow of time is the task whose object scores reach the frames worst (issue of the Ped2 study): its
object-level ranking holds while its frame AUC falls as it trains. Three measurements tell why, the first two
without any test label:

* :func:`held_out_objects` - every detection of the **normal validation frames** (the last
  ``train.val_fraction`` of each training video, never trained on), with how much it moves
  (:func:`motion_energy`) and its detection kind (COCO box or class-agnostic motion blob);
* :func:`task_scores` - a checkpoint's score of one task on such sequences; read against motion and kind it
  shows which normal objects the task gets wrong (:func:`mean_by_bin`);
* :func:`frame_max_sources` - from the test labels, to diagnose only: in the abnormal frames, how often an
  abnormal object holds the frame's highest score, when ~17 normal objects per frame compete for it.

Used by notebook 01 and ``bench/aot_diagnostics.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import Profile
from .data import load_frames
from .data.layouts import Dataset
from .detect import detect_dataset
from .samples import scoring_sequences


def motion_energy(sequences: np.ndarray) -> np.ndarray:
    """(N,) how much each object moves: the mean absolute difference of consecutive crops, in grey levels
    (sensor noise alone gives a few levels; a walking person at 64x64, 10-15).

    Args:
        sequences: (N, T, S, S, C) uint8 crops.
    """
    grey = np.asarray(sequences, np.float32).mean(-1)
    return np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2, 3))


def held_out_objects(dataset: Dataset, profile: Profile, cache_root: str | Path, videos: str = "train",
                     log=print) -> dict[str, np.ndarray]:
    """Every detection of the normal validation frames (``videos="train"``: the last ``train.val_fraction`` of
    each training video) or of every test frame (``videos="test"``), with its sequence, kind and motion.

    Returns:
        ``sequences`` (N, 2t+1, S, S, C) uint8, ``video`` and ``frame`` (N,), ``boxes`` (N, 4), ``blob`` (N,)
        True for a class-agnostic motion blob, ``motion`` (N,) from :func:`motion_energy`.
    """
    cache_root = Path(cache_root)
    items = dataset.train if videos == "train" else dataset.test
    detections = detect_dataset(dataset, profile.detect, cache_root, splits=(videos,), progress=False, log=log)
    first = 1.0 - profile.train.val_fraction if videos == "train" else 0.0
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("sequences", "video", "frame", "boxes", "blob")}
    for v, item in enumerate(items):
        dets = detections.load(item)
        keep = dets.frame >= int(round(item.num_frames * first))
        frames = load_frames(item, cache_root / dataset.cache_id / "frames")
        parts["sequences"].append(scoring_sequences(frames, dets.frame[keep], dets.boxes[keep], profile.sample,
                                                    rgb=False))
        parts["video"].append(np.full(int(keep.sum()), v))
        parts["frame"].append(dets.frame[keep])
        parts["boxes"].append(dets.boxes[keep])
        parts["blob"].append(dets.classes[keep] < 0)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["motion"] = motion_energy(out["sequences"])
    return out


def task_scores(checkpoint: str | Path, sequences: np.ndarray, task: str = "aot", precision: str = "auto"
                ) -> np.ndarray:
    """(N,) one task's raw test-time score of forward sequences with a checkpoint (P(backward) for ``aot``,
    P(intermittent) for ``irr``, the reconstruction error for ``mid``), as scoring computes it."""
    from .checkpoint import load_checkpoint, model_from_checkpoint  # torch: only when scores are asked for
    from .config import profile_from_dict
    from .score import Scorer

    state = load_checkpoint(checkpoint)
    profile = profile_from_dict(state["profile"])
    scorer = Scorer(model_from_checkpoint(state, "cpu", checkpoint), profile.sample, state.get("kd_layout", {}), "cpu",
                    compile=None, tasks=(task,), precision=precision)
    return scorer.predict(sequences)[task].astype(np.float64)


def mean_by_bin(values: np.ndarray, by: np.ndarray, edges: np.ndarray) -> list[float | None]:
    """The mean of ``values`` in each bin of ``by`` between consecutive ``edges`` (None for an empty bin)."""
    bins = np.clip(np.digitize(by, edges[1:-1]), 0, len(edges) - 2)
    return [float(values[bins == b].mean()) if (bins == b).any() else None for b in range(len(edges) - 1)]


def frame_max_sources(dataset: Dataset, video: np.ndarray, frame: np.ndarray, values: np.ndarray,
                      abnormal: np.ndarray) -> dict[str, float]:
    """What sets each frame's highest object score (test labels: to diagnose, never to choose).

    Args:
        dataset: its test videos' frame labels.
        video, frame: (N,) each test object's video (index into ``dataset.test``) and frame.
        values: (N,) the objects' scores.
        abnormal: (N,) the object-level ground truth.

    Returns:
        ``abnormal_object_sets_the_max``: the share of abnormal frames whose highest-scored object is abnormal;
        the mean highest score of normal objects in normal and in abnormal frames, and of abnormal objects in
        abnormal frames.
    """
    labels = np.concatenate([v.labels for v in dataset.test]).astype(bool)
    offsets = np.cumsum([0] + [v.num_frames for v in dataset.test])[:-1]
    index = offsets[np.asarray(video, int)] + np.asarray(frame, int)
    abnormal = np.asarray(abnormal, bool)
    normal_max, abnormal_max = np.zeros(len(labels)), np.zeros(len(labels))
    np.maximum.at(normal_max, index[~abnormal], values[~abnormal])
    np.maximum.at(abnormal_max, index[abnormal], values[abnormal])
    return {"abnormal_object_sets_the_max": float(np.mean(abnormal_max[labels] > normal_max[labels])),
            "normal_objects_max_in_normal_frames": float(normal_max[~labels].mean()),
            "normal_objects_max_in_abnormal_frames": float(normal_max[labels].mean()),
            "abnormal_objects_max_in_abnormal_frames": float(abnormal_max[labels].mean())}

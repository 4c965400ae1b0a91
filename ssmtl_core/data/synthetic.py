"""The embedded default dataset: a synthetic surveillance scene with people, cyclists, carts and thrown objects.

A CPU-only user has no UCSD Ped2, Avenue or ShanghaiTech copy, so :func:`generate_synthetic` draws one. It
is meant as a real (if small) test of an object-centric anomaly detector, not a toy: the anomalies mirror the
kinds of the real benchmarks, normal people keep walking while they happen, and no single statistic of a
frame (brightness, object count, amount of motion) gives them away.

The scene
    One static, textured scene per seed, shared by train and test clips, seen from a raised camera: a
    building facade with windows and a door at the top, a lawn with trees, a horizontal paved walkway band
    (where people walk) with lamp posts on its far edge, and a tiled plaza with a bench and a bin in front.
    Every frame gets sensor noise (gaussian, sigma 2 grey levels) and a global illumination flicker of
    about 1 %, so a background-subtraction detector has to be robust to both.

Normal behaviour (the only thing in training clips)
    Two to five walkers in view at a time, entering and leaving at the left and right edges, walking along
    the walkway band in both directions at 0.8-1.5 px/frame (at 240x320; speeds and sizes scale with the
    frame and with a mild perspective in y), with a slow vertical drift. A walker is a cv2-drawn person
    (head, torso in a clothing colour, two-segment legs and arms, shoes, sometimes a backpack) whose gait
    phase advances with the distance travelled. Walkers face their direction of motion: the face and nose
    are on the front of the head, hair on the back, shoes point forward, the torso leans forward, arms
    swing further forward than back and the knee flexes while the leg swings forward. A time-reversed
    clip therefore looks like people walking backwards, which is what the arrow-of-time task has to learn.

Anomalies (test clips only), each a kind from the real benchmarks
    ``runner``    the walker sprite at 3.5-5 px/frame with a faster, wider leg cycle, bent arms and a
                  forward lean; it enters running or breaks into a run mid-frame (Avenue and ShanghaiTech
                  "running").
    ``cyclist``   a person riding a bicycle (two spoked wheels, frame, pedalling legs) at 3-4 px/frame
                  (UCSD Ped2 and ShanghaiTech "biker").
    ``cart``      a small car or a box-shaped utility cart on wheels, larger than a person, 2-3 px/frame
                  (Ped2 "cart", ShanghaiTech "vehicle").
    ``wrong_way`` a person walking vertically across the lawn or the plaza, off the walkway, in or out of
                  the building door or the bottom edge (Avenue "wrong direction", ShanghaiTech "walking on
                  the grass"); seen from the front or the back, a view that never occurs in training.
    ``erratic``   a walker who zig-zags with abrupt direction changes for a while, then walks on normally
                  (ShanghaiTech "chasing/fighting", Avenue "strange action").
    ``thrown``    a small ball (about 7 px) thrown by a normal walker, flying on a parabola at 6-10 px/frame
                  and bouncing, with motion blur (Avenue "throwing objects").
    ``falling``   a walker who stops and loiters, then falls and stays lying on the ground (Avenue "loitering",
                  ShanghaiTech "falling").

Each test clip starts with a normal stretch, then 1-3 events of varied kinds (the first events of the clips
go through every kind, so the ``default`` size holds each of them at least once); some events end before
the clip does, so normal frames follow. Over the ``default`` test set about 35-55 % of the frames are
abnormal.

Ground truth
    An object is abnormal only while it behaves abnormally: the walker who later falls is normal while it
    walks in, the erratic walker is normal again once it walks on. ``pixel_masks.npz`` holds the visible
    pixels of abnormal objects (a rendered pixel belongs to an object when its coverage is at least 50 %
    and no later-drawn, nearer object covers it); a frame is abnormal (label 1) when its mask is not
    empty. Boxes in ``tracks.csv`` and ``objects.csv`` are the tight boxes of an object's visible pixels:
    ``x_min, y_min`` is the first column/row, ``x_max, y_max`` one past the last (half-open, like
    ``x + w``). In ``dataset.json`` an event's ``start`` is its first visible abnormal frame and ``end`` one
    past its last (half-open, 0-based frame ids), and ``anomaly_kinds`` lists the kinds present in this
    dataset in a fixed order.

Layout written (see :func:`generate_synthetic`)::

    <out>/dataset.json
    <out>/training/frames/NN/KKK.jpg, <out>/testing/frames/NN/KKK.jpg
    <out>/ground_truth/frame_labels.npy, pixel_masks.npz, tracks.csv, objects.csv

Everything random comes from ``np.random.default_rng(seed)`` and child generators spawned from it (one per
clip, one for the scene, one for the plan), so a seed gives byte-identical files on a given machine.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import SSMTLError
from ..io import atomic_path, read_json

GENERATOR_VERSION = 1

#: The anomaly kinds, in the fixed order used by ``dataset.json`` ("anomaly_kinds").
ANOMALY_KINDS: tuple[str, ...] = ("runner", "cyclist", "cart", "wrong_way", "erratic", "thrown", "falling")
#: Every object kind written to ``objects.csv``.
OBJECT_KINDS: tuple[str, ...] = ("walker", *ANOMALY_KINDS)


@dataclass(frozen=True)
class SyntheticSize:
    """The parameters of one dataset size.

    Attributes:
        height: frame height in pixels.
        width: frame width in pixels.
        train_clips: number of training clips.
        test_clips: number of test clips.
        train_frames: frames per training clip.
        test_frames: frames per test clip.
    """

    height: int
    width: int
    train_clips: int
    test_clips: int
    train_frames: int
    test_frames: int

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return (self.height, self.width)


#: Size name -> parameters. ``tiny`` is for unit tests, ``small`` for quick looks, ``default`` for the study.
SIZES: dict[str, SyntheticSize] = {
    "tiny": SyntheticSize(height=120, width=160, train_clips=2, test_clips=2, train_frames=40, test_frames=40),
    "small": SyntheticSize(height=240, width=320, train_clips=4, test_clips=4, train_frames=100, test_frames=100),
    "default": SyntheticSize(height=240, width=320, train_clips=8, test_clips=8, train_frames=160,
                             test_frames=160),
}

_MARKER = ".synthetic-incomplete"  # present while a generation is under way; a folder with it may be wiped
_OUR_ENTRIES = ("training", "testing", "ground_truth", "dataset.json", _MARKER)

# Rendering: sprites are drawn 4x supersampled and box-filtered down, which gives anti-aliased edges, a
# coverage (alpha) per pixel and sub-pixel motion; cv2's fixed-point ``shift`` adds 1/8 ss-pixel precision.
_SS = 4
_SHIFT = 3
_FIX = float(1 << _SHIFT)

_NOISE_SIGMA = 2.0
_JPEG_QUALITY = 95

# Palettes (RGB). Normal and abnormal people draw from the same ones, so colour says nothing about anomaly.
_SHIRTS = [(200, 45, 45), (45, 75, 180), (45, 140, 65), (220, 190, 45), (228, 228, 222), (38, 38, 44),
           (228, 122, 35), (122, 62, 150), (35, 140, 140), (218, 122, 160), (130, 130, 136), (32, 42, 92),
           (122, 32, 42), (122, 170, 220), (170, 150, 110)]
_PANTS = [(42, 52, 92), (30, 30, 36), (92, 92, 98), (160, 140, 100), (82, 62, 42), (62, 72, 122), (55, 60, 50)]
_SKINS = [(240, 200, 170), (225, 180, 140), (190, 140, 100), (140, 95, 65), (96, 66, 46)]
_HAIRS = [(30, 25, 20), (70, 45, 25), (150, 110, 60), (200, 170, 110), (120, 120, 120), (20, 20, 24)]
_SHOES = [(25, 25, 28), (60, 40, 30), (210, 210, 210), (40, 40, 60)]
_BAGS = [(40, 40, 40), (150, 30, 30), (30, 60, 130), (60, 90, 50), (180, 140, 40), (90, 70, 60)]
_BIKES = [(200, 30, 30), (30, 30, 30), (30, 90, 190), (220, 220, 220), (40, 150, 70), (230, 170, 20)]
_CARS = [(190, 30, 30), (235, 235, 235), (170, 172, 178), (30, 30, 34), (40, 70, 160), (225, 190, 40),
         (40, 110, 70)]
_CARGO = [(150, 110, 70), (200, 170, 120), (90, 120, 90), (180, 80, 40)]
_BALLS = [(235, 60, 30), (250, 210, 40), (245, 245, 245), (60, 160, 230), (240, 120, 20)]


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------


def generate_synthetic(out_dir: str | Path, size: str = "default", seed: int = 0, progress: bool = True) -> Path:
    """Write the synthetic surveillance dataset to ``out_dir`` and return its path.

    Layout (``NN`` = 01, 02, ...; ``KKK`` = 000, 001, ..., more digits if a clip has over 1000 frames)::

        dataset.json                 name, generator_version, size, seed, frame_size [H, W], train_videos and
                                     test_videos ({"NN": frames}), events ([{video, kind, start, end,
                                     track_id}], end exclusive), anomaly_kinds (kinds present)
        training/frames/NN/KKK.jpg   RGB scenes saved with cv2 (BGR on disk), JPEG quality 95
        testing/frames/NN/KKK.jpg
        ground_truth/frame_labels.npy  uint8, every test frame in clip order, 1 = an abnormal pixel is visible
        ground_truth/pixel_masks.npz   "TestNNN" (Test001 = clip 01) -> bool (T, H, W) abnormal pixels
        ground_truth/tracks.csv        video,track_id,frame_id,x_min,y_min,x_max,y_max: one row per test frame
                                       in which an abnormal object is visible; boxes are the tight box of
                                       its visible pixels, min inclusive, max exclusive
        ground_truth/objects.csv       split,video,object_id,kind,anomalous,frame_id,x_min,y_min,x_max,y_max:
                                       every object of both splits in every frame it is visible (for
                                       measuring a detector's recall); ``anomalous`` is per frame

    ``dataset.json`` is written last, so a folder that has it is complete. If ``out_dir`` already holds a
    complete dataset of the same size, seed and generator version, nothing is redone. A synthetic dataset of
    other settings, or one left half-written by an interrupted run, is replaced.

    Args:
        out_dir: the dataset folder (created if missing; must be empty or hold a synthetic dataset).
        size: a key of :data:`SIZES` (``tiny``, ``small`` or ``default``).
        seed: the random seed; the same seed gives byte-identical files on the same machine.
        progress: show a progress bar (and say so when an existing dataset is reused).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        SSMTLError: for an unknown size, or an ``out_dir`` that is a file or a non-empty folder that is not a
            synthetic dataset.
    """
    if size not in SIZES:
        raise SSMTLError(f"unknown synthetic dataset size {size!r}: choose one of {', '.join(SIZES)}.")
    params = SIZES[size]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SSMTLError(f"the synthetic dataset seed must be a non-negative integer, got {seed!r}.")
    seed = int(seed)
    out = Path(out_dir).expanduser()
    if _prepare_folder(out, size, seed, progress):
        return out

    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("generation in progress; this folder is replaced on the next run\n")

    # The children of default_rng(seed), i.e. default_rng(seed).spawn(n), spelled so numpy < 1.25 has it too.
    children = np.random.SeedSequence(seed).spawn(2 + params.train_clips + params.test_clips)
    scene_rng, plan_rng, *clip_rngs = (np.random.default_rng(child) for child in children)
    background, geo = _make_scene(scene_rng, params.height, params.width)
    test_kinds = _plan_first_kinds(plan_rng, params.test_clips)

    total = params.train_clips * params.train_frames + params.test_clips * params.test_frames
    bar = tqdm(total=total, desc=f"synthetic ({size})", unit="frame", disable=not progress)
    object_rows: list[tuple] = []
    track_rows: list[tuple] = []
    events: list[dict[str, Any]] = []
    labels: list[np.ndarray] = []
    masks: dict[str, np.ndarray] = {}
    try:
        for i in range(params.train_clips):
            video = f"{i + 1:02d}"
            tracks = _simulate_clip(clip_rngs[i], geo, params.train_frames, first_kind=None)
            _render_clip(clip_rngs[i], background, geo, tracks, params.train_frames,
                         out / "training" / "frames" / video, "train", video, object_rows, None, bar)
        for i in range(params.test_clips):
            video = f"{i + 1:02d}"
            rng = clip_rngs[params.train_clips + i]
            tracks = _simulate_clip(rng, geo, params.test_frames, first_kind=test_kinds[i])
            mask = np.zeros((params.test_frames, params.height, params.width), dtype=bool)
            _render_clip(rng, background, geo, tracks, params.test_frames, out / "testing" / "frames" / video,
                         "test", video, object_rows, mask, bar)
            clip_tracks = [r for r in object_rows if r[0] == "test" and r[1] == video and r[4] == 1]
            events.extend(_events_from_rows(video, clip_tracks))
            track_rows.extend((video, r[2], r[5], r[6], r[7], r[8], r[9]) for r in clip_tracks)
            labels.append(mask.any(axis=(1, 2)).astype(np.uint8))
            masks[f"Test{i + 1:03d}"] = mask
    finally:
        bar.close()

    gt = out / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    with atomic_path(gt / "frame_labels.npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.concatenate(labels))
        tmp.chmod(0o644)
    with atomic_path(gt / "pixel_masks.npz") as tmp:
        with open(tmp, "wb") as handle:
            # Compressed: the masks are mostly empty (about 100 MB raw for the default size, < 1 MB zipped).
            np.savez_compressed(handle, **masks)
        tmp.chmod(0o644)
    _write_csv(gt / "tracks.csv", ["video", "track_id", "frame_id", "x_min", "y_min", "x_max", "y_max"],
               track_rows)
    _write_csv(gt / "objects.csv", ["split", "video", "object_id", "kind", "anomalous", "frame_id", "x_min",
                                    "y_min", "x_max", "y_max"], object_rows)
    present = {e["kind"] for e in events}
    meta = {
        "name": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "frame_size": [params.height, params.width],
        "train_videos": {f"{i + 1:02d}": params.train_frames for i in range(params.train_clips)},
        "test_videos": {f"{i + 1:02d}": params.test_frames for i in range(params.test_clips)},
        "events": events,
        "anomaly_kinds": [k for k in ANOMALY_KINDS if k in present],
    }
    with atomic_path(out / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.chmod(0o644)  # temporary files are private (0600); the dataset is meant to be shared
    (out / _MARKER).unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------------------------------------------
# Folder handling
# ---------------------------------------------------------------------------------------------------------


def _prepare_folder(out: Path, size: str, seed: int, progress: bool) -> bool:
    """Return True when ``out`` already holds this exact dataset; clear our own stale files otherwise."""
    if out.exists() and not out.is_dir():
        raise SSMTLError(f"cannot write the synthetic dataset to {out}: it is a file. Choose a folder path.")
    if not out.is_dir() or not any(out.iterdir()):
        return False
    meta_path = out / "dataset.json"
    meta = None
    if meta_path.is_file():
        try:
            meta = read_json(meta_path)
        except ValueError:
            meta = None
    is_ours = isinstance(meta, dict) and meta.get("name") == "synthetic" and "generator_version" in meta
    if is_ours and not (out / _MARKER).exists():
        if meta.get("generator_version") == GENERATOR_VERSION and meta.get("size") == size \
                and meta.get("seed") == seed:
            if progress:
                print(f"synthetic dataset ({size}, seed {seed}) already complete in {out}; not regenerating",
                      file=sys.stderr, flush=True)
            return True
    elif not (out / _MARKER).exists():
        raise SSMTLError(
            f"{out} is not empty and does not hold a synthetic dataset (no synthetic dataset.json). "
            "Choose an empty or new folder for generate_synthetic, or remove the folder's contents."
        )
    # A synthetic dataset of other settings, or a half-written one: remove only what the generator writes.
    for name in _OUR_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return False


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
        tmp.chmod(0o644)


def _events_from_rows(video: str, rows: list[tuple]) -> list[dict[str, Any]]:
    """One event per abnormal object: its kind and the half-open span of frames it is visibly abnormal."""
    spans: dict[int, list] = {}
    for _split, _video, oid, kind, _anom, frame, *_box in rows:
        if oid not in spans:
            spans[oid] = [kind, frame, frame]
        spans[oid][1] = min(spans[oid][1], frame)
        spans[oid][2] = max(spans[oid][2], frame)
    ordered = sorted(spans.items(), key=lambda item: (item[1][1], item[0]))
    return [{"video": video, "kind": kind, "start": int(start), "end": int(last) + 1, "track_id": int(oid)}
            for oid, (kind, start, last) in ordered]


# ---------------------------------------------------------------------------------------------------------
# Scene
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Geometry:
    """Where things are in the scene (pixels), and the perspective scale."""

    height: int
    width: int
    s: float  # frame scale relative to 240x320
    wall_bottom: float
    walk_top: float
    walk_bottom: float
    foot_top: float  # range of a walker's foot y on the walkway
    foot_bottom: float
    door_x: float
    person_height: float  # a person's height in px at perspective 1

    def persp(self, y: float) -> float:
        """Size multiplier at image row ``y``: nearer (lower) objects look slightly bigger."""
        return min(1.3, max(0.7, 1.0 + 0.6 * (y / self.height - 0.6)))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean, unit-ish noise that varies smoothly over ``cell`` pixels (float32, shape (h, w))."""
    cell = max(2, int(round(cell)))
    gh, gw = h // cell + 4, w // cell + 4
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
    return up[cell:cell + h, cell:cell + w]


def _bond(rng: np.random.Generator, h: int, w: int, bw: float, bh: float, joint: float,
          stagger: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-block jitter (N(0,1) per block) and a joint mask for a running-bond (or grid) block pattern."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    row = np.floor(yy / bh).astype(np.int64)
    off = (row % 2) * (bw / 2.0) if stagger else 0.0
    col = np.floor((xx + off) / bw).astype(np.int64)
    table = rng.standard_normal((int(row.max()) + 1, int(col.max()) + 1)).astype(np.float32)
    jitter = table[row, col]
    joints = ((yy % bh) < joint) | (((xx + off) % bw) < joint)
    return jitter, joints


def _jitter_colour(rng: np.random.Generator, colour: tuple, amount: int = 12) -> tuple[float, float, float]:
    c = np.clip(np.asarray(colour, dtype=np.float64) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _pick(rng: np.random.Generator, palette: list, amount: int = 12) -> tuple[float, float, float]:
    return _jitter_colour(rng, palette[int(rng.integers(len(palette)))], amount)


def _make_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, _Geometry]:
    """Draw the static scene (float32 RGB, 0-255) and return it with its geometry."""
    s = height / 240.0
    H, W = height, width
    img = np.zeros((H, W, 3), np.float32)
    wall_bottom = int(round(H * rng.uniform(0.27, 0.31)))
    walk_top = int(round(H * rng.uniform(0.40, 0.43)))
    walk_bottom = int(round(H * rng.uniform(0.79, 0.82)))
    joint = max(1.0, round(s))

    # Building facade: bricks or concrete panels, a darker plinth, a row of windows and a door.
    wall_kind = int(rng.integers(3))
    wall_colour = np.array([(188, 176, 158), (160, 160, 168), (168, 108, 88)][wall_kind], np.float32)
    if wall_kind == 1:
        jitter, joints = _bond(rng, wall_bottom, W, 44 * s, wall_bottom + 1, joint, stagger=False)
    else:
        jitter, joints = _bond(rng, wall_bottom, W, 14 * s, 6 * s, joint)
    wall = wall_colour + (6 * jitter + 5 * _smooth_noise(rng, wall_bottom, W, 30 * s))[..., None]
    wall[joints] *= 0.82
    img[:wall_bottom] = wall
    plinth = max(2, int(round(3 * s)))
    img[wall_bottom - plinth:wall_bottom] = wall_colour * 0.62
    door_w, door_h = 0.075 * W, 0.15 * H
    door_x = float(rng.uniform(0.3, 0.7) * W)
    win_w, win_h, win_top = 0.085 * W, 0.10 * H, 0.06 * H
    n_windows = 5
    for k in range(n_windows):
        cx = (k + 0.5) * W / n_windows + rng.uniform(-0.02, 0.02) * W
        if abs(cx - door_x) < (win_w + door_w) / 2 + 0.02 * W:
            continue  # the door's column keeps a clear wall above it
        x0, x1 = int(cx - win_w / 2), int(cx + win_w / 2)
        y0, y1 = int(win_top), int(win_top + win_h)
        glass = np.linspace(1.25, 0.85, y1 - y0, dtype=np.float32)[:, None, None]
        img[y0:y1, x0:x1] = np.array([68, 84, 104], np.float32) * glass
        cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (215, 215, 210), max(1, int(round(s))))
        cv2.line(img, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1 - 1), (215, 215, 210), max(1, int(round(s))))
    dx0, dx1 = int(door_x - door_w / 2), int(door_x + door_w / 2)
    dy0 = int(wall_bottom - door_h)
    img[dy0:wall_bottom, dx0:dx1] = _pick(rng, [(88, 62, 45), (70, 75, 82), (60, 80, 70)], 6)
    cv2.rectangle(img, (dx0, dy0), (dx1 - 1, wall_bottom - 1), (120, 118, 112), max(1, int(round(s))))
    cv2.circle(img, (dx1 - max(2, int(3 * s)), int(wall_bottom - door_h / 2)), max(1, int(round(s))),
               (200, 190, 140), -1)

    # Lawn between the facade and the walkway, with fine vertical grass streaks.
    lawn_h = walk_top - wall_bottom
    grass = np.array(_jitter_colour(rng, (82, 128, 60), 8), np.float32)
    blades = cv2.blur(rng.standard_normal((lawn_h, W)).astype(np.float32), (1, 3))
    img[wall_bottom:walk_top] = grass + (9 * blades + 8 * _smooth_noise(rng, lawn_h, W, 20 * s))[..., None]
    step = np.array((175, 172, 165), np.float32)
    img[wall_bottom:wall_bottom + max(2, int(3 * s)), dx0 - int(2 * s):dx1 + int(2 * s)] = step

    # Walkway band: a running bond of pavers between two light curbs.
    band_h = walk_bottom - walk_top
    paver = np.array(_pick(rng, [(176, 164, 148), (168, 124, 104), (150, 146, 140)], 6), np.float32)
    jitter, joints = _bond(rng, band_h, W, 16 * s, 8 * s, joint)
    band = paver + (7 * jitter + 6 * _smooth_noise(rng, band_h, W, 40 * s))[..., None]
    band[joints] *= 0.8
    img[walk_top:walk_bottom] = band
    curb = max(2, int(round(2 * s)))
    img[walk_top:walk_top + curb] = (196, 196, 190)
    img[walk_bottom - curb:walk_bottom] = (196, 196, 190)

    # Plaza: large square tiles with stains.
    plaza_h = H - walk_bottom
    tile = np.array(_pick(rng, [(146, 146, 150), (160, 152, 140)], 5), np.float32)
    jitter, joints = _bond(rng, plaza_h, W, 26 * s, 26 * s, joint, stagger=False)
    plaza = tile + (5 * jitter + 8 * _smooth_noise(rng, plaza_h, W, 50 * s))[..., None]
    plaza[joints] *= 0.85
    img[walk_bottom:] = plaza

    # Static structures. Those on the lawn stand behind the walkway and those on the plaza are low, so that
    # every walker and anomaly is drawn in front of them (no occlusion bookkeeping for the scene).
    taken = [door_x]
    for _ in range(2):  # trees on the lawn
        tx = _free_x(rng, taken, 0.08 * W, 0.92 * W, 0.12 * W)
        base = wall_bottom + rng.uniform(0.4, 0.8) * lawn_h
        r = 0.075 * H * rng.uniform(0.85, 1.15)
        cv2.ellipse(img, (int(tx + 0.3 * r), int(base)), (int(r * 0.9), max(2, int(r * 0.25))), 0, 0, 360,
                    (50, 85, 40), -1)
        trunk = max(2, int(round(3 * s)))
        cv2.rectangle(img, (int(tx - trunk / 2), int(base - 0.12 * H)), (int(tx + trunk / 2), int(base)),
                      (92, 64, 40), -1)
        cy = base - 0.12 * H - 0.6 * r
        for _k in range(7):
            ox, oy = rng.uniform(-0.6, 0.6) * r, rng.uniform(-0.5, 0.4) * r
            shade = rng.uniform(0.75, 1.15)
            cv2.circle(img, (int(tx + ox), int(cy + oy)), int(r * rng.uniform(0.5, 0.75)),
                       (46 * shade, 104 * shade, 44 * shade), -1)
        taken.append(tx)
    for _ in range(2):  # lamp posts on the far curb
        lx = _free_x(rng, taken, 0.05 * W, 0.95 * W, 0.08 * W)
        top = walk_top - 0.26 * H
        pole = max(1, int(round(2 * s)))
        cv2.line(img, (int(lx), int(walk_top + curb)), (int(lx), int(top)), (58, 60, 64), pole)
        cv2.line(img, (int(lx), int(top)), (int(lx + 6 * s), int(top)), (58, 60, 64), pole)
        cv2.ellipse(img, (int(lx + 7 * s), int(top + 2 * s)), (max(2, int(4 * s)), max(1, int(2 * s))), 0, 0,
                    360, (236, 232, 205), -1)
        taken.append(lx)
    bench_x = rng.uniform(0.1, 0.7) * W
    bench_y = walk_bottom + rng.uniform(0.10, 0.14) * H
    bench_w = 0.14 * W
    wood = _pick(rng, [(120, 80, 50), (96, 70, 52), (70, 90, 60)], 6)
    cv2.ellipse(img, (int(bench_x + bench_w / 2), int(bench_y + 2 * s)), (int(bench_w * 0.55), max(2, int(3 * s))),
                0, 0, 360, tuple(float(0.7 * c) for c in tile), -1)
    for lx in (bench_x + 0.1 * bench_w, bench_x + 0.9 * bench_w):
        cv2.line(img, (int(lx), int(bench_y)), (int(lx), int(bench_y - 0.035 * H)), (50, 50, 54),
                 max(1, int(round(2 * s))))
    cv2.rectangle(img, (int(bench_x), int(bench_y - 0.035 * H)), (int(bench_x + bench_w), int(bench_y - 0.045 * H)),
                  wood, -1)
    cv2.rectangle(img, (int(bench_x), int(bench_y - 0.06 * H)), (int(bench_x + bench_w), int(bench_y - 0.075 * H)),
                  wood, -1)
    bin_x = bench_x + bench_w + rng.uniform(0.05, 0.15) * W
    bin_w, bin_h = 0.028 * W, 0.06 * H
    cv2.rectangle(img, (int(bin_x), int(bench_y - bin_h)), (int(bin_x + bin_w), int(bench_y)), (45, 80, 55), -1)
    cv2.ellipse(img, (int(bin_x + bin_w / 2), int(bench_y - bin_h)), (int(bin_w / 2), max(1, int(2 * s))), 0, 0,
                360, (30, 55, 38), -1)

    # Soft lighting: a gentle left-right gradient and vignette, plus fine static grain.
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2
    light = (0.96 + 0.08 * xx / W) * (1.0 - 0.06 * r2)
    img = img * light[..., None] + 2.5 * rng.standard_normal((H, W, 1)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.float32)

    geo = _Geometry(height=H, width=W, s=s, wall_bottom=float(wall_bottom), walk_top=float(walk_top),
                    walk_bottom=float(walk_bottom), foot_top=walk_top + 0.05 * H,
                    foot_bottom=walk_bottom - 0.025 * H, door_x=door_x, person_height=33.0 * s)
    return img, geo


def _free_x(rng: np.random.Generator, taken: list[float], lo: float, hi: float, gap: float) -> float:
    """A random x in [lo, hi] at least ``gap`` from every x in ``taken`` (best of a few tries)."""
    best, best_d = lo, -1.0
    for _ in range(12):
        x = float(rng.uniform(lo, hi))
        dist = min((abs(x - t) for t in taken), default=1e9)
        if dist >= gap:
            return x
        if dist > best_d:
            best, best_d = x, dist
    return best


# ---------------------------------------------------------------------------------------------------------
# Objects and their motion
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    """An object's state in one frame (positions in pixels; ``y`` is the ground contact point)."""

    x: float
    y: float
    hb: float  # body height in pixels (a vehicle's scale reference)
    d: int  # facing: +1 right, -1 left
    view: int  # 0 side, 1 front (walking towards the camera), 2 back
    phase: float  # gait / pedal cycles done
    gait: float  # 0 standing .. 1 walking
    run: float  # 0 walking .. 1 running
    fall: float  # rotation towards the front, radians (pi/2 = lying)
    sway: float  # extra forward lean, radians
    dist: float  # distance travelled (wheel rotation)
    vx: float
    vy: float
    anomalous: bool


@dataclass
class _Track:
    """One object of a clip: what it is, how it looks, and its state in the frames where it exists."""

    tid: int
    kind: str  # one of OBJECT_KINDS
    role: str  # person, cyclist, cart, ball: which drawing function
    app: dict[str, Any]
    states: dict[int, _State] = field(default_factory=dict)

    def half_width(self, st: _State) -> float:
        """Rough half-width in px, for "is it (nearly) in view" tests during simulation."""
        if self.role == "person":
            return st.hb * (0.35 + 0.75 * math.sin(st.fall))
        if self.role == "cyclist":
            return st.hb * 0.6
        if self.role == "cart":
            return st.hb * (1.2 if self.app["variant"] == "car" else 0.85)
        return self.app["diam"]


def _in_view(track: _Track, st: _State, geo: _Geometry) -> bool:
    hw = track.half_width(st)
    top = st.y - (1.1 * st.hb if track.role != "ball" else hw)
    return st.x + hw > 0 and st.x - hw < geo.width and st.y + hw > 0 and top < geo.height


def _new_person(rng: np.random.Generator, tid: int, kind: str, geo: _Geometry) -> _Track:
    app = {
        "height": geo.person_height * rng.uniform(0.92, 1.08),
        "shirt": _pick(rng, _SHIRTS),
        "pants": _pick(rng, _PANTS),
        "skin": _pick(rng, _SKINS, 6),
        "hair": _pick(rng, _HAIRS, 8),
        "shoes": _pick(rng, _SHOES, 8),
        "bag": _pick(rng, _BAGS) if rng.random() < 0.35 else None,
        "long_sleeves": bool(rng.random() < 0.5),
        "cycle": rng.uniform(0.8, 0.95),  # gait cycle length in body heights
    }
    return _Track(tid, kind, "person", app)


class _Mover:
    """Integrates one object frame by frame and records its state for the frames inside the clip.

    Speeds are in px/frame at perspective 1 and are scaled by the perspective at the current row, so an
    object walking towards the camera speeds up and grows a little, as in a real raised view.
    """

    def __init__(self, track: _Track, geo: _Geometry, frames: int, f: int, x: float, y: float, d: int,
                 phase: float = 0.0):
        self.track, self.geo, self.frames = track, geo, frames
        self.f, self.x, self.y, self.d = f, x, y, d
        self.phase, self.dist = phase, 0.0
        self.view, self.gait, self.run, self.fall, self.sway = 0, 1.0, 0.0, 0.0, 0.0
        self.anomalous = False

    @property
    def hb(self) -> float:
        return self.track.app["height"] * self.geo.persp(self.y)

    def state(self) -> _State:
        return _State(self.x, self.y, self.hb, self.d, self.view, self.phase, self.gait, self.run, self.fall,
                      self.sway, self.dist, 0.0, 0.0, self.anomalous)

    def step(self, vx: float, vy: float) -> None:
        """Record this frame's state, then move by (vx, vy) and advance the gait with the distance."""
        p = self.geo.persp(self.y)
        dx, dy = vx * p, vy * p
        if 0 <= self.f < self.frames:
            st = self.state()
            st.vx, st.vy = dx, dy
            self.track.states[self.f] = st
        moved = math.hypot(dx, dy)
        cycle = self.track.app.get("cycle", 0.9) * (1.0 + 0.65 * self.run)  # runners take longer strides
        self.phase += moved / (cycle * self.hb)
        self.dist += moved
        self.x += dx
        self.y += dy
        self.f += 1

    def done(self) -> bool:
        return self.f >= self.frames

    def outside(self) -> bool:
        """True once the object has fully left the frame (or is far enough out that it will not return)."""
        hw = self.track.half_width(self.state()) + 2
        # Only the edge it is heading to counts: an object about to enter is not "outside".
        gone_x = self.x > self.geo.width + hw if self.d > 0 else self.x < -hw
        return gone_x or self.y - 1.1 * self.hb > self.geo.height


def _edge_x(geo: _Geometry, d: int, hw: float) -> float:
    """Starting x just outside the edge a d-moving object enters from."""
    return -hw if d > 0 else geo.width + hw


def _walk_in(mover: _Mover, speed: float, target_x: float, t: int) -> None:
    """Walk ``mover`` (created at the entry edge) so that it reaches ``target_x`` around frame ``t``.

    The mover's start frame is moved back so that the walk ends at ``t``; frames before 0 are simulated but
    not recorded, so a walker that "started" before the clip is already in view at frame 0.
    """
    p = mover.geo.persp(mover.y)
    n = max(0, int(round(abs(target_x - mover.x) / (speed * p))))
    mover.f = t - n
    for _ in range(n):
        mover.step(mover.d * speed, 0.0)


def _walk_out(mover: _Mover, speed: float) -> None:
    """Walk horizontally (facing ``mover.d``) until out of the frame or the clip ends."""
    mover.view, mover.gait, mover.run = 0, 1.0, 0.0
    while not mover.done() and not mover.outside():
        mover.step(mover.d * speed, 0.0)


def _walker_speed(rng: np.random.Generator, geo: _Geometry) -> float:
    return float(rng.uniform(0.8, 1.5) * geo.s)


def _lane(rng: np.random.Generator, geo: _Geometry) -> float:
    return float(rng.uniform(geo.foot_top, geo.foot_bottom))


def _sim_runner(rng, geo, frames, tid, t) -> list[_Track]:
    """A runner entering at frame ``t``, or a walker breaking into a run at ``t``.

    Every ``_sim_*`` function takes the clip's generator, the geometry, the clip length, the first free track
    id and the frame the anomaly starts, and returns its tracks (the abnormal one first).
    """
    track = _new_person(rng, tid, "runner", geo)
    d = 1 if rng.random() < 0.5 else -1
    y = _lane(rng, geo)
    run_speed = float(rng.uniform(3.5, 5.0) * geo.s)
    mover = _Mover(track, geo, frames, t, _edge_x(geo, d, 0.4 * track.app["height"]), y, d, rng.random())
    if rng.random() < 0.5:  # breaks into a run mid-frame (normal until then)
        walk = _walker_speed(rng, geo)
        target = mover.x + d * rng.uniform(0.15, 0.45) * geo.width
        _walk_in(mover, walk, target, t)
        mover.anomalous = True
        for k in range(6):
            mover.run = (k + 1) / 6
            mover.step(d * (walk + (run_speed - walk) * mover.run), 0.0)
    else:
        mover.run = 1.0
        mover.anomalous = True
    mover.run = 1.0
    while not mover.done() and not mover.outside():
        mover.step(d * run_speed, 0.0)
    return [track]


def _sim_cyclist(rng, geo, frames, tid, t) -> list[_Track]:
    """A cyclist riding in along the walkway from one edge at frame ``t``."""
    track = _new_person(rng, tid, "cyclist", geo)
    track.role = "cyclist"
    track.app.update(bike=_pick(rng, _BIKES, 8), helmet=_pick(rng, _BAGS) if rng.random() < 0.5 else None,
                     cycle=2.7)  # one crank turn ~ 2.2 wheel turns
    d = 1 if rng.random() < 0.5 else -1
    mover = _Mover(track, geo, frames, t, _edge_x(geo, d, 0.6 * track.app["height"]), _lane(rng, geo), d,
                   rng.random())
    mover.anomalous = True
    speed = float(rng.uniform(3.0, 4.0) * geo.s)
    while not mover.done() and not mover.outside():
        mover.step(d * speed, 0.0)
    return [track]


def _sim_cart(rng, geo, frames, tid, t) -> list[_Track]:
    """A small car or a utility cart driving in along the walkway from one edge at frame ``t``."""
    variant = "car" if rng.random() < 0.5 else "cargo"
    app = {"height": geo.person_height * rng.uniform(0.95, 1.05), "variant": variant,
           "body": _pick(rng, _CARS if variant == "car" else _CARGO, 8), "cycle": 1.0}
    track = _Track(tid, "cart", "cart", app)
    d = 1 if rng.random() < 0.5 else -1
    y = float(rng.uniform(geo.foot_top + 0.3 * (geo.foot_bottom - geo.foot_top), geo.foot_bottom))
    mover = _Mover(track, geo, frames, t, 0.0, y, d)
    mover.x = _edge_x(geo, d, track.half_width(mover.state()) + 1)
    mover.anomalous = True
    speed = float(rng.uniform(2.0, 3.0) * geo.s)
    while not mover.done() and not mover.outside():
        mover.step(d * speed, 0.0)
    return [track]


def _sim_wrong_way(rng, geo, frames, tid, t) -> list[_Track]:
    """A person walking vertically off the walkway: out of / into the door, or from / to the bottom edge."""
    track = _new_person(rng, tid, "wrong_way", geo)
    variant = int(rng.integers(4))
    lane = _lane(rng, geo)
    speed = _walker_speed(rng, geo)
    v_up = float(rng.uniform(1.0, 1.5) * geo.s)
    drift = float(rng.uniform(-0.15, 0.15) * geo.s)
    door_y = geo.wall_bottom + geo.s
    d = 1 if rng.random() < 0.5 else -1
    if variant == 0:  # comes out of the door, crosses the lawn down to the walkway, then walks on normally
        mover = _Mover(track, geo, frames, t, geo.door_x, door_y, d, rng.random())
        mover.view, mover.anomalous = 1, True
        while not mover.done() and mover.y < lane:
            mover.step(drift, v_up)
        mover.anomalous = False
        _walk_out(mover, speed)
    elif variant == 1:  # walks along the walkway, turns and crosses the lawn into the door
        mover = _Mover(track, geo, frames, t, _edge_x(geo, d, 0.4 * track.app["height"]), lane, d, rng.random())
        _walk_in(mover, speed, geo.door_x, t)
        mover.view, mover.anomalous = 2, True
        while not mover.done() and mover.y > door_y:
            mover.step(0.0, -v_up)
    elif variant == 2:  # enters from the bottom edge, crosses the plaza up to the walkway, walks on
        x = float(rng.uniform(0.15, 0.85) * geo.width)
        mover = _Mover(track, geo, frames, t, x, geo.height + 1.0, d, rng.random())
        mover.view, mover.anomalous = 2, True
        while not mover.done() and mover.y > lane:
            mover.step(drift, -v_up)
        mover.anomalous = False
        _walk_out(mover, speed)
    else:  # walks along the walkway, turns and leaves across the plaza through the bottom edge
        mover = _Mover(track, geo, frames, t, _edge_x(geo, d, 0.4 * track.app["height"]), lane, d, rng.random())
        _walk_in(mover, speed, mover.x + d * rng.uniform(0.2, 0.7) * geo.width, t)
        mover.view, mover.anomalous = 1, True
        while not mover.done() and not mover.outside():
            mover.step(drift, v_up)
    return [track]


def _sim_erratic(rng, geo, frames, tid, t) -> list[_Track]:
    """A walker who zig-zags with abrupt turns for a while, then drifts back to the walkway and walks on."""
    track = _new_person(rng, tid, "erratic", geo)
    d0 = 1 if rng.random() < 0.5 else -1
    speed = _walker_speed(rng, geo)
    mover = _Mover(track, geo, frames, t, _edge_x(geo, d0, 0.4 * track.app["height"]), _lane(rng, geo), d0,
                   rng.random())
    _walk_in(mover, speed, mover.x + d0 * rng.uniform(0.15, 0.5) * geo.width, t)
    mover.anomalous = True
    y_lo, y_hi = geo.foot_top - 0.06 * geo.height, geo.foot_bottom + 0.06 * geo.height
    x_lo, x_hi = 0.04 * geo.width, 0.96 * geo.width
    remaining = int(rng.integers(30, 61))
    up = rng.random() < 0.5
    while remaining > 0 and not mover.done():
        seg = int(rng.integers(5, 13))
        angle = rng.uniform(math.radians(35), math.radians(75))
        hdir = mover.d if rng.random() < 0.7 else -mover.d
        zig = float(rng.uniform(1.4, 2.4) * geo.s)
        vx, vy = hdir * zig * math.cos(angle), (-1 if up else 1) * zig * math.sin(angle)
        up = not up
        for _ in range(min(seg, remaining)):
            if not (y_lo < mover.y + vy < y_hi):
                vy = -vy  # bounce off the edges of the area instead of wandering off
            if not (x_lo < mover.x + vx < x_hi):
                vx = -vx
            if abs(vy) > 1.5 * abs(vx):
                mover.view = 1 if vy > 0 else 2
            else:
                mover.view, mover.d = 0, (1 if vx > 0 else -1)
            mover.step(vx, vy)
            remaining -= 1
            if mover.done():
                break
    mover.view, mover.d = 0, d0
    # Back to the walkway: still abnormal while off it, normal once back in the band.
    while not mover.done() and not mover.outside():
        back = 0.0
        if mover.y < geo.foot_top:
            back = 0.35 * geo.s
        elif mover.y > geo.foot_bottom:
            back = -0.35 * geo.s
        else:
            mover.anomalous = False
        mover.step(d0 * speed, back)
    return [track]


def _sim_thrown(rng, geo, frames, tid, t) -> list[_Track]:
    """A normal walker throws a ball at frame ``t``; the ball (the anomaly) flies, bounces and rolls away."""
    thrower = _new_person(rng, tid + 1, "walker", geo)
    d = 1 if rng.random() < 0.5 else -1
    speed = _walker_speed(rng, geo)
    y = _lane(rng, geo)
    mover = _Mover(thrower, geo, frames, t, _edge_x(geo, d, 0.4 * thrower.app["height"]), y, d, rng.random())
    _walk_in(mover, speed, mover.x + d * rng.uniform(0.15, 0.55) * geo.width, t)
    hb = mover.hb
    bx, lift = mover.x + d * 0.2 * hb, 0.55 * hb  # released from hand height
    _walk_out(mover, speed)

    ball = _Track(tid, "thrown", "ball", {"diam": 7.0 * geo.s * geo.persp(y), "colour": _pick(rng, _BALLS, 10)})
    bd = d if rng.random() < 0.8 else -d
    vx = bd * float(rng.uniform(6.0, 10.0) * geo.s)
    vz = float(rng.uniform(2.5, 5.0) * geo.s)  # upward speed, px/frame
    g = float(rng.uniform(0.3, 0.5) * geo.s)
    ground = y
    ground_v = float(rng.uniform(-0.6, 0.9) * geo.s)  # the ball also travels in depth a little
    height = lift
    f = t
    while f < frames:
        st = _State(bx, ground - height, hb, bd, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, vx, ground_v - vz, True)
        if not _in_view(ball, st, geo):
            break
        ball.states[f] = st
        bx += vx
        ground = min(max(ground + ground_v, geo.foot_top), geo.height - 2)
        height += vz
        vz -= g
        if height <= 0:  # bounce, losing energy; then roll
            height = 0.0
            vz = -0.45 * vz if abs(vz) > 1.2 * g else 0.0
            vx *= 0.85
        f += 1
    return [ball, thrower]


def _sim_falling(rng, geo, frames, tid, t) -> list[_Track]:
    """A walker stops at frame ``t``, loiters (sways, looks around), falls forward and stays down."""
    track = _new_person(rng, tid, "falling", geo)
    d = 1 if rng.random() < 0.5 else -1
    speed = _walker_speed(rng, geo)
    mover = _Mover(track, geo, frames, t, _edge_x(geo, d, 0.4 * track.app["height"]), _lane(rng, geo), d,
                   rng.random())
    _walk_in(mover, speed, rng.uniform(0.25, 0.75) * geo.width, t)
    mover.anomalous, mover.gait = True, 0.0
    loiter = int(rng.integers(12, 31))
    turn_at = int(rng.integers(4, loiter)) if rng.random() < 0.5 else -1
    for k in range(loiter):
        if k == turn_at:
            mover.d = -mover.d  # looks around
        mover.sway = 0.05 * math.sin(2 * math.pi * k / 25.0)
        mover.step(0.0, 0.0)
    fall_frames = int(rng.integers(5, 10))
    for k in range(fall_frames):
        mover.fall = 0.5 * math.pi * ((k + 1) / fall_frames) ** 2  # accelerating, like a topple
        mover.step(0.0, 0.0)
    while not mover.done():
        mover.step(0.0, 0.0)
    return [track]


_EVENT_SIMS = {
    "runner": _sim_runner,
    "cyclist": _sim_cyclist,
    "cart": _sim_cart,
    "wrong_way": _sim_wrong_way,
    "erratic": _sim_erratic,
    "thrown": _sim_thrown,
    "falling": _sim_falling,
}


def _plan_first_kinds(rng: np.random.Generator, n_clips: int) -> list[str]:
    """The first event kind of each test clip: shuffled rounds of every kind, so all of them appear."""
    kinds: list[str] = []
    while len(kinds) < n_clips:
        kinds.extend(ANOMALY_KINDS[i] for i in rng.permutation(len(ANOMALY_KINDS)))
    return kinds[:n_clips]


def _abnormal_span(tracks: list[_Track], geo: _Geometry) -> tuple[int, int]:
    """First and last frame in which any of ``tracks`` is abnormal and roughly in view ((-1, -1) if none)."""
    frames = [f for tr in tracks for f, st in tr.states.items() if st.anomalous and _in_view(tr, st, geo)]
    return (min(frames), max(frames)) if frames else (-1, -1)


def _simulate_clip(rng: np.random.Generator, geo: _Geometry, frames: int, first_kind: str | None) -> list[_Track]:
    """All objects of one clip: the planned anomalies (test clips), then the normal walkers around them."""
    tracks: list[_Track] = []
    next_id = 1
    if first_kind is not None:
        n_events = int(rng.integers(1, 4))
        others = []
        for _ in range(n_events - 1):
            options = [k for k in ANOMALY_KINDS if k != "falling" or "falling" not in (first_kind, *others)]
            others.append(options[int(rng.integers(len(options)))])
        # A fallen person stays down until the clip ends, so a fall is placed late and after the others.
        others.sort(key=lambda k: k == "falling")
        # Budget of abnormal frames for this clip: events are added until it is used up, so that about
        # 35-55 % of all test frames are abnormal whatever mix of long (cart, fall) and short events a clip has.
        budget = rng.uniform(0.25, 0.5) * frames
        covered = np.zeros(frames, bool)
        t = max(2, int(round(rng.uniform(0.1, 0.25) * frames)))
        for i, kind in enumerate([first_kind, *others]):
            if t >= frames - 2:
                break
            cap = rng.uniform(0.3, 0.5) * frames  # longest stretch an event may stay abnormal up to the end
            start = max(t, int(frames - cap)) if kind == "falling" else t
            sim = _EVENT_SIMS[kind]
            new = sim(rng, geo, frames, next_id, start)
            first, last = _abnormal_span(new, geo)
            too_long = last >= frames - 2 and frames - first > cap or last - first + 1 > 0.55 * frames
            if first >= 0 and too_long and frames - cap > start:
                # It would be abnormal for too much of the clip (a slow cart, a slow crossing): start it late
                # enough that only ``cap`` frames of it are seen before the clip ends.
                start = int(frames - cap)
                new = sim(rng, geo, frames, next_id, start)
                first, last = _abnormal_span(new, geo)
            next_id += len(new)
            tracks.extend(new)
            if first < 0:
                continue
            covered[first:last + 1] = True
            if covered.sum() >= budget:
                break
            if i == 0 and kind == "falling":
                continue  # the late fall leaves the earlier part of the clip to the other events
            if last < frames - 2 and rng.random() < 0.6:
                t = last + int(rng.integers(3, 20))  # after a normal gap
            else:
                t = first + max(4, int(round(rng.uniform(0.25, 0.8) * (last - first))))  # overlapping
    tracks.extend(_simulate_walkers(rng, geo, frames, tracks, next_id))
    return tracks


def _simulate_walkers(rng: np.random.Generator, geo: _Geometry, frames: int, others: list[_Track],
                      next_id: int) -> list[_Track]:
    """Normal walkers: keep 2-5 people (counting the clip's other people and vehicles) in view.

    Counting the anomalies' objects too means an abnormal frame does not simply hold more objects than a
    normal one: the crowd thins a little while a cyclist or a cart is passing.
    """
    present = np.zeros(frames, np.int64)
    for tr in others:
        if tr.role != "ball":
            for f, st in tr.states.items():
                present[f] += _in_view(tr, st, geo)

    walkers: list[tuple[_Track, _Mover, float, float, float]] = []  # track, mover, speed, drift amp, period

    def spawn(f: int, x: float | None) -> None:
        nonlocal next_id
        track = _new_person(rng, next_id, "walker", geo)
        next_id += 1
        d = 1 if rng.random() < 0.5 else -1
        start_x = x if x is not None else _edge_x(geo, d, 0.4 * track.app["height"])
        # Pick the lane farthest from people heading the same way near the entry point: occasional
        # overlaps are fine, two people glued together for a whole crossing are not.
        best_y, best_gap = _lane(rng, geo), -1.0
        for _ in range(4):
            y = _lane(rng, geo)
            gaps = [abs(y - m.y) for _tr, m, *_ in walkers if m.d == d and abs(m.x - start_x) < 0.3 * geo.width]
            gap = min(gaps, default=1e9)
            if gap > best_gap:
                best_y, best_gap = y, gap
        mover = _Mover(track, geo, frames, f, start_x, best_y, d, rng.random())
        walkers.append((track, mover, _walker_speed(rng, geo), float(rng.uniform(0.03, 0.1) * geo.s),
                        float(rng.uniform(60, 200))))

    for _ in range(int(rng.integers(2, 6))):
        spawn(0, float(rng.uniform(0.05, 0.95) * geo.width))
    target, retarget = int(rng.integers(2, 6)), int(rng.integers(30, 80))
    phase0 = rng.uniform(0, 2 * math.pi)
    for f in range(frames):
        if f == retarget:
            target, retarget = int(rng.integers(2, 6)), f + int(rng.integers(30, 80))
        active = [w for w in walkers if not w[1].outside()]
        count = len(active) + int(present[f])
        if count < 2 or (count < target and rng.random() < 0.06):
            spawn(f, None)
            active.append(walkers[-1])
        for _track, mover, speed, amp, period in active:
            vy = amp * math.sin(2 * math.pi * f / period + phase0 + mover.track.tid)
            if mover.y + vy < geo.foot_top or mover.y + vy > geo.foot_bottom:
                vy = 0.0
            mover.step(mover.d * speed, vy)
    return [w[0] for w in walkers]


# ---------------------------------------------------------------------------------------------------------
# Sprites: each returns primitives in frame pixel coordinates
#   ("line", (x0, y0), (x1, y1), thickness_px, colour) | ("poly", [(x, y), ...], colour)
#   ("circle", (x, y), radius_px, colour)             | ("ellipse", (x, y), (ax, ay), angle_deg, colour)
# ---------------------------------------------------------------------------------------------------------


def _shade(colour: tuple, k: float) -> tuple[float, float, float]:
    return (colour[0] * k, colour[1] * k, colour[2] * k)


def _person_prims(st: _State, app: dict[str, Any]) -> list[tuple]:
    """A person in side, front or back view; body coordinates are u forward, v up, in body heights."""
    hb, d = st.hb, st.d
    ca, sa = math.cos(st.fall), math.sin(st.fall)
    rest = 0.085 * sa  # a lying body rests on its side, not through the ground

    def P(u: float, v: float) -> tuple[float, float]:
        u2, v2 = u * ca + v * sa, -u * sa + v * ca + rest
        return (st.x + d * u2 * hb, st.y - v2 * hb)

    skin, shirt, pants, hair, shoes, bag = (app["skin"], app["shirt"], app["pants"], app["hair"], app["shoes"],
                                            app["bag"])
    sleeve = shirt if app["long_sleeves"] else skin
    leg_t, arm_t = 0.078 * hb, 0.058 * hb
    g, r = st.gait, st.run
    ph = 2 * math.pi * st.phase
    prims: list[tuple] = []

    if st.view == 0:
        thigh_amp = g * (0.38 + 0.37 * r)
        knee_base, knee_amp = g * (0.08 + 0.17 * r), g * (0.7 + 0.9 * r)
        arm_amp, elbow = g * (0.4 + 0.4 * r), 0.2 + 1.3 * r
        lean = 0.06 + 0.2 * r + st.sway
        legs = []
        for i in (0, 1):
            phi = ph + math.pi * i
            th = thigh_amp * math.sin(phi)
            flex = knee_base + knee_amp * max(0.0, math.cos(phi))  # the knee bends while the leg swings forward
            knee = (0.245 * math.sin(th), -0.245 * math.cos(th))
            ankle = (knee[0] + 0.245 * math.sin(th - flex), knee[1] - 0.245 * math.cos(th - flex))
            legs.append((knee, ankle))
        hip_v = -min(a[1] for _k, a in legs) + 0.025 + 0.035 * r * abs(math.sin(ph))
        ax, ay = math.sin(lean), math.cos(lean)  # torso axis
        fx, fy = ay, -ax  # forward normal
        hip = (0.0, hip_v)
        sh = (0.29 * ax, hip_v + 0.29 * ay)
        head = (sh[0] + 0.125 * math.sin(0.7 * lean), sh[1] + 0.125 * math.cos(0.7 * lean))

        def leg(i: int, k: float) -> None:
            knee, ankle = legs[i]
            kn, an = P(knee[0], hip_v + knee[1]), P(ankle[0], hip_v + ankle[1])
            prims.append(("line", P(*hip), kn, leg_t, _shade(pants, k)))
            prims.append(("line", kn, an, leg_t, _shade(pants, k)))
            prims.append(("line", an, P(ankle[0] + 0.075, hip_v + ankle[1] + 0.004), 0.055 * hb, _shade(shoes, k)))

        def arm(i: int, k: float) -> None:
            swing = -math.sin(ph + math.pi * i)
            beta = arm_amp * swing * (1.2 if swing > 0 else 0.75) + 0.05 + 0.5 * lean
            a0 = (sh[0] - 0.025 * ax, sh[1] - 0.025 * ay)
            el = (a0[0] + 0.155 * math.sin(beta), a0[1] - 0.155 * math.cos(beta))
            hand = (el[0] + 0.15 * math.sin(beta + elbow), el[1] - 0.15 * math.cos(beta + elbow))
            prims.append(("line", P(*a0), P(*el), arm_t, _shade(shirt, k)))
            prims.append(("line", P(*el), P(*hand), arm_t, _shade(sleeve, k)))
            prims.append(("circle", P(*hand), 0.032 * hb, _shade(skin, k)))

        leg(1, 0.72)
        arm(1, 0.72)
        leg(0, 1.0)
        wh, ws = 0.068, 0.082
        torso = [P(hip[0] - fx * wh, hip[1] - fy * wh), P(hip[0] + fx * wh, hip[1] + fy * wh),
                 P(sh[0] + fx * ws, sh[1] + fy * ws), P(sh[0] - fx * ws, sh[1] - fy * ws)]
        prims.append(("poly", torso, shirt))
        prims.append(("circle", P(*sh), 0.075 * hb, shirt))
        if bag is not None:
            c = (hip[0] + 0.19 * ax - fx * (wh + 0.045), hip[1] + 0.19 * ay - fy * (wh + 0.045))
            bag_pts = [(c[0] + sa_ * 0.1 * ax + sb * 0.045 * fx, c[1] + sa_ * 0.1 * ay + sb * 0.045 * fy)
                       for sa_, sb in ((-1, -1), (-1, 1), (1, 1), (1, -1))]
            prims.append(("poly", [P(*q) for q in bag_pts], bag))
        prims.append(("line", P(*sh), P(*head), 0.05 * hb, skin))
        hr = 0.078
        # Hair on the back and top of the head, face and nose in front: the head shows where it is going.
        prims.append(("circle", P(head[0] - 0.018, head[1] + 0.01), hr * hb, hair))
        prims.append(("circle", P(head[0] + 0.012, head[1] - 0.012), 0.068 * hb, skin))
        prims.append(("circle", P(head[0] + 0.07, head[1] - 0.01), 0.02 * hb, skin))
        arm(0, 1.0)
        return prims

    # Front (1) or back (2) view: legs side by side, the stepping foot lifts, arms swing at the sides.
    hip_v = 0.515
    for i, side in ((0, -1.0), (1, 1.0)):
        lift = g * 0.05 * max(0.0, math.sin(ph + math.pi * i))
        foot = (side * 0.06, lift + 0.025)
        prims.append(("line", P(side * 0.055, hip_v), P(*foot), leg_t, pants))
        prims.append(("line", P(side * 0.06, lift + 0.02), P(side * 0.065, lift), 0.06 * hb, shoes))
    torso = [P(-0.09, hip_v), P(0.09, hip_v), P(0.125, 0.8), P(-0.125, 0.8)]
    prims.append(("poly", torso, shirt))
    for i, side in ((0, -1.0), (1, 1.0)):
        swing = g * 0.035 * math.sin(ph + math.pi * (1 - i))
        el = (side * 0.16, 0.64 + swing)
        hand = (side * 0.165, 0.5 + 1.5 * swing)
        prims.append(("line", P(side * 0.125, 0.78), P(*el), arm_t, shirt))
        prims.append(("line", P(*el), P(*hand), arm_t, sleeve))
        prims.append(("circle", P(*hand), 0.032 * hb, skin))
    prims.append(("line", P(0.0, 0.8), P(0.0, 0.86), 0.05 * hb, skin))
    head = (0.0, 0.915)
    if st.view == 1:
        prims.append(("circle", P(*head), 0.078 * hb, hair))
        prims.append(("circle", P(head[0], head[1] - 0.012), 0.068 * hb, skin))
        for side in (-1.0, 1.0):
            prims.append(("circle", P(side * 0.027, head[1] - 0.005), 0.012 * hb, (40, 30, 30)))
    else:
        if bag is not None:
            prims.append(("poly", [P(-0.08, 0.58), P(0.08, 0.58), P(0.08, 0.77), P(-0.08, 0.77)], bag))
        prims.append(("circle", P(*head), 0.078 * hb, hair))
    return prims


def _two_link(hip: tuple[float, float], foot: tuple[float, float], length: float) -> tuple[float, float]:
    """Knee position of a leg with two equal segments from ``hip`` to ``foot``, bending forward (+u)."""
    dx, dy = foot[0] - hip[0], foot[1] - hip[1]
    dist = math.hypot(dx, dy)
    half = min(dist / 2, length * 0.999)
    h = math.sqrt(max(0.0, length * length - half * half))
    mx, my = hip[0] + dx / 2, hip[1] + dy / 2
    nx, ny = -dy / max(dist, 1e-6), dx / max(dist, 1e-6)
    if nx < 0:
        nx, ny = -nx, -ny
    return (mx + nx * h, my + ny * h)


def _cyclist_prims(st: _State, app: dict[str, Any]) -> list[tuple]:
    """A person riding a bicycle, side view, pedalling with the distance travelled."""
    hb, d = st.hb, st.d

    def P(u: float, v: float) -> tuple[float, float]:
        return (st.x + d * u * hb, st.y - v * hb)

    R = 0.19
    rear, front, crank = (-0.31, R), (0.31, R), (-0.02, R * 0.95)
    seat, head_tube, bar = (-0.12, 0.56), (0.22, 0.52), (0.25, 0.62)
    bike, tyre = app["bike"], (30, 30, 32)
    ph = 2 * math.pi * st.phase
    pedals = [(crank[0] + 0.085 * math.cos(ph + math.pi * i), crank[1] + 0.085 * math.sin(ph + math.pi * i))
              for i in (0, 1)]
    hip = (seat[0], seat[1] + 0.03)
    lean = 0.75
    sh = (hip[0] + 0.3 * math.sin(lean), hip[1] + 0.3 * math.cos(lean))
    head = (sh[0] + 0.11 * math.sin(0.45), sh[1] + 0.11 * math.cos(0.45))
    leg_t, arm_t = 0.078 * hb, 0.058 * hb
    prims: list[tuple] = []
    knee = _two_link(hip, pedals[1], 0.245)
    prims.append(("line", P(*hip), P(*knee), leg_t, _shade(app["pants"], 0.72)))
    prims.append(("line", P(*knee), P(*pedals[1]), leg_t, _shade(app["pants"], 0.72)))
    spin = st.dist / (R * hb)
    for hub in (rear, front):
        prims.append(("ring", P(*hub), R * hb, max(1.0, 0.035 * hb), tyre))
        for k in range(3):
            a = spin + k * math.pi / 3
            prims.append(("line", P(hub[0] + R * 0.9 * math.cos(a), hub[1] + R * 0.9 * math.sin(a)),
                          P(hub[0] - R * 0.9 * math.cos(a), hub[1] - R * 0.9 * math.sin(a)), 0.012 * hb,
                          (150, 150, 155)))
    ft = 0.03 * hb
    for a, b in ((rear, crank), (crank, seat), (seat, head_tube), (crank, head_tube), (rear, seat),
                 (head_tube, front), (head_tube, bar)):
        prims.append(("line", P(*a), P(*b), ft, bike))
    prims.append(("line", P(seat[0] - 0.05, seat[1] + 0.01), P(seat[0] + 0.04, seat[1] + 0.01), 0.03 * hb,
                  (25, 25, 25)))
    knee = _two_link(hip, pedals[0], 0.245)
    prims.append(("line", P(*hip), P(*knee), leg_t, app["pants"]))
    prims.append(("line", P(*knee), P(*pedals[0]), leg_t, app["pants"]))
    prims.append(("line", P(*pedals[0]), P(pedals[0][0] + 0.06, pedals[0][1]), 0.05 * hb, app["shoes"]))
    wh = 0.075
    fx, fy = math.cos(lean), -math.sin(lean)
    prims.append(("poly", [P(hip[0] - fx * wh, hip[1] - fy * wh), P(hip[0] + fx * wh, hip[1] + fy * wh),
                           P(sh[0] + fx * wh, sh[1] + fy * wh), P(sh[0] - fx * wh, sh[1] - fy * wh)], app["shirt"]))
    if app["bag"] is not None:
        c = (hip[0] + 0.5 * (sh[0] - hip[0]) - fx * 0.11, hip[1] + 0.5 * (sh[1] - hip[1]) - fy * 0.11)
        prims.append(("circle", P(*c), 0.06 * hb, app["bag"]))
    prims.append(("line", P(*sh), P(*head), 0.05 * hb, app["skin"]))
    prims.append(("circle", P(head[0] - 0.015, head[1] + 0.01), 0.078 * hb, app["helmet"] or app["hair"]))
    prims.append(("circle", P(head[0] + 0.012, head[1] - 0.015), 0.066 * hb, app["skin"]))
    prims.append(("circle", P(head[0] + 0.07, head[1] - 0.015), 0.02 * hb, app["skin"]))
    el = ((sh[0] + bar[0]) / 2 + 0.02, (sh[1] + bar[1]) / 2 - 0.05)
    prims.append(("line", P(*sh), P(*el), arm_t, app["shirt"]))
    prims.append(("line", P(*el), P(*bar), arm_t, app["skin"] if not app["long_sleeves"] else app["shirt"]))
    return prims


def _cart_prims(st: _State, app: dict[str, Any]) -> list[tuple]:
    """A small car or a box-shaped utility cart, side view, wheels turning with the distance."""
    hb, d = st.hb, st.d

    def P(u: float, v: float) -> tuple[float, float]:
        return (st.x + d * u * hb, st.y - v * hb)

    body = app["body"]
    prims: list[tuple] = []
    if app["variant"] == "car":
        wheel_r, wheels = 0.17, (-0.75, 0.75)
        prims.append(("poly", [P(-1.15, 0.12), P(1.12, 0.12), P(1.15, 0.2), P(1.12, 0.42), P(0.75, 0.47),
                               P(-1.1, 0.48), P(-1.15, 0.4)], body))
        prims.append(("poly", [P(-0.85, 0.46), P(-0.62, 0.82), P(0.42, 0.82), P(0.75, 0.46)], body))
        glass = (62, 78, 98)
        prims.append(("poly", [P(-0.76, 0.48), P(-0.58, 0.77), P(-0.13, 0.77), P(-0.13, 0.48)], glass))
        prims.append(("poly", [P(-0.05, 0.48), P(-0.05, 0.77), P(0.39, 0.77), P(0.64, 0.48)], glass))
        prims.append(("circle", P(1.09, 0.33), 0.045 * hb, (250, 245, 210)))
        prims.append(("circle", P(-1.11, 0.34), 0.04 * hb, (210, 30, 30)))
        prims.append(("line", P(-1.15, 0.2), P(1.15, 0.2), 0.03 * hb, _shade(body, 0.6)))
    else:
        wheel_r, wheels = 0.14, (-0.5, 0.5)
        prims.append(("poly", [P(-0.78, 0.18), P(0.78, 0.18), P(0.78, 0.3), P(-0.78, 0.3)], (70, 70, 74)))
        prims.append(("poly", [P(-0.74, 0.3), P(0.2, 0.3), P(0.2, 0.74), P(-0.74, 0.74)], body))
        prims.append(("line", P(-0.74, 0.52), P(0.2, 0.52), 0.02 * hb, _shade(body, 0.7)))
        prims.append(("line", P(-0.27, 0.3), P(-0.27, 0.74), 0.02 * hb, _shade(body, 0.7)))
        prims.append(("poly", [P(0.26, 0.3), P(0.76, 0.3), P(0.76, 0.6), P(0.62, 0.86), P(0.26, 0.86)],
                      (205, 205, 200)))
        prims.append(("poly", [P(0.45, 0.6), P(0.7, 0.6), P(0.6, 0.8), P(0.45, 0.8)], (62, 78, 98)))
        prims.append(("circle", P(0.75, 0.38), 0.04 * hb, (250, 245, 210)))
    spin = st.dist / (wheel_r * hb)
    for wu in wheels:
        prims.append(("circle", P(wu, wheel_r), wheel_r * hb, (28, 28, 30)))
        prims.append(("circle", P(wu, wheel_r), 0.5 * wheel_r * hb, (160, 160, 165)))
        prims.append(("circle", P(wu + 0.35 * wheel_r * math.cos(spin), wheel_r + 0.35 * wheel_r * math.sin(spin)),
                      0.12 * wheel_r * hb, (60, 60, 64)))
    return prims


def _ball_exposures(st: _State, app: dict[str, Any]) -> list[list[tuple]]:
    """A ball with motion blur: four sub-frame positions over half a frame of exposure, averaged."""
    r = app["diam"] / 2
    out = []
    for k in range(4):
        off = (k / 3.0 - 0.5) * 0.5
        cx, cy = st.x + off * st.vx, st.y + off * st.vy
        out.append([("circle", (cx, cy), r, app["colour"]),
                    ("circle", (cx - 0.3 * r, cy - 0.3 * r), 0.4 * r, _shade(app["colour"], 1.15))])
    return out


def _exposures(track: _Track, st: _State) -> list[list[tuple]]:
    if track.role == "person":
        return [_person_prims(st, track.app)]
    if track.role == "cyclist":
        return [_cyclist_prims(st, track.app)]
    if track.role == "cart":
        return [_cart_prims(st, track.app)]
    return _ball_exposures(st, track.app)


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


def _rasterize(exposures: list[list[tuple]], height: int, width: int):
    """Draw primitives supersampled; return (x0, y0, premultiplied colour, coverage) or None if off-frame."""
    xs, ys = [], []
    for prims in exposures:
        for p in prims:
            kind = p[0]
            if kind == "line":
                m = p[3] / 2 + 1
                xs += [p[1][0] - m, p[1][0] + m, p[2][0] - m, p[2][0] + m]
                ys += [p[1][1] - m, p[1][1] + m, p[2][1] - m, p[2][1] + m]
            elif kind == "poly":
                xs += [q[0] for q in p[1]]
                ys += [q[1] for q in p[1]]
            else:  # circle, ring: centre and radius
                m = p[2] + 1
                xs += [p[1][0] - m, p[1][0] + m]
                ys += [p[1][1] - m, p[1][1] + m]
    x0, y0 = max(0, int(math.floor(min(xs))) - 1), max(0, int(math.floor(min(ys))) - 1)
    x1, y1 = min(width, int(math.ceil(max(xs))) + 2), min(height, int(math.ceil(max(ys))) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    pw, ph = x1 - x0, y1 - y0
    colour = np.zeros((ph, pw, 3), np.float32)
    cover = np.zeros((ph, pw), np.float32)
    scale = _SS * _FIX

    def pt(q: tuple[float, float]) -> tuple[int, int]:
        # Pixel i covers [i, i+1); cv2 puts supersampled pixel k's centre at integer k.
        return (int(round(((q[0] - x0) * _SS - 0.5) * _FIX)), int(round(((q[1] - y0) * _SS - 0.5) * _FIX)))

    for prims in exposures:
        c_big = np.zeros((ph * _SS, pw * _SS, 3), np.float32)
        a_big = np.zeros((ph * _SS, pw * _SS), np.float32)
        for p in prims:
            kind = p[0]
            for img, col in ((c_big, p[-1]), (a_big, 1.0)):
                if kind == "line":
                    cv2.line(img, pt(p[1]), pt(p[2]), col, max(1, int(round(p[3] * _SS))), cv2.LINE_8, _SHIFT)
                elif kind == "poly":
                    pts = np.array([pt(q) for q in p[1]], np.int32)
                    cv2.fillPoly(img, [pts], col, cv2.LINE_8, _SHIFT)
                elif kind == "circle":
                    cv2.circle(img, pt(p[1]), max(1, int(round(p[2] * scale))), col, -1, cv2.LINE_8, _SHIFT)
                else:  # ring
                    cv2.circle(img, pt(p[1]), max(1, int(round(p[2] * scale))), col,
                               max(1, int(round(p[3] * _SS))), cv2.LINE_8, _SHIFT)
        colour += cv2.resize(c_big, (pw, ph), interpolation=cv2.INTER_AREA)
        cover += cv2.resize(a_big, (pw, ph), interpolation=cv2.INTER_AREA)
    n = float(len(exposures))
    return x0, y0, colour / n, cover / n


@functools.lru_cache(maxsize=1)
def _gaussian_table() -> np.ndarray:
    """Sensor noise by table look-up: the 65536 quantiles of N(0, sigma^2), indexed by random uint16.

    Twice as fast as ``standard_normal`` for a frame (noise dominates the generation time), and
    indistinguishable from it for a detector: tails are cut at 4.2 sigma.
    """
    dist = NormalDist(0.0, _NOISE_SIGMA)
    return np.array([dist.inv_cdf((i + 0.5) / 65536) for i in range(65536)], np.float32)


def _render_clip(rng: np.random.Generator, background: np.ndarray, geo: _Geometry, tracks: list[_Track],
                 frames: int, folder: Path, split: str, video: str, object_rows: list[tuple],
                 mask: np.ndarray | None, bar) -> None:
    """Render, save and annotate one clip; fill ``mask`` (test clips) with abnormal visible pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    H, W = geo.height, geo.width
    digits = max(3, len(str(frames - 1)))
    owner = np.zeros((H, W), np.int32)
    noise_table = _gaussian_table()
    # Illumination: a slow random flicker of about 1 % around 1, the same for all pixels.
    flicker = 1.0 + 0.008 * np.sin(2 * np.pi * np.arange(frames) / rng.uniform(40, 90) + rng.uniform(0, 6.3))
    flicker += 0.003 * rng.standard_normal(frames)
    for f in range(frames):
        frame = background.copy()
        owner.fill(0)
        drawn = []
        # Far (higher) objects first so nearer ones cover them; a ball in flight is drawn last, on top.
        order = sorted((tr for tr in tracks if f in tr.states),
                       key=lambda tr: (tr.role == "ball", tr.states[f].y, tr.tid))
        for tr in order:
            st = tr.states[f]
            if not _in_view(tr, st, geo):
                continue
            raster = _rasterize(_exposures(tr, st), H, W)
            if raster is None:
                continue
            x0, y0, colour, cover = raster
            y1, x1 = y0 + cover.shape[0], x0 + cover.shape[1]
            region = frame[y0:y1, x0:x1]
            region *= 1.0 - cover[..., None]
            region += colour
            owner[y0:y1, x0:x1][cover >= 0.5] = tr.tid
            drawn.append((tr, st, x0, y0, x1, y1))
        rows = []
        for tr, st, x0, y0, x1, y1 in drawn:
            mine = owner[y0:y1, x0:x1] == tr.tid
            if not mine.any():
                continue  # hidden behind nearer objects, or too thin to own a pixel
            rr, cc = np.nonzero(mine.any(axis=1))[0], np.nonzero(mine.any(axis=0))[0]
            anomalous = int(st.anomalous and mask is not None)
            rows.append((split, video, tr.tid, tr.kind, anomalous, f, x0 + int(cc[0]), y0 + int(rr[0]),
                         x0 + int(cc[-1]) + 1, y0 + int(rr[-1]) + 1))
            if anomalous:
                mask[f, y0:y1, x0:x1] |= mine
        object_rows.extend(sorted(rows, key=lambda r: r[2]))
        frame *= flicker[f]
        frame += noise_table[rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)]
        np.clip(frame, 0, 255, out=frame)
        out = (frame + 0.5).astype(np.uint8)
        path = folder / f"{f:0{digits}d}.jpg"
        if not cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
            raise SSMTLError(f"could not write {path}: check that the disk is not full and the folder is writable.")
        bar.update(1)


def read_objects(root: str | Path) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Every object box of a generated dataset (``ground_truth/objects.csv``), per (split, video).

    Returns:
        ``{("train", "01"): {"frame": (N,), "boxes": (N, 4), "anomalous": (N,), "kind": (N,)}, ...}``; splits are
        named ``train``/``test`` as in :mod:`ssmtl_core.data.layouts`.
    """
    path = Path(root) / "ground_truth" / "objects.csv"
    if not path.is_file():
        raise SSMTLError(f"{path} is missing: is {root} a dataset written by `ssmtl synth`?")
    rows: dict[tuple[str, str], list] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            split = "train" if row["split"] in ("train", "training") else "test"
            rows.setdefault((split, row["video"]), []).append(row)
    out = {}
    for key, items in rows.items():
        out[key] = {"frame": np.array([int(r["frame_id"]) for r in items]),
                    "boxes": np.array([[float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")] for r in items],
                                      np.float32),
                    "anomalous": np.array([int(r["anomalous"]) for r in items], np.uint8),
                    "kind": np.array([r["kind"] for r in items])}
    return out

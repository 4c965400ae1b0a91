"""Tests of ssmtl_core.samples: the object-centric sequences behind the four proxy tasks (docs/method.md, "Object-centric sequences").

Most tests run on fabricated videos whose frame ``k`` is the constant grey value ``k`` (or ``k`` plus a
channel offset in colour), so every crop says which frame it came from: a resized crop of a constant image
is that constant, exactly.

Border policy (module docstring of :mod:`ssmtl_core.samples`): a training object needs its 7 consecutive
frames inside the video (``t <= i <= T-1-t``); the gaps of an intermittent side that would leave the video
are redrawn until they fit (gaps of 1 always fit); at test time every detection is scored and its window is
clamped, repeating the first or last frame.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ssmtl_core.config import SampleConfig
from ssmtl_core.detections import Detections
from ssmtl_core.losses import task_losses
from ssmtl_core.model import SSMTLModel
from ssmtl_core.samples import (
    ObjectIndex,
    SequenceSampler,
    consecutive_offsets,
    crop_object,
    draw_intermittent_offsets,
    objects_from_detections,
    scoring_sequences,
    split_train_val,
)
from ssmtl_core.train import batch_rng, epoch_batches, epoch_order

T3 = 3  # temporal_half
K = 2 * T3 + 1
SIZE = 32
CONFIG = SampleConfig(crop_size=SIZE, temporal_half=T3, max_gap=3, min_box_size=4)
TASKS = ("aot", "irr", "mid", "kd")


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def index_video(length: int, height: int = 48, width: int = 64, channels: int = 1) -> np.ndarray:
    """(T, H, W, C) uint8 whose frame k is the constant k (channel c of a colour video: k + 60 c)."""
    frames = np.empty((length, height, width, channels), np.uint8)
    for k in range(length):
        for c in range(channels):
            frames[k, ..., c] = k + 60 * c
    return frames


def aot_input(batch) -> np.ndarray:
    """(N, 2t+1, S, S, C): forwards, or reversed where ``aot_label`` is 1 (what the network is given)."""
    out = batch.consecutive.copy()
    out[batch.aot_label == 1] = out[batch.aot_label == 1, ::-1]
    return out


def irr_input(batch) -> np.ndarray:
    """(N, 2t+1, S, S, C): consecutive, or intermittent where ``irr_label`` is 1."""
    out = batch.consecutive.copy()
    if batch.intermittent is not None:
        out[batch.irr_label == 1] = batch.intermittent[batch.irr_label == 1]
    return out


def frame_ids(crops: np.ndarray) -> np.ndarray:
    """Frame ids of uint8 crops (..., S, S, C) cut from :func:`index_video`; every crop must be constant."""
    crops = np.asarray(crops)
    flat = crops[..., 0].reshape(*crops.shape[:-3], -1)
    assert (flat.min(axis=-1) == flat.max(axis=-1)).all(), "a crop mixes pixels of several frames"
    return flat[..., 0].astype(int)


def tensor_frame_ids(x: torch.Tensor) -> np.ndarray:
    """Frame ids of a (N, 3, T, S, S) float input in [0, 1] built from a grey :func:`index_video`."""
    values = x.detach().float() * 255.0
    lo = values.amin(dim=(1, 3, 4))
    hi = values.amax(dim=(1, 3, 4))
    assert torch.allclose(lo, hi, atol=1e-3), "a frame of the network input is not one constant frame"
    return torch.round(lo).long().numpy()


def make_objects(frames_per_video: list[list[int]], box=(8.0, 6.0, 40.0, 42.0)) -> ObjectIndex:
    video = np.concatenate([np.full(len(f), v, np.int32) for v, f in enumerate(frames_per_video)])
    frame = np.concatenate([np.asarray(f, np.int32) for f in frames_per_video])
    boxes = np.tile(np.asarray(box, np.float32), (len(frame), 1))
    return ObjectIndex(video, frame, boxes, np.arange(len(frame), dtype=np.int64))


# ----------------------------------------------------------------------------------------------------------
# consecutive, arrow of time, irregularity
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grey_batch():
    frames = [index_video(60), index_video(45)]
    objects = make_objects([list(range(3, 57)), list(range(3, 42))])
    sampler = SequenceSampler(frames, objects, CONFIG, TASKS, seed=0)
    batch = sampler.make_batch(np.arange(len(objects)), np.random.default_rng(123))
    return frames, objects, batch


def test_consecutive_sequences_are_i_minus_3_to_i_plus_3(grey_batch):
    _, objects, batch = grey_batch
    assert batch.consecutive.shape == (len(objects), K, SIZE, SIZE, 1)
    expected = objects.frame[:, None] + np.arange(-3, 4)[None]
    np.testing.assert_array_equal(frame_ids(batch.consecutive), expected)


def test_arrow_of_time_input_is_the_exact_reverse_where_labelled(grey_batch):
    _, objects, batch = grey_batch
    labels = batch.aot_label
    assert set(np.unique(labels)) == {0, 1}, "both arrow-of-time classes must be drawn"
    assert 0.3 < labels.mean() < 0.7
    aot = aot_input(batch)
    forward = labels == 0
    np.testing.assert_array_equal(aot[forward], batch.consecutive[forward])
    np.testing.assert_array_equal(aot[~forward], batch.consecutive[~forward][:, ::-1])
    ids = frame_ids(aot)
    np.testing.assert_array_equal(ids[~forward], objects.frame[~forward, None] + np.arange(3, -4, -1)[None])


def test_intermittent_sequences(grey_batch):
    _, objects, batch = grey_batch
    labels = batch.irr_label
    assert set(np.unique(labels)) == {0, 1}, "both irregularity classes must be drawn"
    assert 0.3 < labels.mean() < 0.7
    offsets = batch.irr_offsets
    assert offsets.shape == (len(objects), K)
    # consecutive rows keep -3..3; intermittent rows keep the middle frame and step out with gaps 1..3
    np.testing.assert_array_equal(offsets[labels == 0], np.tile(np.arange(-3, 4), ((labels == 0).sum(), 1)))
    inter = offsets[labels == 1]
    assert (inter[:, T3] == 0).all()
    gaps = np.diff(inter, axis=1)
    assert (gaps >= 1).all() and (gaps <= 3).all()
    assert (gaps > 1).any(), "intermittent sequences never skip a frame"
    # what the network sees is what the offsets say
    ids = frame_ids(irr_input(batch))
    np.testing.assert_array_equal(ids, objects.frame[:, None] + offsets)
    np.testing.assert_array_equal(frame_ids(batch.intermittent[labels == 1]), objects.frame[labels == 1, None] + inter)


def test_gaps_are_uniform_over_1_2_3_far_from_borders():
    rng = np.random.default_rng(7)
    room = np.full(4000, 100)
    offsets = draw_intermittent_offsets(rng, 4000, T3, 3, room, room)
    gaps = np.diff(offsets, axis=1)
    assert set(np.unique(gaps)) == {1, 2, 3}
    share = np.array([(gaps == g).mean() for g in (1, 2, 3)])
    assert np.all(np.abs(share - 1 / 3) < 0.03), share
    assert np.abs(offsets).max() == 9


def test_intermittent_offsets_stay_inside_the_video_near_its_borders():
    length = 30
    frames = [index_video(length)]
    # the first and last training frames (room 3 on one side) and frames with a little more room
    near = [3, 3, 3, 4, 5, 6, 8, length - 9, length - 7, length - 6, length - 5, length - 4, length - 4]
    objects = make_objects([near * 20])
    sampler = SequenceSampler(frames, objects, CONFIG, ("aot", "irr", "mid"), seed=0)
    seen_labels = set()
    for b in range(4):
        batch = sampler.make_batch(np.arange(len(objects)), batch_rng(0, b, 0))
        absolute = objects.frame[:, None] + batch.irr_offsets
        assert absolute.min() >= 0 and absolute.max() <= length - 1
        gaps = np.diff(batch.irr_offsets, axis=1)
        assert (gaps >= 1).all() and (gaps <= 3).all()
        np.testing.assert_array_equal(frame_ids(irr_input(batch)), absolute)
        inter = batch.irr_label == 1
        seen_labels |= set(batch.irr_label.tolist())
        # with exactly 3 frames of room a side can only step by 1
        start = inter & (objects.frame == 3)
        end = inter & (objects.frame == length - 4)
        assert start.any() and end.any()
        np.testing.assert_array_equal(batch.irr_offsets[start, :T3], np.tile([-3, -2, -1], (start.sum(), 1)))
        np.testing.assert_array_equal(batch.irr_offsets[end, T3 + 1:], np.tile([1, 2, 3], (end.sum(), 1)))
        # the other side is still free to jump
        assert (batch.irr_offsets[start, -1] > 3).any()
    assert seen_labels == {0, 1}


def test_draw_intermittent_offsets_respects_room_per_row():
    rng = np.random.default_rng(0)
    before = np.array([3, 4, 5, 9, 20] * 200)
    after = before[::-1].copy()
    offsets = draw_intermittent_offsets(rng, len(before), T3, 3, before, after)
    assert (offsets[:, 0] >= -before).all()
    assert (offsets[:, -1] <= after).all()
    assert (np.diff(offsets, axis=1) > 0).all()


def test_training_objects_exclude_windows_that_leave_the_video():
    length = 20
    frame = np.array([0, 1, 2, 3, 4, 10, 15, 16, 17, 19], np.int32)
    boxes = np.tile(np.array([[5, 5, 30, 30]], np.float32), (len(frame), 1))
    boxes[5] = [5, 5, 7, 30]  # 2 px wide: below min_box_size
    det = Detections(frame, boxes, np.ones(len(frame), np.float32), np.full(len(frame), -1, np.int16),
                     np.zeros((len(frame), 0), np.float16))
    train = objects_from_detections([det], [length], CONFIG, training=True)
    # t <= i <= T-1-t, i.e. 3..16, and the tiny box dropped
    np.testing.assert_array_equal(train.frame, [3, 4, 15, 16])
    np.testing.assert_array_equal(train.row, [3, 4, 6, 7])
    test = objects_from_detections([det], [length], CONFIG, training=False)
    np.testing.assert_array_equal(test.frame, np.delete(frame, 5))  # every detection is scored
    strided = objects_from_detections([det], [length], SampleConfig(train_frame_stride=2), training=True)
    np.testing.assert_array_equal(strided.frame, [4, 16])
    # several videos: video index and rows per video
    both = objects_from_detections([det, det], [length, 17], CONFIG, training=True)
    np.testing.assert_array_equal(both.video, [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(both.frame, [3, 4, 15, 16, 3, 4])


# ----------------------------------------------------------------------------------------------------------
# scoring sequences
# ----------------------------------------------------------------------------------------------------------


def test_scoring_sequences_clamp_at_the_borders():
    length = 12
    frames = index_video(length)
    index = np.array([0, 1, 2, 3, 6, 9, 10, 11])
    boxes = np.tile(np.array([[4, 4, 40, 30]], np.float32), (len(index), 1))
    out = scoring_sequences(frames, index, boxes, CONFIG)
    assert out.shape == (len(index), K, SIZE, SIZE, 3) and out.dtype == np.uint8
    ids = frame_ids(out)
    np.testing.assert_array_equal(ids, np.clip(index[:, None] + np.arange(-3, 4)[None], 0, length - 1))
    np.testing.assert_array_equal(ids[0], [0, 0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(ids[-1], [8, 9, 10, 11, 11, 11, 11])
    # grey expanded to three identical channels
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


# ----------------------------------------------------------------------------------------------------------
# what the trainer derives from a batch: the four tasks' network inputs and targets
# ----------------------------------------------------------------------------------------------------------


def test_trainer_inputs_middle_box_and_targets(grey_batch):
    frames, objects, batch = grey_batch
    kd_dim = 12
    kd_targets = np.random.default_rng(0).normal(size=(len(objects), kd_dim)).astype(np.float32)
    model = SSMTLModel("shallow_narrow", kd_dim=kd_dim, crop_size=SIZE)
    encoder_inputs: list[torch.Tensor] = []
    hooks = [model.encoder.register_forward_pre_hook(lambda _m, args: encoder_inputs.append(args[0].clone()))]
    middle = torch.from_numpy(objects.frame[batch.index].astype(np.float32) / 255.0)
    # Heads that answer perfectly: a zero loss then proves the trainer compared against the right target.
    hooks.append(model.mid_head.register_forward_hook(
        lambda _m, _i, out: middle.view(-1, 1, 1, 1).expand_as(out).contiguous()))
    hooks.append(model.kd_head.register_forward_hook(lambda _m, _i, _o: torch.from_numpy(kd_targets[batch.index])))
    losses = task_losses(model, batch, TASKS, kd_targets, torch.device("cpu"))
    for h in hooks:
        h.remove()
    assert set(losses) == set(TASKS)
    assert losses["mid"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["kd"].item() == pytest.approx(0.0, abs=1e-6)

    n = len(batch.index)
    sequences, without_middle = encoder_inputs
    assert sequences.shape == (2 * n, 3, K, SIZE, SIZE)
    frame = objects.frame[batch.index, None]
    # arrow of time (and distillation) input: forwards or reversed as labelled
    aot_ids = tensor_frame_ids(sequences[:n])
    direction = np.where(batch.aot_label[:, None] == 1, np.arange(3, -4, -1)[None], np.arange(-3, 4)[None])
    np.testing.assert_array_equal(aot_ids, frame + direction)
    # irregularity input: consecutive or intermittent as labelled
    np.testing.assert_array_equal(tensor_frame_ids(sequences[n:]), frame + batch.irr_offsets)
    # middle box: the 6 frames without the middle one, in order
    assert without_middle.shape == (n, 3, K - 1, SIZE, SIZE)
    np.testing.assert_array_equal(tensor_frame_ids(without_middle), frame + np.array([-3, -2, -1, 1, 2, 3])[None])


def test_trainer_middle_loss_is_nonzero_for_a_wrong_reconstruction(grey_batch):
    """Guards the test above: the hooked head must matter (a constant off by one grey level)."""
    _, objects, batch = grey_batch
    model = SSMTLModel("shallow_narrow", kd_dim=0, crop_size=SIZE)
    wrong = torch.from_numpy((objects.frame[batch.index] + 1).astype(np.float32) / 255.0)
    handle = model.mid_head.register_forward_hook(lambda _m, _i, out: wrong.view(-1, 1, 1, 1).expand_as(out))
    losses = task_losses(model, batch, ("mid",), None, torch.device("cpu"))
    handle.remove()
    assert set(losses) == {"mid"}
    assert losses["mid"].item() == pytest.approx(1 / 255, rel=1e-4)


# ----------------------------------------------------------------------------------------------------------
# crops
# ----------------------------------------------------------------------------------------------------------


def test_crop_shapes_grey_and_colour():
    grey, colour = index_video(20), index_video(20, channels=3)
    box = np.array([5.0, 4.0, 45.0, 40.0])
    idx = np.arange(3, 10)
    assert crop_object(grey, idx, box, SIZE).shape == (7, SIZE, SIZE, 3)
    assert crop_object(grey, idx, box, SIZE, rgb=False).shape == (7, SIZE, SIZE, 1)
    crops = crop_object(colour, idx, box, 64)
    assert crops.shape == (7, 64, 64, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[:, 0, 0], np.stack([idx, idx + 60, idx + 120], axis=1))

    objects = make_objects([list(range(3, 17))])
    for frames, channels in (([grey], 1), ([colour], 3)):
        sampler = SequenceSampler(frames, objects, CONFIG, TASKS, seed=0)
        batch = sampler.make_batch(np.arange(len(objects)), np.random.default_rng(0))
        assert batch.consecutive.shape == (len(objects), K, SIZE, SIZE, channels)
        assert batch.intermittent.shape == (len(objects), K, SIZE, SIZE, channels)
        assert batch.consecutive.dtype == np.uint8
    # only the irregularity task needs intermittent crops
    no_irr = SequenceSampler([grey], objects, CONFIG, ("aot", "mid"), seed=0).make_batch(np.arange(4))
    assert no_irr.intermittent is None and (no_irr.irr_label == 0).all()


@pytest.mark.parametrize("box", [(10.3, 7.8, 150.2, 101.6), (20.0, 30.0, 33.0, 41.0), (0.0, 0.0, 160.0, 120.0)])
@pytest.mark.parametrize("channels", [1, 3])
def test_crops_match_a_per_frame_resize(box, channels):
    """Resizing the K crops stacked along channels gives what resizing each crop alone gives."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(9, 120, 160, channels), dtype=np.uint8)
    idx = np.array([0, 2, 3, 4, 5, 7, 8])
    out = crop_object(frames, idx, np.array(box), 64, rgb=False)
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    shrink = (x2 - x1) > 64 or (y2 - y1) > 64
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    for j, k in enumerate(idx):
        ref = cv2.resize(np.ascontiguousarray(frames[k, y1:y2, x1:x2]), (64, 64), interpolation=interpolation)
        diff = np.abs(out[j].astype(int) - ref.reshape(64, 64, channels).astype(int))
        assert diff.max() <= 1, (j, diff.max())


# ----------------------------------------------------------------------------------------------------------
# draws: fresh per epoch, reproducible per (seed, epoch, batch)
# ----------------------------------------------------------------------------------------------------------


def _draws(batches) -> list[tuple]:
    return [(b.index.copy(), b.aot_label.copy(), b.irr_label.copy(), b.irr_offsets.copy(), b.consecutive.copy())
            for b in batches]


def test_draws_are_fresh_each_epoch_and_reproducible():
    frames = [index_video(60)]
    objects = make_objects([list(range(3, 57)) * 2])
    sampler = SequenceSampler(frames, objects, CONFIG, TASKS, seed=0)
    order = np.arange(len(objects))  # same objects in the same batches: only the draws may differ
    epoch0 = _draws(epoch_batches(sampler, order, 36, seed=5, epoch=0, start=0))
    again = _draws(epoch_batches(sampler, order, 36, seed=5, epoch=0, start=0))
    epoch1 = _draws(epoch_batches(sampler, order, 36, seed=5, epoch=1, start=0))
    other_seed = _draws(epoch_batches(sampler, order, 36, seed=6, epoch=0, start=0))
    assert len(epoch0) == 3
    for a, b in zip(epoch0, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    for a, b in zip(epoch0, epoch1):
        np.testing.assert_array_equal(a[0], b[0])
        assert not np.array_equal(a[1], b[1]), "arrow-of-time reversals repeated across epochs"
        assert not np.array_equal(a[3], b[3]), "intermittent gaps repeated across epochs"
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(epoch0, other_seed))
    # a resumed epoch (starting at batch 1) draws exactly what the uninterrupted epoch drew there
    resumed = _draws(epoch_batches(sampler, order, 36, seed=5, epoch=0, start=1))
    for a, b in zip(epoch0[1:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    # the same batch drawn alone, with or without the two worker threads
    sampler.workers = 1
    alone = sampler.make_batch(order[36:72], batch_rng(5, 0, 1))
    np.testing.assert_array_equal(alone.irr_offsets, epoch0[1][3])
    np.testing.assert_array_equal(alone.consecutive, epoch0[1][4])


def test_epoch_order_covers_the_index_and_follows_the_seed():
    frames = [index_video(40)]
    objects = make_objects([list(range(3, 37))])
    sampler = SequenceSampler(frames, objects, CONFIG, TASKS, seed=0)
    index = np.arange(len(objects))
    first = _draws(epoch_batches(sampler, epoch_order(3, 0, index), 10, seed=3, epoch=0))
    second = _draws(epoch_batches(sampler, epoch_order(3, 0, index), 10, seed=3, epoch=0))
    other = _draws(epoch_batches(sampler, epoch_order(4, 0, index), 10, seed=4, epoch=0))
    covered = np.concatenate([d[0] for d in first])
    np.testing.assert_array_equal(np.sort(covered), index)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[3], b[3])
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


# ----------------------------------------------------------------------------------------------------------
# 85 / 15 split
# ----------------------------------------------------------------------------------------------------------


def test_split_train_val_first_85_percent_of_each_video_by_frame():
    rng = np.random.default_rng(0)
    frames_a = rng.permutation(np.arange(3, 103))      # 100 objects, listed out of time order
    frames_b = rng.permutation(np.arange(10, 50, 2))   # 20 objects
    objects = make_objects([list(frames_a), list(frames_b)])
    train, val = split_train_val(objects, 0.15)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(objects)))
    for v, count, n_train in ((0, 100, 85), (1, 20, 17)):
        tr = train[objects.video[train] == v]
        va = val[objects.video[val] == v]
        assert len(tr) == n_train and len(va) == count - n_train
        assert objects.frame[tr].max() < objects.frame[va].min(), "validation must be the end of each video"
    # no validation
    train_all, val_none = split_train_val(objects, 0.0)
    assert len(train_all) == len(objects) and len(val_none) == 0


def test_consecutive_offsets():
    np.testing.assert_array_equal(consecutive_offsets(3), [-3, -2, -1, 0, 1, 2, 3])

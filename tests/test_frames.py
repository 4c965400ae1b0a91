"""The decoded-frame stores of video files: the raw memory map and the compact JPEG tiles read box by box."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ssmtl_core.data.frames import TILE, TiledFrames, load_frames
from ssmtl_core.data.layouts import Video, VideoFileSource
from ssmtl_core.samples import crop_object


def write_video(path: Path, frames: int = 12, height: int = 200, width: int = 300, grey: bool = False) -> Path:
    """A small MJPG .avi of a textured scene with a moving square (smooth enough for JPEG to keep)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height), not grey)
    yy, xx = np.mgrid[:height, :width]
    for k in range(frames):
        image = np.stack([(xx * 0.6 + k) % 256, (yy * 0.8) % 256, (xx + yy) * 0.3 % 256], axis=2).astype(np.uint8)
        image[40:90, 30 + 10 * k:80 + 10 * k] = (220, 40, 40)
        writer.write(np.ascontiguousarray(image[..., 0]) if grey else image)
    writer.release()
    return path


@pytest.mark.parametrize("grey", [False, True])
def test_tiles_read_like_the_raw_frames(tmp_path, grey):
    video = Video("01", "train", VideoFileSource(write_video(tmp_path / "v.avi", grey=grey)))
    raw = load_frames(video, tmp_path / "raw", store="raw")
    tiles = load_frames(video, tmp_path / "tiles", store="tiles")
    assert isinstance(tiles, TiledFrames) and isinstance(raw, np.ndarray)
    assert tiles.shape == raw.shape and len(tiles) == len(raw) == 12
    assert raw.shape[-1] == (1 if grey else 3)
    # JPEG at quality 95: within a few grey levels of the pixels, whole frames and boxes alike,
    # for boxes inside one tile and across tile borders
    for key in (5, np.array([0, 3, 11]), (np.array([2, 2, 7]), slice(40, 90), slice(100, 180)),
                (np.array([1]), slice(TILE - 10, TILE + 30), slice(TILE - 5, 2 * TILE + 3)), slice(2, 4)):
        got, want = tiles[key], raw[key]
        assert got.shape == want.shape, key
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 3.0, key
    # the crops the sampler cuts agree too
    crop_raw = crop_object(raw, np.arange(3, 10), np.array([30, 40, 140, 95]), 32)
    crop_tiles = crop_object(tiles, np.arange(3, 10), np.array([30, 40, 140, 95]), 32)
    assert np.abs(crop_raw.astype(int) - crop_tiles.astype(int)).mean() < 3.0


def test_tile_store_is_reused_smaller_and_redone_when_damaged(tmp_path):
    video = Video("01", "train", VideoFileSource(write_video(tmp_path / "v.avi")))
    first = load_frames(video, tmp_path / "cache")
    store = first.path
    raw_bytes = int(np.prod(first.shape))
    assert store.stat().st_size < raw_bytes / 3, "the JPEG tiles take far less than the raw pixels"
    before = store.stat().st_mtime_ns
    again = load_frames(video, tmp_path / "cache")
    assert store.stat().st_mtime_ns == before, "a second load reuses the store"
    np.testing.assert_array_equal(again[4], first[4])
    store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])  # truncated on disk
    redone = load_frames(video, tmp_path / "cache")
    assert redone.path.stat().st_size > store.stat().st_size // 2 or redone.path.stat().st_mtime_ns != before
    np.testing.assert_array_equal(redone[4], first[4])

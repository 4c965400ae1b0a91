"""All frames of a video as one uint8 array: the input of sample extraction (``docs/method.md``, "Object-centric sequences").

Object-centric sequences crop the same box from up to 19 neighbouring frames, for every object, every
epoch. Decoding whole JPEGs (or video files) for each crop would dominate training, so each video is decoded
once: image folders into RAM; video files into the cache, in one of two stores (written atomically, reused by
later runs while the video file's size and time are unchanged; a full disk is refused before writing):

* ``tiles`` (the default): every frame cut into 128x128 tiles, each a JPEG (quality 95) in one file per
  video, with an index. Reading a box decodes only the tiles under it, so a crop stays cheap while the
  store is an order of magnitude smaller than the raw pixels (``bench/frames.py`` measures both).
* ``raw``: a memory-mapped ``.npy`` of the pixels, the fastest to read, for disks with room to spare.

Grey scenes (UCSD Ped2 stores three identical channels) keep one channel, a third of the memory; crops are
expanded back to RGB.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import SSMTLError
from ..io import DISK_FULL, Claim, atomic_path, read_json, write_json
from .layouts import Video, VideoFileSource


def _is_grey(frame: np.ndarray) -> bool:
    return bool(np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 0], frame[..., 2]))


def load_frames(video: Video, cache_dir: str | Path | None = None, progress: bool = False,
                store: str = "tiles") -> np.ndarray | TiledFrames:
    """Every frame of ``video`` as ``(T, H, W, C)`` uint8, C = 1 for grey scenes and 3 otherwise.

    Args:
        video: the video.
        cache_dir: where video files are decoded to; image folders stay in RAM.
        progress: show a progress bar.
        store: for video files: ``tiles`` (JPEG tiles, read box by box: :class:`TiledFrames`) or ``raw``
            (a memory-mapped ``.npy``).

    Returns:
        An array, or a :class:`TiledFrames` that indexes like one (``frames[indices, y1:y2, x1:x2]``).
    """
    if store not in ("tiles", "raw"):
        raise SSMTLError(f"unknown frame store {store!r}: choose tiles or raw.")
    first = video.frame(0)
    middle = video.frame(video.num_frames // 2)
    grey = _is_grey(first) and _is_grey(middle)
    channels = 1 if grey else 3
    height, width = first.shape[:2]
    shape = (video.num_frames, height, width, channels)

    target: Path | None = None
    if isinstance(video.source, VideoFileSource) and cache_dir is not None:
        suffix = ".jpgtiles" if store == "tiles" else ".npy"
        target = Path(cache_dir) / video.split / f"{video.name}{suffix}"
        if (frames := _cached(target, shape, video)) is not None:
            return frames
    if target is None:
        frames = np.empty(shape, np.uint8)
        _fill(frames, video, grey, progress)
        return frames
    if store == "tiles":
        return _tiled(target, shape, video, grey, progress)
    # One process decodes a video at a time; another one waits, then reads what it wrote.
    with Claim(target):
        if (frames := _cached(target, shape, video)) is not None:
            return frames
        _check_space(target, shape, video)
        with atomic_path(target, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            _preallocate(tmp)
            _fill(out, video, grey, progress)
            out.flush()
            del out
        write_json(_signature_file(target), {"input_signature": video.input_signature, "shape": list(shape)})
    return np.load(target, mmap_mode="r")


def _signature_file(target: Path) -> Path:
    return target.with_name(f"{target.stem}.json")


def _cached(target: Path, shape: tuple[int, ...], video: Video) -> np.ndarray | TiledFrames | None:
    """The decoded frames in ``target`` if they are whole and were decoded from the video as it is now."""
    if not target.is_file():
        return None
    try:
        frames = TiledFrames(target) if target.suffix == ".jpgtiles" else np.load(target, mmap_mode="r")
        recorded = read_json(_signature_file(target)).get("input_signature")
    except (OSError, ValueError, EOFError, KeyError):  # damaged, truncated or without its signature: decode again
        return None
    if frames.shape != shape or recorded != video.input_signature:
        return None
    return frames


def _check_space(target: Path, shape: tuple[int, ...], video: Video, divide: int = 1) -> None:
    """Refuse, before writing anything, to decode a video onto a disk without room for it."""
    need = int(np.prod(shape)) // divide + (1 << 20)
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target.parent).free
        if free < need:
            raise SSMTLError(
                f"not enough disk space to decode {video.source.path} into {target}: it needs {need / 1e6:.0f} MB "
                f"and the disk has {free / 1e6:.0f} MB free. Free some space or pass --cache on a larger disk."
            )


def _preallocate(path: Path) -> None:
    """Reserve the memory-mapped file's blocks now: a disk that fills up later would kill the process (SIGBUS)."""
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise
            # file systems without fallocate: the free-space check above stands in for it


def _fill(out: np.ndarray, video: Video, grey: bool, progress: bool) -> None:
    for i, frame in tqdm(video.iter_frames(), total=video.num_frames, disable=not progress,
                         desc=f"decode {video.key}", unit="frame", leave=False):
        if frame.shape[:2] != out.shape[1:3]:
            raise SSMTLError(f"frame {i} of video {video.key} is {frame.shape[1]}x{frame.shape[0]} but the first "
                             f"frame is {out.shape[2]}x{out.shape[1]}: all frames of a video must share one size.")
        out[i] = frame[..., :1] if grey else frame


# -- the tiled JPEG store ------------------------------------------------------------------------------

TILE = 128
JPEG_QUALITY = 95


class TiledFrames:
    """A video's frames stored as JPEG tiles, indexed like a ``(T, H, W, C)`` uint8 array.

    ``frames[k]``, ``frames[indices]`` and ``frames[indices, y1:y2, x1:x2]`` decode only the tiles the
    selection touches. The file holds the tiles' bytes one after the other; its ``.index.npy`` holds each
    tile's (offset, length) as ``(T, rows, cols, 2)``.

    Args:
        path: the ``.jpgtiles`` file written by :func:`load_frames`.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path
        self.index = np.load(path.with_suffix(".index.npy"))
        header = read_json(path.with_suffix(".tiles.json"))
        self.shape = tuple(header["shape"])
        self.tile = int(header["tile"])
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4
        self.blob = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
        if self.index.shape[:1] != self.shape[:1] or (self.index.size and
                                                       int((self.index[..., 0] + self.index[..., 1]).max()) > len(self.blob)):
            raise ValueError(f"{path}: its index does not match its tiles (damaged or truncated)")

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        frames, rows, cols = (*key, slice(None), slice(None))[:3]
        height, width, channels = self.shape[1:]
        y1, y2, _ = rows.indices(height) if isinstance(rows, slice) else (rows, rows + 1, 1)
        x1, x2, _ = cols.indices(width) if isinstance(cols, slice) else (cols, cols + 1, 1)
        single = np.ndim(frames) == 0 and not isinstance(frames, slice)
        indices = np.arange(len(self))[frames] if isinstance(frames, slice) else np.atleast_1d(frames)
        out = np.empty((len(indices), max(y2 - y1, 0), max(x2 - x1, 0), channels), np.uint8)
        for k, index in enumerate(indices):
            self._read(int(index), y1, y2, x1, x2, out[k])
        if not isinstance(rows, slice):
            out = out[:, 0]
        if not isinstance(cols, slice):
            out = out[:, :, 0] if isinstance(rows, slice) else out[:, 0]
        return out[0] if single else out

    def _read(self, index: int, y1: int, y2: int, x1: int, x2: int, out: np.ndarray) -> None:
        t = self.tile
        for row in range(y1 // t, (max(y2, y1 + 1) - 1) // t + 1):
            for col in range(x1 // t, (max(x2, x1 + 1) - 1) // t + 1):
                offset, length = self.index[index, row, col]
                tile = _decode(self.blob[offset:offset + length], out.shape[-1])
                ty, tx = row * t, col * t
                a, b = max(y1, ty), min(y2, ty + tile.shape[0])
                c, d = max(x1, tx), min(x2, tx + tile.shape[1])
                if b > a and d > c:
                    out[a - y1:b - y1, c - x1:d - x1] = tile[a - ty:b - ty, c - tx:d - tx]


def _decode(data: np.ndarray, channels: int) -> np.ndarray:
    tile = cv2.imdecode(np.asarray(data), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if tile is None:
        raise SSMTLError("a tile of the frame store does not decode: the cache file is damaged; delete it.")
    return tile[..., None] if channels == 1 else cv2.cvtColor(tile, cv2.COLOR_BGR2RGB)


def _encode(tile: np.ndarray) -> bytes:
    image = tile[..., 0] if tile.shape[-1] == 1 else cv2.cvtColor(np.ascontiguousarray(tile), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise SSMTLError("OpenCV could not encode a frame tile as JPEG.")
    return data.tobytes()


def _tiled(target: Path, shape: tuple[int, ...], video: Video, grey: bool, progress: bool) -> TiledFrames:
    """Decode ``video`` once into the tiled JPEG store at ``target`` (atomically) and open it."""
    count, height, width, channels = shape
    rows, cols = -(-height // TILE), -(-width // TILE)
    with Claim(target):
        if (frames := _cached(target, shape, video)) is not None:
            return frames
        # A generous bound (a third of the raw pixels) for the free-space check: JPEG tiles take ~1/13.
        _check_space(target, (count, height, width, channels, 1), video, divide=3)
        index = np.zeros((count, rows, cols, 2), np.int64)
        offset = 0
        with atomic_path(target, suffix=".jpgtiles") as tmp, open(tmp, "wb") as handle:
            for i, frame in tqdm(video.iter_frames(), total=count, disable=not progress,
                                 desc=f"decode {video.key}", unit="frame", leave=False):
                if frame.shape[:2] != (height, width):
                    raise SSMTLError(f"frame {i} of video {video.key} is {frame.shape[1]}x{frame.shape[0]} but the "
                                     f"first frame is {width}x{height}: all frames of a video must share one size.")
                pixels = frame[..., :1] if grey else frame
                for r in range(rows):
                    for c in range(cols):
                        data = _encode(pixels[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE])
                        handle.write(data)
                        index[i, r, c] = offset, len(data)
                        offset += len(data)
        with atomic_path(target.with_suffix(".index.npy"), suffix=".npy") as tmp:
            np.save(tmp, index)
        write_json(target.with_suffix(".tiles.json"), {"shape": list(shape), "tile": TILE, "quality": JPEG_QUALITY})
        write_json(_signature_file(target), {"input_signature": video.input_signature, "shape": list(shape)})
    return TiledFrames(target)

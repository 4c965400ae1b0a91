"""Datasets in their real layouts, behind one video/dataset abstraction (``docs/method.md``, "Datasets").

A :class:`Dataset` has a name, a root, train and test lists of :class:`Video`; a video has a name, a
split, a frame count and size, random access to RGB frames, and, for test videos, frame labels and pixel
masks where the dataset has them. Layouts recognised from the folder:

``jpg_frames``      ``training/frames/NN/KKK.jpg``, ``testing/frames/NN/KKK.jpg`` with label arrays
                    (``ground_truth/frame_labels.npy`` or ``frame_labels_<name>.npy``, or per video), pixel
                    masks ``ground_truth/pixel_masks.npz`` (the copy in ``../shared/datasets/ucsd_ped2``,
                    the synthetic dataset, and most open-source VAD code).
``ucsd_official``   ``Train/TrainNNN/*.tif``, ``Test/TestNNN/*.tif``, ``Test/TestNNN_gt/*.bmp``,
                    ``Test/UCSDped2.m`` (the official UCSD tarball).
``avenue_official`` ``training_videos/NN.avi``, ``testing_videos/NN.avi``,
                    ``ground_truth_demo/testing_label_mask/N_label.mat`` (the official CUHK Avenue zips).
``shanghaitech_official`` ``training/videos/SS_VVVV.avi``, ``testing/frames/SS_VVVV/NNN.jpg``,
                    ``testing/test_frame_mask/SS_VVVV.npy``, ``testing/test_pixel_mask/SS_VVVV.npy``.

Video files are decoded sequentially: reading frames in order never re-decodes from the start, and a
backwards jump reopens the file once.

What a copy holds besides its frames (unpacked on another system, copied from a camera, re-extracted) is
decided in :func:`frame_files`, never silently: ignored with a note, warned about, or refused.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..config import DATASETS
from ..errors import SSMTLError, require_dir
from ..io import read_json, stable_hash

#: Videos (train, test) of each benchmark's official release; a copy with fewer is reported as partial.
OFFICIAL_VIDEOS: dict[str, tuple[int, int]] = {"ped2": (16, 12), "avenue": (16, 21), "shanghaitech": (330, 107)}
SYNTHETIC_MARKER = ".synthetic-incomplete"  # ssmtl_core.data.synthetic writes it while generating

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_EXTS = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v")


def _natural_key(path: Path) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name)]


#: What a copy leaves next to the frames that is never a frame, besides hidden names (macOS ``._*``
#: AppleDouble twins, ``.DS_Store``, ``.ipynb_checkpoints``): Windows' thumbnails and folder settings, and the
#: ``__MACOSX`` folder of a zip made on a Mac.
SYSTEM_NAMES = ("thumbs.db", "desktop.ini", "__macosx")
#: Suffixes of downloads still in progress (or abandoned): the file is not all there.
PARTIAL_SUFFIXES = (".part", ".crdownload", ".partial", ".download")
#: A second copy of a file: ``001 (1).jpg`` (a second extraction), ``001 - Copy.jpg`` (Windows), ``001 copy.jpg``
#: and ``001 2.jpg`` (macOS); a copy only when the name without it is another frame's.
_SECOND_COPY = re.compile(r"^(?P<frame>.+?)(?: \(\d+\)| - copy(?: \(\d+\))?| copy(?: \d+)?| \d+)$", re.IGNORECASE)
_SAME_FORMAT = {".jpeg": ".jpg", ".tiff": ".tif"}


def is_system_entry(path: Path) -> bool:
    """Whether ``path`` is a hidden or system entry that a copy of a dataset may hold but is never data."""
    return path.name.startswith(".") or path.name.lower() in SYSTEM_NAMES


def frame_files(folder: Path) -> tuple[list[Path], list[Path], list[str]]:
    """The frames of one video folder in frame order, the entries left out, and warnings.

    What a copy of a dataset may hold besides its frames, and what happens to it:

    * **ignored** (returned, and named in a note by :func:`open_dataset`): hidden entries (macOS ``._*``
      AppleDouble twins of every frame, which end in ``.jpg`` too, ``.DS_Store``, ``.ipynb_checkpoints``),
      ``Thumbs.db``, ``desktop.ini``, files of other types and subfolders;
    * **refused**: a download in progress (``.part``, ``.crdownload``: the copy is incomplete), a second copy of
      a frame (``001 (1).jpg`` from a second extraction, ``001 - Copy.jpg``, ``001 copy.jpg``), two files with
      one frame number (``001.jpg`` and ``001.png``, or ``1.jpg`` and ``001.jpg``): each would add a frame and
      shift every later one;
    * **warned**: gaps in the numbering (a lost frame shifts every later frame's label by one) and several
      image formats in one video;
    * **accepted**: upper-case extensions (``.JPG``), numbers without zero padding (``1.jpg, 2.jpg, 10.jpg``,
      ordered by number, never as text) and symbolic links (a dangling one is refused when read).
    """
    frames, ignored = [], []
    for path in folder.iterdir():
        if path.name.lower().endswith(PARTIAL_SUFFIXES):
            raise SSMTLError(f"{path} is a download that did not finish: the copy of this video is incomplete. "
                             "Finish the download (or re-extract the dataset), then rerun.")
        if is_system_entry(path) or path.suffix.lower() not in IMAGE_EXTS or path.is_dir():
            ignored.append(path)
        else:
            frames.append(path)
    frames.sort(key=_natural_key)
    stems = {p.stem for p in frames}
    for path in frames:
        match = _SECOND_COPY.match(path.stem)
        if match and match["frame"] in stems:
            raise SSMTLError(f"{path} is a second copy of frame {match['frame']} (a repeated extraction or copy): "
                             "it would count as one more frame. Delete it, or re-extract the video into an empty "
                             "folder.")
    # Two names for one frame: the same words and numbers, whatever the zero padding, case or extension.
    keys = [tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.stem)) for p in frames]
    seen: dict[tuple, Path] = {}
    for path, key in zip(frames, keys):
        if key in seen:
            number = "/".join(str(t) for t in key if isinstance(t, int)) or path.stem
            raise SSMTLError(f"{seen[key]} and {path} are both frame {number} of {folder}: one of them would "
                             "count as one more frame. Keep one (or re-extract the video into an empty folder).")
        seen[key] = path
    # The frame number is the one number that changes from name to name (cam2_0001.jpg keeps its 2).
    warnings = []
    layouts = {tuple(isinstance(t, int) for t in key) for key in keys}
    varying = [i for i, is_number in enumerate(next(iter(layouts))) if is_number and len({k[i] for k in keys}) > 1
               ] if len(layouts) == 1 else []
    if len(varying) == 1:
        numbers = {key[varying[0]] for key in keys}
        missing = sorted(set(range(min(numbers), max(numbers) + 1)) - numbers)
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            warnings.append(f"{folder} has no frame number {shown} ({len(missing)} missing between {min(numbers)} "
                            f"and {max(numbers)}): frames are taken in order, so each later frame takes the place "
                            "(and label) of the one before it. Restore the missing frames if the copy is "
                            "incomplete.")
    formats = sorted({_SAME_FORMAT.get(p.suffix.lower(), p.suffix.lower()) for p in frames})
    if len(formats) > 1:
        warnings.append(f"{folder} holds frames in {len(formats)} image formats ({', '.join(formats)}): one video "
                        "is usually one format; check that every file belongs to this video.")
    return frames, ignored, warnings


# -- frame sources --------------------------------------------------------------------------------


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise SSMTLError(f"cannot read {path} ({exc.strerror}). Check the file and its permissions.") from None


def jpeg_is_complete(data: bytes) -> bool:
    """False for a JPEG cut short: it must end with the end-of-image marker FFD9 (trailing padding allowed).

    OpenCV decodes a truncated JPEG without an error, with the missing lower part grey, so the marker is
    checked before decoding. Data that is not a JPEG (no FFD8 start) is not judged here.
    """
    if data[:2] != b"\xff\xd8":
        return True
    return data[-1024:].rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def _decode_image(file: Path) -> np.ndarray:
    """One frame file as BGR, refusing unreadable files and truncated JPEGs with a message naming the file."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise SSMTLError(f"cannot read frame {file} ({exc.strerror}). Check the file and its permissions.") from None
    if not jpeg_is_complete(data):
        raise SSMTLError(
            f"frame {file} is a truncated JPEG ({len(data)} bytes, no end-of-image marker): its lower part would "
            "decode grey. Replace it with a complete frame (or re-extract / re-download the dataset)."
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise SSMTLError(
            f"cannot read frame {file}: the file is unreadable or not an image. "
            "Replace it with a valid frame (or re-extract the dataset)."
        )
    return image


class ImageFolderSource:
    """Frames stored as one image file each, in natural sort order."""

    def __init__(self, folder: Path):
        self.path = Path(folder)
        self.files, self.ignored, self.warnings = frame_files(self.path)
        if not self.files:
            nested = next((p for p in sorted(self.ignored) if p.is_dir() and not is_system_entry(p)
                           and any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir())), None)
            hint = (f" Its subfolder {nested.name} holds images: an archive unpacked one level too deep? Move "
                    "them up into the video's folder." if nested else "")
            raise SSMTLError(
                f"no frames in {self.path}: expected image files ({', '.join(IMAGE_EXTS)}). "
                f"Check that the folder holds this video's frames.{hint}"
            )
        self._size: tuple[int, int] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.files)

    @property
    def frame_size(self) -> tuple[int, int]:
        if self._size is None:
            self._size = tuple(self.read(0).shape[:2])  # type: ignore[assignment]
        return self._size  # type: ignore[return-value]

    def signature(self) -> str:
        """A short hash of every frame file's name, size and modification time: changes when any frame does."""
        return stable_hash([(p.name, st.st_size, st.st_mtime_ns) for p in self.files for st in [_stat(p)]], 16)

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB; a clear error for an unreadable, truncated or differently sized frame."""
        image = _decode_image(self.files[index])
        if self._size is None:
            self._size = image.shape[:2] if index == 0 else _decode_image(self.files[0]).shape[:2]
        if image.shape[:2] != self._size:
            height, width = self._size
            raise SSMTLError(
                f"frame {self.files[index]} is {image.shape[1]}x{image.shape[0]} but the first frame of its video "
                f"({self.files[0].name}) is {width}x{height}: all frames of a video must share one size. Replace "
                "the odd frame (or re-extract the video's frames)."
            )
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def iter(self, start: int = 0, stop: int | None = None, threads: int = 2) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        indices = range(start, stop)
        if threads <= 1:
            for i in indices:
                yield i, self.read(i)
            return
        # JPEG decoding releases the GIL, so a small pool keeps both cores busy.
        with ThreadPoolExecutor(threads) as pool:
            yield from zip(indices, pool.map(self.read, indices))


class VideoFileSource:
    """Frames decoded from a video file, sequentially."""

    def __init__(self, path: Path):
        self.path = Path(path)
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise SSMTLError(f"cannot open video {self.path}: the file is unreadable or its codec is unsupported "
                             "by OpenCV. Re-download it or convert it (e.g. ffmpeg -i in.avi out.mp4).")
        self._count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self._size = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
        self.fps = float(capture.get(cv2.CAP_PROP_FPS)) or 25.0
        capture.release()
        if self._count <= 0:
            self._count = self._count_by_decoding()
        self._capture: cv2.VideoCapture | None = None
        self._position = 0

    def signature(self) -> str:
        """A short hash of the video file's name, size and modification time."""
        st = _stat(self.path)
        return stable_hash([self.path.name, st.st_size, st.st_mtime_ns], 16)

    def _count_by_decoding(self) -> int:
        capture = cv2.VideoCapture(str(self.path))
        count = 0
        while capture.grab():
            count += 1
        capture.release()
        if count == 0:
            raise SSMTLError(f"video {self.path} has no decodable frames. Re-download or re-encode it.")
        return count

    @property
    def num_frames(self) -> int:
        return self._count

    @property
    def frame_size(self) -> tuple[int, int]:
        return self._size

    def _seek(self, index: int) -> cv2.VideoCapture:
        if self._capture is None or index < self._position:
            if self._capture is not None:
                self._capture.release()
            self._capture = cv2.VideoCapture(str(self.path))
            self._position = 0
        while self._position < index:  # grab() skips without decoding the pixels
            if not self._capture.grab():
                self._fail(self._position)
            self._position += 1
        return self._capture

    def _fail(self, index: int) -> None:
        raise SSMTLError(
            f"video {self.path} ended or failed at frame {index}, but its header says {self._count} frames. "
            "The file is truncated or damaged: re-download or re-encode it."
        )

    def read(self, index: int) -> np.ndarray:
        capture = self._seek(index)
        ok, image = capture.read()
        if not ok:
            self._fail(index)
        self._position += 1
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def iter(self, start: int = 0, stop: int | None = None, threads: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for i in range(start, stop):
            yield i, self.read(i)


# -- videos and datasets ----------------------------------------------------------------------------


@dataclass(eq=False)
class Video:
    """One video of a dataset split.

    Attributes:
        name: the video's name within its split (e.g. ``01`` or ``01_0014``).
        split: ``train`` or ``test``.
        source: where the frames come from.
        labels_fn: loads the per-frame labels (1 = abnormal), or None where the dataset has none.
        masks_fn: loads the pixel masks ``(T, H, W)`` bool, or None.
    """

    name: str
    split: str
    source: ImageFolderSource | VideoFileSource
    labels_fn: Callable[[], np.ndarray] | None = None
    masks_fn: Callable[[], np.ndarray] | None = None
    _labels: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return self.source.num_frames

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.source.frame_size

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}"

    @property
    def input_signature(self) -> str:
        """A short hash of the size and modification time of the video's frame files (or video file).

        Caches store it with each entry and recompute the entry when it changes (a repaired frame, a
        re-extracted video), since the dataset's fingerprint only covers names and frame counts.
        """
        return self.source.signature()

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as an RGB uint8 array (H, W, 3)."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} outside video {self.key} of {self.num_frames} frames")
        return self.source.read(index)

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, rgb_frame)`` in order, decoding each frame once."""
        return self.source.iter(start, stop)

    @property
    def labels(self) -> np.ndarray | None:
        """Frame labels (uint8, 1 = abnormal) or None; checked against the frame count."""
        if self._labels is None and self.labels_fn is not None:
            labels = check_labels(self.labels_fn(), self.source.path)
            if len(labels) != self.num_frames:
                raise SSMTLError(
                    f"video {self.source.path} has {self.num_frames} frames but its ground truth lists "
                    f"{len(labels)} frame labels. Check that the labels belong to this dataset and that no "
                    "frames are missing."
                )
            self._labels = labels
        return self._labels

    def pixel_masks(self) -> np.ndarray | None:
        """Pixel-level ground truth ``(T, H, W)`` bool, or None where the dataset has none."""
        if self.masks_fn is None:
            return None
        masks = np.asarray(self.masks_fn())
        if masks.ndim == 4:
            masks = masks[..., 0]
        if masks.shape[0] != self.num_frames:
            raise SSMTLError(
                f"the pixel masks of video {self.key} ({self.source.path}) have {masks.shape[0]} frames but the "
                f"video has {self.num_frames}. Check that the masks belong to this dataset."
            )
        height, width = self.frame_size
        if masks.shape[1:] != (height, width):
            masks = np.stack([cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
                              for m in masks])
        return masks.astype(bool)


@dataclass(eq=False)
class Dataset:
    """A dataset: train and test videos, read from one of the known layouts.

    Attributes:
        name: ``synthetic``, ``ped2``, ``avenue`` or ``shanghaitech``.
        root: the dataset folder.
        layout: the layout recognised (see the module docstring).
        train: training videos (normal behaviour only).
        test: test videos.
        tracks_fn: loads ground-truth object tracks (for RBDC/TBDC) where the layout ships them.
        meta: anything else the layout knows (e.g. the synthetic generator's settings).
        labels_looked: where the reader looked for frame labels when it found none.
        ignored: hidden and system entries left out where videos are listed (``.ipynb_checkpoints``,
            ``._01.avi``); those left out inside frame folders are their sources' (:func:`frame_files`).
    """

    name: str
    root: Path
    layout: str
    train: list[Video]
    test: list[Video]
    tracks_fn: Callable[[], object] | None = None
    meta: dict = field(default_factory=dict)
    labels_looked: list[str] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    @property
    def official_videos(self) -> tuple[int, int] | None:
        """(train, test) videos of the full release (the generator's counts for the synthetic dataset)."""
        if self.name == "synthetic":
            train, test = self.meta.get("train_videos"), self.meta.get("test_videos")
            return (len(train), len(test)) if isinstance(train, dict) and isinstance(test, dict) else None
        return OFFICIAL_VIDEOS.get(self.name)

    @property
    def partial(self) -> bool:
        """True when the copy holds fewer videos than the official release (results are not comparable)."""
        official = self.official_videos
        return official is not None and (len(self.train) < official[0] or len(self.test) < official[1])

    def partial_warning(self) -> str | None:
        """One line saying how much of the release this copy holds, or None for a complete copy."""
        if not self.partial:
            return None
        train, test = self.official_videos  # type: ignore[misc]
        return (f"{self.root} holds {len(self.train)} training and {len(self.test)} test videos, but the official "
                f"{self.name} release has {train} and {test}: this copy is partial, and its results are marked "
                "partial and are not comparable with published ones.")

    def listing_notes(self, shown: int = 3) -> list[str]:
        """What :func:`open_dataset` prints about the copy's files: one ``note:`` naming the entries that are
        not frames (left out), then a ``warning:`` per video folder with gaps or mixed formats."""
        sources = [v.source for v in self.train + self.test if isinstance(v.source, ImageFolderSource)]
        ignored = self.ignored + [p for source in sources for p in source.ignored]
        lines = [f"warning: {w}" for source in sources for w in source.warnings]
        if len(lines) > shown + 1:
            lines = lines[:shown] + [f"warning: ... and {len(lines) - shown} more video folders like these."]
        if ignored:
            names = ", ".join(os.path.relpath(p, self.root) for p in ignored[:shown])
            lines.insert(0, f"note: {len(ignored)} entries of {self.root} are not frames and are left out (hidden "
                            f"and system files such as macOS ._* twins, .DS_Store and Thumbs.db, other files, "
                            f"subfolders): {names}{', ...' if len(ignored) > shown else ''}")
        return lines

    def missing_ground_truth(self) -> str | None:
        """A message naming where the frame labels were looked for, when some test video has none; else None."""
        missing = [v for v in self.test if v.labels_fn is None]
        if not missing:
            return None
        looked = ", ".join(self.labels_looked) or str(self.root)
        return (f"no frame labels (ground truth) for {len(missing)} of the {len(self.test)} test videos of "
                f"{self.root}; looked for: {looked}. Unpack the dataset's ground truth there (README: real data); "
                "evaluation needs it.")

    def videos(self, split: str) -> list[Video]:
        """The videos of ``split`` (``train`` or ``test``)."""
        if split not in ("train", "test"):
            raise SSMTLError(f"unknown split {split!r}: choose train or test.")
        return self.train if split == "train" else self.test

    def video(self, split: str, name: str) -> Video:
        """One video by split and name."""
        for video in self.videos(split):
            if video.name == name:
                return video
        names = ", ".join(v.name for v in self.videos(split))
        raise SSMTLError(f"no {split} video named {name!r} in {self.root}; the {split} videos are: {names}.")

    @property
    def fingerprint(self) -> str:
        """A short hash of the dataset's structure (names, frame counts, sizes, generator settings)."""
        content = {
            "name": self.name,
            "videos": [(v.split, v.name, v.num_frames) for v in self.train + self.test],
            "meta": {k: v for k, v in self.meta.items() if k in ("generator_version", "size", "seed")},
        }
        return stable_hash(content, 8)

    @property
    def cache_id(self) -> str:
        """The folder name of this dataset in a cache: its name plus its fingerprint."""
        return f"{self.name}-{self.fingerprint}"

    def summary(self) -> dict:
        """Counts of videos, frames and abnormal frames per split (``ssmtl info``; every ``metrics.json``).

        ``partial`` is true, with ``official_videos`` giving the release's counts, for a copy with fewer videos
        than the official release; ``ground_truth_looked`` (only when test videos have no labels) says where
        the labels were looked for.
        """
        test_labels = [v.labels for v in self.test]
        abnormal = int(sum(int(lab.sum()) for lab in test_labels if lab is not None))
        frame_size = self.test[0].frame_size if self.test else self.train[0].frame_size
        return {
            "train": {"videos": len(self.train), "frames": int(sum(v.num_frames for v in self.train))},
            "test": {
                "videos": len(self.test),
                "frames": int(sum(v.num_frames for v in self.test)),
                "abnormal_frames": abnormal if all(lab is not None for lab in test_labels) else None,
            },
            "name": self.name,
            "layout": self.layout,
            "root": str(self.root),
            "frame_size": list(frame_size),
            "cache_id": self.cache_id,
            "partial": self.partial,
            "official_videos": dict(zip(("train", "test"), self.official_videos or (None, None))),
            **({"ground_truth_looked": list(self.labels_looked) or [str(self.root)]}
               if any(v.labels_fn is None for v in self.test) else {}),
        }


# -- layouts --------------------------------------------------------------------------------------


def _two_digit(name: str) -> str:
    digits = re.findall(r"\d+", name)
    return f"{int(digits[-1]):02d}" if digits else name


def _parse_matlab_ranges(path: Path) -> list[list[tuple[int, int]]]:
    """Parse ``UCSDped2.m``: one ``gt_frame = [a:b, c:d];`` line per test video (1-based, inclusive)."""
    videos: list[list[tuple[int, int]]] = []
    for line in path.read_text().splitlines():
        if "gt_frame" not in line:
            continue
        body = line.split("=", 1)[1]
        ranges = [(int(a), int(b)) for a, b in re.findall(r"(\d+)\s*:\s*(\d+)", body)]
        body_wo = re.sub(r"\d+\s*:\s*\d+", "", body)
        ranges += [(int(a), int(a)) for a in re.findall(r"\d+", body_wo)]
        videos.append(ranges)
    if not videos:
        raise SSMTLError(f"no 'gt_frame = [a:b]' lines in {path}: is it the official UCSD ground-truth file?")
    return videos


def _labels_from_ranges(ranges: list[tuple[int, int]], num_frames: int) -> np.ndarray:
    labels = np.zeros(num_frames, np.uint8)
    for start, end in ranges:
        labels[max(start - 1, 0):end] = 1
    return labels


def _masks_from_image_folder(folder: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not is_system_entry(p)),
                       key=_natural_key)
        masks = []
        for file in files:
            image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise SSMTLError(f"cannot read ground-truth mask {file}. Replace it or re-extract the dataset.")
            masks.append(image > 127)
        return np.stack(masks)
    return load


def _load_array(path: Path, what: str) -> np.ndarray:
    """A ``.npy`` array, or one message naming the file for anything unreadable (pickles, garbage, .npz)."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, UnpicklingError for bad files
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise SSMTLError(f"cannot read {what} {path} ({reason}): expected a NumPy .npy array of numbers. "
                         "Re-create the file (np.save) or re-download the dataset.") from None
    if not isinstance(data, np.ndarray):  # an .npz archive under a .npy name
        data.close()
        raise SSMTLError(f"{what} {path} is an .npz archive, not a .npy array. Save the array with np.save.")
    return data


def check_labels(labels: object, source: str | Path) -> np.ndarray:
    """Frame labels as uint8 0/1, or one message naming ``source`` for anything but 0/1 numbers.

    Labels are never rounded: 0.7 is refused, not read as 0.
    """
    array = np.asarray(labels)
    if array.dtype.kind not in "biuf":
        raise SSMTLError(f"frame labels {source} hold {array.dtype} values, not numbers: expected one 0 (normal) "
                         "or 1 (abnormal) per frame. Re-create the file with numeric labels.")
    flat = array.reshape(-1)
    bad = ~np.isin(flat, (0, 1))
    if bad.any():
        values = ", ".join(f"{v:g}" for v in np.unique(flat[bad])[:3].tolist())
        raise SSMTLError(f"frame labels {source} hold values other than 0 and 1 ({values}; first at frame "
                         f"{int(np.flatnonzero(bad)[0])}): expected one 0 (normal) or 1 (abnormal) per frame. "
                         "Fix the file; labels are not rounded.")
    return flat.astype(np.uint8)


def _load_labels(path: Path) -> np.ndarray:
    return check_labels(_load_array(path, "frame labels"), path)


def _split_labels(concatenated: np.ndarray, videos: list[Video], source: Path) -> None:
    """Attach slices of one concatenated label array to the test videos, checking the total."""
    total = sum(v.num_frames for v in videos)
    if len(concatenated) != total:
        raise SSMTLError(
            f"{source} holds {len(concatenated)} frame labels but the {len(videos)} test videos have {total} "
            "frames. The labels must list every test frame in video order: check that the file belongs to this "
            "dataset and that no frames are missing."
        )
    offset = 0
    for video in videos:
        part = concatenated[offset:offset + video.num_frames].copy()
        video.labels_fn = lambda part=part: part
        offset += video.num_frames


def _read_synthetic_tracks(path: Path, videos: list[Video]):
    from ..metrics import Tracks  # sklearn (metrics): only track files need it

    index = {v.name: i for i, v in enumerate(videos)}
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append((index[row["video"]], int(row["track_id"]), int(row["frame_id"]),
                         float(row["x_min"]), float(row["y_min"]), float(row["x_max"]), float(row["y_max"])))
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return Tracks(video=data[:, 0].astype(int), track=data[:, 1].astype(int), frame=data[:, 2].astype(int),
                  boxes=data[:, 3:7].astype(np.float32))


def _read_track_folder(folder: Path, videos: list[Video]):
    """ShanghaiTech-style track files, one per test video: ``track_id, frame_id, x_min, y_min, x_max, y_max``."""
    from ..metrics import Tracks, read_track_file  # sklearn (metrics): only track files need it

    parts = []
    for i, video in enumerate(videos):
        candidates = [p for p in folder.glob(f"{video.name}.*") if p.suffix in (".txt", ".csv")]
        if candidates:
            parts.append(read_track_file(candidates[0], video=i))
    return Tracks.concat(parts) if parts else None


def _jpg_frames(name: str, root: Path) -> Dataset:
    ignored: list[Path] = []

    def videos(split_dir: Path, split: str) -> list[Video]:
        ignored.extend(p for p in split_dir.iterdir() if is_system_entry(p))
        folders = sorted((p for p in split_dir.iterdir() if p.is_dir() and not is_system_entry(p)), key=_natural_key)
        if not folders:
            raise SSMTLError(f"no video folders in {split_dir}: expected {split_dir}/NN/KKK.jpg.")
        return [Video(p.name, split, ImageFolderSource(p)) for p in folders]

    train = videos(root / "training" / "frames", "train")
    test = videos(root / "testing" / "frames", "test")
    gt = root / "ground_truth"
    meta: dict = {}
    if (root / "dataset.json").is_file():
        meta = read_json(root / "dataset.json")

    # Frame labels: one concatenated array, per-video arrays, or the official UCSD ranges.
    concatenated = [gt / "frame_labels.npy", root / f"frame_labels_{name}.npy", gt / f"frame_labels_{name}.npy"]
    concatenated += sorted(root.glob("frame_labels*.npy"))
    per_video_dirs = [root / "testing" / "test_frame_mask", root / "testing" / "frame_labels", gt / "frame_labels"]
    label_file = next((p for p in concatenated if p.is_file()), None)
    if label_file is not None:
        _split_labels(_load_labels(label_file), test, label_file)
    elif (d := next((p for p in per_video_dirs if p.is_dir()), None)) is not None:
        for video in test:
            file = d / f"{video.name}.npy"
            if not file.is_file():
                raise SSMTLError(f"missing frame labels {file} for test video {video.name}. Add the file "
                                 "(one 0/1 value per frame) or remove the video.")
            video.labels_fn = lambda file=file: _load_labels(file)
    elif (m := next(iter(sorted(gt.glob("*.m"))), None) if gt.is_dir() else None) is not None:
        ranges = _parse_matlab_ranges(m)
        if len(ranges) != len(test):
            raise SSMTLError(f"{m} lists {len(ranges)} test videos but {root / 'testing' / 'frames'} holds "
                             f"{len(test)}. Check that the ground truth belongs to this dataset.")
        for video, video_ranges in zip(test, ranges):
            video.labels_fn = lambda r=video_ranges, n=video.num_frames: _labels_from_ranges(r, n)
    looked = [str(p) for p in concatenated[:3]] + [f"{d}/NN.npy" for d in per_video_dirs] + [f"{gt}/*.m"]

    # Pixel masks: an npz keyed TestNNN (or by video name), or one .npy per video.
    mask_npz = gt / "pixel_masks.npz"
    mask_dir = root / "testing" / "test_pixel_mask"
    for i, video in enumerate(test):
        if mask_npz.is_file():
            video.masks_fn = lambda i=i, v=video: _npz_mask(mask_npz, [f"Test{i + 1:03d}", v.name])
        elif (mask_dir / f"{video.name}.npy").is_file():
            video.masks_fn = lambda f=mask_dir / f"{video.name}.npy": _load_array(f, "pixel masks")

    tracks_fn = None
    if (gt / "tracks.csv").is_file():
        tracks_fn = lambda: _read_synthetic_tracks(gt / "tracks.csv", test)  # noqa: E731
    elif (gt / "tracks").is_dir():
        tracks_fn = lambda: _read_track_folder(gt / "tracks", test)  # noqa: E731
    return Dataset(name, root, "jpg_frames", train, test, tracks_fn, meta, looked, ignored)


def _npz_mask(path: Path, keys: list[str]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in keys:
                if key in data.files:
                    return data[key]
    except (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile, AttributeError) as exc:
        raise SSMTLError(f"cannot read pixel masks {path} ({str(exc)[:120] or type(exc).__name__}): expected an "
                         ".npz of boolean arrays keyed TestNNN. Re-create or re-download it.") from None
    raise SSMTLError(f"{path} has no mask for test video {keys[-1]} (looked for keys {', '.join(keys)}).")


def _ucsd_official(name: str, root: Path) -> Dataset:
    def videos(split_dir: Path, prefix: str, split: str) -> list[Video]:
        folders = sorted((p for p in split_dir.iterdir() if p.is_dir() and p.name.startswith(prefix)
                          and not p.name.endswith("_gt")), key=_natural_key)
        if not folders:
            raise SSMTLError(f"no {prefix}NNN folders in {split_dir}: is this the official UCSD layout?")
        return [Video(_two_digit(p.name), split, ImageFolderSource(p)) for p in folders]

    train = videos(root / "Train", "Train", "train")
    test_dir = root / "Test"
    test = videos(test_dir, "Test", "test")
    m_files = sorted(test_dir.glob("*.m"))
    ranges = _parse_matlab_ranges(m_files[0]) if m_files else None
    if ranges is not None and len(ranges) != len(test):
        raise SSMTLError(f"{m_files[0]} lists {len(ranges)} test videos but {test_dir} holds {len(test)}. "
                         "Check that the ground truth belongs to this dataset.")
    for i, video in enumerate(test):
        gt_dir = test_dir / f"{video.source.path.name}_gt"
        if gt_dir.is_dir():
            video.masks_fn = _masks_from_image_folder(gt_dir)
        if ranges is not None:
            video.labels_fn = lambda r=ranges[i], n=video.num_frames: _labels_from_ranges(r, n)
        elif video.masks_fn is not None:
            video.labels_fn = lambda v=video: v.pixel_masks().any(axis=(1, 2))
    return Dataset(name, root, "ucsd_official", train, test,
                   labels_looked=[f"{test_dir}/*.m", f"{test_dir}/TestNNN_gt/"])


def _avenue_official(name: str, root: Path) -> Dataset:
    ignored: list[Path] = []

    def videos(folder: Path, split: str) -> list[Video]:
        ignored.extend(p for p in folder.iterdir() if is_system_entry(p))
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS and not is_system_entry(p)),
                       key=_natural_key)
        if not files:
            raise SSMTLError(f"no videos in {folder}: expected {folder}/NN.avi.")
        return [Video(_two_digit(p.stem), split, VideoFileSource(p)) for p in files]

    train = videos(root / "training_videos", "train")
    test = videos(root / "testing_videos", "test")
    # The official zips unpack side by side: 'Avenue Dataset/' (videos) and 'ground_truth_demo/' (masks).
    mask_dirs = [root / "ground_truth_demo" / "testing_label_mask", root / "testing_label_mask",
                 root.parent / "ground_truth_demo" / "testing_label_mask"]
    mask_dir = next((p for p in mask_dirs if p.is_dir()), None)
    if mask_dir is not None:
        for video in test:
            file = mask_dir / f"{int(video.name)}_label.mat"
            video.masks_fn = lambda f=file: _avenue_masks(f)
            video.labels_fn = lambda v=video: v.pixel_masks().any(axis=(1, 2))
    return Dataset(name, root, "avenue_official", train, test, labels_looked=[str(p) for p in mask_dirs],
                   ignored=ignored)


def _avenue_masks(path: Path) -> np.ndarray:
    import scipy.io  # only Avenue's .mat ground truth needs it

    if not path.is_file():
        raise SSMTLError(f"missing Avenue mask file {path}. Unpack ground_truth_demo.zip into the dataset root.")
    try:
        data = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for damaged files
        raise SSMTLError(f"cannot read Avenue mask file {path} ({exc}). Re-download ground_truth_demo.zip.") from None
    if "volLabel" not in data:
        raise SSMTLError(f"{path} has no 'volLabel' variable: is it an Avenue testing_label_mask file?")
    cells = data["volLabel"].reshape(-1)
    return np.stack([np.asarray(c) > 0 for c in cells])


def _shanghaitech_official(name: str, root: Path) -> Dataset:
    train_dir = root / "training" / "videos"
    frames_dir = root / "testing" / "frames"
    ignored = [p for folder in (train_dir, frames_dir) for p in folder.iterdir() if is_system_entry(p)]
    files = sorted((p for p in train_dir.iterdir() if p.suffix.lower() in VIDEO_EXTS and not is_system_entry(p)),
                   key=_natural_key)
    if not files:
        raise SSMTLError(f"no videos in {train_dir}: expected {train_dir}/SS_VVVV.avi.")
    train = [Video(p.stem, "train", VideoFileSource(p)) for p in files]
    folders = sorted((p for p in frames_dir.iterdir() if p.is_dir() and not is_system_entry(p)), key=_natural_key)
    if not folders:
        raise SSMTLError(f"no test video folders in {frames_dir}: expected {frames_dir}/SS_VVVV/NNN.jpg.")
    test = [Video(p.name, "test", ImageFolderSource(p)) for p in folders]
    for video in test:
        label_file = root / "testing" / "test_frame_mask" / f"{video.name}.npy"
        mask_file = root / "testing" / "test_pixel_mask" / f"{video.name}.npy"
        if label_file.is_file():
            video.labels_fn = lambda f=label_file: _load_labels(f)
        if mask_file.is_file():
            video.masks_fn = lambda f=mask_file: _load_array(f, "pixel masks")
    tracks_dir = next((p for p in [root / "testing" / "test_tracks", root / "ground_truth" / "tracks"]
                       if p.is_dir()), None)
    tracks_fn = (lambda: _read_track_folder(tracks_dir, test)) if tracks_dir else None
    return Dataset(name, root, "shanghaitech_official", train, test, tracks_fn,
                   labels_looked=[f"{root / 'testing' / 'test_frame_mask'}/<video>.npy"], ignored=ignored)


#: layout name -> (test that a folder has this layout, reader)
LAYOUTS: dict[str, tuple[Callable[[Path], bool], Callable[[str, Path], Dataset]]] = {
    "jpg_frames": (lambda r: (r / "training" / "frames").is_dir() and (r / "testing" / "frames").is_dir(),
                   _jpg_frames),
    "ucsd_official": (lambda r: (r / "Train").is_dir() and (r / "Test").is_dir(), _ucsd_official),
    "avenue_official": (lambda r: (r / "training_videos").is_dir() and (r / "testing_videos").is_dir(),
                        _avenue_official),
    "shanghaitech_official": (lambda r: (r / "training" / "videos").is_dir() and (r / "testing" / "frames").is_dir(),
                              _shanghaitech_official),
}

LAYOUT_HELP = (
    "expected one of: training/frames/NN/*.jpg + testing/frames/NN/*.jpg (jpg layout); Train/TrainNNN + "
    "Test/TestNNN (official UCSD); training_videos/*.avi + testing_videos/*.avi (official Avenue); "
    "training/videos/*.avi + testing/frames/* (official ShanghaiTech)"
)

DATASET_NAMES = DATASETS


def open_dataset(name: str, root: str | Path) -> Dataset:
    """Open the dataset at ``root``, recognising its layout from the folder.

    Args:
        name: ``synthetic``, ``ped2``, ``avenue`` or ``shanghaitech`` (selects the profile; any layout can hold
            any of them).
        root: the dataset folder, or a folder holding exactly one dataset folder (e.g. the unpacked
            ``UCSD_Anomaly_Dataset.v1p2/UCSDped2``).

    Raises:
        SSMTLError: the folder is missing or holds none of the known layouts.
    """
    if name not in DATASET_NAMES:
        raise SSMTLError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}.")
    root = require_dir(root, f"the {name} dataset folder",
                       "Pass --root with the dataset folder (see README: real-data runs).")
    candidates = [root]

    # Let people point at the folder above the dataset (e.g. the unpacked archive's top level). The UCSD
    # tarball holds UCSDped1 next to UCSDped2, so folders named after the dataset come first, then by name
    # (never in the file system's arbitrary listing order).
    def children(folder: Path) -> list[Path]:
        subs = [p for p in folder.iterdir() if p.is_dir() and not is_system_entry(p)]  # not __MACOSX/
        return sorted(subs, key=lambda p: (name not in p.name.lower(), p.name))

    subdirs = children(root)
    candidates += subdirs
    for sub in subdirs:
        candidates += children(sub)
    for candidate in candidates:
        if (candidate / SYNTHETIC_MARKER).exists():
            raise SSMTLError(f"{candidate} is a synthetic dataset whose generation was interrupted (it still holds "
                             f"{SYNTHETIC_MARKER}), so some frames may be half-written. Rerun `ssmtl synth --out "
                             f"{candidate}` with the same --size and --seed to finish it.")
        for matches, reader in LAYOUTS.values():
            if matches(candidate):
                dataset = reader(name, candidate)
                for line in dataset.listing_notes():
                    print(line, file=sys.stderr, flush=True)
                if (warning := dataset.partial_warning()) is not None:
                    print(f"warning: {warning}", file=sys.stderr, flush=True)
                return dataset
    raise SSMTLError(f"{root} does not look like a {name} dataset: {LAYOUT_HELP}.")

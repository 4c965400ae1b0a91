"""Dataset layouts (ssmtl_core.data.layouts) and decoded frames (ssmtl_core.data.frames).

Every layout is fabricated in tmp_path with cv2 / scipy in its official shape, small enough to build in
milliseconds; the real UCSD Ped2 copy in ../shared is checked when it is there and skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from helpers import jpg_tree

from ssmtl_core.cli import main
from ssmtl_core.data import layouts
from ssmtl_core.data.frames import load_frames
from ssmtl_core.data.layouts import VideoFileSource, open_dataset
from ssmtl_core.data.synthetic import generate_synthetic
from ssmtl_core.errors import SSMTLError

SHARED = Path(__file__).resolve().parents[2] / "shared"
PED2 = SHARED / "datasets" / "ucsd_ped2"

H, W = 24, 32  # every fabricated frame is 32x24 (W x H)


# -- helpers ----------------------------------------------------------------------------------------


def _grey_frame(seed: int) -> np.ndarray:
    """A grey frame that differs from frame to frame (lossless formats keep it exactly)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W), dtype=np.uint8)


def _colour_frame(i: int) -> np.ndarray:
    """A BGR frame: a smooth background and a bright square moving 1 px per frame (so frames differ)."""
    y, x = np.mgrid[0:H, 0:W]
    frame = np.stack([40 + 4 * x, 60 + 3 * y, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    x0, y0 = 2 + i % (W - 10), 4 + (i // 3) % (H - 10)
    frame[y0:y0 + 6, x0:x0 + 6] = (250, 230, 30)
    return frame


def _write_avi(path: Path, frames_bgr: list[np.ndarray], fps: float = 10.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi files here"
    for frame in frames_bgr:
        writer.write(frame)
    writer.release()


def _decode_all(path: Path) -> list[np.ndarray]:
    """Every frame of a video file as RGB, decoded sequentially by a fresh capture (the reference)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def _mask(i: int) -> np.ndarray:
    """A per-frame mask whose position depends on the frame, so a mask from the wrong frame is caught."""
    mask = np.zeros((H, W), bool)
    mask[2 + i % 5:8 + i % 5, 3 + i:9 + i] = True
    return mask


# -- official UCSD Ped2 -----------------------------------------------------------------------------

UCSD_TRAIN = {"Train001": 5, "Train002": 4}
UCSD_TEST = {"Test001": 8, "Test002": 6}
UCSD_RANGES = {"Test001": [(3, 6)], "Test002": [(1, 2), (6, 6)]}  # 1-based, inclusive (MATLAB)
UCSD_LABELS = {"Test001": [0, 0, 1, 1, 1, 1, 0, 0], "Test002": [1, 1, 0, 0, 0, 1]}


def _make_ucsd(top: Path) -> Path:
    """``<top>/UCSDped2`` in the official tarball's layout, plus a decoy ``UCSDped1`` next to it."""
    root = top / "UCSDped2"
    seed = 0
    for split, videos in (("Train", UCSD_TRAIN), ("Test", UCSD_TEST)):
        for video, count in videos.items():
            (root / split / video).mkdir(parents=True)
            for k in range(count):
                seed += 1
                assert cv2.imwrite(str(root / split / video / f"{k + 1:03d}.tif"), _grey_frame(seed))
    for video, labels in UCSD_LABELS.items():
        gt = root / "Test" / f"{video}_gt"
        gt.mkdir()
        for k, label in enumerate(labels):
            # The official masks are bmps, white where abnormal; they need not agree with the .m ranges, so
            # the labels below must come from the .m file and not from the masks.
            mask = _mask(k) if (label or k == 0) else np.zeros((H, W), bool)
            assert cv2.imwrite(str(gt / f"{k + 1:03d}.bmp"), mask.astype(np.uint8) * 255)
    lines = ["TestVideoFile = {};"]
    for video in UCSD_TEST:
        ranges = ", ".join(f"{a}:{b}" if a != b else f"{a}" for a, b in UCSD_RANGES[video])
        lines.append(f"TestVideoFile{{end+1}}.gt_frame = [{ranges}];")
    (root / "Test" / "UCSDped2.m").write_text("\n".join(lines) + "\n")
    # The real tarball unpacks UCSDped1 next to UCSDped2 (other frame size, other counts).
    decoy = top / "UCSDped1"
    for split, video in (("Train", "Train001"), ("Test", "Test001")):
        (decoy / split / video).mkdir(parents=True)
        assert cv2.imwrite(str(decoy / split / video / "001.tif"), np.zeros((10, 12), np.uint8))
    return root


def _check_ucsd(dataset, root: Path) -> None:
    assert dataset.layout == "ucsd_official"
    assert dataset.root == root
    assert [v.name for v in dataset.train] == ["01", "02"]
    assert [v.name for v in dataset.test] == ["01", "02"]
    assert [v.num_frames for v in dataset.train] == list(UCSD_TRAIN.values())
    assert [v.num_frames for v in dataset.test] == list(UCSD_TEST.values())
    summary = dataset.summary()
    assert summary["train"] == {"videos": 2, "frames": 9}
    assert summary["test"] == {"videos": 2, "frames": 14, "abnormal_frames": 7}
    for video, name in zip(dataset.test, UCSD_TEST):
        np.testing.assert_array_equal(video.labels, UCSD_LABELS[name])
        masks = video.pixel_masks()
        assert masks.shape == (len(UCSD_LABELS[name]), H, W) and masks.dtype == bool
        expected = np.stack([_mask(k) if (label or k == 0) else np.zeros((H, W), bool)
                             for k, label in enumerate(UCSD_LABELS[name])])
        np.testing.assert_array_equal(masks, expected)
    # Frames: RGB uint8 of the native size, the grey tif in all three channels, in file order.
    frame = dataset.train[1].frame(2)  # Train002/003.tif: the 5 + 3 = 8th image written
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(frame[..., c], _grey_frame(8))
    assert dataset.test[0].frame_size == (H, W)


def test_ucsd_official_layout(tmp_path):
    root = _make_ucsd(tmp_path / "UCSD_Anomaly_Dataset.v1p2")
    _check_ucsd(open_dataset("ped2", root), root)


def test_ucsd_official_from_the_folder_above(tmp_path):
    top = tmp_path / "UCSD_Anomaly_Dataset.v1p2"
    root = _make_ucsd(top)
    # The tarball's top level holds UCSDped1 and UCSDped2: asking for ped2 must find UCSDped2, whatever
    # order the file system lists them in.
    _check_ucsd(open_dataset("ped2", top), root)
    # Also two levels up (the folder the archive was unpacked into).
    _check_ucsd(open_dataset("ped2", tmp_path), root)


def test_ucsd_official_labels_from_masks_without_m_file(tmp_path):
    root = _make_ucsd(tmp_path)
    (root / "Test" / "UCSDped2.m").unlink()
    dataset = open_dataset("ped2", root)
    for video, name in zip(dataset.test, UCSD_TEST):
        expected = [1 if (label or k == 0) else 0 for k, label in enumerate(UCSD_LABELS[name])]
        np.testing.assert_array_equal(video.labels, expected)


def test_ucsd_m_file_with_the_wrong_video_count(tmp_path):
    root = _make_ucsd(tmp_path)
    (root / "Test" / "UCSDped2.m").write_text("TestVideoFile{end+1}.gt_frame = [3:6];\n")
    with pytest.raises(SSMTLError, match="UCSDped2.m lists 1 test videos"):
        open_dataset("ped2", root)


# -- official CUHK Avenue ---------------------------------------------------------------------------

AVENUE_TRAIN = {"01": 30, "02": 24}
AVENUE_TEST = {"01": 36}
AVENUE_ABNORMAL = range(10, 20)  # 0-based frames of test video 01 with a non-empty mask


def _make_avenue(root: Path) -> Path:
    for folder, videos in (("training_videos", AVENUE_TRAIN), ("testing_videos", AVENUE_TEST)):
        for name, count in videos.items():
            _write_avi(root / folder / f"{name}.avi", [_colour_frame(i) for i in range(count)])
    mask_dir = root / "ground_truth_demo" / "testing_label_mask"
    mask_dir.mkdir(parents=True)
    for name, count in AVENUE_TEST.items():
        # volLabel is a 1 x T MATLAB cell of H x W masks, as in the official files.
        cells = np.empty((1, count), dtype=object)
        for i in range(count):
            cells[0, i] = (_mask(i) if i in AVENUE_ABNORMAL else np.zeros((H, W), bool)).astype(np.uint8)
        scipy.io.savemat(str(mask_dir / f"{int(name)}_label.mat"), {"volLabel": cells})
    return root


@pytest.fixture(scope="module")
def avenue(tmp_path_factory) -> Path:
    return _make_avenue(tmp_path_factory.mktemp("avenue") / "Avenue Dataset")


def test_avenue_layout_counts_labels_and_masks(avenue):
    dataset = open_dataset("avenue", avenue)
    assert dataset.layout == "avenue_official"
    assert [v.name for v in dataset.train] == list(AVENUE_TRAIN)
    assert [v.num_frames for v in dataset.train] == list(AVENUE_TRAIN.values())
    assert [v.num_frames for v in dataset.test] == list(AVENUE_TEST.values())
    video = dataset.test[0]
    expected = np.zeros(AVENUE_TEST["01"], np.uint8)
    expected[list(AVENUE_ABNORMAL)] = 1
    np.testing.assert_array_equal(video.labels, expected)
    masks = video.pixel_masks()
    assert masks.shape == (AVENUE_TEST["01"], H, W)
    np.testing.assert_array_equal(masks[12], _mask(12))
    assert not masks[25].any()
    assert dataset.summary()["test"] == {"videos": 1, "frames": 36, "abnormal_frames": 10}
    frame = video.frame(0)
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8


def test_avenue_sequential_reads_never_redecode_from_the_start(avenue, monkeypatch):
    path = avenue / "testing_videos" / "01.avi"
    reference = _decode_all(path)
    assert len(reference) == AVENUE_TEST["01"]
    assert not np.array_equal(reference[5], reference[6]), "the fabricated frames must differ"

    opens: list[str] = []
    real_capture = cv2.VideoCapture

    def counting_capture(*args, **kwargs):
        opens.append(str(args[0]))
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(layouts.cv2, "VideoCapture", counting_capture)
    source = VideoFileSource(path)
    opened_by_init = len(opens)
    assert source.num_frames == len(reference)

    # Reading every frame in order opens the file once and moves one frame per read.
    for i in range(source.num_frames):
        np.testing.assert_array_equal(source.read(i), reference[i])
        assert source._position == i + 1
    assert len(opens) == opened_by_init + 1

    # iter() continues the same way; skipping forwards grabs without reopening.
    source2 = VideoFileSource(path)
    before = len(opens)
    got = [(i, f) for i, f in source2.iter(3, 9)]
    assert [i for i, _ in got] == list(range(3, 9))
    for i, frame in got:
        np.testing.assert_array_equal(frame, reference[i])
    np.testing.assert_array_equal(source2.read(20), reference[20])
    assert len(opens) == before + 1

    # A backwards jump reopens the file once and still returns the right frame.
    np.testing.assert_array_equal(source2.read(4), reference[4])
    assert len(opens) == before + 2
    assert source2._position == 5
    np.testing.assert_array_equal(source2.read(5), reference[5])
    assert len(opens) == before + 2


def test_avenue_missing_mask_file_is_a_clear_error(tmp_path):
    root = _make_avenue(tmp_path / "avenue")
    (root / "ground_truth_demo" / "testing_label_mask" / "1_label.mat").unlink()
    dataset = open_dataset("avenue", root)
    with pytest.raises(SSMTLError, match="1_label.mat"):
        dataset.test[0].labels  # noqa: B018


# -- official ShanghaiTech --------------------------------------------------------------------------


def _make_shanghaitech(root: Path) -> Path:
    _write_avi(root / "training" / "videos" / "01_001.avi", [_colour_frame(i) for i in range(12)])
    _write_avi(root / "training" / "videos" / "02_003.avi", [_colour_frame(i + 5) for i in range(9)])
    frames = root / "testing" / "frames" / "01_0014"
    frames.mkdir(parents=True)
    for i in range(7):
        assert cv2.imwrite(str(frames / f"{i:03d}.jpg"), _colour_frame(i))
    (root / "testing" / "test_frame_mask").mkdir(parents=True)
    (root / "testing" / "test_pixel_mask").mkdir(parents=True)
    np.save(root / "testing" / "test_frame_mask" / "01_0014.npy", np.array([0, 0, 1, 1, 1, 0, 0]))
    masks = np.stack([_mask(i) if 2 <= i <= 4 else np.zeros((H, W), bool) for i in range(7)]).astype(np.uint8)
    np.save(root / "testing" / "test_pixel_mask" / "01_0014.npy", masks)
    return root


def test_shanghaitech_layout(tmp_path):
    root = _make_shanghaitech(tmp_path / "shanghaitech")
    dataset = open_dataset("shanghaitech", root)
    assert dataset.layout == "shanghaitech_official"
    assert [v.name for v in dataset.train] == ["01_001", "02_003"]
    assert [v.num_frames for v in dataset.train] == [12, 9]
    assert isinstance(dataset.train[0].source, VideoFileSource)
    assert [v.name for v in dataset.test] == ["01_0014"]
    video = dataset.test[0]
    assert video.num_frames == 7 and video.frame_size == (H, W)
    np.testing.assert_array_equal(video.labels, [0, 0, 1, 1, 1, 0, 0])
    masks = video.pixel_masks()
    assert masks.dtype == bool and masks.shape == (7, H, W)
    np.testing.assert_array_equal(masks[3], _mask(3))
    assert dataset.summary()["test"] == {"videos": 1, "frames": 7, "abnormal_frames": 3}
    np.testing.assert_array_equal(dataset.train[0].frame(4), _decode_all(dataset.train[0].source.path)[4])


# -- the common jpg layout --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "tiny", size="tiny", seed=0, progress=False)


def test_jpg_layout_with_concatenated_labels_and_npz_masks(tiny):
    meta = json.loads((tiny / "dataset.json").read_text())
    dataset = open_dataset("synthetic", tiny)
    assert dataset.layout == "jpg_frames"
    assert {v.name: v.num_frames for v in dataset.train} == meta["train_videos"]
    assert {v.name: v.num_frames for v in dataset.test} == meta["test_videos"]
    assert dataset.test[0].frame_size == tuple(meta["frame_size"])
    concatenated = np.load(tiny / "ground_truth" / "frame_labels.npy")
    np.testing.assert_array_equal(np.concatenate([v.labels for v in dataset.test]), concatenated)
    with np.load(tiny / "ground_truth" / "pixel_masks.npz") as npz:
        for i, video in enumerate(dataset.test):
            masks = video.pixel_masks()
            np.testing.assert_array_equal(masks, npz[f"Test{i + 1:03d}"])
            np.testing.assert_array_equal(masks.any(axis=(1, 2)), video.labels.astype(bool))
    summary = dataset.summary()
    assert summary["test"]["abnormal_frames"] == int(concatenated.sum())
    assert summary["train"]["frames"] == sum(meta["train_videos"].values())
    assert dataset.tracks_fn is not None


def _make_jpg_tree(root: Path, train: dict[str, int], test: dict[str, int], grey: bool = False) -> Path:
    """PNG frames of :func:`_colour_frame` (grey ones with ``grey``), without a label file."""
    def frame(i: int) -> np.ndarray:
        colour = _colour_frame(i)
        return cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) if grey else colour

    return jpg_tree(root, train, test, labels=False, frame=frame, suffix=".png")


def test_jpg_layout_with_per_video_label_files(tmp_path):
    root = _make_jpg_tree(tmp_path / "ds", {"01": 4}, {"01": 5, "02": 3})
    labels_dir = root / "ground_truth" / "frame_labels"
    labels_dir.mkdir(parents=True)
    np.save(labels_dir / "01.npy", np.array([0, 1, 1, 0, 0]))
    np.save(labels_dir / "02.npy", np.array([1, 1, 1]))
    dataset = open_dataset("ped2", root)
    assert dataset.layout == "jpg_frames"
    np.testing.assert_array_equal(dataset.test[0].labels, [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(dataset.test[1].labels, [1, 1, 1])
    assert dataset.summary()["test"] == {"videos": 2, "frames": 8, "abnormal_frames": 5}
    # One label too many for video 02: a clear error naming the video's folder.
    np.save(labels_dir / "02.npy", np.array([1, 1, 1, 0]))
    with pytest.raises(SSMTLError, match="has 3 frames but its ground truth lists 4"):
        open_dataset("ped2", root).test[1].labels  # noqa: B018
    # A missing per-video file is named.
    (labels_dir / "02.npy").unlink()
    with pytest.raises(SSMTLError, match="02.npy"):
        open_dataset("ped2", root)


def test_jpg_layout_with_matlab_ranges(tmp_path):
    root = _make_jpg_tree(tmp_path / "ds", {"01": 2}, {"01": 5, "02": 4})
    (root / "ground_truth").mkdir()
    (root / "ground_truth" / "UCSDped2.m").write_text(
        "TestVideoFile = {};\nTestVideoFile{end+1}.gt_frame = [2:3];\nTestVideoFile{end+1}.gt_frame = [1:4];\n")
    dataset = open_dataset("ped2", root)
    np.testing.assert_array_equal(dataset.test[0].labels, [0, 1, 1, 0, 0])
    np.testing.assert_array_equal(dataset.test[1].labels, [1, 1, 1, 1])


def test_wrong_layout_and_missing_root(tmp_path):
    with pytest.raises(SSMTLError, match="does not exist"):
        open_dataset("ped2", tmp_path / "nowhere")
    (tmp_path / "junk" / "videos").mkdir(parents=True)
    with pytest.raises(SSMTLError, match="does not look like a ped2 dataset"):
        open_dataset("ped2", tmp_path / "junk")


# -- the real UCSD Ped2 copy in ../shared -----------------------------------------------------------


@pytest.mark.realdata
def test_real_ped2_info(capsys):
    if not (PED2 / "training" / "frames").is_dir():
        pytest.skip(f"real UCSD Ped2 not found at {PED2} (a fresh clone has no ../shared)")
    assert main(["info", "--dataset", "ped2", "--root", str(PED2), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"] == {"videos": 16, "frames": 2550}
    assert summary["test"] == {"videos": 12, "frames": 2010, "abnormal_frames": 1648}
    assert summary["layout"] == "jpg_frames"
    assert summary["frame_size"] == [240, 360]


@pytest.mark.realdata
def test_real_ped2_labels_agree_with_the_official_ranges():
    if not (PED2 / "ground_truth" / "UCSDped2.m").is_file():
        pytest.skip(f"real UCSD Ped2 not found at {PED2} (a fresh clone has no ../shared)")
    dataset = open_dataset("ped2", PED2)
    ranges = layouts._parse_matlab_ranges(PED2 / "ground_truth" / "UCSDped2.m")
    assert len(ranges) == 12
    for video, video_ranges in zip(dataset.test, ranges):
        np.testing.assert_array_equal(video.labels, layouts._labels_from_ranges(video_ranges, video.num_frames))


# -- load_frames ------------------------------------------------------------------------------------


def test_load_frames_keeps_one_channel_for_grey_and_three_for_colour(tmp_path):
    grey = open_dataset("ped2", _make_jpg_tree(tmp_path / "grey", {"01": 6}, {"01": 3}, grey=True))
    frames = load_frames(grey.train[0])
    assert frames.shape == (6, H, W, 1) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[4, ..., 0], grey.train[0].frame(4)[..., 0])

    colour = open_dataset("ped2", _make_jpg_tree(tmp_path / "colour", {"01": 6}, {"01": 3}))
    frames = load_frames(colour.train[0])
    assert frames.shape == (6, H, W, 3)
    np.testing.assert_array_equal(frames[4], colour.train[0].frame(4))
    assert not np.array_equal(frames[..., 0], frames[..., 1])


def test_load_frames_memmap_cache_is_reused(avenue, tmp_path, monkeypatch):
    # A private copy: the cache must not depend on what other tests did with the shared fixture.
    # The raw store (a memory map of the pixels); the default JPEG-tile store is tests/test_frames.py's.
    root = tmp_path / "avenue"
    shutil.copytree(avenue, root)
    video = open_dataset("avenue", root).train[0]
    cache = tmp_path / "frames_cache"
    reference = np.stack(_decode_all(video.source.path))

    frames = load_frames(video, cache_dir=cache, store="raw")
    target = cache / "train" / f"{video.name}.npy"
    assert target.is_file()
    assert isinstance(frames, np.memmap)
    assert frames.shape == (AVENUE_TRAIN["01"], H, W, 3)
    np.testing.assert_array_equal(frames, reference)
    # The frames and their input signature (the video file's size and time), no temporary file.
    assert sorted(p.name for p in target.parent.iterdir()) == [f"{video.name}.json", target.name]

    os.utime(target, (1_000_000_000, 1_000_000_000))

    def no_decoding(*args, **kwargs):
        raise AssertionError("load_frames decoded the whole video again instead of reusing its cache")

    monkeypatch.setattr("ssmtl_core.data.frames._fill", no_decoding)
    again = load_frames(video, cache_dir=cache, store="raw")
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, reference)
    assert target.stat().st_mtime == 1_000_000_000

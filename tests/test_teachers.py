"""Tests of ssmtl_core.teachers: the offline ImageNet teacher, the ResNet-50 loading path, the logit cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ssmtl_core.data.layouts import Dataset, Video
from ssmtl_core.errors import SSMTLError
from ssmtl_core.io import load_npz
from ssmtl_core.samples import crop_object
from ssmtl_core.teachers import TeacherCache, load_teacher

BUS = Path(__file__).resolve().parents[1].parent / "shared" / "images" / "bus.jpg"
# ImageNet classes a bus photo may fairly be called: minibus, school bus, trolleybus, police van, passenger car,
# minivan, streetcar.
BUS_LIKE = {654, 779, 874, 734, 705, 656, 829}


@pytest.fixture(scope="module")
def lite0():
    return load_teacher("efficientnet_lite0")


def test_efficientnet_lite0_classifies_the_bus(lite0):
    if not BUS.is_file():
        pytest.skip(f"{BUS} is absent (a fresh clone has no ../shared)")
    image = cv2.cvtColor(cv2.imread(str(BUS)), cv2.COLOR_BGR2RGB)
    height = image.shape[0]
    whole = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    bus_region = cv2.resize(image[int(0.2 * height):int(0.75 * height)], (224, 224), interpolation=cv2.INTER_AREA)
    logits = lite0.logits(np.stack([whole, bus_region]))
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    for row in logits:
        top5 = np.argsort(-row)[:5]
        assert top5[0] in BUS_LIKE, f"top-1 {top5[0]} is not a bus-like class (top-5 {top5.tolist()})"
        assert 654 in top5, f"minibus (654) not in the top-5 {top5.tolist()}"
        # pre-softmax logits, not probabilities
        assert row.max() > 1.0 and row.min() < 0.0
    assert lite0.name == "efficientnet_lite0" and lite0.size == 224
    assert lite0.key.startswith("efficientnet_lite0-") and lite0.key.endswith("-224")


def test_resnet50_loads_from_a_saved_state_dict(tmp_path):
    torch.manual_seed(0)
    from torchvision.models import resnet50

    original = resnet50().eval()
    path = tmp_path / "resnet50_random.pt"
    torch.save(original.state_dict(), path)
    teacher = load_teacher("resnet50", size=64, weights=path)
    assert teacher.name == "resnet50" and teacher.size == 64
    assert teacher.mean == (0.485, 0.456, 0.406) and teacher.std == (0.229, 0.224, 0.225)
    crops = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    got = teacher.logits(crops)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(teacher.mean).view(1, 3, 1, 1)) / torch.tensor(teacher.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = original(x).numpy()
    assert got.shape == (3, 1000)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    # the cache key names the weights file (its hash) and the input size
    assert teacher.key.startswith("resnet50-") and teacher.key.endswith("-64")


def test_teacher_errors(tmp_path):
    with pytest.raises(SSMTLError, match="unknown teacher"):
        load_teacher("vgg16")
    with pytest.raises(SSMTLError, match="not found"):
        load_teacher("resnet50", weights=tmp_path / "missing.pt")


# ----------------------------------------------------------------------------------------------------------
# the cache
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """A stand-in frame source: only what Dataset.cache_id and TeacherCache look at."""

    path: Path
    num_frames: int
    frame_size: tuple[int, int] = (48, 64)


def _dataset(tmp_path: Path) -> tuple[Dataset, Video]:
    video = Video("01", "train", _Source(tmp_path / "01", 30))
    return Dataset("synthetic", tmp_path, "jpg_frames", [video], []), video


def test_teacher_cache_is_hit_on_rerun_and_computes_only_missing_rows(tmp_path, lite0):
    small = load_teacher("efficientnet_lite0", size=64)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(30, 48, 64, 3), dtype=np.uint8)
    n = 12
    frame_index = rng.integers(0, 30, size=n)
    x1 = rng.integers(0, 30, size=n)
    y1 = rng.integers(0, 20, size=n)
    boxes = np.stack([x1, y1, x1 + 20, y1 + 25], axis=1).astype(np.float32)
    rows = np.arange(100, 100 + n)
    dataset, video = _dataset(tmp_path)
    cache_root = tmp_path / "cache"

    cache = TeacherCache(cache_root, dataset, small, "motion-abc")
    first = cache.logits(video, frames, frame_index[:5], boxes[:5], rows[:5])
    assert (cache.computed, cache.hits) == (5, 0)
    assert cache.path(video).is_file()
    assert cache.path(video).is_relative_to(cache_root / dataset.cache_id / "teachers" / small.key / "motion-abc")

    # a new run: everything from the cache
    again = TeacherCache(cache_root, dataset, small, "motion-abc")
    second = again.logits(video, frames, frame_index[:5], boxes[:5], rows[:5])
    assert (again.computed, again.hits) == (0, 5)
    np.testing.assert_array_equal(first, second)

    # more rows, asked in another order: only the 7 new ones are computed
    order = rng.permutation(n)
    more = again.logits(video, frames, frame_index[order], boxes[order], rows[order])
    assert (again.computed, again.hits) == (7, 10)
    stored = load_npz(again.path(video))
    np.testing.assert_array_equal(stored["rows"], rows)  # sorted, no duplicates
    assert stored["logits"].dtype == np.float16

    # values line up with the rows asked for, and are the teacher's logits of the middle crops
    crops = np.stack([crop_object(frames, np.array([f]), b, 64)[0] for f, b in zip(frame_index, boxes)])
    direct = small.logits(crops)
    np.testing.assert_allclose(more, direct[order], rtol=1e-2, atol=2e-2)
    np.testing.assert_array_equal(more[np.argsort(order)][:5], first)

    # another detector's rows are another cache
    other = TeacherCache(cache_root, dataset, small, "yolo-xyz")
    other.logits(video, frames, frame_index[:2], boxes[:2], rows[:2])
    assert (other.computed, other.hits) == (2, 0)
    # and another teacher (input size) too
    big = TeacherCache(cache_root, dataset, lite0, "motion-abc")
    big.logits(video, frames, frame_index[:1], boxes[:1], rows[:1])
    assert (big.computed, big.hits) == (1, 0)

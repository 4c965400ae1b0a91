"""The project's YOLO path against ultralytics' own prediction, on exports made here (no ../shared needed).

Every Ped2 number rests on ``ssmtl_core.yolo``: the export's graph cut before its decoding tail, the
letterbox, the DFL decode in NumPy and the class-wise NMS. The real int8 exports live in ../shared, so a fresh
clone tested none of it. ultralytics builds YOLOv8n and YOLO11n from their model descriptions without any
download and exports them to OpenVINO (fp32): with untrained weights the boxes mean nothing, but both paths
must compute the same ones.

The untrained networks are made to say something: their BatchNorm statistics are set from one drawn frame
(PyTorch's default initialisation otherwise fades to a constant output), and the class-head bias is set so
that about 100 anchors of that frame pass ``CONF`` at 640x640.

What each side does, and so what is compared:

* ultralytics predicts a static export at its own 640x640 only; at the 448x640 rectangle (``rect=True``) it
  needs a dynamic export of the same weights, while our detector runs the static export cut before its
  decoding tail, reshaped, decoded in NumPy. Both run OpenVINO in fp32 here (its CPU default is bf16 on AMX
  CPUs, where the exported tail decodes boxes in bf16).
* ultralytics runs NMS on the boxes in input pixels and clips them to the frame afterwards; ours maps the
  boxes to the frame, clips them, drops those under one pixel, then runs NMS. Clipping changes the IoU of
  boxes crossing the frame's edge, so the two final sets differ there. Hence two comparisons: every
  candidate (NMS at IoU 1.0 suppresses nothing) against ultralytics' prediction, exactly; and our NMS
  against ultralytics' own ``non_max_suppression`` run on those same clipped candidates.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("ultralytics")

from ssmtl_core.config import DetectConfig  # noqa: E402
from ssmtl_core.detect import make_detector  # noqa: E402
from ssmtl_core.yolo import MAX_BOXES, letterbox, letterbox_plan  # noqa: E402

pytestmark = pytest.mark.slow

MODELS = ("yolov8n", "yolo11n")
CONF = 0.05  # low, as untrained class scores are
IOU = 0.7  # ultralytics' and DetectConfig's default
CANDIDATES = 100  # anchors of the frame above CONF at 640x640, set through the class-head bias
RECIPE = 1  # part of the export cache's name: bump it when _build changes
FRAME_SIZE = (240, 360)  # Ped2's


def _frame() -> np.ndarray:
    """A Ped2-sized RGB frame with content: a smooth colour field and a few filled rectangles."""
    rng = np.random.default_rng(0)
    frame = cv2.resize(rng.integers(0, 256, (12, 18, 3), dtype=np.uint8), FRAME_SIZE[::-1],
                       interpolation=cv2.INTER_CUBIC)
    for _ in range(8):
        x, y = int(rng.integers(0, 330)), int(rng.integers(0, 200))
        w, h = int(rng.integers(10, 60)), int(rng.integers(20, 60))
        cv2.rectangle(frame, (x, y), (x + w, y + h), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return frame


def _build(name: str, folder: Path) -> None:
    """Build ``name`` from its model description, give it BatchNorm statistics and a class bias from the
    frame, and export it to ``folder / static_openvino_model`` and ``folder / dynamic_openvino_model``."""
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    yolo = YOLO(f"{name}.yaml")
    net, head = yolo.model, yolo.model.model[-1]
    assert not getattr(head, "end2end", False), f"{name} should end in NMS-based detection heads"
    batch = torch.from_numpy(letterbox([[_frame()]], letterbox_plan(FRAME_SIZE, (640, 640))))
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = 1.0  # the running statistics become this one batch's
    class_convs = [branch[-1] for branch in head.cv3]
    with torch.no_grad():
        net.train()
        net(batch)
        net.eval()
        for conv in class_convs:
            conv.bias.zero_()
        out = net(batch)
        scores = (out[0] if isinstance(out, (list, tuple)) else out)[0, 4:].double()
        best = torch.logit(scores).max(dim=0).values.sort(descending=True).values
        # A threshold in the widest gap among ranks CANDIDATES +- 20: no anchor sits near CONF.
        ranks = torch.arange(CANDIDATES - 20, CANDIDATES + 20)
        rank = int(ranks[(best[ranks] - best[ranks + 1]).argmax()])
        bias = float(torch.logit(torch.tensor(CONF, dtype=torch.float64)) - (best[rank] + best[rank + 1]) / 2)
        for conv in class_convs:
            conv.bias.fill_(bias)
    with contextlib.chdir(folder):  # ultralytics exports into the working directory
        for dynamic in (False, True):
            exported = yolo.export(format="openvino", imgsz=640, dynamic=dynamic, verbose=False)
            os.rename(exported, f"{'dynamic' if dynamic else 'static'}_openvino_model")


@pytest.fixture(scope="session")
def exports() -> dict[str, Path]:
    """Per model, the folder holding its two exports; cached under the system temp folder, keyed by the
    versions that make them and RECIPE, so that a rerun reuses them (about 30 s to build on 2 cores)."""
    import openvino
    import torch
    import ultralytics

    versions = f"u{ultralytics.__version__}-ov{openvino.__version__.split('-')[0]}-t{torch.__version__}"
    cache = Path(tempfile.gettempdir()) / f"ssmtl-test-yolo-exports-{versions}-r{RECIPE}"
    folders = {}
    offline = os.environ.get("YOLO_OFFLINE")
    os.environ["YOLO_OFFLINE"] = "1"  # nothing here needs the network: fail rather than try it
    try:
        for name in MODELS:
            folder = cache / name
            if not folder.is_dir():
                cache.mkdir(parents=True, exist_ok=True)
                building = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
                _build(name, building)
                try:
                    building.rename(folder)  # atomic: a folder that exists is complete
                except OSError:  # another session finished first
                    shutil.rmtree(building, ignore_errors=True)
            folders[name] = folder
    finally:
        if offline is None:
            os.environ.pop("YOLO_OFFLINE", None)
        else:
            os.environ["YOLO_OFFLINE"] = offline
    return folders


@pytest.fixture(autouse=True)
def _fp32(monkeypatch):
    """Every OpenVINO model compiled in these tests, ours and ultralytics', runs in fp32."""
    import openvino as ov

    compile_model = ov.Core.compile_model

    def fp32(self, model, device_name=None, config=None, **kwargs):
        return compile_model(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"},
                             **kwargs)

    monkeypatch.setattr(ov.Core, "compile_model", fp32)


@functools.cache
def _ultralytics_candidates(folder: Path, rect: bool) -> dict[str, np.ndarray]:
    """ultralytics' prediction on the frame with NMS at IoU 1.0 (every candidate kept), with what its NMS saw.

    Returns:
        ``raw``: the network output (4 + 80, N) ultralytics post-processed; ``boxes`` (x1, y1, x2, y2 in
        frame pixels, clipped), ``scores``, ``classes`` of its results, and ``class_scores`` (M, 80): the raw
        output's 80 scores at the anchor of each result.
    """
    from ultralytics import YOLO
    from ultralytics.utils import nms

    seen = {}
    non_max_suppression = nms.non_max_suppression

    def recording(prediction, *args, **kwargs):
        output, kept = non_max_suppression(prediction, *args, **{**kwargs, "return_idxs": True})
        seen["raw"], seen["kept"] = prediction[0] if isinstance(prediction, (list, tuple)) else prediction, kept
        return output

    export = folder / ("dynamic_openvino_model" if rect else "static_openvino_model")
    nms.non_max_suppression = recording
    try:
        bgr = np.ascontiguousarray(_frame()[..., ::-1])  # ultralytics reads numpy images as OpenCV's BGR
        (result,) = YOLO(str(export), task="detect").predict(bgr, imgsz=640, conf=CONF, iou=1.0, rect=rect,
                                                             verbose=False)
    finally:
        nms.non_max_suppression = non_max_suppression
    raw = seen["raw"][0].float().numpy()
    return {"raw": raw, "boxes": result.boxes.xyxy.numpy(), "scores": result.boxes.conf.numpy(),
            "classes": result.boxes.cls.numpy().astype(int), "class_scores": raw[4:, seen["kept"][0].numpy()].T}


def _match(ours: np.ndarray, reference: np.ndarray, atol: float) -> np.ndarray:
    """For each reference box, the index of our box with the same corners (within ``atol``); one to one."""
    assert len(ours) == len(reference), f"{len(ours)} boxes against ultralytics' {len(reference)}"
    distance = np.abs(reference[:, None, :] - ours[None, :, :]).max(axis=2)
    order = distance.argmin(axis=1)
    worst = distance[np.arange(len(reference)), order]
    assert worst.max(initial=0) <= atol, f"a box is {worst.max():.4f} px away from ultralytics' nearest"
    assert len(set(order.tolist())) == len(order), "two of ultralytics' boxes matched one of ours"
    return order


def _detect(folder: Path, rect: bool, iou: float):
    detector = make_detector(DetectConfig(detector="yolo", weights=str(folder / "static_openvino_model"),
                                          conf=CONF, iou=iou, imgsz=640, rect=rect))
    frame = _frame()
    plan = detector.plan(frame.shape[:2])
    (detections,) = detector.detect_frames([frame])
    return detector, plan, detections


@pytest.mark.parametrize("rect", [False, True], ids=["640x640", "448x640"])
@pytest.mark.parametrize("name", MODELS)
def test_every_candidate_matches_ultralytics_prediction(exports, name, rect):
    """Same network output, and with NMS at IoU 1.0 the same boxes, scores, classes and 80 class scores.

    At 448x640 our output comes from the static export cut before its tail and decoded in NumPy, ultralytics'
    from the dynamic export's own tail: they agree to 1e-3 px and 1e-6 in score (fp32 rounding of the two
    graphs). ultralytics keeps boxes that clipping to the frame flattened (in the grey padding); ours drops
    boxes under one pixel, so those are left out of the reference. Our class scores are stored as float16.
    """
    detector, plan, ours = _detect(exports[name], rect, iou=1.0)
    reference = _ultralytics_candidates(exports[name], rect)
    assert plan.input_shape == ((448, 640) if rect else (640, 640))

    raw = detector.infer(letterbox([[_frame()]], plan))[0]
    assert raw.shape == reference["raw"].shape, "ultralytics letterboxed the frame to another input shape"
    np.testing.assert_allclose(raw[:4], reference["raw"][:4], atol=1e-3)
    np.testing.assert_allclose(raw[4:], reference["raw"][4:], atol=1e-6)

    boxes = reference["boxes"]
    visible = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
    assert 50 <= visible.sum() < MAX_BOXES, f"{visible.sum()} candidates: the bias recipe needs a look"
    order = _match(ours.boxes, boxes[visible], atol=1e-3)
    np.testing.assert_array_equal(ours.classes[order], reference["classes"][visible])
    np.testing.assert_allclose(ours.scores[order], reference["scores"][visible], atol=1e-6)
    np.testing.assert_allclose(ours.class_scores[order].astype(np.float32), reference["class_scores"][visible],
                               rtol=1e-3, atol=1e-7)  # float16: 11 significant bits
    assert np.all(ours.scores > CONF)


@pytest.mark.parametrize("rect", [False, True], ids=["640x640", "448x640"])
@pytest.mark.parametrize("name", MODELS)
def test_class_wise_nms_matches_ultralytics_nms_on_the_same_boxes(exports, name, rect):
    """Our NMS at IoU 0.7 keeps what ultralytics' ``non_max_suppression`` keeps from the same clipped
    candidates: the same boxes in the same order (best first), within each class only.

    The candidates hold overlapping pairs of different classes, so a class-agnostic NMS would fail here.
    """
    import torch
    from ultralytics.utils.nms import non_max_suppression

    _, _, ours = _detect(exports[name], rect, iou=IOU)
    reference = _ultralytics_candidates(exports[name], rect)
    boxes = reference["boxes"]
    visible = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
    boxes, class_scores = boxes[visible], reference["class_scores"][visible]
    xywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)
    prediction = torch.from_numpy(np.concatenate([xywh, class_scores], axis=1).T[None].astype(np.float32))
    (kept,) = non_max_suppression(prediction, CONF, IOU, max_det=MAX_BOXES)
    kept = kept.numpy()

    assert 10 <= len(kept) < len(boxes), f"NMS kept {len(kept)} of {len(boxes)} candidates"
    classes = reference["classes"][visible]
    iou = _pairwise_iou(boxes)
    assert np.any((iou > IOU) & (classes[:, None] != classes[None, :])), "no overlapping pair of two classes"

    np.testing.assert_allclose(ours.boxes, kept[:, :4], atol=1e-3)
    np.testing.assert_allclose(ours.scores, kept[:, 4], atol=1e-6)
    np.testing.assert_array_equal(ours.classes, kept[:, 5].astype(int))


def _pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    top_left = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    return inter / (areas[:, None] + areas[None, :] - inter)

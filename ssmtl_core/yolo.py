"""The YOLO detector (step 1 of the method): a COCO detector whose boxes keep all 80 class scores.

The detector is a chain of small steps, each a function or a method below:

1. **Backend**: :class:`OpenVinoBackend` runs an exported ``*_openvino_model`` folder on the CPU;
   :class:`TorchBackend` runs ultralytics ``.pt`` weights through PyTorch. Both return the raw network
   output ``(B, 4 + C, N)``: per anchor a box (centre x, centre y, width, height in input pixels) and the
   C class scores.
2. **Input shape** (:meth:`YoloDetector.input_shape_for`): ``imgsz`` x ``imgsz`` (the export's own
   640x640); with ``rect`` the smallest multiple-of-32 rectangle holding the frame scaled to fit it; with
   ``imgsz=0`` the frame's native size rounded up to a multiple of 32 (:func:`native_input_shape`).
3. **Letterbox** (:func:`letterbox_plan`, :func:`letterbox`): every frame resized by one factor, centred in
   its cell of the input, grey (114) around it; several frames share one input when ``tiles`` > 1.
4. **Inference**: the backend's ``infer``.
5. **Raw decode** (:func:`decode_heads`, only for an export run at another size than its own): the
   per-scale head tensors turned into the raw output (DFL softmax -> distances -> boxes, sigmoid -> scores).
6. **Selection** (:meth:`YoloDetector.select`): the confidence threshold, boxes mapped back to their frame,
   and :func:`class_wise_nms`.

Native-size inference on a static export. The shared exports have a static 1x3x640x640 input, and their
box-decoding tail (the DFL head) has the 8400 anchors of 640x640 baked into constants, so the whole graph
cannot be reshaped. :func:`cut_before_decoding` makes a new model whose outputs are the three detection
heads (per scale ``64`` DFL box logits + ``C`` class logits, strides 8, 16, 32), a part with no shape
constants in YOLOv8; YOLO11's attention block (C2PSA) has three, which :func:`free_spatial_reshapes`
rewrites for the new size. The cut model is reshaped to the input wanted and :func:`decode_heads` does the
tail's work in NumPy; at 640x640 the two paths agree to float precision (``tests/test_yolo.py``).

A smaller input is faster but shows the network smaller objects, and the scale decides what a small COCO
detector finds: on Ped2, whose people are 20-40 pixels tall, YOLOv8n misses many of them near 1x that it
finds at 640's 1.78x (``bench/detect.py`` measures both). So every input is filled: the frame is scaled up
to the input's edges (1.07x into 256x384 for Ped2) rather than pasted at 1x inside grey padding, and
``rect`` keeps the 640 scale while dropping the padding rows of the square.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from .config import DetectConfig
from .data.layouts import Video
from .detections import COCO_CLASSES, Detections
from .errors import SSMTLError
from .io import file_sha256

STRIDE = 32  # the coarsest head's stride: every input side must be a multiple of it
DFL_BINS = 16  # distance bins per box side in the YOLOv8 / YOLO11 head
PAD_VALUE = 114  # ultralytics' letterbox grey
MAX_BOXES = 300  # per frame, after NMS (ultralytics' max_det)


# -- input shape and letterbox -------------------------------------------------------------------


def _round_up(value: float, multiple: int = STRIDE) -> int:
    return int(np.ceil(value / multiple) * multiple)


def tile_grid(tiles: int, frame_size: tuple[int, int]) -> tuple[int, int]:
    """The (rows, cols) layout of ``tiles`` frames inside one network input (wide frames stack vertically)."""
    if tiles == 1:
        return 1, 1
    if tiles == 2:
        return (2, 1) if frame_size[1] >= frame_size[0] else (1, 2)
    if tiles == 4:
        return 2, 2
    raise SSMTLError(f"detect.tiles must be 1, 2 or 4, not {tiles}.")


def native_input_shape(frame_size: tuple[int, int], tiles: int = 1) -> tuple[int, int]:
    """The smallest multiple-of-32 input (H, W) that holds ``tiles`` frames at their native size.

    Ped2's 240x360 frames give 256x384: 4.2x fewer pixels than 640x640, and the frame is enlarged by
    1/15 (384/360) instead of 16/9 (640/360).
    """
    rows, cols = tile_grid(tiles, frame_size)
    return _round_up(rows * frame_size[0]), _round_up(cols * frame_size[1])


@dataclass(frozen=True)
class LetterboxPlan:
    """Where the frames go inside one network input.

    Attributes:
        input_shape: (H, W) of the network input.
        frame_size: (H, W) of every frame.
        scale: the resize factor from frame pixels to input pixels.
        resized: (H, W) of a resized frame.
        offsets: the (x, y) of the top-left corner of each tile's resized frame in the input.
        cell: (H, W) of the cell each tile is centred in.
        cols: cells per row.
    """

    input_shape: tuple[int, int]
    frame_size: tuple[int, int]
    scale: float
    resized: tuple[int, int]
    offsets: tuple[tuple[int, int], ...]
    cell: tuple[int, int]
    cols: int

    def tile_of(self, centres: np.ndarray) -> np.ndarray:
        """The tile index of each (x, y) box centre in input pixels.

        A centre outside the input (a box reaching into the frame from beyond its edge) goes to the nearest
        tile, not to a tile that does not exist, where its box would be lost.
        """
        rows = np.clip(np.floor(centres[:, 1] / self.cell[0]), 0, len(self.offsets) // self.cols - 1)
        cols = np.clip(np.floor(centres[:, 0] / self.cell[1]), 0, self.cols - 1)
        return (rows * self.cols + cols).astype(int)

    def to_frame(self, boxes: np.ndarray, tile: int) -> np.ndarray:
        """x1, y1, x2, y2 boxes in input pixels -> pixels of the tile's frame, clipped to the frame.

        Each axis is divided by the factor the frame was actually resized by (the resized side is rounded to
        whole pixels, so it is not exactly ``scale``: 427 / 240 rows against 640 / 360 columns for Ped2 in
        640x640, 0.19 pixels at the frame's bottom), as ultralytics 8.4 maps its boxes back.
        """
        x0, y0 = self.offsets[tile]
        gain_x, gain_y = self.resized[1] / self.frame_size[1], self.resized[0] / self.frame_size[0]
        boxes = (boxes - np.array([x0, y0, x0, y0], np.float32)) / np.array([gain_x, gain_y, gain_x, gain_y],
                                                                             np.float32)
        height, width = self.frame_size
        return np.clip(boxes, 0, np.array([width, height, width, height], np.float32)).astype(np.float32)


def letterbox_plan(frame_size: tuple[int, int], input_shape: tuple[int, int], tiles: int = 1) -> LetterboxPlan:
    """Fit ``tiles`` frames of ``frame_size`` into ``input_shape``: one scale, each centred in its cell."""
    rows, cols = tile_grid(tiles, frame_size)
    cell_h, cell_w = input_shape[0] // rows, input_shape[1] // cols
    scale = min(cell_h / frame_size[0], cell_w / frame_size[1])
    new_h, new_w = round(frame_size[0] * scale), round(frame_size[1] * scale)
    offsets = tuple((c * cell_w + (cell_w - new_w) // 2, r * cell_h + (cell_h - new_h) // 2)
                    for r, c in (divmod(t, cols) for t in range(tiles)))
    return LetterboxPlan(tuple(input_shape), tuple(frame_size), scale, (new_h, new_w), offsets, (cell_h, cell_w),
                         cols)


def letterbox(groups: list[list[np.ndarray]], plan: LetterboxPlan) -> np.ndarray:
    """RGB uint8 frames, ``len(plan.offsets)`` or fewer per group -> a float32 batch (G, 3, H, W) in [0, 1]."""
    new_h, new_w = plan.resized
    canvases = np.full((len(groups), *plan.input_shape, 3), PAD_VALUE, np.uint8)
    for g, group in enumerate(groups):
        for (x0, y0), frame in zip(plan.offsets, group):
            if frame.shape[:2] != (new_h, new_w):
                frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            canvases[g, y0:y0 + new_h, x0:x0 + new_w] = frame
    return canvases.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


# -- raw decode and NMS ---------------------------------------------------------------------------


def anchor_points(grids: list[tuple[int, int]], strides: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The anchor centres (2, N) in grid units (cell + 0.5, x then y, row-major per scale) and their strides (N,)."""
    points, per_anchor = [], []
    for (h, w), stride in zip(grids, strides):
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5,
                             indexing="ij")
        points.append(np.stack([xs.ravel(), ys.ravel()]))
        per_anchor.append(np.full(h * w, stride, np.float32))
    return np.concatenate(points, axis=1), np.concatenate(per_anchor)


def dfl_distances(box_logits: np.ndarray) -> np.ndarray:
    """DFL box logits (B, 4 * 16, N) -> the expected distance (B, 4, N) of each side (left, top, right, bottom)
    from the anchor, in grid units: a softmax over the 16 bins, then its mean bin."""
    logits = box_logits.reshape(box_logits.shape[0], 4, DFL_BINS, -1)
    weights = np.exp(logits - logits.max(axis=2, keepdims=True))
    bins = np.arange(DFL_BINS, dtype=np.float32)[None, None, :, None]
    return (weights * bins).sum(axis=2) / weights.sum(axis=2)


def decode_heads(heads: list[np.ndarray], input_shape: tuple[int, int]) -> np.ndarray:
    """The detection heads -> the raw output (B, 4 + C, N) of the full graph, as the export's tail computes it.

    Args:
        heads: per scale (B, 64 + C, h, w): 64 DFL box logits, then C class logits (before the sigmoid).
        input_shape: (H, W) of the network input; each head's stride is H / h.

    Returns:
        Per anchor the box centre x, centre y, width, height in input pixels, then the C class scores.
    """
    batch = heads[0].shape[0]
    grids = [tuple(h.shape[2:]) for h in heads]
    strides = [input_shape[0] // g[0] for g in grids]
    flat = np.concatenate([h.reshape(batch, h.shape[1], -1) for h in heads], axis=2).astype(np.float32, copy=False)
    anchors, stride = anchor_points(grids, strides)
    distances = dfl_distances(flat[:, :4 * DFL_BINS])
    top_left = anchors - distances[:, :2]
    bottom_right = anchors + distances[:, 2:]
    boxes = np.concatenate([(top_left + bottom_right) / 2, bottom_right - top_left], axis=1) * stride
    scores = np.negative(flat[:, 4 * DFL_BINS:])  # sigmoid, in place: 1 / (1 + exp(-x))
    np.exp(scores, out=scores)
    scores += 1.0
    np.reciprocal(scores, out=scores)
    return np.concatenate([boxes, scores], axis=1)


def class_wise_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float,
                   max_boxes: int = MAX_BOXES) -> np.ndarray:
    """Indices of the boxes kept by non-maximum suppression within each class, best first."""
    import torch  # the NumPy detector loads torch only for its NMS
    from torchvision.ops import batched_nms

    if not len(boxes):
        return np.zeros(0, np.int64)
    kept = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), iou)
    return kept.numpy()[:max_boxes]


# -- OpenVINO: cut the export before its decoding tail ----------------------------------------------


def _source(node, index: int = 0):
    return node.input(index).get_source_output()


def _reshaped_heads(concat, channels: int | None = None) -> list | None:
    """The 4-D tensors (1, channels, h, w) that ``concat`` joins as ``Concat(Reshape(head) per scale)``, else None."""
    if concat.get_type_name() != "Concat" or concat.get_input_size() != 3:
        return None
    reshapes = [_source(concat, i).get_node() for i in range(3)]
    if any(r.get_type_name() != "Reshape" for r in reshapes):
        return None
    heads = [_source(r) for r in reshapes]
    shapes = [h.get_partial_shape() for h in heads]
    if any(len(s) != 4 or (channels is not None and s[1].get_length() != channels) for s in shapes):
        return None
    return heads


def _box_heads(node, max_nodes: int = 64) -> list | None:
    """The per-scale DFL box heads (1, 64, h, w) found walking up from ``node`` (the decoded boxes)."""
    queue, seen = [node], set()
    while queue and len(seen) < max_nodes:
        node = queue.pop(0)
        heads = _reshaped_heads(node, 4 * DFL_BINS)
        if heads is not None:
            return heads
        seen.add(node.get_name())
        queue += [n for n in (_source(node, i).get_node() for i in range(node.get_input_size()))
                  if n.get_name() not in seen and n.get_type_name() != "Constant"]
    return None


def head_outputs(model) -> list:
    """The per-scale head tensors (1, 64 + C, h, w) of an exported YOLOv8 / YOLO11 detection model.

    Two tails are known. Exports of ultralytics 8.1-8.3 (the shared int8 ones) end
    ``Concat(boxes, Sigmoid(Split(Concat(Reshape(head_i)))))`` with one (64 + C)-channel head per scale.
    Exports of ultralytics 8.4 keep the two branches apart: ``Concat(boxes(Concat(Reshape(box_i))),
    Sigmoid(Concat(Reshape(cls_i))))``; there each scale's 64 box and C class channels are joined here, so
    both give the same heads. Any other structure fails with a clear message.
    """
    import openvino.opset13 as ops  # optional: only exported folders need it

    concat = _source(model.output(0).get_node()).get_node()
    inputs = [_source(concat, i).get_node() for i in range(concat.get_input_size())]
    sigmoid = next((node for node in inputs if node.get_type_name() == "Sigmoid"), None)
    expected = ("Concat(boxes, Sigmoid(Split(Concat(Reshape(head) per scale)))) or Concat(boxes(Concat(Reshape("
                "box head) per scale)), Sigmoid(Concat(Reshape(class head) per scale)))")
    if concat.get_type_name() != "Concat" or sigmoid is None:
        raise SSMTLError(f"the export's output is not a YOLOv8/YOLO11 detection tail ({expected}).")
    below = _source(sigmoid).get_node()
    if below.get_type_name() in ("Split", "VariadicSplit"):  # one head per scale, split after the Concat
        heads = _reshaped_heads(_source(below).get_node())
    else:  # box and class heads apart: join each scale's pair
        classes = _reshaped_heads(below)
        boxes = next((found for node in inputs if node is not sigmoid
                      for found in [_box_heads(node)] if found is not None), None)
        heads = None
        if classes is not None and boxes is not None:
            pairs = list(zip(boxes, classes))
            if all(list(b.get_partial_shape())[2:] == list(c.get_partial_shape())[2:] for b, c in pairs):
                heads = [ops.concat([b, c], 1).output(0) for b, c in pairs]
    if heads is None:
        raise SSMTLError(f"the export's output is not a YOLOv8/YOLO11 detection tail ({expected}).")
    return heads


def cut_before_decoding(model):
    """A new ``ov.Model`` on the same input whose outputs are the three detection heads (no decoding tail)."""
    import openvino as ov  # optional: only exported folders need it

    return ov.Model(head_outputs(model), model.get_parameters(), "yolo_heads")


def free_spatial_reshapes(model, reference: tuple[int, int], input_shape: tuple[int, int]) -> list[str]:
    """Rewrite the Reshape constants that hold feature-map sizes of the ``reference`` input for ``input_shape``.

    YOLO11's attention block (C2PSA, stride 32) reshapes (1, C, h, w) to (1, heads, d, h * w) and back with
    h = w = 20 written as constants at 640x640; YOLOv8 has no such constant before its heads. A constant
    target is rewritten when its last dimension is the token count h * w, or its last two are (h, w), of one
    stride's feature map at the reference size. Call before reshaping the model's input.

    Returns:
        The names of the rewritten Reshape nodes.
    """
    import openvino.opset13 as ops  # optional: only exported folders need it

    changed = []
    for node in model.get_ordered_ops():
        target = _source(node, 1).get_node() if node.get_type_name() == "Reshape" else None
        if target is None or target.get_type_name() != "Constant":
            continue
        dims = [int(v) for v in target.get_data().ravel()]
        new = list(dims)
        for stride in (8, 16, 32):
            old_grid = (reference[0] // stride, reference[1] // stride)
            grid = (input_shape[0] // stride, input_shape[1] // stride)
            if len(dims) == 4 and tuple(dims[2:]) == old_grid:
                new[2:] = grid
            elif len(dims) >= 3 and dims[-1] == old_grid[0] * old_grid[1]:
                new[-1] = grid[0] * grid[1]
        if new != dims:
            node.input(1).replace_source_output(ops.constant(np.array(new, np.int64)).output(0))
            changed.append(node.get_friendly_name())
    return changed


class OpenVinoBackend:
    """An exported ``*_openvino_model`` folder, on the CPU.

    At the export's own input shape (or any shape, for a dynamic-shape export) the exported graph runs as it
    is; a static export at any other shape (a multiple of 32) runs its graph cut before the decoding tail,
    reshaped, and :func:`decode_heads` finishes in NumPy. Compiled models are kept per input shape, each
    with a queue of infer requests that the frames of a batch share.

    The default ``THROUGHPUT`` hint runs as many frames at once as OpenVINO has streams (two on two cores,
    one thread each), which outruns one two-thread request per frame (``LATENCY``, the former setting) on
    small inputs; each frame's output is the same either way.

    Args:
        folder: the exported folder (one ``.xml``, its ``.bin`` and ``metadata.yaml``).
        properties: OpenVINO compile properties (default ``{"PERFORMANCE_HINT": "THROUGHPUT"}``).
    """

    def __init__(self, folder: Path, properties: dict | None = None):
        import openvino as ov  # optional: only exported folders need it

        xml = next(iter(sorted(folder.glob("*.xml"))), None)
        if xml is None:
            raise SSMTLError(f"no .xml model in {folder}: expected an exported *_openvino_model folder.")
        meta_file = folder / "metadata.yaml"
        meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else {}
        self.core = ov.Core()
        self.model = self.core.read_model(str(xml))
        self.properties = properties or {"PERFORMANCE_HINT": "THROUGHPUT"}
        shape = self.model.input().get_partial_shape()
        self.dynamic = not shape.is_static
        size = meta.get("imgsz", [640, 640])
        self.export_shape = ((int(shape[2].get_length()), int(shape[3].get_length())) if shape.is_static
                             else (int(size[0]), int(size[1])))
        names = meta.get("names", {})
        self.class_names = [names[i] for i in sorted(names)] if names else [str(i) for i in range(80)]
        self.weights_path = folder
        self._queues: dict[tuple[str, tuple[int, int]], object] = {}

    def _compile(self, model):
        """``model`` compiled for the CPU, behind a queue of its optimal number of infer requests."""
        import openvino as ov  # optional: only exported folders need it

        compiled = self.core.compile_model(model, "CPU", self.properties)
        return ov.AsyncInferQueue(compiled, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))

    def _full_graph(self, input_shape: tuple[int, int]):
        key = ("full", input_shape)
        if key not in self._queues:
            model = self.model.clone()
            if self.dynamic:
                model.reshape([1, 3, *input_shape])
            self._queues[key] = self._compile(model)
        return self._queues[key]

    def _heads_graph(self, input_shape: tuple[int, int]):
        import openvino as ov  # optional: only exported folders need it

        key = ("heads", input_shape)
        if key not in self._queues:
            if input_shape[0] % STRIDE or input_shape[1] % STRIDE:
                raise SSMTLError(f"YOLO input {input_shape[0]}x{input_shape[1]} is not a multiple of {STRIDE}.")
            model = cut_before_decoding(self.model.clone())
            free_spatial_reshapes(model, self.export_shape, input_shape)
            try:
                model.get_parameters()[0].set_partial_shape(ov.PartialShape([1, 3, *input_shape]))
                model.validate_nodes_and_infer_types()
            except RuntimeError as exc:
                raise SSMTLError(f"{self.weights_path} cannot run at {input_shape[0]}x{input_shape[1]}: a layer "
                                 f"before its detection heads has its {self.export_shape} size baked in "
                                 f"({str(exc).splitlines()[0]}). Use detect.imgsz={self.export_shape[0]}.") from None
            self._queues[key] = self._compile(model)
        return self._queues[key]

    @staticmethod
    def _run(queue, batch: np.ndarray) -> list[np.ndarray]:
        """Each input of ``batch`` through the queue's model, as many at once as it has requests; each
        output concatenated over the batch."""
        outputs: list[list[np.ndarray] | None] = [None] * len(batch)

        def done(request, index: int) -> None:
            outputs[index] = [tensor.data.copy() for tensor in request.output_tensors]

        queue.set_callback(done)
        for i in range(len(batch)):
            queue.start_async(batch[i:i + 1], i)
        queue.wait_all()
        if any(out is None for out in outputs):
            raise SSMTLError("OpenVINO returned no output for some frames of a batch.")
        return [np.concatenate(parts) for parts in zip(*outputs)]

    def run_full(self, batch: np.ndarray) -> np.ndarray:
        """The exported graph's own output (B, 4 + C, N) for a batch at the export's input shape."""
        return self._run(self._full_graph(tuple(batch.shape[2:])), batch)[0]

    def run_heads(self, batch: np.ndarray) -> list[np.ndarray]:
        """The three detection heads, each (B, 64 + C, h, w), for a batch at any multiple-of-32 shape."""
        return self._run(self._heads_graph(tuple(batch.shape[2:])), batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The raw output (B, 4 + C, N) for a float32 batch (B, 3, H, W) in [0, 1]."""
        if self.dynamic or tuple(batch.shape[2:]) == self.export_shape:
            return self.run_full(batch)
        return decode_heads(self.run_heads(batch), tuple(batch.shape[2:]))


class TorchBackend:
    """Ultralytics ``.pt`` weights (a path or a model name ultralytics can download), through PyTorch.

    Args:
        weights: the weights.
        device: ``cpu`` or ``cuda``.
    """

    def __init__(self, weights: str, device: str = "cpu"):
        import torch  # .pt weights alone need torch and ultralytics
        from ultralytics import YOLO

        yolo = YOLO(weights, task="detect")
        model = yolo.model
        if not isinstance(model, torch.nn.Module):
            raise SSMTLError(f"{weights} is not a PyTorch detection model.")
        self.device = torch.device(device)
        self.model = model.to(self.device).float().eval()
        self.class_names = [model.names[i] for i in sorted(model.names)]
        self.weights_path = Path(yolo.ckpt_path) if getattr(yolo, "ckpt_path", None) else Path(weights)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The raw output (B, 4 + C, N) for a float32 batch (B, 3, H, W) in [0, 1] (any multiple of 32)."""
        import torch  # as in __init__

        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch).to(self.device))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float().cpu().numpy()


def load_backend(weights: str, device: str = "cpu") -> OpenVinoBackend | TorchBackend:
    """The backend for ``weights``: an exported OpenVINO folder, else ultralytics ``.pt`` weights."""
    path = Path(weights).expanduser()
    try:
        return OpenVinoBackend(path) if path.is_dir() else TorchBackend(weights, device)
    except SSMTLError:
        raise
    except Exception as exc:  # ultralytics/openvino raise many kinds; the user needs one sentence
        raise SSMTLError(
            f"cannot load YOLO weights {weights!r} ({type(exc).__name__}: {exc}). Pass --weights with a model "
            "name (downloaded by ultralytics, needs internet), a .pt file or an exported *_openvino_model "
            "folder such as ../shared/weights/yolov8n_int8_openvino_model."
        ) from None


# -- the detector ---------------------------------------------------------------------------------


class YoloDetector:
    """A COCO detector decoded from its raw output, so that every kept box keeps all 80 class scores.

    Args:
        config: ``weights`` (name, ``.pt`` path or exported folder), ``conf``, ``iou``, ``imgsz`` (a multiple
            of 32, or 0 for the frame's native size), ``tiles``, ``batch``.
        device: torch device for ``.pt`` weights (``cpu`` or ``cuda``); exported OpenVINO folders run on the CPU.
    """

    name = "yolo"
    has_classes = True

    def __init__(self, config: DetectConfig, device: str = "cpu"):
        if config.imgsz < 0 or config.imgsz % STRIDE:
            raise SSMTLError(f"detect.imgsz must be 0 (native size) or a multiple of {STRIDE}, not {config.imgsz}.")
        self.config = config
        self.weights = config.weights or "yolov3u.pt"
        self.backend = load_backend(self.weights, device)
        self.class_names = self.backend.class_names
        self.num_classes = len(self.class_names)
        self.weights_path = self.backend.weights_path
        if self.num_classes != COCO_CLASSES:
            raise SSMTLError(f"{self.weights} predicts {self.num_classes} classes; SSMTL's distillation target "
                             "needs a COCO (80-class) detector.")

    @property
    def native(self) -> bool:
        """Whether the input is the frame's native size rounded up to a multiple of 32 (``imgsz=0``)."""
        return self.config.imgsz == 0

    @property
    def rect(self) -> bool:
        """Whether a single frame's input is the rectangle holding it scaled to ``imgsz`` (not the square)."""
        return not self.native and (self.config.rect or isinstance(self.backend, TorchBackend))

    @property
    def input_size(self) -> str:
        """The input-size rule in words: ``native``, ``640`` (square) or ``640rect``; part of the cache key."""
        if self.native:
            return "native"
        # PyTorch weights always took the rectangle: their keys stay as they were.
        return f"{self.config.imgsz}rect" if self.config.rect and isinstance(self.backend, OpenVinoBackend) \
            else str(self.config.imgsz)

    @property
    def key(self) -> str:
        """The cache key: weights, thresholds and the input-size rule (with one dataset's fixed frame size, the
        rule decides the input shape)."""
        c = self.config
        digest = file_sha256(self.weights_path)[:8] if self.weights_path.exists() else "nohash"
        stem = self.weights_path.name.replace("_openvino_model", "").replace(".pt", "")
        return f"yolo-{stem}-{digest}-conf{c.conf:g}-iou{c.iou:g}-img{self.input_size}-t{self.tiles}"

    def describe(self) -> dict:
        return {"detector": "yolo", "weights": str(self.weights), "weights_path": str(self.weights_path),
                "weights_sha256": file_sha256(self.weights_path) if self.weights_path.exists() else None,
                "conf": self.config.conf, "iou": self.config.iou, "imgsz": self.config.imgsz,
                "input_size": self.input_size, "tiles": self.tiles, "class_names": self.class_names}

    @property
    def tiles(self) -> int:
        """Frames per network input: packing several small frames into one fixed-size input is the cheapest
        way to raise the throughput of a fixed-shape export on a CPU."""
        return max(1, int(self.config.tiles))

    def input_shape_for(self, frame_size: tuple[int, int], tiles: int = 1) -> tuple[int, int]:
        """The network input (H, W) for ``tiles`` frames of ``frame_size``.

        ``imgsz=0``: the smallest multiple of 32 holding them at native size. Otherwise ``imgsz`` x ``imgsz``,
        or with :attr:`rect` (one frame per input) the smallest multiple-of-32 rectangle holding the frame
        scaled to fit ``imgsz``: the same scale, no compute spent on padding.
        """
        if self.native:
            return native_input_shape(frame_size, tiles)
        size = self.config.imgsz
        if self.rect and tiles == 1:
            scale = min(size / frame_size[0], size / frame_size[1])
            return _round_up(round(frame_size[0] * scale)), _round_up(round(frame_size[1] * scale))
        return size, size

    def plan(self, frame_size: tuple[int, int]) -> LetterboxPlan:
        """The letterbox plan of frames of ``frame_size`` under this detector's settings."""
        tiles = self.tiles
        return letterbox_plan(frame_size, self.input_shape_for(frame_size, tiles), tiles)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The raw output (B, 4 + C, N), ``config.batch`` inputs per backend call."""
        step = max(1, self.config.batch)
        return np.concatenate([self.backend.infer(batch[i:i + step]) for i in range(0, len(batch), step)])

    def select(self, raw: np.ndarray, plan: LetterboxPlan) -> list[Detections]:
        """One input's raw output (4 + C, N) -> the kept boxes of each of its tiles' frames.

        Anchors whose best class score passes ``conf`` are kept; each goes to the tile holding its centre,
        back to that frame's pixels (boxes under 1 pixel dropped), then class-wise NMS.
        """
        raw = raw.T  # (N, 4 + C)
        class_scores = raw[:, 4:]
        best = class_scores.max(axis=1)
        keep = best > self.config.conf
        raw, class_scores, best = raw[keep], class_scores[keep], best[keep]
        classes = class_scores.argmax(axis=1)
        centre, size = raw[:, :2], raw[:, 2:4]
        corners = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        tile_of = plan.tile_of(centre)
        out = []
        for tile in range(len(plan.offsets)):
            sel = tile_of == tile
            boxes = plan.to_frame(corners[sel], tile)
            valid = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
            boxes, scores, cls, cs = boxes[valid], best[sel][valid], classes[sel][valid], class_scores[sel][valid]
            kept = class_wise_nms(boxes, scores, cls, self.config.iou)
            n = len(kept)
            out.append(Detections(np.zeros(n, np.int32), boxes[kept], scores[kept].astype(np.float32),
                                  cls[kept].astype(np.int16), cs[kept].astype(np.float16)))
        return out

    def detect_frames(self, frames: list[np.ndarray]) -> list[Detections]:
        """Detect objects in RGB frames of one size; one :class:`Detections` per frame (frame index 0)."""
        if not frames:
            return []
        plan = self.plan(frames[0].shape[:2])
        tiles = len(plan.offsets)
        groups = [frames[i:i + tiles] for i in range(0, len(frames), tiles)]
        raw = self.infer(letterbox(groups, plan))
        results = []
        for g, group in enumerate(groups):
            results.extend(self.select(raw[g], plan)[:len(group)])
        return results

    def detect_video(self, video: Video, progress: bool = False) -> Detections:
        """Detect objects in every frame of ``video``, ``batch * tiles`` frames per call."""
        return Detections.concat([found for _, found in self.iter_video(video, progress)], COCO_CLASSES)

    def iter_video(self, video: Video, progress: bool = False) -> Iterator[tuple[int, Detections]]:
        """:meth:`detect_video` call by call: ``(frames done, their detections)`` after each ``batch * tiles``
        frames, so that scoring can start on the first frames while the next are detected."""
        chunk = max(1, self.config.batch) * self.tiles
        buffer: list[np.ndarray] = []
        indices: list[int] = []
        for index, frame in tqdm(video.iter_frames(), total=video.num_frames, disable=not progress,
                                 desc=f"yolo {video.key}", unit="frame", leave=False):
            buffer.append(frame)
            indices.append(index)
            if len(buffer) == chunk:
                yield index + 1, self._detect_buffer(buffer, indices)
                buffer, indices = [], []
        if buffer:
            yield indices[-1] + 1, self._detect_buffer(buffer, indices)

    def _detect_buffer(self, frames: list[np.ndarray], indices: list[int]) -> Detections:
        parts = []
        for index, found in zip(indices, self.detect_frames(frames)):
            found.frame[:] = index
            parts.append(found)
        return Detections.concat(parts, COCO_CLASSES)

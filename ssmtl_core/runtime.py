"""Fast inference on a CPU: PyTorch modules compiled by OpenVINO, with PyTorch as the fallback.

On this study's reference machine (2 AMD EPYC cores, AVX2) OpenVINO's CPU plugin runs the SSMTL encoder and
heads 1.6-3.2x faster than eager PyTorch (``bench/infer.py``), and the ImageNet teacher likewise, when two
things hold: the LATENCY hint (one stream on all cores; a synchronous call under the THROUGHPUT hint uses one
stream, i.e. one core, and ran 3x slower here) and small sub-batches (32 objects keep the activations in
cache; one call on 512 objects was 1.5x slower than 16 calls on 32). The compiled model computes the same
function (differences ~1e-7), so training stays in PyTorch and only inference goes through here. On a GPU
PyTorch is used directly.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import nn


def openvino_available() -> bool:
    """True when the ``openvino`` package imports (and ``SSMTL_NO_OPENVINO`` is not set)."""
    if os.environ.get("SSMTL_NO_OPENVINO"):
        return False
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class CompiledModule:
    """``module`` compiled for the CPU with OpenVINO (dynamic batch), called with float32 arrays.

    Args:
        module: the PyTorch module (eval mode); its outputs must be a tensor or a tuple of tensors.
        example: an example input (batch dimension first); only the non-batch dimensions are fixed.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, micro_batch: int = 32):
        import openvino as ov

        shape = [-1, *example.shape[1:]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow are expected
            model = ov.convert_model(module.eval(), example_input=example, input=[shape])
        self.compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self.outputs = list(self.compiled.outputs)
        self.micro_batch = micro_batch

    def __call__(self, array: np.ndarray) -> list[np.ndarray]:
        array = np.ascontiguousarray(array, dtype=np.float32)
        parts: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for i in range(0, max(len(array), 1), self.micro_batch):
            result = self.compiled(array[i:i + self.micro_batch])
            for part, output in zip(parts, self.outputs):
                part.append(result[output])
        return [np.concatenate(p) if len(p) > 1 else p[0] for p in parts]


def compile_module(module: nn.Module, example: torch.Tensor, device: torch.device) -> CompiledModule | None:
    """An OpenVINO-compiled copy of ``module`` for CPU inference, or None (GPU, or OpenVINO unavailable)."""
    if device.type != "cpu" or not openvino_available():
        return None
    try:
        return CompiledModule(module, example)
    except Exception as exc:  # a conversion failure must never stop scoring: PyTorch still works
        warnings.warn(f"OpenVINO could not compile {type(module).__name__} ({exc}); using PyTorch", stacklevel=2)
        return None

"""Fast inference on a CPU: PyTorch modules compiled by OpenVINO, with PyTorch as the fallback.

On this study's reference machine (2 AMD EPYC cores, AVX2) OpenVINO's CPU plugin runs the SSMTL encoder and
heads about three times faster than eager PyTorch with channels-last tensors (``bench/infer.py``), and the
ImageNet teacher likewise. The compiled model computes the same function (differences ~1e-7), so training
stays in PyTorch and only inference goes through here. On a GPU PyTorch is used directly.
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

    def __init__(self, module: nn.Module, example: torch.Tensor):
        import openvino as ov

        shape = [-1, *example.shape[1:]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow are expected
            model = ov.convert_model(module.eval(), example_input=example, input=[shape])
        # THROUGHPUT splits a batch across the cores; LATENCY would run one request on all of them.
        self.compiled = ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
        self.outputs = list(self.compiled.outputs)

    def __call__(self, array: np.ndarray) -> list[np.ndarray]:
        result = self.compiled(np.ascontiguousarray(array, dtype=np.float32))
        return [result[o] for o in self.outputs]


def compile_module(module: nn.Module, example: torch.Tensor, device: torch.device) -> CompiledModule | None:
    """An OpenVINO-compiled copy of ``module`` for CPU inference, or None (GPU, or OpenVINO unavailable)."""
    if device.type != "cpu" or not openvino_available():
        return None
    try:
        return CompiledModule(module, example)
    except Exception as exc:  # a conversion failure must never stop scoring: PyTorch still works
        warnings.warn(f"OpenVINO could not compile {type(module).__name__} ({exc}); using PyTorch", stacklevel=2)
        return None

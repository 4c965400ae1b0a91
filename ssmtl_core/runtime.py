"""Fast inference on a CPU: PyTorch modules compiled by OpenVINO, with PyTorch as the fallback.

OpenVINO's CPU plugin runs the SSMTL encoder and heads several times faster than eager PyTorch
(``bench/infer.py`` measures both on the machine at hand), and the ImageNet teacher likewise, when two things
hold: the LATENCY hint (one stream on all cores; a synchronous call under the THROUGHPUT hint uses one
stream, i.e. one core) and small sub-batches (32 objects keep the activations in cache; one call on hundreds
of objects is slower than many calls on 32). The compiled model computes the same
function (differences ~1e-7), so training stays in PyTorch and only inference goes through here. On a GPU
PyTorch is used directly.

Precision: ``auto`` lets OpenVINO pick (bf16 on CPUs with AVX512-BF16 or AMX, fp32 elsewhere); ``fp32`` and
``bf16`` force it; ``int8`` quantizes the model after training with NNCF, calibrated on example inputs the
caller gives (the scorer uses training objects only). The precision actually used is reported by
:attr:`CompiledModule.precision`.
"""

from __future__ import annotations

import logging
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
        import openvino  # noqa: F401  (optional: the PyTorch path runs without it)
    except ImportError:
        return False
    return True


class CompiledModule:
    """``module`` compiled for the CPU with OpenVINO (dynamic batch), called with float32 arrays.

    Args:
        module: the PyTorch module (eval mode); its outputs must be a tensor or a tuple of tensors.
        example: an example input (batch dimension first); only the non-batch dimensions are fixed.
        micro_batch: objects per call (32 keeps the activations in cache).
        precision: ``auto``, ``fp32``, ``bf16`` or ``int8``.
        calibration: for ``int8``: example inputs (float32 arrays of the model's input shape) to quantize
            with; a few hundred objects.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, micro_batch: int = 32, precision: str = "auto",
                 calibration: list[np.ndarray] | None = None):
        import openvino as ov  # optional: only a compiled module needs it

        shape = [-1, *example.shape[1:]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow are expected
            model = ov.convert_model(module.eval(), example_input=example, input=[shape])
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision in ("fp32", "bf16"):
            config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
        elif precision == "int8":
            model = quantize_int8(model, calibration)
        elif precision != "auto":
            raise ValueError(f"precision must be auto, fp32, bf16 or int8, not {precision!r}")
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.outputs = list(self.compiled.outputs)
        self.micro_batch = micro_batch
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        used = used.get_type_name() if hasattr(used, "get_type_name") else str(used).lower()
        self.precision = "int8" if precision == "int8" else {"f32": "fp32", "f16": "fp16"}.get(used, used)

    def __call__(self, array: np.ndarray) -> list[np.ndarray]:
        array = np.ascontiguousarray(array, dtype=np.float32)
        parts: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for i in range(0, max(len(array), 1), self.micro_batch):
            result = self.compiled(array[i:i + self.micro_batch])
            for part, output in zip(parts, self.outputs):
                part.append(result[output])
        return [np.concatenate(p) if len(p) > 1 else p[0] for p in parts]


def quantize_int8(model, calibration: list[np.ndarray] | None):
    """Post-training int8 quantization of an OpenVINO model with NNCF (weights and activations, per-channel
    weights, statistics from ``calibration``, a list of input batches)."""
    if not calibration:
        raise ValueError("int8 quantization needs calibration inputs (a few hundred training objects)")
    try:
        import nncf  # optional: only int8 scoring needs it
    except ImportError:
        raise ImportError("int8 scoring needs the nncf package: pip install nncf") from None
    logging.getLogger("nncf").setLevel(logging.ERROR)
    samples = sum(len(batch) for batch in calibration)
    return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                         preset=nncf.QuantizationPreset.PERFORMANCE) if samples else model


def compile_module(module: nn.Module, example: torch.Tensor, device: torch.device, precision: str = "auto",
                   calibration: list[np.ndarray] | None = None) -> CompiledModule | None:
    """An OpenVINO-compiled copy of ``module`` for CPU inference, or None (GPU, or OpenVINO unavailable)."""
    if device.type != "cpu" or not openvino_available():
        return None
    try:
        return CompiledModule(module, example, precision=precision, calibration=calibration)
    except Exception as exc:  # a conversion failure must never stop scoring: PyTorch still works
        warnings.warn(f"OpenVINO could not compile {type(module).__name__} ({exc}); using PyTorch", stacklevel=2)
        return None

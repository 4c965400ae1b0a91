"""The 3D CNN with its four heads (paper Sec. 3.3; ``docs/method.md``, "Architectures").

One shared encoder of 3D convolutions (3x3x3, padding same, stride 1, BatchNorm + ReLU) with 2x2 spatial max
pools; time is collapsed by a max over frames at the end, so the 7-frame sequences and the 6-frame
middle-box input share it. Four heads on the (C, h, w) features:

* arrow of time and motion irregularity: 2D conv (32 filters, 3x3) + BN + ReLU + dropout + 2x2 max pool +
  a fully connected layer with 2 units;
* knowledge distillation: the same, with as many units as the teachers' target (1080 = 1000 ImageNet
  logits + 80 COCO class scores; 1000 with a class-agnostic detector); the outputs that regress the
  detector's class probabilities end in a sigmoid, so the student predicts them in the detector's own
  probability space (see :class:`DistillationHead`);
* middle box prediction: a decoder of nearest-neighbour upsampling + 3x3 2D convs (32 filters) back to
  64x64, the last conv with 3 filters (RGB) and a sigmoid (crops are in [0, 1]).

The modules know nothing of files: configurations come in as plain values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ARCH_LAYERS
from .errors import SSMTLError


class Encoder(nn.Module):
    """The shared 3D CNN: (N, 3, T, S, S) -> (N, C, S / 2^pools, S / 2^pools)."""

    def __init__(self, layers: tuple[int | str, ...], in_channels: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for layer in layers:
            if layer == "P":
                blocks.append(MaxPool2x2())
            else:
                blocks += [nn.Conv3d(channels, int(layer), kernel_size=3, padding=1, bias=False),
                           nn.BatchNorm3d(int(layer)), nn.ReLU(inplace=True)]
                channels = int(layer)
        self.layers = nn.Sequential(*blocks)
        self.out_channels = channels
        self.pools = sum(1 for layer in layers if layer == "P")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).amax(dim=2)  # collapse time: max over frames


class MaxPool2x2(nn.Module):
    """2x2 spatial max pooling of (N, C, T, H, W), frame by frame: ``nn.MaxPool3d((1, 2, 2))``, the same values
    and the same gradients (each window's to its first maximum, in row order, as PyTorch's max pooling does).

    Eager PyTorch runs its max pooling kernel. Under ``torch.compile`` (training's compiled path,
    :mod:`ssmtl_core.compiled`) it runs :class:`_FirstMaxPool` instead: elementwise operations on the
    channels-last layout, which the compiler fuses with the BatchNorm and ReLU around them, where the
    compiled max pooling backward zero-fills and scatters a full-size gradient in a layout of its own (one
    compiled Conv3d 16->32 + BatchNorm + ReLU + pool block at 32x32, batch 128, bf16, one thread, forward and
    backward: 0.51 s with max_pool3d, 0.41 s with this; measured on a shared machine).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() and x.shape[3] % 2 == 0 and x.shape[4] % 2 == 0:
            return _FirstMaxPool.apply(x)
        return F.max_pool3d(x, kernel_size=(1, 2, 2), stride=(1, 2, 2))


class _FirstMaxPool(torch.autograd.Function):
    """2x2 spatial max pooling written as elementwise operations over a channels-last view (even H and W).

    Forward: the max of each window's four values; backward: each window's gradient to its first maximum in
    row order, recorded in the forward as a uint8 code (0-3), as ``max_pool3d`` routes it through its indices.
    """

    @staticmethod
    def _windows(x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape  # (N, T, H/2, 2, W/2, 2, C): a view of channels-last memory
        return x.permute(0, 2, 3, 4, 1).reshape(n, t, h // 2, 2, w // 2, 2, c)

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        windows = _FirstMaxPool._windows(x)
        a, b = windows[:, :, :, 0, :, 0], windows[:, :, :, 0, :, 1]
        c, d = windows[:, :, :, 1, :, 0], windows[:, :, :, 1, :, 1]
        top = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        first = torch.where(a == top, 0, torch.where(b == top, 1, torch.where(c == top, 2, 3))).to(torch.uint8)
        ctx.save_for_backward(first)
        ctx.input_shape = x.shape
        return top.permute(0, 4, 1, 2, 3)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (first,) = ctx.saved_tensors
        n, c, t, h, w = ctx.input_shape
        code = torch.arange(4, dtype=torch.uint8, device=grad.device).view(1, 1, 1, 2, 1, 2, 1)
        spread = torch.where(first[:, :, :, None, :, None] == code, grad.permute(0, 2, 3, 4, 1)[:, :, :, None, :, None],
                             torch.zeros((), dtype=grad.dtype, device=grad.device))
        return spread.reshape(n, t, h, w, c).permute(0, 4, 1, 2, 3)


class ClassifierHead(nn.Module):
    """Conv 3x3 (32) + BN + ReLU + dropout + 2x2 max pool + fully connected (paper Sec. 3.3)."""

    def __init__(self, in_channels: int, spatial: int, units: int, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(32),
            nn.ReLU(inplace=True), nn.Dropout(dropout), nn.MaxPool2d(2), nn.Flatten())
        self.fc = nn.Linear(32 * (spatial // 2) ** 2, units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


#: Initial logit of the student's class probabilities: sigmoid(-4.6) = 0.01, the usual low prior, so that
#: the 79 classes an object is not start (and can stay) at ~0 instead of at the noise of a linear layer.
PROBABILITY_PRIOR_LOGIT = -4.6


class DistillationHead(ClassifierHead):
    """The distillation head: :class:`ClassifierHead` whose last ``probabilities`` outputs pass a sigmoid.

    The detector's 80 class scores are independent probabilities, almost all near 0 for any object. A
    linear output regresses them with an L1 loss only as closely as its own noise allows: on Ped2 a linear
    head's error on them was an order of magnitude above that of predicting a constant
    (``bench/distillation.py``), so the test-time discrepancy measured the student's noise, not the object. A sigmoid with a low prior bias starts every
    class at ~0.01 and learns to raise the few that matter (``docs/method.md``, "Knowledge distillation").
    """

    def __init__(self, in_channels: int, spatial: int, units: int, dropout: float, probabilities: int = 0):
        super().__init__(in_channels, spatial, units, dropout)
        if not 0 <= probabilities <= units:
            raise SSMTLError(f"kd_probabilities must lie in [0, {units}], got {probabilities}")
        self.probabilities = probabilities
        if probabilities:
            with torch.no_grad():
                self.fc.bias[units - probabilities:] = PROBABILITY_PRIOR_LOGIT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if not self.probabilities:
            return out
        cut = out.shape[1] - self.probabilities
        return torch.cat([out[:, :cut], torch.sigmoid(out[:, cut:])], dim=1)


class MiddleDecoder(nn.Module):
    """Nearest-neighbour upsampling + 3x3 convs (32 filters) back to the crop size; last conv RGB."""

    def __init__(self, in_channels: int, spatial: int, crop_size: int = 64):
        super().__init__()
        blocks: list[nn.Module] = []
        channels, size = in_channels, spatial
        while size < crop_size:
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(channels, 32, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(32),
                       nn.ReLU(inplace=True)]
            channels, size = 32, size * 2
        blocks += [nn.Conv2d(channels, 3, kernel_size=3, padding=1), nn.Sigmoid()]
        self.layers = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass(frozen=True)
class ModelConfig:
    """What it takes to rebuild an :class:`SSMTLModel` (stored in checkpoints).

    Attributes:
        arch: ``shallow_narrow``, ``shallow_wide``, ``deep_narrow`` or ``deep_wide``.
        kd_dim: length of the distillation target (1080, 1000 or 80; 0 = no distillation head).
        dropout: dropout of the classification and distillation heads.
        crop_size: side of the input crops.
        kd_probabilities: how many trailing distillation outputs are probabilities (the detector's 80 class
            scores; 0 for checkpoints made before they had a sigmoid, and for class-agnostic detectors).
    """

    arch: str = "shallow_narrow"
    kd_dim: int = 1080
    dropout: float = 0.3
    crop_size: int = 64
    kd_probabilities: int = 0

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild from :meth:`SSMTLModel.config` output; keys of older checkpoints get their old defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class SSMTLModel(nn.Module):
    """The shared encoder and the four task heads.

    Args:
        arch: ``shallow_narrow``, ``shallow_wide``, ``deep_narrow`` or ``deep_wide``.
        kd_dim: length of the distillation target (1080, 1000 or 80; 0 = no distillation head).
        dropout: dropout of the classification and distillation heads.
        crop_size: side of the input crops.
        kd_probabilities: trailing distillation outputs that are probabilities (sigmoid).
    """

    def __init__(self, arch: str = "shallow_narrow", kd_dim: int = 1080, dropout: float = 0.3, crop_size: int = 64,
                 kd_probabilities: int = 0):
        super().__init__()
        if arch not in ARCH_LAYERS:
            raise SSMTLError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCH_LAYERS)}.")
        self.model_config = ModelConfig(arch, kd_dim, dropout, crop_size, kd_probabilities)
        self.arch, self.kd_dim, self.crop_size = arch, kd_dim, crop_size
        self.encoder = Encoder(ARCH_LAYERS[arch])
        channels, spatial = self.encoder.out_channels, crop_size // 2 ** self.encoder.pools
        self.aot_head = ClassifierHead(channels, spatial, 2, dropout)
        self.irr_head = ClassifierHead(channels, spatial, 2, dropout)
        self.kd_head = (DistillationHead(channels, spatial, kd_dim, dropout, kd_probabilities) if kd_dim > 0
                        else None)
        self.mid_head = MiddleDecoder(channels, spatial, crop_size)

    @classmethod
    def from_config(cls, config: ModelConfig | dict) -> SSMTLModel:
        """A fresh model of the given configuration."""
        config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
        return cls(**asdict(config))

    def config(self) -> dict:
        """What it takes to rebuild this model (stored in checkpoints)."""
        return asdict(self.model_config)

    def sequence_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Arrow-of-time and irregularity logits and the distillation output for 7-frame sequences.

        Args:
            x: (N, 3, 7, S, S) float in [0, 1].
        """
        features = self.encoder(x)
        out = {"aot": self.aot_head(features), "irr": self.irr_head(features)}
        if self.kd_head is not None:
            out["kd"] = self.kd_head(features)
        return out

    def middle(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstructed middle crop (N, 3, S, S) from the 6 frames around it, (N, 3, 6, S, S)."""
        return self.mid_head(self.encoder(x))

    def forward(self, sequence: torch.Tensor, without_middle: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.sequence_heads(sequence)
        if without_middle is not None:
            out["mid"] = self.middle(without_middle)
        return out


def as_input(crops: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Uint8 crops (N, T, S, S, C) -> the network's input (N, 3, T, S, S) float in [0, 1] on ``device``.

    Grey crops (C = 1) are expanded to RGB on the device, not on the host; the result is in
    channels_last_3d, the layout in which oneDNN's 3D convolutions run several times faster on CPUs.
    """
    return network_input(torch.from_numpy(np.ascontiguousarray(crops)).to(device, non_blocking=True))


def network_input(crops: torch.Tensor) -> torch.Tensor:
    """:func:`as_input` of crops already on the device: uint8 (N, T, S, S, C) -> float (N, 3, T, S, S)."""
    x = crops.permute(0, 4, 1, 2, 3).float().div(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1, -1)
    return x.contiguous(memory_format=torch.channels_last_3d)


def layer_table(model: SSMTLModel, frames: int = 7) -> list[dict]:
    """Every leaf layer with its output shape and parameter count, for ``ssmtl model --arch``.

    The encoder and the three sequence heads are traced on a 7-frame input, the middle-box decoder on a
    6-frame one.
    """
    rows: list[dict] = []
    hooks = []

    def hook(name: str):
        def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            rows.append({"layer": name, "type": type(module).__name__, "output": tuple(output.shape[1:]),
                         "params": sum(p.numel() for p in module.parameters(recurse=False))})
        return record

    for name, module in model.named_modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(hook(name)))
    # The encoder's own output is after the max over time: one row for that step.
    hooks.append(model.encoder.register_forward_hook(
        lambda _m, _i, out: rows.append({"layer": "encoder (max over time)", "type": "amax", "output":
                                         tuple(out.shape[1:]), "params": 0})))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        size = model.crop_size
        model.sequence_heads(torch.zeros(1, 3, frames, size, size))
        seen = len(rows)
        model.middle(torch.zeros(1, 3, frames - 1, size, size))
        rows[:] = rows[:seen] + [r for r in rows[seen:] if r["layer"].startswith("mid_head")]
    for h in hooks:
        h.remove()
    model.train(was_training)
    return rows

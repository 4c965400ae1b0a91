"""The joint loss of the four proxy tasks (paper Sec. 3.2-3.3; ``docs/method.md``, "Proxy tasks", "Joint loss").

``L = L_aot + L_irr + L_mid + lambda * L_kd``: cross-entropy for the two binary tasks (arrow of time, motion
irregularity), mean absolute error for the middle-box reconstruction and for the distillation of the
teachers' outputs. :func:`task_losses` computes the terms of any subset of the tasks on one batch,
:func:`weighted_total` sums them, and :func:`backward_groups` says which of them share an encoder pass (one
backward each: :func:`ssmtl_core.precision.training_step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .model import SSMTLModel, network_input
from .samples import Batch
from .training_data import TrainingData


@dataclass
class DistillationTargets:
    """The distillation targets of all objects, with the parts that count for each.

    Attributes:
        values: (N, D) float32: the teacher's logits, then the detector's class scores.
        has_classes: (N,) bool, False where the class-score part is not a target (class-agnostic objects);
            None when it counts for every object.
        logits: how many leading values are teacher logits.
        balance: weigh the two parts equally (the mean error of each, averaged) instead of every value
            equally (the paper's plain L1, in which 1000 logits outweigh 80 class scores).
    """

    values: np.ndarray
    has_classes: np.ndarray | None = None
    logits: int = 0
    balance: bool = False

    @classmethod
    def from_data(cls, data: TrainingData, balance: bool = False) -> DistillationTargets | None:
        if data.kd_targets is None:
            return None
        return cls(data.kd_targets, data.kd_has_classes, int(data.kd_layout.get("logits", 0)), balance)

    def loss(self, prediction: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        """Mean absolute error over the target values that count (all of them: the paper's L1)."""
        return distillation_loss(prediction, *self.tensors(index, prediction.device))

    def weighs(self) -> bool:
        """Whether some batch of these targets needs per-value weights (two balanced parts, or objects whose
        class-score part does not count)."""
        return (self.balance and 0 < self.logits < self.values.shape[1]) or self.has_classes is not None

    def tensors(self, index: np.ndarray, device: torch.device, always_weighted: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The targets of the objects ``index`` and the weight of each value, None where every value of the
        batch weighs the same (the plain L1). ``always_weighted``: a weight tensor whenever :meth:`weighs`,
        even for a batch that needs none (all ones), so a compiled graph sees one kind of input."""
        target = torch.from_numpy(self.values[index]).to(device)
        two_parts = 0 < self.logits < target.shape[1]
        plain = not (self.balance and two_parts) and (self.has_classes is None or self.has_classes[index].all())
        if plain and not (always_weighted and self.weighs()):
            return target, None
        weight = torch.ones_like(target)
        if self.balance and two_parts:  # each part's values share a weight of 1
            weight[:, :self.logits] = 1.0 / self.logits
            weight[:, self.logits:] = 1.0 / (target.shape[1] - self.logits)
        if self.has_classes is not None:
            weight[torch.from_numpy(~self.has_classes[index]).to(device), self.logits:] = 0.0
        return target, weight


def distillation_loss(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The mean absolute error of the distillation head: plain, or each object's weighted mean, averaged."""
    if weight is None:
        return F.l1_loss(prediction, target)
    return ((prediction - target).abs() * weight).sum(1).div(weight.sum(1)).mean()


def task_losses(model: SSMTLModel, batch: Batch, tasks: tuple[str, ...],
                kd_targets: np.ndarray | DistillationTargets | None, device: torch.device
                ) -> dict[str, torch.Tensor]:
    """The loss of every trained task on one batch (paper Sec. 3.2; ``docs/method.md``, "Proxy tasks").

    The arrow-of-time input is the consecutive sequence reversed where ``aot_label`` is 1; the distillation
    head reads the same encoder features; the irregularity input is the intermittent sequence where
    ``irr_label`` is 1; the middle-box input drops the middle frame, which is the target.

    Args:
        model: the network.
        batch: uint8 crops and labels from :class:`~ssmtl_core.samples.SequenceSampler`.
        tasks: the tasks to compute.
        kd_targets: the distillation targets of all objects (an array, or :class:`DistillationTargets`).
        device: where to compute.
    """
    return pass_losses(model, loss_inputs(batch, tasks, kd_targets, device), tasks)


def loss_inputs(batch: Batch, tasks: tuple[str, ...], kd_targets: np.ndarray | DistillationTargets | None,
                device: torch.device, always_weighted: bool = False) -> dict[str, torch.Tensor | None]:
    """The tensors :func:`pass_losses` reads, on ``device``: the uint8 crops as they are (the network's input
    is made from them in :func:`pass_losses`), the labels and the distillation targets of ``tasks``."""
    if kd_targets is not None and not isinstance(kd_targets, DistillationTargets):
        kd_targets = DistillationTargets(np.asarray(kd_targets, np.float32))
    sequence = "aot" in tasks or "kd" in tasks

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)

    inputs: dict[str, torch.Tensor | None] = {"consecutive": tensor(batch.consecutive)}
    if sequence:
        inputs["aot_label"] = tensor(batch.aot_label if "aot" in tasks else np.zeros_like(batch.aot_label))
    if "irr" in tasks:
        inputs["intermittent"], inputs["irr_label"] = tensor(batch.intermittent), tensor(batch.irr_label)
    if "kd" in tasks:
        inputs["kd_target"], inputs["kd_weight"] = kd_targets.tensors(batch.index, device, always_weighted)
    return inputs


def pass_losses(model: SSMTLModel, inputs: dict[str, torch.Tensor | None], tasks: tuple[str, ...]
                ) -> dict[str, torch.Tensor]:
    """:func:`task_losses` on the tensors of :func:`loss_inputs`: tensors in, tensors out, no host data, so
    that ``torch.compile`` can take one encoder pass (:func:`backward_groups`) as one graph."""
    consecutive = network_input(inputs["consecutive"])
    t = consecutive.shape[2] // 2
    losses: dict[str, torch.Tensor] = {}
    batch, heads = [], []
    if "aot" in tasks or "kd" in tasks:
        label = inputs["aot_label"]
        reverse = label.view(-1, 1, 1, 1, 1).bool()
        batch.append(torch.where(reverse, consecutive.flip(2), consecutive))
        heads.append("aot")
    if "irr" in tasks:
        intermittent = network_input(inputs["intermittent"])
        irr_label = inputs["irr_label"]
        batch.append(torch.where(irr_label.view(-1, 1, 1, 1, 1).bool(), intermittent, consecutive))
        heads.append("irr")
    if batch:
        features = model.encoder(torch.cat(batch) if len(batch) > 1 else batch[0])
        chunks = dict(zip(heads, features.chunk(len(batch)) if len(batch) > 1 else [features]))
        if "aot" in tasks:
            losses["aot"] = F.cross_entropy(model.aot_head(chunks["aot"]).float(), label)
        if "kd" in tasks:
            losses["kd"] = distillation_loss(model.kd_head(chunks["aot"]).float(), inputs["kd_target"],
                                             inputs["kd_weight"])
        if "irr" in tasks:
            losses["irr"] = F.cross_entropy(model.irr_head(chunks["irr"]).float(), irr_label)
    if "mid" in tasks:
        keep = [i for i in range(consecutive.shape[2]) if i != t]
        reconstruction = model.middle(consecutive[:, :, keep].contiguous(memory_format=torch.channels_last_3d))
        losses["mid"] = F.l1_loss(reconstruction.float(), consecutive[:, :, t])
    return losses


def weighted_total(losses: dict, kd_weight: float):
    """``L_aot + L_irr + L_mid + lambda * L_kd`` over the tasks present (tensors or floats alike)."""
    return sum(value * (kd_weight if task == "kd" else 1.0) for task, value in losses.items())


def backward_groups(tasks: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The trained tasks grouped by encoder pass: arrow of time, irregularity and distillation share one pass
    (:func:`task_losses`), middle-box prediction has its own."""
    sequence = tuple(t for t in tasks if t != "mid")
    return [group for group in (sequence, ("mid",) if "mid" in tasks else ()) if group]

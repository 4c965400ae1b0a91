"""Checkpoints: what a trained run leaves behind, and how it comes back (``docs/method.md``, "Training").

A checkpoint is a plain dict saved with ``torch.save``: the model's weights and its :class:`ModelConfig`, the
optimizer state, the epoch and step, every setting of the run (the profile), the cache keys it used, the
layout of the distillation target and the validation scores that calibrate its outputs. It is written
atomically (temp file + rename) and read back with ``torch.load(weights_only=True)``: only tensors and plain
Python values come back, so a checkpoint from a stranger cannot run code.

Evaluation and scoring import this module, never the training loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import SSMTLError
from .io import atomic_path, code_provenance, package_versions
from .model import ModelConfig, SSMTLModel

CHECKPOINT_KIND = "ssmtl-checkpoint"
CHECKPOINT_VERSION = 2


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; a clear error when CUDA is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SSMTLError("device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto.")
    return torch.device(name)


def save_checkpoint(path: str | Path, model: SSMTLModel, optimizer: torch.optim.Optimizer | None, epoch: int,
                    step: int, profile: dict, **extra: Any) -> None:
    """Write a checkpoint atomically.

    Args:
        path: where (``best.pt`` or ``last.pt``).
        model: the model; its weights and :class:`ModelConfig` are stored.
        optimizer: its state (resuming needs it), or None.
        epoch: epochs completed.
        step: optimisation steps completed within the next epoch (0 at an epoch's end).
        profile: every setting of the run (``Profile.to_dict()``).
        **extra: anything else to keep (history, cache keys, distillation layout, calibration, ...); plain
            Python values and tensors only, since checkpoints are read with ``weights_only=True``.
    """
    state = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "model": model.state_dict(),
             "optimizer": optimizer.state_dict() if optimizer is not None else None, "epoch": epoch,
             "step": step, "model_config": model.config(), "profile": profile,
             "versions": package_versions(), "code": code_provenance(), **extra}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, with one clear message for anything else."""
    path = Path(path)
    if not path.is_file():
        raise SSMTLError(f"checkpoint not found: {path}. Train a model first (ssmtl train ... --out DIR) and pass "
                         "DIR/best.pt.")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # pickle/zip errors of damaged files, and foreign objects refused by weights_only
        reason = ("it holds Python objects other than tensors and plain values, which are not loaded for safety"
                  if "weights_only" in str(exc) or "Unsupported global" in str(exc)
                  else "it is damaged or not a PyTorch file")
        raise SSMTLError(f"cannot read checkpoint {path} ({type(exc).__name__}): {reason}. Pass a best.pt or "
                         "last.pt written by ssmtl train (a damaged last.pt: delete it to restart that run).") from None
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise SSMTLError(f"{path} is not an SSMTL checkpoint (no 'kind: {CHECKPOINT_KIND}'); pass the best.pt "
                         "written by ssmtl train.")
    return state


def model_from_checkpoint(state: dict, device: str | torch.device = "cpu", path: str | Path = "checkpoint"
                          ) -> SSMTLModel:
    """Rebuild the trained model of a checkpoint, in eval mode.

    Raises:
        SSMTLError: the stored configuration does not match the stored weights (naming ``path``).
    """
    config = ModelConfig.from_dict(state["model_config"])
    model = SSMTLModel.from_config(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise SSMTLError(f"{path}: its weights do not fit its model configuration ({config.arch}, distillation "
                         f"outputs {config.kd_dim}): {first[0].strip()} The file was altered or mixed from two "
                         "runs; use the best.pt written by ssmtl train.") from None
    return model.to(device).eval()

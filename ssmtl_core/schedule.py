"""How a training run spends its learning rate (``docs/method.md``, "Learning within a budget").

The paper trains 30 epochs at Adam's constant learning rate 1e-3 (``train.schedule = constant``, kept by
``--full``). A CPU run gets a budget of a few minutes instead, one to eight epochs: at a constant rate its last
epoch ends wherever the optimiser happens to be, and the checkpoint the validation loss picks jumps from seed to
seed. ``cosine`` spends the same steps so that the run *ends* the way a long one would:

* **warm-up** over the first ``warmup_epochs`` of epoch 1, from 10% of the rate to all of it (Adam's first
  steps, taken with poor moment estimates and fresh BatchNorm statistics, are the unstable ones);
* the full rate for the rest of epoch 1;
* a **cosine decay** from the full rate to 1% of it over epochs 2 .. E, where E is the number of epochs the
  run will train: ``train.epochs``, or, under a time budget, how many epochs as long as the first fit in the
  budget (planned once, at the end of epoch 1, and stored in the checkpoint so a resumed run keeps its plan).

The rate is a function of the step, the steps per epoch and the plan alone, so a resumed run follows the same
schedule as an uninterrupted one.
"""

from __future__ import annotations

import math

WARMUP_START = 0.1
"""The fraction of the learning rate the warm-up starts from."""
FINAL_FRACTION = 0.01
"""The fraction of the learning rate the cosine decay ends at."""


def planned_epochs(epochs: int, budget_minutes: float, first_epoch_seconds: float) -> int:
    """How many epochs a run will train: ``epochs``, or fewer when a time budget holds fewer epochs as long as
    the first one (at least 1).

    Args:
        epochs: ``train.epochs``, the most that may run.
        budget_minutes: ``train.budget_minutes`` (0: no budget).
        first_epoch_seconds: how long the first epoch took, validation included.
    """
    if not budget_minutes or first_epoch_seconds <= 0:
        return epochs
    return max(1, min(epochs, int(budget_minutes * 60 // first_epoch_seconds)))


def lr_factor(schedule: str, step: int, steps_per_epoch: int, planned: int | None,
              warmup_epochs: float = 0.5) -> float:
    """The fraction of ``train.lr`` that optimisation step ``step`` (counted from 0 over the whole run) uses.

    Args:
        schedule: ``constant`` or ``cosine`` (:data:`SCHEDULES`).
        step: the step's index in the run.
        steps_per_epoch: optimisation steps per epoch.
        planned: the epochs the run will train (:func:`planned_epochs`); None while epoch 1 runs and a time
            budget has not been planned yet.
        warmup_epochs: length of the warm-up, in epochs (at most 1).
    """
    if schedule == "constant":
        return 1.0
    warmup = int(round(min(max(warmup_epochs, 0.0), 1.0) * steps_per_epoch))
    if step < warmup:
        return WARMUP_START + (1.0 - WARMUP_START) * step / warmup
    if step < steps_per_epoch or not planned or planned <= 1:
        return 1.0
    decay_steps = (planned - 1) * steps_per_epoch
    progress = min(1.0, (step - steps_per_epoch) / decay_steps)
    return FINAL_FRACTION + (1.0 - FINAL_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * progress))

"""Learning-rate schedules as per-step multipliers of each group's base LR.

Every schedule is a small picklable-free object used through ``LambdaLR``, so one mechanism
serves all of them and a parameter group added mid-run (gradual unfreezing) joins the schedule
at the right point: see :func:`add_param_group`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


class CosineWithWarmup:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, max(1, total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


class StepDecay:
    """``gamma ** (epoch // step_size)`` — the seeds' StepLR(7, 0.1), evaluated per step."""

    def __init__(self, steps_per_epoch: int, step_size: int, gamma: float) -> None:
        self.steps_per_epoch, self.step_size, self.gamma = max(1, steps_per_epoch), step_size, gamma

    def __call__(self, step: int) -> float:
        return float(self.gamma ** ((step // self.steps_per_epoch) // self.step_size))


class OneCycle:
    """One-cycle LR (Smith 2018): cosine rise from ``1/div`` to 1 over ``pct_start`` of the
    steps, then cosine fall to ``1/(div*final_div)``; multipliers of the group's max LR."""

    def __init__(
        self, total: int, pct_start: float = 0.3, div: float = 25.0, final_div: float = 1e4
    ) -> None:
        self.total, self.pct_start, self.div, self.final_div = (
            max(2, total),
            pct_start,
            div,
            final_div,
        )

    def __call__(self, step: int) -> float:
        up = max(1, round(self.pct_start * self.total))
        lo, hi, end = 1.0 / self.div, 1.0, 1.0 / (self.div * self.final_div)
        if step < up:
            t = step / up
            return hi + (lo - hi) * (1 + math.cos(math.pi * t)) / 2
        t = min(1.0, (step - up) / max(1, self.total - up))
        return end + (hi - end) * (1 + math.cos(math.pi * t)) / 2


class Constant:
    def __call__(self, step: int) -> float:
        return 1.0


def make_schedule(
    name: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    step_size: int,
    gamma: float,
) -> Any:
    total = epochs * max(1, steps_per_epoch)
    if name == "cosine":
        return CosineWithWarmup(int(warmup_epochs * steps_per_epoch), total)
    if name == "step":
        return StepDecay(steps_per_epoch, step_size, gamma)
    if name == "onecycle":
        return OneCycle(total)
    if name == "none":
        return Constant()
    raise ValueError(f"unknown scheduler {name!r}")


def rewarmed(fn: Callable[[int], float], start: int, warmup: int) -> Callable[[int], float]:
    """``fn`` for a parameter group that joins at step ``start``: its multiplier rises linearly
    over ``warmup`` steps to ``fn``'s (ULMFiT-style re-warm of a newly unfrozen stage). Without
    it, Adam's first steps on fresh optimizer state move every weight of the joining stages by
    about the full LR at once, which undoes what the head and later stages learnt (measured:
    train accuracy 0.88 -> 0.59 when the remaining MobileNetV2 stages joined mid-run).

    A closure on purpose: ``LambdaLR`` saves the state of callable objects but not of functions;
    with ``warmup`` one epoch a run resumed at an epoch boundary needs only the plain ``fn``."""
    if warmup <= 0:
        return fn

    def multiplier(step: int) -> float:
        return fn(step) * min(1.0, max(0, step - start + 1) / warmup)

    return multiplier


def add_param_group(
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR | None,
    group: dict[str, Any],
    warmup: int = 0,
) -> None:
    """Add ``group`` (its ``lr`` is the base LR) to a running optimizer and its schedule: the
    new group starts at ``base * multiplier(current step)``, re-warmed over ``warmup`` steps
    (:func:`rewarmed`); existing groups keep their state."""
    base = float(group["lr"])
    group = {**group, "initial_lr": base}
    if scheduler is not None:
        fn = rewarmed(scheduler.lr_lambdas[0], scheduler.last_epoch, warmup)
        scheduler.base_lrs.append(base)
        scheduler.lr_lambdas.append(fn)
        group["lr"] = base * fn(scheduler.last_epoch)
    optimizer.add_param_group(group)

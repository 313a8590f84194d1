"""Training plug-ins: optional additions to a run that training knows only through this
interface (domain adaptation in :mod:`headstart.adapt.domain` is one).

A plug-in may add a training-step hook (a module whose parameters train and live in the
checkpoint), replace what ``trainer.fit`` draws from (e.g. source and target batches together),
and add blocks to metrics.json after evaluation. Plug-ins are passed to
:func:`headstart.training.fit.train` as factories ``config -> plugin | None``; the public
:func:`headstart.train` passes the library's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from headstart.config import TrainConfig
from headstart.data import DataSplits
from headstart.models import Backbone
from headstart.run import RunFolder
from headstart.training.activations import ActivationPlan


@dataclass(frozen=True)
class SetupContext:
    """What a plug-in sees before the module is built."""

    config: TrainConfig
    backbone: Backbone
    cached_features: bool
    frozen_throughout: bool
    rows: int
    drop_last: bool
    loader_kw: dict[str, Any]
    num_workers: int
    #: the cached-activation plan (frozen prefix stored once), ``None`` on the other paths
    activations: ActivationPlan | None = None


@dataclass(frozen=True)
class ResultContext:
    """What a plug-in sees after the best checkpoint was evaluated."""

    config: TrainConfig
    backbone: Backbone
    splits: DataSplits
    run: RunFolder
    cached_features: bool
    num_workers: int


class TrainingPlugin:
    """Base class: every hook is optional (the defaults change nothing)."""

    def setup(self, ctx: SetupContext) -> None:
        """Prepare (data, modules) once the run is planned and its loaders exist."""

    def step(self) -> nn.Module | None:
        """The training-step hook ``hook(module, batch) -> (loss, logits, targets, logs)``
        (see :class:`~headstart.training.module.HeadstartModule`), or ``None``."""
        return None

    def fit_loader(self, train_loader: Any) -> Any:
        """What ``trainer.fit`` draws training batches from (default: ``train_loader``)."""
        return train_loader

    def results(self, ctx: ResultContext) -> dict[str, Any]:
        """Extra top-level blocks for metrics.json."""
        return {}


PluginFactory = Callable[[TrainConfig], TrainingPlugin | None]

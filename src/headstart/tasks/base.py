"""The task interface (see :mod:`headstart.tasks`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.table import Table

from headstart.evaluation.report import ValPredictions
from headstart.files import Prediction
from headstart.run import RunFolder


class Task(ABC):
    """What a model's outputs mean. Stateless; one instance per task in
    :data:`headstart.tasks.TASKS`."""

    name: ClassVar[str]
    #: the key of :meth:`metrics` that ranks runs and checkpoints (higher is better)
    score_key: ClassVar[str]

    @abstractmethod
    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """The training loss of a batch (``targets`` may be soft after MixUp/CutMix)."""

    @abstractmethod
    def batch_score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The per-batch score logged as ``train_acc``/``val_acc`` in log.csv."""

    @abstractmethod
    def metrics(
        self, logits: torch.Tensor, targets: torch.Tensor, classes: list[str]
    ) -> dict[str, Any]:
        """The metrics.json block of one split (torchmetrics)."""

    @abstractmethod
    def metrics_table(self, metrics: dict[str, Any], title: str) -> Table:
        """The printed summary of one split's :meth:`metrics`."""

    @abstractmethod
    def write_report(self, run: RunFolder, predictions: ValPredictions) -> Path:
        """``report.html`` of a run from its validation predictions."""

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model's outputs mean as probabilities (softmax over classes)."""
        return logits.float().softmax(1)

    def calibrated(self, logits: torch.Tensor, targets: torch.Tensor) -> Task:
        """This task with its decision rule fitted on validation outputs (multi-label: the
        per-label thresholds); stateless tasks return themselves."""
        return self

    def for_run(self, run: RunFolder) -> Task:
        """This task with the decision rule a trained run stored (see :meth:`calibrated`)."""
        return self

    @abstractmethod
    def decode(
        self, names: Sequence[str], logits: torch.Tensor, labels: list[str], top_k: int = 1
    ) -> list[Prediction]:
        """Predictions for a batch of model outputs, one per input name."""

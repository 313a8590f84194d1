"""The task interface (see :mod:`headstart.tasks`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.console import RenderableType

from headstart.config import TrainConfig
from headstart.errors import HeadstartError
from headstart.evaluation.report import ValPredictions
from headstart.files import Prediction
from headstart.run import RunFolder


class Task(ABC):
    """What a model's outputs mean. Stateless; one instance per task in
    :data:`headstart.tasks.TASKS`."""

    name: ClassVar[str]
    #: the key of :meth:`metrics` that ranks runs and checkpoints (higher is better)
    score_key: ClassVar[str]
    #: the model takes the targets in its forward and returns what :meth:`loss` sums
    #: (detection: torchvision's detectors compute their losses against the boxes)
    model_takes_targets: ClassVar[bool] = False

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
    def metrics_table(self, metrics: dict[str, Any], title: str) -> RenderableType:
        """The printed summary of one split's :meth:`metrics` (a table; multi-task: one per
        task)."""

    def summary_line(self, metrics: dict[str, Any]) -> str:
        """One line of the headline numbers of :meth:`metrics` (``headstart evaluate``)."""
        return (
            f"accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro_f1']:.4f}  "
            f"macro AUROC {metrics['macro_auroc']:.4f}"
        )

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
        """This task with the decision rule a trained run stored (see :meth:`calibrated`) and,
        for a task with several heads, the run's classes (see :meth:`for_classes`)."""
        return self

    def for_classes(self, config: TrainConfig, classes: Sequence[str]) -> Task:
        """This task for a new run's classes (multi-task: how the outputs split into
        tasks); tasks that need nothing from the classes return themselves."""
        return self

    def export_fields(self, classes: list[str]) -> dict[str, Any]:
        """What an exported model's metadata needs to decode its outputs beyond the labels
        (multi-label: the thresholds; multi-task: each task's classes)."""
        return {}

    @abstractmethod
    def decode(
        self, names: Sequence[str], logits: torch.Tensor, labels: list[str], top_k: int = 1
    ) -> list[Prediction]:
        """Predictions for a batch of model outputs, one per input name."""


def refuse_unsupported(refused: dict[str, bool], message: str) -> None:
    """Raise :class:`~headstart.errors.HeadstartError` naming every option of ``refused`` that
    is on: ``message`` with ``{options}`` filled in (a task's ``check_config``)."""
    bad = [name for name, on in refused.items() if on]
    if bad:
        raise HeadstartError(message.format(options=", ".join(bad)))


def refuse_dense_unsupported(config: TrainConfig, task: str) -> None:
    """What a dense task (segmentation, detection) refuses: options that act on one label per
    image, few-shot/LoRA, other heads, feature views and domain adaptation; the message names
    ``docs/<task>.md``."""
    refused = {
        "--label-smoothing": config.label_smoothing > 0,
        "--mixup/--cutmix": config.mixup > 0 or config.cutmix > 0,
        "--sampler balanced": config.sampler == "balanced",
        "--class-weights auto": config.class_weights == "auto",
        "--strategy few-shot/lora": config.strategy in ("few-shot", "lora"),
        "--head cosine/semantic/mlp": config.head in ("cosine", "semantic", "mlp"),
        "--feature-views": config.feature_views > 1,
        "--adapt (domain adaptation)": config.adapt != "none",
    }
    refuse_unsupported(
        refused, f"{task} does not support {{options}} (see docs/{task}.md); drop the option(s)"
    )

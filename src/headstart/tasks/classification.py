"""Single-label classification: one class per example, softmax + cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from rich.table import Table

from headstart.evaluation.metrics import classification_metrics, metrics_table
from headstart.evaluation.report import ValPredictions, write_report
from headstart.files import Prediction
from headstart.run import RunFolder
from headstart.tasks.base import Task


class SingleLabelClassification(Task):
    """Cross-entropy (class weights, label smoothing) on logits; accuracy, macro F1/AUROC,
    per-class precision/recall/F1 and the confusion matrix; top-k predictions."""

    name: ClassVar[str] = "single-label"
    score_key: ClassVar[str] = "accuracy"

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=label_smoothing)

    def batch_score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(1) == targets).float().mean()

    def metrics(
        self, logits: torch.Tensor, targets: torch.Tensor, classes: list[str]
    ) -> dict[str, Any]:
        return classification_metrics(logits, targets, classes)

    def metrics_table(self, metrics: dict[str, Any], title: str) -> Table:
        return metrics_table(metrics, title)

    def write_report(self, run: RunFolder, predictions: ValPredictions) -> Path:
        return write_report(run, predictions)

    def decode(
        self, names: Sequence[str], logits: torch.Tensor, labels: list[str], top_k: int = 1
    ) -> list[Prediction]:
        probs = logits.float().softmax(1).numpy()
        return [
            Prediction.from_probabilities(name, p, labels, top_k)
            for name, p in zip(names, probs, strict=True)
        ]

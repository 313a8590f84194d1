"""Multi-label classification: a set of labels per example, one sigmoid per label + binary
cross-entropy, per-label decision thresholds tuned on validation (docs/multilabel.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from rich.markup import escape
from rich.table import Table
from torchmetrics.functional.classification import (
    multilabel_average_precision,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

from headstart.config import TrainConfig
from headstart.evaluation.multilabel_report import write_multilabel_report
from headstart.evaluation.report import ValPredictions
from headstart.files import Prediction
from headstart.run import RunFolder
from headstart.tasks.base import Task, refuse_unsupported

#: the candidate thresholds of the per-label search (0.05, 0.10, ..., 0.95)
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def tune_thresholds(probs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per label, the threshold of :data:`THRESHOLD_GRID` with the highest F1 on these
    outputs (ties: the one closest to 0.5); 0.5 for a label with no positive example."""
    p = probs.float().numpy()[:, :, None] >= THRESHOLD_GRID  # (N, L, T)
    t = targets.numpy().astype(bool)[:, :, None]
    tp = (p & t).sum(0)
    fp = (p & ~t).sum(0)
    fn = (~p & t).sum(0)
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)  # (L, T)
    closeness = -np.abs(THRESHOLD_GRID - 0.5)
    best = np.lexsort((np.broadcast_to(closeness, f1.shape), f1), axis=1)[:, -1]
    out = [float(THRESHOLD_GRID[b]) for b in best]
    return [0.5 if not t[:, j, 0].any() else v for j, v in enumerate(out)]


def multilabel_metrics(
    logits: torch.Tensor, targets: torch.Tensor, classes: list[str], thresholds: Sequence[float]
) -> dict[str, Any]:
    """macro/micro average precision and F1 (at ``thresholds``), exact-match accuracy, and per
    label precision/recall/F1/AP/support/threshold (torchmetrics). Macro averages cover the
    labels with a positive example (AP and recall are undefined for the others)."""
    n = len(classes)
    probs = logits.float().sigmoid()
    y = targets.long()
    pred = (probs >= torch.tensor(thresholds)).long()  # binary: torchmetrics' 0.5 keeps them
    per_ap = multilabel_average_precision(probs, y, n, average=None)
    per_p = multilabel_precision(pred, y, n, average=None, zero_division=0)
    per_r = multilabel_recall(pred, y, n, average=None, zero_division=0)
    per_f = multilabel_f1_score(pred, y, n, average=None, zero_division=0)
    support = y.sum(0)
    present = support > 0
    return {
        "samples": len(y),
        "accuracy": float((pred == y).all(1).float().mean()),  # exact match (subset accuracy)
        "macro_ap": float(per_ap[present].mean()) if present.any() else float("nan"),
        "micro_ap": float(multilabel_average_precision(probs, y, n, average="micro")),
        "macro_f1": float(per_f[present].mean()) if present.any() else 0.0,
        "micro_f1": float(multilabel_f1_score(pred, y, n, average="micro", zero_division=0)),
        "loss": float(F.binary_cross_entropy_with_logits(logits.float(), targets.float())),
        "thresholds": {c: float(thresholds[i]) for i, c in enumerate(classes)},
        "per_label": {
            c: {
                "precision": float(per_p[i]),
                "recall": float(per_r[i]),
                "f1": float(per_f[i]),
                "ap": float(per_ap[i]) if present[i] else None,
                "support": int(support[i]),
                "threshold": float(thresholds[i]),
            }
            for i, c in enumerate(classes)
        },
    }


def check_config(config: TrainConfig) -> None:
    """Refuse settings multi-label training does not support, naming each."""
    refused = {
        "--label-smoothing": config.label_smoothing > 0,
        "--mixup/--cutmix": config.mixup > 0 or config.cutmix > 0,
        "--sampler balanced": config.sampler == "balanced",
        "--strategy few-shot": config.strategy == "few-shot",
        "--head cosine/semantic": config.head in ("cosine", "semantic"),
        "--adapt (domain adaptation)": config.adapt != "none",
    }
    refuse_unsupported(
        refused,
        "multi-label classification does not support {options} yet "
        "(see docs/multilabel.md); drop the option(s) or use single-label data",
    )


class MultiLabelClassification(Task):
    """One sigmoid per label, ``BCEWithLogitsLoss`` (``weight``: per-label ``pos_weight``);
    per-label thresholds tuned on validation; decode gives every label at or above its
    threshold. ``batch_score`` (``train_acc``/``val_acc`` in log.csv) is micro F1 at 0.5."""

    name: ClassVar[str] = "multi-label"
    score_key: ClassVar[str] = "macro_ap"

    def __init__(self, thresholds: Sequence[float] | None = None) -> None:
        self.thresholds = list(thresholds) if thresholds is not None else None

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=weight)

    def batch_score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pred = logits > 0
        t = targets > 0.5
        tp = (pred & t).sum()
        return 2 * tp / (2 * tp + (pred & ~t).sum() + (~pred & t).sum()).clamp(min=1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid()

    def calibrated(self, logits: torch.Tensor, targets: torch.Tensor) -> Task:
        return MultiLabelClassification(tune_thresholds(logits.float().sigmoid(), targets))

    def for_run(self, run: RunFolder) -> Task:
        stored = run.load_metrics().get("val", {}).get("thresholds")
        classes = run.load_classes()
        if not stored:
            return MultiLabelClassification([0.5] * len(classes))
        return MultiLabelClassification([float(stored[c]) for c in classes])

    def _thresholds(self, n: int) -> list[float]:
        return self.thresholds if self.thresholds is not None else [0.5] * n

    def metrics(
        self, logits: torch.Tensor, targets: torch.Tensor, classes: list[str]
    ) -> dict[str, Any]:
        return multilabel_metrics(logits, targets, classes, self._thresholds(len(classes)))

    def metrics_table(self, metrics: dict[str, Any], title: str) -> Table:
        t = Table(title=title, show_footer=True)
        t.add_column("label", footer="overall")
        t.add_column("precision", justify="right")
        t.add_column("recall", justify="right", footer=f"micro F1 {metrics['micro_f1']:.3f}")
        t.add_column("f1", justify="right", footer=f"{metrics['macro_f1']:.3f}")
        t.add_column("AP", justify="right", footer=f"{metrics['macro_ap']:.3f}")
        t.add_column("threshold", justify="right")
        t.add_column("support", justify="right", footer=str(metrics["samples"]))
        for c, m in metrics["per_label"].items():
            ap = "-" if m["ap"] is None else f"{m['ap']:.3f}"
            t.add_row(
                escape(c), f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", ap,
                f"{m['threshold']:.2f}", str(m["support"]),
            )  # fmt: skip
        return t

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return (
            f"macro AP {metrics['macro_ap']:.4f}  micro AP {metrics['micro_ap']:.4f}  micro F1 "
            f"{metrics['micro_f1']:.4f}  exact-match accuracy {metrics['accuracy']:.4f}"
        )

    def export_fields(self, classes: list[str]) -> dict[str, Any]:
        """Sigmoid outputs, a label set above each label's threshold."""
        return {"task": self.name, "thresholds": self._thresholds(len(classes))}

    def write_report(self, run: RunFolder, predictions: ValPredictions) -> Path:
        return write_multilabel_report(run, predictions)

    def decode(
        self, names: Sequence[str], logits: torch.Tensor, labels: list[str], top_k: int = 1
    ) -> list[Prediction]:
        probs = logits.float().sigmoid().numpy()
        thresholds = self._thresholds(len(labels))
        return [
            Prediction.from_label_probabilities(name, p, labels, thresholds, top_k)
            for name, p in zip(names, probs, strict=True)
        ]

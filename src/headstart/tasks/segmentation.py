"""Semantic segmentation: one class per pixel, per-pixel softmax + cross-entropy with
``ignore_index=255``; IoU per class, mIoU and pixel accuracy (torchmetrics); report overlays
(docs/segmentation.md)."""

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
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_jaccard_index,
)

from headstart.config import TrainConfig
from headstart.data.segmentation import IGNORE_INDEX
from headstart.evaluation.report import ValPredictions
from headstart.evaluation.segmentation_report import write_segmentation_report
from headstart.files import Prediction
from headstart.run import RunFolder
from headstart.tasks.base import Task, refuse_dense_unsupported


def segmentation_metrics(
    logits: torch.Tensor, targets: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """Per-class IoU and pixel accuracy, mIoU (mean over the classes present in the truth or
    the prediction), overall pixel accuracy and the loss; pixels marked 255 are left out."""
    n = len(classes)
    pred = logits.argmax(1).flatten()
    y = targets.long().flatten()
    iou = multiclass_jaccard_index(pred, y, n, average=None, ignore_index=IGNORE_INDEX)
    per_acc = multiclass_accuracy(pred, y, n, average=None, ignore_index=IGNORE_INDEX)
    cm = multiclass_confusion_matrix(pred, y, n, ignore_index=IGNORE_INDEX)  # rows: truth
    support, predicted = cm.sum(1), cm.sum(0)
    seen = (support + predicted) > 0
    loss = F.cross_entropy(logits.float(), targets.long(), ignore_index=IGNORE_INDEX)
    return {
        "samples": len(targets),
        "pixels": int(support.sum()),
        "miou": float(iou[seen].mean()) if seen.any() else float("nan"),
        "pixel_accuracy": float(cm.diag().sum() / cm.sum().clamp(min=1)),
        "accuracy": float(cm.diag().sum() / cm.sum().clamp(min=1)),  # = pixel accuracy
        "loss": float(loss),
        "per_class": {
            c: {
                "iou": float(iou[i]) if seen[i] else None,
                "accuracy": float(per_acc[i]) if support[i] else None,
                "pixels": int(support[i]),
                "predicted_pixels": int(predicted[i]),
            }
            for i, c in enumerate(classes)
        },
    }


def check_config(config: TrainConfig) -> None:
    """Refuse settings segmentation training does not support, naming each."""
    refuse_dense_unsupported(config, "segmentation")


class SemanticSegmentation(Task):
    """Logits ``(N, K, H, W)`` at the input size; masks ``(N, H, W)`` of class indices with
    255 = ignore. ``batch_score`` (``train_acc``/``val_acc`` in log.csv) is pixel accuracy;
    the task's score (``score_key``) is mIoU."""

    name: ClassVar[str] = "segmentation"
    score_key: ClassVar[str] = "miou"

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        return F.cross_entropy(logits, targets.long(), weight=weight, ignore_index=IGNORE_INDEX)

    def batch_score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        valid = targets != IGNORE_INDEX
        right = (logits.argmax(1) == targets) & valid
        return right.sum() / valid.sum().clamp(min=1)

    def metrics(
        self, logits: torch.Tensor, targets: torch.Tensor, classes: list[str]
    ) -> dict[str, Any]:
        return segmentation_metrics(logits, targets, classes)

    def metrics_table(self, metrics: dict[str, Any], title: str) -> Table:
        t = Table(title=title, show_footer=True)
        t.add_column("class", footer="overall")
        t.add_column("IoU", justify="right", footer=f"mIoU {metrics['miou']:.3f}")
        t.add_column(
            "pixel acc", justify="right", footer=f"{100 * metrics['pixel_accuracy']:.2f} %"
        )
        t.add_column("true pixels", justify="right", footer=str(metrics["pixels"]))
        t.add_column("predicted pixels", justify="right")
        for c, m in metrics["per_class"].items():
            iou = "-" if m["iou"] is None else f"{m['iou']:.3f}"
            acc = "-" if m["accuracy"] is None else f"{100 * m['accuracy']:.1f} %"
            t.add_row(escape(c), iou, acc, str(m["pixels"]), str(m["predicted_pixels"]))
        return t

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_accuracy']:.4f}"

    def write_report(self, run: RunFolder, predictions: ValPredictions) -> Path:
        return write_segmentation_report(run, predictions)

    def decode(
        self, names: Sequence[str], logits: torch.Tensor, labels: list[str], top_k: int = 1
    ) -> list[Prediction]:
        """Per image, its mask at the model's input size and the classes by share of its
        pixels (see :func:`mask_prediction`); :func:`headstart.predict` gives the masks at
        each image's own size."""
        masks = logits.argmax(1).numpy().astype(np.uint8)
        return [
            mask_prediction(name, mask, labels, top_k)
            for name, mask in zip(names, masks, strict=True)
        ]


def mask_prediction(
    name: str, mask: np.ndarray, labels: Sequence[str], top_k: int = 1
) -> Prediction:
    """The prediction of one predicted mask (class index per pixel): ``mask`` itself, ``top``
    the ``top_k`` classes by share of its pixels (classes with no pixel left out), ``label`` /
    ``probability`` the largest class other than index 0 (the background) and its share, or
    the background when nothing else is predicted."""
    share = np.bincount(mask.ravel(), minlength=len(labels)) / max(mask.size, 1)
    top = [(labels[j], float(share[j])) for j in np.argsort(-share, kind="stable") if share[j] > 0]
    foreground = [(c, v) for c, v in top if c != labels[0]]
    best = foreground[0] if foreground else top[0]
    return Prediction(name, best[0], best[1], top[: max(1, top_k)], mask=mask)

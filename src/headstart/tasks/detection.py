"""Object detection: a torchvision detector's losses on the backbone's stages (Faster R-CNN,
RetinaNet or SSDlite, ``--detector``); mAP (torchmetrics
``MeanAveragePrecision``, COCO evaluation) overall, at IoU 0.5 and 0.75, and per class; report
grids of validation images with true and predicted boxes (docs/detection.md).

Outputs and targets are tensors like every task's, so training, evaluation and the report run
unchanged: the model takes the targets in its forward (:attr:`Task.model_takes_targets`) and
returns its loss terms (:mod:`headstart.models.detection_heads`); evaluation collects padded
detections ``(N, D, 6)`` and padded true boxes ``(N, M, 5)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.markup import escape
from rich.table import Table

from headstart.config import TrainConfig
from headstart.evaluation.detection_report import write_detection_report
from headstart.evaluation.report import ValPredictions
from headstart.files import Prediction
from headstart.models.detection_heads import SCORE_THRESHOLD, detection_f1
from headstart.run import RunFolder
from headstart.tasks.base import Task, refuse_dense_unsupported


def coco_lists(
    detections: torch.Tensor, targets: torch.Tensor
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Padded detections and box rows -> torchmetrics' per-image ``preds`` and ``target``
    dicts (padding dropped; class indices as labels)."""
    preds, truth = [], []
    for det, rows in zip(detections.float(), targets.float(), strict=True):
        det = det[det[:, 5] >= 0]
        rows = rows[rows[:, 0] >= 0]
        preds.append({"boxes": det[:, :4], "scores": det[:, 4], "labels": det[:, 5].long()})
        truth.append({"boxes": rows[:, 1:], "labels": rows[:, 0].long()})
    return preds, truth


def _per_class(result: dict[str, torch.Tensor], n: int) -> list[float | None]:
    """``map_per_class`` by class index (``None`` for a class absent from truth and
    predictions, or one torchmetrics scores -1: no true box)."""
    out: list[float | None] = [None] * n
    ids = result["classes"].flatten().tolist()
    values = result["map_per_class"].flatten().tolist()
    for c, v in zip(ids, values, strict=True):
        if 0 <= int(c) < n and v >= 0:
            out[int(c)] = float(v)
    return out


def detection_metrics(
    detections: torch.Tensor, targets: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """mAP@[.5:.95] (``map``), mAP@0.5 (``map_50``), mAP@0.75, mean recall at 100 detections
    and, per class, AP@[.5:.95], AP@0.5, true and predicted (score >= 0.5) box counts; ``f1_50``
    is the F1 at IoU 0.5 of the detections scoring >= 0.5 (``val_acc`` in log.csv)."""
    from torchmetrics.detection import MeanAveragePrecision

    preds, truth = coco_lists(detections, targets)
    # every process holds all the outputs (under DDP too): no syncing between processes
    kw: dict[str, Any] = {"box_format": "xyxy", "iou_type": "bbox", "class_metrics": True,
                          "sync_on_compute": False}  # fmt: skip
    coco = MeanAveragePrecision(**kw)
    coco.update(preds, truth)
    at_50 = MeanAveragePrecision(iou_thresholds=[0.5], **kw)
    at_50.update(preds, truth)
    r, r50 = coco.compute(), at_50.compute()
    n = len(classes)
    ap, ap50 = _per_class(r, n), _per_class(r50, n)
    true_counts = torch.bincount(torch.cat([t["labels"] for t in truth]), minlength=n)
    confident = torch.cat([p["labels"][p["scores"] >= SCORE_THRESHOLD] for p in preds])
    said_counts = torch.bincount(confident, minlength=n)
    return {
        "samples": len(targets),
        "boxes": int(true_counts.sum()),
        "map": float(r["map"]),
        "map_50": float(r["map_50"]),
        "map_75": float(r["map_75"]),
        "mar_100": float(r["mar_100"]),
        "f1_50": float(detection_f1(detections, targets)),
        "per_class": {
            c: {
                "ap": ap[i],
                "ap_50": ap50[i],
                "boxes": int(true_counts[i]),
                "predicted_boxes": int(said_counts[i]),
            }
            for i, c in enumerate(classes)
        },
    }


def check_config(config: TrainConfig) -> None:
    """Refuse settings detection training does not support, naming each."""
    refuse_dense_unsupported(config, "detection")


def _fmt(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.3f}"


class ObjectDetection(Task):
    """Detections ``(N, D, 6)`` ``[x1, y1, x2, y2, score, class]`` and box rows ``(N, M, 5)``
    ``[class, x1, y1, x2, y2]``, both normalised to ``[0, 1]`` and padded (class ``-1``). In
    training the model's "logits" are its detector's loss terms followed by the batch's F1 at
    IoU 0.5 (in validation, logged as ``val_acc``; NaN in training: ``train_acc`` is not
    computed). The task's score (``score_key``) is mAP@[.5:.95]."""

    name: ClassVar[str] = "detection"
    score_key: ClassVar[str] = "map"
    model_takes_targets: ClassVar[bool] = True

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        return logits[:-1].sum()  # the last entry is the batch's F1

    def batch_score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return logits[-1]

    def metrics(
        self, logits: torch.Tensor, targets: torch.Tensor, classes: list[str]
    ) -> dict[str, Any]:
        return detection_metrics(logits, targets, classes)

    def metrics_table(self, metrics: dict[str, Any], title: str) -> Table:
        t = Table(title=title, show_footer=True)
        t.add_column("class", footer="overall")
        t.add_column("AP@[.5:.95]", justify="right", footer=f"mAP {metrics['map']:.3f}")
        t.add_column("AP@0.5", justify="right", footer=f"mAP@0.5 {metrics['map_50']:.3f}")
        t.add_column("true boxes", justify="right", footer=str(metrics["boxes"]))
        t.add_column(f"predicted (score >= {SCORE_THRESHOLD})", justify="right")
        for c, m in metrics["per_class"].items():
            t.add_row(escape(c), _fmt(m["ap"]), _fmt(m["ap_50"]), str(m["boxes"]),
                      str(m["predicted_boxes"]))  # fmt: skip
        return t

    def summary_line(self, metrics: dict[str, Any]) -> str:
        return (
            f"mAP {metrics['map']:.4f}  mAP@0.5 {metrics['map_50']:.4f}  "
            f"mAP@0.75 {metrics['map_75']:.4f}  F1@0.5 {metrics['f1_50']:.4f}"
        )

    def write_report(self, run: RunFolder, predictions: ValPredictions) -> Path:
        return write_detection_report(run, predictions)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The detections as they are (scores are already probabilities)."""
        return logits.float()

    def decode(
        self, names: Sequence[str], logits: torch.Tensor, labels: list[str], top_k: int = 1
    ) -> list[Prediction]:
        """Per image, each class's best detection score (``label``: the most confident
        detection's class; no detection: the first class at 0); the boxes themselves come from
        :func:`headstart.export.detection.predict_boxes`."""
        out = []
        for name, det in zip(names, logits.float(), strict=True):
            best = torch.zeros(len(labels))
            for row in det[det[:, 5] >= 0]:
                c = int(row[5])
                best[c] = max(float(best[c]), float(row[4]))
            out.append(Prediction.from_probabilities(name, best.numpy(), labels, top_k))
        return out

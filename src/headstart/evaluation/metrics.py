"""Overall and per-class classification metrics from logits (torchmetrics)."""

from __future__ import annotations

from typing import Any

import torch
from rich.markup import escape
from rich.table import Table
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro F1, macro AUROC, per-class precision/recall/F1/support, confusion matrix
    (rows: true class, columns: predicted)."""
    n = len(classes)
    logits = logits.float()
    targets = targets.long()
    probs = logits.softmax(1)
    per_p = multiclass_precision(probs, targets, n, average=None, zero_division=0)
    per_r = multiclass_recall(probs, targets, n, average=None, zero_division=0)
    per_f = multiclass_f1_score(probs, targets, n, average=None, zero_division=0)
    support = torch.bincount(targets, minlength=n)
    present = support > 0
    auroc = float("nan")
    if int(present.sum()) >= 2:
        auroc = float(multiclass_auroc(probs, targets, n, average="macro"))
    return {
        "samples": len(targets),
        "accuracy": float(multiclass_accuracy(probs, targets, n, average="micro")),
        "macro_f1": float(per_f[present].mean()) if present.any() else 0.0,
        "macro_auroc": auroc,
        "loss": float(torch.nn.functional.cross_entropy(logits, targets)),
        "per_class": {
            c: {
                "precision": float(per_p[i]),
                "recall": float(per_r[i]),
                "f1": float(per_f[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": multiclass_confusion_matrix(probs, targets, n).tolist(),
    }


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """A rich table of per-class metrics with an overall footer."""
    t = Table(title=title, show_footer=True)
    t.add_column("class", footer="overall")
    t.add_column("precision", justify="right")
    t.add_column("recall", justify="right", footer=f"acc {metrics['accuracy']:.3f}")
    t.add_column("f1", justify="right", footer=f"{metrics['macro_f1']:.3f}")
    t.add_column("support", justify="right", footer=str(metrics["samples"]))
    for c, m in metrics["per_class"].items():
        t.add_row(
            escape(c),
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['f1']:.3f}",
            str(m["support"]),
        )
    return t

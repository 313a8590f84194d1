"""Evaluation: metrics (torchmetrics) and their presentation."""

from headstart.evaluation.metrics import classification_metrics, metrics_table

__all__ = ["classification_metrics", "metrics_table"]

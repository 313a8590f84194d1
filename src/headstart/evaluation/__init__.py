"""Evaluation: metrics (torchmetrics), model outputs over datasets, the report, loading a
trained run, and transferability scores (LogME, H-score) and the linear probe."""

from headstart.evaluation.metrics import classification_metrics, metrics_table
from headstart.evaluation.predict import predict_logits

__all__ = ["classification_metrics", "metrics_table", "predict_logits"]

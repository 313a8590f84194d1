"""Tasks: what a run predicts. A :class:`~headstart.tasks.base.Task` owns the loss, the
metrics (torchmetrics), decoding probabilities into predictions, and the report.

Single-label classification is the one task today; multi-label, multi-task, detection and
segmentation are each one more module here (see docs/architecture.md). Training, evaluation,
prediction and the report call the task's methods and never ask which task it is.
"""

from __future__ import annotations

from headstart.config import TrainConfig
from headstart.tasks.base import Task
from headstart.tasks.classification import SingleLabelClassification

TASKS: dict[str, Task] = {t.name: t for t in (SingleLabelClassification(),)}


def task_for(config: TrainConfig) -> Task:
    """The task a training config describes (single-label classification today)."""
    return TASKS["single-label"]


__all__ = ["TASKS", "SingleLabelClassification", "Task", "task_for"]

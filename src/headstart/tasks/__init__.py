"""Tasks: what a run predicts. A :class:`~headstart.tasks.base.Task` owns the loss, the
metrics (torchmetrics), decoding probabilities into predictions, and the report.

Single-label and multi-label classification are built; multi-task, detection and
segmentation would each be one more module here (see docs/architecture.md). Training, evaluation,
prediction and the report call the task's methods and never ask which task it is.
"""

from __future__ import annotations

from headstart.config import TrainConfig
from headstart.data.segmentation import is_segmentation_config
from headstart.errors import DataError
from headstart.tasks import segmentation
from headstart.tasks.base import Task
from headstart.tasks.classification import SingleLabelClassification
from headstart.tasks.multilabel import MultiLabelClassification, check_config
from headstart.tasks.segmentation import SemanticSegmentation

TASKS: dict[str, Task] = {
    t.name: t
    for t in (SingleLabelClassification(), MultiLabelClassification(), SemanticSegmentation())
}


def task_for(config: TrainConfig, multi_label: bool | None = None) -> Task:
    """The task a training config describes: ``config.task``, or for ``auto`` what the data
    holds (``multi_label``: the loaded splits are multi-label; ``None``: not known, i.e.
    single-label). A multi-label task checks the config supports it."""
    name = config.task
    if is_segmentation_config(config):  # --task segmentation, or auto on images/ + masks/
        name = "segmentation"
        segmentation.check_config(config)
    elif name == "auto":
        name = "multi-label" if multi_label else "single-label"
    elif name == "multi-label" and multi_label is False:
        raise DataError(
            "--task multi-label needs a CSV with 'path,labels' columns (image data; "
            "see docs/multilabel.md)"
        )
    if name == "multi-label":
        check_config(config)
    return TASKS[name]


__all__ = [
    "TASKS",
    "MultiLabelClassification",
    "SemanticSegmentation",
    "SingleLabelClassification",
    "Task",
    "task_for",
]

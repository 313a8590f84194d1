"""Tasks: what a run predicts. A :class:`~headstart.tasks.base.Task` owns the loss, the
metrics (torchmetrics), decoding probabilities into predictions, and the report.

Single-label, multi-label and multi-task classification, semantic segmentation and object
detection are built (see docs/architecture.md). Training, evaluation,
prediction and the report call the task's methods and never ask which task it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from headstart.config import TrainConfig
from headstart.data.detection import is_detection_config
from headstart.data.segmentation import is_segmentation_config
from headstart.errors import DataError
from headstart.tasks import detection, multilabel, multitask, segmentation
from headstart.tasks.base import Task
from headstart.tasks.classification import SingleLabelClassification
from headstart.tasks.detection import ObjectDetection
from headstart.tasks.multilabel import MultiLabelClassification
from headstart.tasks.multitask import MultiTaskClassification
from headstart.tasks.segmentation import SemanticSegmentation

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        SingleLabelClassification(),
        MultiLabelClassification(),
        MultiTaskClassification(),
        SemanticSegmentation(),
        ObjectDetection(),
    )
}


def task_for(
    config: TrainConfig, multi_label: bool | None = None, classes: Sequence[str] | None = None
) -> Task:
    """The task a training config describes: ``config.task``, or for ``auto`` what the data
    holds (``multi_label``: the loaded splits are multi-label; ``None``: not known, i.e.
    single-label; 2+ ``--label-columns``: multi-task). Multi-label and multi-task check the
    config supports them; ``classes`` (the loaded splits') sets up a multi-task task's heads
    (else :meth:`Task.for_run` does)."""
    name: str = config.task
    if is_segmentation_config(config):  # --task segmentation, or auto on images/ + masks/
        name = "segmentation"
        segmentation.check_config(config)
    elif is_detection_config(config):  # --task detection, or auto on a COCO file
        name = "detection"
        detection.check_config(config)
    elif name == "auto":
        multi = "multi-task" if config.multi_task else "multi-label"
        name = multi if multi_label or config.multi_task else "single-label"
    elif name == "multi-label" and multi_label is False:
        raise DataError(
            "--task multi-label needs a CSV with 'path,labels' columns (image data; "
            "see docs/multilabel.md)"
        )
    if name == "multi-label":
        multilabel.check_config(config)
    if name == "multi-task":
        multitask.check_config(config)
    task = TASKS[name]
    return task.for_classes(config, classes) if classes is not None else task


__all__ = [
    "TASKS",
    "MultiLabelClassification",
    "MultiTaskClassification",
    "ObjectDetection",
    "SemanticSegmentation",
    "SingleLabelClassification",
    "Task",
    "task_for",
]

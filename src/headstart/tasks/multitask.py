"""Multi-task classification: several single-label tasks (CSV label columns) on one backbone.

The head is one linear layer over the tasks' concatenated classes; each task owns its slice of
the outputs (a softmax and a cross-entropy per slice). The run's ``classes.json`` lists the
classes as ``task:class`` names grouped by task, in ``--label-columns`` order, so the slices
are known from the class list alone (docs/multitask.md)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from rich.console import Group, RenderableType
from rich.text import Text

from headstart.config import TrainConfig
from headstart.data.scan import split_task_class
from headstart.errors import HeadstartError
from headstart.evaluation.metrics import classification_metrics, metrics_table
from headstart.evaluation.multitask_report import write_multitask_report
from headstart.evaluation.report import ValPredictions
from headstart.files import Prediction
from headstart.run import RunFolder
from headstart.tasks.base import Task, refuse_unsupported


class Head:
    """One task's slice of the outputs: ``logits[:, start:stop]`` are ``classes``."""

    def __init__(self, name: str, classes: list[str], start: int) -> None:
        self.name, self.classes, self.start = name, classes, start
        self.stop = start + len(classes)


def heads_of(classes: Sequence[str]) -> list[Head]:
    """The task slices of a multi-task class list (``task:class`` names grouped by task)."""
    heads: list[Head] = []
    for i, name in enumerate(classes):
        task, value = split_task_class(name)
        if not heads or heads[-1].name != task:
            if any(h.name == task for h in heads):
                raise HeadstartError(f"multi-task classes are not grouped by task: {name!r}")
            heads.append(Head(task, [], i))
        heads[-1].classes.append(value)
        heads[-1].stop = i + 1
    return heads


def check_config(config: TrainConfig) -> None:
    """Refuse settings multi-task training does not support, naming each."""
    refused = {
        "--mixup/--cutmix": config.mixup > 0 or config.cutmix > 0,
        "--sampler balanced": config.sampler == "balanced",
        "--class-weights auto": config.class_weights == "auto",
        "--strategy few-shot": config.strategy == "few-shot",
        "--head cosine/semantic": config.head in ("cosine", "semantic"),
        "--adapt (domain adaptation)": config.adapt != "none",
        "text data": config.text_column is not None or config.model.startswith("text:"),
    }
    refuse_unsupported(
        refused,
        "multi-task classification does not support {options} yet "
        "(see docs/multitask.md); drop the option(s)",
    )


class MultiTaskClassification(Task):
    """A softmax cross-entropy per task, summed with ``--task-weights``; per-task metrics
    (accuracy, macro F1, confusion matrix) under the task's name, and their mean accuracy as
    the score. ``batch_score`` (``train_acc``/``val_acc`` in log.csv) is the mean task
    accuracy. Built for a class list (:meth:`for_classes`, :meth:`for_run`)."""

    name: ClassVar[str] = "multi-task"
    score_key: ClassVar[str] = "accuracy"

    def __init__(self, classes: Sequence[str] | None = None, weights: Sequence[float] = ()) -> None:
        self.heads = heads_of(classes) if classes is not None else []
        self.weights = list(weights) or [1.0] * len(self.heads)
        if self.heads and len(self.weights) != len(self.heads):
            raise HeadstartError(
                f"--task-weights gives {len(self.weights)} weights for {len(self.heads)} tasks"
            )

    def for_classes(self, config: TrainConfig, classes: Sequence[str]) -> Task:
        return MultiTaskClassification(classes, config.task_weights)

    def for_run(self, run: RunFolder) -> Task:
        return MultiTaskClassification(run.load_classes(), run.load_config().task_weights)

    def _heads(self, classes: Sequence[str] | None = None) -> list[Head]:
        heads = heads_of(classes) if classes is not None else self.heads
        if not heads:
            raise HeadstartError("a multi-task task needs its classes (for_classes / for_run)")
        return heads

    def loss(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        *,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        total = logits.new_zeros(())
        for t, (h, w) in enumerate(zip(self._heads(), self.weights, strict=True)):
            part = F.cross_entropy(
                logits[:, h.start : h.stop], targets[:, t] - h.start,
                label_smoothing=label_smoothing,
            )  # fmt: skip
            total = total + w * part
        return total

    def batch_score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hits = [
            (logits[:, h.start : h.stop].argmax(1) == targets[:, t] - h.start).float().mean()
            for t, h in enumerate(self._heads())
        ]
        return torch.stack(hits).mean()

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Each task's softmax over its own classes, side by side (rows sum to the number of
        tasks)."""
        return torch.cat([logits[:, h.start : h.stop].float().softmax(1) for h in self._heads()], 1)

    def metrics(
        self, logits: torch.Tensor, targets: torch.Tensor, classes: list[str]
    ) -> dict[str, Any]:
        heads = self._heads(classes)
        per_task = {
            h.name: classification_metrics(
                logits[:, h.start : h.stop], targets[:, t].long() - h.start, h.classes
            )
            for t, h in enumerate(heads)
        }
        weights = self.weights if len(self.weights) == len(heads) else [1.0] * len(heads)
        return {
            "samples": len(targets),
            "accuracy": sum(m["accuracy"] for m in per_task.values()) / len(heads),
            "macro_f1": sum(m["macro_f1"] for m in per_task.values()) / len(heads),
            "loss": sum(w * m["loss"] for w, m in zip(weights, per_task.values(), strict=True)),
            "tasks": [h.name for h in heads],
            "task_weights": weights,
            **per_task,
        }

    def metrics_table(self, metrics: dict[str, Any], title: str) -> RenderableType:
        tables: list[RenderableType] = [
            metrics_table(metrics[t], f"{title}, task {t}") for t in metrics["tasks"]
        ]
        tables.append(Text(self.summary_line(metrics)))
        return Group(*tables)

    def summary_line(self, metrics: dict[str, Any]) -> str:
        per = "  ".join(f"{t} {metrics[t]['accuracy']:.4f}" for t in metrics["tasks"])
        return (
            f"mean task accuracy {metrics['accuracy']:.4f}  mean macro F1 "
            f"{metrics['macro_f1']:.4f}  per task: {per}"
        )

    def write_report(self, run: RunFolder, predictions: ValPredictions) -> Path:
        return write_multitask_report(run, predictions)

    def export_fields(self, classes: list[str]) -> dict[str, Any]:
        return {"task": self.name, "tasks": {h.name: h.classes for h in self._heads(classes)}}

    def decode(
        self, names: Sequence[str], logits: torch.Tensor, labels: list[str], top_k: int = 1
    ) -> list[Prediction]:
        heads = self._heads(labels)
        probs = self.probabilities(logits).numpy()
        tasks = [(h.name, h.classes) for h in heads]
        return [
            Prediction.from_task_probabilities(name, p, tasks, top_k)
            for name, p in zip(names, probs, strict=True)
        ]

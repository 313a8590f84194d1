"""``report.html`` of a multi-task run: summary with each task's accuracy, training curves, and
per task a section with its confusion matrix and per-class precision/recall (the figures of
:mod:`headstart.evaluation.report`), then validation images with every task's true and
predicted class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from headstart.evaluation.report import (
    ValPredictions,
    confusion_figure,
    curves_figure,
    figure_section,
    image_grid,
    paired_bars,
    read_log,
    show_image,
    write_page,
)
from headstart.run import RunFolder


def _examples(
    pred: ValPredictions, tasks: list[tuple[str, list[str], int]], k: int = 12
) -> Figure | None:
    """Validation images, those with a wrong task first, titled per task ``true -> pred``.
    ``tasks``: ``(name, classes, first output column)`` in output order."""
    if not len(pred.paths):
        return None
    probs, targets = pred.probs.numpy(), pred.targets.numpy()
    said = np.stack(
        [probs[:, s : s + len(c)].argmax(1) + s for _, c, s in tasks], 1
    )  # (N, T) class columns
    wrong = (said != targets).any(1)
    order = sorted(range(len(pred.paths)), key=lambda i: (not bool(wrong[i]), i))[:k]
    fig, axes = image_grid(len(order), 2.6, 1.9 + 0.3 * len(tasks))
    for ax, i in zip(axes, order, strict=False):
        show_image(ax, pred.paths[i])
        lines = [
            f"{name}: {classes[int(targets[i, t]) - s]} -> {classes[int(said[i, t]) - s]}"
            for t, (name, classes, s) in enumerate(tasks)
        ]
        ax.set_title("\n".join(lines), fontsize=7, color="C3" if wrong[i] else "k")
    fig.suptitle("validation images: per task true -> predicted (a wrong task first, in red)")
    fig.tight_layout()
    return fig


def _task_sections(out: Path, val: dict[str, Any]) -> list[str]:
    sections = []
    for i, task in enumerate(val.get("tasks", [])):  # files by index: task names are columns
        m = val[task]
        classes = list(m["per_class"])
        sections.append(
            f"<h2>task {task}: accuracy {100 * m['accuracy']:.2f} %, macro F1 "
            f"{m['macro_f1']:.3f}</h2>"
        )
        sections.append(
            figure_section(
                out, f"confusion_{i}", confusion_figure(np.array(m["confusion_matrix"]), classes),
                f"{task}: confusion matrix (validation)",
            )
        )  # fmt: skip
        bars = {k: [m["per_class"][c][k] for c in classes] for k in ("precision", "recall")}
        fig = paired_bars(classes, bars, f"{task}: per-class precision and recall (validation)")
        sections.append(figure_section(out, f"per_class_{i}", fig, f"{task}: per class"))
    return sections


def write_multitask_report(run: RunFolder, pred: ValPredictions | None = None) -> Path:
    """Write ``report.html`` and ``report/*.png`` for a multi-task run; returns the path."""
    metrics = run.load_metrics()
    info, val = metrics.get("run", {}), metrics.get("val", {})
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    log = read_log(run)
    curves = curves_figure(log, info.get("unfreeze_events", [])) if log else None
    sections = [figure_section(out, "curves", curves, "training curves (acc: mean over tasks)")]
    sections += _task_sections(out, val)
    if pred is not None and val:
        tasks, start = [], 0
        for task in val["tasks"]:
            classes = list(val[task]["per_class"])
            tasks.append((task, classes, start))
            start += len(classes)
        fig = _examples(pred, tasks)
        sections.append(figure_section(out, "examples", fig, "validation images"))
    rows = [
        ("model", f"{info.get('model', '')} ({info.get('weights', '')})"),
        ("strategy", info.get("strategy_plan", info.get("strategy", ""))),
        ("val mean task accuracy", f"{100 * val.get('accuracy', float('nan')):.2f} % on "
         f"{val.get('samples', '?')} samples"),
        *[(f"val {t} accuracy / macro F1", f"{100 * val[t]['accuracy']:.2f} % / "
           f"{val[t]['macro_f1']:.3f}") for t in val.get("tasks", [])],
        ("task weights", ", ".join(map(str, val.get("task_weights", [])))),
        ("epochs run", str(info.get("epochs_run", "?"))),
    ]  # fmt: skip
    return write_page(run, "multi-task", rows, "".join(sections))

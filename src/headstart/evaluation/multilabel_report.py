"""``report.html`` of a multi-label run: summary, training curves, per-label AP/F1 bars and
validation images with their true and predicted label sets (same Figure style as
:mod:`headstart.evaluation.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from headstart.evaluation.report import (
    ValPredictions,
    curves_figure,
    figure_section,
    image_grid,
    paired_bars,
    read_log,
    show_image,
    write_page,
)
from headstart.run import RunFolder


def _per_label(per_label: dict[str, dict[str, Any]]) -> Figure:
    labels = list(per_label)
    ap = [per_label[c]["ap"] if per_label[c]["ap"] is not None else 0.0 for c in labels]
    f1 = [per_label[c]["f1"] for c in labels]
    return paired_bars(
        labels, {"AP": ap, "F1 at its threshold": f1},
        "per-label average precision and F1 (validation)",
    )  # fmt: skip


def _examples(
    pred: ValPredictions, classes: list[str], thresholds: list[float], k: int = 12
) -> Figure | None:
    """Validation images, wrong label sets first, titled with true and predicted labels."""
    if not len(pred.paths):
        return None
    chosen = (pred.probs >= torch.tensor(thresholds)).numpy()
    truth = (pred.targets > 0.5).numpy()
    wrong = (chosen != truth).any(1)
    order = sorted(range(len(pred.paths)), key=lambda i: (not bool(wrong[i]), i))[:k]
    fig, axes = image_grid(len(order), 2.6, 2.8)
    for ax, i in zip(axes, order, strict=False):
        show_image(ax, pred.paths[i])
        true = ", ".join(c for j, c in enumerate(classes) if truth[i, j]) or "-"
        said = ", ".join(c for j, c in enumerate(classes) if chosen[i, j]) or "-"
        ax.set_title(f"true {true}\npred {said}", fontsize=7, color="C3" if wrong[i] else "k")
    fig.suptitle("validation images: true and predicted labels (wrong sets first, in red)")
    fig.tight_layout()
    return fig


def write_multilabel_report(run: RunFolder, pred: ValPredictions | None = None) -> Path:
    """Write ``report.html`` and ``report/*.png`` for a multi-label run; returns the path."""
    metrics = run.load_metrics()
    classes = run.load_classes()
    info, val = metrics.get("run", {}), metrics.get("val", {})
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    sections: list[str] = []
    log = read_log(run)
    figures: list[tuple[str, Figure | None, str]] = [
        ("curves", curves_figure(log, info.get("unfreeze_events", [])) if log else None,
         "training curves (acc: micro F1 at 0.5)"),
    ]  # fmt: skip
    if val:
        figures.append(("per_label", _per_label(val["per_label"]), "per-label AP and F1"))
    if pred is not None and val:
        thresholds = [val["thresholds"][c] for c in classes]
        figures.append(("examples", _examples(pred, classes, thresholds), "validation images"))
    sections += [figure_section(out, name, fig, caption) for name, fig, caption in figures]
    rows = [
        ("model", f"{info.get('model', '')} ({info.get('weights', '')})"),
        ("strategy", info.get("strategy_plan", info.get("strategy", ""))),
        ("val macro / micro AP", f"{val.get('macro_ap', float('nan')):.3f} / "
         f"{val.get('micro_ap', float('nan')):.3f} on {val.get('samples', '?')} samples"),
        ("val macro / micro F1", f"{val.get('macro_f1', float('nan')):.3f} / "
         f"{val.get('micro_f1', float('nan')):.3f} (per-label thresholds)"),
        ("val exact-match accuracy", f"{100 * val.get('accuracy', float('nan')):.2f} %"),
        ("epochs run", str(info.get("epochs_run", "?"))),
    ]  # fmt: skip
    return write_page(run, "multi-label", rows, "".join(sections))

"""``report.html`` of a detection run: summary, training curves, per-class AP bars and a grid
of validation images with the true boxes (dashed) and the predicted ones (solid, with class and
score) drawn over them (same Figure style as :mod:`headstart.evaluation.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from headstart.data.datasets import load_rgb
from headstart.evaluation.report import (
    ValPredictions,
    curves_figure,
    figure_section,
    image_grid,
    paired_bars,
    read_log,
    write_page,
)
from headstart.evaluation.segmentation_report import PALETTE
from headstart.run import RunFolder

#: predicted boxes drawn in the report score at least this much
SHOWN_SCORE = 0.5


def _colour(cls: int) -> tuple[float, ...]:
    return tuple(float(v) / 255 for v in PALETTE[(cls + 1) % len(PALETTE)])


def _per_class(per_class: dict[str, dict[str, Any]]) -> Figure:
    names = list(per_class)
    ap = [per_class[c]["ap"] or 0.0 for c in names]
    ap50 = [per_class[c]["ap_50"] or 0.0 for c in names]
    return paired_bars(names, {"AP@[.5:.95]": ap, "AP@0.5": ap50}, "per-class AP (validation)")


def draw_boxes(
    ax: Any, image: np.ndarray, truth: torch.Tensor, found: torch.Tensor, classes: list[str]
) -> None:
    """``image`` in ``ax`` with true boxes (rows ``[class, x1, y1, x2, y2]``, dashed) and
    detections (rows ``[x1, y1, x2, y2, score, class]`` scoring >= :data:`SHOWN_SCORE`, solid,
    labelled); coordinates normalised, drawn at the image's size."""
    h, w = image.shape[:2]
    ax.imshow(image)
    for row in truth[truth[:, 0] >= 0].tolist():
        c, x1, y1, x2, y2 = row
        ax.add_patch(Rectangle((x1 * w, y1 * h), (x2 - x1) * w, (y2 - y1) * h, fill=False,
                               edgecolor="white", linestyle="--", linewidth=1.2))  # fmt: skip
    for row in found[found[:, 4] >= SHOWN_SCORE].tolist():
        x1, y1, x2, y2, score, c = row
        colour = _colour(int(c))
        ax.add_patch(Rectangle((x1 * w, y1 * h), (x2 - x1) * w, (y2 - y1) * h, fill=False,
                               edgecolor=colour, linewidth=1.6))  # fmt: skip
        name = classes[int(c)] if 0 <= int(c) < len(classes) else str(int(c))
        ax.text(x1 * w, y1 * h, f"{name} {score:.2f}", fontsize=6, va="bottom",
                color="black", backgroundcolor=colour)  # fmt: skip


def box_grid(pred: ValPredictions, classes: list[str], k: int = 16) -> Figure | None:
    """The first ``k`` validation images with true and predicted boxes."""
    n = min(k, len(pred.paths))
    if n == 0:
        return None
    fig, axes = image_grid(n, 2.6, 2.8)
    for i in range(n):
        try:
            image = np.asarray(load_rgb(pred.paths[i]))
        except Exception:
            axes[i].text(0.5, 0.5, "unreadable", ha="center")
            continue
        draw_boxes(axes[i], image, pred.targets[i], pred.probs[i], classes)
        axes[i].set_title(Path(pred.paths[i]).name, fontsize=7)
        axes[i].axis("off")
    fig.suptitle(f"validation images: true boxes dashed white, predictions (score >= "
                 f"{SHOWN_SCORE}) solid with class and score", fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    return fig


def write_detection_report(run: RunFolder, pred: ValPredictions | None = None) -> Path:
    """Write ``report.html`` and ``report/*.png`` for a detection run; returns the path."""
    metrics = run.load_metrics()
    classes = run.load_classes()
    info, val = metrics.get("run", {}), metrics.get("val", {})
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    log = read_log(run)
    figures: list[tuple[str, Figure | None, str]] = [
        ("curves", curves_figure(log, info.get("unfreeze_events", [])) if log else None,
         "training curves (loss: the summed Faster R-CNN losses; acc: validation F1 at IoU 0.5,"
         " score >= 0.5)"),
    ]  # fmt: skip
    if val:
        figures.append(("per_class_ap", _per_class(val["per_class"]), "per-class AP"))
    if pred is not None:
        figures.append(("boxes", box_grid(pred, classes), "true vs predicted boxes"))
    body = "".join(figure_section(out, name, fig, caption) for name, fig, caption in figures)
    rows = [
        ("model", f"{info.get('model', '')} ({info.get('weights', '')})"),
        ("strategy", info.get("strategy_plan", info.get("strategy", ""))),
        ("val mAP@[.5:.95]", f"{val.get('map', float('nan')):.4f} on "
                             f"{val.get('samples', '?')} images, {val.get('boxes', '?')} boxes"),
        ("val mAP@0.5", f"{val.get('map_50', float('nan')):.4f}"),
        ("epochs run", str(info.get("epochs_run", "?"))),
    ]  # fmt: skip
    return write_page(run, "detection", rows, body)

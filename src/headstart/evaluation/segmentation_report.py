"""``report.html`` of a segmentation run: summary, training curves, per-class IoU bars and
validation images with the true and the predicted mask laid over them (same Figure style as
:mod:`headstart.evaluation.report`)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from headstart.data.datasets import load_rgb
from headstart.evaluation.report import (
    ValPredictions,
    curves_figure,
    figure_section,
    paired_bars,
    read_log,
)
from headstart.run import RunFolder, atomic_write_text

#: overlay colours per class index (index 0, usually background, is left unpainted)
PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
     [0, 128, 128], [220, 190, 255], [170, 110, 40], [128, 0, 0], [0, 0, 128]],
    dtype=np.float64,
)  # fmt: skip


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.8) -> np.ndarray:
    """``image`` (H, W, 3 uint8) in dimmed grey with each class > 0 of ``mask`` (H, W) painted
    in its :data:`PALETTE` colour (ignored pixels, 255, in mid grey), so the mask reads the same
    whatever the image's colours."""
    grey = image.astype(np.float64).mean(2, keepdims=True) * 0.6 + 40
    out = np.repeat(grey, 3, axis=2)
    for c in np.unique(mask):
        if c == 0:
            continue
        colour = np.array([128.0, 128.0, 128.0]) if c == 255 else PALETTE[int(c) % len(PALETTE)]
        m = mask == c
        out[m] = (1 - alpha) * out[m] + alpha * colour
    return np.clip(out, 0, 255).astype(np.uint8)


def _per_class(per_class: dict[str, dict[str, Any]]) -> Figure:
    names = list(per_class)
    iou = [per_class[c]["iou"] if per_class[c]["iou"] is not None else 0.0 for c in names]
    acc = [per_class[c]["accuracy"] if per_class[c]["accuracy"] is not None else 0.0
           for c in names]  # fmt: skip
    return paired_bars(names, {"IoU": iou, "pixel accuracy": acc}, "per-class IoU (validation)")


def _examples(pred: ValPredictions, classes: list[str], k: int = 8) -> Figure | None:
    """Validation images with true and predicted masks side by side, worst pixel accuracy
    first."""
    if not len(pred.paths):
        return None
    said = pred.probs.argmax(1).numpy()  # (N, H, W)
    truth = pred.targets.numpy()
    valid = truth != 255
    acc = ((said == truth) & valid).sum((1, 2)) / np.maximum(valid.sum((1, 2)), 1)
    order = np.argsort(acc, kind="stable")[:k]
    fig = Figure(figsize=(3 * 2.4, len(order) * 2.5))
    axes = np.atleast_2d(fig.subplots(len(order), 3))
    for row, i in zip(axes, order, strict=True):
        try:
            size = truth.shape[1:]
            image = np.asarray(load_rgb(pred.paths[i]).resize((size[1], size[0])))
        except Exception:
            image = np.full((*truth.shape[1:], 3), 200, np.uint8)
        panels = (image, overlay(image, truth[i]), overlay(image, said[i].astype(np.uint8)))
        titles = (Path(pred.paths[i]).name, "true mask", f"predicted ({100 * acc[i]:.1f} %)")
        for ax, panel, title in zip(row, panels, titles, strict=True):
            ax.imshow(panel)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    shown = [c for j, c in enumerate(classes) if j > 0][: len(PALETTE) - 1]
    legend = ", ".join(
        f"{c} = rgb{tuple(int(v) for v in PALETTE[(j + 1) % len(PALETTE)])}"
        for j, c in enumerate(shown)
    )
    fig.suptitle(f"validation images, lowest pixel accuracy first\n{legend}", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return fig


def save_overlay_png(image_path: str | Path, mask: np.ndarray, out: Path) -> None:
    """``out``: the image at ``image_path`` with ``mask`` (its size) painted over it."""
    image = np.asarray(load_rgb(image_path))
    Image.fromarray(overlay(image, mask)).save(out)


def write_segmentation_report(run: RunFolder, pred: ValPredictions | None = None) -> Path:
    """Write ``report.html`` and ``report/*.png`` for a segmentation run; returns the path."""
    metrics = run.load_metrics()
    classes = run.load_classes()
    info, val = metrics.get("run", {}), metrics.get("val", {})
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    log = read_log(run)
    figures: list[tuple[str, Figure | None, str]] = [
        ("curves", curves_figure(log, info.get("unfreeze_events", [])) if log else None,
         "training curves (acc: pixel accuracy)"),
    ]  # fmt: skip
    if val:
        figures.append(("per_class_iou", _per_class(val["per_class"]), "per-class IoU"))
    if pred is not None:
        figures.append(("overlays", _examples(pred, classes), "true vs predicted masks"))
    sections = [figure_section(out, name, fig, caption) for name, fig, caption in figures]
    rows = [
        ("model", f"{info.get('model', '')} ({info.get('weights', '')})"),
        ("strategy", info.get("strategy_plan", info.get("strategy", ""))),
        ("val mIoU", f"{val.get('miou', float('nan')):.4f} on {val.get('samples', '?')} images"),
        ("val pixel accuracy", f"{100 * val.get('pixel_accuracy', float('nan')):.2f} %"),
        ("epochs run", str(info.get("epochs_run", "?"))),
    ]
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    config = run.config_path.read_text(encoding="utf-8") if run.config_path.is_file() else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>headstart report: {html.escape(run.path.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:3px 10px;border-bottom:1px solid #ddd}}
img{{max-width:100%;border:1px solid #eee;margin:4px 0}}pre{{background:#f6f6f6;padding:10px;overflow:auto}}</style></head>
<body><h1>headstart run {html.escape(run.path.name)} (segmentation)</h1><table>{table}</table>
{"".join(sections)}
<h2>config.yaml</h2><pre>{html.escape(config)}</pre></body></html>"""
    path = run.path / "report.html"
    atomic_write_text(path, page)
    return path

"""``report.html``: what a person wants to see after a run, self-contained (images embedded).

Training curves (loss/accuracy per epoch, train vs val, unfreeze events marked), the confusion
matrix (counts and row-normalised), per-class precision/recall, the worst misclassified
validation images (true/predicted label, confidence), a reliability diagram with the expected
calibration error, and the run's config and decisions. The PNGs behind it are written to
``report/`` beside it. ``headstart report runs/<run>`` regenerates everything.

Figures are drawn with matplotlib's object API (``Figure``, rendered by Agg on ``savefig``):
importing this module or writing a report neither switches the global backend nor opens pyplot
figures, so a notebook's inline plots keep working.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from headstart.data.datasets import load_rgb
from headstart.run import RunFolder, atomic_write_text


@dataclass
class ValPredictions:
    """Validation probabilities with the files they belong to (for the worst-errors grid)."""

    probs: torch.Tensor  # (N, C)
    targets: torch.Tensor  # (N,)
    paths: list[str]
    texts: list[str] | None = None  # text runs: the mistakes grid shows text snippets


def expected_calibration_error(
    probs: torch.Tensor, targets: torch.Tensor, bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """ECE (Guo et al., 2017): sum over confidence bins of |accuracy - confidence| x bin share."""
    conf, pred = probs.max(1)
    correct = (pred == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece, table = 0.0, []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc, c, share = float(correct[m].mean()), float(conf[m].mean()), float(m.float().mean())
            ece += abs(acc - c) * share
            table.append(
                {"lo": lo, "hi": hi, "accuracy": acc, "confidence": c, "count": int(m.sum())}
            )
    return ece, table


def png_base64(fig: Figure, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode()


def read_log(run: RunFolder) -> dict[str, list[float]]:
    cols: dict[str, list[float]] = {}
    if not run.log_path.is_file():
        return cols
    with run.log_path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                cols.setdefault(k, []).append(float(v) if v not in ("", None) else float("nan"))
    return cols


def curves_figure(log: dict[str, list[float]], events: list[list[Any]]) -> Figure:
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    ep = log.get("epoch", [])
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            ys = log.get(f"{split}_{key}")
            if ys:
                ax.plot(ep, ys, style, label=split, markersize=4)
        for e, names in events:
            ax.axvline(e - 0.5, color="tab:red", ls="--", lw=1)
            ax.text(
                e - 0.45,
                ax.get_ylim()[1],
                "unfreeze " + ", ".join(names)[:30],
                color="tab:red",
                fontsize=7,
                va="top",
                rotation=90,
            )
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def confusion_figure(cm: np.ndarray, classes: list[str]) -> Figure:
    """Confusion matrix counts and row-normalised (recall), side by side."""
    n = len(classes)
    size = max(4.0, 0.45 * n + 2)
    fig = Figure(figsize=(2 * size, size))
    axes = fig.subplots(1, 2)
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    for ax, mat, title, fmt in (
        (axes[0], cm, "counts", "d"),
        (axes[1], norm, "row-normalised (recall)", ".2f"),
    ):
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        if n <= 25:
            hi = mat.max() or 1
            for i in range(n):
                for j in range(n):
                    v = mat[i, j]
                    ax.text(
                        j,
                        i,
                        format(v, fmt),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v > hi / 2 else "black",
                    )
    fig.tight_layout()
    return fig


def figure_section(out: Path, name: str, fig: Figure | None, caption: str) -> str:
    """A report section: ``caption`` and the figure (saved as ``out/<name>.png`` and inlined),
    or "none" when there is no figure."""
    if fig is None:
        return f"<h2>{html.escape(caption)}</h2><p>none</p>"
    b64 = png_base64(fig, out / f"{name}.png")
    return f'<h2>{html.escape(caption)}</h2><img alt="{name}" src="data:image/png;base64,{b64}">'


def paired_bars(names: list[str], bars: dict[str, list[float]], title: str) -> Figure:
    """Two scores in [0, 1] per name, side by side (``bars``: legend label -> values)."""
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6, 0.5 * len(names) + 2), 3.6))
    ax = fig.subplots()
    (left, lv), (right, rv) = bars.items()
    ax.bar(x - 0.2, lv, 0.4, label=left)
    ax.bar(x + 0.2, rv, 0.4, label=right)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _per_class(per_class: dict[str, dict[str, float]]) -> Figure:
    classes = list(per_class)
    scores = {k: [per_class[c][k] for c in classes] for k in ("precision", "recall")}
    return paired_bars(classes, scores, "per-class precision and recall (validation)")


def image_grid(n: int, cell_width: float, cell_height: float) -> tuple[Figure, Any]:
    """A figure of ``n`` cells, 4 a row, axes off; returns it and its axes, row by row."""
    cols = 4
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(cols * cell_width, rows * cell_height))
    axes = np.atleast_1d(fig.subplots(rows, cols)).flatten()
    for ax in axes:
        ax.axis("off")
    return fig, axes


def show_image(ax: Any, path: str) -> None:
    """The image at ``path`` in ``ax``, or "unreadable" where it cannot be decoded."""
    try:
        ax.imshow(load_rgb(path))
    except Exception:
        ax.text(0.5, 0.5, "unreadable", ha="center")


def _worst(pred: ValPredictions, classes: list[str], k: int = 16) -> Figure | None:
    conf, p = pred.probs.max(1)
    wrong = (p != pred.targets).nonzero().flatten()
    if len(wrong) == 0:
        return None
    order = wrong[conf[wrong].argsort(descending=True)][:k]
    fig, axes = image_grid(len(order), 2.4, 2.6)
    for ax, i in zip(axes, order.tolist(), strict=False):
        if pred.texts is not None:
            snippet = " ".join(pred.texts[i].split())[:220]
            ax.text(0, 1, textwrap.fill(snippet, 38), fontsize=5.5, va="top", family="serif")
        else:
            show_image(ax, pred.paths[i])
        ax.set_title(
            f"true {classes[int(pred.targets[i])]}\npred {classes[int(p[i])]} ({float(conf[i]):.0%})",
            fontsize=8,
        )
    fig.suptitle("most confident mistakes (validation)")
    fig.tight_layout()
    return fig


def _reliability(table: list[dict[str, float]], ece: float) -> Figure:
    fig = Figure(figsize=(4.2, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    if table:
        mids = [(b["lo"] + b["hi"]) / 2 for b in table]
        ax.bar(
            mids,
            [b["accuracy"] for b in table],
            width=1 / 15,
            edgecolor="k",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot(
            [b["confidence"] for b in table],
            [b["accuracy"] for b in table],
            "o",
            color="tab:red",
            ms=3,
            label="bin mean confidence",
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece:.3f})")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def _target_line(metrics: dict[str, Any]) -> str:
    """Target-domain accuracy; with --adapt, source-only vs adapted and the gain."""
    te, ad = metrics["target_eval"], metrics.get("adaptation")
    line = f"{100 * te['accuracy']:.2f} % on {te['samples']} images"
    if ad and "source_only_target_accuracy" in ad:
        line = (
            f"{ad['method']} adapted {100 * te['accuracy']:.2f} % vs source-only "
            f"{100 * ad['source_only_target_accuracy']:.2f} % ({ad['gain_points']:+.2f} points) "
            f"on {te['samples']} images"
        )
    elif ad:
        line = f"{ad['method']} adapted {line} ({ad.get('note', '')})"
    return line


def _summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's summary table: model, strategy, scores, input, parameters, time."""
    info = metrics.get("run", {})
    val = metrics.get("val", {})
    rows = [
        ("model", f"{info.get('model', '')} ({info.get('weights', '')})"),
        ("strategy", info.get("strategy_plan", info.get("strategy", ""))),
        (
            "val accuracy",
            f"{100 * val.get('accuracy', float('nan')):.2f} % on {val.get('samples', '?')} samples",
        ),
        (
            "macro F1 / AUROC",
            f"{val.get('macro_f1', float('nan')):.3f} / {val.get('macro_auroc', float('nan')):.3f}",
        ),
    ]
    if "test" in metrics:
        test = metrics["test"]
        rows.append(
            ("test accuracy", f"{100 * test['accuracy']:.2f} % on {test['samples']} samples")
        )
    if "target_eval" in metrics:  # labelled target-domain data (headstart.adapt.domain)
        rows.append(("target-eval accuracy", _target_line(metrics)))
    pre = info.get("preprocessing", {})
    # runs before 0.2 have no "input" line: their crop size is all the report knows
    shown = info.get("input") or f"{pre.get('crop', '?')}px"
    return [
        *rows,
        ("input", f"{shown}, {pre.get('source', '')}"),
        (
            "trainable / total params",
            f"{info.get('trainable_params_start', 0):,} / {info.get('total_params', 0):,}",
        ),
        ("epochs run", str(info.get("epochs_run", "?"))),
        ("wall time", f"{info.get('seconds', '?')} s"),
    ]


def _decisions(info: dict[str, Any]) -> str:
    """HTML for the run's stated decisions: auto's choice with reasons, the BatchNorm policy,
    skipped files."""
    out = ""
    decision = info.get("auto_decision")
    if decision:
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in decision.get("reasons", []))
        out += (
            f"<h3>--strategy auto chose {html.escape(decision['strategy'])}</h3><ul>{reasons}</ul>"
        )
    out += _auto_table(info.get("auto"))
    bn = info.get("batchnorm")
    if bn:
        out += f"<p>BatchNorm: {html.escape(bn.get('reason', ''))}</p>"
    skipped = info.get("skipped_files") or {}
    if skipped:
        out += f"<p>skipped files: {html.escape(json.dumps(skipped))}</p>"
    return out


def _auto_table(auto: dict[str, Any] | None) -> str:
    """What ``--strategy auto`` tried and why it kept the winner (metrics.json ``run.auto``)."""
    if not auto:
        return ""

    def row(tag: str, cells: list[Any]) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"

    select_on = auto.get("select_on", "val")
    head = row("th", ["candidate", "settings", f"score on {select_on}", "time", "epochs", "status"])
    rows = "".join(
        row(
            "td",
            [
                ("✓ " if c.get("chosen") else "") + c["name"],
                ", ".join(f"{k}={v}" for k, v in c.get("settings", {}).items()),
                "-" if c.get("score") is None else f"{100 * c['score']:.1f} %",
                f"{c.get('seconds', 0):.1f} s",
                c.get("epochs_run", 0),
                c.get("status", ""),
            ],
        )
        for c in auto.get("candidates", [])
    )
    # the protocol and the budget head the section; the other reasons (backbones compared,
    # flips measured, the winner against the frozen candidates) follow the table
    said = {auto.get("protocol"), auto.get("budget_reason")}
    reasons = "".join(
        f"<li>{html.escape(str(r))}</li>" for r in auto.get("reasons", []) if r not in said
    )
    return (
        "<h3>what auto tried and why it kept this one</h3>"
        f"<p>{html.escape(auto.get('protocol', ''))}; budget {auto.get('budget_seconds', '?')} s "
        f"({html.escape(auto.get('budget_reason', ''))})</p>"
        f"<table>{head}{rows}</table>" + (f"<ul>{reasons}</ul>" if reasons else "")
    )


def write_report(run: RunFolder, pred: ValPredictions | None = None) -> Path:
    """Write ``report.html`` and ``report/*.png`` for ``run``; returns the HTML path."""
    metrics = run.load_metrics()
    classes = run.load_classes()
    info = metrics.get("run", {})
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    sections: list[str] = []

    def figure(name: str, fig: Figure | None, caption: str) -> None:
        sections.append(figure_section(out, name, fig, caption))

    log = read_log(run)
    events = info.get("unfreeze_events", [])
    figure("curves", curves_figure(log, events) if log else None, "training curves")
    val = metrics.get("val", {})
    if val:
        matrix = np.array(val["confusion_matrix"])
        figure("confusion", confusion_figure(matrix, classes), "confusion matrix (validation)")
        figure("per_class", _per_class(val["per_class"]), "per-class precision / recall")
    if pred is not None:
        ece, table = expected_calibration_error(pred.probs, pred.targets)
        figure("worst", _worst(pred, classes), "most confident mistakes")
        figure("reliability", _reliability(table, ece), f"reliability diagram (ECE {ece:.3f})")
        metrics.setdefault("val", {})["ece"] = ece
        run.save_metrics(metrics)

    return write_page(run, "", _summary_rows(metrics), _decisions(info) + "".join(sections))


def write_page(run: RunFolder, kind: str, rows: list[tuple[str, str]], body: str) -> Path:
    """``report.html``: the title (``kind`` e.g. "multi-task", or ""), a summary table of
    ``rows``, the ``body`` HTML and the run's config.yaml; returns its path."""
    config = run.config_path.read_text(encoding="utf-8") if run.config_path.is_file() else ""
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    suffix = f" ({html.escape(kind)})" if kind else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>headstart report: {html.escape(run.path.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:3px 10px;border-bottom:1px solid #ddd}}
img{{max-width:100%;border:1px solid #eee;margin:4px 0}}pre{{background:#f6f6f6;padding:10px;overflow:auto}}</style></head>
<body><h1>headstart run {html.escape(run.path.name)}{suffix}</h1><table>{table}</table>
{body}
<h2>config.yaml</h2><pre>{html.escape(config)}</pre></body></html>"""
    path = run.path / "report.html"
    atomic_write_text(path, page)
    return path

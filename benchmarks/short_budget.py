"""Recipes on short budgets (issue 16): gradual / partial / fine-tune vs feature extraction in
4-5 epochs on Animal-MNIST, MobileNetV2 ImageNet weights at 224 px, reported on a test split.

    .venv/bin/python benchmarks/short_budget.py --per-class 50 --val-per-class 30 --epochs 4
    .venv/bin/python benchmarks/short_budget.py --per-class 100 --val-per-class 50 --epochs 5 \
        --strategies feature-extract gradual --out benchmarks/results/short_budget-100

Each row is a full ``headstart.train`` run with default settings except the strategy (no early
stopping, so every run trains all its epochs; the best-val-loss checkpoint is evaluated).
Writes ``<out>.json`` and ``<out>.md``: test and val accuracy, the per-epoch val accuracy from
log.csv, the unfreeze events and the wall time (timings on shared CPU cores are inflated).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

import headstart
from headstart.console import console
from headstart.data.catalog import materialise_animal_mnist

RECIPES: dict[str, dict[str, Any]] = {
    "feature-extract": {"strategy": "feature-extract"},
    "gradual": {"strategy": "gradual"},
    "partial": {"strategy": "partial", "unfreeze_last": 3},
    "fine-tune": {"strategy": "fine-tune"},
}


def run_one(data: Path, out: Path, epochs: int, seed: int, recipe: str) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = headstart.train(
        data=str(data), out=str(out), epochs=epochs, seed=seed, early_stopping_patience=None,
        **RECIPES[recipe],
    )  # fmt: skip
    wall = time.perf_counter() - t0
    with (out / "log.csv").open(newline="") as fh:
        val_curve = [round(float(row["val_acc"]), 4) for row in csv.DictReader(fh)]
    info = r.metrics["run"]
    return {
        "recipe": recipe,
        "seed": seed,
        "test_accuracy": round(float(r.metrics["test"]["accuracy"]), 4),
        "val_accuracy": round(r.val_accuracy, 4),
        "val_acc_per_epoch": val_curve,
        "head_init": info.get("head_init"),
        "unfreeze_events": info.get("unfreeze_events"),
        "batchnorm": info.get("batchnorm"),
        "wall_s": round(wall, 1),
    }


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    md = [
        f"{meta['data']}, {meta['model']}, {meta['epochs']} epochs, 224 px, {meta['machine']}",
        "",
    ]
    md += [
        "| recipe | seed | test acc | val acc | val acc per epoch | unfreeze events | wall (s) |"
    ]
    md += ["|---|---|---|---|---|---|---|"]
    for r in rows:
        curve = " ".join(f"{100 * v:.1f}" for v in r["val_acc_per_epoch"])
        events = "; ".join(f"{e}: {'+'.join(n)}" for e, n in r["unfreeze_events"] or []) or "-"
        md.append(
            f"| {r['recipe']} | {r['seed']} | {100 * r['test_accuracy']:.1f} % | "
            f"{100 * r['val_accuracy']:.1f} % | {curve} | {events} | {r['wall_s']} |"
        )
    by: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["recipe"], []).append(r["test_accuracy"])
    md += ["", "| recipe | mean test acc | seeds |", "|---|---|---|"]
    md += [f"| {k} | {100 * sum(v) / len(v):.1f} % | {len(v)} |" for k, v in by.items()]
    md += ["", f"`{meta['command']}`", "", "Timings: shared 2-core CPU machine, inflated."]
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--val-per-class", type=int, default=30)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--strategies", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--work", default="/tmp/headstart-short-budget")
    ap.add_argument("--out", default="benchmarks/results/short_budget")
    args = ap.parse_args()
    work = Path(args.work)
    name = f"animal-{args.per_class}-{args.val_per_class}-{args.test_per_class}"
    data = materialise_animal_mnist(
        work / name, args.per_class, args.val_per_class, args.test_per_class
    )
    rows = []
    for seed in args.seeds:
        for recipe in args.strategies:
            out = work / "runs" / f"{name}-e{args.epochs}-{recipe}-s{seed}"
            rows.append(run_one(data, out, args.epochs, seed, recipe))
            console.print(rows[-1])
    meta = {
        "data": f"Animal-MNIST {args.per_class} train / {args.val_per_class} val / "
        f"{args.test_per_class} test per class",
        "model": "torchvision:mobilenet_v2 IMAGENET1K_V1",
        "epochs": args.epochs,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "command": "python " + " ".join(sys.argv),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = markdown(meta, rows)
    Path(args.out + ".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Partial / gradual fine-tuning on cached activations vs on images (issue 17).

    .venv/bin/python benchmarks/cached_partial.py [--strategy partial] [--epochs 6]
        [--unfreeze-last 2] [--per-class 100] [--test-per-class 100]
    .venv/bin/python benchmarks/cached_partial.py --strategy gradual --epochs 10

Animal-MNIST (100 train / 50 val / 100 test per class) at 224 px, MobileNetV2 ImageNet weights:
the default run (frozen stages computed once, stored as float16 and memory-mapped; the trained
stages and the head run on them — for ``gradual`` until the step that unfreezes every stage,
then on images) against ``--no-fast-path`` (every epoch runs the whole network on images). Each
run is its own process with an empty feature cache, so the cached run pays its extraction; wall
time is the ``headstart.train`` call (data scan, model build, training, evaluation of val and
the test split), peak RSS the process's. Test accuracy is the best-by-val checkpoint's on the
test split, which nothing selected on. Writes benchmarks/results/cached_{strategy}.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = {"cached activations": "cached", "images (--no-fast-path)": "images"}


def one(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """One training run in this process (called as a child); prints its JSON result."""
    import torch

    import headstart

    t0 = time.perf_counter()
    r = headstart.train(
        data=args.data, out=args.run, epochs=args.epochs, strategy=args.strategy,
        unfreeze_last=args.unfreeze_last, image_size=224, early_stopping_patience=None,
        cache_features=variant == "cached",
    )  # fmt: skip
    wall = time.perf_counter() - t0
    info = r.metrics["run"]
    with (Path(args.run) / "log.csv").open() as f:
        epoch_s = [float(row["seconds"]) for row in csv.DictReader(f)]
    return {
        "val_accuracy": round(r.val_accuracy, 4),
        "test_accuracy": round(r.metrics["test"]["accuracy"], 4),
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cached_activations": info.get("cached_activations"),
        "epoch_seconds": epoch_s,
        "threads": torch.get_num_threads(),
    }


def _phase_lines(rows: list[dict[str, Any]], until: int | None) -> list[str]:
    """Training seconds (log.csv) of the epochs before and after the move to images."""
    if not until:
        return []
    cached, images = (r["epoch_seconds"] for r in rows)
    head = [sum(cached[:until]), sum(images[:until])]
    tail = [sum(cached[until:]), sum(images[until:])]
    return [
        "",
        f"Epochs 0-{until - 1} (stored activations vs images): {head[0]:.1f} s vs "
        f"{head[1]:.1f} s of training (ratio {head[0] / head[1]:.2f}); epochs {until}-"
        f"{len(cached) - 1} (images in both runs): {tail[0]:.1f} s vs {tail[1]:.1f} s.",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--strategy", choices=["partial", "gradual"], default="partial")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--unfreeze-last", type=int, default=2)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--work", default="/tmp/headstart-bench")
    ap.add_argument("--out", help="results path without suffix (default: cached_STRATEGY)")
    ap.add_argument("--one", choices=["cached", "images"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(one(args, args.one)))
        return

    from headstart.data.catalog import materialise_animal_mnist

    work = Path(args.work)
    split = (args.per_class, args.val_per_class, args.test_per_class)
    data = materialise_animal_mnist(work / "animal-{}-{}-{}".format(*split), *split)
    rows = []
    before = os.getloadavg()
    for label, variant in VARIANTS.items():
        run = work / "runs" / f"cached-{args.strategy}-{variant}"
        shutil.rmtree(run, ignore_errors=True)
        cmd = [sys.executable, __file__, "--one", variant, "--data", str(data), "--run", str(run),
               "--epochs", str(args.epochs), "--unfreeze-last", str(args.unfreeze_last),
               "--strategy", args.strategy]  # fmt: skip
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "HEADSTART_CACHE": cache}
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
            process_s = time.perf_counter() - t0
        result = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
        rows.append({"variant": label, **result, "process_s": round(process_s, 1)})
        print(rows[-1], flush=True)
    cached, images = rows
    load = before  # the runs themselves keep 2 cores busy: judge the machine by what ran before
    meta = {
        "data": f"Animal-MNIST {args.per_class} train / {args.val_per_class} val / "
        f"{args.test_per_class} test per class",
        "model": "torchvision:mobilenet_v2 IMAGENET1K_V1, 224 px",
        "strategy": f"{args.strategy}"
        + (f" --unfreeze-last {args.unfreeze_last}" if args.strategy == "partial" else "")
        + f", {args.epochs} epochs",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cached['threads']} threads; "
        f"1-minute load average {load[0]:.1f} before the runs "
        + ("(shared with other work: timings inflated)" if load[0] > 1.0 else "(otherwise idle)"),
        "wall_ratio": round(cached["wall_s"] / images["wall_s"], 3),
        "test_gap_points": round(100 * (cached["test_accuracy"] - images["test_accuracy"]), 2),
        "command": f"python benchmarks/cached_partial.py --strategy {args.strategy} "
        f"--epochs {args.epochs} --unfreeze-last {args.unfreeze_last} --per-class {args.per_class}"
        f" --test-per-class {args.test_per_class}",
    }
    out_path = Path(args.out or f"benchmarks/results/cached_{args.strategy}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    act = cached["cached_activations"] or {}
    lines = [
        f"{meta['data']}, {meta['model']}, {meta['strategy']}; {meta['machine']}",
        "",
        "| run | test accuracy | val accuracy | wall time (s) | peak RSS (MB) |",
        "|---|---|---|---|---|",
        *[
            f"| {r['variant']} | {100 * r['test_accuracy']:.1f} % | "
            f"{100 * r['val_accuracy']:.1f} % | {r['wall_s']} | "
            f"{r['peak_rss_mb']:.0f} |"
            for r in rows
        ],
        "",
        f"wall-time ratio cached / images: **{meta['wall_ratio']}**; test accuracy difference "
        f"{meta['test_gap_points']:+.1f} points. Stored: {act.get('rows')} rows at "
        f"{act.get('boundary')} ({'x'.join(map(str, act.get('shape', [])))}, "
        f"{act.get('bytes_per_image')} B per image, {act.get('total_bytes', 0) / 1e6:.1f} MB)"
        + (f"; images from epoch {act['until_epoch']}." if act.get("until_epoch") else "."),
        *_phase_lines(rows, act.get("until_epoch")),
        "",
        f"`{meta['command']}`",
    ]
    out_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

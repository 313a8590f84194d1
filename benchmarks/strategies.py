"""Compare transfer strategies on the demo data (Animal-MNIST, MobileNetV2 ImageNet weights).

    .venv/bin/python benchmarks/strategies.py [--epochs 10] [--image-size 128] [--per-class 100]

Writes benchmarks/results/strategies.json and .md: val accuracy and wall time per strategy,
each a full ``headstart.train`` run (data scan, model build, training, evaluation).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

import headstart
from headstart.console import console
from headstart.data.catalog import materialise_animal_mnist

STRATEGIES: list[tuple[str, dict[str, object]]] = [
    ("feature-extract", {"strategy": "feature-extract"}),
    ("partial (last 3 stages)", {"strategy": "partial", "unfreeze_last": 3}),
    ("gradual (every 2 epochs, 3 steps)", {"strategy": "gradual"}),
    ("fine-tune (backbone LR x0.1)", {"strategy": "fine-tune"}),
    ("auto", {"strategy": "auto"}),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--work", default="/tmp/headstart-bench")
    ap.add_argument("--out", default="benchmarks/results/strategies")
    args = ap.parse_args()
    work = Path(args.work)
    data = materialise_animal_mnist(
        work / f"animal-{args.per_class}-{args.val_per_class}", args.per_class, args.val_per_class
    )
    rows = []
    for label, kw in STRATEGIES:
        out = work / "runs" / label.split()[0]
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        r = headstart.train(
            data=str(data),
            out=str(out),
            epochs=args.epochs,
            image_size=args.image_size,
            early_stopping_patience=None,
            **kw,
        )
        wall = time.perf_counter() - t0
        info = r.metrics["run"]
        rows.append(
            {
                "strategy": label,
                "chosen": info["strategy"],
                "val_accuracy": round(r.val_accuracy, 4),
                "wall_s": round(wall, 1),
                "trainable_params_start": info["trainable_params_start"],
                "cached_features": info["cached_features"],
            }
        )
        console.print(rows[-1])
    meta = {
        "data": f"Animal-MNIST {args.per_class} train / {args.val_per_class} val per class",
        "model": "torchvision:mobilenet_v2 IMAGENET1K_V1",
        "epochs": args.epochs,
        "image_size": args.image_size,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "command": f"python benchmarks/strategies.py --epochs {args.epochs} --image-size {args.image_size} --per-class {args.per_class}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = [
        f"{meta['data']}, {meta['model']}, {args.epochs} epochs, {args.image_size} px, {meta['machine']}",
        "",
    ]
    md += ["| strategy | val accuracy | wall time (s) |", "|---|---|---|"]
    md += [
        f"| {r['strategy']}{' -> ' + str(r['chosen']) if r['strategy'] == 'auto' else ''} | {100 * r['val_accuracy']:.1f} % | {r['wall_s']} |"
        for r in rows
    ]
    md += ["", f"`{meta['command']}`"]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

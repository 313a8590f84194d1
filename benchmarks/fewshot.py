"""Few-shot training runs and zero-shot to unseen class names on Animal-MNIST (offline).

    .venv/bin/python benchmarks/fewshot.py [--image-size 224] [--shots 1 5]

For K in --shots: K training images per class (10 classes), 5 validation images per class (used
only by the refined variant to pick its best epoch) and 100 test images per class (reported).
Each row is a full ``headstart.train`` run, MobileNetV2 IMAGENET1K_V1 unless marked random init.

Zero-shot: a semantic head (MiniLM embeddings of the class names) trained on 7 classes, then
``headstart zero-shot --run`` to the 3 held-out class names, evaluated 3-way on their test
images (chance 33.3 %).

Writes benchmarks/results/fewshot.json and .md.
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
from headstart.adapt.zeroshot import zero_shot
from headstart.console import console
from headstart.data.catalog import ANIMAL_CLASSES, materialise_animal_mnist

VARIANTS: list[tuple[str, dict[str, object]]] = [
    ("auto", {"strategy": "auto"}),
    ("few-shot prototypes, not refined", {"strategy": "few-shot", "few_shot_refine": False}),
    ("few-shot prototypes, refined", {"strategy": "few-shot"}),
    (
        "few-shot logistic probe",
        {"strategy": "few-shot", "few_shot_head": "logistic", "few_shot_refine": False},
    ),
    (
        "few-shot prototypes, random init",
        {"strategy": "few-shot", "few_shot_refine": False, "weights": "none"},
    ),
]
UNSEEN = ("elephant", "giraffe", "zebra")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--work", default="/tmp/headstart-bench-fewshot")
    ap.add_argument("--out", default="benchmarks/results/fewshot")
    args = ap.parse_args()
    work = Path(args.work)
    rows: list[dict[str, object]] = []
    for k in args.shots:
        data = materialise_animal_mnist(work / f"animal-{k}shot", k, 5, 100, seed=k)
        for label, kw in VARIANTS:
            out = work / "runs" / f"{k}-{label.replace(' ', '_').replace(',', '')}"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            r = headstart.train(
                data=str(data / "train"), val=str(data / "val"), test=str(data / "test"),
                out=str(out), image_size=args.image_size, epochs=args.epochs, **kw,
            )  # fmt: skip
            rows.append(
                {
                    "shots": k,
                    "variant": label,
                    "chosen": r.metrics["run"]["strategy"],
                    "head": r.metrics["run"]["head"],
                    "test_accuracy": round(r.metrics["test"]["accuracy"], 4),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            console.print(rows[-1])

    # zero-shot to unseen class names through MiniLM label embeddings
    seen = [c for c in ANIMAL_CLASSES if c not in UNSEEN]
    full = materialise_animal_mnist(work / "animal-zs", 100, 20, 100, seed=7)
    zs = work / "zs"
    shutil.rmtree(zs, ignore_errors=True)
    for split in ("train", "val", "test"):
        for c in ANIMAL_CLASSES:
            dst = zs / ("seen" if c in seen else "unseen") / split / c
            shutil.copytree(full / split / c, dst)
    for name in ("semantic", "zs-unseen"):
        shutil.rmtree(work / "runs" / name, ignore_errors=True)
    t0 = time.perf_counter()
    sem = headstart.train(
        data=str(zs / "seen" / "train"), val=str(zs / "seen" / "val"),
        test=str(zs / "seen" / "test"), out=str(work / "runs" / "semantic"),
        image_size=args.image_size, head="semantic", label_embeddings="minilm",
        epochs=args.epochs, prompts=["a photo of a {}."],
    )  # fmt: skip
    z = zero_shot(
        labels=list(UNSEEN), run=sem.run_dir, out=work / "runs" / "zs-unseen",
        eval_data=str(zs / "unseen" / "test"),
    )  # fmt: skip
    zero = {
        "seen_classes": seen,
        "unseen_classes": list(UNSEEN),
        "seen_test_accuracy": round(sem.metrics["test"]["accuracy"], 4),
        "unseen_3way_accuracy": round(z.metrics["accuracy"], 4) if z.metrics else None,
        "chance": round(1 / len(UNSEEN), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    console.print(zero)

    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "image_size": args.image_size,
        "epochs": args.epochs,
        "rows": rows,
        "zero_shot_unseen": zero,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Few-shot and zero-shot on Animal-MNIST",
        "",
        f"`python benchmarks/fewshot.py` — {result['machine']}; {args.image_size} px; "
        "10 classes; K train + 5 val per class; test = 100 per class.",
        "",
        "| K | variant | chosen | head | test accuracy | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shots']} | {r['variant']} | {r['chosen']} | {r['head']} | "
            f"{100 * float(r['test_accuracy']):.1f} % | {r['seconds']} |"  # type: ignore[arg-type]
        )
    lines += [
        "",
        f"Zero-shot to unseen names: semantic head (MiniLM) trained on {', '.join(seen)} "
        f"(test {100 * zero['seen_test_accuracy']:.1f} %), then scored by name on "  # type: ignore[operator]
        f"{', '.join(UNSEEN)}: 3-way accuracy "
        f"{100 * (zero['unseen_3way_accuracy'] or 0):.1f} % (chance 33.3 %).",  # type: ignore[operator]
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

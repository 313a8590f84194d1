"""Bytes per image of cached activations at every cut point (issue 17), from shapes alone.

    .venv/bin/python benchmarks/activation_sizes.py

MobileNetV2, ResNet-50 and ViT-B/16 (torchvision, random weights: sizes depend on shapes only)
at 224 px. For each cut ``k`` (stages ``< k`` frozen for the run) the table gives where the body
is cut, the stored per-image shape and its float16 size; a store holds ``(train images x
--feature-views + val images) x`` that many bytes. Writes benchmarks/results/activation_sizes.json
and .md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from headstart.models import Backbone, create_backbone
from headstart.training import activations as act

MODELS = ["torchvision:mobilenet_v2", "torchvision:resnet50", "torchvision:vit_b_16"]


def main() -> None:
    # shapes only: skip the numerical check of each split (tests/test_activations.py runs it)
    Backbone._check_split = lambda self, split, device: None  # type: ignore[method-assign]
    value_bytes = np.dtype(act.STORE_DTYPE).itemsize
    rows = []
    for spec in MODELS:
        b = create_backbone(spec, 10, weights="none", image_size=224)
        n = len(b.stages)
        for cut in range(1, n):
            b.set_trainable_stages(range(cut, n))
            split = b.split_at(cut)
            shape = act.activation_shape(b, cut)
            rows.append({
                "model": spec, "cut": cut, "first_trained_stage": b.stages[cut].name,
                "boundary": split.boundary, "shape": list(shape),
                "bytes_per_image": math.prod(shape) * value_bytes,
            })  # fmt: skip
            print(rows[-1], flush=True)
    out = Path("benchmarks/results/activation_sizes")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = [
        "Cached activations per image at 224 px (float16), by cut: stages before the named one "
        "are frozen and stored.",
        "",
        "| model | first trained stage | stored at | shape | KiB per image | MB per 1,000 images |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        kib = r["bytes_per_image"] / 1024
        lines.append(
            f"| {r['model']} | {r['first_trained_stage']} | {r['boundary']} | "
            f"{'x'.join(map(str, r['shape']))} | {kib:.1f} | {r['bytes_per_image'] / 1000:.1f} |"
        )
    lines += ["", "`python benchmarks/activation_sizes.py`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

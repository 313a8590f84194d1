"""``headstart demo``: what transfer learning buys, on real offline data, in a few minutes.

Materialises Animal-MNIST (100 train / 50 val images per class), then trains the same
architecture twice for the same number of epochs: pretrained ImageNet weights with the backbone
frozen (feature extraction) and random initialisation trained end to end (from scratch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from headstart.api import TrainResult, train
from headstart.console import console
from headstart.data.catalog import materialise_animal_mnist


@dataclass
class DemoResult:
    pretrained: TrainResult
    scratch: TrainResult
    seconds: float


def demo(
    out: str | Path = "runs/demo",
    data: str | Path = "data/animal-mnist",
    *,
    model: str = "torchvision:mobilenet_v2",
    epochs: int = 8,
    image_size: int = 128,
    train_per_class: int = 100,
    val_per_class: int = 50,
) -> DemoResult:
    """Run the demo; returns both runs' results. Folders under ``out`` are created anew."""
    t0 = time.perf_counter()
    root = materialise_animal_mnist(data, train_per_class, val_per_class)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    common: dict[str, Any] = {
        "data": str(root),
        "model": model,
        "epochs": epochs,
        "image_size": image_size,
        "early_stopping_patience": None,
    }
    console.rule("[bold]1/2 pretrained ImageNet weights, backbone frozen (feature extraction)")
    pre = train(
        **common,
        weights="DEFAULT",
        strategy="feature-extract",
        out=str(Path(out) / f"pretrained-{stamp}"),
    )
    console.rule("[bold]2/2 random initialisation, all layers trained (from scratch)")
    scratch = train(
        **common,
        weights="none",
        strategy="fine-tune",
        backbone_lr_mult=1.0,
        out=str(Path(out) / f"scratch-{stamp}"),
    )
    seconds = time.perf_counter() - t0
    t = Table(
        title=f"Animal-MNIST, {train_per_class} train / {val_per_class} val images per class, {model}, {epochs} epochs, {image_size}px"
    )
    t.add_column("run")
    t.add_column("val accuracy", justify="right")
    t.add_column("trainable params", justify="right")
    t.add_column("seconds", justify="right")
    for name, r in (
        ("pretrained, feature extraction", pre),
        ("random init, from scratch", scratch),
    ):
        info = r.metrics["run"]
        t.add_row(
            name,
            f"{100 * r.val_accuracy:.1f} %",
            f"{info['trainable_params_start']:,}",
            f"{r.seconds:.0f}",
        )
    console.print(t)
    console.print(f"run folders: {pre.run_dir}  {scratch.run_dir}")
    console.print(
        f"transfer learning: {100 * (pre.val_accuracy - scratch.val_accuracy):+.1f} points of accuracy "
        f"in {pre.seconds / max(scratch.seconds, 1e-9):.2f}x the time of training from scratch; "
        f"demo took {seconds:.0f}s"
    )
    return DemoResult(pre, scratch, seconds)

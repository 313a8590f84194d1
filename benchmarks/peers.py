"""fastai as a peer (optional: ``make bench-install`` adds the ``bench`` extra)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def run_fastai(data: Path, epochs: int, size: int = 224, batch_size: int = 32) -> dict[str, Any]:
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, aug_transforms, vision_learner
    from torch import nn
    from torchvision.models import mobilenet_v2

    t0 = time.perf_counter()
    dls = ImageDataLoaders.from_folder(
        data,
        train="train",
        valid="val",
        item_tfms=Resize(size),
        batch_tfms=aug_transforms(),
        bs=batch_size,
        num_workers=0,
        device="cpu",
    )

    def arch(pretrained: bool = True) -> Any:
        # fastai 2.8's vision_learner drops `cut=`; a trailing pooling layer lets its
        # create_body cut right after MobileNetV2's .features (fastai then adds its own head).
        net = mobilenet_v2(weights="IMAGENET1K_V1" if pretrained else None)
        return nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1))

    learn = vision_learner(dls, arch, metrics=accuracy, pretrained=True)
    learn.fine_tune(epochs)
    wall = time.perf_counter() - t0
    acc = float(learn.validate()[1])
    return {"val_accuracy": acc, "train_seconds": wall, "epoch_seconds": wall / (epochs + 1)}

"""The seeds' tutorial training loop, written from its description, as the benchmark reference.

ImageFolder datasets; RandomResizedCrop(224)+flip / Resize(256)+CenterCrop(224) with ImageNet
mean/std; torchvision MobileNetV2 IMAGENET1K_V1 with ``classifier[-1]`` replaced; SGD(momentum
0.9, lr 1e-3) on the trainable parameters; StepLR(step_size=7, gamma=0.1); a train phase
(``model.train()``) and a val phase (``model.eval()``) per epoch. Feature extraction freezes every
parameter except the new classifier (BatchNorm layers still run in train mode, as in the
tutorial); fine-tuning trains everything. Nothing here is headstart code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn, optim
from torch.optim import lr_scheduler
from torchvision import datasets, models, transforms

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def run(
    data: Path,
    epochs: int,
    mode: str,
    batch_size: int = 32,
    size: int = 224,
    seed: int = 0,
    on_epoch_end: Callable[[int, nn.Module, float, Any], None] | None = None,
) -> dict[str, Any]:
    """Train as the tutorial does. ``on_epoch_end(epoch, model, val_accuracy, eval_transform)``
    runs after each epoch's val phase (benchmarks use it to score a test split, off the clock)."""
    torch.manual_seed(seed)
    tf = {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        ),
        "val": transforms.Compose(
            [
                transforms.Resize(int(size * 256 / 224)),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        ),
    }
    ds = {k: datasets.ImageFolder(str(data / k), tf[k]) for k in ("train", "val")}
    loaders = {
        k: torch.utils.data.DataLoader(
            ds[k], batch_size=batch_size, shuffle=k == "train", num_workers=0
        )
        for k in ds
    }
    model = models.mobilenet_v2(weights="IMAGENET1K_V1")
    if mode == "feature-extract":
        for p in model.parameters():
            p.requires_grad = False
    model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, len(ds["train"].classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    t0 = time.perf_counter()
    epoch_times, acc = [], 0.0
    for _ in range(epochs):
        te = time.perf_counter()
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            correct, seen = 0, 0
            for x, y in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    out = model(x)
                    loss = criterion(out, y)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                correct += int((out.argmax(1) == y).sum())
                seen += len(y)
            if phase == "train":
                scheduler.step()
            else:
                acc = correct / seen
        epoch_times.append(time.perf_counter() - te)
        if on_epoch_end is not None:
            on_epoch_end(len(epoch_times) - 1, model, acc, tf["val"])
    wall = time.perf_counter() - t0
    images = epochs * (len(ds["train"]) + len(ds["val"]))
    return {
        "val_accuracy": acc,
        "train_seconds": wall,
        "epoch_seconds": sum(epoch_times) / len(epoch_times),
        "images_processed": images,
    }

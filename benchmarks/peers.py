"""fastai as a peer, configured as its users run it (optional: ``make bench-install`` adds it).

fastai's ``vision_learner`` normalises inputs with ImageNet statistics only when the
architecture has an entry in ``fastai.vision.all.model_meta``. torchvision's ``mobilenet_v2``
has none, so it is registered first, as the fastai docs do for custom architectures (without it
the model trains on un-normalised inputs: 53 % where normalised runs reach 85 %).
``fine_tune(epochs)`` is fastai's default recipe: one frozen epoch, then ``epochs`` unfrozen
ones with discriminative LRs and one-cycle. Accuracy is reported on the test folder, which
nothing was selected on, and on val; the last epoch's model (fastai keeps no best checkpoint).

    python benchmarks/peers.py DATA [--epochs 3]   # prints one JSON line; time it from outside
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def run_fastai(
    data: Path,
    epochs: int,
    size: int = 224,
    batch_size: int = 32,
    seed: int | None = None,
    callbacks: list[Any] | None = None,
) -> dict[str, Any]:
    """``fine_tune(epochs)`` as fastai's users run it; ``seed`` goes to fastai's ``set_seed``
    (as its docs do for reproducible runs), ``callbacks`` to the Learner."""
    from fastai.vision.all import (
        ImageDataLoaders,
        Resize,
        accuracy,
        aug_transforms,
        default_split,
        get_image_files,
        imagenet_stats,
        model_meta,
        set_seed,
        vision_learner,
    )
    from torchvision.models import mobilenet_v2

    t0 = time.perf_counter()
    if seed is not None:
        set_seed(seed)
    model_meta[mobilenet_v2] = {"cut": -1, "split": default_split, "stats": imagenet_stats}
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
    learn = vision_learner(
        dls, mobilenet_v2, metrics=accuracy, pretrained=True, cbs=callbacks or None
    )
    learn.fine_tune(epochs)
    train_seconds = time.perf_counter() - t0
    val = float(learn.validate()[1])
    out: dict[str, Any] = {"val_accuracy": val, "train_seconds": round(train_seconds, 1)}
    test_dir = data / "test"
    if test_dir.is_dir():
        tdl = learn.dls.test_dl(get_image_files(test_dir), with_labels=True)
        out["test_accuracy"] = float(learn.validate(dl=tdl)[1])
    out["seconds_in_process"] = round(time.perf_counter() - t0, 1)
    out["normalize"] = str(learn.dls.after_batch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data", type=Path)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    print(json.dumps(run_fastai(a.data, a.epochs, a.size)))


if __name__ == "__main__":
    main()

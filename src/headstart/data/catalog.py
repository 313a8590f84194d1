"""Offline demo data: Animal-MNIST (``animal-mnist`` package, MIT) as an ImageFolder tree.

The package ships 10,000 28x28 grayscale silhouettes, 1,000 per class, as two gzip pickles; we
read them directly (its loader module imports tensorflow). Class names follow the package's
description, in label order.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.errors import DataError

ANIMAL_CLASSES = [
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
]


def load_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (10000, 28, 28), labels int (10000,))`` from the installed package."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the demo data needs the 'animal-mnist' package: pip install --no-deps animal-mnist==0.4 "
            "(make demo installs it)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    try:
        with gzip.open(root / "animal_data_version_3.gz") as fh:
            images = np.asarray(pickle.load(fh), dtype=np.uint8)
        with gzip.open(root / "animal_label_version_3.gz") as fh:
            labels = np.asarray(pickle.load(fh)).astype(np.int64)
    except OSError as err:
        raise DataError(f"cannot read Animal-MNIST files under {root}: {err}") from None
    return images, labels


def _unique_picks(images: np.ndarray, order: np.ndarray, need: int, seen: set[bytes]) -> np.ndarray:
    """The first ``need`` indices of ``order`` whose pixels are not in ``seen`` (updated)."""
    picked: list[int] = []
    for i in order:
        key = hashlib.sha1(images[i].tobytes()).digest()
        if key not in seen:
            seen.add(key)
            picked.append(int(i))
            if len(picked) == need:
                break
    return np.asarray(picked, dtype=np.int64)


def materialise_animal_mnist(
    out: str | Path,
    train_per_class: int = 100,
    val_per_class: int = 50,
    test_per_class: int = 0,
    seed: int = 0,
) -> Path:
    """Write ``out/{train,val[,test]}/<class>/<n>.png`` with disjoint, seeded picks per class.

    The picks are unique images: Animal-MNIST holds 284 images twice (same pixels, same class),
    and a copy in train and its twin in val would leak. Idempotent: a folder written with the
    same arguments is reused as it is; one this function wrote with other arguments (or before
    picks were de-duplicated) is rewritten.
    """
    out = Path(out)
    marker = out / "animal-mnist.json"
    params = {
        "train": train_per_class, "val": val_per_class, "test": test_per_class, "seed": seed,
        "unique": True,
    }  # fmt: skip
    if marker.is_file():
        if json.loads(marker.read_text()) == params:
            return out
        shutil.rmtree(out)  # ours (it has our marker), written with other arguments
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists with other content; remove it or choose another folder")
    need = train_per_class + val_per_class + test_per_class
    images, labels = load_animal_mnist()
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    for c, name in enumerate(ANIMAL_CLASSES):
        idx = _unique_picks(images, rng.permutation(np.flatnonzero(labels == c)), need, seen)
        if len(idx) < need:
            raise DataError(f"Animal-MNIST has {len(idx)} distinct {name} images; asked for {need}")
        bounds = {
            "train": idx[:train_per_class],
            "val": idx[train_per_class : train_per_class + val_per_class],
            "test": idx[train_per_class + val_per_class :],
        }
        for split, chosen in bounds.items():
            if len(chosen) == 0:
                continue
            d = out / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                Image.fromarray(images[i], mode="L").save(d / f"{int(i):05d}.png")
    marker.write_text(json.dumps(params))
    return out

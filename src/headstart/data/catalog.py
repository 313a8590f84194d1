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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def written_before(out: Path, marker: Path, params: dict[str, Any]) -> bool:
    """Whether ``out`` holds what a materialise function wrote with ``params`` (its marker
    file says so): reuse it. One it wrote with other arguments is removed; a folder with other
    content is an error (nothing of the user's is deleted)."""
    if marker.is_file():
        if json.loads(marker.read_text()) == params:
            return True
        shutil.rmtree(out)  # ours (it has our marker), written with other arguments
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists with other content; remove it or choose another folder")
    return False


def silhouette_pools(
    names: Sequence[str], labels: np.ndarray, rng: np.random.Generator, test: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """Per animal: its silhouette indices shuffled and split 4:1 into ``train`` and ``val``
    (disjoint, so composites of the splits never share a silhouette); with ``test`` the fifth
    is halved into ``val`` and ``test`` (``train`` stays the same)."""
    pools = {}
    for name in names:
        idx = rng.permutation(np.flatnonzero(labels == ANIMAL_CLASSES.index(name)))
        cut = len(idx) * 4 // 5
        pools[name] = {"train": idx[:cut], "val": idx[cut:]}
        if test:
            half = cut + (len(idx) - cut) // 2
            pools[name].update(val=idx[cut:half], test=idx[half:])
    return pools


def _split_sizes(train: int, val: int, test: int) -> list[tuple[str, int]]:
    """The ``(split, count)`` pairs a composite demo set writes (``test`` only when > 0)."""
    return [("train", train), ("val", val)] + ([("test", test)] if test > 0 else [])


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
    if written_before(out, marker, params):
        return out
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


#: the animals of the multi-label demo (:func:`materialise_multilabel_animals`)
MULTILABEL_ANIMALS = ["bird", "cat", "dog", "elephant", "giraffe", "horse"]


def _composite(
    rng: np.random.Generator, silhouettes: list[np.ndarray], size: int = 64
) -> np.ndarray:
    """An RGB ``size`` px image: a random two-colour gradient with noise, and each silhouette
    (28x28 uint8, bright on dark) tinted with a contrasting colour in its own quadrant."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    canvas = (1 - t) * top + t * bottom + rng.normal(0, 12, (size, size, 3))
    cell = size // 2
    for s, quadrant in zip(silhouettes, rng.permutation(4), strict=False):
        y0 = cell * (quadrant // 2) + int(rng.integers(0, cell - 28 + 1))
        x0 = cell * (quadrant % 2) + int(rng.integers(0, cell - 28 + 1))
        patch = canvas[y0 : y0 + 28, x0 : x0 + 28]
        ink = np.where(patch.mean((0, 1)) > 127, rng.integers(0, 60, 3), rng.integers(196, 256, 3))
        alpha = (s.astype(np.float64) / 255.0)[:, :, None]
        canvas[y0 : y0 + 28, x0 : x0 + 28] = (1 - alpha) * patch + alpha * ink
    return np.clip(canvas, 0, 255).astype(np.uint8)


def materialise_multilabel_animals(
    out: str | Path, train: int = 400, val: int = 100, seed: int = 0, max_animals: int = 3,
    test: int = 0,
) -> Path:  # fmt: skip
    """Write a multi-label demo set: ``out/images/<split>_<n>.png`` (64 px) each showing 1 to
    ``max_animals`` (at most 4) different Animal-MNIST silhouettes of :data:`MULTILABEL_ANIMALS`
    on a varied background, and ``out/train.csv`` / ``out/val.csv`` (and ``out/test.csv`` when
    ``test`` > 0) with ``path,labels`` naming exactly the animals drawn. The splits use
    disjoint silhouettes. Idempotent like :func:`materialise_animal_mnist`."""
    out = Path(out)
    marker = out / "multilabel-animals.json"
    params = {"train": train, "val": val, "seed": seed, "max_animals": max_animals}
    if test > 0:  # the marker of a set without a test split stays as it was
        params["test"] = test
    if written_before(out, marker, params):
        return out
    images, labels = load_animal_mnist()
    rng = np.random.default_rng(seed)
    pools = silhouette_pools(
        MULTILABEL_ANIMALS, labels, rng, test=test > 0
    )  # split -> animal -> silhouette indices (disjoint between splits)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for split, n in _split_sizes(train, val, test):
        rows = ["path,labels"]
        for i in range(n):
            k = int(rng.integers(1, min(max_animals, 4) + 1))
            chosen = sorted(rng.choice(MULTILABEL_ANIMALS, k, replace=False).tolist())
            drawn = [images[int(rng.choice(pools[a][split]))] for a in chosen]
            name = f"images/{split}_{i:05d}.png"
            Image.fromarray(_composite(rng, drawn)).save(out / name)
            rows.append(f"{name},{'|'.join(chosen)}")
        (out / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    marker.write_text(json.dumps(params))
    return out


#: the tasks of the multi-task demo (:func:`materialise_multitask_animals`): column -> classes
MULTITASK_TASKS: dict[str, list[str]] = {
    "animal": ["bird", "cat", "dog", "horse"],
    "colour": ["blue", "green", "red", "yellow"],
    "size": ["large", "small"],
}
_INK = {
    "blue": (40, 90, 255),
    "green": (40, 200, 60),
    "red": (235, 40, 40),
    "yellow": (245, 225, 40),
}


def _tinted(
    rng: np.random.Generator, silhouette: np.ndarray, colour: str, large: bool
) -> np.ndarray:
    """A 64 px RGB image: a dark noisy two-tone gradient and the silhouette (28x28, bright on
    dark) drawn in ``colour`` (jittered), 48 px tall when ``large``, else 24 px, at a random
    place."""
    size = 64
    top, bottom = rng.integers(0, 90, 3), rng.integers(0, 90, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    canvas = (1 - t) * top + t * bottom + rng.normal(0, 10, (size, size, 3))
    side = 48 if large else 24
    mask = np.asarray(Image.fromarray(silhouette).resize((side, side), Image.Resampling.BILINEAR))
    y0, x0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
    ink = np.clip(np.array(_INK[colour]) + rng.integers(-25, 26, 3), 0, 255)
    alpha = (mask.astype(np.float64) / 255.0)[:, :, None]
    patch = canvas[y0 : y0 + side, x0 : x0 + side]
    canvas[y0 : y0 + side, x0 : x0 + side] = (1 - alpha) * patch + alpha * ink
    return np.clip(canvas, 0, 255).astype(np.uint8)


def materialise_multitask_animals(
    out: str | Path, train: int = 300, val: int = 100, seed: int = 0, test: int = 0
) -> Path:
    """Write a multi-task demo set: ``out/images/<split>_<n>.png`` (64 px), each one
    Animal-MNIST silhouette, and ``out/train.csv`` / ``out/val.csv`` (and ``out/test.csv`` when
    ``test`` > 0) with columns ``path,animal,colour,size`` (:data:`MULTITASK_TASKS`): which
    animal, the colour it is drawn in, and whether it is drawn large (48 px) or small (24 px) —
    exact labels per task. Each task's classes come equally often in each split (an
    independent shuffle per task), so every class reaches every split. The splits use disjoint
    silhouettes. Idempotent like :func:`materialise_animal_mnist`."""
    out = Path(out)
    marker = out / "multitask-animals.json"
    params = {"train": train, "val": val, "seed": seed}
    if test > 0:  # the marker of a set without a test split stays as it was
        params["test"] = test
    if written_before(out, marker, params):
        return out
    images, labels = load_animal_mnist()
    rng = np.random.default_rng(seed)
    pools = silhouette_pools(
        MULTITASK_TASKS["animal"], labels, rng, test=test > 0
    )  # animal -> split -> silhouette indices (disjoint between splits)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for split, n in _split_sizes(train, val, test):
        rows = ["path," + ",".join(MULTITASK_TASKS)]
        columns = [rng.permutation(np.resize(v, n)) for v in MULTITASK_TASKS.values()]
        for i in range(n):
            animal, colour, size = (str(c[i]) for c in columns)
            drawn = images[int(rng.choice(pools[animal][split]))]
            name = f"images/{split}_{i:05d}.png"
            Image.fromarray(_tinted(rng, drawn, colour, size == "large")).save(out / name)
            rows.append(f"{name},{animal},{colour},{size}")
        (out / f"{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    marker.write_text(json.dumps(params))
    return out


#: the animals of the segmentation demo (:func:`materialise_segmentation_animals`); index 0 of
#: its classes.txt is ``background``
SEGMENTATION_ANIMALS = ["bird", "cat", "elephant", "horse"]


def _segmentation_composite(
    rng: np.random.Generator, silhouettes: list[tuple[np.ndarray, int]], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB image, index mask)``: a random two-colour gradient with noise, and each
    ``(silhouette, class index)`` scaled to 40-90 % of a quadrant, tinted with a contrasting
    colour and placed in its own quadrant; the mask holds the class exactly where ink was
    painted (silhouette >= 128 after scaling), 0 elsewhere."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    canvas = (1 - t) * top + t * bottom + rng.normal(0, 12, (size, size, 3))
    mask = np.zeros((size, size), np.uint8)
    cell = size // 2
    for (s, cls), quadrant in zip(silhouettes, rng.permutation(4), strict=False):
        side = int(rng.integers(int(cell * 0.4), int(cell * 0.9) + 1))
        shape = np.asarray(Image.fromarray(s).resize((side, side), Image.Resampling.BILINEAR))
        ink_at = shape >= 128
        y0 = cell * (quadrant // 2) + int(rng.integers(0, cell - side + 1))
        x0 = cell * (quadrant % 2) + int(rng.integers(0, cell - side + 1))
        patch = canvas[y0 : y0 + side, x0 : x0 + side]
        ink = np.where(patch.mean((0, 1)) > 127, rng.integers(0, 60, 3), rng.integers(196, 256, 3))
        patch[ink_at] = ink + rng.normal(0, 8, (int(ink_at.sum()), 3))
        mask[y0 : y0 + side, x0 : x0 + side][ink_at] = cls
    return np.clip(canvas, 0, 255).astype(np.uint8), mask


def materialise_segmentation_animals(
    out: str | Path, train: int = 300, val: int = 80, seed: int = 0, size: int = 96,
    max_animals: int = 3, test: int = 0,
) -> Path:  # fmt: skip
    """Write a segmentation demo set: ``out/{train,val}/images/<n>.png`` (``size`` px, 1 to
    ``max_animals`` Animal-MNIST silhouettes of :data:`SEGMENTATION_ANIMALS` on a varied
    background, each scaled and in its own quadrant), ``out/{train,val}/masks/<n>.png`` (index
    PNGs: the animal's class at exactly its painted pixels, 0 = background), ``out/test/`` alike
    when ``test`` > 0, and ``out/classes.txt``. The splits use disjoint silhouettes. Idempotent
    like :func:`materialise_animal_mnist`."""
    out = Path(out)
    marker = out / "segmentation-animals.json"
    params = {"train": train, "val": val, "seed": seed, "size": size, "max_animals": max_animals}
    if test > 0:  # the marker of a set without a test split stays as it was
        params["test"] = test
    if written_before(out, marker, params):
        return out
    images, labels = load_animal_mnist()
    rng = np.random.default_rng(seed)
    pools = silhouette_pools(
        SEGMENTATION_ANIMALS, labels, rng, test=test > 0
    )  # split -> animal -> silhouette indices (disjoint between splits)
    for split, n in _split_sizes(train, val, test):
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            k = int(rng.integers(1, min(max_animals, 4) + 1))
            chosen = rng.choice(len(SEGMENTATION_ANIMALS), k, replace=False).tolist()
            drawn = [
                (images[int(rng.choice(pools[SEGMENTATION_ANIMALS[c]][split]))], c + 1)
                for c in chosen
            ]
            image, mask = _segmentation_composite(rng, drawn, size)
            Image.fromarray(image).save(out / split / "images" / f"{i:05d}.png")
            Image.fromarray(mask, mode="L").save(out / split / "masks" / f"{i:05d}.png")
    (out / "classes.txt").write_text(
        "\n".join(["background", *SEGMENTATION_ANIMALS]) + "\n", encoding="utf-8"
    )
    marker.write_text(json.dumps(params))
    return out


#: the animals of the detection demo (:func:`materialise_detection_animals`), category ids 1..4
DETECTION_ANIMALS = SEGMENTATION_ANIMALS


def _quadrant_boxes(mask: np.ndarray) -> list[tuple[list[int], int]]:
    """``([x, y, w, h], class)`` of the painted pixels in each quadrant of a composite's mask
    (:func:`_segmentation_composite` puts one silhouette per quadrant)."""
    cell = mask.shape[0] // 2
    out = []
    for q in range(4):
        y0, x0 = cell * (q // 2), cell * (q % 2)
        part = mask[y0 : y0 + cell, x0 : x0 + cell]
        ys, xs = np.nonzero(part)
        if len(ys):
            box = [int(x0 + xs.min()), int(y0 + ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            out.append((box, int(part[ys[0], xs[0]])))
    return out


def materialise_detection_animals(
    out: str | Path, train: int = 300, val: int = 80, test: int = 0, seed: int = 0,
    size: int = 128, max_animals: int = 3, negatives: float = 0.05,
) -> Path:  # fmt: skip
    """Write a detection demo set in COCO format: ``out/images/<split>_<n>.png`` (``size`` px,
    0 to ``max_animals`` Animal-MNIST silhouettes of :data:`DETECTION_ANIMALS` on a varied
    background, each scaled to 40-90 % of its own quadrant; a ``negatives`` share of the
    images holds none) and ``out/{train,val[,test]}.json`` whose boxes are exactly the painted
    pixels' extent. The splits use disjoint silhouettes. Idempotent like
    :func:`materialise_animal_mnist`."""
    out = Path(out)
    marker = out / "detection-animals.json"
    params = {"train": train, "val": val, "test": test, "seed": seed, "size": size,
              "max_animals": max_animals, "negatives": negatives}  # fmt: skip
    if written_before(out, marker, params):
        return out
    images, labels = load_animal_mnist()
    rng = np.random.default_rng(seed)
    pools = silhouette_pools(DETECTION_ANIMALS, labels, rng, test=test > 0)
    (out / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(DETECTION_ANIMALS)]
    for split, n in _split_sizes(train, val, test):
        doc: dict[str, Any] = {"images": [], "annotations": [], "categories": categories}
        for i in range(n):
            k = 0 if rng.random() < negatives else int(rng.integers(1, min(max_animals, 4) + 1))
            chosen = rng.choice(len(DETECTION_ANIMALS), k, replace=False).tolist()
            drawn = [
                (images[int(rng.choice(pools[DETECTION_ANIMALS[c]][split]))], c + 1) for c in chosen
            ]
            image, mask = _segmentation_composite(rng, drawn, size)
            name = f"images/{split}_{i:05d}.png"
            Image.fromarray(image).save(out / name)
            doc["images"].append({"id": i, "file_name": name, "width": size, "height": size})
            for box, cls in _quadrant_boxes(mask):
                doc["annotations"].append({
                    "id": len(doc["annotations"]), "image_id": i, "category_id": cls,
                    "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
                })  # fmt: skip
        (out / f"{split}.json").write_text(json.dumps(doc), encoding="utf-8")
    marker.write_text(json.dumps(params))
    return out


#: the colour photos of ``skimage.data`` (scikit-image's package data, read as files: skimage
#: itself is not imported) that the Animal-MNIST-M target domain crops its backgrounds from
MNIST_M_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "ihc.png",
)


def load_mnist_m_photos() -> list[np.ndarray]:
    """The :data:`MNIST_M_PHOTOS` as RGB uint8 arrays, read from the installed scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "Animal-MNIST-M needs the photos of the 'scikit-image' package: pip install --no-deps "
            "scikit-image==0.26.0 (make install does it)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    photos = []
    for name in MNIST_M_PHOTOS:
        try:
            with Image.open(root / name) as im:
                photos.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        except OSError as err:
            raise DataError(f"cannot read the scikit-image photo {root / name}: {err}") from None
    return photos


def mnist_m_blend(silhouette: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Ganin et al.'s MNIST-M blend: ``|patch - silhouette|`` per colour channel (uint8 RGB), the
    grayscale ``silhouette`` (h, w) repeated over the channels of the ``patch`` (h, w, 3)."""
    if patch.shape != (*silhouette.shape, 3):
        raise ValueError(f"patch {patch.shape} does not fit silhouette {silhouette.shape} x 3")
    diff = patch.astype(np.int16) - silhouette.astype(np.int16)[:, :, None]
    return np.abs(diff).astype(np.uint8)


def _random_patch(rng: np.random.Generator, photos: list[np.ndarray], side: int) -> np.ndarray:
    """A ``side`` x ``side`` crop at a random place of a randomly chosen photo."""
    photo = photos[int(rng.integers(len(photos)))]
    y0 = int(rng.integers(0, photo.shape[0] - side + 1))
    x0 = int(rng.integers(0, photo.shape[1] - side + 1))
    return photo[y0 : y0 + side, x0 : x0 + side]


def materialise_animal_mnist_m(
    out: str | Path, source_train: int = 100, source_val: int = 30, target_unlabeled: int = 100,
    target_eval: int = 50, seed: int = 0,
) -> Path:  # fmt: skip
    """Write a domain-adaptation set after Ganin et al.'s MNIST -> MNIST-M (JMLR 2016), made
    from Animal-MNIST and the colour photos of scikit-image (:data:`MNIST_M_PHOTOS`):

    * ``out/source/{train,val}/<class>/<n>.png``: Animal-MNIST silhouettes as they are (28 px,
      grayscale, white on black);
    * ``out/target-unlabeled/<class>/<n>.png`` and ``out/target-eval/<class>/<n>.png``
      ("Animal-MNIST-M"): other silhouettes blended over a random 28 x 28 crop of a random
      photo as ``|crop - silhouette|`` per channel (RGB; :func:`mnist_m_blend`). The unlabeled
      folder is for ``--target-unlabeled`` (its class folders are ignored there), the labelled
      one for ``--target-eval``.

    Per class, the four parts use disjoint, distinct silhouettes (``<n>`` is the Animal-MNIST
    index); every draw comes from one generator seeded by ``seed``, so the files are the same on
    every machine. Idempotent like :func:`materialise_animal_mnist`.
    """
    out = Path(out)
    marker = out / "animal-mnist-m.json"
    sizes = {"source/train": source_train, "source/val": source_val,
             "target-unlabeled": target_unlabeled, "target-eval": target_eval}  # fmt: skip
    if min(sizes.values()) < 1:
        raise DataError(f"Animal-MNIST-M: every part needs at least one image per class: {sizes}")
    params = {**sizes, "seed": seed, "photos": list(MNIST_M_PHOTOS)}
    if written_before(out, marker, params):
        return out
    images, labels = load_animal_mnist()
    photos = load_mnist_m_photos()
    rng = np.random.default_rng(seed)
    need = sum(sizes.values())
    seen: set[bytes] = set()
    for c, name in enumerate(ANIMAL_CLASSES):
        idx = _unique_picks(images, rng.permutation(np.flatnonzero(labels == c)), need, seen)
        if len(idx) < need:
            raise DataError(f"Animal-MNIST has {len(idx)} distinct {name} images; asked for {need}")
        start = 0
        for part, n in sizes.items():
            d = out / part / name
            d.mkdir(parents=True, exist_ok=True)
            for i in idx[start : start + n]:
                pixels = images[i]
                if part.startswith("target"):
                    pixels = mnist_m_blend(pixels, _random_patch(rng, photos, pixels.shape[0]))
                Image.fromarray(pixels).save(d / f"{int(i):05d}.png")
            start += n
    marker.write_text(json.dumps(params))
    return out

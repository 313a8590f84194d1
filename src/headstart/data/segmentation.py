"""Semantic-segmentation data: ``<split>/images/*`` + ``<split>/masks/*`` (same stem, index
PNGs), ``classes.txt`` naming the indices ``0..K`` in order, 255 = ignore (docs/segmentation.md).

Every mask is opened once while the splits load, so a missing mask, a mask whose size differs
from its image, or a class index above ``K`` (other than 255) stops the run before training,
naming the file. Image and mask go through the same geometric transform (the mask with
nearest-neighbour interpolation); mean/std and the input size come from the weights.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from headstart.config import TrainConfig
from headstart.data.folders import DataSplits
from headstart.data.samplers import item_seed
from headstart.data.scan import Sample, is_hidden
from headstart.errors import DataError
from headstart.files import is_image_file, open_rgb, reading_image
from headstart.models.preprocessing import Preprocessing

log = logging.getLogger(__name__)

#: mask value that marks pixels left out of the loss and the metrics
IGNORE_INDEX = 255
CLASSES_FILE = "classes.txt"


@dataclass(frozen=True)
class SegmentationSample(Sample):
    """An image, its index mask, and the classes present in the mask (``labels``, sorted by
    index; ``label`` is the most frequent non-background class, or the background)."""

    mask: Path = Path()
    labels: tuple[str, ...] = ()


def is_segmentation_layout(data: str | Path) -> bool:
    """``data/train/images`` and ``data/train/masks`` exist (the segmentation layout)."""
    root = Path(data)
    return (root / "train" / "images").is_dir() and (root / "train" / "masks").is_dir()


def is_segmentation_config(config: TrainConfig) -> bool:
    """``--task segmentation``, or ``--task auto`` on data in the segmentation layout."""
    if config.task == "segmentation":
        return True
    return config.task == "auto" and is_segmentation_layout(config.data)


def read_classes(root: Path) -> list[str]:
    """The class names of ``root/classes.txt`` (line ``i`` names index ``i``)."""
    path = root / CLASSES_FILE
    if not path.is_file():
        raise DataError(
            f"{path} is missing: segmentation data needs a classes.txt naming the mask indices "
            "0..K, one per line (0 is usually 'background'; see docs/segmentation.md)"
        )
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if len(names) < 2:
        raise DataError(f"{path} names {len(names)} class(es); segmentation needs at least 2")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path} repeats class name(s) {', '.join(dup)}")
    if len(names) > IGNORE_INDEX:
        raise DataError(f"{path} names {len(names)} classes; at most {IGNORE_INDEX} fit a mask")
    return names


def read_mask(path: Path) -> np.ndarray:
    """An index mask as ``uint8 (H, W)``: a palette ("P") or grayscale ("L") PNG."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise DataError(
                    f"mask {path} is a {img.mode} image; masks must be single-channel index "
                    "PNGs (mode L or P) holding class indices 0..K and 255 for ignore"
                )
            return np.asarray(img, dtype=np.uint8).copy()
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read mask {path}: {err}. Replace the file.") from None


def check_pair(image: Path, mask: Path, classes: list[str]) -> SegmentationSample:
    """The sample of ``image`` + ``mask``, checked: readable, same size, known class indices."""
    m = read_mask(mask)
    with reading_image(image), Image.open(image) as img:
        size = img.size
    if (m.shape[1], m.shape[0]) != size:
        raise DataError(
            f"mask {mask} is {m.shape[1]}x{m.shape[0]} but its image {image} is "
            f"{size[0]}x{size[1]}; a mask must have its image's size"
        )
    counts = np.bincount(m.ravel(), minlength=256)
    bad = [int(v) + len(classes) for v in np.flatnonzero(counts[len(classes) : IGNORE_INDEX])]
    if bad:
        raise DataError(
            f"mask {mask} holds class index {bad[0]} but classes.txt names only 0..{len(classes) - 1}"
            f" ({', '.join(classes)}); use 255 for pixels to ignore"
        )
    present = [i for i in range(len(classes)) if counts[i]]
    fg = [i for i in present if i != 0]
    main = max(fg, key=lambda i: counts[i]) if fg else 0
    return SegmentationSample(image, classes[main], mask, tuple(classes[i] for i in present))


def read_split(folder: Path, classes: list[str]) -> list[SegmentationSample]:
    """The checked samples of ``folder/images`` + ``folder/masks`` (masks matched by stem)."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise DataError(f"{d} is missing: a segmentation split needs images/ and masks/")
    images = sorted(p for p in images_dir.iterdir() if is_image_file(p) and not is_hidden(p))
    if not images:
        raise DataError(f"{images_dir} holds no images (an empty split); add images and masks")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.is_file() and not is_hidden(p)}
    samples = []
    for image in images:
        mask = masks.pop(image.stem, None)
        if mask is None:
            raise DataError(
                f"image {image} has no mask: expected {masks_dir / (image.stem + '.png')}"
            )
        samples.append(check_pair(image, mask, classes))
    if masks:
        log.warning("%d mask(s) in %s without an image ignored", len(masks), masks_dir)
    return samples


def load_segmentation_splits(
    data: str | Path, val: str | Path | None = None, test: str | Path | None = None,
    *, val_fraction: float = 0.2, seed: int = 42,
) -> DataSplits:  # fmt: skip
    """Splits of ``data/{train,val[,test]}`` (``val``/``test``: other folders of the same
    layout; no val folder: ``val_fraction`` of train, seeded) and the classes of
    ``data/classes.txt``."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if not (root / "train").is_dir():
        raise DataError(f"{root}/train is missing: segmentation data is {root}/train/images + "
                        f"{root}/train/masks (+ val/), see docs/segmentation.md")  # fmt: skip
    classes = read_classes(root)
    train = read_split(root / "train", classes)
    val_dir = Path(val) if val else root / "val"
    if val_dir.is_dir():
        val_samples = read_split(val_dir, classes)
    else:
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = max(1, round(len(train) * val_fraction))
        if len(train) - n_val < 1:
            raise DataError(f"{root}/train has {len(train)} image(s): too few to split off val")
        val_samples = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
    test_dir = Path(test) if test else root / "test"
    test_samples = read_split(test_dir, classes) if test_dir.is_dir() else []
    return DataSplits(list[Sample](train), list[Sample](val_samples), list[Sample](test_samples),
                      classes, Counter(), False)  # fmt: skip


def resize_pair(
    image: Image.Image, mask: np.ndarray | None, size: int, interpolation: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Image and mask resized to ``size x size`` (the model input; no crop, so every pixel of
    the input gets a prediction): the image with the weights' interpolation, the mask nearest."""
    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    img = np.array(image.convert("RGB").resize((size, size), resample), dtype=np.uint8)
    if mask is None:
        return img, None
    m = Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)
    return img, np.array(m, dtype=np.uint8)


def model_input(
    source: str | Path | Any, crop: int, interpolation: str, name: str | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 (crop, crop, 3) input, (width, height) of the original)`` of one image (a path
    or a file-like object, called ``name`` in errors): every prediction path of a segmentation
    model reads images so."""
    with reading_image(name or source):
        image = open_rgb(source)
    pixels, _ = resize_pair(image, None, crop, interpolation)
    return pixels, image.size


def to_original_size(classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``(crop, crop)`` class map brought to ``size`` (width, height), nearest-neighbour."""
    img = Image.fromarray(classes.astype(np.uint8), mode="L")
    return np.asarray(img.resize(size, Image.Resampling.NEAREST), dtype=np.uint8)


def train_pair_transform(pre: Preprocessing, augment: str, flip: bool) -> v2.Compose:
    """The paired training augmentation (RandomResizedCrop + flip, colour jitter on the image
    only for ``standard``/``strong``) on ``(Image, Mask)`` tv_tensors."""
    scale = (0.6, 1.0) if augment == "light" else (0.35, 1.0)
    ops: list[v2.Transform] = [v2.RandomResizedCrop(pre.crop, scale=scale, antialias=True)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    if augment in ("standard", "strong"):
        ops.append(v2.ColorJitter(0.3, 0.3, 0.3))
    return v2.Compose(ops)


class SegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(normalised image (3, crop, crop), mask int64 (crop, crop))`` pairs; accepts the
    ``(index, epoch)`` keys of the epoch samplers (augmentation seeded from them)."""

    def __init__(
        self, samples: Sequence[Sample], pre: Preprocessing, augment: str = "none",
        seed: int = 0, flip: bool = True,
    ) -> None:  # fmt: skip
        self.samples = [s for s in samples if isinstance(s, SegmentationSample)]
        if len(self.samples) != len(samples):
            raise DataError("segmentation needs image + mask samples (see docs/segmentation.md)")
        self.pre, self.seed = pre, seed
        self.augment = None if augment == "none" else train_pair_transform(pre, augment, flip)
        self.mean = torch.tensor(pre.mean).view(3, 1, 1)
        self.std = torch.tensor(pre.std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, epoch = (key, None) if isinstance(key, int) else key
        s = self.samples[i]
        with reading_image(s.path):
            image = open_rgb(s.path)
        mask = read_mask(s.mask)
        if self.augment is None:
            img, m = resize_pair(image, mask, self.pre.crop, self.pre.interpolation)
            x = torch.from_numpy(img).permute(2, 0, 1)
            y = torch.from_numpy(m if m is not None else mask)
        else:
            x, y = self._augmented(image, mask, epoch, i)
        x = (x.float() / 255.0 - self.mean) / self.std
        return x, y.long()

    def _augmented(
        self, image: Image.Image, mask: np.ndarray, epoch: int | None, i: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.augment is not None
        pair: Any = (
            tv_tensors.Image(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)),
            tv_tensors.Mask(torch.from_numpy(mask)),
        )
        if epoch is None:
            x, y = self.augment(pair)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed(self.seed, epoch, i))
                x, y = self.augment(pair)
        return torch.as_tensor(x), torch.as_tensor(y)

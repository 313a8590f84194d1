"""Object-detection data: COCO JSON files (``images``, ``annotations`` with ``bbox``
``[x, y, w, h]`` in pixels, ``categories``), image paths relative to the JSON's folder or to
``--images DIR`` (docs/detection.md).

Every file is checked while the splits load, naming the image or annotation id and what to do:
a missing image, an image whose size differs from the JSON's ``width``/``height``, an
annotation on an unknown image or category, a box of zero area, a box wholly outside its image
(a box partly outside is clipped to the image, with a warning counting them), and a file with
no annotations at all (images without boxes are legal negatives). Crowd annotations
(``iscrowd: 1``) are left out with a warning.

The model input is the image resized to ``crop x crop`` (no crop, so every box stays in view);
boxes travel as ``[class, x1, y1, x2, y2]`` rows in coordinates normalised to ``[0, 1]`` by the
image's width and height, padded with ``-1`` rows to the split's most boxes per image.
"""

from __future__ import annotations

import json
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
from torchvision.transforms import v2

from headstart.config import TrainConfig
from headstart.data.folders import DataSplits
from headstart.data.samplers import item_seed
from headstart.data.scan import Sample
from headstart.errors import DataError
from headstart.files import open_rgb, reading_image
from headstart.models.preprocessing import Preprocessing

log = logging.getLogger(__name__)

#: the COCO file a detection data folder's split holds: ``<folder>/<split>.json``
SPLIT_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}


@dataclass(frozen=True)
class DetectionSample(Sample):
    """An image and its boxes: ``boxes`` ``(x1, y1, x2, y2)`` normalised to ``[0, 1]`` by the
    image's width and height, ``box_classes`` their class indices, ``labels`` the classes
    present (sorted); ``label`` is the most frequent class (an image without boxes: the first
    class; ``label`` only feeds the class table and the sampler's counts)."""

    boxes: tuple[tuple[float, float, float, float], ...] = ()
    box_classes: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()
    image_id: int | str = 0
    size: tuple[int, int] = (0, 0)  # (width, height) in pixels


def is_coco_file(path: str | Path) -> bool:
    """A ``.json`` file holding an object with ``images`` and ``annotations``."""
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "images" in doc and "annotations" in doc


def is_detection_layout(data: str | Path) -> bool:
    """A COCO file, or a folder holding ``train.json`` as one."""
    p = Path(data)
    return is_coco_file(p) or (p.is_dir() and is_coco_file(p / SPLIT_FILES["train"]))


def is_detection_config(config: TrainConfig) -> bool:
    """``--task detection``, or ``--task auto`` on a COCO file (or a folder with train.json)."""
    if config.task == "detection":
        return True
    return config.task == "auto" and is_detection_layout(config.data)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from None
    except ValueError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path} must hold a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(
                f"{path} has no '{key}' list: a COCO detection file needs 'images', "
                "'annotations' and 'categories' (see docs/detection.md)"
            )
    return doc


def coco_categories(path: Path, doc: dict[str, Any]) -> dict[Any, str]:
    """Category id -> name, checked (every entry has an id and a unique name)."""
    out: dict[Any, str] = {}
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or "id" not in c or not str(c.get("name", "")).strip():
            raise DataError(f"{path}: categories[{i}] needs an 'id' and a 'name'")
        if c["id"] in out:
            raise DataError(f"{path}: category id {c['id']} is listed twice")
        out[c["id"]] = str(c["name"]).strip()
    names = list(out.values())
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: category name(s) {', '.join(dup)} are listed twice")
    if not out:
        raise DataError(f"{path} lists no categories; name each class in 'categories'")
    return out


def _id_order(key: Any) -> tuple[int, float, str]:
    """Sort key of COCO ids: numbers numerically, then other ids as text."""
    number = isinstance(key, int | float) and not isinstance(key, bool)
    return (0, float(key), "") if number else (1, 0.0, str(key))


def _image_entries(
    path: Path, doc: dict[str, Any], root: Path
) -> dict[Any, tuple[Path, tuple[int, int]]]:
    """Image id -> (file, (width, height)) with each file opened once (header only)."""
    out: dict[Any, tuple[Path, tuple[int, int]]] = {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            raise DataError(f"{path}: images[{i}] needs an 'id' and a 'file_name'")
        if im["id"] in out:
            raise DataError(f"{path}: image id {im['id']} is listed twice")
        file = root / str(im["file_name"])
        if not file.is_file():
            raise DataError(
                f"{path}: image id {im['id']}: {file} does not exist. File names are relative "
                f"to the JSON's folder; pass --images DIR if the images live elsewhere"
            )
        try:
            with Image.open(file) as img:
                size = img.size
        except Exception as err:
            raise DataError(
                f"{path}: image id {im['id']}: cannot read {file}: {err}. Replace the file."
            ) from None
        said = (im.get("width"), im.get("height"))
        if all(isinstance(v, int) for v in said) and said != size:
            raise DataError(
                f"{path}: image id {im['id']} ({file.name}) is {size[0]}x{size[1]} but the JSON "
                f"says {said[0]}x{said[1]}; fix 'width'/'height' (boxes are in its pixels)"
            )
        out[im["id"]] = (file, size)
    if not out:
        raise DataError(f"{path} lists no images")
    return out


def check_box(
    path: Path, ann: dict[str, Any], size: tuple[int, int], clipped: list[Any]
) -> tuple[float, float, float, float]:
    """Annotation ``ann``'s ``bbox [x, y, w, h]`` as pixel ``(x1, y1, x2, y2)`` inside an image
    of ``size``: a box partly outside is clipped (its id appended to ``clipped``); a box of
    zero area or wholly outside is an error naming the annotation and its image."""
    where = f"{path}: annotation id {ann.get('id')} (image id {ann.get('image_id')})"
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4:
        raise DataError(f"{where}: 'bbox' must be [x, y, width, height] (got {box!r})")
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'bbox' must hold 4 numbers (got {box!r})") from None
    if not all(np.isfinite([x, y, w, h])):
        raise DataError(f"{where}: 'bbox' {box} is not finite")
    if w <= 0 or h <= 0:
        raise DataError(
            f"{where}: box {box} has zero area (width {w:g}, height {h:g}); "
            "fix its size or delete the annotation"
        )
    W, H = size
    x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
    if x2 <= x1 or y2 <= y1:
        raise DataError(
            f"{where}: box {box} lies wholly outside its {W}x{H} image; "
            "fix the coordinates (pixels, [x, y, width, height]) or delete the annotation"
        )
    if (x1, y1, x2, y2) != (x, y, x + w, y + h):
        clipped.append(ann.get("id"))
    return x1, y1, x2, y2


def read_coco(
    path: str | Path, images: str | Path | None = None, classes: Sequence[str] | None = None
) -> tuple[list[DetectionSample], list[str]]:
    """``(samples, classes)`` of one COCO file, checked (see module doc). ``images``: the folder
    ``file_name`` is relative to (default: the JSON's). ``classes``: the names to index boxes
    by (a val/test file uses train's; a category not among them is an error); default: the
    file's categories in id order."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"COCO file {p} does not exist")
    doc = _load_json(p)
    cats = coco_categories(p, doc)
    names = list(classes) if classes is not None else [cats[k] for k in sorted(cats, key=_id_order)]
    unknown = sorted(set(cats.values()) - set(names))
    if unknown:
        raise DataError(
            f"{p} has categories the training file does not: {', '.join(unknown)} "
            f"(training classes: {', '.join(names)})"
        )
    index = {k: names.index(v) for k, v in cats.items()}
    entries = _image_entries(p, doc, Path(images) if images else p.parent)
    if not doc["annotations"]:
        raise DataError(
            f"{p} has an empty 'annotations' list: detection needs boxes to learn from (images "
            "without boxes are fine as negatives, but not a file without any box)"
        )
    boxes: dict[Any, list[tuple[tuple[float, float, float, float], int]]] = {k: [] for k in entries}
    clipped: list[Any] = []
    crowd = 0
    for a in doc["annotations"]:
        if not isinstance(a, dict):
            raise DataError(f"{p}: every annotation must be an object (got {a!r})")
        if a.get("image_id") not in entries:
            raise DataError(f"{p}: annotation id {a.get('id')} refers to image id "
                            f"{a.get('image_id')!r}, which 'images' does not list")  # fmt: skip
        if a.get("category_id") not in index:
            raise DataError(
                f"{p}: annotation id {a.get('id')} (image id {a['image_id']}) has category_id "
                f"{a.get('category_id')!r}; 'categories' lists ids "
                f"{', '.join(str(k) for k in cats)}"
            )
        if a.get("iscrowd"):
            crowd += 1
            continue
        box = check_box(p, a, entries[a["image_id"]][1], clipped)
        boxes[a["image_id"]].append((box, index[a["category_id"]]))
    if clipped:
        log.warning("%s: %d box(es) partly outside their image clipped to it (annotation id "
                    "%s first)", p, len(clipped), clipped[0])  # fmt: skip
    if crowd:
        log.warning("%s: %d crowd annotation(s) (iscrowd=1) left out", p, crowd)
    samples = [_sample(k, entries[k], boxes[k], names) for k in entries]
    return samples, names


def _sample(
    image_id: Any,
    entry: tuple[Path, tuple[int, int]],
    boxes: list[tuple[tuple[float, float, float, float], int]],
    names: list[str],
) -> DetectionSample:
    file, (w, h) = entry
    norm = tuple((x1 / w, y1 / h, x2 / w, y2 / h) for (x1, y1, x2, y2), _ in boxes)
    cls = tuple(c for _, c in boxes)
    counts = Counter(cls)
    label = names[max(counts, key=lambda c: (counts[c], -c))] if cls else names[0]
    present = tuple(names[c] for c in sorted(counts))
    return DetectionSample(file, label, norm, cls, present, image_id, (w, h))


def split_file(data: Path, split: str) -> Path | None:
    """``data/<split>.json`` of a detection data folder, when it exists."""
    f = data / SPLIT_FILES[split]
    return f if f.is_file() else None


def load_detection_splits(
    data: str | Path, val: str | Path | None = None, test: str | Path | None = None,
    *, images: str | Path | None = None, val_fraction: float = 0.2, seed: int = 42,
) -> DataSplits:  # fmt: skip
    """Splits of a COCO file (``data``; ``val``/``test``: other COCO files) or of a folder with
    ``train.json`` (+ ``val.json``, ``test.json``); no val file: ``val_fraction`` of train,
    seeded. Classes are the training file's categories in id order."""
    root = Path(data)
    if root.is_dir():
        train_file = split_file(root, "train")
        if train_file is None:
            raise DataError(f"{root} holds no train.json: detection data is a COCO file or a "
                            "folder with train.json (+ val.json, test.json)")  # fmt: skip
        val = val or split_file(root, "val")
        test = test or split_file(root, "test")
    elif root.is_file():
        train_file = root
    else:
        raise DataError(f"detection data {root} does not exist (a COCO .json file or a folder)")
    train, classes = read_coco(train_file, images)
    if val:
        val_samples, _ = read_coco(val, images, classes)
    else:
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = max(1, round(len(train) * val_fraction))
        if len(train) - n_val < 1:
            raise DataError(f"{train_file} has {len(train)} image(s): too few to split off val")
        val_samples = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]
    test_samples = read_coco(test, images, classes)[0] if test else []
    return DataSplits(list[Sample](train), list[Sample](val_samples), list[Sample](test_samples),
                      classes, Counter(), False)  # fmt: skip


def box_rows(sample: DetectionSample, rows: int) -> torch.Tensor:
    """``(rows, 5)`` float ``[class, x1, y1, x2, y2]`` (normalised), padded with ``-1``."""
    out = torch.full((max(rows, 1), 5), -1.0)
    for i, (box, c) in enumerate(zip(sample.boxes, sample.box_classes, strict=True)):
        out[i, 0] = float(c)
        out[i, 1:] = torch.tensor(box)
    return out


def square_pixels(image: Image.Image, size: int, interpolation: str) -> np.ndarray:
    """The model input's pixels: ``image`` resized to ``size x size`` (uint8 ``(H, W, 3)``;
    no crop, so every box stays in view), with the weights' interpolation."""
    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    return np.array(image.convert("RGB").resize((size, size), resample), dtype=np.uint8)


class DetectionDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``(normalised image (3, crop, crop), boxes (M, 5))`` pairs (see :func:`box_rows`; ``M``:
    the most boxes of any image in ``samples``); accepts the ``(index, epoch)`` keys of the
    epoch samplers. Training augmentation (``augment`` not ``none``): a horizontal flip (with
    ``flip``) and, for ``standard``/``strong``, colour jitter, seeded per item and epoch."""

    def __init__(
        self, samples: Sequence[Sample], pre: Preprocessing, augment: str = "none",
        seed: int = 0, flip: bool = True,
    ) -> None:  # fmt: skip
        self.samples = [s for s in samples if isinstance(s, DetectionSample)]
        if len(self.samples) != len(samples):
            raise DataError("detection needs COCO samples (see docs/detection.md)")
        self.pre, self.seed = pre, seed
        self.rows = max((len(s.boxes) for s in self.samples), default=1)
        self.flip = flip and augment != "none"
        self.jitter = v2.ColorJitter(0.3, 0.3, 0.3) if augment in ("standard", "strong") else None
        self.mean = torch.tensor(pre.mean).view(3, 1, 1)
        self.std = torch.tensor(pre.std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, epoch = (key, None) if isinstance(key, int) else key
        s = self.samples[i]
        with reading_image(s.path):
            image = open_rgb(s.path)
        x = torch.from_numpy(square_pixels(image, self.pre.crop, self.pre.interpolation))
        x = x.permute(2, 0, 1)
        y = box_rows(s, self.rows)
        if self.flip or self.jitter is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed(self.seed, epoch or 0, i))
                if self.flip and bool(torch.rand(()) < 0.5):
                    x = x.flip(-1)
                    real = y[:, 0] >= 0
                    y[real, 1], y[real, 3] = 1 - y[real, 3], 1 - y[real, 1]
                if self.jitter is not None:
                    x = self.jitter(x)
        return (x.float() / 255.0 - self.mean) / self.std, y

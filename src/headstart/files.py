"""Image file discovery and decoding shared by the data layer and the torch-free export
predictor, and the :class:`Prediction` every predictor returns (top-k from a probability row,
numpy only).

:func:`load_model_image` is the one image decoder behind every prediction path: eager
``predict``, the exported model's predictor (ONNX, TorchScript) and ``serve``. It is the
evaluation transform's geometry (``open_rgb`` with JPEG draft decoding, shorter side to
``resize`` with the weights' interpolation, PIL's antialiased resampling, centre crop) without
torch; ``tests/test_export_parity.py`` checks that it equals evaluation's
``build_eval_transform`` pixel for pixel."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from headstart.errors import DataError, HeadstartError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f)))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{p} does not exist")
    if not files:
        raise DataError("no image files to predict")
    return files


#: what a bad image file's error tells the user to do, unless a caller says otherwise
REPLACE_OR_LEAVE_OUT = "Replace the file or leave it out."


@contextmanager
def reading_image(name: object, advice: str = REPLACE_OR_LEAVE_OUT) -> Iterator[None]:
    """Turn anything reading the image ``name`` raises into one :class:`DataError`: "cannot
    read image NAME: CAUSE. ADVICE" (a :class:`HeadstartError` already says what to do and
    passes through)."""
    try:
        yield
    except HeadstartError:
        raise
    except Exception as err:
        raise DataError(f"cannot read image {name}: {err}. {advice}") from None


def open_rgb(source: str | Path | Any, draft_size: int | None = None) -> Image.Image:
    """An image file (path or file-like) as RGB with EXIF orientation applied.

    Palette/alpha images are composited on white; 16/32-bit grayscale is scaled to 8 bit
    (not clipped). ``draft_size`` lets JPEG decoding run at a reduced scale when the target is
    much smaller (PIL ``draft``), which saves most of the decode time for large photos.
    """
    with Image.open(source) as f:
        if draft_size and f.format == "JPEG":
            f.draft("RGB", (draft_size, draft_size))
        im: Image.Image = ImageOps.exif_transpose(f)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float32)
            hi = float(arr.max()) or 1.0
            im = Image.fromarray(np.clip(arr / hi * 255, 0, 255).astype(np.uint8), mode="L")
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return im.convert("RGB")


#: PIL's resampling filter for each interpolation name a
#: :class:`~headstart.models.Preprocessing` can carry (torchvision's ``InterpolationMode``
#: values, which torchvision maps to the same filters for PIL images)
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def resize_centre_crop(
    im: Image.Image, resize: int, crop: int, interpolation: str = "bilinear"
) -> Image.Image:
    """The shorter side to ``resize`` (aspect kept, longer side truncated to an integer; PIL
    resampling, which antialiases when shrinking), then the centred ``crop x crop`` square
    (zero padding where the image is smaller). The same arithmetic as torchvision's
    ``v2.Resize(resize)`` + ``v2.CenterCrop(crop)`` on a PIL image."""
    if interpolation not in RESAMPLING:
        raise DataError(
            f"unknown interpolation {interpolation!r} in the preprocessing; "
            f"use one of {', '.join(RESAMPLING)}"
        )
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize, int(resize * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    if size != (w, h):
        im = im.resize(size, resample=RESAMPLING[interpolation])
    w, h = im.size
    if crop > w or crop > h:  # pad to at least crop x crop, the extra pixel right/bottom
        pad_w, pad_h = max(crop - w, 0), max(crop - h, 0)
        canvas = Image.new("RGB", (w + pad_w, h + pad_h), (0, 0, 0))
        canvas.paste(im, (pad_w // 2, pad_h // 2))
        im = canvas
        w, h = im.size
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)
    return im.crop((left, top, left + crop, top + crop))


def load_model_image(
    source: str | Path | Any, resize: int, crop: int, interpolation: str = "bilinear"
) -> np.ndarray:
    """An image file (path or file-like) as the model sees it: uint8 RGB ``(crop, crop, 3)``,
    decoded by :func:`open_rgb` (large JPEGs at reduced scale, ``draft_size=resize``) and
    brought to size by :func:`resize_centre_crop`. Scaling to [0, 1] and normalisation are
    left to the model (the exported graph, or eager ``predict``)."""
    im = resize_centre_crop(open_rgb(source, draft_size=resize), resize, crop, interpolation)
    return np.asarray(im, dtype=np.uint8)


@dataclass(frozen=True)
class Prediction:
    """One input's prediction (an image file, a text): best label, its probability, and the
    top-k list ``[(label, probability), ...]``, most probable first. Multi-label models also
    give ``labels``: every label at or above its threshold, most probable first (``None`` for
    single-label models). Multi-task models give ``tasks``: per task (in training order) its
    top-k ``[(class, probability), ...]``; ``label``/``probability``/``top`` are then the first
    task's. Segmentation models give ``mask``: the predicted class index per pixel, uint8
    ``(height, width)`` at the input image's own size (what ``predict --masks`` writes);
    ``top`` then lists the classes by share of the mask's pixels and ``label`` is the largest
    class other than index 0 (the background) when one is predicted."""

    path: str
    label: str
    probability: float
    top: list[tuple[str, float]]
    labels: list[tuple[str, float]] | None = None
    tasks: dict[str, list[tuple[str, float]]] | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_task_probabilities(
        cls,
        name: str,
        probs: Sequence[float] | np.ndarray,
        tasks: Sequence[tuple[str, Sequence[str]]],
        top_k: int = 1,
    ) -> Prediction:
        """The multi-task prediction for one row of per-task softmax probabilities side by
        side: ``tasks`` lists each task's name and classes in output order."""
        p = np.asarray(probs, dtype=np.float64)
        out: dict[str, list[tuple[str, float]]] = {}
        start = 0
        for task, classes in tasks:
            part = cls.from_probabilities(name, p[start : start + len(classes)], classes, top_k)
            out[task] = part.top
            start += len(classes)
        first = next(iter(out.values()))
        return cls(name, first[0][0], first[0][1], first, None, out)

    @classmethod
    def from_label_probabilities(
        cls,
        name: str,
        probs: Sequence[float] | np.ndarray,
        labels: Sequence[str],
        thresholds: Sequence[float] | np.ndarray,
        top_k: int = 1,
    ) -> Prediction:
        """The multi-label prediction for one row of independent (sigmoid) probabilities:
        ``labels`` holds each label with ``probs[j] >= thresholds[j]``."""
        p = np.asarray(probs, dtype=np.float64)
        base = cls.from_probabilities(name, p, labels, top_k)
        order = np.argsort(-p, kind="stable")
        chosen = [(labels[j], float(p[j])) for j in order if p[j] >= thresholds[j]]
        return cls(name, base.label, base.probability, base.top, chosen)

    @classmethod
    def from_probabilities(
        cls, name: str, probs: Sequence[float] | np.ndarray, labels: Sequence[str], top_k: int = 1
    ) -> Prediction:
        """The prediction for one row of class probabilities (``probs[j]`` is ``labels[j]``'s);
        ``top_k`` is clamped to ``1..len(labels)``; ties keep label order."""
        p = np.asarray(probs)
        k = max(1, min(top_k, len(labels)))
        order = np.argsort(-p, kind="stable")[:k]
        top = [(labels[j], float(p[j])) for j in order]
        return cls(name, top[0][0], top[0][1], top)

    def to_json(self, name_key: str | None = None) -> dict[str, Any]:
        """The HTTP server's form: ``{name_key: path, "label", "probability", "top": [{"label",
        "probability"}, ...]}`` (no name entry when ``name_key`` is None)."""
        named: dict[str, Any] = {name_key: self.path} if name_key else {}
        top = [{"label": c, "probability": v} for c, v in self.top]
        out = {**named, "label": self.label, "probability": self.probability, "top": top}
        if self.labels is not None:
            out["labels"] = [{"label": c, "probability": v} for c, v in self.labels]
        if self.tasks is not None:
            out["tasks"] = {
                t: {"label": top[0][0], "probability": top[0][1],
                    "top": [{"label": c, "probability": v} for c, v in top]}
                for t, top in self.tasks.items()
            }  # fmt: skip
        return out


@dataclass(frozen=True)
class Unreadable:
    """An input a prediction path could not read (``predict`` skips it and says so)."""

    path: str
    error: str

    def to_json(self, name_key: str | None = "path") -> dict[str, Any]:
        return {**({name_key: self.path} if name_key else {}), "error": self.error}


def predict_readable(predict: Callable[[list[Any]], list[Any]], items: list[Any]) -> list[Any]:
    """``predict(items)``, in order, with one :class:`Unreadable` in place of each item it cannot
    read (:class:`~headstart.errors.DataError`) instead of failing the whole call: a failing
    batch is halved until the bad items are alone, so a few bad files among many cost a few
    extra calls; the good ones get the predictions they get in any batch (rows are
    independent in eval mode)."""
    try:
        return predict(items)
    except DataError as err:
        if len(items) == 1:
            return [Unreadable(str(items[0]), str(err))]
    mid = len(items) // 2
    return predict_readable(predict, items[:mid]) + predict_readable(predict, items[mid:])

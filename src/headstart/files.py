"""Image file discovery shared by the data layer and the torch-free export predictor, and the
:class:`Prediction` every predictor returns (top-k from a probability row, numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from headstart.errors import DataError

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


@dataclass(frozen=True)
class Prediction:
    """One input's prediction (an image file, a text): best label, its probability, and the
    top-k list ``[(label, probability), ...]``, most probable first."""

    path: str
    label: str
    probability: float
    top: list[tuple[str, float]]

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
        return {**named, "label": self.label, "probability": self.probability, "top": top}

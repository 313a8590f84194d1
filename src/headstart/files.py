"""Image file discovery shared by the data layer and the torch-free export predictor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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

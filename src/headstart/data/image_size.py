"""``--image-size auto``: a smaller input when the images are much smaller than the crop."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

UPSAMPLE_LIMIT = 4  # beyond 4x upsampling adds compute, not detail


def auto_image_size(
    paths: Sequence[Path], crop: int, sample: int = 64, seed: int = 0
) -> tuple[int, str]:
    """``(size, reason)``: ``crop`` unless the median shorter side times 4 is below it, then
    that (rounded up to a multiple of 32, at least 64). 28 px silhouettes at a 224 crop -> 112."""
    chosen = (
        list(paths) if len(paths) <= sample else random.Random(seed).sample(list(paths), sample)
    )
    sides = []
    for p in chosen:
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
        except OSError:
            continue
    if not sides:
        return crop, "no readable images to measure; keeping the weights' crop"
    med = statistics.median(sides)
    target = max(64, math.ceil(UPSAMPLE_LIMIT * med / 32) * 32)
    if target >= crop:
        return crop, f"median shorter side {med:g}px: keeping the weights' {crop}px crop"
    saving = (crop / target) ** 2
    return target, (
        f"median shorter side {med:g}px is far below the {crop}px crop; {target}px "
        f"(<= {UPSAMPLE_LIMIT}x upsampling) needs about {saving:.1f}x less compute"
    )

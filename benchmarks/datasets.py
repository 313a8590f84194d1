"""Offline data sets unlike ImageNet for benchmarks (made here, seeded, written as class folders).

* ``glyphs``: ten lower-case letters that are mirror images or rotations of each other (b d p q
  n u m w s z), rendered from the TrueType fonts matplotlib ships (DejaVu, STIX, Computer
  Modern; regular/bold/italic), at random size, position and slight rotation, dark on light
  noise. A horizontal flip turns b into d: flips change the label.
* ``gratings``: eight classes of stripe orientation (0, 22.5, ..., 157.5 degrees) with random
  frequency, phase, contrast, blur-free noise and a random circular window. A flip maps
  orientation t to 180 - t: another class. Texture statistics, not objects.

    python benchmarks/datasets.py glyphs /tmp/glyphs --train 50 --val 30 --test 100
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

GLYPHS = list("bdpqnumwsz")
ORIENTATIONS = [i * 22.5 for i in range(8)]


def _fonts() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    names = [
        "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
        "DejaVuSans-BoldOblique.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
        "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
        "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
        "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
    ]  # fmt: skip
    return [folder / n for n in names if (folder / n).is_file()]


def glyph_image(letter: str, font: Path, rng: np.random.Generator, size: int = 64) -> Image.Image:
    canvas = Image.new("L", (size * 2, size * 2), 0)
    f = ImageFont.truetype(str(font), int(rng.integers(size * 0.6, size * 1.0)))
    ImageDraw.Draw(canvas).text((size, size), letter, fill=255, font=f, anchor="mm")
    canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
    dx, dy = rng.integers(-size // 8, size // 8 + 1, size=2)
    box = (size // 2 + dx, size // 2 + dy, size // 2 + dx + size, size // 2 + dy + size)
    ink = np.asarray(canvas.crop(box), dtype=np.float32) / 255.0
    paper = rng.uniform(200, 255) - rng.normal(0, 12, (size, size))
    colour = rng.uniform(0, 90)
    arr = paper * (1 - ink) + colour * ink
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")


def grating_image(theta_deg: float, rng: np.random.Generator, size: int = 64) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - size / 2
    t = math.radians(theta_deg + rng.uniform(-4, 4))
    freq = rng.uniform(0.08, 0.3)
    wave = np.sin(
        freq * (xx * math.cos(t) + yy * math.sin(t)) * 2 * math.pi / 2 + rng.uniform(0, 6.3)
    )
    radius = rng.uniform(0.3, 0.5) * size
    window = (xx**2 + yy**2) < radius**2
    contrast = rng.uniform(40, 110)
    arr = 128 + contrast * wave * window + rng.normal(0, 15, (size, size))
    tint = rng.uniform(0.7, 1.0, size=3)
    rgb = np.clip(arr[..., None] * tint[None, None, :], 0, 255).astype(np.uint8)
    return Image.fromarray(rgb)


def materialise(kind: str, out: str | Path, train: int, val: int, test: int, seed: int = 0) -> Path:
    """Write ``out/{train,val,test}/<class>/*.png``; reused when written with the same settings."""
    out = Path(out)
    marker = out / "dataset.json"
    params = {"kind": kind, "train": train, "val": val, "test": test, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return out
    rng = np.random.default_rng(seed)
    fonts = _fonts()
    classes = GLYPHS if kind == "glyphs" else [f"{o:05.1f}deg" for o in ORIENTATIONS]
    for ci, name in enumerate(classes):
        for split, n in (("train", train), ("val", val), ("test", test)):
            d = out / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if kind == "glyphs":
                    img = glyph_image(name, fonts[int(rng.integers(len(fonts)))], rng)
                else:
                    img = grating_image(ORIENTATIONS[ci], rng)
                img.save(d / f"{i:04d}.png")
    marker.write_text(json.dumps(params))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("kind", choices=["glyphs", "gratings"])
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=50)
    ap.add_argument("--val", type=int, default=30)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(materialise(a.kind, a.out, a.train, a.val, a.test, a.seed))


if __name__ == "__main__":
    main()

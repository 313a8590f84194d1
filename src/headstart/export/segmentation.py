"""Segmentation runs out of training: index-mask PNGs from a run or from its ONNX export.

Both paths read an image the same way: decoded by :func:`~headstart.files.open_rgb`, resized
to ``crop x crop`` (the weights' interpolation; no crop, so every input pixel gets a class), the
model's per-pixel classes taken by argmax at that size, and the mask brought back to the
image's own size with nearest-neighbour resampling. The ONNX graph holds the scaling and
normalisation (uint8 ``(N, crop, crop, 3)`` in; ``probabilities`` and ``logits``
``(N, K, crop, crop)`` out) and its metadata the classes, the input size and the
interpolation; the masks of the two paths agree except on pixels whose top two logits are
within float rounding (checked in tests/test_segmentation.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headstart.data.segmentation import resize_pair
from headstart.errors import DataError, HeadstartError
from headstart.evaluation.loading import LoadedRun, load_run
from headstart.export.exporter import onnx_export
from headstart.files import collect_images, open_rgb

#: the ``task`` an exported segmentation model's metadata names
TASK = "segmentation"


class SegmentationWrapper(torch.nn.Module):
    """uint8 RGB ``(N, crop, crop, 3)`` -> ``(probabilities, logits)`` ``(N, K, crop, crop)``:
    scaling and the weights' mean/std inside the graph."""

    def __init__(self, loaded: LoadedRun) -> None:
        super().__init__()
        self.model = loaded.model
        pre = loaded.preprocessing
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        logits: torch.Tensor = self.model(x)
        return logits.softmax(1), logits


@dataclass
class SegmentationExport:
    """What :func:`export_segmentation` wrote and how close the export is to eager PyTorch."""

    path: Path
    max_abs_diff: float
    metadata: dict[str, Any]


def model_input(
    path: str | Path, crop: int, interpolation: str
) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 (crop, crop, 3) input, (width, height) of the original)`` of one image file."""
    try:
        image = open_rgb(path)
    except Exception as err:
        raise DataError(
            f"cannot read image {path}: {err}. Replace the file or leave it out."
        ) from None
    pixels, _ = resize_pair(image, None, crop, interpolation)
    return pixels, image.size


def to_original_size(classes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``(crop, crop)`` class map brought to ``size`` (width, height), nearest-neighbour."""
    img = Image.fromarray(classes.astype(np.uint8), mode="L")
    return np.asarray(img.resize(size, Image.Resampling.NEAREST), dtype=np.uint8)


def mask_paths(files: Sequence[Path], out_dir: Path) -> list[Path]:
    """One ``<stem>.png`` per input in ``out_dir`` (``<stem>-2.png``, ... for repeated stems)."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        n = seen.get(f.stem, 0) + 1
        seen[f.stem] = n
        out.append(out_dir / (f"{f.stem}.png" if n == 1 else f"{f.stem}-{n}.png"))
    return out


def _write_masks(
    files: Sequence[Path], out_dir: str | Path, crop: int, interpolation: str,
    logits_of: Any, batch_size: int,
) -> list[Path]:  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = mask_paths(files, out)
    for start in range(0, len(files), batch_size):
        chunk = [model_input(f, crop, interpolation) for f in files[start : start + batch_size]]
        logits = logits_of(np.stack([pixels for pixels, _ in chunk]))
        for (_, size), classes, target in zip(
            chunk, logits.argmax(1), targets[start : start + batch_size], strict=True
        ):
            Image.fromarray(to_original_size(classes, size), mode="L").save(target)
    return targets


@torch.inference_mode()
def predict_masks(
    run: str | Path | LoadedRun, inputs: Sequence[str | Path], out_dir: str | Path,
    *, batch_size: int = 16,
) -> list[Path]:  # fmt: skip
    """Write one index-mask PNG (the input's size; pixel = class index of classes.json) per
    image file or image in a folder of ``inputs`` into ``out_dir``; returns the PNG paths.

    Example::

        predict_masks("runs/seg", ["photos/"], "masks/")   # masks/<stem>.png per photo
    """
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    if loaded.config.task != TASK:
        raise HeadstartError(f"{loaded.run.path} is a {loaded.config.task} run, not segmentation")
    files = collect_images(list(inputs))
    if not files:
        raise DataError(f"no images in {', '.join(map(str, inputs))}")
    wrapper = SegmentationWrapper(loaded).eval()
    pre = loaded.preprocessing

    def logits_of(batch: np.ndarray) -> np.ndarray:
        return wrapper(torch.from_numpy(batch))[1].numpy()

    return _write_masks(files, out_dir, pre.crop, pre.interpolation, logits_of, batch_size)


def export_segmentation(
    run: str | Path | LoadedRun, out: str | Path | None = None
) -> SegmentationExport:
    """``model.onnx`` (opset 17, dynamic batch) of a segmentation run, preprocessing inside,
    classes and input size in its metadata; checked against eager PyTorch on a few of the run's
    validation images (max |probabilities, logits| difference returned)."""
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    pre = loaded.preprocessing
    path = Path(out) if out else loaded.run.path / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = SegmentationWrapper(loaded).eval()
    val = [Path(p) for p in _sample_files(loaded)]
    sample = torch.from_numpy(
        np.stack([model_input(f, pre.crop, pre.interpolation)[0] for f in val])
    )
    meta: dict[str, Any] = {
        "task": TASK, "labels": loaded.classes, "model": loaded.config.model,
        "preprocessing": pre.to_dict(), "input": f"uint8 (N, {pre.crop}, {pre.crop}, 3) RGB: "
        "the image resized to the input size (no crop)", "ignore_index": 255,
    }  # fmt: skip
    with torch.inference_mode():
        expected = np.concatenate([t.numpy() for t in wrapper(sample)], axis=1)
    got = onnx_export(wrapper, {"images": sample}, {"images": {0: "batch"}}, path, meta)
    diff = float(np.abs(got - expected).max())
    if diff > 1e-3:
        raise HeadstartError(f"ONNX export of {loaded.run.path} differs from PyTorch by {diff:.2e}")
    return SegmentationExport(path, diff, meta)


def _sample_files(loaded: LoadedRun, n: int = 2) -> list[str]:
    from headstart.modalities import splits_for

    return [str(s.path) for s in splits_for(loaded.config).val[:n]]


def predict_masks_onnx(
    model: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, *, batch_size: int = 16
) -> list[Path]:
    """:func:`predict_masks` with an exported ``model.onnx`` (onnxruntime; no run folder)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map.get("headstart", "{}"))
    if meta.get("task") != TASK:
        raise HeadstartError(f"{model} is not a segmentation model exported by headstart")
    files = collect_images(list(inputs))
    if not files:
        raise DataError(f"no images in {', '.join(map(str, inputs))}")
    pre = meta["preprocessing"]

    def logits_of(batch: np.ndarray) -> np.ndarray:
        out: np.ndarray = sess.run(["logits"], {"images": batch})[0]
        return out

    return _write_masks(
        files, out_dir, int(pre["crop"]), pre["interpolation"], logits_of, batch_size
    )

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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headstart import version
from headstart.data.segmentation import model_input, to_original_size
from headstart.errors import DataError, HeadstartError
from headstart.evaluation.loading import LoadedRun, load_run
from headstart.export.exporter import card_path, onnx_export
from headstart.files import collect_images
from headstart.inference import predict

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
    model_card: Path


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


def predict_masks(
    run: str | Path | LoadedRun, inputs: Sequence[str | Path], out_dir: str | Path,
    *, batch_size: int = 16,
) -> list[Path]:  # fmt: skip
    """Write one index-mask PNG (the input's size; pixel = class index of classes.json) per
    image file or image in a folder of ``inputs`` into ``out_dir``; returns the PNG paths.
    The masks are :func:`headstart.predict`'s ``Prediction.mask``.

    Example::

        predict_masks("runs/seg", ["photos/"], "masks/")   # masks/<stem>.png per photo
    """
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    if loaded.config.task != TASK:
        raise HeadstartError(f"{loaded.run.path} is a {loaded.config.task} run, not segmentation")
    files = collect_images(list(inputs))
    if not files:
        raise DataError(f"no images in {', '.join(map(str, inputs))}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = mask_paths(files, out)
    for p, target in zip(predict(loaded, files, batch_size=batch_size), targets, strict=True):
        assert p.mask is not None  # a segmentation run's predictions carry masks
        Image.fromarray(p.mask, mode="L").save(target)
    return targets


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
        "seg_head": loaded.config.seg_head, "preprocessing": pre.to_dict(), "input": f"uint8 (N, {pre.crop}, {pre.crop}, 3) RGB: "
        "the image resized to the input size (no crop)", "ignore_index": 255,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "headstart_version": version.__version__,
    }  # fmt: skip
    with torch.inference_mode():
        expected = np.concatenate([t.numpy() for t in wrapper(sample)], axis=1)
    got = onnx_export(wrapper, {"images": sample}, {"images": {0: "batch"}}, path, meta)
    diff = float(np.abs(got - expected).max())
    if diff > 1e-3:
        raise HeadstartError(f"ONNX export of {loaded.run.path} differs from PyTorch by {diff:.2e}")
    return SegmentationExport(path, diff, meta, _write_card(loaded, path, meta, diff))


def _write_card(loaded: LoadedRun, path: Path, meta: dict[str, Any], diff: float) -> Path:
    """MODEL_CARD.md of a segmentation export: model, input, classes, validation mIoU and
    per-class IoU, the export check, usage and limits."""
    metrics = loaded.run.load_metrics()
    val = metrics.get("val", {})
    rows = "\n".join(
        f"| {c} | {_iou(v.get('iou'))} | {v.get('pixels', '?')} |"
        for c, v in val.get("per_class", {}).items()
    )
    card = f"""# Model card: {loaded.run.path.name} (semantic segmentation)

- `{path.name}` (ONNX); exported {meta["date"]} with headstart {meta["headstart_version"]}
- **Model**: `{meta["model"]}`, weights `{metrics.get("run", {}).get("weights", "?")}`,
  `{meta["seg_head"]}` head
- **Input**: {meta["input"]}. **Output**: `probabilities` and `logits` (N, K, crop, crop);
  the mask is the per-pixel argmax, brought back to the image's size (nearest)
- **Classes** (index order; 0 is the background): {", ".join(meta["labels"])}
- **Validation**: mIoU {val.get("miou", float("nan")):.3f}, pixel accuracy
  {100 * val.get("pixel_accuracy", float("nan")):.2f} % on {val.get("samples", "?")} images
- **Export check**: max |export - eager| = {diff:.1e} on validation images (tolerance 1e-3)

| class | IoU | true pixels |
|---|---|---|
{rows}

## Use

```
headstart predict {path.name} IMAGES --masks masks/
```

## Limits

Trained on the run's data only; performance on other data is unknown. `serve` does not answer
with masks yet.
"""
    out = card_path(path)
    out.write_text(card, encoding="utf-8")
    return out


def _iou(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


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

"""Detection runs out of training: boxes JSON from a run or from its ONNX export
(``predict --boxes``), and the ONNX export itself.

An image is read as in training: decoded by :func:`~headstart.files.open_rgb`, resized to
``crop x crop`` (the weights' interpolation; no crop), normalised with the weights' mean/std.
The model's normalised detections are scaled back to the image's own pixels and written as
``x, y, w, h`` (top-left corner, width, height: COCO's ``bbox`` convention) with the class
name and the score.

The ONNX graph (opset 17, traced) holds the scaling, the normalisation and the detector's whole
post-processing (Faster R-CNN: proposals and RoI heads; RetinaNet and SSDlite: box decoding per
anchor; then per-class NMS, the score threshold of 0.05 and the cap of 100 detections): uint8
``(1, crop, crop, 3)`` in, one image per call; ``boxes`` ``(K, 4)`` normalised ``x1, y1, x2,
y2``, ``scores`` ``(K,)`` and ``labels`` ``(K,)`` (class indices) out, ``K`` varying with the
image. Its metadata holds the classes, the detector, the input size and the interpolation. The
export is checked against eager PyTorch on validation images (same boxes, classes and scores
within 1e-3).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.models.detection.image_list import ImageList

from headstart import version
from headstart.data.detection import square_pixels
from headstart.errors import DataError, HeadstartError
from headstart.evaluation.loading import LoadedRun, load_run
from headstart.export.exporter import card_path
from headstart.files import collect_images, open_rgb, reading_image
from headstart.inference import run_compute
from headstart.models.detection_heads import DetectionBackbone

#: the ``task`` of a detection run's config
TASK = "detection"
#: the model card's name of each ``--detector``
DETECTOR_NAMES = {"faster-rcnn": "Faster R-CNN + FPN", "retinanet": "RetinaNet (FPN, focal loss)",
                  "ssdlite": "SSDlite (+ 4 extra blocks)"}  # fmt: skip


def image_boxes(
    path: Path, detections: np.ndarray | torch.Tensor, size: tuple[int, int],
    classes: list[str], threshold: float,
) -> dict[str, Any]:  # fmt: skip
    """One image's entry: ``{"path", "width", "height", "boxes": [{"label", "score", "x",
    "y", "w", "h"}, ...]}`` (pixels of the image; ``detections`` rows ``[x1, y1, x2, y2,
    score, class]`` normalised, those scoring >= ``threshold``, most confident first)."""
    w, h = size
    boxes = []
    for x1, y1, x2, y2, score, c in np.asarray(detections, dtype=np.float64).tolist():
        if c < 0 or score < threshold:
            continue
        boxes.append({
            "label": classes[int(c)], "score": round(score, 4),
            "x": round(x1 * w, 2), "y": round(y1 * h, 2),
            "w": round((x2 - x1) * w, 2), "h": round((y2 - y1) * h, 2),
        })  # fmt: skip
    boxes.sort(key=lambda b: -b["score"])
    return {"path": str(path), "width": w, "height": h, "boxes": boxes}


@torch.inference_mode()
def predict_boxes(
    run: str | Path | LoadedRun, inputs: Sequence[str | Path], *, threshold: float = 0.5,
    batch_size: int = 16, accelerator: str = "auto",
) -> list[dict[str, Any]]:  # fmt: skip
    """Boxes (see :func:`image_boxes`) for each image file or image in a folder of ``inputs``.

    Example::

        predict_boxes("runs/det", ["photos/"])[0]["boxes"]
        # [{"label": "cat", "score": 0.97, "x": 12.0, "y": 40.5, "w": 88.0, "h": 61.2}, ...]
    """
    loaded = _detection_run(run)
    files = _checked_files(inputs, threshold)
    pre = loaded.preprocessing
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    compute = run_compute(loaded, accelerator)
    model = loaded.model.eval().to(compute.device)
    out: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        read = [model_pixels(f, pre.crop, pre.interpolation) for f in chunk]
        sizes = [size for _, size in read]
        x = torch.from_numpy(np.stack([p for p, _ in read])).permute(0, 3, 1, 2).float() / 255.0
        found = model(((x - mean) / std).to(compute.device)).cpu()
        out.extend(
            image_boxes(Path(f), d, s, loaded.classes, threshold)
            for f, d, s in zip(chunk, found, sizes, strict=True)
        )
    return out


def write_boxes(results: list[dict[str, Any]], path: str | Path) -> Path:
    """``results`` of :func:`predict_boxes` as one JSON file (a list, one object an image)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return p


def _detection_run(run: str | Path | LoadedRun) -> LoadedRun:
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    if loaded.config.task != TASK:
        raise HeadstartError(f"{loaded.run.path} is a {loaded.config.task} run, not detection")
    return loaded


def _checked_files(inputs: Sequence[str | Path], threshold: float) -> list[Path]:
    if not 0.0 <= threshold <= 1.0:
        raise HeadstartError(f"the score threshold must lie in [0, 1] (got {threshold})")
    files = collect_images(list(inputs))
    if not files:
        raise DataError(f"no images in {', '.join(map(str, inputs))}")
    return files


def model_pixels(path: Path, crop: int, interpolation: str) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 (crop, crop, 3) input pixels, (width, height) of the image)``."""
    with reading_image(path):
        image = open_rgb(path)
    return square_pixels(image, crop, interpolation), image.size


class DetectionWrapper(torch.nn.Module):
    """uint8 RGB ``(1, crop, crop, 3)`` -> ``(boxes (K, 4) normalised, scores (K,), labels
    (K,))``: scaling, mean/std and the detector's post-processing inside the graph."""

    def __init__(self, loaded: LoadedRun) -> None:
        super().__init__()
        if not isinstance(loaded.model, DetectionBackbone):
            raise HeadstartError(f"{loaded.run.path} does not hold a detection model")
        self.model = loaded.model
        pre = loaded.preprocessing
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
        head = self.model.detector
        feats = head.features(self.model.stage_maps(x))
        h, w = int(x.shape[-2]), int(x.shape[-1])
        d = head.found(ImageList(x, [(h, w)]), feats)[0]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        return d["boxes"] / scale, d["scores"], d["labels"]


@dataclass
class DetectionExport:
    """What :func:`export_detection` wrote and how close the export is to eager PyTorch."""

    path: Path
    max_abs_diff: float
    metadata: dict[str, Any]
    model_card: Path


def _onnx_outputs(path: Path, images: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(sess.run(["boxes", "scores", "labels"], {"images": images}))


def export_detection(run: str | Path | LoadedRun, out: str | Path | None = None) -> DetectionExport:
    """``model.onnx`` of a detection run (see module doc), checked against eager PyTorch on up
    to 3 of the run's validation images: the same number of detections with the same classes,
    boxes and scores within 1e-3 (the largest difference is returned)."""
    import onnx

    loaded = _detection_run(run)
    loaded.model.eval()
    pre = loaded.preprocessing
    path = Path(out) if out else loaded.run.path / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = DetectionWrapper(loaded).eval()
    samples = [model_pixels(f, pre.crop, pre.interpolation)[0][None] for f in _val_files(loaded)]
    meta: dict[str, Any] = {
        "task": TASK, "labels": loaded.classes, "model": loaded.config.model,
        "detector": loaded.config.detector,
        "preprocessing": pre.to_dict(), "input": f"uint8 (1, {pre.crop}, {pre.crop}, 3) RGB: "
        "the image resized to the input size (no crop), one image per call",
        "outputs": "boxes (K, 4) x1, y1, x2, y2 normalised to [0, 1]; scores (K,); labels (K,) "
        "class indices", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "headstart_version": version.__version__,
    }  # fmt: skip
    with warnings.catch_warnings():  # the traced exporter's notices; checked right below
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (torch.from_numpy(samples[0]),), str(path), dynamo=False, opset_version=17,
            input_names=["images"], output_names=["boxes", "scores", "labels"],
        )  # fmt: skip
    model = onnx.load(str(path))
    for k, v in {"headstart": json.dumps(meta), "labels": json.dumps(meta["labels"])}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    diff = _parity(wrapper, path, samples)
    return DetectionExport(path, diff, meta, _write_card(loaded, path, meta, diff))


def _parity(wrapper: DetectionWrapper, path: Path, samples: list[np.ndarray]) -> float:
    worst = 0.0
    for pixels in samples:
        with torch.inference_mode():
            eager = [t.numpy() for t in wrapper(torch.from_numpy(pixels))]
        got = _onnx_outputs(path, pixels)
        if got[0].shape != eager[0].shape or not np.array_equal(got[2], eager[2]):
            raise HeadstartError(
                f"ONNX export {path} finds {len(got[0])} boxes where PyTorch finds "
                f"{len(eager[0])} (or other classes) on a validation image"
            )
        for a, b in zip(got[:2], eager[:2], strict=True):
            worst = max(worst, float(np.abs(a - b).max(initial=0.0)))
    if worst > 1e-3:
        raise HeadstartError(f"ONNX export {path} differs from PyTorch by {worst:.2e}")
    return worst


def _val_files(loaded: LoadedRun, n: int = 3) -> list[Path]:
    from headstart.modalities import splits_for

    return [s.path for s in splits_for(loaded.config).val[:n]]


def predict_boxes_onnx(
    model: str | Path, inputs: Sequence[str | Path], *, threshold: float = 0.5
) -> list[dict[str, Any]]:
    """:func:`predict_boxes` with an exported ``model.onnx`` (onnxruntime; one image a call)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map.get("headstart", "{}"))
    if meta.get("task") != TASK:
        raise HeadstartError(f"{model} is not a headstart detection export")
    files = _checked_files(inputs, threshold)
    pre = meta["preprocessing"]
    out = []
    for f in files:
        pixels, size = model_pixels(f, int(pre["crop"]), str(pre.get("interpolation", "bilinear")))
        boxes, scores, labels = sess.run(["boxes", "scores", "labels"], {"images": pixels[None]})
        rows = np.concatenate([boxes, scores[:, None], labels[:, None].astype(np.float32)], 1)
        out.append(image_boxes(f, rows, size, list(meta["labels"]), threshold))
    return out


def _write_card(loaded: LoadedRun, path: Path, meta: dict[str, Any], diff: float) -> Path:
    """MODEL_CARD.md of a detection export: model, input, outputs, classes, validation mAP and
    per-class AP, the export check, usage and limits."""
    metrics = loaded.run.load_metrics()
    val = metrics.get("val", {})
    rows = "\n".join(
        f"| {c} | {_ap(v.get('ap'))} | {_ap(v.get('ap_50'))} | {v.get('boxes', '?')} |"
        for c, v in val.get("per_class", {}).items()
    )
    card = f"""# Model card: {loaded.run.path.name} (object detection)

- `{path.name}` (ONNX); exported {meta["date"]} with headstart {meta["headstart_version"]}
- **Model**: `{meta["model"]}`, weights `{metrics.get("run", {}).get("weights", "?")}`,
  {DETECTOR_NAMES[loaded.config.detector]} head
- **Input**: {meta["input"]}. **Output**: {meta["outputs"]}; post-processing (NMS, score
  threshold 0.05, at most 100 boxes) inside the graph
- **Classes** (index order): {", ".join(meta["labels"])}
- **Validation**: mAP@[.5:.95] {val.get("map", float("nan")):.3f}, mAP@0.5
  {val.get("map_50", float("nan")):.3f} on {val.get("samples", "?")} images
- **Export check**: max |export - eager| = {diff:.1e} on validation images (tolerance 1e-3)

| class | AP@[.5:.95] | AP@0.5 | true boxes |
|---|---|---|---|
{rows}

## Use

```
headstart predict {path.name} IMAGES --boxes boxes.json
```

## Limits

Trained on the run's data only; performance on other data is unknown. One image per call.
`serve` does not answer with boxes yet.
"""
    out = card_path(path)
    out.write_text(card, encoding="utf-8")
    return out


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

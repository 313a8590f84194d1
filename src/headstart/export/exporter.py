"""``headstart export``: ONNX or TorchScript with preprocessing, labels and metadata inside,
a MODEL_CARD.md beside it, and an equality check against the eager model at export time."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.errors import HeadstartError
from headstart.export.wrapper import ImagesToProbabilities
from headstart.inference import LoadedRun, load_run

log = logging.getLogger(__name__)

TOLERANCE = 1e-4


@dataclass
class ExportResult:
    path: Path
    model_card: Path
    max_abs_diff: float
    metadata: dict[str, Any]


def _metadata(loaded: LoadedRun) -> dict[str, Any]:
    from headstart import __version__

    metrics = loaded.run.load_metrics()
    p = loaded.preprocessing
    return {
        "format": "headstart-export/1",
        "input": "uint8 RGB images, shape (N, H, W, 3), any H and W; outputs: probabilities and logits, (N, C)",
        "labels": loaded.classes,
        "model": loaded.config.model,
        "weights": metrics.get("run", {}).get("weights", loaded.config.weights),
        "strategy": metrics.get("run", {}).get("strategy", loaded.config.strategy),
        "preprocessing": p.to_dict(),
        "metrics": {k: metrics[k]["accuracy"] for k in ("val", "test") if k in metrics},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "headstart_version": __version__,
    }


def _sample_batch(loaded: LoadedRun, n: int = 4) -> torch.Tensor:
    """Up to ``n`` validation images of the run (realistic inputs), else seeded noise; all at
    the preprocessing's resize size so they batch."""
    from headstart.data.folders import splits_for
    from headstart.export.predictor import decode_image

    size = loaded.preprocessing.resize
    try:
        val = splits_for(loaded.config).val[:n]
        from PIL import Image

        arrays = [
            np.asarray(Image.fromarray(decode_image(s.path)).resize((size, size))) for s in val
        ]
        return torch.from_numpy(np.stack(arrays))
    except Exception:  # data moved or gone: the check still runs, on noise
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)


def place_checked(got: np.ndarray, expected: np.ndarray, tmp: Path, path: Path, fmt: str) -> float:
    """The export-time check: the exported model's outputs ``got`` (written to ``tmp``) must
    equal the eager model's within :data:`TOLERANCE`; then ``tmp`` atomically becomes ``path``.
    Returns the largest absolute difference."""
    diff = float(np.abs(got - expected).max())
    if diff > TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise HeadstartError(
            f"export check failed: {fmt} output differs from the eager model by {diff:.2e} (> {TOLERANCE})"
        )
    tmp.replace(path)
    return diff


def export_model(
    run: str | Path | LoadedRun, fmt: str = "onnx", out: str | Path | None = None
) -> ExportResult:
    """Export a trained run. ``fmt``: ``onnx`` (opset 17, dynamic batch/height/width, labels and
    metadata in the model's metadata_props) or ``torchscript`` (metadata in the extra files).
    Outputs: ``probabilities`` and ``logits``. The export is run on a sample batch (validation
    images of the run) and both outputs must equal the eager model's within 1e-4.

    Example::

        res = headstart.export_model("runs/x", "onnx")     # runs/x/model.onnx + MODEL_CARD.md
    """
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    if loaded.model.modality == "text":  # token ids in, tokenizer saved beside the model
        from headstart.export.text import export_text

        return export_text(loaded, fmt, out)
    if fmt not in ("onnx", "torchscript"):
        raise HeadstartError(f"unknown export format {fmt!r}; use onnx or torchscript")
    path = Path(out) if out else loaded.run.path / ("model.onnx" if fmt == "onnx" else "model.pt")
    wrapper = ImagesToProbabilities(loaded.model).eval()
    meta = _metadata(loaded)
    sample = _sample_batch(loaded)
    with torch.inference_mode():
        expected = np.concatenate([t.numpy() for t in wrapper(sample)], axis=1)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "onnx":
        got = _export_onnx(wrapper, sample, tmp, meta)
    else:
        got = _export_torchscript(wrapper, sample, tmp, meta)
    diff = place_checked(got, expected, tmp, path, fmt)
    meta["export_check_max_abs_diff"] = diff
    card = _write_model_card(loaded, path, fmt, meta)
    log.info("exported %s (max |export - eager| = %.2e on a sample batch)", path, diff)
    return ExportResult(path, card, diff, meta)


def _export_onnx(
    wrapper: torch.nn.Module, sample: torch.Tensor, path: Path, meta: dict[str, Any]
) -> np.ndarray:
    axes = {"images": {0: "batch", 1: "height", 2: "width"}}
    return onnx_export(wrapper, {"images": sample}, axes, path, meta)


def onnx_export(
    wrapper: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    input_axes: dict[str, dict[int, str]],
    path: Path,
    meta: dict[str, Any],
) -> np.ndarray:
    """Export ``wrapper`` (outputs: probabilities, logits) to ONNX opset 17 with the given
    dynamic input axes (batch dynamic on the outputs), ``meta`` and the labels in the model's
    metadata_props; returns onnxruntime's outputs on ``inputs``, concatenated, for the check."""
    import onnx
    import onnxruntime as ort

    axes = {**input_axes, "probabilities": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(
        wrapper, tuple(inputs.values()), str(path), dynamo=False, opset_version=17,
        input_names=list(inputs), output_names=["probabilities", "logits"], dynamic_axes=axes,
    )  # fmt: skip
    model = onnx.load(str(path))
    for k, v in {"headstart": json.dumps(meta), "labels": json.dumps(meta["labels"])}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(model, str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: t.numpy() for name, t in inputs.items()}
    probs, logits = sess.run(["probabilities", "logits"], feed)
    return np.concatenate([probs, logits], axis=1)


def _export_torchscript(
    wrapper: torch.nn.Module, sample: torch.Tensor, path: Path, meta: dict[str, Any]
) -> np.ndarray:
    with torch.inference_mode():
        traced = torch.jit.trace(wrapper, (sample,), check_trace=False)
    files = {"headstart.json": json.dumps(meta), "labels.json": json.dumps(meta["labels"])}
    torch.jit.save(traced, str(path), _extra_files=files)
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        probs, logits = loaded(sample)
    return np.concatenate([probs.numpy(), logits.numpy()], axis=1)


def _write_model_card(loaded: LoadedRun, path: Path, fmt: str, meta: dict[str, Any]) -> Path:
    m = loaded.run.load_metrics()
    val = m.get("val", {})
    rows = "\n".join(
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for c, v in val.get("per_class", {}).items()
    )
    p = meta["preprocessing"]
    card = f"""# Model card: {loaded.run.path.name}

- **File**: `{path.name}` ({fmt}); exported {meta["date"]} with headstart {meta["headstart_version"]}
- **Model**: `{meta["model"]}`, weights `{meta["weights"]}`, strategy `{meta["strategy"]}`
- **Input**: {meta["input"]}. Inside the file: resize to {p["resize"]}x{p["resize"]}, centre crop {p["crop"]},
  normalise with mean {p["mean"]} and std {p["std"]} ({p["source"]}).
- **Labels** (output index order): {", ".join(meta["labels"])}
- **Validation**: accuracy {100 * val.get("accuracy", float("nan")):.2f} % on {val.get("samples", "?")} images;
  macro F1 {val.get("macro_f1", float("nan")):.3f}
- **Export check**: max |export − eager| = {meta["export_check_max_abs_diff"]:.1e} on a sample batch (tolerance 1e-4)

| class | precision | recall | f1 | support |
|---|---|---|---|---|
{rows}

## Use

```
headstart predict {path.name} image.jpg          # onnxruntime only for .onnx files
```

## Limits

Trained on the run's data only ({m.get("run", {}).get("train_images", "?")} training images); performance on other
data is unknown. Non-square inputs are resized to a square before the centre crop.
"""
    out = path.with_name("MODEL_CARD.md")
    out.write_text(card, encoding="utf-8")
    return out

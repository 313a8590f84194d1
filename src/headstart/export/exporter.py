"""``headstart export``: ONNX or TorchScript with preprocessing, labels and metadata inside,
a MODEL_CARD.md beside it, and an equality check against the eager model at export time.

One path for every modality; what differs (inputs, side files, card lines) is the modality's
:class:`~headstart.export.signatures.ExportSignature`."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart import version
from headstart.errors import HeadstartError
from headstart.evaluation.loading import LoadedRun, load_run
from headstart.export.card import front_matter
from headstart.export.inputs import DEFAULT_MODALITY
from headstart.export.signatures import ExportSignature, signature_for
from headstart.tasks import task_for

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
#: version 2: image models take (N, crop, crop, 3) decoded by ``files.load_model_image``
#: (version 1 resized whole images inside the graph: ``inputs.LEGACY_IMAGE_FORMAT``)
FORMAT = "headstart-export/2"
#: default file name per export format
FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.pt"}


@dataclass
class ExportResult:
    path: Path
    model_card: Path
    max_abs_diff: float
    metadata: dict[str, Any]


def build_metadata(
    loaded: LoadedRun, signature: ExportSignature, path: Path | None = None
) -> dict[str, Any]:
    """The metadata stored in an export at ``path`` (and served by ``GET /metadata``; ``path``
    None for a run folder): labels, model, metrics, version, and the modality's own fields.
    ``modality`` is stored unless it is the default (image exports never stored it)."""
    summary = loaded.run.summary()
    modality = signature.modality
    # multi-label: its thresholds; multi-task: each task's classes
    task = task_for(loaded.config).for_run(loaded.run).export_fields(loaded.classes)
    return {
        "format": FORMAT,
        **({"modality": modality} if modality != DEFAULT_MODALITY else {}),
        "input": signature.input_line(loaded),
        "labels": loaded.classes,
        **task,
        "model": loaded.config.model,
        "weights": summary.weights,
        "strategy": summary.strategy,
        **signature.metadata_fields(loaded, path),
        "metrics": summary.scores,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "headstart_version": version.__version__,
    }


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
    """Export a trained run. ``fmt``: ``onnx`` (opset 17, dynamic batch, labels
    and metadata in the model's metadata_props) or ``torchscript`` (metadata in the extra files;
    not for text models). Outputs: ``probabilities`` and ``logits``. The export is run on sample
    inputs made from the run's own data (images: full-size files through the predictor's
    decoder, which must equal evaluation's preprocessing; a
    :class:`~headstart.errors.DataError` when the data cannot be read) and both outputs must
    equal the eager model's within 1e-4. Side files a modality needs (a text model's
    ``<name>.tokenizer.json``) are written beside the model and checked.

    A segmentation run exports to ONNX only, as
    :func:`~headstart.export.segmentation.export_segmentation` does (``predict --masks`` reads
    it).

    Example::

        res = headstart.export_model("runs/x", "onnx")     # runs/x/model.onnx + MODEL_CARD.md
    """
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    if loaded.config.task == "segmentation":  # a class per pixel: its own graph and card
        return _export_segmentation(loaded, fmt, out)
    if loaded.config.task == "detection":  # boxes: its own graph (post-processing inside)
        return _export_detection(loaded, fmt, out)
    signature = signature_for(loaded.model.modality)
    if fmt not in signature.formats:
        raise HeadstartError(signature.format_error(fmt))
    path = Path(out) if out else loaded.run.path / FILE_NAMES[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    signature.write_side_files(loaded, path)
    wrapper = signature.wrapper(loaded)
    sample = signature.sample_inputs(loaded)
    meta = build_metadata(loaded, signature, path)
    with torch.inference_mode():
        expected = np.concatenate([t.numpy() for t in wrapper(*sample.values())], axis=1)
    tmp = path.with_name(f".{path.name}.tmp")
    got = _WRITERS[fmt](wrapper, sample, signature.dynamic_axes(loaded), tmp, meta)
    diff = place_checked(got, expected, tmp, path, fmt)
    meta["export_check_max_abs_diff"] = diff
    card = write_model_card(loaded, signature, path, fmt, meta)
    log.debug("exported %s (max |export - eager| = %.2e on sample inputs)", path, diff)
    return ExportResult(path, card, diff, meta)


def _export_segmentation(loaded: LoadedRun, fmt: str, out: str | Path | None) -> ExportResult:
    """A segmentation run's ONNX export (:func:`headstart.export.segmentation.export_segmentation`)
    as an :class:`ExportResult`."""
    from headstart.export.segmentation import export_segmentation  # it imports this module

    if fmt != "onnx":
        raise HeadstartError(
            f"segmentation models export to ONNX only (got {fmt!r}): use --format onnx"
        )
    seg = export_segmentation(loaded, out)
    return ExportResult(seg.path, seg.model_card, seg.max_abs_diff, seg.metadata)


def _export_detection(loaded: LoadedRun, fmt: str, out: str | Path | None) -> ExportResult:
    """A detection run's ONNX export (:func:`headstart.export.detection.export_detection`)."""
    from headstart.export.detection import export_detection  # it imports this module

    if fmt != "onnx":
        raise HeadstartError(
            f"detection models export to ONNX only (got {fmt!r}): use --format onnx"
        )
    det = export_detection(loaded, out)
    return ExportResult(det.path, det.model_card, det.max_abs_diff, det.metadata)


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
    with _expected_export_warnings_quiet():
        torch.onnx.export(
            wrapper, tuple(inputs.values()), str(path), dynamo=False, opset_version=17,
            input_names=list(inputs), output_names=["probabilities", "logits"],
            dynamic_axes=axes,
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


@contextmanager
def _expected_export_warnings_quiet() -> Iterator[None]:
    """Silence what torch says about every export and a user cannot act on: the legacy (traced)
    ONNX exporter's and TorchScript's deprecation notices and tracer warnings (the export is
    checked against eager outputs right after, which is what would catch a bad trace)."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
            warnings.filterwarnings("ignore", category=category)
        yield


def torchscript_export(
    wrapper: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    input_axes: dict[str, dict[int, str]],
    path: Path,
    meta: dict[str, Any],
) -> np.ndarray:
    """Trace ``wrapper`` to TorchScript with ``meta`` and the labels as extra files; returns the
    saved module's outputs on ``inputs``, concatenated, for the check (sizes stay dynamic)."""
    sample = tuple(inputs.values())
    with torch.inference_mode(), _expected_export_warnings_quiet():
        traced = torch.jit.trace(wrapper, sample, check_trace=False)
    files = {"headstart.json": json.dumps(meta), "labels.json": json.dumps(meta["labels"])}
    with _expected_export_warnings_quiet():
        torch.jit.save(traced, str(path), _extra_files=files)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        probs, logits = loaded(*sample)
    return np.concatenate([probs.numpy(), logits.numpy()], axis=1)


_Writer = Callable[
    [torch.nn.Module, dict[str, torch.Tensor], dict[str, dict[int, str]], Path, dict[str, Any]],
    np.ndarray,
]
_WRITERS: dict[str, _Writer] = {"onnx": onnx_export, "torchscript": torchscript_export}


def write_model_card(
    loaded: LoadedRun, signature: ExportSignature, path: Path, fmt: str, meta: dict[str, Any]
) -> Path:
    """MODEL_CARD.md beside ``path`` (named by :func:`card_path`): files, model, input, labels,
    validation metrics per class, the export check, usage and limits."""
    summary = loaded.run.summary()
    val = summary.val
    rows = "\n".join(
        f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for c, v in val.get("per_class", {}).items()
    )
    lines = signature.card(meta, path, fmt)
    card = f"""# Model card: {loaded.run.path.name}

- {lines.files}; exported {meta["date"]} with headstart {meta["headstart_version"]}
- **Model**: `{meta["model"]}`, weights `{meta["weights"]}`, strategy `{meta["strategy"]}`{lines.model}
- **Input**: {meta["input"]}. {lines.input}
- **Labels** (output index order): {", ".join(meta["labels"])}
- **Validation**: accuracy {100 * val.get("accuracy", float("nan")):.2f} % on {val.get("samples", "?")} {lines.unit};
  macro F1 {val.get("macro_f1", float("nan")):.3f}
- **Export check**: max |export − eager| = {meta["export_check_max_abs_diff"]:.1e} on {lines.check} (tolerance 1e-4){lines.check_note}

| class | precision | recall | f1 | support |
|---|---|---|---|---|
{rows}

## Use

```
headstart predict {path.name} {lines.use}
```

## Limits

Trained on the run's data only ({summary.train_images or "?"} training {lines.unit}); performance on other
data is unknown. {lines.limits}
"""
    header = front_matter(
        meta, loaded.run.load_metrics(), name=loaded.run.path.name,
        data=Path(loaded.config.data).name, fmt=fmt,
    )  # fmt: skip
    out = card_path(path)
    out.write_text(header + card, encoding="utf-8")
    return out


def card_path(path: Path) -> Path:
    """Where the card of the export ``path`` goes: ``MODEL_CARD.md`` beside it, unless that card
    describes another export in the same folder (its usage line names another file); then
    ``<file name>.MODEL_CARD.md``, so a second export (``model.pt`` after ``model.onnx``) never
    overwrites the first's card."""
    shared = path.with_name("MODEL_CARD.md")
    if not shared.is_file():
        return shared
    own = f"headstart predict {path.name} " in shared.read_text(encoding="utf-8", errors="replace")
    return shared if own else path.with_name(f"{path.name}.MODEL_CARD.md")

"""Use a trained run: ``evaluate`` on labelled data, ``predict`` raw inputs, regenerate its
``report``. Written once against the run's modality (how inputs are read and encoded) and task
(metrics, decoding, report); ``load_run`` lives in :mod:`headstart.evaluation.loading`."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from headstart.data.scan import labels_of
from headstart.data.segmentation import model_input, to_original_size
from headstart.devices import Compute, placed, resolve_compute
from headstart.errors import DataError
from headstart.evaluation.loading import LoadedRun, load_run
from headstart.evaluation.predict import predict_logits
from headstart.evaluation.report import ValPredictions
from headstart.files import Prediction
from headstart.modalities import splits_for
from headstart.modalities.image import pixels_to_input
from headstart.tasks import task_for
from headstart.tasks.segmentation import mask_prediction


def _loaded(run: str | Path | LoadedRun) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run)


def run_compute(loaded: LoadedRun, accelerator: str = "auto") -> Compute:
    """Where a run is used: ``accelerator`` (``auto``: the GPU when this machine has one, not
    the training machine's choice) at the run's own ``--precision``."""
    return resolve_compute(accelerator, loaded.config.precision)


def evaluate(
    run: str | Path | LoadedRun, data: str | Path, *, batch_size: int = 64,
    accelerator: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """Metrics of a trained run on a labelled folder/CSV whose classes are among the run's
    (computed on ``accelerator``, see :func:`run_compute`)."""
    from headstart.data.folders import load_source

    loaded = _loaded(run)
    modality = loaded.modality
    task = task_for(loaded.config).for_run(loaded.run)
    config = loaded.config
    if config.task == "segmentation":  # data: <folder>/images + <folder>/masks, run's classes
        from headstart.data.segmentation import read_split

        ds = modality.dataset(loaded.model, read_split(Path(data), loaded.classes), {})
        compute = run_compute(loaded, accelerator)
        logits, targets = predict_logits(loaded.model, ds, batch_size=batch_size, compute=compute)
        return task.metrics(logits, targets, loaded.classes)
    if config.task == "detection":  # data: a COCO file (images relative to its folder)
        from headstart.data.detection import read_coco

        ds = modality.dataset(loaded.model, read_coco(data, classes=loaded.classes)[0], {})
        compute = run_compute(loaded, accelerator)
        logits, targets = predict_logits(loaded.model, ds, batch_size=batch_size, compute=compute)
        return task.metrics(logits, targets, loaded.classes)
    read = modality.reader(config) or partial(
        load_source, task=config.task, label_sep=config.label_sep,
        label_columns=config.label_columns,
    )  # fmt: skip
    samples = read(data, Counter(), False)
    unknown = sorted({x for s in samples for x in labels_of(s)} - set(loaded.classes))
    if unknown:
        raise DataError(
            f"{data} has classes the model was not trained on: {', '.join(unknown)} (model classes: {', '.join(loaded.classes)})"
        )
    idx = {name: i for i, name in enumerate(loaded.classes)}
    ds = modality.dataset(loaded.model, samples, idx)
    compute = run_compute(loaded, accelerator)
    logits, targets = predict_logits(loaded.model, ds, batch_size=batch_size, compute=compute)
    return task.metrics(logits, targets, loaded.classes)


def report(run: str | Path | LoadedRun, *, accelerator: str = "auto") -> Path:
    """Regenerate ``report.html`` of a run (recomputes validation predictions on
    ``accelerator``)."""
    loaded = _loaded(run)
    splits = splits_for(loaded.config)
    idx = {name: i for i, name in enumerate(loaded.classes)}
    ds = loaded.modality.dataset(loaded.model, splits.val, idx)
    logits, targets = predict_logits(loaded.model, ds, compute=run_compute(loaded, accelerator))
    task = task_for(loaded.config).for_run(loaded.run)
    preds = ValPredictions(
        task.probabilities(logits), targets, [str(s.path) for s in splits.val],
        loaded.modality.display(splits.val),
    )  # fmt: skip
    return task.write_report(loaded.run, preds)


#: what :func:`predict` takes besides paths and strings: an image already in memory
InMemoryImage = Image.Image | np.ndarray | torch.Tensor


def _image_array(item: InMemoryImage, name: str) -> np.ndarray:
    """An in-memory image as uint8 ``(H, W, 3)`` (or ``(H, W)``): PIL as is; arrays and
    tensors ``HWC`` or ``CHW`` (a tensor is read as ``CHW``, torchvision's layout), uint8 or
    floats in [0, 1]."""
    if isinstance(item, Image.Image):
        return np.asarray(item.convert("RGB"), dtype=np.uint8)
    is_tensor = isinstance(item, torch.Tensor)
    a = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if a.ndim == 3 and (is_tensor or a.shape[-1] not in (1, 3, 4)):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise DataError(
            f"{name}: an image array must be HxW, HxWx3 or 3xHxW (got shape {tuple(a.shape)})"
        )
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise DataError(
                f"{name}: float pixels must lie in [0, 1] (got {a.min():.3g}..{a.max():.3g}); "
                "pass uint8 0..255 or scale the image"
            )
        a = np.round(a * 255)
    return np.ascontiguousarray(a.astype(np.uint8))


def prediction_items(
    loaded: LoadedRun, inputs: Sequence[str | Path | InMemoryImage]
) -> list[tuple[str, Any]]:
    """``(name, item)`` per input: paths and strings as the run's modality reads them (folders
    expanded); in-memory images (PIL, numpy, torch) as lossless PNG bytes named
    ``<image N>``, decoded by the same reader as files."""
    items: list[tuple[str, Any]] = []
    pending: list[str | Path] = []
    for i, x in enumerate(inputs):
        if isinstance(x, str | Path):
            pending.append(x)
            continue
        if not isinstance(x, Image.Image | np.ndarray | torch.Tensor):
            raise DataError(f"input {i} is a {type(x).__name__}: give a path, a string, a PIL "
                            "image, a numpy array or a torch tensor")  # fmt: skip
        name = f"<image {i}>"
        if loaded.modality.unit != "images":
            raise DataError(f"{name}: this is a {loaded.modality.name} model; give "
                            f"{loaded.modality.unit}, not an image")  # fmt: skip
        if pending:
            items += loaded.modality.prediction_inputs(pending)
            pending = []
        png = io.BytesIO()
        Image.fromarray(_image_array(x, name)).save(png, format="PNG", compress_level=0)
        png.seek(0)
        items.append((name, png))
    if pending or not items:
        items += loaded.modality.prediction_inputs(pending)
    return items


@torch.inference_mode()
def predict(
    run: str | Path | LoadedRun, inputs: Sequence[str | Path | InMemoryImage], *, top_k: int = 1,
    batch_size: int = 32, accelerator: str = "auto",
) -> list[Prediction]:  # fmt: skip
    """Predictions for raw inputs: image files or folders, or images in memory (PIL images,
    numpy arrays ``HxWx3``, torch tensors ``3xHxW``; uint8, or floats in [0, 1]) for an image
    run; for a text run, each input is a text (an existing ``.txt`` file is read). Computed on
    ``accelerator``. ``Prediction.to_json()`` gives the shape ``predict --json`` and ``serve``
    print. For a segmentation run, ``Prediction.mask`` is each image's predicted class-index
    mask at the image's own size (the PNG ``predict --masks`` writes)."""
    loaded = _loaded(run)
    task = task_for(loaded.config).for_run(loaded.run)  # multi-label: the run's thresholds
    modality = loaded.modality
    items = prediction_items(loaded, inputs)
    compute = run_compute(loaded, accelerator)
    loaded.model.eval()
    if loaded.config.task == "segmentation":  # masks at each image's own size
        return _mask_predictions(loaded, items, compute, top_k, batch_size)
    out: list[Prediction] = []
    with placed(loaded.model, compute):
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            with compute.autocast():
                logits = loaded.model(compute.to(modality.encode(loaded.model, chunk)))
            logits = logits.float().cpu()
            out.extend(task.decode([name for name, _ in chunk], logits, loaded.classes, top_k))
    return out


def _mask_predictions(
    loaded: LoadedRun, items: list[tuple[str, Any]], compute: Compute, top_k: int,
    batch_size: int,
) -> list[Prediction]:  # fmt: skip
    """Segmentation: each image resized to the input size (no crop, as in training), the
    per-pixel argmax brought back to the image's size (nearest), see :func:`mask_prediction`."""
    pre = loaded.model.preprocessing
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    out: list[Prediction] = []
    with placed(loaded.model, compute):
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            read = [model_input(src, pre.crop, pre.interpolation, name) for name, src in chunk]
            x = pixels_to_input(torch.from_numpy(np.stack([p for p, _ in read])), mean, std)
            with compute.autocast():
                logits = loaded.model(compute.to(x))
            classes = logits.float().argmax(1).cpu().numpy()
            for (name, _), (_, size), c in zip(chunk, read, classes, strict=True):
                mask = to_original_size(c, size)
                out.append(mask_prediction(name, mask, loaded.classes, top_k))
    return out


__all__ = ["LoadedRun", "Prediction", "evaluate", "load_run", "predict", "report"]

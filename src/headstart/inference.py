"""Use a trained run: ``evaluate`` on labelled data, ``predict`` raw inputs, regenerate its
``report``. Written once against the run's modality (how inputs are read and encoded) and task
(metrics, decoding, report); ``load_run`` lives in :mod:`headstart.evaluation.loading`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from headstart.devices import Compute, placed, resolve_compute
from headstart.errors import DataError
from headstart.evaluation.loading import LoadedRun, load_run
from headstart.evaluation.predict import predict_logits
from headstart.evaluation.report import ValPredictions
from headstart.files import Prediction
from headstart.modalities import splits_for
from headstart.tasks import task_for


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
    read = modality.reader(loaded.config) or load_source
    samples = read(data, Counter(), False)
    unknown = sorted({s.label for s in samples} - set(loaded.classes))
    if unknown:
        raise DataError(
            f"{data} has classes the model was not trained on: {', '.join(unknown)} (model classes: {', '.join(loaded.classes)})"
        )
    idx = {name: i for i, name in enumerate(loaded.classes)}
    ds = modality.dataset(loaded.model, samples, idx)
    compute = run_compute(loaded, accelerator)
    logits, targets = predict_logits(loaded.model, ds, batch_size=batch_size, compute=compute)
    return task_for(loaded.config).metrics(logits, targets, loaded.classes)


def report(run: str | Path | LoadedRun, *, accelerator: str = "auto") -> Path:
    """Regenerate ``report.html`` of a run (recomputes validation predictions on
    ``accelerator``)."""
    loaded = _loaded(run)
    splits = splits_for(loaded.config)
    idx = {name: i for i, name in enumerate(loaded.classes)}
    ds = loaded.modality.dataset(loaded.model, splits.val, idx)
    logits, targets = predict_logits(loaded.model, ds, compute=run_compute(loaded, accelerator))
    preds = ValPredictions(
        logits.softmax(1), targets, [str(s.path) for s in splits.val],
        loaded.modality.display(splits.val),
    )  # fmt: skip
    return task_for(loaded.config).write_report(loaded.run, preds)


@torch.inference_mode()
def predict(
    run: str | Path | LoadedRun, inputs: list[str | Path], *, top_k: int = 1, batch_size: int = 32,
    accelerator: str = "auto",
) -> list[Prediction]:  # fmt: skip
    """Predictions for raw inputs: image files or folders for an image run; for a text run,
    each input is a text (an existing ``.txt`` file is read). Computed on ``accelerator``."""
    loaded = _loaded(run)
    modality, task = loaded.modality, task_for(loaded.config)
    items = modality.prediction_inputs(inputs)
    compute = run_compute(loaded, accelerator)
    loaded.model.eval()
    out: list[Prediction] = []
    with placed(loaded.model, compute):
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            with compute.autocast():
                logits = loaded.model(compute.to(modality.encode(loaded.model, chunk)))
            logits = logits.float().cpu()
            out.extend(task.decode([name for name, _ in chunk], logits, loaded.classes, top_k))
    return out


__all__ = ["LoadedRun", "Prediction", "evaluate", "load_run", "predict", "report"]

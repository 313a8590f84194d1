"""Use a trained run: ``evaluate`` on labelled data, ``predict`` raw inputs, regenerate its
``report``. Written once against the run's modality (how inputs are read and encoded) and task
(metrics, decoding, report); ``load_run`` lives in :mod:`headstart.evaluation.loading`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from headstart.errors import DataError
from headstart.evaluation.loading import LoadedRun, load_run
from headstart.evaluation.predict import predict_logits
from headstart.evaluation.report import ValPredictions
from headstart.files import Prediction
from headstart.modalities import splits_for
from headstart.tasks import task_for


def _loaded(run: str | Path | LoadedRun) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run)


def evaluate(
    run: str | Path | LoadedRun, data: str | Path, *, batch_size: int = 64
) -> dict[str, Any]:
    """Metrics of a trained run on a labelled folder/CSV whose classes are among the run's."""
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
    logits, targets = predict_logits(loaded.model, ds, batch_size=batch_size)
    return task_for(loaded.config).metrics(logits, targets, loaded.classes)


def report(run: str | Path | LoadedRun) -> Path:
    """Regenerate ``report.html`` of a run (recomputes validation predictions)."""
    loaded = _loaded(run)
    splits = splits_for(loaded.config)
    idx = {name: i for i, name in enumerate(loaded.classes)}
    ds = loaded.modality.dataset(loaded.model, splits.val, idx)
    logits, targets = predict_logits(loaded.model, ds)
    preds = ValPredictions(
        logits.softmax(1), targets, [str(s.path) for s in splits.val],
        loaded.modality.display(splits.val),
    )  # fmt: skip
    return task_for(loaded.config).write_report(loaded.run, preds)


@torch.inference_mode()
def predict(
    run: str | Path | LoadedRun, inputs: list[str | Path], *, top_k: int = 1, batch_size: int = 32
) -> list[Prediction]:
    """Predictions for raw inputs: image files or folders for an image run; for a text run,
    each input is a text (an existing ``.txt`` file is read)."""
    loaded = _loaded(run)
    modality, task = loaded.modality, task_for(loaded.config)
    items = modality.prediction_inputs(inputs)
    loaded.model.eval()
    out: list[Prediction] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        logits = loaded.model(modality.encode(loaded.model, chunk))
        out.extend(task.decode([name for name, _ in chunk], logits, loaded.classes, top_k))
    return out


__all__ = ["LoadedRun", "Prediction", "evaluate", "load_run", "predict", "report"]

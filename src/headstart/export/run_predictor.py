"""A run folder behind the predictor interface (needs torch): the same computation as its
export (the modality's exported module), so ``headstart serve runs/x`` answers like
``headstart serve runs/x/model.onnx``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from headstart.evaluation.loading import load_run
from headstart.export.exporter import build_metadata
from headstart.export.predictor import ExportedPredictor, torch_ready
from headstart.export.signatures import signature_for


class RunPredictor(ExportedPredictor):
    """``RunPredictor("runs/x").predict(items)`` with the run's best checkpoint; the metadata
    is the export's (without side file names)."""

    def __init__(self, run: str | Path) -> None:
        loaded = load_run(run)
        signature = signature_for(loaded.model.modality)
        self.path = Path(run)
        self.loaded = loaded
        self.labels = loaded.classes
        self.metadata = build_metadata(loaded, signature)
        self.inputs = signature.run_inputs(loaded)
        self.wrapper = signature.wrapper(loaded)

    def run_batch(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        tensors = [torch.from_numpy(torch_ready(a)) for a in feed.values()]
        with torch.inference_mode():
            return np.asarray(self.wrapper(*tensors)[0].numpy())

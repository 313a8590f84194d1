"""Run an exported model with onnxruntime only: no torch, no training code.

``ExportedPredictor("model.onnx").predict(["a.jpg", "b.png"], top_k=3)``; labels and
preprocessing come from the file's own metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.files import Prediction, open_rgb

ExportPrediction = Prediction


def decode_image(data: str | Path | Any) -> np.ndarray:
    """An image file (path or file-like) as uint8 (H, W, 3) RGB (see :func:`open_rgb`)."""
    return np.asarray(open_rgb(data), dtype=np.uint8)


class ExportedPredictor:
    """An ONNX file written by ``headstart export`` (see its MODEL_CARD.md)."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        from headstart.errors import HeadstartError

        self.path = Path(path)
        if not self.path.is_file():
            raise HeadstartError(f"model file {self.path} does not exist")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise HeadstartError(f"{self.path} is not a loadable ONNX model: {err}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "headstart" not in props:
            raise HeadstartError(
                f"{self.path} was not exported by headstart (no labels in its metadata)"
            )
        self.metadata: dict[str, Any] = json.loads(props["headstart"])
        self.labels: list[str] = list(self.metadata["labels"])

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, C)`` probabilities; images of equal size are batched together."""
        out = np.zeros((len(images), len(self.labels)), dtype=np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        for idx in by_shape.values():
            batch = np.stack([images[i] for i in idx])
            out[idx] = self.session.run(["probabilities"], {"images": batch})[0]
        return out

    def predict(self, files: Sequence[str | Path], top_k: int = 1) -> list[ExportPrediction]:
        images = [decode_image(f) for f in files]
        probs = self.probabilities(images)
        k = max(1, min(top_k, len(self.labels)))
        preds = []
        for f, p in zip(files, probs, strict=True):
            order = np.argsort(-p)[:k]
            top = [(self.labels[j], float(p[j])) for j in order]
            preds.append(ExportPrediction(str(f), top[0][0], top[0][1], top))
        return preds


class TorchScriptPredictor(ExportedPredictor):
    """A TorchScript file written by ``headstart export --format torchscript`` (needs torch)."""

    def __init__(self, path: str | Path) -> None:
        import torch

        from headstart.errors import HeadstartError

        self.path = Path(path)
        files = {"headstart.json": ""}
        try:
            self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=files)
        except Exception as err:
            raise HeadstartError(
                f"{self.path} is not a loadable TorchScript model: {err}"
            ) from None
        if not files["headstart.json"]:
            raise HeadstartError(f"{self.path} was not exported by headstart (no labels inside)")
        self.metadata = json.loads(files["headstart.json"])
        self.labels = list(self.metadata["labels"])

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        out = np.zeros((len(images), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for i, im in enumerate(images):
                out[i] = self.module(torch.from_numpy(im[None]))[0].numpy()[0]
        return out


def open_export(path: str | Path) -> ExportedPredictor:
    """The predictor for an exported file, by suffix (.onnx: onnxruntime only; .pt: TorchScript);
    a text model's export gets a :class:`~headstart.export.text.TextPredictor` (raw strings)."""
    if Path(path).suffix == ".pt":
        return TorchScriptPredictor(path)
    predictor = ExportedPredictor(path)
    if predictor.metadata.get("modality") == "text":
        from headstart.export.text import TextPredictor

        return TextPredictor(path, predictor.session, predictor.metadata)  # type: ignore[return-value]
    return predictor

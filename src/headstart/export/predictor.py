"""Run an exported model: ONNX with onnxruntime only (no torch, no training code), TorchScript
with torch.

``open_export("model.onnx").predict(["a.jpg", "b.png"], top_k=3)`` — or raw strings / .txt
files for a text model; labels, preprocessing and the input modality come from the file's own
metadata, and the modality's :class:`~headstart.export.inputs.ModelInputs` turns the items into
the model's inputs.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import HeadstartError
from headstart.export.inputs import ModelInputs, decode_image, inputs_for_export
from headstart.files import Prediction

log = logging.getLogger(__name__)

__all__ = [
    "ExportPrediction",
    "ExportedPredictor",
    "TorchScriptPredictor",
    "decode_image",
    "open_export",
]

ExportPrediction = Prediction

#: onnxruntime execution providers, fastest first; the CPU one is always there
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def onnx_providers(available: Sequence[str]) -> list[str]:
    """The execution providers to ask onnxruntime for, given its ``get_available_providers()``:
    TensorRT and CUDA where this onnxruntime build has them (``onnxruntime-gpu``), then CPU."""
    return [p for p in PREFERRED_PROVIDERS if p in available or p == "CPUExecutionProvider"]


def onnx_session(path: Path) -> Any:
    """An onnxruntime session for ``path`` on the best available provider (see
    :func:`onnx_providers`); a GPU provider that fails to start (missing CUDA/TensorRT
    libraries) falls back to the CPU with a warning."""
    import onnxruntime as ort

    providers = onnx_providers(ort.get_available_providers())
    if providers != ["CPUExecutionProvider"]:
        try:
            return ort.InferenceSession(str(path), providers=providers)
        except Exception as err:
            log.warning("%s: %s failed (%s); running on the CPU", path, providers[0], err)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class ExportedPredictor:
    """An ONNX file written by ``headstart export`` (see its MODEL_CARD.md).

    Subclasses (TorchScript, a run folder) set ``path``, ``metadata``, ``labels`` and ``inputs``
    and override :meth:`run_batch`."""

    path: Path
    metadata: dict[str, Any]
    labels: list[str]
    inputs: ModelInputs

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise HeadstartError(f"model file {self.path} does not exist")
        try:
            self.session = onnx_session(self.path)
        except Exception as err:
            raise HeadstartError(f"{self.path} is not a loadable ONNX model: {err}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "headstart" not in props:
            raise HeadstartError(
                f"{self.path} was not exported by headstart (no labels in its metadata)"
            )
        self.metadata = json.loads(props["headstart"])
        self.labels = list(self.metadata["labels"])
        self.inputs = inputs_for_export(self.metadata, self.path)

    @property
    def modality(self) -> str:
        """``"image"``, ``"text"``: what :meth:`predict` takes."""
        return self.inputs.modality

    def run_batch(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """``(n, C)`` probabilities for one batch of named input arrays."""
        return np.asarray(self.session.run(["probabilities"], feed)[0])

    def probabilities(self, items: Sequence[Any]) -> np.ndarray:
        """``(N, C)`` probabilities for decoded items (uint8 RGB arrays; strings for text)."""
        out = np.zeros((len(items), len(self.labels)), dtype=np.float32)
        for rows, feed in self.inputs.batches(items):
            out[rows] = self.run_batch(feed)
        return out

    def collect(self, inputs: Sequence[str | Path]) -> list[Any]:
        """Command-line arguments as :meth:`predict` takes them (image folders expanded to
        their files; texts as given)."""
        return self.inputs.collect(inputs)

    def predict(self, inputs: Sequence[Any], top_k: int = 1) -> list[Prediction]:
        """Label and probability per input: image files (or file-likes); for a text model raw
        strings or existing ``.txt`` files."""
        names, items = self.inputs.load(inputs)
        return self.decode(names, self.probabilities(items), top_k)

    def decode(self, names: Sequence[str], probs: np.ndarray, top_k: int = 1) -> list[Prediction]:
        """Predictions from :meth:`probabilities`' rows: top-k, and for a multi-label model
        (metadata ``task``) every label at or above its threshold (metadata ``thresholds``),
        for a multi-task model every task's top-k (metadata ``tasks``: task -> classes)."""
        if self.metadata.get("task") == "multi-task":
            tasks = list(self.metadata["tasks"].items())
            return [
                Prediction.from_task_probabilities(n, p, tasks, top_k)
                for n, p in zip(names, probs, strict=True)
            ]
        if self.metadata.get("task") == "multi-label":
            thresholds = self.metadata["thresholds"]
            return [
                Prediction.from_label_probabilities(n, p, self.labels, thresholds, top_k)
                for n, p in zip(names, probs, strict=True)
            ]
        return [
            Prediction.from_probabilities(n, p, self.labels, top_k)
            for n, p in zip(names, probs, strict=True)
        ]


class TorchScriptPredictor(ExportedPredictor):
    """A TorchScript file written by ``headstart export --format torchscript`` (needs torch)."""

    def __init__(self, path: str | Path) -> None:
        import torch

        self.path = Path(path)
        files = {"headstart.json": ""}
        try:
            with warnings.catch_warnings():  # "torch.jit.load is deprecated": not the user's
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=files)
        except Exception as err:
            raise HeadstartError(
                f"{self.path} is not a loadable TorchScript model: {err}"
            ) from None
        if not files["headstart.json"]:
            raise HeadstartError(f"{self.path} was not exported by headstart (no labels inside)")
        self.metadata = json.loads(files["headstart.json"])
        self.labels = list(self.metadata["labels"])
        self.inputs = inputs_for_export(self.metadata, self.path)

    def run_batch(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        tensors = [torch.from_numpy(torch_ready(a)) for a in feed.values()]
        with torch.inference_mode():
            return np.asarray(self.module(*tensors)[0].numpy())


def torch_ready(array: np.ndarray) -> np.ndarray:
    """``array`` as ``torch.from_numpy`` takes it without a warning: contiguous and writable
    (arrays over decoded image buffers are read-only; torch warns that writing through the
    tensor would be undefined), copied only when it is not already both."""
    out = np.ascontiguousarray(array)
    return out if out.flags.writeable else out.copy()


def exported_task(path: str | Path) -> str | None:
    """The ``task`` an exported ``.onnx`` file's headstart metadata names (``None``: not an
    ONNX file, or no task named; torch-free)."""
    if Path(path).suffix != ".onnx":
        return None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    task = json.loads(sess.get_modelmeta().custom_metadata_map.get("headstart", "{}")).get("task")
    return str(task) if task else None


def is_segmentation_onnx(path: str | Path) -> bool:
    """Whether ``path`` is an ONNX model exported by
    :func:`headstart.export.segmentation.export_segmentation` (its metadata names the task;
    torch-free, so the ``predict`` extra can route it)."""
    if Path(path).suffix != ".onnx":
        return False
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    return bool(json.loads(props.get("headstart", "{}")).get("task") == "segmentation")


def open_export(path: str | Path) -> ExportedPredictor:
    """The predictor for an exported file, by suffix (.onnx: onnxruntime only; .pt: TorchScript);
    its metadata says which inputs it takes (images; raw strings for a text model)."""
    if Path(path).suffix == ".pt":
        return TorchScriptPredictor(path)
    return ExportedPredictor(path)

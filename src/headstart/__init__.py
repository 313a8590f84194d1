"""headstart: transfer learning for PyTorch — a folder of labelled images to a fine-tuned,
evaluated model.

Public API (the CLI is a thin layer over it)::

    import headstart
    result = headstart.train(data="data/", model="torchvision:mobilenet_v2", epochs=5)
    headstart.evaluate(result.run_dir, "data/test")
    headstart.predict(result.run_dir, ["cat.jpg"])

Names are imported lazily, so ``headstart.export.predictor`` (onnxruntime only) and the CLI's
help start without loading torch. Without the training extra (``pip install 'headstart[predict]'``)
``import headstart``, ``TrainConfig``, ``HeadstartError``, ``Prediction`` and
``headstart.export.predictor.open_export`` work; the other names raise ModuleNotFoundError saying
``pip install 'headstart[train]'``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from headstart.version import __version__

_EXPORTS = {
    "TrainConfig": "headstart.config",
    "HeadstartError": "headstart.errors",
    "LoadedRun": "headstart.evaluation.loading",
    "Prediction": "headstart.files",
    "evaluate": "headstart.inference",
    "load_run": "headstart.evaluation.loading",
    "predict": "headstart.inference",
    "report": "headstart.inference",
    "Backbone": "headstart.models",
    "create_backbone": "headstart.models",
    "list_models": "headstart.models",
    "TrainResult": "headstart.api",
    "train": "headstart.api",
    "LRFindResult": "headstart.api",
    "lr_find": "headstart.api",
    "ExportResult": "headstart.export.exporter",
    "export_model": "headstart.export.exporter",
}

__all__ = [
    "Backbone",
    "ExportResult",
    "HeadstartError",
    "LRFindResult",
    "LoadedRun",
    "Prediction",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "create_backbone",
    "evaluate",
    "export_model",
    "list_models",
    "load_run",
    "lr_find",
    "predict",
    "report",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        try:
            module = importlib.import_module(_EXPORTS[name])
        except ModuleNotFoundError as err:  # a base install: only the torch-free names import
            raise ModuleNotFoundError(
                f"headstart.{name} needs the training extra ({err.name} is not installed): "
                "pip install 'headstart[train]'",
                name=err.name,
            ) from err
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")


if TYPE_CHECKING:
    from headstart.api import LRFindResult, TrainResult, lr_find, train
    from headstart.config import TrainConfig
    from headstart.errors import HeadstartError
    from headstart.evaluation.loading import LoadedRun, load_run
    from headstart.export.exporter import ExportResult, export_model
    from headstart.files import Prediction
    from headstart.inference import evaluate, predict, report
    from headstart.models import Backbone, create_backbone, list_models

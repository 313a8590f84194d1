"""headstart: transfer learning for PyTorch — a folder of labelled images to a fine-tuned,
evaluated model.

Public API (the CLI is a thin layer over it)::

    import headstart
    result = headstart.train(data="data/", model="torchvision:mobilenet_v2", epochs=5)
    headstart.evaluate(result.run_dir, "data/test")
    headstart.predict(result.run_dir, ["cat.jpg"])
"""

from headstart.config import TrainConfig
from headstart.errors import HeadstartError
from headstart.inference import LoadedRun, Prediction, evaluate, load_run, predict, report
from headstart.models import Backbone, create_backbone, list_models
from headstart.training.fit import TrainResult, train
from headstart.training.lr_find import LRFindResult, lr_find

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "HeadstartError",
    "LRFindResult",
    "LoadedRun",
    "Prediction",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "create_backbone",
    "evaluate",
    "list_models",
    "load_run",
    "lr_find",
    "predict",
    "report",
    "train",
]

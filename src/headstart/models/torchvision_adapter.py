"""torchvision classification models behind the :class:`~headstart.models.Backbone` surface."""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights, list_models

from headstart.errors import ModelError
from headstart.models.preprocessing import Preprocessing
from headstart.models.stages import discover_stages
from headstart.models.surgery import find_classifier, set_submodule
from headstart.models.weights_files import fit_state_dict, read_state_dict
from headstart.models.weights_spec import WeightsSpec

log = logging.getLogger(__name__)


@dataclass
class Body:
    """What an adapter hands back: a headless model and what the surface needs to know."""

    module: nn.Module
    num_features: int
    preprocessing: Preprocessing
    stages: list[Any]
    weights_label: str


def available() -> list[str]:
    return sorted(list_models(module=torchvision.models))


def _check_name(name: str) -> None:
    names = available()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown torchvision model {name!r}.{hint} `headstart models` lists them all."
        )


def weights_enum(name: str) -> Any:
    return get_model_weights(name)


def resolve_weights(name: str, weights: str) -> Any:
    """The torchvision weights enum member for ``weights`` (``DEFAULT``, ``IMAGENET1K_V1``...)."""
    enum = weights_enum(name)
    key = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    try:
        return enum[key]
    except KeyError:
        valid = ", ".join(["DEFAULT", *[w.name for w in enum]])
        raise ModelError(
            f"weights {weights!r} are not valid for torchvision:{name}; valid: {valid}, "
            "'none', or a path to a weights file"
        ) from None


def cached_weight_path(w: Any) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def _preprocessing_from(w: Any, note: str = "") -> Preprocessing:
    t = w.transforms()
    crop = int(t.crop_size[0])
    resize = int(t.resize_size[0])
    return Preprocessing(
        crop=crop,
        resize=resize,
        mean=tuple(float(v) for v in t.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in t.std),  # type: ignore[arg-type]
        interpolation=t.interpolation.value,
        source=f"torchvision {type(w).__name__}.{w.name}{note}",
    )


def build(name: str, weights: str, image_size: int | None = None) -> Body:
    """Create ``torchvision:<name>`` with ``weights``; its classifier is replaced by Identity."""
    _check_name(name)
    w = None
    file: str | None = None
    spec = WeightsSpec.parse(weights)
    if spec.kind == "file":
        file = spec.path
    elif spec.kind == "default":
        w = resolve_weights(name, "DEFAULT")
    elif spec.kind == "named":
        w = resolve_weights(name, spec.name)

    if w is not None and spec.kind == "default" and not cached_weight_path(w).is_file():
        cached = [m for m in weights_enum(name) if cached_weight_path(m).is_file()]
        if cached:
            log.info(
                "DEFAULT weights %s are not cached offline; using cached %s instead",
                w.name,
                cached[0].name,
            )
            w = cached[0]
    if w is not None:
        path = cached_weight_path(w)
        if not path.is_file() and os.environ.get("HEADSTART_OFFLINE", "1") == "1":
            raise ModelError(
                f"weights {type(w).__name__}.{w.name} for torchvision:{name} are not in the local "
                f"cache ({path}) and headstart does not download at run time "
                "(set HEADSTART_OFFLINE=0 to allow torchvision to download). Copy the file there, "
                "pass --weights <file>, or --weights none to train from scratch."
            )
        try:
            model = get_model(name, weights=w)
        except Exception as err:
            raise ModelError(f"loading weights {w} for torchvision:{name} failed: {err}") from None
        preprocessing = _preprocessing_from(w)
        label = f"{type(w).__name__}.{w.name}"
    else:
        model = get_model(name, weights=None)
        default = weights_enum(name).DEFAULT
        note = ", architecture default; random init" if file is None else f", with {file}"
        preprocessing = _preprocessing_from(default, note)
        label = "none" if file is None else str(file)

    if getattr(model, "aux_logits", False):  # GoogLeNet / Inception auxiliary heads
        model.aux_logits = False
        for attr in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, attr):
                setattr(model, attr, None)

    cls_name, cls_layer = find_classifier(model)
    if file is not None:
        fit_state_dict(model, read_state_dict(file), source=str(file), head_prefix=cls_name)
    num_features = (
        cls_layer.in_features
        if isinstance(cls_layer, nn.Linear)
        else cast(nn.Conv2d, cls_layer).in_channels
    )
    set_submodule(model, cls_name, nn.Identity())

    native = getattr(model, "image_size", None)  # VisionTransformer's fixed size
    if image_size is not None and image_size != preprocessing.crop:
        if native is not None and image_size != native:
            raise ModelError(
                f"torchvision:{name} works at {native} px only; drop --image-size or choose "
                "a convolutional model"
            )
        preprocessing = preprocessing.with_crop(image_size)
    example = torch.zeros(1, 3, preprocessing.crop, preprocessing.crop)
    stages = discover_stages(model, example)
    return Body(model, num_features, preprocessing, stages, label)


def info(name: str) -> dict[str, Any]:
    """Weights names, crop size, parameter count and offline availability, without building."""
    enum = weights_enum(name)
    members = list(enum)
    default = enum.DEFAULT
    t = default.transforms()
    return {
        "spec": f"torchvision:{name}",
        "weights": ["DEFAULT", *[m.name for m in members]],
        "input_size": int(t.crop_size[0]),
        "params": int(default.meta.get("num_params", 0)),
        "offline": [m.name for m in members if cached_weight_path(m).is_file()],
    }

"""Hugging Face vision models (``hf:<repo-or-path>``) behind the Backbone surface.

``AutoModel.from_pretrained(..., local_files_only=True)`` (a local folder, or a repo already in
the Hugging Face cache — nothing is downloaded) plus our head; preprocessing from the saved
``AutoImageProcessor``. The pooled feature is the CLS token for token models that have one, the
mean over tokens otherwise, and the model's own pooled output (or a spatial mean) for
convolutional models.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.errors import ModelError
from headstart.models.preprocessing import Preprocessing
from headstart.models.stages import discover_stages
from headstart.models.torchvision_adapter import Body
from headstart.models.weights_spec import WeightsSpec

_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


class HFBody(nn.Module):
    """Wraps a transformers vision model so that ``forward(pixels) -> (N, D)`` features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        embeddings = getattr(model, "embeddings", None)
        self.has_cls = embeddings is not None and hasattr(embeddings, "cls_token")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        h = out.last_hidden_state
        if h.dim() == 3:
            return h[:, 0] if self.has_cls else h.mean(1)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        return h.mean((2, 3))


class CLIPImageBody(nn.Module):
    """The image half of a CLIP model: ``forward(pixels) -> (N, projection_dim)`` image
    embeddings in the space shared with the text tower (which stays out of the Backbone; the
    zero-shot head is computed from it once, see :mod:`headstart.models.label_text`)."""

    def __init__(self, vision_model: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=x).pooler_output
        return self.visual_projection(pooled)


def _body(model: nn.Module) -> nn.Module:
    vision, projection = (getattr(model, n, None) for n in ("vision_model", "visual_projection"))
    if vision is not None and projection is not None:  # CLIP-style dual encoder
        return CLIPImageBody(vision, projection)
    return HFBody(model)


def _field(size: Any, key: str) -> Any:
    """``size[key]`` of an image processor's size (a dict, or transformers 5's ``SizeDict``)."""
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _preprocessing(path: str) -> Preprocessing:
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise ModelError(
            f"hf:{path} has no image processor (preprocessor_config.json) to take the preprocessing "
            f"from ({type(err).__name__}); save one with AutoImageProcessor.save_pretrained"
        ) from None
    size: Any = getattr(proc, "size", None)
    crop_size: Any = getattr(proc, "crop_size", None)
    resize = int(_field(size, "shortest_edge") or _field(size, "height") or 224)
    crop_h = _field(crop_size, "height")
    crop = int(crop_h) if getattr(proc, "do_center_crop", False) and crop_h else resize
    mean = tuple(float(v) for v in getattr(proc, "image_mean", None) or ())
    std = tuple(float(v) for v in getattr(proc, "image_std", None) or ())
    if len(mean) != 3 or len(std) != 3:
        raise ModelError(f"hf:{path}: the image processor has no 3-channel image_mean/image_std")
    resample = getattr(proc, "resample", 2)
    return Preprocessing(
        crop=crop, resize=max(resize, crop), mean=mean, std=std,  # type: ignore[arg-type]
        interpolation=_RESAMPLE.get(int(resample) if resample is not None else 2, "bilinear"),
        source=f"{type(proc).__name__} of hf:{path}",
    )  # fmt: skip


def check_local_folder(path: str, spec: str) -> None:
    """A ``path`` written as a path (``./x``, ``../x``, ``/x``, ``~/x``) must be a folder:
    otherwise the Hub client reads it as a repo id and answers "Repo id must use alphanumeric
    chars" instead of saying the folder is missing."""
    local = Path(path).expanduser()
    if path.startswith((".", "/", "~")) and not local.is_dir():
        what = "is a file, not a folder" if local.is_file() else "does not exist"
        raise ModelError(
            f"{spec}: {local.resolve()} {what}. Give the folder a model was saved to with "
            "save_pretrained (config.json + weights), or a Hugging Face repo id already in the "
            "cache (org/name)."
        )


def load_model(path: str, weights: str, spec: str, where: str = "") -> tuple[nn.Module, str]:
    """``(AutoModel at path, weights label)``, offline only: the saved weights (DEFAULT), or the
    same architecture randomly initialised (none) — both without the pooling layer where the
    model class takes that option, so checkpoints of either fit the same module tree. ``where``
    adds to the error message's list of places a model can come from."""
    check_local_folder(path, spec)
    try:
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ModelError(
            f"{spec} needs the transformers package (make install provides it)"
        ) from None
    kind = WeightsSpec.parse(weights).kind
    hf_logging.disable_progress_bar()
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists an unused pooler as missing
    try:
        if kind == "default":
            try:
                model = AutoModel.from_pretrained(
                    path, local_files_only=True, add_pooling_layer=False
                )
            except TypeError:
                model = AutoModel.from_pretrained(path, local_files_only=True)
            return model, spec
        if kind == "none":
            cfg = AutoConfig.from_pretrained(path, local_files_only=True)
            try:
                model = AutoModel.from_config(cfg, add_pooling_layer=False)
            except TypeError:
                model = AutoModel.from_config(cfg)
            return model, "none"
        raise ModelError(f"weights {weights!r} for {spec}: use DEFAULT (the saved weights) or none")
    except ModelError:
        raise
    except Exception as err:
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise ModelError(
            f"cannot load {spec} offline ({type(err).__name__}: {first}). Give a local folder "
            f"written by save_pretrained, a repo already in the Hugging Face cache{where}."
        ) from None
    finally:
        hf_logging.set_verbosity(previous)


def build(path: str, weights: str, image_size: int | None = None) -> Body:
    model, label = load_model(path, weights, f"hf:{path}")
    pre = _preprocessing(path)
    native = getattr(getattr(model, "config", None), "image_size", None)
    if image_size is not None and image_size != pre.crop:
        if isinstance(native, int) and image_size != native:
            raise ModelError(f"hf:{path} works at {native} px; drop --image-size")
        pre = pre.with_crop(image_size)
    body = _body(model).eval()
    example = torch.zeros(1, 3, pre.crop, pre.crop)
    with torch.no_grad():
        num_features = int(body(example).shape[-1])
    if not math.isfinite(num_features) or num_features <= 0:
        raise ModelError(f"hf:{path} produced no usable features")
    return Body(body, num_features, pre, discover_stages(body, example), label)

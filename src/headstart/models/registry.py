"""Model spec strings (``torchvision:<name>``, ``timm:<name>``) -> :class:`Backbone`."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import torch

from headstart.errors import ModelError
from headstart.models import torchvision_adapter
from headstart.models.backbone import Backbone
from headstart.models.heads import make_head

SOURCES = ("torchvision", "timm", "efficientnet-lite", "hf", "text")


def parse_spec(spec: str) -> tuple[str, str]:
    """``"torchvision:resnet18"`` -> ``("torchvision", "resnet18")``."""
    source, sep, name = spec.partition(":")
    if not sep or not name:
        raise ModelError(
            f"model spec {spec!r} must look like 'torchvision:<name>', 'timm:<name>', 'hf:<repo-or-folder>' or 'efficientnet-lite:efficientnet-lite0'"
        )
    if source not in SOURCES:
        raise ModelError(f"unknown model source {source!r} in {spec!r}; use one of {SOURCES}")
    return source, name


def create_backbone(
    spec: str,
    num_classes: int,
    *,
    weights: str = "DEFAULT",
    head: str = "linear",
    head_hidden: int = 512,
    head_dropout: float | None = None,
    image_size: int | None = None,
    pooling: str = "mean",
    max_length: int | None = None,
    label_embeddings: torch.Tensor | None = None,
    detector: str = "faster-rcnn",
    seg_head: str = "lraspp",
) -> Backbone:
    """Build the model for ``spec`` with a new head for ``num_classes``.

    Example::

        bb = create_backbone("torchvision:resnet18", 5, weights="none", image_size=64)
        bb.stage_names   # ['conv1-bn1' ... 'layer4']

    Text models (``text:<repo-or-folder>``, ``text:minilm``, or ``hf:`` of a text model) take
    ``pooling`` (mean or cls) and ``max_length`` (tokens); image models ignore them.
    ``head="detection"`` builds the ``detector`` head (faster-rcnn, retinanet or ssdlite,
    :mod:`headstart.models.detection_heads`) on the stages; ``head="dense"`` the ``seg_head``
    (lraspp, deeplabv3 or fpn, :mod:`headstart.models.dense_heads`).
    """
    source, name = parse_spec(spec)
    from headstart.models import text_adapter

    if text_adapter.is_text_spec(spec):
        if image_size is not None:
            raise ModelError(f"{spec} is a text model: drop --image-size")
        body = text_adapter.build(name, weights, pooling=pooling, max_length=max_length)
    elif source == "timm":  # imported on demand: timm is large and most runs never need it
        from headstart.models import timm_adapter

        body = timm_adapter.build(name, weights, image_size)
    elif source == "hf":
        from headstart.models import hf_adapter

        body = hf_adapter.build(name, weights, image_size)
    elif source == "efficientnet-lite":
        from headstart.models import lite_adapter

        body = lite_adapter.build(name, weights, image_size)
    else:
        body = torchvision_adapter.build(name, weights, image_size)
    if head == "dense":  # segmentation: a per-pixel head on two stages (models/dense_heads.py)
        from headstart.models.dense_heads import DenseBackbone

        return DenseBackbone(
            body.module, body.stages, body.num_features, body.preprocessing, spec,
            body.weights_label, num_classes, seg_head,
        )  # fmt: skip
    if head == "detection":  # a torchvision detector on the last stages (detection_heads.py)
        from headstart.models.detection_heads import DetectionBackbone

        return DetectionBackbone(
            body.module, body.stages, body.num_features, body.preprocessing, spec,
            body.weights_label, num_classes, detector,
        )  # fmt: skip
    new_head = make_head(
        head, body.num_features, num_classes, head_hidden, head_dropout, label_embeddings
    )
    return Backbone(
        body.module,
        new_head,
        body.stages,
        body.num_features,
        body.preprocessing,
        spec,
        body.weights_label,
    )


def list_models(
    pattern: str | None = None,
    source: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Models that can be used; torchvision always, timm when ``pattern`` narrows the search.

    Each entry: spec, weights names, input size, params, and the weights available offline
    right now. timm parameter counts are measured once per timm version (the model built on
    the meta device) and cached; ``progress(done, to_measure)`` reports the measuring.
    """
    out: list[dict[str, Any]] = []
    pat = f"*{pattern}*" if pattern and not any(c in pattern for c in "*?[") else pattern
    if source in (None, "torchvision"):
        for name in torchvision_adapter.available():
            if pat is None or fnmatch.fnmatch(name, pat):
                out.append(torchvision_adapter.info(name))
    if source in (None, "text"):
        from headstart.models import text_adapter

        for name in ("minilm",):
            if pat is None or fnmatch.fnmatch(name, pat):
                out.append(text_adapter.info(name))
    if source in (None, "efficientnet-lite"):
        from headstart.models import lite_adapter

        for name in lite_adapter.NAMES:
            if pat is None or fnmatch.fnmatch(name, pat):
                out.append(lite_adapter.info(name))
    if source == "timm" or (source is None and pat is not None):
        import timm

        from headstart.models import timm_adapter

        names = timm.list_models(pat or "*")
        counts = timm_adapter.param_counts(names, progress)
        out.extend(timm_adapter.info(name, counts[name]) for name in names)
    return out

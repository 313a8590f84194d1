"""Dense (per-pixel) heads on a backbone's stages: semantic segmentation.

:class:`DenseBackbone` is a :class:`~headstart.models.backbone.Backbone` whose ``head`` reads two
stage outputs instead of the pooled embedding: a high-resolution one (the last stage with
output stride <= 8) and the last stage. The body, its stages, freezing, BatchNorm policy and
preprocessing are the classification backbone's, so every strategy freezes and unfreezes by
stage exactly as for classification; only ``forward`` differs. The head is LR-ASPP
(Howard et al., "Searching for MobileNetV3", ICCV 2019): the last stage, gated by its
global-average-pooled sigmoid attention, is upsampled to the stride-8 map and both are
classified, and the sum is upsampled bilinearly to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from headstart.errors import ModelError
from headstart.models.backbone import Backbone, Stage
from headstart.models.preprocessing import Preprocessing

#: the probe input side used to measure each stage's output stride
PROBE_SIZE = 128


class LRASPPHead(nn.Module):
    """LR-ASPP: ``low`` (stride <= 8) and ``high`` (last stage) maps -> class logits at the
    resolution of ``low``."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter: int = 128):
        super().__init__()
        self.out_features = num_classes
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter, 1, bias=False), nn.BatchNorm2d(inter), nn.ReLU()
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter, 1, bias=False), nn.Sigmoid()
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.cbr(high) * self.scale(high)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out: torch.Tensor = self.low_classifier(low) + self.high_classifier(x)
        return out


def stage_shapes(backbone: Backbone, size: int = PROBE_SIZE) -> list[tuple[int, ...]]:
    """The output shape of each stage for one ``size x size`` input (eval mode, no grad)."""
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = []
    for i, modules in enumerate(backbone._stage_modules):
        hooks.append(
            modules[-1].register_forward_hook(
                lambda _m, _i, out, i=i: shapes.__setitem__(i, tuple(out.shape))
            )
        )
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone.body(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was)
    return [shapes.get(i, ()) for i in range(len(backbone.stages))]


def pick_stages(shapes: Sequence[tuple[int, ...]], size: int = PROBE_SIZE) -> tuple[int, int]:
    """``(low, high)``: the last stage with output stride <= 8 and the last stage."""
    if any(len(s) != 4 for s in shapes):
        raise ModelError(
            "segmentation needs a convolutional backbone whose stages give (N, C, H, W) maps"
        )
    high = len(shapes) - 1
    fine = [i for i, s in enumerate(shapes[:high]) if size // s[2] <= 8]
    if not fine:
        raise ModelError("no stage before the last keeps stride <= 8 for a dense head")
    return fine[-1], high


class DenseBackbone(Backbone):
    """A backbone with a per-pixel head (see module doc): ``forward(x)`` -> ``(N, K, H, W)``
    logits at the input size."""

    def __init__(
        self, body: nn.Module, stages: Sequence[Stage], num_features: int,
        preprocessing: Preprocessing, spec: str, weights_label: str, num_classes: int,
    ) -> None:  # fmt: skip
        super().__init__(
            body, nn.Identity(), stages, num_features, preprocessing, spec, weights_label
        )
        shapes = stage_shapes(self)
        self.low_stage, self.high_stage = pick_stages(shapes)
        self.head = LRASPPHead(shapes[self.low_stage][1], shapes[self.high_stage][1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: dict[int, torch.Tensor] = {}
        hooks = [
            self._stage_modules[i][-1].register_forward_hook(
                lambda _m, _inp, out, i=i: captured.__setitem__(i, out)
            )
            for i in (self.low_stage, self.high_stage)
        ]
        try:
            self.body(x)
        finally:
            for h in hooks:
                h.remove()
        logits: torch.Tensor = self.head(captured[self.low_stage], captured[self.high_stage])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def make_dense(backbone: Backbone, num_classes: int) -> DenseBackbone:
    """``backbone``'s body, stages and preprocessing under a fresh LR-ASPP head."""
    return DenseBackbone(
        backbone.body, backbone.stages, backbone.num_features, backbone.preprocessing,
        backbone.spec, backbone.weights_label, num_classes,
    )  # fmt: skip

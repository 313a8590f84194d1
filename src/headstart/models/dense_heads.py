"""Dense (per-pixel) heads on a backbone's stages: semantic segmentation.

:class:`DenseBackbone` is a :class:`~headstart.models.backbone.Backbone` whose ``head`` reads
stage outputs instead of the pooled embedding. The body, its stages, freezing, BatchNorm policy
and preprocessing are the classification backbone's, so every strategy freezes and unfreezes by
stage exactly as for classification; only ``forward`` differs. The head is chosen by name
(:data:`SEG_HEADS`, ``--seg-head``):

* ``lraspp`` (Howard et al., "Searching for MobileNetV3", ICCV 2019): the last stage, gated by
  its global-average-pooled sigmoid attention, is upsampled to the last stage with output
  stride <= 8, both are classified and the logits summed;
* ``deeplabv3`` (Chen et al., "Rethinking Atrous Convolution", 2017): torchvision's
  ``DeepLabHead`` (ASPP: a 1x1 conv, three atrous 3x3 convs and image pooling, then a 3x3 conv
  and the classifier) on the last stage. headstart does not dilate the body, so the last stage
  keeps its stride (32 on the usual CNNs); the atrous rates are torchvision's (12, 24, 36 at
  stride 8) scaled to that stride, so they span the same pixels of the input;
* ``fpn`` (semantic FPN: Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019):
  torchvision's ``FeaturePyramidNetwork`` (128 channels) over the last stage of each output
  stride from 4 up, then per level 3x3 conv + GroupNorm + ReLU + 2x upsampling until stride 4
  (one conv for the stride-4 level), the levels summed and classified.

Every head's logits are upsampled bilinearly to the input size.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.ops import FeaturePyramidNetwork

from headstart.errors import ModelError
from headstart.models.backbone import Backbone, Stage
from headstart.models.preprocessing import Preprocessing

#: the probe input side used to measure each stage's output stride
PROBE_SIZE = 128
#: torchvision's DeepLabV3 atrous rates and the output stride they are set for
DEEPLAB_RATES, DEEPLAB_STRIDE = (12, 24, 36), 8
#: channels of the semantic FPN's pyramid and merge head
FPN_CHANNELS = 128


class SegmentationHead(nn.Module):
    """A per-pixel head: ``forward(*stage maps)`` -> class logits at the finest map's
    resolution (or coarser). ``seg_head`` is its ``--seg-head`` name."""

    seg_head: ClassVar[str]
    out_features: int


class LRASPPHead(SegmentationHead):
    """LR-ASPP: ``low`` (stride <= 8) and ``high`` (last stage) maps -> class logits at the
    resolution of ``low``."""

    seg_head = "lraspp"

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


class DeepLabV3Head(SegmentationHead):
    """torchvision's ``DeepLabHead`` (ASPP + 3x3 conv + classifier) on the last stage, whose
    output ``stride`` scales the atrous rates (see module doc)."""

    seg_head = "deeplabv3"

    def __init__(self, channels: int, num_classes: int, stride: int):
        super().__init__()
        self.out_features = num_classes
        rates = [max(1, round(r * DEEPLAB_STRIDE / stride)) for r in DEEPLAB_RATES]
        self.deeplab = DeepLabHead(channels, num_classes, atrous_rates=rates)

    def forward(self, last: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.deeplab(last)
        return out


class SemanticFPNHead(SegmentationHead):
    """Semantic FPN (see module doc): maps at output ``strides`` (ascending, the first >= 4)
    -> class logits at the first map's resolution."""

    seg_head = "fpn"

    def __init__(self, channels: Sequence[int], strides: Sequence[int], num_classes: int):
        super().__init__()
        self.out_features = num_classes
        c = FPN_CHANNELS
        self.fpn = FeaturePyramidNetwork(list(channels), c)
        self.merge = nn.ModuleList()
        for stride in strides:
            steps = max(1, round(math.log2(stride / strides[0])))
            blocks: list[nn.Module] = []
            for _ in range(steps):
                blocks += [
                    nn.Conv2d(c, c, 3, padding=1, bias=False),
                    nn.GroupNorm(32, c),
                    nn.ReLU(),
                ]
                if stride > strides[0]:
                    blocks.append(nn.Upsample(scale_factor=2.0, mode="bilinear"))
            self.merge.append(nn.Sequential(*blocks))
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, *maps: torch.Tensor) -> torch.Tensor:
        levels = self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))
        size = maps[0].shape[-2:]
        merged = sum(
            F.interpolate(block(x), size=size, mode="bilinear", align_corners=False)
            for block, x in zip(self.merge, levels.values(), strict=True)
        )
        out: torch.Tensor = self.classifier(merged)
        return out


#: the heads of ``--seg-head``
SEG_HEADS: dict[str, type[SegmentationHead]] = {
    h.seg_head: h for h in (LRASPPHead, DeepLabV3Head, SemanticFPNHead)
}


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
    check_maps(shapes)
    high = len(shapes) - 1
    fine = [i for i, s in enumerate(shapes[:high]) if size // s[2] <= 8]
    if not fine:
        raise ModelError("no stage before the last keeps stride <= 8 for a dense head")
    return fine[-1], high


def check_maps(shapes: Sequence[tuple[int, ...]]) -> None:
    """Refuse stages that do not give spatial ``(N, C, H, W)`` maps (e.g. a ViT's tokens)."""
    if any(len(s) != 4 for s in shapes):
        raise ModelError(
            "segmentation needs a convolutional backbone whose stages give (N, C, H, W) maps"
        )


def pyramid_stages(shapes: Sequence[tuple[int, ...]], size: int = PROBE_SIZE) -> list[int]:
    """The last stage of each output stride from 4 up (ascending): semantic FPN's levels."""
    check_maps(shapes)
    last: dict[int, int] = {}
    for i, s in enumerate(shapes):
        stride = size // s[2]
        if stride >= 4:
            last[stride] = i
    if len(last) < 2:
        raise ModelError("the fpn head needs stages at two output strides >= 4 or more")
    return [last[k] for k in sorted(last)]


def build_seg_head(
    kind: str, shapes: Sequence[tuple[int, ...]], num_classes: int
) -> tuple[SegmentationHead, list[int]]:
    """The ``--seg-head`` ``kind`` for stages of ``shapes`` (measured at :data:`PROBE_SIZE`),
    and the stages it reads, in its ``forward``'s order."""
    if kind not in SEG_HEADS:
        raise ModelError(f"unknown segmentation head {kind!r}; choose from {', '.join(SEG_HEADS)}")
    if kind == "lraspp":
        low, high = pick_stages(shapes)
        return LRASPPHead(shapes[low][1], shapes[high][1], num_classes), [low, high]
    if kind == "deeplabv3":
        check_maps(shapes)
        last = len(shapes) - 1
        stride = PROBE_SIZE // shapes[last][2]
        return DeepLabV3Head(shapes[last][1], num_classes, stride), [last]
    picked = pyramid_stages(shapes)
    strides = [PROBE_SIZE // shapes[i][2] for i in picked]
    return SemanticFPNHead([shapes[i][1] for i in picked], strides, num_classes), picked


class DenseBackbone(Backbone):
    """A backbone with a per-pixel head (see module doc): ``forward(x)`` -> ``(N, K, H, W)``
    logits at the input size."""

    def __init__(
        self, body: nn.Module, stages: Sequence[Stage], num_features: int,
        preprocessing: Preprocessing, spec: str, weights_label: str, num_classes: int,
        seg_head: str = "lraspp",
    ) -> None:  # fmt: skip
        super().__init__(
            body, nn.Identity(), stages, num_features, preprocessing, spec, weights_label
        )
        self.head, self.head_stages = build_seg_head(seg_head, stage_shapes(self), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: dict[int, torch.Tensor] = {}
        hooks = [
            self._stage_modules[i][-1].register_forward_hook(
                lambda _m, _inp, out, i=i: captured.__setitem__(i, out)
            )
            for i in self.head_stages
        ]
        try:
            self.body(x)
        finally:
            for h in hooks:
                h.remove()
        logits: torch.Tensor = self.head(*(captured[i] for i in self.head_stages))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

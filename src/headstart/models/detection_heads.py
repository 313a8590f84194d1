"""Object detection on a backbone's stages: Faster R-CNN, RetinaNet or SSDlite.

:class:`DetectionBackbone` is a :class:`~headstart.models.backbone.Backbone` whose ``head`` is a
torchvision detector minus its backbone, chosen by name (:data:`DETECTORS`, ``--detector``):

* ``faster-rcnn`` (Ren et al., NeurIPS 2015; FPN: Lin et al., CVPR 2017): a
  :class:`~torchvision.ops.FeaturePyramidNetwork` over the last stage of each output stride >= 8
  (at most three, plus a max-pooled level), the region proposal network and the RoI heads with a
  box predictor for the user's classes (+ background);
* ``retinanet`` (Lin et al., ICCV 2017): the same pyramid, torchvision's ``RetinaNetHead``
  (classification and box subnets, GroupNorm as in torchvision's v2) with the focal loss, anchors
  at three octave scales and three aspect ratios on each level;
* ``ssdlite`` (SSD: Liu et al., ECCV 2016; SSDlite: Howard et al., ICCV 2019): torchvision's
  ``SSDLiteHead`` on the last two picked stages (output strides 16 and 32 on the usual CNNs)
  plus four extra blocks that halve the resolution each (1x1 conv, depthwise 3x3 stride 2, 1x1
  conv, as torchvision's ``ssdlite320_mobilenet_v3_large`` builds them), default boxes from
  ``DefaultBoxGenerator`` (scales 0.2-0.95 of the image, ratios 1, 2, 3 and their inverses).

torchvision's own modules do the work: the heads, anchor generators, matchers, box coders,
losses and post-processing of ``RetinaNet`` and ``SSD`` (their ``compute_loss`` and
``postprocess_detections``); only the backbone forward is headstart's. The body, its stages,
freezing, BatchNorm policy and preprocessing are the classification backbone's, so every
strategy freezes and unfreezes by stage exactly as for classification (frozen stages, BatchNorm
included, stay in eval mode); no head has BatchNorm (GroupNorm where torchvision puts a norm:
it keeps no running statistics and puts the stages of different backbones on one scale).

Boxes outside the model are ``[class, x1, y1, x2, y2]`` rows normalised to ``[0, 1]``
(:mod:`headstart.data.detection`); detections are ``(N, D, 6)`` rows
``[x1, y1, x2, y2, score, class]`` (normalised, most confident first), padded with
``score 0, class -1`` to :data:`DETECTIONS_PER_IMAGE`, whatever the detector.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from typing import ClassVar

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, box_iou
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import Conv2dNormActivation

from headstart.errors import ModelError
from headstart.models.backbone import Backbone, Stage
from headstart.models.dense_heads import PROBE_SIZE, stage_shapes
from headstart.models.preprocessing import Preprocessing

#: detections kept per image (the padded length of the output)
DETECTIONS_PER_IMAGE = 100
#: score a detection needs to count in the per-batch F1 (``val_acc``) and the report
SCORE_THRESHOLD = 0.5
#: detections below this score are dropped by every detector's post-processing
MIN_SCORE = 0.05


def pick_levels(
    shapes: Sequence[tuple[int, ...]], size: int = PROBE_SIZE, most: int = 3
) -> list[tuple[int, int]]:
    """``[(stage, stride), ...]``: the last stage of each output stride >= 8, at most
    ``most`` of them (the coarsest), input side first."""
    if any(len(s) != 4 for s in shapes):
        raise ModelError(
            "detection needs a convolutional backbone whose stages give (N, C, H, W) maps"
        )
    last: dict[int, int] = {}
    for i, s in enumerate(shapes):
        stride = size // s[2]
        if stride >= 8:
            last[stride] = i
    if not last:
        raise ModelError("no stage reaches output stride 8 for a detection head")
    return [(last[s], s) for s in sorted(last)][-most:]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (as many as divide ``channels``)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class Pyramid(FeaturePyramidNetwork):
    """torchvision's FPN with GroupNorm after its convs and a max-pooled extra level;
    ``out_channels`` as torchvision's detectors ask of their backbone. GroupNorm because stages
    of different backbones differ in scale (EfficientNet-Lite0's std 3-7, MobileNetV2's 0.7-0.9
    on the demo images); without it Lite0 feature-extract reached val mAP@0.5 0.14 with Faster
    R-CNN, with it 0.8 (docs/detection.md)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__(list(in_channels), out_channels, LastLevelMaxPool(), norm_layer=group_norm)
        self.out_channels = out_channels


class Detector(nn.Module, ABC):
    """A detection head on stage maps. Subclasses build torchvision's modules and say how to
    get the feature maps (:meth:`features`), the loss terms (:meth:`loss_dict`, named in
    :attr:`loss_terms`) and torchvision's per-image detections (:meth:`found_raw`)."""

    #: ``--detector`` name
    name: ClassVar[str]
    #: the loss terms, in the order :meth:`losses` returns them
    loss_terms: ClassVar[tuple[str, ...]]
    #: stages the head reads (the coarsest of :func:`pick_levels`)
    most_levels: ClassVar[int] = 3
    #: torchvision's label of class index 0 (1 where label 0 is the background)
    label_offset: ClassVar[int] = 1

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.out_features = num_classes

    @abstractmethod
    def features(self, maps: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        """The maps the head predicts on, from the picked stages' maps."""

    @abstractmethod
    def loss_dict(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """torchvision's loss dict (keys :attr:`loss_terms`)."""

    @abstractmethod
    def found_raw(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        """torchvision's post-processed detections (pixel boxes, torchvision labels)."""

    def losses(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
    ) -> torch.Tensor:  # fmt: skip
        """The loss terms (:attr:`loss_terms`) as one vector."""
        found = self.loss_dict(images, feats, targets)
        return torch.stack([found[k] for k in self.loss_terms])

    def found(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        """Per image ``{"boxes" (pixels), "scores", "labels" (class indices)}``, after score
        threshold, NMS and the cap of :data:`DETECTIONS_PER_IMAGE`."""
        return [
            {"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - self.label_offset}
            for d in self.found_raw(images, feats)
        ]

    def detect(self, images: ImageList, feats: OrderedDict[str, torch.Tensor]) -> torch.Tensor:
        """Padded, normalised detections ``(N, D, 6)`` (see module doc)."""
        found = self.found(images, feats)
        h, w = images.tensors.shape[-2:]
        scale = images.tensors.new_tensor([w, h, w, h])
        out = images.tensors.new_zeros((len(found), DETECTIONS_PER_IMAGE, 6))
        out[:, :, 5] = -1
        for i, d in enumerate(found):
            n = min(len(d["boxes"]), DETECTIONS_PER_IMAGE)
            out[i, :n, :4] = d["boxes"][:n] / scale
            out[i, :n, 4] = d["scores"][:n]
            out[i, :n, 5] = d["labels"][:n].to(out.dtype)
        return out


class FasterRCNNDetector(Detector):
    """FPN + RPN + RoI heads (see module doc). Two anchor sizes per level (2x and 4x its
    stride; the pooled level doubles the coarsest), three aspect ratios."""

    name: ClassVar[str] = "faster-rcnn"
    loss_terms: ClassVar[tuple[str, ...]] = (
        "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"
    )  # fmt: skip

    def __init__(
        self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
        fpn_channels: int = 128,
    ) -> None:  # fmt: skip
        super().__init__(num_classes)
        self.fpn = Pyramid(in_channels, fpn_channels)
        names = [str(i) for i in range(len(in_channels))]
        levels = [*strides, 2 * strides[-1]]
        sizes = tuple((2 * s, 4 * s) for s in levels)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
            positive_fraction=0.5, pre_nms_top_n={"training": 1000, "testing": 500},
            post_nms_top_n={"training": 500, "testing": 300}, nms_thresh=0.7,
        )  # fmt: skip
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
            TwoMLPHead(fpn_channels * 7 * 7, 256), FastRCNNPredictor(256, num_classes + 1),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=128,
            positive_fraction=0.25, bbox_reg_weights=None, score_thresh=MIN_SCORE,
            nms_thresh=0.5, detections_per_img=DETECTIONS_PER_IMAGE,
        )  # fmt: skip

    @contextmanager
    def heads_in_mode(self, training: bool) -> Iterator[None]:
        """RPN and RoI heads in loss (``True``) or inference mode: their ``training`` flag
        only (the head has no BatchNorm or dropout, so validation losses change nothing)."""
        saved = self.rpn.training, self.roi_heads.training
        self.rpn.training = self.roi_heads.training = training
        try:
            yield
        finally:
            self.rpn.training, self.roi_heads.training = saved

    def features(self, maps: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = self.fpn(maps)
        return out

    def loss_dict(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        with self.heads_in_mode(True):
            proposals, rpn_losses = self.rpn(images, feats, targets)
            _, roi_losses = self.roi_heads(feats, proposals, images.image_sizes, targets)
        return {**rpn_losses, **roi_losses}

    def found_raw(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        with self.heads_in_mode(False):
            proposals, _ = self.rpn(images, feats)
            found, _ = self.roi_heads(feats, proposals, images.image_sizes)
        return list(found)


class OneStageDetector(Detector):
    """A torchvision one-stage detector in ``self.model`` (RetinaNet, SSD) whose "backbone"
    maps the picked stages' maps to the levels its head predicts on."""

    model: RetinaNet | SSD

    def features(self, maps: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = self.model.backbone(maps)
        return out

    def outputs(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor]
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], list[torch.Tensor]]:
        """``(levels, head outputs, anchors per image)``."""
        levels = list(feats.values())
        return levels, self.model.head(levels), self.model.anchor_generator(images, levels)


class RetinaNetDetector(OneStageDetector):
    """FPN + torchvision's ``RetinaNetHead`` with the focal loss (see module doc). Anchors
    ``2 x stride`` at octave scales ``2^0, 2^(1/3), 2^(2/3)`` and ratios 0.5/1/2 on each level
    (the paper's ``4 x stride`` base is for 800 px images; here boxes of 16-100 px on 96 px
    inputs get anchors on the stride-8 to 32 levels). Sigmoid per class: no background class."""

    name: ClassVar[str] = "retinanet"
    loss_terms: ClassVar[tuple[str, ...]] = ("classification", "bbox_regression")
    label_offset: ClassVar[int] = 0
    #: the smallest anchor of a level, in strides
    ANCHOR_STRIDES: ClassVar[float] = 2.0

    def __init__(
        self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int,
        fpn_channels: int = 128,
    ) -> None:  # fmt: skip
        super().__init__(num_classes)
        levels = [*strides, 2 * strides[-1]]
        sizes = tuple(
            tuple(self.ANCHOR_STRIDES * s * 2 ** (k / 3) for k in range(3)) for s in levels
        )
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))  # type: ignore[arg-type]
        head = RetinaNetHead(
            fpn_channels, anchors.num_anchors_per_location()[0], num_classes,
            norm_layer=group_norm,
        )  # fmt: skip
        # the pyramid is torchvision RetinaNet's "backbone": it maps stage maps to features
        self.model = RetinaNet(
            Pyramid(in_channels, fpn_channels), num_classes, anchor_generator=anchors,
            head=head, score_thresh=MIN_SCORE, nms_thresh=0.5,
            detections_per_img=DETECTIONS_PER_IMAGE, topk_candidates=1000,
        )  # fmt: skip

    def loss_dict(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        _, outputs, anchors = self.outputs(images, feats)
        losses: dict[str, torch.Tensor] = self.model.compute_loss(targets, outputs, anchors)
        return losses

    def found_raw(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        levels, outputs, anchors = self.outputs(images, feats)
        # split per level, as torchvision's RetinaNet.forward does before post-processing
        per_location = self.model.anchor_generator.num_anchors_per_location()[0]
        counts = [f.size(2) * f.size(3) * per_location for f in levels]
        split = {k: list(v.split(counts, dim=1)) for k, v in outputs.items()}
        split_anchors = [list(a.split(counts)) for a in anchors]
        found: list[dict[str, torch.Tensor]] = self.model.postprocess_detections(
            split, split_anchors, images.image_sizes
        )
        return found


def extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """One SSDlite extra block, as torchvision's ``ssdlite`` builds it (1x1 conv to half the
    channels, depthwise 3x3 stride 2, 1x1 conv; norm and ReLU6 after each), GroupNorm for the
    norm."""
    mid = out_channels // 2
    kw = {"norm_layer": group_norm, "activation_layer": nn.ReLU6}
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, kernel_size=1, **kw),  # type: ignore[arg-type]
        Conv2dNormActivation(mid, mid, kernel_size=3, stride=2, groups=mid, **kw),  # type: ignore[arg-type]
        Conv2dNormActivation(mid, out_channels, kernel_size=1, **kw),  # type: ignore[arg-type]
    )


class SSDliteExtras(nn.Module):
    """The stage maps followed by four extra blocks on the last one (torchvision's
    ``ssdlite320_mobilenet_v3_large`` widths 512, 256, 256, 128), each halving the resolution;
    weights drawn from N(0, 0.03) as torchvision does."""

    WIDTHS: ClassVar[tuple[int, ...]] = (512, 256, 256, 128)

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        widths = [in_channels[-1], *self.WIDTHS]
        self.extra = nn.ModuleList(extra_block(a, b) for a, b in pairwise(widths))
        for m in self.extra.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.03)
        self.out_channels = [*in_channels, *self.WIDTHS]

    def forward(self, maps: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        out = OrderedDict(maps)
        x = list(maps.values())[-1]
        for block in self.extra:
            x = block(x)
            out[str(len(out))] = x
        return out


class SSDliteDetector(OneStageDetector):
    """SSDlite on the last two picked stages + four extra blocks (see module doc):
    torchvision's ``SSDLiteHead`` (GroupNorm), ``DefaultBoxGenerator`` (6 boxes a location),
    ``SSD``'s matcher, hard-negative-mined loss and post-processing."""

    name: ClassVar[str] = "ssdlite"
    loss_terms: ClassVar[tuple[str, ...]] = ("bbox_regression", "classification")
    most_levels: ClassVar[int] = 2

    def __init__(
        self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int
    ) -> None:
        super().__init__(num_classes)
        extras = SSDliteExtras(in_channels)
        boxes = DefaultBoxGenerator([[2, 3]] * len(extras.out_channels), min_ratio=0.2,
                                    max_ratio=0.95)  # fmt: skip
        head = SSDLiteHead(
            extras.out_channels, boxes.num_anchors_per_location(), num_classes + 1, group_norm
        )
        # the extra blocks are torchvision SSD's "backbone"; ``size`` only sets SSD's own
        # transform, which headstart does not use (inputs arrive resized and normalised)
        self.model = SSD(
            extras, boxes, (PROBE_SIZE, PROBE_SIZE), num_classes + 1, head=head,
            score_thresh=MIN_SCORE, nms_thresh=0.55, detections_per_img=DETECTIONS_PER_IMAGE,
            topk_candidates=300,
        )  # fmt: skip

    def loss_dict(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        _, outputs, anchors = self.outputs(images, feats)
        matched = []  # each default box's true box (-1: none), as torchvision's SSD.forward
        for boxes, t in zip(anchors, targets, strict=True):
            if t["boxes"].numel() == 0:
                matched.append(torch.full((len(boxes),), -1, dtype=torch.int64,
                                          device=boxes.device))  # fmt: skip
            else:
                matched.append(self.model.proposal_matcher(box_iou(t["boxes"], boxes)))
        losses: dict[str, torch.Tensor] = self.model.compute_loss(
            targets, outputs, anchors, matched
        )
        return losses

    def found_raw(
        self, images: ImageList, feats: OrderedDict[str, torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        _, outputs, anchors = self.outputs(images, feats)
        found: list[dict[str, torch.Tensor]] = self.model.postprocess_detections(
            outputs, anchors, images.image_sizes
        )
        return found


#: ``--detector`` name -> head class
DETECTORS: dict[str, type[FasterRCNNDetector | RetinaNetDetector | SSDliteDetector]] = {
    c.name: c for c in (FasterRCNNDetector, RetinaNetDetector, SSDliteDetector)
}


def detector_class(
    name: str,
) -> type[FasterRCNNDetector | RetinaNetDetector | SSDliteDetector]:
    """The head class of ``--detector name``; an unknown name names the choices."""
    if name not in DETECTORS:
        raise ModelError(
            f"unknown detector {name!r} (--detector); use one of {', '.join(DETECTORS)}"
        )
    return DETECTORS[name]


def target_dicts(
    targets: torch.Tensor, height: int, width: int, label_offset: int = 1
) -> list[dict[str, torch.Tensor]]:
    """Padded normalised ``(N, M, 5)`` box rows -> torchvision's per-image target dicts
    (pixel boxes; labels ``class + label_offset``: 1..K where 0 is the background)."""
    scale = targets.new_tensor([width, height, width, height])
    out = []
    for rows in targets:
        real = rows[rows[:, 0] >= 0]
        out.append({"boxes": real[:, 1:] * scale, "labels": real[:, 0].long() + label_offset})
    return out


def detection_f1(
    detections: torch.Tensor, targets: torch.Tensor, threshold: float = SCORE_THRESHOLD
) -> torch.Tensor:
    """F1 of a batch at IoU 0.5: detections scoring >= ``threshold`` matched greedily (most
    confident first) to unmatched true boxes of their class; 1 when a batch has neither."""
    tp = fp = fn = 0
    for det, rows in zip(detections, targets, strict=True):
        det = det[det[:, 4] >= threshold]
        true = rows[rows[:, 0] >= 0]
        used = torch.zeros(len(true), dtype=torch.bool)
        iou = box_iou(det[:, :4].float(), true[:, 1:].float()) if len(true) else None
        for j in range(len(det)):
            if iou is None:
                fp += 1
                continue
            ok = (iou[j] >= 0.5) & (true[:, 0] == det[j, 5]) & ~used
            if ok.any():
                used[int(torch.argmax(iou[j] * ok))] = True
                tp += 1
            else:
                fp += 1
        fn += int((~used).sum())
    total = 2 * tp + fp + fn
    return torch.tensor(1.0 if total == 0 else 2 * tp / total)


class DetectionBackbone(Backbone):
    """A backbone with a detection head (see module doc). ``forward(x)`` -> detections
    ``(N, D, 6)``; ``forward(x, targets)`` -> the detector's loss terms followed by the batch's
    detection F1 at IoU 0.5 in eval mode (NaN in training mode: it would need an inference
    pass)."""

    def __init__(
        self, body: nn.Module, stages: Sequence[Stage], num_features: int,
        preprocessing: Preprocessing, spec: str, weights_label: str, num_classes: int,
        detector: str = "faster-rcnn",
    ) -> None:  # fmt: skip
        super().__init__(
            body, nn.Identity(), stages, num_features, preprocessing, spec, weights_label
        )
        kind = detector_class(detector)
        shapes = stage_shapes(self)
        picked = pick_levels(shapes, most=kind.most_levels)
        self.level_stages = [i for i, _ in picked]
        self.head = kind(
            [shapes[i][1] for i in self.level_stages], [s for _, s in picked], num_classes
        )

    def stage_maps(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The head's inputs: the picked stages' maps, keyed ``"0"``, ``"1"``, ..."""
        captured: dict[int, torch.Tensor] = {}
        hooks = [
            self._stage_modules[i][-1].register_forward_hook(
                lambda _m, _inp, out, i=i: captured.__setitem__(i, out)
            )
            for i in self.level_stages
        ]
        try:
            self.body(x)
        finally:
            for h in hooks:
                h.remove()
        return OrderedDict((str(k), captured[i]) for k, i in enumerate(self.level_stages))

    @property
    def detector(self) -> Detector:
        """``head``, typed."""
        assert isinstance(self.head, Detector)
        return self.head

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        head = self.detector
        feats = head.features(self.stage_maps(x))
        h, w = int(x.shape[-2]), int(x.shape[-1])
        images = ImageList(x, [(h, w)] * len(x))
        if targets is None:
            return head.detect(images, feats)
        losses = head.losses(images, feats, target_dicts(targets, h, w, head.label_offset))
        if self.training:
            return torch.cat([losses, losses.new_full((1,), float("nan"))])
        f1 = detection_f1(head.detect(images, feats), targets).to(losses)
        return torch.cat([losses, f1.view(1)])

"""Object detection on a backbone's stages: Faster R-CNN with a feature pyramid.

:class:`DetectionBackbone` is a :class:`~headstart.models.backbone.Backbone` whose ``head`` is a
torchvision Faster R-CNN detector minus its backbone (Ren et al., NeurIPS 2015; FPN: Lin et
al., CVPR 2017): a :class:`~torchvision.ops.FeaturePyramidNetwork` over the last stage of each
output stride >= 8 (at most three, plus a max-pooled level), the region proposal network and
the RoI heads with a box predictor for the user's classes (+ background). The body, its stages,
freezing, BatchNorm policy and preprocessing are the classification backbone's, so every
strategy freezes and unfreezes by stage exactly as for classification (frozen stages, BatchNorm
included, stay in eval mode); the head has no BatchNorm (the pyramid normalises with
GroupNorm, which keeps no running statistics).

Boxes outside the model are ``[class, x1, y1, x2, y2]`` rows normalised to ``[0, 1]``
(:mod:`headstart.data.detection`); detections are ``(N, D, 6)`` rows
``[x1, y1, x2, y2, score, class]`` (normalised, most confident first), padded with
``score 0, class -1`` to :data:`DETECTIONS_PER_IMAGE`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, box_iou
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from headstart.errors import ModelError
from headstart.models.backbone import Backbone, Stage
from headstart.models.dense_heads import PROBE_SIZE, stage_shapes
from headstart.models.preprocessing import Preprocessing

#: detections kept per image (the padded length of the output)
DETECTIONS_PER_IMAGE = 100
#: the loss terms, in the order :meth:`DetectionBackbone.forward` returns them
LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")
#: score a detection needs to count in the per-batch F1 (``val_acc``) and the report
SCORE_THRESHOLD = 0.5


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


class DetectionHead(nn.Module):
    """FPN + RPN + RoI heads over the maps of ``levels`` (see module doc)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        fpn_channels: int = 128,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.out_features = num_classes
        # GroupNorm after the pyramid's convs: stages of different backbones differ in scale
        # (EfficientNet-Lite0's std 3-7, MobileNetV2's 0.7-0.9 on the demo images); without it
        # Lite0 feature-extract reached val mAP@0.5 0.14, with it 0.7+ (docs/detection.md)
        self.fpn = FeaturePyramidNetwork(
            list(in_channels), fpn_channels, LastLevelMaxPool(),
            norm_layer=lambda c: nn.GroupNorm(32, c),
        )  # fmt: skip
        names = [str(i) for i in range(len(in_channels))]
        # two anchor sizes per level (2x and 4x its stride; the pooled level doubles the
        # coarsest), three aspect ratios: 6 anchors at each location of each level
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
            positive_fraction=0.25, bbox_reg_weights=None, score_thresh=0.05, nms_thresh=0.5,
            detections_per_img=DETECTIONS_PER_IMAGE,
        )  # fmt: skip

    @contextmanager
    def computing_losses(self) -> Iterator[None]:
        """RPN and RoI heads in loss mode (their ``training`` flag only: the head has no
        BatchNorm or dropout, so validation losses change nothing)."""
        saved = self.rpn.training, self.roi_heads.training
        self.rpn.training = self.roi_heads.training = True
        try:
            yield
        finally:
            self.rpn.training, self.roi_heads.training = saved

    def losses(
        self,
        images: ImageList,
        maps: dict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """The four Faster R-CNN loss terms (:data:`LOSS_TERMS`) as one vector."""
        with self.computing_losses():
            proposals, rpn_losses = self.rpn(images, maps, targets)
            _, roi_losses = self.roi_heads(maps, proposals, images.image_sizes, targets)
        found = {**rpn_losses, **roi_losses}
        return torch.stack([found[k] for k in LOSS_TERMS])

    def detect(self, images: ImageList, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """Padded, normalised detections ``(N, D, 6)`` (see module doc)."""
        saved = self.rpn.training, self.roi_heads.training
        self.rpn.training = self.roi_heads.training = False
        try:
            proposals, _ = self.rpn(images, maps)
            found, _ = self.roi_heads(maps, proposals, images.image_sizes)
        finally:
            self.rpn.training, self.roi_heads.training = saved
        h, w = images.tensors.shape[-2:]
        scale = images.tensors.new_tensor([w, h, w, h])
        out = images.tensors.new_zeros((len(found), DETECTIONS_PER_IMAGE, 6))
        out[:, :, 5] = -1
        for i, d in enumerate(found):
            n = min(len(d["boxes"]), DETECTIONS_PER_IMAGE)
            out[i, :n, :4] = d["boxes"][:n] / scale
            out[i, :n, 4] = d["scores"][:n]
            out[i, :n, 5] = d["labels"][:n].to(out.dtype) - 1
        return out


def target_dicts(targets: torch.Tensor, height: int, width: int) -> list[dict[str, torch.Tensor]]:
    """Padded normalised ``(N, M, 5)`` box rows -> torchvision's per-image target dicts
    (pixel boxes, labels 1..K; 0 is the background)."""
    scale = targets.new_tensor([width, height, width, height])
    out = []
    for rows in targets:
        real = rows[rows[:, 0] >= 0]
        out.append({"boxes": real[:, 1:] * scale, "labels": real[:, 0].long() + 1})
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
    """A backbone with a Faster R-CNN FPN head (see module doc). ``forward(x)`` ->
    detections ``(N, D, 6)``; ``forward(x, targets)`` -> the loss terms (``(4,)``) in training
    mode, and in eval mode those followed by the batch's detection F1 (``(5,)``)."""

    def __init__(
        self, body: nn.Module, stages: Sequence[Stage], num_features: int,
        preprocessing: Preprocessing, spec: str, weights_label: str, num_classes: int,
    ) -> None:  # fmt: skip
        super().__init__(
            body, nn.Identity(), stages, num_features, preprocessing, spec, weights_label
        )
        shapes = stage_shapes(self)
        picked = pick_levels(shapes)
        self.level_stages = [i for i, _ in picked]
        self.head = DetectionHead(
            [shapes[i][1] for i in self.level_stages], [s for _, s in picked], num_classes
        )

    def stage_maps(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The FPN's inputs: the picked stages' maps, keyed ``"0"``, ``"1"``, ..."""
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
    def detector(self) -> DetectionHead:
        """``head``, typed."""
        assert isinstance(self.head, DetectionHead)
        return self.head

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        head = self.detector
        maps: dict[str, torch.Tensor] = head.fpn(self.stage_maps(x))
        h, w = int(x.shape[-2]), int(x.shape[-1])
        images = ImageList(x, [(h, w)] * len(x))
        if targets is None:
            return head.detect(images, maps)
        losses: torch.Tensor = head.losses(images, maps, target_dicts(targets, h, w))
        if self.training:
            return losses
        f1 = detection_f1(head.detect(images, maps), targets).to(losses)
        return torch.cat([losses, f1.view(1)])

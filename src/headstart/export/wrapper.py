"""The exported computations, one per modality: uint8 NHWC images -> class probabilities
(preprocessing inside); token ids (+ masks) -> class probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from headstart.models.backbone import Backbone


class ImagesToProbabilities(nn.Module):
    """``(N, H, W, 3) uint8`` RGB images of any size -> ``(N, C)`` probabilities and logits.

    Inside: scale to [0, 1]; bilinear resize to ``resize x resize``; centre crop ``crop``;
    normalise with the weights' mean/std; the model; softmax. For square images this matches
    the training-time eval transform (shorter side to ``resize``, centre crop); other aspect
    ratios are resized to a square first.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        p = backbone.preprocessing
        self.model = backbone
        self.resize, self.crop = int(p.resize), int(p.crop)
        self.register_buffer("mean", torch.tensor(p.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(p.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities, logits)``."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        off = (self.resize - self.crop) // 2
        x = x[:, :, off : off + self.crop, off : off + self.crop]
        x = (x - self.mean) / self.std
        logits = self.model(x)
        return logits.softmax(dim=1), logits


class TokensToProbabilities(nn.Module):
    """Token ids and masks, ``int64 (N, L)`` each, positionally in ``names`` order (the text
    backbone's ``model_inputs``) -> ``(N, C)`` probabilities and logits."""

    def __init__(self, backbone: Backbone, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = backbone
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities, logits)``."""
        logits = self.model(dict(zip(self.names, tensors, strict=True)))
        return logits.softmax(dim=1), logits

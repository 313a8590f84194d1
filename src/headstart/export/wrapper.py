"""The exported computations, one per modality: uint8 NHWC images -> class probabilities
(preprocessing inside); token ids (+ masks) -> class probabilities."""

from __future__ import annotations

import torch
from torch import nn

from headstart.modalities.image import pixels_to_input
from headstart.models.backbone import Backbone
from headstart.tasks import TASKS, Task


class ImagesToProbabilities(nn.Module):
    """``(N, crop, crop, 3) uint8`` RGB images -> ``(N, C)`` probabilities and logits.

    The images come from :func:`headstart.files.load_model_image` (decode, shorter side to
    ``resize`` with the weights' interpolation and antialiasing, centre crop ``crop``: the
    evaluation transform's geometry, without torch); inside: scale to [0, 1] and normalise with
    the weights' mean/std (:func:`~headstart.modalities.image.pixels_to_input`, as eager
    ``predict`` does), the model, and the task's probabilities (softmax; multi-label: one
    sigmoid per label; multi-task: a softmax per task). No resizing happens in the graph.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: Backbone, task: Task | None = None) -> None:
        super().__init__()
        p = backbone.preprocessing
        self.task = task or TASKS["single-label"]
        self.model = backbone
        self.crop = int(p.crop)
        self.register_buffer("mean", torch.tensor(p.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(p.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities, logits)``."""
        logits = self.model(pixels_to_input(images, self.mean, self.std))
        return self.task.probabilities(logits), logits


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

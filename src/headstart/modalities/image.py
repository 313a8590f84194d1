"""Images: class folders / CSVs of image files, preprocessing from the weights' metadata."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from headstart.config import TrainConfig
from headstart.console import console
from headstart.data import build_eval_transform, build_train_transform
from headstart.data.datasets import ImageDataset
from headstart.data.detection import DetectionDataset, DetectionSample, is_detection_config
from headstart.data.folders import Sample
from headstart.data.image_size import auto_image_size
from headstart.data.segmentation import (
    SegmentationDataset,
    SegmentationSample,
    is_segmentation_config,
)
from headstart.files import collect_images, load_model_image, reading_image
from headstart.modalities.base import Modality, SourceReader
from headstart.models import Backbone, Preprocessing, create_backbone


def pixels_to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``(N, H, W, 3)`` from :func:`~headstart.files.load_model_image` -> the model's
    float ``(N, 3, H, W)``: scaled to [0, 1], normalised with ``mean``/``std`` (``(1, 3, 1, 1)``).
    Eager ``predict`` and the exported graph both run this (the same numbers as the evaluation
    transform's ``ToDtype`` + ``Normalize``)."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    return (x - mean) / std


class ImageModality(Modality):
    """RGB images of any size (decoded once, large JPEGs at reduced scale)."""

    name: ClassVar[str] = "image"
    unit: ClassVar[str] = "images"
    augmentable: ClassVar[bool] = True

    def check_config(self, config: TrainConfig) -> None:
        return None

    def reader(self, config: TrainConfig) -> SourceReader | None:
        return None  # load_splits' default: class folders or a path,label CSV

    def build_backbone(
        self,
        config: TrainConfig,
        num_classes: int,
        *,
        train: Sequence[Sample] = (),
        weights: str | None = None,
        head: str | None = None,
        label_embeddings: torch.Tensor | None = None,
    ) -> Backbone:
        default_head = (
            "dense"
            if is_segmentation_config(config)
            else "detection"
            if is_detection_config(config)
            else config.head
        )

        def build(size: int | None) -> Backbone:
            return create_backbone(
                config.model, num_classes,
                weights=config.weights if weights is None else weights,
                head=default_head if head is None else head,
                head_hidden=config.head_hidden, head_dropout=config.head_dropout,
                image_size=size, label_embeddings=label_embeddings, detector=config.detector,
                seg_head=config.seg_head,
            )  # fmt: skip

        if config.image_size != "auto":
            return build(config.image_size)
        backbone = build(None)
        if not train:  # a saved run: its checkpoint restores the size it resolved to
            return backbone
        size, reason = auto_image_size(
            [s.path for s in train], backbone.preprocessing.crop, seed=config.seed
        )
        console.print(f"image size auto -> {size}px ({reason})")
        return backbone if size == backbone.preprocessing.crop else build(size)

    def restore(self, backbone: Backbone, saved: dict[str, Any]) -> None:
        if saved.get("preprocessing"):
            backbone.preprocessing = Preprocessing.from_dict(saved["preprocessing"])

    def dataset(
        self,
        backbone: Backbone,
        samples: Sequence[Sample],
        class_to_idx: dict[str, int],
        *,
        augment: str = "none",
        seed: int = 0,
        flip: bool = True,
    ) -> Dataset[Any]:
        pre = backbone.preprocessing
        if samples and isinstance(samples[0], SegmentationSample):  # image + mask pairs
            return SegmentationDataset(samples, pre, augment, seed=seed, flip=flip)
        if samples and isinstance(samples[0], DetectionSample):  # images + boxes
            return DetectionDataset(samples, pre, augment, seed=seed, flip=flip)
        tf = (
            build_eval_transform(pre)
            if augment == "none"
            else build_train_transform(pre, augment, flip)
        )
        return ImageDataset(list(samples), class_to_idx, tf, pre.resize, seed=seed)

    def describe_input(self, backbone: Backbone) -> str:
        return f"{backbone.preprocessing.crop}px"

    def prediction_inputs(self, inputs: Sequence[str | Path]) -> list[tuple[str, Any]]:
        return [(str(f), f) for f in collect_images(list(inputs))]

    def encode(self, backbone: Backbone, items: Sequence[tuple[str, Any]]) -> torch.Tensor:
        """The images through the one shared decoder (as the exported model's predictor and
        ``serve`` read them), then :func:`pixels_to_input`."""
        pre = backbone.preprocessing
        batch = []
        for name, path in items:
            with reading_image(name, "Replace the file or leave it out of the inputs."):
                batch.append(load_model_image(path, pre.resize, pre.crop, pre.interpolation))
        mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
        return pixels_to_input(torch.from_numpy(np.stack(batch)), mean, std)

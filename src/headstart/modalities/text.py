"""Texts: CSV columns or class folders of .txt files, tokenised with the model's tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from headstart.config import TrainConfig
from headstart.data.folders import Sample
from headstart.data.text import (
    TextDataset,
    check_text_config,
    is_text_task,
    sample_text,
    text_reader,
    tokenize,
)
from headstart.modalities.base import Modality, SourceReader
from headstart.models import Backbone, create_backbone
from headstart.text_files import snippet, texts_from_inputs


def is_text_config(config: TrainConfig) -> bool:
    """Whether ``config`` describes a text run (a text model; ``--text-column`` needs one)."""
    return is_text_task(config)


class TextModality(Modality):
    """Token ids of a Hugging Face tokenizer; batches padded per batch (dynamic padding)."""

    name: ClassVar[str] = "text"
    unit: ClassVar[str] = "texts"

    def check_config(self, config: TrainConfig) -> None:
        check_text_config(config)

    def reader(self, config: TrainConfig) -> SourceReader | None:
        return text_reader(config.text_column or "text", config.label_column)

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
        return create_backbone(
            config.model, num_classes,
            weights=config.weights if weights is None else weights,
            head=config.head if head is None else head,
            head_hidden=config.head_hidden, head_dropout=config.head_dropout,
            label_embeddings=label_embeddings, pooling=config.pooling,
            max_length=config.max_length,
        )  # fmt: skip

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
        return TextDataset(samples, class_to_idx, backbone.preprocessing)  # type: ignore[arg-type]

    def describe_input(self, backbone: Backbone) -> str:
        pre: Any = backbone.preprocessing
        return f"<= {pre.max_length} tokens, {pre.pooling} pooling"

    def display(self, samples: Sequence[Sample]) -> list[str] | None:
        return [sample_text(s) for s in samples]

    def prediction_inputs(self, inputs: Sequence[str | Path]) -> list[tuple[str, Any]]:
        return [
            (name if name != text else snippet(text), text)
            for name, text in texts_from_inputs(inputs)
        ]

    def encode(self, backbone: Backbone, items: Sequence[tuple[str, Any]]) -> Any:
        encodings = tokenize(backbone.preprocessing, [t for _, t in items])  # type: ignore[arg-type]
        collate = backbone.collate_fn
        assert collate is not None
        batch, _ = collate([(e, 0) for e in encodings])
        return batch

"""Modalities: what kind of input a run reads (images, texts; audio would be one more module).

A :class:`~headstart.modalities.base.Modality` owns everything that depends on the input kind:
which data reader a config uses, how a sample becomes a model input (datasets, preprocessing from
the weights), building the backbone from a config (the one config -> backbone path), how inputs
are described in logs and shown in the report, and how raw prediction inputs (files, strings)
are encoded. Training, evaluation and prediction call these methods and never ask "is this
text?". The export input signature of a modality lives in :mod:`headstart.export.signatures`
(export sits above this layer), keyed by :attr:`Modality.name`.

Example::

    modality = modality_for(config)          # from the model spec / --text-column
    splits = splits_for(config)              # that modality's reader, validated splits
    backbone = modality.build_backbone(config, len(splits.classes), train=splits.train)
"""

from __future__ import annotations

from headstart.config import TrainConfig
from headstart.data.detection import is_detection_config, load_detection_splits
from headstart.data.folders import DataSplits, load_splits
from headstart.data.segmentation import is_segmentation_config, load_segmentation_splits
from headstart.modalities.base import Modality
from headstart.modalities.image import ImageModality
from headstart.modalities.text import TextModality, is_text_config

MODALITIES: dict[str, Modality] = {m.name: m for m in (ImageModality(), TextModality())}


def modality_for(config: TrainConfig) -> Modality:
    """The modality a training config describes (a text model or ``--text-column`` -> text)."""
    return MODALITIES["text" if is_text_config(config) else "image"]


def modality_named(name: str) -> Modality:
    """The modality called ``name`` (``Backbone.modality``, export metadata)."""
    return MODALITIES[name]


def splits_for(config: TrainConfig) -> DataSplits:
    """The splits a training config describes (the same files, split and class map every time),
    read by its modality's reader after the modality checked the config."""
    modality = modality_for(config)
    modality.check_config(config)
    if is_segmentation_config(config):  # images/ + masks/ + classes.txt (docs/segmentation.md)
        return load_segmentation_splits(
            config.data, config.val, config.test, val_fraction=config.val_fraction,
            seed=config.seed,
        )  # fmt: skip
    if is_detection_config(config):  # COCO files (docs/detection.md)
        return load_detection_splits(
            config.data, config.val, config.test, images=config.images,
            val_fraction=config.val_fraction, seed=config.seed,
        )  # fmt: skip
    return load_splits(
        config.data, config.val, config.test,
        val_fraction=config.val_fraction, seed=config.seed, strict=config.strict,
        reader=modality.reader(config), task=config.task, label_sep=config.label_sep,
        label_columns=config.label_columns,
    )  # fmt: skip


__all__ = [
    "MODALITIES",
    "ImageModality",
    "Modality",
    "TextModality",
    "modality_for",
    "modality_named",
    "splits_for",
]

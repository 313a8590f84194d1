"""The modality interface (see :mod:`headstart.modalities`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from headstart.config import TrainConfig
from headstart.data.folders import Sample
from headstart.models import Backbone

#: ``read(source, skipped, strict) -> samples``: a folder/CSV into labelled samples
SourceReader = Callable[[str | Path, Counter[str], bool], list[Sample]]


class Modality(ABC):
    """One kind of input. Subclasses are stateless; one instance each lives in
    :data:`headstart.modalities.MODALITIES`."""

    name: ClassVar[str]
    #: pixel-level batch augmentations (MixUp/CutMix) and augmented cached views apply
    augmentable: ClassVar[bool] = False
    #: what one sample is called in messages ("images", "texts")
    unit: ClassVar[str] = "samples"

    @abstractmethod
    def check_config(self, config: TrainConfig) -> None:
        """Reject settings that do not apply to this modality, naming the option."""

    @abstractmethod
    def reader(self, config: TrainConfig) -> SourceReader | None:
        """The source reader for ``config`` (``None``: the default image folder/CSV reader)."""

    @abstractmethod
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
        """The backbone ``config`` describes with a ``num_classes`` head: the one path from a
        config to a model (training, loading a run, pretext training). ``weights``/``head``
        override the config's; ``train`` resolves data-dependent settings (``--image-size
        auto``) — without it they fall back to the weights' own."""

    def restore(self, backbone: Backbone, saved: dict[str, Any]) -> None:  # noqa: B027
        """Restore modality state saved in a checkpoint's ``headstart`` block (e.g. the
        preprocessing an ``auto`` image size resolved to). Default: nothing to restore."""

    @abstractmethod
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
        """``(input, class index)`` items for ``samples`` as ``backbone`` takes them;
        ``augment`` names an augmentation preset (ignored where the modality has none), ``flip``
        whether it may flip horizontally.
        Accepts the ``(index, epoch)`` keys of the epoch samplers."""

    @abstractmethod
    def describe_input(self, backbone: Backbone) -> str:
        """A few words on the model input for log lines (``224px``, ``<= 256 tokens``)."""

    def display(self, samples: Sequence[Sample]) -> list[str] | None:
        """What the report shows for each sample instead of an image (``None``: images)."""
        return None

    @abstractmethod
    def prediction_inputs(self, inputs: Sequence[str | Path]) -> list[tuple[str, Any]]:
        """``(name, item)`` per prediction input (image files found in folders, raw strings
        or .txt files); raises :class:`~headstart.errors.DataError` when there is nothing."""

    @abstractmethod
    def encode(self, backbone: Backbone, items: Sequence[tuple[str, Any]]) -> Any:
        """One model input batch for ``items`` from :meth:`prediction_inputs`."""

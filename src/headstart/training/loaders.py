"""Data loaders of a planned run: cached features (backbone frozen throughout) or inputs.

Both paths draw the same seeded batches (:class:`~headstart.data.samplers.EpochShuffleSampler`
keys ``(index, epoch)``), so a cached-feature run reproduces the slow path's head exactly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from headstart.config import TrainConfig
from headstart.console import console
from headstart.data import DataSplits
from headstart.data.datasets import IndexedTensors, ViewsDataset
from headstart.data.samplers import EpochBalancedSampler, EpochShuffleSampler
from headstart.modalities import Modality
from headstart.models import Backbone
from headstart.training.activations import ActivationRows, activation_sets
from headstart.training.features import FeatureSource
from headstart.training.plan import Plan


@dataclass
class Loaders:
    """What ``trainer.fit`` draws from, and what the summary evaluates on."""

    train: DataLoader[Any]
    val: DataLoader[Any]
    #: rows of the training set (augmented feature views included)
    rows: int
    #: validation features on the cached path (the summary evaluates the head on them)
    val_features: tuple[torch.Tensor, torch.Tensor] | None = None
    #: DataLoader settings of the input path (plugins build theirs alike)
    loader_kw: dict[str, Any] = field(default_factory=dict)
    #: validation activations on the cached-activation path (``plan.activations``)
    val_activations: ActivationRows | None = None

    @property
    def drop_last(self) -> bool:
        return self.train.drop_last


def drop_last_for(n: int, batch_size: int) -> bool:
    """Drop only a final batch of one sample (BatchNorm cannot train on it); same rule on the
    cached and the image path so both see identical batches."""
    return n > batch_size and n % batch_size == 1


def cached_feature_sets(
    config: TrainConfig,
    splits: DataSplits,
    backbone: Backbone,
    plan: Plan,
    modality: Modality,
    features: FeatureSource,
) -> tuple[Any, tuple[torch.Tensor, torch.Tensor], list[int]]:
    """``(train set, val features, train targets)`` on the cached-feature path; ``--feature-
    views N`` adds N-1 augmented views of each training image."""
    console.print(
        "backbone frozen for the whole run: computing features once (cached-feature path)"
    )
    idx, seed = splits.class_to_idx, config.seed
    spent: dict[str, tuple[bool, float]] = {}  # split -> (from the disk cache, seconds)

    def dataset(samples: list[Any], augment: str = "none") -> Any:
        return modality.dataset(
            backbone, samples, idx, augment=augment, seed=seed, flip=config.random_flips
        )

    def timed(split: str, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        t0, hits = time.perf_counter(), len(features.cache_hits)
        out = features(split, *args)
        spent[split] = (len(features.cache_hits) > hits, time.perf_counter() - t0)
        return out

    train = plan.train_features or timed("train", dataset(splits.train), splits.train)
    if config.feature_views > 1:
        aug = dataset(splits.train, config.augment)
        views = ViewsDataset(dataset(splits.train), aug, config.feature_views)
        extra_x, extra_y = timed("train-views", views, splits.train, config.feature_views)
        n = len(splits.train)  # view 0 (un-augmented) is already in the train features
        train = (torch.cat([train[0], extra_x[n:]]), torch.cat([train[1], extra_y[n:]]))
    va_x, va_y = timed("val", dataset(splits.val), splits.val)
    console.print(
        f"features: {len(train[0])} train + {len(va_x)} val -> {va_x.shape[1]}-d, "
        f"{feature_sources(spent, plan.train_features is not None, features.cache_hits)}"
    )
    return IndexedTensors(*train), (va_x, va_y), train[1].tolist()


def feature_sources(
    spent: dict[str, tuple[bool, float]], train_from_plan: bool, hits: list[str]
) -> str:
    """Where each split's features came from and how long that took here: "from the disk
    cache (train, val) in 0.4s", "extracted (val) in 12.1s". Train features the plan already
    fetched (probe start, auto) are named with their source, untimed: that time went to the
    plan (and to its probe fit), not to feature extraction."""
    parts = []
    if train_from_plan:
        how = "from the disk cache" if "train" in hits else "extracted"
        parts.append(f"{how} (train) while planning")
    for cached, label in ((True, "from the disk cache"), (False, "extracted")):
        names = [s for s, (hit, _) in spent.items() if hit is cached]
        if names:
            seconds = sum(spent[s][1] for s in names)
            parts.append(f"{label} ({', '.join(names)}) in {seconds:.1f}s")
    return "; ".join(parts)


def activation_data(
    config: TrainConfig, splits: DataSplits, backbone: Backbone, plan: Plan, modality: Modality
) -> tuple[ActivationRows, ActivationRows, list[int]] | None:
    """The stored activations of ``plan.activations`` (train, val, train targets), or ``None``;
    a store that cannot be written (disk full) turns the plan back to the image path."""
    if plan.activations is None or plan.cached_features:
        return None
    try:
        return activation_sets(config, splits, backbone, plan.activations, modality, 0)
    except OSError as err:
        console.print(f"cached activations: off, training on images (cannot store them: {err})")
        plan.activations = None
        return None


def image_sets(
    config: TrainConfig, splits: DataSplits, backbone: Backbone, plan: Plan, modality: Modality
) -> tuple[Any, DataLoader[Any], dict[str, Any]]:
    """``(train set, val loader, loader settings)`` of the input path (images, texts)."""
    backbone.to(memory_format=torch.channels_last)  # ~20 % faster conv training on CPU
    if config.compile:
        backbone.body.compile()  # in place: state_dict keys unchanged
    idx, seed = splits.class_to_idx, config.seed
    train_set = modality.dataset(
        backbone, splits.train, idx, augment=config.augment, seed=seed, flip=config.random_flips
    )
    workers = plan.num_workers
    loader_kw: dict[str, Any] = {
        "collate_fn": backbone.collate_fn,  # text: dynamic padding
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    val_set = modality.dataset(backbone, splits.val, idx, seed=seed)
    return train_set, DataLoader(val_set, batch_size=config.batch_size, **loader_kw), loader_kw


def train_loader(
    config: TrainConfig, train_set: Any, targets: list[Any], loader_kw: dict[str, Any]
) -> DataLoader[Any]:
    """The seeded training loader: one row per training item (augmented views included), the
    sampler's ``(index, epoch)`` keys fixing every epoch's batches."""
    sampler: Any = (
        EpochBalancedSampler(targets, config.seed)
        if config.sampler == "balanced"
        else EpochShuffleSampler(len(targets), config.seed)
    )
    return DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=drop_last_for(len(targets), config.batch_size),
        generator=torch.Generator().manual_seed(config.seed),
        **loader_kw,
    )


def make_loaders(
    config: TrainConfig,
    splits: DataSplits,
    backbone: Backbone,
    plan: Plan,
    modality: Modality,
    features: FeatureSource,
    *,
    train: bool = True,
) -> Loaders:
    """Training and validation loaders for ``plan`` (see module doc). ``train=False``: the
    loaders of a run that only evaluates (auto adopted its winner's checkpoints): images
    instead of stored activations, which would cost a pass over every training view."""
    targets: list[Any] = (  # only counted (and, single-label, balanced) by the sampler
        splits.label_matrix("train") if splits.multi_label
        else splits.task_rows("train") if splits.tasks else splits.targets("train")
    )  # fmt: skip
    val_features = None
    loader_kw: dict[str, Any] = {}
    activations = activation_data(config, splits, backbone, plan, modality) if train else None
    if plan.cached_features:
        train_set, val_features, targets = cached_feature_sets(
            config, splits, backbone, plan, modality, features
        )
        val_loader: DataLoader[Any] = DataLoader(TensorDataset(*val_features), batch_size=256)
    elif activations is not None:
        train_set, val_activations, targets = activations
        backbone.to(memory_format=torch.channels_last)
        val_loader = DataLoader(val_activations, batch_size=config.batch_size)
        until = plan.activations.until if plan.activations is not None else None
        if until is not None:  # stored rows first, images from epoch `until` on
            image_train, image_val, loader_kw = image_sets(config, splits, backbone, plan, modality)
            train_set = PhasedRows(train_set, image_train, until)
            val_loader = DataLoader(
                PhasedRows(val_activations, image_val.dataset, until),
                batch_size=config.batch_size, sampler=EpochKeys(len(val_activations)),
                **loader_kw,
            )  # fmt: skip
    else:
        train_set, val_loader, loader_kw = image_sets(config, splits, backbone, plan, modality)
    return Loaders(
        train_loader(config, train_set, targets, loader_kw), val_loader, len(targets),
        val_features, loader_kw, activations[1] if activations is not None else None,
    )  # fmt: skip


class PhasedRows(Dataset[Any]):
    """Item ``i`` of ``first`` (stored activations) for keys of epochs before ``until``, of
    ``then`` (images) from it on: one loader serves both phases of a gradual run, so the
    batches follow the sampler's ``(index, epoch)`` keys in either phase (resume included) and
    workers are not restarted or re-primed when images take over."""

    def __init__(self, first: Any, then: Any, until: int) -> None:
        self.first, self.then, self.until = first, then, until

    def __len__(self) -> int:
        return len(self.first)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return (self.first if key[1] < self.until else self.then)[key]


class EpochKeys(Sampler[tuple[int, int]]):
    """``(index, epoch)`` in order: validation of a :class:`PhasedRows` set (Lightning calls
    ``set_epoch`` on validation samplers too, before each validation run of a fit)."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter((i, self.epoch) for i in range(self.n))

    def __len__(self) -> int:
        return self.n

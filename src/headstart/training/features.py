"""Frozen-backbone fast path: one forward pass per image, then the head trains on tensors."""

from __future__ import annotations

from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from headstart.devices import Compute, placed, resolve_compute
from headstart.models.backbone import Backbone
from headstart.models.weights_spec import is_random_init


def extract_features(
    backbone: Backbone,
    dataset: Dataset,  # type: ignore[type-arg]
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
    compute: Compute | None = None,
    description: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, targets)`` for every item of ``dataset``, in order, with the body in eval mode.

    Runs on ``compute`` (default: :func:`~headstart.devices.resolve_compute`'s ``auto``, the GPU
    when there is one; autocast for mixed precision) and returns float32 CPU tensors; the
    backbone goes back to its device afterwards. Uses channels_last memory format for
    convolutional bodies and shows a progress bar. The default batch keeps ``batch x crop^2``
    about constant on the CPU (16 at 224 px, 64 at 112 px): CPU throughput hardly grows with
    larger batches, peak memory does; on an accelerator it is 8 times that (128 at 224 px).
    """
    compute = compute or resolve_compute()
    if batch_size is None:
        crop = getattr(backbone.preprocessing, "crop", None)
        scale = 1 if compute.device.type == "cpu" else 8  # accelerators gain from larger batches
        base = round(16 * (224 / crop) ** 2) if crop else 32
        batch_size = int(min(128 * scale, max(8, base * scale)))
    was_training = backbone.training
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=backbone.collate_fn, pin_memory=compute.pin_memory,
    )  # fmt: skip
    try:
        with placed(backbone.eval(), compute):
            feats, targets = _extract(backbone, loader, len(dataset), compute, description)  # type: ignore[arg-type]
    finally:
        backbone.body.to(memory_format=torch.contiguous_format)
        backbone.train(was_training)
    # cat outside inference mode: the results are ordinary tensors usable with autograd
    return torch.cat(feats), torch.cat(targets)


def _extract(
    backbone: Backbone, loader: DataLoader, total: int, compute: Compute, description: str,  # type: ignore[type-arg]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
    """The body's flattened float32 CPU outputs and the targets of every batch of ``loader``
    (through :meth:`~headstart.models.Backbone.inference_body`: BatchNorm folded)."""
    backbone.body.to(memory_format=torch.channels_last)
    body = backbone.inference_body()
    feats: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for x, y in loader:
            with torch.inference_mode(), compute.autocast():
                x = compute.to(x)  # text: a dict of token tensors
                if isinstance(x, torch.Tensor):
                    x = x.contiguous(memory_format=torch.channels_last)
                f = body(x)
                f = (f.flatten(1) if f.dim() > 2 else f).float().cpu()
            feats.append(f)
            targets.append(torch.as_tensor(y))
            progress.advance(task, len(y))
    return feats, targets


def features_for(
    backbone: Backbone,
    dataset: Any,
    samples: list[Any],
    class_to_idx: dict[str, int],
    *,
    split: str,
    seed: int,
    views: int = 1,
    augment: str | None = None,
    use_disk_cache: bool = True,
    num_workers: int = 0,
    compute: Compute | None = None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Features of ``dataset`` (whose items are ``samples``), from the disk cache when possible,
    else computed on ``compute`` (default: ``auto``, the GPU when there is one).

    The cache key covers the split name, the number of views and, where they change the
    features, the augmentation preset (views > 1), the seed (random weights or views > 1) and
    the autocast dtype (mixed precision). Returns ``(features, targets, cache_hit)``.
    """
    from headstart.training import feature_cache

    compute = compute or resolve_compute()
    key = None
    if use_disk_cache:
        key = features_key(backbone, samples, class_to_idx, split, seed, views, augment, compute)
        hit = feature_cache.load_cached(key)
        if hit is not None:
            return hit[0], hit[1], True
    description = f"{split} features"
    x, y = extract_features(
        backbone, dataset, num_workers=num_workers, compute=compute, description=description
    )
    if key is not None:
        feature_cache.store(key, x, y)
    return x, y, False


def features_key(
    backbone: Backbone, samples: list[Any], class_to_idx: dict[str, int], split: str, seed: int,
    views: int, augment: str | None, compute: Compute,
) -> str:  # fmt: skip
    """The disk-cache key of :func:`features_for`: the split name, the number of views and,
    where they change the features, the augmentation preset (views > 1), the seed (random
    weights or views > 1) and the autocast dtype (mixed precision)."""
    from headstart.training import feature_cache

    seeded = is_random_init(backbone.weights_label) or views > 1
    extra: dict[str, Any] = {"split": split, "views": views,
             "augment": augment if views > 1 else None, "seed": seed if seeded else None}  # fmt: skip
    if compute.autocast_dtype is not None:  # float32 keys stay as they were
        extra["autocast"] = str(compute.autocast_dtype)
    return feature_cache.feature_key(backbone, samples, class_to_idx, extra)


class FeatureSource:
    """Cached features of a run's splits: :func:`features_for` with the run's backbone, class
    map and settings bound, remembering which splits came from the disk cache."""

    def __init__(
        self,
        backbone: Backbone,
        class_to_idx: dict[str, int],
        *,
        seed: int,
        augment: str,
        use_disk_cache: bool,
        num_workers: int,
        compute: Compute | None = None,
    ) -> None:
        self.backbone, self.class_to_idx = backbone, class_to_idx
        self.compute = compute or resolve_compute()
        self.seed, self.augment = seed, augment
        self.use_disk_cache, self.num_workers = use_disk_cache, num_workers
        self.cache_hits: list[str] = []
        # un-augmented rows per sample, kept in memory (the auto search reuses them for the
        # subsets its candidates train on)
        self._rows: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}

    def remember(self, samples: list[Any], x: torch.Tensor, y: torch.Tensor) -> None:
        """Keep the un-augmented features of ``samples`` (rows of ``x``/``y``) in memory."""
        for s, xi, yi in zip(samples, x, y, strict=True):
            self._rows[s] = (xi, yi)

    def store(self, split: str, samples: list[Any], x: torch.Tensor, y: torch.Tensor) -> None:
        """Keep features of ``samples`` computed elsewhere (un-augmented, one view) in memory
        and, with the disk cache on, where :func:`features_for` looks them up."""
        self.remember(samples, x, y)
        if self.use_disk_cache:
            from headstart.training import feature_cache

            key = features_key(
                self.backbone, samples, self.class_to_idx, split, self.seed, 1, self.augment,
                self.compute,
            )  # fmt: skip
            feature_cache.store(key, x, y)

    def lookup(self, samples: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Remembered features of ``samples``, stacked (every sample must be remembered)."""
        xs, ys = zip(*(self._rows[s] for s in samples), strict=True)
        return torch.stack(xs), torch.stack(ys)

    def __call__(
        self,
        split: str,
        dataset: Any,
        samples: list[Any],
        views: int = 1,
        *,
        plain: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, targets)`` of ``dataset`` (whose items are ``samples``): remembered
        rows (``plain``: the dataset is un-augmented), the disk cache, or one backbone pass."""
        if plain and views == 1 and samples and all(s in self._rows for s in samples):
            return self.lookup(samples)
        x, y, hit = features_for(
            self.backbone, dataset, samples, self.class_to_idx, split=split, seed=self.seed,
            views=views, augment=self.augment, use_disk_cache=self.use_disk_cache,
            num_workers=self.num_workers, compute=self.compute,
        )  # fmt: skip
        if hit:
            self.cache_hits.append(split)
        return x, y

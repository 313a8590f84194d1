"""Cached activations: partial fine-tuning at cached-feature speed.

When the first ``k`` stages stay frozen for the whole run (``partial``; ``gradual`` or ``auto``
candidates whose schedule never reaches them), they compute the same function every epoch. The
run then computes their output once per image and view (:meth:`Backbone.forward_to`), stores it
as float16 in a memory-mapped ``.npy`` file, and trains stages ``k..`` and the head on it
(:meth:`Backbone.forward_from`). A gradual run whose last step unfreezes every stage does the
same for the epochs before that step (``ActivationPlan.until``): the cut is the prefix frozen in
all of them, the stages that join in between run on the stored rows, and from epoch ``until``
the run trains on images (:class:`~headstart.training.loaders.PhasedRows`).

* The decision (:func:`plan_activations`) is the plan's: the cut ``k`` is the number of leading
  stages frozen in every epoch; the body must split there (:mod:`headstart.models.split`, checked
  numerically), otherwise the run trains on images and says why. The store's size is
  ``rows x bytes per image`` (``rows`` = train images x ``--feature-views`` + val images); above
  ``--cache-max-gb``, or above the free disk space, the run trains on images.
* The stored rows (:func:`activation_sets`) are keyed like the feature cache (weights,
  preprocessing, every image's path/size/mtime/label, views, augmentation, seed where it
  matters) plus the cut, so a second run with the same frozen prefix reads them back.
* Training draws the same seeded batches as the image path; the trainable stages run in train
  mode exactly as there (BatchNorm of trainable stages uses batch statistics and updates its
  running statistics unless ``--bn frozen``/``auto`` freezes them), so without augmentation the
  weights match the image path's up to the float16 rounding of the stored activations.
* Memory: one extraction batch plus the pages of the memory map the OS keeps; disk: the store.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from headstart.config import TrainConfig
from headstart.console import console
from headstart.data import DataSplits
from headstart.data.datasets import ViewsDataset
from headstart.devices import Compute, compute_for, placed, resolve_compute
from headstart.modalities import Modality
from headstart.models import Backbone
from headstart.models.split import SplitError
from headstart.models.weights_spec import is_random_init
from headstart.strategies import Strategy
from headstart.training import feature_cache

log = logging.getLogger(__name__)

#: how activations are stored (float16 halves the disk and page-cache footprint; the only
#: difference to the image path is this rounding: with float32 the weights match bit for bit)
STORE_DTYPE: Any = np.float16

#: fewest epochs before stage 0 joins for which a gradual run stores activations: one pass of
#: the prefix per image is what storing costs, and what each cached epoch saves
MIN_CACHED_EPOCHS = 2


@dataclass
class ActivationPlan:
    """The decision "train stages ``cut..`` on cached activations at the cut"."""

    cut: int
    #: the node whose output is stored (e.g. ``layer3``) and its per-image shape
    boundary: str
    shape: tuple[int, ...]
    #: rows stored: train images x views + val images
    rows: int
    views: int
    #: the epoch from which the run trains on images (a stage before the cut joins then:
    #: gradual unfreezing), or ``None`` when the prefix stays frozen for the whole run
    until: int | None = None

    @property
    def bytes_per_image(self) -> int:
        return math.prod(self.shape) * np.dtype(STORE_DTYPE).itemsize

    @property
    def total_bytes(self) -> int:
        return self.rows * self.bytes_per_image

    def to_dict(self) -> dict[str, Any]:
        return {
            "cut": self.cut, "boundary": self.boundary, "shape": list(self.shape),
            "bytes_per_image": self.bytes_per_image, "rows": self.rows, "views": self.views,
            "total_bytes": self.total_bytes, "until_epoch": self.until,
        }  # fmt: skip


def frozen_prefix(strategy: Strategy, num_stages: int, epochs: int) -> int:
    """How many leading stages are frozen in every one of ``epochs`` epochs."""
    firsts = [min(s) for e in range(epochs) if (s := strategy.trainable_stages(e, num_stages))]
    return min(firsts) if firsts else num_stages


def first_phase(strategy: Strategy, num_stages: int, epochs: int) -> tuple[int, int]:
    """``(cut, until)`` for a run whose first stage joins at epoch ``until`` (gradual
    unfreezing): the leading stages frozen in every epoch before ``until`` (at most all but the
    last, whose forward then runs on the stored rows in eval mode, exactly as on images).
    ``(0, 0)`` when stage 0 trains from the start."""
    cuts = [
        min(s) if (s := strategy.trainable_stages(e, num_stages)) else num_stages
        for e in range(epochs)
    ]
    until = cuts.index(0) if 0 in cuts else epochs
    return (min(min(cuts[:until]), num_stages - 1), until) if until else (0, 0)


def unavailable_reason(config: TrainConfig, strategy: Strategy) -> str | None:
    """Why a run's settings rule cached activations out (``None``: they don't)."""
    reasons = [
        (not config.cache_features, "--no-fast-path"),
        (not config.cache_activations, "--no-cache-activations"),
        (bool(config.mixup or config.cutmix), "MixUp/CutMix mix input images"),
        (config.strategy_dist == "fsdp", "FSDP shards the stage modules"),
        (strategy.name == "lora", "LoRA adds adapters inside the stages"),
    ]
    return next((why for off, why in reasons if off), None)


def activation_shape(backbone: Backbone, cut: int) -> tuple[int, ...]:
    """Per-image shape of the activations at the cut before stage ``cut`` (one blank image)."""
    crop = int(getattr(backbone.preprocessing, "crop", 224))
    device = next(backbone.body.parameters()).device
    was = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            a = backbone.forward_to(cut, torch.zeros(1, 3, crop, crop, device=device))
    finally:
        backbone.train(was)
    return tuple(a.shape[1:])


def plan_activations(
    config: TrainConfig, backbone: Backbone, strategy: Strategy, train_images: int, val_images: int
) -> ActivationPlan | None:
    """Cached activations for this run, or ``None`` (the image path; the reason is printed when
    a frozen prefix exists). Leaves the backbone's split cached for training."""
    n = len(backbone.stages)
    cut, until = frozen_prefix(strategy, n, config.epochs), None
    if cut >= n:  # everything frozen throughout: cached features
        return None
    if cut == 0:  # a stage-0-joins-later run (gradual): cache the epochs before it joins
        cut, until = first_phase(strategy, n, config.epochs)
        if until < MIN_CACHED_EPOCHS:  # one epoch: storing costs what it saves
            return None
    off = unavailable_reason(config, strategy)
    if off is None and until is not None and config.adapt != "none":
        off = (
            f"--adapt with stage {backbone.stages[0].name} joining at epoch {until}: the target "
            "batches would have to switch to images too"
        )
    if off is None and until is not None and config.feature_views > 1:
        off = (
            f"--feature-views {config.feature_views} would change the epoch length when "
            f"training moves to images at epoch {until}"
        )
    if off is None:
        try:
            split = backbone.split_at(cut)
            shape = activation_shape(backbone, cut)
        except SplitError as err:
            off = f"the body cannot be cut before {backbone.stages[cut].name}: {err}"
    if off is not None:
        console.print(f"cached activations: off, training on images ({off})")
        return None
    plan = ActivationPlan(
        cut, split.boundary, shape, train_images * config.feature_views + val_images,
        config.feature_views, until,
    )  # fmt: skip
    where = feature_cache.cache_dir() if config.disk_cache else Path(tempfile.gettempdir())
    free = _free_bytes(where)
    if plan.total_bytes > config.cache_max_gb * 1e9 or plan.total_bytes > free:
        limit = (
            f"--cache-max-gb {config.cache_max_gb:g}"
            if plan.total_bytes > config.cache_max_gb * 1e9
            else f"{free / 1e9:.1f} GB free in {where}"
        )
        console.print(
            f"cached activations: off, training on images (the store would take "
            f"{plan.total_bytes / 1e9:.2f} GB > {limit})"
        )
        return None
    return plan


def _free_bytes(path: Path) -> int:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


class ActivationRows(Dataset[tuple[torch.Tensor, Any]]):
    """Rows of a memory-mapped float16 array as float32 tensors; accepts the ``(index, epoch)``
    keys of :class:`~headstart.data.samplers.EpochShuffleSampler`."""

    def __init__(self, values: np.ndarray, targets: torch.Tensor) -> None:
        self.values, self.targets = values, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, Any]:
        i = key[0] if isinstance(key, tuple) else key
        x = torch.from_numpy(np.asarray(self.values[i], dtype=np.float32))
        # multi-label targets are multi-hot rows
        return x, self.targets[i] if self.targets.dim() > 1 else int(self.targets[i])


def pass_batch_size(backbone: Backbone) -> int:
    """Images a batch for a CPU pass of the body: ``batch x crop^2`` about constant (16 at 224
    px; CPU throughput hardly grows with larger batches, peak memory does)."""
    crop = getattr(backbone.preprocessing, "crop", None)
    return int(min(128, max(8, round(16 * (224 / crop) ** 2)))) if crop else 32


def extract_activations(
    backbone: Backbone, cut: int, dataset: Any, path: Path, *, num_workers: int = 0,
    description: str = "activations", compute: Compute | None = None,
) -> None:  # fmt: skip
    """Write the activations at the cut before ``cut`` for every item of ``dataset`` to
    ``path`` (float16 ``.npy``, in order) and the targets beside it, computed on ``compute``
    (default ``auto``); atomic (the activations file appears last)."""
    compute = compute or resolve_compute()
    batch_size = pass_batch_size(backbone)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=compute.pin_memory
    )
    with placed(backbone, compute):
        shape = activation_shape(backbone, cut)
        _write_activations(
            backbone, cut, loader, path, (len(dataset), *shape), compute, description
        )


def _write_activations(
    backbone: Backbone, cut: int, loader: DataLoader, path: Path, shape: tuple[int, ...],  # type: ignore[type-arg]
    compute: Compute, description: str,
) -> None:  # fmt: skip
    """:func:`extract_activations`' loop: ``loader``'s activations into a float16 ``.npy``
    memory map of ``shape``, then the targets, then the atomic rename to ``path``."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=STORE_DTYPE, shape=shape)
    targets: list[torch.Tensor] = []
    was = backbone.training
    backbone.eval()
    t0, i = time.perf_counter(), 0
    try:
        prefix = backbone.inference_prefix(cut)  # once, not per batch
        with torch.inference_mode(), console.status(description), compute.autocast():
            for x, y in loader:
                x = compute.to(x).contiguous(memory_format=torch.channels_last)
                a = prefix(x).float().cpu().numpy().astype(STORE_DTYPE)
                out[i : i + len(a)] = a
                targets.append(torch.as_tensor(y))
                i += len(a)
        out.flush()
        del out
        np.save(_targets_path(path), torch.cat(targets).numpy())
        os.replace(tmp, path)
    finally:
        backbone.train(was)
        if tmp.exists():
            tmp.unlink()
    log.info("%s: %d rows in %.1fs", description, i, time.perf_counter() - t0)


def features_with_activations(
    backbone: Backbone, cut: int, dataset: Any, *, num_workers: int = 0,
    compute: Compute | None = None, description: str = "features",
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:  # fmt: skip
    """``(features, targets, activations)`` of every item of ``dataset`` from one pass in eval
    mode: the pooled features :func:`~headstart.training.features.extract_features` gives
    (``forward_from(cut, forward_to(cut, x))`` is the body, checked numerically when the split
    is made) and the activations at the cut before ``cut`` as the store keeps them (float16).
    The frozen-backbone candidates of ``auto`` and a partial candidate cut there then share one
    forward pass per image instead of two."""
    compute = compute or resolve_compute()
    batch_size = pass_batch_size(backbone)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=compute.pin_memory
    )
    was = backbone.training
    feats: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    with placed(backbone, compute):
        shape = activation_shape(backbone, cut)
        acts = np.empty((len(dataset), *shape), dtype=STORE_DTYPE)
        backbone.eval()
        i = 0
        try:
            prefix = backbone.inference_prefix(cut)  # once, not per batch
            with console.status(description), compute.autocast(), torch.inference_mode():
                for x, y in loader:
                    x = compute.to(x).contiguous(memory_format=torch.channels_last)
                    a = prefix(x)
                    feats.append(backbone.forward_from(cut, a).float().cpu())
                    acts[i : i + len(a)] = a.float().cpu().numpy().astype(STORE_DTYPE)
                    targets.append(torch.as_tensor(y))
                    i += len(a)
        finally:
            backbone.train(was)
    # cat outside inference mode: ordinary tensors, usable with autograd (as extract_features)
    return torch.cat(feats), torch.cat(targets), acts


def store_activation_rows(path: Path, values: np.ndarray, targets: torch.Tensor) -> None:
    """Write ``values`` (rows at a cut) and ``targets`` as a store :func:`load_activations`
    reads; atomic (the activations file appears last)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, np.ascontiguousarray(values, dtype=STORE_DTYPE))
        np.save(_targets_path(path), targets.numpy())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _targets_path(path: Path) -> Path:
    return path.with_name(path.stem + ".targets.npy")


def load_activations(path: Path, rows: int, shape: tuple[int, ...]) -> ActivationRows | None:
    """The stored rows, memory-mapped (``None`` if missing, unreadable or of another shape)."""
    if not path.is_file() or not _targets_path(path).is_file():
        return None
    try:
        values = np.load(path, mmap_mode="c")  # copy-on-write: writable view, file untouched
        targets = torch.from_numpy(np.load(_targets_path(path)))
    except (OSError, ValueError) as err:
        log.warning("activation cache entry %s unreadable (%s); recomputing", path.name, err)
        return None
    if values.shape != (rows, *shape) or values.dtype != STORE_DTYPE or len(targets) != rows:
        return None
    return ActivationRows(values, targets)


def activation_key(
    backbone: Backbone, plan: ActivationPlan, samples: list[Any], class_to_idx: dict[str, int],
    split: str, seed: int, augment: str | None, views: int,
) -> str:  # fmt: skip
    seeded = is_random_init(backbone.weights_label) or views > 1
    extra = {
        "split": split, "views": views, "augment": augment if views > 1 else None,
        "seed": seed if seeded else None, "activations": [plan.cut, plan.boundary,
        list(plan.shape), np.dtype(STORE_DTYPE).name],
    }  # fmt: skip
    return feature_cache.feature_key(backbone, samples, class_to_idx, extra)


def activation_rows(
    backbone: Backbone, plan: ActivationPlan, dataset: Any, key: str, *, use_disk_cache: bool,
    num_workers: int, description: str, compute: Compute | None = None,
) -> tuple[ActivationRows, bool]:  # fmt: skip
    """``(rows, read from the disk cache)`` of ``dataset`` at the plan's cut."""
    rows = len(dataset)
    if use_disk_cache:
        path = feature_cache.cache_dir() / f"act-{key}.npy"
        hit = load_activations(path, rows, plan.shape)
        if hit is not None:
            return hit, True
        path.parent.mkdir(parents=True, exist_ok=True)
        extract_activations(backbone, plan.cut, dataset, path, num_workers=num_workers,
                            description=description, compute=compute)  # fmt: skip
        stored = load_activations(path, rows, plan.shape)
        assert stored is not None
        return stored, False
    folder = Path(tempfile.mkdtemp(prefix="headstart-act-"))
    path = folder / "act.npy"
    try:
        extract_activations(backbone, plan.cut, dataset, path, num_workers=num_workers,
                            description=description, compute=compute)  # fmt: skip
        stored = load_activations(path, rows, plan.shape)
        assert stored is not None
        return stored, False
    finally:  # the memory map keeps the data until the run ends; nothing is left on disk
        shutil.rmtree(folder, ignore_errors=True)


def activation_sets(
    config: TrainConfig, splits: DataSplits, backbone: Backbone, plan: ActivationPlan,
    modality: Modality, num_workers: int,
) -> tuple[ActivationRows, ActivationRows, list[int]]:  # fmt: skip
    """``(train rows, val rows, train targets)`` at the plan's cut; ``--feature-views N`` stores
    view 0 un-augmented and N-1 augmented views of each training image."""
    names = ", ".join(s.name for s in backbone.stages[: plan.cut])
    when = (
        "for the whole run"
        if plan.until is None
        else f"in epochs 0-{plan.until - 1} (from epoch {plan.until} training runs on images)"
    )
    console.print(
        f"stages {names} frozen {when}: storing their output at {plan.boundary} once "
        f"({'x'.join(map(str, plan.shape))} {np.dtype(STORE_DTYPE).name} = {plan.bytes_per_image / 1024:.1f} KiB per "
        f"image, {plan.total_bytes / 1e6:.1f} MB for {plan.rows} rows; cached-activation path)"
    )
    t0 = time.perf_counter()
    idx, seed = splits.class_to_idx, config.seed

    def dataset(samples: list[Any], augment: str = "none") -> Any:
        return modality.dataset(
            backbone, samples, idx, augment=augment, seed=seed, flip=config.random_flips
        )

    train: Any = dataset(splits.train)
    if config.feature_views > 1:
        aug = dataset(splits.train, config.augment)
        train = ViewsDataset(train, aug, config.feature_views)
    hits = []
    sets = []
    for split, ds, samples, views in (
        ("train", train, splits.train, config.feature_views),
        ("val", dataset(splits.val), splits.val, 1),
    ):
        key = activation_key(backbone, plan, samples, idx, split, seed, config.augment, views)
        rows, hit = activation_rows(
            backbone, plan, ds, key, use_disk_cache=config.disk_cache, num_workers=num_workers,
            description=f"{split} activations", compute=compute_for(config),
        )  # fmt: skip
        sets.append(rows)
        if hit:
            hits.append(split)
    source = f"from the disk cache ({', '.join(hits)})" if hits else "computed"
    console.print(
        f"activations: {len(sets[0])} train + {len(sets[1])} val rows, {source} in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    return sets[0], sets[1], sets[0].targets.tolist()


@torch.inference_mode()
def activation_logits(
    backbone: Backbone, cut: int, rows: ActivationRows, batch_size: int = 256,
    compute: Compute | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Logits and targets of ``backbone`` on stored activations at the cut before ``cut``,
    computed on ``compute`` (default ``auto``), returned as float32 CPU tensors."""
    compute = compute or resolve_compute()
    backbone.eval()
    outs, ys = [], []
    loader = DataLoader(rows, batch_size=batch_size, pin_memory=compute.pin_memory)
    with placed(backbone, compute), compute.autocast():
        for a, y in loader:
            a = compute.to(a)
            if a.dim() == 4:
                a = a.contiguous(memory_format=torch.channels_last)
            outs.append(backbone.head(backbone.forward_from(cut, a)).float().cpu())
            ys.append(torch.as_tensor(y))
    return torch.cat(outs), torch.cat(ys)

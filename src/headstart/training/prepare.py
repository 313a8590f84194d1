"""Set a run up for ``trainer.fit``: validated inputs, the plan, loaders, plug-ins and the
LightningModule — shared by training, the ``auto`` search and lr-find."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from rich.markup import escape
from rich.table import Table

from headstart.config import TrainConfig
from headstart.console import console
from headstart.data import DataSplits
from headstart.devices import compute_for
from headstart.errors import HeadstartError, TrainingDiverged
from headstart.modalities import Modality, modality_for, splits_for
from headstart.models import Backbone
from headstart.run import RunFolder
from headstart.tasks import task_for
from headstart.training.callbacks import NonFiniteLoss
from headstart.training.features import FeatureSource
from headstart.training.loaders import Loaders, make_loaders
from headstart.training.module import HeadstartModule
from headstart.training.plan import Plan, make_plan, num_workers_for
from headstart.training.plugins import PluginFactory, SetupContext, TrainingPlugin


@dataclass
class Inputs:
    """A run's validated data, its modality and the backbone built for it."""

    splits: DataSplits
    modality: Modality
    backbone: Backbone


@dataclass
class Prepared:
    """Everything between validated inputs and ``trainer.fit`` (shared by train and lr-find)."""

    plan: Plan
    loaders: Loaders
    module: HeadstartModule
    plugins: list[TrainingPlugin]
    features: FeatureSource

    @property
    def fit_loader(self) -> Any:
        loader: Any = self.loaders.train
        for plugin in self.plugins:
            loader = plugin.fit_loader(loader)
        return loader


def load_inputs(config: TrainConfig) -> Inputs:
    """Seed, load and validate the data (printing the class table), and build the model."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    modality = modality_for(config)
    splits = splits_for(config)
    console.print(class_table(splits))
    backbone = modality.build_backbone(config, len(splits.classes), train=splits.train)
    return Inputs(splits, modality, backbone)


def with_backbone(inputs: Inputs, config: TrainConfig) -> Inputs:
    """``inputs`` with the backbone ``config`` describes, seeded as :func:`load_inputs` seeds
    (the same head initialisation a run of that model gets)."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    n = len(inputs.splits.classes)
    backbone = inputs.modality.build_backbone(config, n, train=inputs.splits.train)
    return Inputs(inputs.splits, inputs.modality, backbone)


def augment_key(config: TrainConfig) -> str:
    """The augmentation as the feature cache keys augmented views."""
    return config.augment if config.random_flips else f"{config.augment}-noflip"


def prepare(
    config: TrainConfig,
    inputs: Inputs,
    plugins: Sequence[PluginFactory] = (),
    features: FeatureSource | None = None,
    *,
    train: bool = True,
) -> Prepared:
    """Plan the run, build its loaders, set up plug-ins and the LightningModule. ``features``
    shares remembered feature rows between runs on the same images (the auto search).
    ``train=False``: the run will not train (auto adopted its winner's checkpoints), so no
    activations are stored for it; the plan still says how the model was trained."""
    splits, modality, backbone = inputs.splits, inputs.modality, inputs.backbone
    if features is None:
        features = FeatureSource(
            backbone, splits.class_to_idx, seed=config.seed, augment=augment_key(config),
            use_disk_cache=config.disk_cache, num_workers=num_workers_for(config),
            compute=compute_for(config),
        )  # fmt: skip
    else:
        features.backbone, features.augment = backbone, augment_key(config)
        features.cache_hits = []
    plan = make_plan(config, splits, backbone, modality, features)
    if config.hflip is None:  # measured by the plan: the loaders and checkpoints get the answer
        config = config.replace(hflip=plan.hflip)
        features.augment = augment_key(config)
    loaders = make_loaders(config, splits, backbone, plan, modality, features, train=train)
    active = [p for p in (factory(config) for factory in plugins) if p is not None]
    ctx = SetupContext(
        config, backbone, plan.cached_features, plan.frozen_throughout, loaders.rows,
        loaders.drop_last, loaders.loader_kw, plan.num_workers, plan.activations,
    )  # fmt: skip
    for plugin in active:
        plugin.setup(ctx)
    hooks = [h for h in (p.step() for p in active) if h is not None]
    if len(hooks) > 1:
        raise HeadstartError("at most one training plug-in may replace the training step")
    module = HeadstartModule(
        backbone, plan.strategy, config, steps_per_epoch=len(loaders.train),
        inputs_are_features=plan.cached_features, class_weights=plan.class_weights,
        num_classes=len(splits.classes), train_hook=hooks[0] if hooks else None,
        task=task_for(config, splits.multi_label, splits.classes),
        activations_from=plan.activations.cut if plan.activations else None,
        activations_until=plan.activations.until if plan.activations else None,
    )  # fmt: skip
    return Prepared(plan, loaders, module, active, features)


def fit(trainer: L.Trainer, p: Prepared, run: RunFolder, ckpt_path: Path | None) -> None:
    """``trainer.fit`` (or, for an unrefined few-shot head, one validation pass saved as the
    run's checkpoints); a NaN/inf loss becomes :class:`TrainingDiverged` with what was kept."""
    config = p.module.config
    try:
        if p.plan.strategy.name == "few-shot" and not config.few_shot_refine:
            trainer.validate(p.module, p.loaders.val, verbose=False)
            for name in ("best.ckpt", "last.ckpt"):
                trainer.save_checkpoint(run.checkpoints / name)
        else:
            trainer.fit(p.module, p.fit_loader, p.loaders.val, ckpt_path=ckpt_path)
    except NonFiniteLoss as err:
        kept = (
            f"the checkpoints of the last good epoch are kept in {run.checkpoints} (--resume "
            f"{run.path} continues from there)"
            if run.last_checkpoint.is_file()
            else "no epoch finished, so there is no checkpoint"
        )
        raise TrainingDiverged(
            f"training loss became NaN/inf in epoch {err.epoch} (step {err.step}); stopped before "
            f"saving it: {kept}. Lower --lr, or check the data for broken images/labels."
        ) from None


def class_table(splits: DataSplits) -> Table:
    """Samples per class and split, with totals (multi-label: images holding each label, and
    the images of each split; multi-task: ``task:class`` rows, and the images of each split)."""
    counts = splits.counts()
    multi = not splits.single_label  # images holding each label; the total counts images
    kind = "labels (multi-label)" if splits.multi_label else "classes"
    if splits.tasks:
        kind = f"classes of {len(splits.tasks)} tasks ({', '.join(splits.tasks)})"
    t = Table(title=f"{len(splits.classes)} {kind}")
    t.add_column("label" if multi else "class")
    for split in counts:
        t.add_column(split, justify="right")
    for c in splits.classes:
        t.add_row(escape(c), *[str(counts[s][c]) for s in counts])  # names may hold [brackets]
    totals = [len(getattr(splits, s)) if multi else sum(counts[s].values()) for s in counts]
    t.add_row("[bold]images" if multi else "[bold]total", *[f"[bold]{n}" for n in totals])
    return t

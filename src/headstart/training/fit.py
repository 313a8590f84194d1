"""``train``: resolve the run -> plan -> loaders -> trainer -> fit -> summarise.

Each stage is a public function of its own module (:mod:`~headstart.training.plan`,
:mod:`~headstart.training.loaders`, :mod:`~headstart.training.trainer`,
:mod:`~headstart.training.summary`); lr-find and pretext training reuse them. Optional
additions (domain adaptation) come in as :mod:`~headstart.training.plugins`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from rich.markup import escape
from rich.table import Table

from headstart.config import TrainConfig
from headstart.console import console, setup_logging
from headstart.data import DataSplits
from headstart.errors import HeadstartError, RunError, TrainingDiverged
from headstart.modalities import Modality, modality_for, splits_for
from headstart.models import Backbone
from headstart.run import RunFolder
from headstart.tasks import task_for
from headstart.training.callbacks import NonFiniteLoss, NonFiniteLossGuard
from headstart.training.checkpoint_io import check_checkpoint_fits
from headstart.training.distributed import announce_run_dir, check_distributed, rank_run_dir
from headstart.training.features import FeatureSource
from headstart.training.loaders import Loaders, make_loaders
from headstart.training.module import HeadstartModule
from headstart.training.plan import Plan, make_plan, num_workers_for
from headstart.training.plugins import PluginFactory, ResultContext, SetupContext, TrainingPlugin
from headstart.training.summary import Finished, best_model, evaluate_best, run_block, write_summary
from headstart.training.trainer import make_trainer

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns: the run folder, the config used and the final metrics."""

    run_dir: Path
    config: TrainConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def val_accuracy(self) -> float:
        return float(self.metrics["val"]["accuracy"])

    @property
    def best_checkpoint(self) -> Path:
        return RunFolder(self.run_dir).checkpoint_for_inference()


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


def prepare(config: TrainConfig, inputs: Inputs, plugins: Sequence[PluginFactory] = ()) -> Prepared:
    """Plan the run, build its loaders, set up plug-ins and the LightningModule."""
    splits, modality, backbone = inputs.splits, inputs.modality, inputs.backbone
    features = FeatureSource(
        backbone, splits.class_to_idx, seed=config.seed, augment=config.augment,
        use_disk_cache=config.disk_cache, num_workers=num_workers_for(config),
    )  # fmt: skip
    plan = make_plan(config, splits, backbone, modality, features)
    loaders = make_loaders(config, splits, backbone, plan, modality, features)
    active = [p for p in (factory(config) for factory in plugins) if p is not None]
    ctx = SetupContext(
        config, backbone, plan.cached_features, plan.frozen_throughout, loaders.rows,
        loaders.drop_last, loaders.loader_kw, plan.num_workers,
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
        task=task_for(config),
    )  # fmt: skip
    return Prepared(plan, loaders, module, active, features)


def resolve_run(
    config: TrainConfig | None, resume: str | Path | None, overrides: dict[str, Any]
) -> tuple[TrainConfig, RunFolder | None, Path | None]:
    """``(config, run folder or None for a new run, checkpoint to resume from)``; ``--resume``
    continues a run exactly as configured and refuses changed settings."""
    if resume is None:
        if config is not None:
            return config.replace(**overrides), None, None
        return TrainConfig.create(**overrides), None, None
    run = RunFolder.open(resume)
    saved = run.load_config()
    changed = sorted(k for k, v in overrides.items() if getattr(saved, k, None) != v)
    if config is not None:
        changed += [
            k
            for k in TrainConfig.model_fields
            if getattr(config, k) != getattr(saved, k) and k not in changed
        ]
    if changed:
        raise RunError(
            f"--resume {resume} continues the run exactly as configured in its config.yaml "
            f"(model {saved.model}); it cannot change {', '.join(changed)}. Start a new run "
            "(e.g. --config runs/<run>/config.yaml --out <new folder>) instead."
        )
    run.remove_stale_temp_files()  # left by a process killed while writing
    if run.last_checkpoint.is_file():
        return saved, run, run.last_checkpoint
    log.warning("--resume %s: no checkpoint yet; training from the first epoch", resume)
    return saved, run, None


def open_run_folder(
    config: TrainConfig, resumed: RunFolder | None, classes: list[str]
) -> RunFolder:
    """The run folder: the resumed one (its classes must match), the one rank 0 created (other
    DDP ranks), or a new one with config.yaml and classes.json."""
    if resumed is not None:
        if resumed.load_classes() != classes:
            raise RunError(
                f"--resume {resumed.path}: the data's classes differ from the run's classes.json"
            )
        return resumed
    shared_dir = rank_run_dir(config)
    if shared_dir is not None:  # a DDP/FSDP rank other than 0 (see training/distributed.py)
        return RunFolder(shared_dir)
    run = RunFolder.create(config.out or RunFolder.default_path(config))
    run.save_config(config)
    run.save_classes(classes)
    announce_run_dir(run.path)  # inherited by the ranks Lightning's launcher starts
    return run


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


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    plugins: Sequence[PluginFactory] = (),
    **overrides: Any,
) -> TrainResult:
    """Train a model as described by ``config`` (or keyword settings) and evaluate it.

    This is the training core; :func:`headstart.train` calls it with the library's plug-ins
    (domain adaptation) — use that one. ``extra_callbacks`` are added to the Lightning Trainer;
    ``resume="runs/x"`` continues an interrupted run from its ``last.ckpt`` with its own
    config, and the result equals an uninterrupted run.
    """
    setup_logging()
    t_start = time.perf_counter()
    config, resumed, ckpt_path = resolve_run(config, resume, overrides)
    check_distributed(config)
    inputs = load_inputs(config)
    run = open_run_folder(config, resumed, inputs.splits.classes)
    p = prepare(config, inputs, plugins)
    if ckpt_path is not None:
        check_checkpoint_fits(ckpt_path, p.module, config.model)
    trainer = make_trainer(
        config, run.path, steps_per_epoch=len(p.loaders.train), checkpoints=run.checkpoints,
        log_csv=run.log_path, callbacks=[NonFiniteLossGuard(), *extra_callbacks],
    )  # fmt: skip
    fit(trainer, p, run, ckpt_path)
    if not trainer.is_global_zero:
        return TrainResult(run.path, config, {}, time.perf_counter() - t_start)
    done = Finished(
        config, run, inputs.splits, inputs.backbone, p.module, p.plan, p.loaders,
        inputs.modality, p.module.task, trainer.current_epoch, p.features.cache_hits,
    )  # fmt: skip
    model = best_model(done)
    results, val_logits, val_targets = evaluate_best(done, model)
    results["run"] = run_block(done, time.perf_counter() - t_start)
    ctx = ResultContext(
        config, model, inputs.splits, run, p.plan.cached_features, p.plan.num_workers
    )
    for plugin in p.plugins:
        results.update(plugin.results(ctx))
    write_summary(done, results, val_logits, val_targets)
    return TrainResult(run.path, config, results, results["run"]["seconds"])


def class_table(splits: DataSplits) -> Table:
    """Samples per class and split, with totals."""
    counts = splits.counts()
    t = Table(title=f"{len(splits.classes)} classes")
    t.add_column("class")
    for split in counts:
        t.add_column(split, justify="right")
    for c in splits.classes:
        t.add_row(escape(c), *[str(counts[s][c]) for s in counts])  # names may hold [brackets]
    t.add_row("[bold]total", *[f"[bold]{sum(counts[s].values())}" for s in counts])
    return t

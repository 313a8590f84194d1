"""``headstart.train``: config -> data -> backbone -> strategy -> Lightning -> evaluation -> run folder."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from rich.markup import escape
from rich.table import Table
from torch.utils.data import DataLoader, TensorDataset

from headstart.config import TrainConfig
from headstart.console import console, setup_logging
from headstart.data import DataSplits, build_eval_transform, build_train_transform
from headstart.data.datasets import ImageDataset, ViewsDataset
from headstart.data.folders import splits_for
from headstart.data.image_size import auto_image_size
from headstart.data.samplers import EpochBalancedSampler, EpochShuffleSampler
from headstart.data.text import TextDataset, describe_input, sample_text
from headstart.errors import HeadstartError, RunError, TrainingDiverged
from headstart.evaluation import classification_metrics, metrics_table
from headstart.evaluation.probe import cross_validated_probe
from headstart.evaluation.report import ValPredictions, write_report
from headstart.models import Backbone, create_backbone
from headstart.models.heads import CosineClassifier, head_kind
from headstart.run import RunFolder, load_checkpoint_file
from headstart.strategies import Strategy, make_strategy
from headstart.strategies.auto import AutoDecision, decide, decide_few_shot, is_few_shot
from headstart.training.callbacks import EpochLog, NonFiniteLoss, NonFiniteLossGuard
from headstart.training.checkpoint_io import AtomicCheckpointIO, check_checkpoint_fits
from headstart.training.distributed import (
    announce_run_dir,
    check_distributed,
    rank_run_dir,
    trainer_strategy,
    unsharded_copy,
)
from headstart.training.features import features_for
from headstart.training.head_init import init_head_from_features, prepare_head
from headstart.training.module import HeadstartModule

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


def default_num_workers() -> int:
    """DataLoader workers sized to the machine: half the cores, at most 4 (0 on 1-2 cores,
    where worker processes only compete with the model for the same cores)."""
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    return 0 if cores <= 2 else min(4, cores // 2)


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    extra_callbacks: Sequence[L.Callback] = (),
    **overrides: Any,
) -> TrainResult:
    """Train a model as described by ``config`` (or keyword settings) and evaluate it.

    Example::

        result = headstart.train(data="data/", model="torchvision:mobilenet_v2", epochs=5)
        print(result.val_accuracy, result.run_dir)

    ``extra_callbacks`` are added to the Lightning Trainer (loggers, custom hooks).
    ``resume="runs/x"`` continues an interrupted run from its ``last.ckpt`` with its own config;
    the result equals an uninterrupted run (same seed-derived batches, strategy state, optimizer
    and LR schedule).
    """
    setup_logging()
    t_start = time.perf_counter()
    ckpt_path: Path | None = None
    if resume is not None:
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
        config = saved
        run.remove_stale_temp_files()  # left by a process killed while writing
        if run.last_checkpoint.is_file():
            ckpt_path = run.last_checkpoint
        else:  # stopped before its first checkpoint (e.g. during feature extraction)
            log.warning("--resume %s: no checkpoint yet; training from the first epoch", resume)
    else:
        config = (
            config.replace(**overrides) if config is not None else TrainConfig.create(**overrides)
        )

    check_distributed(config)
    splits, backbone = load_inputs(config)
    shared_dir = rank_run_dir(config) if resume is None else None
    if shared_dir is not None:
        # a DDP/FSDP rank other than 0: rank 0 creates the folder (see training/distributed.py)
        run = RunFolder(shared_dir)
    elif resume is None:
        run = RunFolder.create(config.out or RunFolder.default_path(config))
        run.save_config(config)
        run.save_classes(splits.classes)
        announce_run_dir(run.path)  # inherited by the ranks Lightning's launcher starts
    elif run.load_classes() != splits.classes:
        raise RunError(f"--resume {resume}: the data's classes differ from the run's classes.json")

    p = _prepare(config, splits, backbone)
    module, strategy, fast = p.module, p.strategy, p.fast
    if ckpt_path is not None:
        check_checkpoint_fits(ckpt_path, module, config.model)
    guard = NonFiniteLossGuard()
    callbacks: list[L.Callback] = [
        ModelCheckpoint(
            dirpath=run.checkpoints,
            filename="best",
            monitor="val_loss",
            mode="min",
            save_last=True,
            save_top_k=1,
            enable_version_counter=False,
            save_on_train_epoch_end=True,
        ),
        EpochLog(run.log_path),
        guard,
        *extra_callbacks,
    ]
    if config.early_stopping_patience:
        callbacks.append(
            EarlyStopping(monitor="val_loss", mode="min", patience=config.early_stopping_patience)
        )
    if console.is_terminal:
        callbacks.append(RichProgressBar(leave=False))
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=trainer_strategy(config),
        precision=config.precision,  # type: ignore[arg-type]
        deterministic=config.deterministic,
        logger=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run.path,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=console.is_terminal,
        log_every_n_steps=max(1, min(50, len(p.train_loader))),
    )
    try:
        if strategy.name == "few-shot" and not config.few_shot_refine:
            # the closed-form head is the model: validate it and save it as the run's checkpoints
            trainer.validate(module, p.val_loader, verbose=False)
            for name in ("best.ckpt", "last.ckpt"):
                trainer.save_checkpoint(run.checkpoints / name)
        else:
            fit_loader = p.train_loader if p.fit_loader is None else p.fit_loader
            trainer.fit(module, fit_loader, p.val_loader, ckpt_path=ckpt_path)
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
    if not trainer.is_global_zero:
        return TrainResult(run.path, config, {}, time.perf_counter() - t_start)

    # --- evaluation of the best checkpoint ------------------------------------------------------
    best = run.checkpoint_for_inference()
    evaluated: Backbone = backbone
    forward: Any = module
    if config.strategy_dist == "fsdp":
        # FSDP leaves the trained weights sharded across the ranks: evaluate the best
        # checkpoint in an unsharded copy, rebuilt the way `headstart evaluate` does
        evaluated = unsharded_copy(run.path)
        forward = evaluated.head if fast else evaluated
    else:
        module.load_state_dict(load_checkpoint_file(best)["state_dict"])
        module.eval()
    results: dict[str, Any] = {}
    if p.val_features is not None:
        with torch.inference_mode():
            va_x, va_y = p.val_features
            val_logits, val_targets = forward(va_x), va_y
    else:
        val_logits, val_targets = predict_logits(evaluated, p.images(splits.val), p.num_workers)
    results["val"] = classification_metrics(val_logits, val_targets, splits.classes)
    if splits.test:
        test_set = p.images(splits.test)
        results["test"] = evaluate_backbone(evaluated, test_set, splits.classes, p.num_workers)
    seconds = time.perf_counter() - t_start
    results["run"] = {
        "model": config.model,
        "weights": backbone.weights_label,
        "preprocessing": backbone.preprocessing.to_dict(),
        "strategy": strategy.name,
        "strategy_plan": strategy.describe(backbone),
        "auto_decision": p.decision.to_dict() if p.decision else None,
        "unfreeze_events": [[e, names] for e, names in module.unfreeze_events],
        "batchnorm": {"trainable_stages_frozen": p.bn_frozen, "reason": p.bn_reason},
        "class_weights": p.class_weights.tolist() if p.class_weights is not None else None,
        "stages": backbone.stage_names,
        "trainable_params_start": p.trainable,
        "total_params": p.total,
        "cached_features": fast,
        "feature_cache_hits": p.feature_cache_hits,
        "feature_views": config.feature_views if fast else None,
        "head": head_kind(backbone.head),
        "head_init": p.head_init,
        "epochs_run": trainer.current_epoch,
        "best_checkpoint": best.name,
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "test_images": len(splits.test),
        "skipped_files": dict(splits.skipped),
        "seconds": round(seconds, 2),
    }
    if config.target_eval:  # labelled target-domain data; with --adapt also source-only baseline
        from headstart.adapt.domain import target_results

        results.update(
            target_results(config, backbone, splits, run, p.adaptation, fast, p.num_workers)
        )
    run.save_metrics(results)
    val_pred = ValPredictions(
        val_logits.softmax(1), val_targets, [str(x.path) for x in splits.val],
        texts=[sample_text(x) for x in splits.val] if backbone.modality == "text" else None,
    )  # fmt: skip
    report = write_report(run, val_pred)
    for split in ("val", "test"):
        if split in results:
            console.print(
                metrics_table(results[split], f"{split} ({results[split]['samples']} images)")
            )
    console.print(f"run folder: {run.path}   ({seconds:.1f}s)   report: {report}", markup=False)
    return TrainResult(run.path, config, results, seconds)


def load_inputs(config: TrainConfig) -> tuple[DataSplits, Backbone]:
    """Seed, load and validate the data (printing the class table), and build the model."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    splits = splits_for(config)
    console.print(_class_table(splits))
    return splits, backbone_from_config(config, splits)


def backbone_from_config(config: TrainConfig, splits: DataSplits) -> Backbone:
    """The model for ``config``; ``image_size="auto"`` is resolved from the training images."""

    def build(size: int | None) -> Backbone:
        return create_backbone(
            config.model, len(splits.classes), weights=config.weights, head=config.head,
            head_hidden=config.head_hidden, head_dropout=config.head_dropout, image_size=size,
            pooling=config.pooling, max_length=config.max_length,
        )  # fmt: skip

    if config.image_size != "auto":
        return build(config.image_size)
    backbone = build(None)
    size, reason = auto_image_size(
        [s.path for s in splits.train], backbone.preprocessing.crop, seed=config.seed
    )
    console.print(f"image size auto -> {size}px ({reason})")
    return backbone if size == backbone.preprocessing.crop else build(size)


@dataclass
class _Prepared:
    """Everything between validated inputs and ``trainer.fit``: shared by train and lr_find."""

    module: HeadstartModule
    strategy: Strategy
    train_loader: DataLoader[Any]
    val_loader: DataLoader[Any]
    fast: bool
    val_features: tuple[torch.Tensor, torch.Tensor] | None
    feature_cache_hits: list[str]
    decision: AutoDecision | None
    bn_frozen: bool
    bn_reason: str
    trainable: int
    total: int
    class_weights: torch.Tensor | None
    num_workers: int
    images: Any
    fit_loader: Any = None  # what trainer.fit draws from when not train_loader (domain adaptation)
    adaptation: Any = None
    head_init: str = "random"  # how the head started (for metrics.json and the report)


def _prepare(config: TrainConfig, splits: DataSplits, backbone: Backbone) -> _Prepared:
    """Choose the strategy, build datasets/loaders (cached features or images) and the module."""
    num_workers = config.num_workers if config.num_workers is not None else default_num_workers()
    text = backbone.modality == "text"  # token ids instead of images (data/text.py)
    eval_tf = None if text else build_eval_transform(backbone.preprocessing)
    idx = splits.class_to_idx
    draft = getattr(backbone.preprocessing, "resize", None)
    n_classes = len(splits.classes)

    def images(samples: list[Any], tf: Any = eval_tf) -> Any:
        if text:  # texts are not augmented
            return TextDataset(samples, idx, backbone.preprocessing)  # type: ignore[arg-type]
        return ImageDataset(samples, idx, tf, draft, seed=config.seed)

    hits: list[str] = []

    def feats(
        split: str, dataset: Any, samples: list[Any], views: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, hit = features_for(
            backbone, dataset, samples, idx, split=split, seed=config.seed, views=views,
            augment=config.augment, use_disk_cache=config.disk_cache, num_workers=num_workers,
        )  # fmt: skip
        if hit:
            hits.append(split)
        return x, y

    # --- strategy (auto: decide from data size + a probe of the pretrained features) -----------
    train_feats: tuple[torch.Tensor, torch.Tensor] | None = None
    decision: AutoDecision | None = None
    probe_l2 = 1e-3
    chosen: str = config.strategy
    if config.strategy == "auto":
        train_counts = splits.counts()["train"]
        if is_few_shot(train_counts):
            decision = decide_few_shot(train_counts)
        else:
            train_feats = feats("train", images(splits.train), splits.train)
            acc, probe_l2 = cross_validated_probe(*train_feats, n_classes, seed=config.seed)
            decision = decide(len(splits.train), n_classes, acc)
        chosen = decision.strategy
        console.print(f"[bold]auto strategy -> {chosen}[/]")
        for reason in decision.reasons:
            console.print(f"  - {reason}")
    head_init = prepare_head(backbone, config, chosen, splits.classes)
    strategy = make_strategy(config.replace(strategy=chosen))
    strategy.apply(backbone, 0)
    bn_frozen, bn_reason = _bn_policy(config)
    backbone.bn_frozen = [bn_frozen] * len(backbone.stages)
    trainable, total = backbone.param_counts()
    console.print(
        f"[bold]{config.model}[/] weights={backbone.weights_label}  input {describe_input(backbone)} "
        f"({backbone.preprocessing.source})\n"
        f"strategy {strategy.describe(backbone)}\n"
        f"BatchNorm statistics of trainable stages: {'frozen' if bn_frozen else 'updated'} ({bn_reason})\n"
        f"trainable parameters {trainable:,} / {total:,} ({100 * trainable / total:.2f} %)"
    )
    fast = (
        config.cache_features
        and not (config.mixup or config.cutmix)
        and _frozen_throughout(strategy, backbone, config.epochs)
    )
    targets = splits.targets("train")
    class_weights = None
    if config.class_weights == "auto":
        counts = torch.bincount(torch.tensor(targets), minlength=n_classes).clamp(min=1).float()
        class_weights = len(targets) / (n_classes * counts)
        console.print(
            "class weights: "
            + ", ".join(
                f"{c} {w:.2f}" for c, w in zip(splits.classes, class_weights.tolist(), strict=True)
            )
        )

    # --- data loaders: cached features or images ----------------------------------------------
    loader_kw: dict[str, Any] = {}
    if fast:
        console.print(
            "backbone frozen for the whole run: computing features once (cached-feature path)"
        )
        t0 = time.perf_counter()
        if train_feats is None:
            train_feats = feats("train", images(splits.train), splits.train)
        if config.head_init == "probe":
            head_init = (
                init_head_from_features(backbone, *train_feats, n_classes, probe_l2) or head_init
            )
        if config.feature_views > 1:
            aug = images(
                splits.train, build_train_transform(backbone.preprocessing, config.augment)
            )
            views = ViewsDataset(images(splits.train), aug, config.feature_views)
            extra_x, extra_y = feats("train-views", views, splits.train, config.feature_views)
            n = len(splits.train)  # view 0 (un-augmented) is already in train_feats
            train_feats = (
                torch.cat([train_feats[0], extra_x[n:]]),
                torch.cat([train_feats[1], extra_y[n:]]),
            )
            targets = train_feats[1].tolist()
        va_x, va_y = feats("val", images(splits.val), splits.val)
        source = f"from the disk cache ({', '.join(hits)})" if hits else "extracted"
        console.print(
            f"features: {len(train_feats[0])} train + {len(va_x)} val -> {va_x.shape[1]}-d, "
            f"{source} in {time.perf_counter() - t0:.1f}s"
        )
        train_set: Any = _IndexedTensors(*train_feats)
        val_loader: DataLoader[Any] = DataLoader(TensorDataset(va_x, va_y), batch_size=256)
    else:
        if isinstance(backbone.head, CosineClassifier) and config.head_init == "probe":
            # prototypes need one pass over the training images with the starting backbone
            train_feats = feats("train", images(splits.train), splits.train)
            head_init = init_head_from_features(backbone, *train_feats, n_classes, probe_l2) or ""
        backbone.to(memory_format=torch.channels_last)  # ~20 % faster conv training on CPU
        if config.compile:
            backbone.body.compile()  # in place: state_dict keys unchanged
        train_set = images(
            splits.train,
            None if text else build_train_transform(backbone.preprocessing, config.augment),
        )
        loader_kw = {
            "collate_fn": backbone.collate_fn,  # text: dynamic padding
            "num_workers": num_workers,
            "persistent_workers": num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }
        val_loader = DataLoader(images(splits.val), batch_size=config.batch_size, **loader_kw)
    # one row per training item (augmented views included): the sampler follows the final set
    sampler: Any = (
        EpochBalancedSampler(targets, config.seed)
        if config.sampler == "balanced"
        else EpochShuffleSampler(len(targets), config.seed)
    )
    train_loader: DataLoader[Any] = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=_drop_last(len(targets), config.batch_size),
        generator=torch.Generator().manual_seed(config.seed),
        **loader_kw,
    )

    adaptation = None
    if config.adapt != "none":  # source + unlabeled target batches together (adapt/domain.py)
        from headstart.adapt.domain import setup_adaptation

        adaptation = setup_adaptation(
            config, backbone, fast=fast, rows=len(targets), loader_kw=loader_kw,
            frozen_throughout=_frozen_throughout(strategy, backbone, config.epochs),
            drop_last=_drop_last(len(targets), config.batch_size), num_workers=num_workers,
        )  # fmt: skip
    module = HeadstartModule(
        backbone,
        strategy,
        config,
        steps_per_epoch=len(train_loader),
        inputs_are_features=fast,
        class_weights=class_weights,
        num_classes=n_classes,
        train_hook=adaptation.step if adaptation else None,
    )
    return _Prepared(
        module, strategy, train_loader, val_loader, fast, (va_x, va_y) if fast else None, hits, decision,
        bn_frozen, bn_reason, trainable, total, class_weights, num_workers, images,
        adaptation.combine(train_loader) if adaptation else None, adaptation, head_init,
    )  # fmt: skip


def _bn_policy(config: TrainConfig) -> tuple[bool, str]:
    """Whether BatchNorm running statistics of *trainable* stages stay frozen, and why.
    (Frozen stages always keep theirs.)"""
    if config.bn == "frozen":
        return True, "--bn frozen"
    if config.bn == "train":
        return False, "--bn train"
    if config.batch_size < 16:
        return (
            True,
            f"--bn auto: per-device batch {config.batch_size} < 16 gives noisy batch statistics",
        )
    return False, f"--bn auto: per-device batch {config.batch_size} >= 16"


class _IndexedTensors(TensorDataset):
    """TensorDataset that accepts the ``(index, epoch)`` keys of :class:`EpochShuffleSampler`."""

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, ...]:
        return super().__getitem__(key[0] if isinstance(key, tuple) else key)


def _drop_last(n: int, batch_size: int) -> bool:
    """Drop only a final batch of one sample (BatchNorm cannot train on it); same rule on the
    cached and the image path so both see identical batches."""
    return n > batch_size and n % batch_size == 1


def _frozen_throughout(strategy: Strategy, backbone: Backbone, epochs: int) -> bool:
    n = len(backbone.stages)
    return all(not strategy.trainable_stages(e, n) for e in range(epochs))


@torch.inference_mode()
def predict_logits(
    backbone: Backbone, dataset: Any, num_workers: int = 0, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets for a dataset of ``(image_tensor, target)`` pairs, in order."""
    backbone.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=backbone.collate_fn
    )
    outs, ys = [], []
    for x, y in loader:
        outs.append(backbone(x).float())
        ys.append(torch.as_tensor(y))
    if not outs:
        raise HeadstartError("no images to evaluate")
    return torch.cat(outs), torch.cat(ys)


def evaluate_backbone(
    backbone: Backbone, dataset: Any, classes: list[str], num_workers: int = 0
) -> dict[str, Any]:
    logits, targets = predict_logits(backbone, dataset, num_workers)
    return classification_metrics(logits, targets, classes)


def _class_table(splits: DataSplits) -> Table:
    counts = splits.counts()
    t = Table(title=f"{len(splits.classes)} classes")
    t.add_column("class")
    for split in counts:
        t.add_column(split, justify="right")
    for c in splits.classes:
        t.add_row(escape(c), *[str(counts[s][c]) for s in counts])  # names may hold [brackets]
    t.add_row("[bold]total", *[f"[bold]{sum(counts[s].values())}" for s in counts])
    return t

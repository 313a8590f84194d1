"""``--strategy auto``: measured selection of a strategy within a time budget.

Candidates are trained and scored on data the reported number never sees:

* data with a test split: candidates train on ``train`` and are scored on ``val``; the run
  reports ``test``;
* train/val only: candidates train on ``train`` minus a stratified 20 % selection split and are
  scored on it; the winner is retrained on all of ``train`` and the run reports ``val``.

From cheap to expensive: the **probe** (logistic regression on the frozen features, no
training), **feature extraction** (the head trained on cached features from the probe's
start), then trained backbones — ``partial`` (the last stages, up to half of them),
``gradual``, ``fine-tune`` — proposed by Optuna's TPE sampler over strategy, learning rate,
unfreeze depth, augmentation and (partial on cached activations) augmented views,
and stopped early by a median pruner (a trial scoring below the median of earlier trials at the
same epoch stops) while the time budget lasts. The frozen-backbone candidates are always
measured first, so the winner is never worse on the selection split than the cheapest candidate:
ties go to the cheaper one.

Before that, whether the pretrained features are invariant to horizontal flips is measured (a
probe fitted on the selection split's training part, scored on plain and mirrored selection
images); flips that change the predictions (glyphs, digits, oriented objects) are turned off.
Random crops are not judged that way: a probe fitted on whole images also loses points on crops
of images whose class crops keep (Animal-MNIST: -6.3 points, yet fine-tuning with crops scored
93.7 % on val and without 92.0 %), so augmentation stays a dimension of the search.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from torch.nn import BatchNorm2d

from headstart.config import TrainConfig
from headstart.console import console
from headstart.data import DataSplits
from headstart.data.splits import stratified_split
from headstart.devices import compute_for
from headstart.errors import HeadstartError, TrainingDiverged
from headstart.models.backbone import Backbone
from headstart.models.split import SplitError
from headstart.models.weights_spec import is_random_init
from headstart.run import RunFolder, atomic_write_text
from headstart.strategies.registry import make_strategy
from headstart.training.activations import (
    ActivationPlan,
    activation_key,
    activation_shape,
    features_with_activations,
    store_activation_rows,
    unavailable_reason,
)
from headstart.training.augment_check import AugmentationCheck, augmentation_check
from headstart.training.callbacks import NonFiniteLossGuard
from headstart.training.feature_cache import cache_dir
from headstart.training.features import FeatureSource
from headstart.training.plan import num_workers_for
from headstart.training.plugins import PluginFactory
from headstart.training.prepare import Inputs, fit, prepare
from headstart.training.trainer import make_trainer

log = logging.getLogger(__name__)

_IMPORTED = time.perf_counter()
#: fraction of the training images held out for selection when the data has no test split
SELECTION_FRACTION = 0.2


def process_seconds() -> float:
    """Seconds since this process started (imports included); from /proc where available."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


@dataclass
class Candidate:
    """One measured candidate: what it was, its selection score, its cost."""

    name: str
    strategy: str
    settings: dict[str, Any]
    score: float | None = None
    seconds: float = 0.0
    epochs_run: int = 0
    status: str = "complete"  # complete | pruned | skipped | failed
    chosen: bool = False
    folder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Selection:
    """The outcome of the search (saved as ``auto.json`` in the run folder, so ``--resume``
    continues with the same choice)."""

    protocol: str
    select_on: str
    report_on: str
    budget_seconds: float
    budget_reason: str
    hflip: bool
    augment_reasons: list[str]
    candidates: list[Candidate]
    reasons: list[str] = field(default_factory=list)
    #: the winner trained on exactly the run's train/val splits: its checkpoints are the run's
    reusable: bool = False
    #: the backbone auto kept after comparing :data:`AUTO_BACKBONES` (None: the run's own)
    model: str | None = None

    @property
    def chosen(self) -> Candidate:
        return next(c for c in self.candidates if c.chosen)

    def overrides(self) -> dict[str, Any]:
        """The config fields the final model is trained with."""
        c = self.chosen
        model = {"model": self.model} if self.model else {}
        return {"strategy": c.strategy, "hflip": self.hflip, **model, **c.settings}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = [c.to_dict() for c in self.candidates]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        d = dict(d)
        d["candidates"] = [Candidate(**c) for c in d["candidates"]]
        return cls(**d)


def selection_splits(splits: DataSplits, seed: int) -> tuple[DataSplits, str, str, str]:
    """``(splits the candidates use, protocol, selected on, reported on)``."""
    if splits.test:
        protocol = "candidates trained on train, selected on val; the run reports test"
        return DataSplits(splits.train, splits.val, [], splits.classes), protocol, "val", "test"
    labels = [s.label for s in splits.train]
    fit_idx, sel_idx = stratified_split(labels, SELECTION_FRACTION, seed + 17)
    carved = DataSplits(
        [splits.train[i] for i in fit_idx], [splits.train[i] for i in sel_idx], [], splits.classes
    )
    protocol = (
        f"candidates trained on {100 - 100 * SELECTION_FRACTION:.0f} % of train, selected on the "
        f"other {100 * SELECTION_FRACTION:.0f} % (no test split); the winner is retrained on "
        "all of train and the run reports val"
    )
    return carved, protocol, f"{100 * SELECTION_FRACTION:.0f} % of train", "val"


#: seconds for writing metrics, plots and report.html after the final evaluation, and the
#: process's exit (measured 1.8 s writing them for Animal-MNIST, 10 classes, 2 cores)
REPORT_SECONDS = 4.0
#: the three trained candidates auto measures first, before Optuna proposes its own
FIRST_TRAINED = ("partial", "fine-tune", "gradual")


def first_partial_stages(backbone: Backbone) -> int:
    """Stages the first partial candidate trains: half the backbone's, at least 3 (also the
    most a later partial candidate trains). Measured on MobileNetV2 (8 stages; Animal-MNIST
    50/30/100, 112 px, 6 epochs on cached activations, 3 seeds, test): the last 3 stages
    92.5 %, 4 93.8 %, 5 93.6 %, 6 93.7 %, 7 93.6 % (and slower with each stage)."""
    return max(3, len(backbone.stages) // 2)


#: views per training image a partial candidate on cached activations stores when its
#: augmentation is on: the clean image and 3 augmented ones (``--feature-views``). Its frozen
#: prefix runs once per view, not once per epoch; without views a candidate on stored rows
#: never sees an augmented image. Measured (MobileNetV2, last 4 stages, Animal-MNIST 50/30/100,
#: 112 px, 3 seeds, test): 4 views x 3 epochs 95.4 % (42 s), 1 view x 6 epochs 93.8 % (24 s)
PARTIAL_VIEWS = 4
#: epochs of a candidate with :data:`PARTIAL_VIEWS` views (each epoch passes over every view)
PARTIAL_VIEW_EPOCHS = 3
#: fewest epochs such a candidate is shortened to under a short budget: 2 epochs of 4 views
#: still pass over each training image 8 times. Same measurement: 4 views x 2 epochs 94.9 %
#: (33 s a run), x 3 epochs 95.4 % (42 s)
MIN_VIEW_EPOCHS = 2


def partial_views(config: TrainConfig, augmentable: bool) -> int:
    """Views per training image of auto's partial candidates on cached activations:
    ``--feature-views`` when given, else :data:`PARTIAL_VIEWS` when there is an augmentation
    to make views with, else 1."""
    if "feature_views" in config.model_fields_set or not augmentable or config.augment == "none":
        return config.feature_views
    return PARTIAL_VIEWS


def retrain_factor(retrain: bool) -> float:
    """A trained candidate's cost including the winner's retraining on all of train (1/0.8 of
    its candidate run) when there is no test split."""
    return 1.0 + 1.0 / (1.0 - SELECTION_FRACTION) if retrain else 1.0


def default_budget(
    elapsed: float, extraction: float, epochs: int, final: float, retrain: bool
) -> tuple[float, str]:
    """The budget when ``--time-budget`` is unset: enough for the whole command to measure the
    frozen candidates and one candidate of each trained strategy at ``epochs`` epochs (estimated
    from ``extraction``, the seconds one feature-extraction pass over the training images took),
    plus the final evaluation; 60 s to 1 hour."""
    trained = sum(EPOCH_COST[s] * extraction * epochs + 5.0 for s in FIRST_TRAINED)
    need = elapsed + extraction + 5.0 + trained * retrain_factor(retrain) + final
    budget = min(3600.0, max(60.0, need))
    return budget, (
        f"no --time-budget: at most {budget:.0f} s for the whole command ({elapsed:.0f} s "
        f"spent before the search, the frozen candidates, one {'/'.join(FIRST_TRAINED)} each of "
        f"{epochs} epochs estimated from the {extraction:.1f} s one feature-extraction pass "
        f"took{', the winner retrained' if retrain else ''}, {final:.0f} s for the final "
        "evaluation); no more trained candidates than those three without --trials"
    )


def search_budget(
    config: TrainConfig, splits: DataSplits, extraction: float
) -> tuple[float, str, float]:
    """``(budget, why, seconds kept for the final evaluation)`` for the whole command."""
    n_eval = len(splits.val) + len(splits.test)
    reserve = final_seconds(extraction, len(splits.train), n_eval)
    if config.time_budget is None:
        retrain = not splits.test
        budget, why = default_budget(process_seconds(), extraction, config.epochs, reserve, retrain)
        return budget, why, reserve
    why = (
        f"--time-budget {config.time_budget:g} s for the whole command, {reserve:.0f} s of it "
        "kept for the final evaluation"
    )
    return config.time_budget, why, reserve


#: evaluation's per-image cost relative to auto's first pass: evaluation folds BatchNorm into
#: the convolutions (Backbone.inference_body), the first pass stores activations unfused
#: (MobileNetV2, 224 px, 2 cores: 7.2 vs 14.1 ms an image)
EVAL_COST = 0.6


def final_seconds(extraction: float, train_images: int, eval_images: int) -> float:
    """Estimated seconds after the search: a forward pass over the evaluated images at
    :data:`EVAL_COST` times the measured per-image extraction speed, and the report."""
    return EVAL_COST * extraction / max(1, train_images) * eval_images + REPORT_SECONDS


def shared_cut(config: TrainConfig, inputs: Inputs, rows: int) -> ActivationPlan | None:
    """The activations the first partial candidate will train on (``None``: partial candidates
    train on images): images, pretrained weights, one view per image given, cached activations
    possible for that candidate and the store within ``--cache-max-gb``. Whether auto's first
    pass stores them for that candidate is :func:`first_pass`'s decision."""
    backbone, n = inputs.backbone, len(inputs.backbone.stages)
    first = first_partial_stages(backbone)
    cut = n - first
    if (
        cut < 1 or config.feature_views != 1
        or not inputs.modality.augmentable or is_random_init(backbone.weights_label)
    ):  # fmt: skip
        return None
    candidate = config.replace(strategy="partial", unfreeze_last=first)
    if unavailable_reason(candidate, make_strategy(candidate)) is not None:
        return None
    trainable = [i for i, frozen in enumerate(backbone.frozen_stages) if not frozen]
    backbone.set_trainable_stages(range(cut, n))  # the split is checked as the candidate has it
    try:
        plan = ActivationPlan(
            cut, backbone.split_at(cut).boundary, activation_shape(backbone, cut), rows, 1
        )
    except SplitError:
        return None
    finally:
        backbone.set_trainable_stages(trainable)
    return plan if plan.total_bytes <= config.cache_max_gb * 1e9 else None


def first_pass(
    config: TrainConfig,
    inputs: Inputs,
    sel: DataSplits,
    features: FeatureSource,
    names: Sequence[str],
    activations: bool,
) -> tuple[float, bool]:
    """Features of the run's ``names`` splits (val only when candidates are selected on it),
    kept in ``features``; returns the seconds the training images took as a pass that stores
    activations takes (what cost estimates scale; a plain pass of a body with BatchNorm folds
    it and is divided by :data:`EVAL_COST`; 0 without a train pass) and whether partial
    candidates train on cached activations.
    When the first partial candidate trains on cached activations of one view per image, they
    come from the same forward pass
    (:func:`~headstart.training.activations.features_with_activations`) and are stored where
    that candidate's run looks them up (the disk cache, so not with ``--no-cache``): one pass
    of its frozen prefix fewer.
    Backbone ranking passes over train first and over val only for the backbone it keeps, and
    stores no activations (``activations=False``): a plain pass folds BatchNorm and takes about
    :data:`EVAL_COST` of one that also stores activations, and the comparison runs it for every
    backbone; the first partial candidate, if one runs, stores its own."""
    splits, backbone, idx = inputs.splits, inputs.backbone, inputs.splits.class_to_idx
    modality = inputs.modality
    passes = [
        (name, samples)
        for name, samples in (("train", splits.train), ("val", splits.val))
        if name in names and (name == "train" or sel.val is splits.val)
    ]
    passed = {s for _, samples in passes for s in samples}
    plan = shared_cut(config, inputs, sum(len(s) for _, s in passes))
    stores = [
        (activation_key(backbone, plan, part, idx, name, config.seed, config.augment, 1), part)
        for name, part in (("train", sel.train), ("val", sel.val))
        if part and passed.issuperset(part)
    ] if plan and activations and config.disk_cache and partial_views(config, modality.augmentable) == 1 else []  # fmt: skip
    # stored by an earlier run: the plain pass may hit the feature cache too
    stores = [(k, part) for k, part in stores if not (cache_dir() / f"act-{k}.npy").is_file()]
    seconds, rows = 0.0, {}
    for name, samples in passes:
        ds = inputs.modality.dataset(backbone, samples, idx)
        t0 = time.perf_counter()
        if not stores:
            features.remember(samples, *features(name, ds, samples))
        else:
            x, y, acts = features_with_activations(
                backbone, plan.cut, ds, num_workers=features.num_workers,  # type: ignore[union-attr]
                compute=features.compute, description=f"{name} features + activations",
            )  # fmt: skip
            features.store(name, samples, x, y)
            rows.update({s: (acts, i) for i, s in enumerate(samples)})
        if name == "train":
            seconds = time.perf_counter() - t0
            if not stores and any(isinstance(m, BatchNorm2d) for m in backbone.modules()):
                seconds /= EVAL_COST  # a plain pass folds BatchNorm: as long as a storing one
    for key, part in stores:
        values = np.stack([rows[s][0][rows[s][1]] for s in part])
        store_activation_rows(cache_dir() / f"act-{key}.npy", values, features.lookup(part)[1])
    return seconds, plan is not None


#: pretrained ImageNet backbones ``auto`` compares when ``--model``/``--weights`` are not
#: given (image data): the first is the default model, the others are tried when their weights
#: are on this machine
AUTO_BACKBONES = ("torchvision:mobilenet_v2", "efficientnet-lite:efficientnet-lite0")


@dataclass
class Ranked:
    """A backbone auto compared: its features of the training images and their LogME."""

    spec: str
    backbone: Backbone
    features: FeatureSource
    #: seconds of one pass over the training images, as a pass that stores activations takes
    extraction: float
    cached_partial: bool
    logme: float


def ranks_backbones(config: TrainConfig, inputs: Inputs) -> bool:
    """Whether auto compares :data:`AUTO_BACKBONES`: image data, pretrained weights, and
    neither ``--model`` nor ``--weights`` given (a saved config.yaml gives both)."""
    given = config.model_fields_set
    return (
        "model" not in given and "weights" not in given and config.model == AUTO_BACKBONES[0]
        and inputs.modality.name == "image" and inputs.modality.augmentable
        and not is_random_init(inputs.backbone.weights_label)
    )  # fmt: skip


def feature_source(config: TrainConfig, inputs: Inputs, backbone: Backbone) -> FeatureSource:
    """Un-augmented features of ``backbone`` as the search shares them between candidates."""
    return FeatureSource(
        backbone, inputs.splits.class_to_idx, seed=config.seed, augment="none",
        use_disk_cache=config.disk_cache, num_workers=num_workers_for(config),
        compute=compute_for(config),
    )  # fmt: skip


def rank_backbones(
    config: TrainConfig, inputs: Inputs, sel: DataSplits
) -> tuple[Ranked, list[str]]:
    """The backbone the search continues with and why: each of :data:`AUTO_BACKBONES` (the
    run's own when ``--model`` was given, or the others' weights are missing) extracts the
    training images once and is scored by LogME (You et al., ICML 2021) on the selection
    split's training part; the highest is kept (ties: the default). Its val features follow."""
    from headstart.evaluation.transferability import logme

    specs = list(AUTO_BACKBONES) if ranks_backbones(config, inputs) else [config.model]
    compared = len(specs) > 1  # plain passes: estimates scale them to a storing pass's time
    ranked: list[Ranked] = []
    skipped: list[str] = []
    for spec in specs:
        if spec == config.model:
            backbone = inputs.backbone
        else:
            try:
                L.seed_everything(config.seed, workers=True, verbose=False)
                backbone = inputs.modality.build_backbone(
                    config.replace(model=spec), len(inputs.splits.classes),
                    train=inputs.splits.train,
                )  # fmt: skip
            except HeadstartError as err:
                skipped.append(f"{spec} not compared: {err}")
                continue
            late = too_slow_for_budget(config, inputs, sel, backbone)
            if late:
                skipped.append(f"{spec} not compared: {late}")
                continue
        source = feature_source(config, inputs, backbone)
        here = Inputs(inputs.splits, inputs.modality, backbone)
        seconds, cached = first_pass(
            config.replace(model=spec), here, sel, source, ("train",), activations=not compared
        )
        score = logme(*(t.numpy() for t in source.lookup(sel.train))) if compared else 0.0
        ranked.append(Ranked(spec, backbone, source, seconds, cached, score))
    best = max(ranked, key=lambda r: (r.logme, -ranked.index(r)))
    keep = config.replace(model=best.spec)
    first_pass(keep, Inputs(inputs.splits, inputs.modality, best.backbone), sel, best.features,
               ("val",), activations=not compared)  # fmt: skip
    if len(ranked) < 2:
        return best, skipped
    scores = ", ".join(f"{r.spec} {r.logme:.3f}" for r in ranked)
    return best, [
        f"backbone {best.spec}: highest LogME on the training features ({scores}); no --model "
        "given, so auto compared the offline ImageNet backbones", *skipped,
    ]  # fmt: skip


#: images a backbone's speed is measured on before auto compares it under --time-budget: after
#: a warm-up pass (the one-time BatchNorm folding), passes over this many and twice as many
#: images, whose difference leaves out each pass's fixed set-up (timed on one 16-image pass,
#: EfficientNet-Lite0 measured 20-24 ms an image where its passes in the run took ~18)
SPEED_SAMPLE = 16


def too_slow_for_budget(
    config: TrainConfig, inputs: Inputs, sel: DataSplits, backbone: Backbone
) -> str | None:
    """Why ``backbone`` is not compared under ``--time-budget`` (``None``: it fits). Its speed
    is measured on :data:`SPEED_SAMPLE` training images; kept, it would pass over train, val
    (plain and mirrored for the flip check) and the evaluated images, and then the frozen
    candidates and the report follow. A comparison the budget cannot afford would make the
    whole command overrun it."""
    if config.time_budget is None:
        return None
    from headstart.training.features import extract_features

    idx, compute = inputs.splits.class_to_idx, compute_for(config)
    n = SPEED_SAMPLE
    if len(sel.train) < 3 * n:
        return None  # too few images for their passes to matter

    def seconds(samples: Sequence[Any], what: str) -> float:
        t0 = time.perf_counter()
        ds = inputs.modality.dataset(backbone, list(samples), idx)
        extract_features(backbone, ds, compute=compute, description=what)
        return time.perf_counter() - t0

    # the first pass folds BatchNorm (once); a pass's set-up (loader, memory format) is the
    # same for 16 and 32 images, so their difference is what 16 images cost
    seconds(sel.train[:n], "warm-up")
    short = seconds(sel.train[n : 2 * n], "speed")
    per_image = max(0.0, seconds(sel.train[n : 3 * n], "speed") - short) / n
    splits = inputs.splits
    images = len(splits.train) + 2 * len(sel.val) + len(splits.val) + len(splits.test)
    need = process_seconds() + per_image * images + REPORT_SECONDS + 5.0
    if need <= config.time_budget:
        return None
    return (
        f"at {1000 * per_image:.1f} ms an image its passes would end the command at ~{need:.0f} s, "
        f"past --time-budget {config.time_budget:g}"
    )


class ScoreRecorder(L.Callback):
    """Per epoch: the selection accuracy and loss; the score is the accuracy of the epoch with
    the lowest selection loss (the checkpoint the candidate keeps). Reports to an Optuna trial
    and, when ``prunable``, stops the candidate when the trial should be pruned."""

    def __init__(self, trial: Any = None, prunable: bool = True) -> None:
        self.trial, self.prunable = trial, prunable
        self.history: list[tuple[float, float]] = []
        self.pruned = False

    @property
    def score(self) -> float | None:
        if not self.history:
            return None
        return min(self.history)[1]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        if "val_acc" not in m or "val_loss" not in m:
            return
        self.history.append((float(m["val_loss"]), float(m["val_acc"])))
        if self.trial is None:
            return
        self.trial.report(float(m["val_acc"]), len(self.history) - 1)
        if self.prunable and self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def save_selection(run: RunFolder, selection: Selection) -> None:
    atomic_write_text(run.path / "auto.json", json.dumps(selection.to_dict(), indent=2))


def load_selection(run: RunFolder) -> Selection | None:
    path = run.path / "auto.json"
    if not path.is_file():
        return None
    return Selection.from_dict(json.loads(path.read_text(encoding="utf-8")))


def adopt_checkpoints(candidate_dir: Path, run: RunFolder) -> None:
    """The winner's checkpoints and log become the run's (it trained on the run's splits)."""
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    for name in ("best.ckpt", "last.ckpt"):
        src = candidate_dir / "checkpoints" / name
        if src.is_file():
            shutil.copyfile(src, run.checkpoints / name)
    if (candidate_dir / "log.csv").is_file():
        shutil.copyfile(candidate_dir / "log.csv", run.log_path)


def print_selection(selection: Selection) -> None:
    console.print(f"[bold]auto strategy -> {selection.chosen.name}[/]")
    for reason in selection.reasons:
        console.print(f"  - {reason}")


# --- candidates -------------------------------------------------------------------------------
#: how many feature-extraction passes one epoch of each trained strategy costs (forward +
#: backward of the trainable part + the selection pass), before any was measured
EPOCH_COST = {"partial": 1.6, "gradual": 2.2, "fine-tune": 3.2}
#: fewest epochs a trained candidate is shortened to when ``--epochs`` do not fit the budget
MIN_CANDIDATE_EPOCHS = 3
#: feature-extraction passes over the training images one epoch of a partial candidate costs on
#: cached activations (its stages forward and backward on the stored rows, the selection rows
#: forward): measured 0.34 for partial-3 on MobileNetV2 at 224 px (3.0 s an epoch, 8.8 s a
#: pass over 500 images), rounded up for the Lightning overhead of short epochs
CACHED_PARTIAL_EPOCH_COST = 0.6


def min_epochs(views: int) -> int:
    """Fewest epochs a trained candidate on ``views`` stored views per image is shortened to:
    :data:`MIN_CANDIDATE_EPOCHS`, or :data:`MIN_VIEW_EPOCHS` with several views."""
    return MIN_CANDIDATE_EPOCHS if views == 1 else MIN_VIEW_EPOCHS


def views_of(c: Candidate) -> int:
    """Stored views per training image a measured candidate trained on."""
    return int(c.settings.get("feature_views", 1))


def run_candidate(
    config: TrainConfig,
    inputs: Inputs,
    folder: Path,
    plugins: Sequence[PluginFactory],
    features: FeatureSource,
    trial: Any = None,
    prunable: bool = True,
) -> tuple[float | None, int, bool]:
    """Train ``config`` on ``inputs`` into ``folder``; ``(selection score, epochs run, pruned)``."""
    if folder.exists():
        shutil.rmtree(folder)
    run = RunFolder(folder)
    run.checkpoints.mkdir(parents=True)
    # a fresh copy of the pretrained weights, seeded as `headstart train` seeds before it builds
    # the model, so a candidate is the run its strategy would give (same head initialisation,
    # whatever earlier candidates drew); same preprocessing, so remembered features apply
    L.seed_everything(config.seed, workers=True, verbose=False)
    backbone = inputs.modality.build_backbone(config, len(inputs.splits.classes))
    shared = features if backbone.weights_label != "none" else None  # random init: not shared
    p = prepare(config, Inputs(inputs.splits, inputs.modality, backbone), plugins, shared)
    recorder = ScoreRecorder(trial, prunable)
    trainer = make_trainer(
        config, folder, steps_per_epoch=len(p.loaders.train), checkpoints=run.checkpoints,
        log_csv=run.log_path, callbacks=[NonFiniteLossGuard(), recorder],
    )  # fmt: skip
    fit(trainer, p, run, None)
    return recorder.score, trainer.current_epoch, recorder.pruned


@dataclass
class Search:
    """The state of one ``auto`` search (see :func:`choose`)."""

    config: TrainConfig
    inputs: Inputs
    folder: Path
    plugins: Sequence[PluginFactory]
    features: FeatureSource
    deadline: float
    extraction_seconds: float
    #: seconds kept for what follows the search (final evaluation, report)
    reserve: float = 0.0
    #: no test split: the winner is retrained on all of train after the search
    retrain: bool = False
    #: partial candidates train on cached activations; the first one's store is auto's first
    #: pass (:func:`first_pass`)
    cached_partial: bool = False
    #: the first pass stored the first partial candidate's activations (no backbones compared)
    first_stored: bool = True
    candidates: list[Candidate] = field(default_factory=list)
    #: trained candidates proposed but not started: they did not fit the budget
    unfit: dict[str, str] = field(default_factory=dict)

    def measure(
        self,
        name: str,
        config: TrainConfig,
        settings: dict[str, Any],
        trial: Any = None,
        prunable: bool = True,
    ) -> Candidate:
        t0 = time.perf_counter()
        k = len(self.candidates)
        folder = self.folder / f"{k}-{name}"
        cand = Candidate(name, config.strategy, settings, folder=str(folder))
        console.print(f"[bold]auto[/] candidate {k}: {name} {settings or ''}".rstrip())
        try:
            score, epochs, pruned = run_candidate(
                config, self.inputs, folder, self.plugins, self.features, trial, prunable
            )
        except TrainingDiverged:
            score, epochs, pruned, cand.status = None, 0, False, "failed"
        cand.score, cand.epochs_run = score, epochs
        cand.seconds = round(time.perf_counter() - t0, 2)
        if pruned:
            cand.status = "pruned"
        shown = "-" if score is None else f"{score:.3f}"
        console.print(f"  -> selection accuracy {shown} in {cand.seconds:.1f}s ({cand.status})")
        self.candidates.append(cand)
        return cand

    def remaining(self) -> float:
        return self.deadline - process_seconds()

    def estimate(
        self, strategy: str, epochs: int | None = None, depth: int | None = None, views: int = 1
    ) -> float:
        """Seconds a trained candidate of ``strategy`` (partial: training the last ``depth``
        stages on ``views`` stored views per image) would take at ``epochs`` (default:
        ``--epochs``): from measured candidates of that strategy where there are any (per epoch
        and view), else the prior (:meth:`prior`) scaled by how far the trained candidates
        measured so far overran (or undercut) theirs. The priors are multiples of one
        feature-extraction pass calibrated on images; on text, partial-3 took 2.1x and
        fine-tune 2.2x its prior (BBC News, MiniLM), so one measured candidate corrects the
        others."""
        done = [c for c in self.candidates if c.strategy == strategy and c.epochs_run]
        if done:
            per_view = max(c.seconds / (c.epochs_run * views_of(c)) for c in done)
            return per_view * views * (epochs or self.config.epochs) + 5.0
        return self.prior(strategy, epochs, depth, views) * self.calibration()

    def calibration(self) -> float:
        """Measured over prior seconds of the trained candidates so far: the largest, and at
        least 1 (a candidate that undercut its prior, as cached partial candidates do on
        images, does not make the others' estimates optimistic)."""
        ratios = [
            c.seconds
            / self.prior(c.strategy, c.epochs_run, c.settings.get("unfreeze_last"), views_of(c))
            for c in self.candidates
            if c.strategy in EPOCH_COST and c.epochs_run and c.seconds
        ]
        return max([1.0, *ratios])

    def prior(
        self, strategy: str, epochs: int | None = None, depth: int | None = None, views: int = 1
    ) -> float:
        """A trained candidate's seconds before any of its kind ran: passes per epoch
        (:data:`EPOCH_COST`, :data:`CACHED_PARTIAL_EPOCH_COST` per stored view) times one
        feature-extraction pass, a pass over every view to store activations where the
        candidate stores its own, and 5 s."""
        once = 0.0
        if strategy == "partial" and self.cached_partial:
            per_epoch = CACHED_PARTIAL_EPOCH_COST * self.extraction_seconds * views
            first = first_partial_stages(self.inputs.backbone)
            if depth != first or views != 1 or not self.first_stored:  # it stores its own
                # through the frozen prefix with BatchNorm folded (Backbone.inference_prefix)
                splits = self.inputs.splits
                rows = views * len(splits.train) + len(splits.val)
                once = EVAL_COST * self.extraction_seconds * rows / max(1, len(splits.train))
        else:
            per_epoch = EPOCH_COST[strategy] * self.extraction_seconds
        return per_epoch * (epochs or self.config.epochs) + once + 5.0

    def fits(
        self, strategy: str, epochs: int | None = None, depth: int | None = None, views: int = 1
    ) -> bool:
        """Whether a trained candidate of ``strategy`` (and, without a test split, the winner's
        retraining) finishes before the deadline with the final evaluation still to come."""
        cost = self.estimate(strategy, epochs, depth, views) * retrain_factor(self.retrain)
        return cost + self.reserve <= self.remaining()

    def epochs_that_fit(
        self, strategy: str, depth: int | None = None, views: int = 1
    ) -> int | None:
        """The most epochs, at most ``--epochs`` (:data:`PARTIAL_VIEW_EPOCHS` with several
        views) and at least :func:`min_epochs`, a trained candidate of ``strategy``
        can run within the budget (``None``: not even those). A short budget then gets a
        shorter candidate (its LR schedule and unfreezing steps fitted to the epochs it has)
        instead of none."""
        top = self.config.epochs if views == 1 else min(self.config.epochs, PARTIAL_VIEW_EPOCHS)
        return next(
            (
                e
                for e in range(top, min(top, min_epochs(views)) - 1, -1)
                if self.fits(strategy, e, depth, views)
            ),
            None,
        )

    def best(self) -> Candidate:
        scored = [c for c in self.candidates if c.score is not None]
        # ties go to the cheaper candidate (measured earlier)
        return max(scored, key=lambda c: (c.score, -self.candidates.index(c)))


def augment_presets(augment: str, augmentable: bool) -> list[str]:
    """The augmentation presets the search proposes: none, light and ``--augment``'s; only
    ``--augment`` when it is none or the data has no augmentation (text), where proposing
    presets would only spend trials on settings that change nothing."""
    if augment == "none" or not augmentable:
        return [augment]
    return list(dict.fromkeys(["none", "light", augment]))


def trained_candidates(search: Search, trials: int | None) -> None:
    """Optuna (TPE + median pruner) over strategy, LR, unfreeze depth and augmentation, while
    the budget lasts; a trial whose estimated time does not fit is not started."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    c = search.config
    epochs = c.epochs
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=c.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=max(1, epochs // 2)),
    )
    first = first_partial_stages(search.inputs.backbone)
    augmentable = search.inputs.modality.augmentable
    views = partial_views(c, augmentable) if search.cached_partial else 1
    view_choices = sorted({1, views})
    for strategy in FIRST_TRAINED:  # the candidates the default budget and trial cap size for
        depth: dict[str, Any] = {}
        if strategy == "partial":
            depth = {"unfreeze_last": first}
            if len(view_choices) > 1:
                depth["feature_views"] = views
        study.enqueue_trial({"strategy": strategy, "lr": c.lr, "augment": c.augment, **depth})
    augment_choices = augment_presets(c.augment, augmentable)
    started = misses = 0
    while (trials is None or started < trials) and misses < 6:
        trial = study.ask()
        strategy = trial.suggest_categorical("strategy", ["partial", "gradual", "fine-tune"])
        settings: dict[str, Any] = {
            "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
            "augment": trial.suggest_categorical("augment", augment_choices),
        }
        stages, v = None, 1
        if strategy == "partial":
            stages = settings["unfreeze_last"] = trial.suggest_int("unfreeze_last", 1, first)
            if len(view_choices) > 1:
                v = trial.suggest_categorical("feature_views", view_choices)
                if settings["augment"] == "none":  # views of an un-augmented image are copies
                    v = 1
                if v > 1 or c.feature_views != 1:
                    settings["feature_views"] = v
        fitting = search.epochs_that_fit(strategy, stages, v)
        name = strategy + (f"-{stages}" if strategy == "partial" else "")
        name += f"-views{v}" if v > 1 else ""
        if fitting is None:
            least = min_epochs(v)
            need = search.estimate(strategy, least, stages, v)
            search.unfit.setdefault(name, f"{name} (~{need:.0f} s at {least} epochs)")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            misses += 1
            continue
        if fitting < epochs:
            settings["epochs"] = fitting
        started += 1
        # the first candidate of a strategy runs to the end: mid-run accuracy under a decaying
        # LR does not rank strategies (fine-tune was pruned at epoch 3 of 4 on Animal-MNIST
        # below partial's epoch-3 value, and would have ended first: 93.7 % vs 90.3 % val)
        prunable = any(x.strategy == strategy and x.status == "complete" for x in search.candidates)
        cand = search.measure(
            name, c.replace(strategy=strategy, **settings), settings, trial, prunable
        )
        if cand.status == "pruned" or cand.score is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, cand.score)


def choose(
    config: TrainConfig,
    inputs: Inputs,
    run: RunFolder,
    plugins: Sequence[PluginFactory] = (),
) -> tuple[Selection, FeatureSource]:
    """Measure candidates within the time budget and choose (see module doc); saved as
    ``auto.json`` in ``run``. Also returns the kept backbone's remembered features (of train,
    and of val when candidates were selected on it), for the final run to reuse."""
    sel_splits, protocol, select_on, report_on = selection_splits(inputs.splits, config.seed)
    kept, backbone_reasons = rank_backbones(config, inputs, sel_splits)
    if kept.spec != config.model:
        config = config.replace(model=kept.spec)
        inputs = Inputs(inputs.splits, inputs.modality, kept.backbone)
    features, extraction, cached_partial = kept.features, kept.extraction, kept.cached_partial
    retrain = not inputs.splits.test
    budget, budget_reason, reserve = search_budget(config, inputs.splits, extraction)
    if config.hflip is None:
        fit_xy = features.lookup(sel_splits.train)
        check = augmentation_check(
            features, inputs.modality, inputs.backbone, sel_splits, config.seed, fit_xy
        )
    else:
        given = f"--{'' if config.hflip else 'no-'}hflip given: flips not measured"
        check = AugmentationCheck(config.hflip, [given])
    augment_reasons = check.reasons
    base = config.replace(hflip=check.hflip)
    if config.image_size == "auto":
        base = base.replace(image_size=inputs.backbone.preprocessing.crop)
    search = Search(
        base, Inputs(sel_splits, inputs.modality, inputs.backbone), run.path / "auto", plugins,
        features, budget, extraction, reserve, retrain, cached_partial=cached_partial,
        first_stored=not backbone_reasons and config.disk_cache,
    )  # fmt: skip
    probe = {"few_shot_head": "logistic", "few_shot_refine": False}
    search.measure("probe", base.replace(strategy="few-shot", **probe), probe)
    search.measure("feature-extract", base.replace(strategy="feature-extract"), {})
    # without a budget or a trial count: the frozen candidates and one of each trained strategy
    trials = config.trials
    if trials is None and config.time_budget is None:
        trials = len(FIRST_TRAINED)
    trained_candidates(search, trials)
    winner = search.best()
    winner.chosen = True
    for cand in search.candidates:  # keep the logs; only the winner's checkpoints are needed
        if not cand.chosen and cand.folder:
            shutil.rmtree(Path(cand.folder) / "checkpoints", ignore_errors=True)
    frozen = max(
        (c for c in search.candidates[:2] if c.score is not None), key=lambda c: c.score or 0.0
    )
    # the winner's checkpoints serve as the run's when it trained on exactly the run's splits
    # and its frozen layers hold the same (pretrained, not random) weights as the run's backbone
    reusable = bool(inputs.splits.test) and inputs.backbone.weights_label != "none"
    reasons = [
        protocol,
        budget_reason,
        *backbone_reasons,
        *augment_reasons,
        f"measured {len(search.candidates)} candidates; {winner.name} scored "
        f"{winner.score:.1%} on {select_on} (best frozen-backbone candidate: {frozen.name} "
        f"{frozen.score:.1%}); ties go to the cheaper candidate",
    ]
    if search.unfit:
        reasons.append(
            f"not started, they did not fit the budget with the final evaluation still to come: "
            f"{', '.join(search.unfit.values())}"
        )
    selection = Selection(
        protocol, select_on, report_on, round(budget, 1), budget_reason, check.hflip,
        augment_reasons, search.candidates, reasons, reusable=reusable,
        model=config.model if backbone_reasons else None,
    )  # fmt: skip
    save_selection(run, selection)
    return selection, features

"""Plan a training run: every decision taken before data loaders exist, each with its reason.

:func:`make_plan` resolves ``--strategy auto`` (from data size and a cross-validated probe of
the frozen features), gives the backbone its head and the closed-form head start, applies the
strategy's first trainable set and the BatchNorm policy, decides the cached-feature fast path
and computes class weights. The :class:`Plan` is what metrics.json's ``run`` block reports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from headstart.config import TrainConfig
from headstart.console import console
from headstart.data import DataSplits
from headstart.evaluation.probe import cross_validated_probe
from headstart.modalities import Modality
from headstart.models import Backbone
from headstart.models.heads import DENSE_HEADS, CosineClassifier, head_kind
from headstart.strategies import Strategy, make_strategy
from headstart.strategies.auto import AutoDecision, decide, decide_few_shot, is_few_shot
from headstart.training.activations import ActivationPlan, plan_activations
from headstart.training.augment_check import augmented_images, flip_decision
from headstart.training.features import FeatureSource
from headstart.training.head_init import init_head_from_features, prepare_head


@dataclass
class Plan:
    """The decisions of a run (see module doc)."""

    strategy: Strategy
    decision: AutoDecision | None
    head_init: str
    bn_frozen: bool
    bn_reason: str
    cached_features: bool
    frozen_throughout: bool
    class_weights: torch.Tensor | None
    trainable: int
    total: int
    num_workers: int
    #: train-split features of the starting backbone, when a decision needed them
    train_features: tuple[torch.Tensor, torch.Tensor] | None = None
    #: stages ``cut..`` train on cached activations at the cut (frozen prefix), or ``None``
    activations: ActivationPlan | None = None
    #: random horizontal flips in the training augmentation, and why
    hflip: bool = True
    flip_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "auto_decision": self.decision.to_dict() if self.decision else None,
            "batchnorm": {"trainable_stages_frozen": self.bn_frozen, "reason": self.bn_reason},
            "class_weights": (
                self.class_weights.tolist() if self.class_weights is not None else None
            ),
            "cached_activations": self.activations.to_dict() if self.activations else None,
            "augmentation": {"hflip": self.hflip, "reason": self.flip_reason},
        }


def default_num_workers() -> int:
    """DataLoader workers sized to the machine: half the cores, at most 4 (0 on 1-2 cores,
    where worker processes only compete with the model for the same cores)."""
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    return 0 if cores <= 2 else min(4, cores // 2)


def num_workers_for(config: TrainConfig) -> int:
    return config.num_workers if config.num_workers is not None else default_num_workers()


def bn_policy(config: TrainConfig, probe_start: bool = False) -> tuple[bool, str]:
    """Whether BatchNorm running statistics of *trainable* stages stay frozen, and why.
    (Frozen stages always keep theirs.) ``probe_start``: the head starts from a closed-form fit
    of the frozen features and the backbone trains (linear probe, then fine-tuning)."""
    if config.bn == "frozen":
        return True, "--bn frozen"
    if config.bn == "train":
        return False, "--bn train"
    if config.batch_size < 16:
        return (
            True,
            f"--bn auto: per-device batch {config.batch_size} < 16 gives noisy batch statistics",
        )
    if probe_start:
        return True, (
            "--bn auto: the head starts from a probe of the frozen features, and batch "
            "statistics would change those features under it (--bn train to update them)"
        )
    return False, f"--bn auto: per-device batch {config.batch_size} >= 16"


def ever_trainable(strategy: Strategy, num_stages: int, epochs: int) -> set[int]:
    """Stages that are trainable in some epoch within ``epochs`` epochs."""
    return {i for e in range(epochs) for i in strategy.trainable_stages(e, num_stages)}


def late_joiners(strategy: Strategy, num_stages: int, epochs: int) -> set[int]:
    """Stages that become trainable after epoch 0 within ``epochs`` epochs."""
    return ever_trainable(strategy, num_stages, epochs) - strategy.trainable_stages(0, num_stages)


def apply_bn_policy(
    config: TrainConfig, strategy: Strategy, backbone: Backbone, probe_start: bool
) -> tuple[bool, str]:
    """Set ``backbone.bn_frozen`` per stage; returns :func:`bn_policy`'s answer for the stages
    trained from the start. Under ``--bn auto`` stages that join later keep their statistics
    too: updated statistics would shift the features under a head and later stages fitted to
    the old ones, in the few (low-LR) epochs left to adapt."""
    frozen, reason = bn_policy(config, probe_start)
    n = len(backbone.stages)
    late = late_joiners(strategy, n, config.epochs) if config.bn == "auto" else set()
    backbone.bn_frozen = [frozen or i in late for i in range(n)]
    if late and not frozen:
        reason += "; stages that join after epoch 0 keep theirs"
    if config.bn == "auto":
        ever = ever_trainable(strategy, n, config.epochs)
        reason += quicken_bn_statistics(
            backbone, [i for i in sorted(ever) if not backbone.bn_frozen[i]]
        )
    return frozen, reason


#: the least BatchNorm momentum (PyTorch's convention: the weight of the new batch) that
#: ``--bn auto`` gives statistics a run updates; PyTorch's default, which torchvision's
#: models were trained with
MIN_BN_MOMENTUM = 0.1


def quicken_bn_statistics(backbone: Backbone, stages: Sequence[int]) -> str:
    """Raise the momentum of the BatchNorm layers in ``stages`` (those whose statistics the
    run updates) to at least :data:`MIN_BN_MOMENTUM`; returns the reason to append, or "".

    Weights ported from TensorFlow carry its decay 0.99 as momentum 0.01 (EfficientNet-Lite0):
    running statistics then average over ~100 steps, longer than a short run on a small data
    set (500 images, batch 32, 5 epochs: 80 steps). Training normalises with the batch's
    statistics while every validation, the checkpoint choice and the exported model use
    running ones still mostly ImageNet's. Measured (Animal-MNIST 50/30/100, Lite0, 112 px,
    partial, last 3 stages, 5 epochs, seed 0): val 0.54 after epoch 0 and test 0.843 with
    0.01; 0.82 and 0.910 with 0.1 (the training itself is identical: it normalises with batch
    statistics); statistics frozen instead (``--bn frozen``) gave 0.919. ``--bn train`` keeps
    the model's own momentum."""
    slow = [
        bn
        for i in stages
        for bn in backbone.stage_batchnorms(i)
        if bn.momentum is not None and bn.momentum < MIN_BN_MOMENTUM
    ]
    if not slow:
        return ""
    old = min(float(bn.momentum or 0.0) for bn in slow)
    for bn in slow:
        bn.momentum = MIN_BN_MOMENTUM
    return (
        f"; momentum raised from {old:g} to {MIN_BN_MOMENTUM:g} in {len(slow)} layers: at "
        f"{old:g} the statistics average over ~{round(1 / old)} steps and would lag the "
        "training data through a short run"
    )


def bn_line(untouched: str, frozen: bool, reason: str) -> str:
    """The plan's BatchNorm line (newline-terminated), or nothing when no BatchNorm layer will
    train (``untouched``, :func:`bn_untouched`'s answer: a backbone frozen throughout, or one
    without BatchNorm such as transformers, MiniLM)."""
    if untouched:
        return ""
    return f"BatchNorm statistics of trainable stages: {'frozen' if frozen else 'updated'} ({reason})\n"


def bn_untouched(backbone: Backbone, still: bool) -> str:
    """Why no BatchNorm statistics train in this run ("" when some may): the backbone stays
    frozen, or it has no BatchNorm layer (transformers, MiniLM)."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        return "the model has no BatchNorm layers"
    if still:
        return "the backbone stays frozen: its BatchNorm statistics are untouched"
    return ""


def linear_head_first(strategy: Strategy, backbone: Backbone, still: bool) -> bool:
    """A linear head that trains alone in epoch 0 of a run whose backbone trains later."""
    alone = not strategy.trainable_stages(0, len(backbone.stages))
    return alone and not still and head_kind(backbone.head) == "linear"


def frozen_throughout(strategy: Strategy, backbone: Backbone, epochs: int) -> bool:
    """Whether no backbone stage trains in any of ``epochs`` epochs."""
    n = len(backbone.stages)
    return all(not strategy.trainable_stages(e, n) for e in range(epochs))


def class_weights_for(config: TrainConfig, splits: DataSplits) -> torch.Tensor | None:
    """Inverse-frequency class weights for ``--class-weights auto`` (else ``None``)."""
    if config.class_weights != "auto":
        return None
    n_classes = len(splits.classes)
    if splits.multi_label:  # BCE pos_weight: negatives / positives of each label
        positives = torch.tensor(splits.label_matrix("train")).sum(0)
        weights = (len(splits.train) - positives) / positives.clamp(min=1)
        console.print(
            "positive-label weights: "
            + ", ".join(
                f"{c} {w:.2f}" for c, w in zip(splits.classes, weights.tolist(), strict=True)
            )
        )
        return weights
    targets = splits.targets("train")
    counts = torch.bincount(torch.tensor(targets), minlength=n_classes).clamp(min=1).float()
    weights = len(targets) / (n_classes * counts)
    console.print(
        "class weights: "
        + ", ".join(f"{c} {w:.2f}" for c, w in zip(splits.classes, weights.tolist(), strict=True))
    )
    return weights


def choose_strategy(
    config: TrainConfig, splits: DataSplits, train_features: Any, dense: bool = False
) -> tuple[str, AutoDecision | None, float]:
    """``(strategy name, auto decision or None, probe L2)``; ``train_features()`` is called
    only when ``auto`` needs the probe."""
    if config.strategy != "auto":
        return config.strategy, None, 1e-3
    counts = splits.counts()["train"]
    probe_l2 = 1e-3
    if dense:  # the probe scores pooled features; a per-pixel head reads stage maps
        decision = decide(len(splits.train), len(splits.classes), None)
        decision.reasons.append("dense task: no probe, decided by data size alone")
    elif not splits.single_label:  # the probe is one softmax regression: the static rules decide
        decision = decide(len(splits.train), len(splits.classes), None)
        kind = "multi-label" if splits.multi_label else "multi-task"
        decision.reasons.append(f"{kind} data: no probe, decided by data size alone")
    elif is_few_shot(counts):
        decision = decide_few_shot(counts)
    else:
        x, y = train_features()
        acc, probe_l2 = cross_validated_probe(x, y, len(splits.classes), seed=config.seed)
        decision = decide(len(splits.train), len(splits.classes), acc)
    console.print(f"[bold]auto strategy -> {decision.strategy}[/]")
    for reason in decision.reasons:
        console.print(f"  - {reason}")
    return decision.strategy, decision, probe_l2


def make_plan(
    config: TrainConfig,
    splits: DataSplits,
    backbone: Backbone,
    modality: Modality,
    features: FeatureSource,
) -> Plan:
    """Decide the run (see module doc); leaves ``backbone`` with its head, its first trainable
    set and BatchNorm policy applied."""
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def train_features() -> tuple[torch.Tensor, torch.Tensor]:
        if "train" not in cache:
            ds = modality.dataset(backbone, splits.train, splits.class_to_idx, seed=config.seed)
            cache["train"] = features("train", ds, splits.train)
        return cache["train"]

    dense = head_kind(backbone.head) in DENSE_HEADS  # segmentation, detection
    chosen, decision, probe_l2 = choose_strategy(config, splits, train_features, dense)
    head_init = prepare_head(backbone, config, chosen, splits.classes)
    strategy = make_strategy(config.replace(strategy=chosen))
    strategy.apply(backbone, 0)
    still = frozen_throughout(strategy, backbone, config.epochs)
    fast = config.cache_features and not (config.mixup or config.cutmix) and still and not dense
    cosine = isinstance(backbone.head, CosineClassifier)
    # closed-form head start from the frozen features: on the cached path, for a cosine head,
    # and for a linear head whose first phase trains it alone (gradual): that phase then starts
    # where feature extraction ends instead of spending the first epoch(s) on a random head.
    # Not when stages train from the start (partial, fine-tune): measured on Animal-MNIST
    # 50/class, 112 px, 4 epochs, fine-tune from the probe fell to 21.9 % test with frozen
    # BatchNorm statistics and 91.2 % with updated ones, vs 92.6 % from a random head.
    head_first = linear_head_first(strategy, backbone, still)
    probe = (
        config.head_init == "probe" and (fast or cosine or head_first) and splits.single_label
    )  # the probe fits one softmax head; a multi-label or multi-task head starts random
    bn_frozen, bn_reason = apply_bn_policy(config, strategy, backbone, probe and not still)
    untouched = bn_untouched(backbone, still)
    bn_reason = untouched or bn_reason  # metrics.json and the report
    trainable, total = backbone.param_counts()
    console.print(
        f"[bold]{config.model}[/] weights={backbone.weights_label}  input "
        f"{modality.describe_input(backbone)} ({backbone.preprocessing.source})\n"
        f"strategy {strategy.describe(backbone)}\n"
        f"{bn_line(untouched, bn_frozen, bn_reason)}"
        f"trainable parameters {trainable:,} / {total:,} ({100 * trainable / total:.2f} %)"
    )
    if head_kind(backbone.head) == "detection":  # its step depends on the detector
        console.print(f"optimiser {config.optimisation_reason()}")
    class_weights = class_weights_for(config, splits)
    if probe:
        x, y = train_features()
        start = init_head_from_features(backbone, x, y, len(splits.classes), probe_l2)
        head_init = start or head_init
    if dense and config.cache_features and (still or strategy.name != "fine-tune"):
        console.print(
            "cached features/activations: off (the dense head reads several stages' spatial "
            "maps every step; the caches hold pooled features or one cut)"
        )
    activations = (
        None
        if fast or dense
        else plan_activations(config, backbone, strategy, len(splits.train), len(splits.val))
    )
    flipped = augmented_images(config, fast, activations)
    hflip, flip_reason = flip_decision(config, splits, backbone, modality, features, flipped, dense)
    console.print(f"augmentation {config.augment}: {flip_reason}")
    return Plan(
        strategy, decision, head_init, bn_frozen, bn_reason, fast, still, class_weights,
        trainable, total, features.num_workers, cache.get("train"), activations,
        hflip, flip_reason,
    )  # fmt: skip

"""Whether random horizontal flips keep what the images mean, measured on the frozen features.

A mirror image is another class on some data: glyphs (b/d), digits, text, oriented objects
(a grating at angle t mirrors to 180 - t). The default augmentation presets flip; trained on
such data with flips, a model learns to confuse the pairs (gratings, 4 epochs: gradual 88.4 %
and fine-tune 57.5 % test with flips, vs 91.5 % for feature extraction; ``auto``, which turned
them off, 99.8 %). So flips are *measured*, not assumed: a linear probe is fitted on the
pretrained features of training images and scored on held-out images and on their mirror
images; a probe more than :data:`VIEW_DROP_POINTS` points worse on the mirror images says flips
change the class, and they are turned off.

``--strategy auto`` runs the check on its selection split (:mod:`headstart.training.search`).
An explicit strategy runs it (:func:`flip_decision`) when ``--hflip``/``--no-hflip`` is unset
and its training images really are flipped (images, or stored augmented views), on a subsample
(at most :data:`CHECK_TRAIN` training and :data:`CHECK_HELD_OUT` val images: a few seconds of
frozen forward passes). Random crops are not judged this way (see the search's module doc).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from headstart.config import TrainConfig
from headstart.data import DataSplits
from headstart.evaluation.probe import fit_logistic
from headstart.models.weights_spec import is_random_init

#: a probe this many points less accurate on mirror images than on the plain images: flips
#: change what the images mean
VIEW_DROP_POINTS = 3.0
#: why flips are not measured on text (or other non-image) data
NOT_IMAGES = "not image data (no image augmentation applies)"
#: an explicit strategy's check fits its probe on at most this many training images ...
CHECK_TRAIN = 300
#: ... and scores it on at most this many val images, plain and mirrored
CHECK_HELD_OUT = 200


@dataclass
class AugmentationCheck:
    """What the probe says about the augmentations auto would use (see module doc)."""

    hflip: bool = True
    reasons: list[str] = field(default_factory=list)


def augmentation_check(
    features: Any,
    modality: Any,
    backbone: Any,
    sel: DataSplits,
    seed: int,
    fit_xy: tuple[torch.Tensor, torch.Tensor],
) -> AugmentationCheck:
    """Probe accuracy on ``sel.val``, plain vs mirrored, for a probe fitted on ``fit_xy``:
    mirror images that cost more than :data:`VIEW_DROP_POINTS` mean another class, and random
    flips are turned off. ``features`` is a :class:`~headstart.training.features.FeatureSource`."""
    if not modality.augmentable:
        return AugmentationCheck(True, [f"flips not measured: {NOT_IMAGES}"])
    from torchvision.transforms import v2

    from headstart.data.datasets import ImageDataset
    from headstart.data.transforms import build_eval_transform

    idx, pre = sel.class_to_idx, backbone.preprocessing
    probe = fit_logistic(*fit_xy, len(sel.classes))
    x_plain, y = features(
        "auto-select", modality.dataset(backbone, sel.val, idx, seed=seed), sel.val
    )
    acc = float((probe.logits(x_plain).argmax(1) == y).float().mean())

    def view_accuracy(name: str, transform: Any) -> float:
        ds = ImageDataset(sel.val, idx, transform, pre.resize, seed=seed)
        x, _ = features(f"auto-select-{name}", ds, sel.val, plain=False)
        return float((probe.logits(x).argmax(1) == y).float().mean())

    mirrored = view_accuracy(
        "flipped", v2.Compose([v2.RandomHorizontalFlip(1.0), build_eval_transform(pre)])
    )
    check = AugmentationCheck(hflip=100 * (acc - mirrored) <= VIEW_DROP_POINTS)
    verdict = "keep" if check.hflip else "change"
    check.reasons.append(
        f"mirror images {verdict} the predictions (probe {acc:.1%} on selection images, "
        f"{mirrored:.1%} on their mirror images: {100 * (mirrored - acc):+.1f} points)"
        + ("" if check.hflip else ": random horizontal flips are turned off")
    )
    return check


def subsample(samples: list[Any], most: int, seed: int, per_class: bool) -> list[Any]:
    """At most ``most`` of ``samples``, drawn with ``seed``; ``per_class``: the same number
    from every class (as far as each has them), so a probe sees every class."""
    if len(samples) <= most:
        return list(samples)
    rng = random.Random(seed)
    if not per_class:
        return rng.sample(list(samples), most)
    by_class: dict[str, list[Any]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    k = max(1, most // len(by_class))
    return [
        s
        for name in sorted(by_class)
        for s in rng.sample(by_class[name], min(k, len(by_class[name])))
    ]


def augmented_images(config: TrainConfig, cached_features: bool, activations: Any) -> bool:
    """Whether training sees augmented images: through the loaders every epoch, or as stored
    augmented views (``--feature-views`` > 1); one stored un-augmented view sees none."""
    if cached_features:
        return config.feature_views > 1
    if activations is not None:
        return activations.views > 1 or activations.until is not None
    return True


def flip_decision(
    config: TrainConfig,
    splits: DataSplits,
    backbone: Any,
    modality: Any,
    features: Any,
    flipped_in_training: bool,
    dense: bool = False,
) -> tuple[bool, str]:
    """``(random flips on?, why)`` for a run: the user's ``--hflip``/``--no-hflip``, or, when
    unset, the check of the module doc where it can say something, else flips on.
    ``dense``: detection or segmentation (not measured)."""
    if config.hflip is not None:
        return config.hflip, (
            f"random flips {'on' if config.hflip else 'off'} as configured (--hflip/--no-hflip, "
            "or auto's flip check: run.auto.augment_reasons)"
        )
    why_not = (
        "the training images are not augmented"
        if not flipped_in_training or config.augment == "none"
        else NOT_IMAGES if not modality.augmentable
        else "a dense task (flips on: boxes and masks are flipped with their image; no "
        "pooled-feature probe to measure with)" if dense
        else "randomly initialised weights tell nothing about mirror images (flips on)"
        if is_random_init(backbone.weights_label)
        else "the check's probe fits one class per image (flips on)" if not splits.single_label
        else "no val images to check on (flips on)" if not splits.val or len(splits.classes) < 2
        else None
    )  # fmt: skip
    if why_not is not None:
        return True, f"random flips not measured: {why_not}"
    train = subsample(splits.train, CHECK_TRAIN, config.seed, per_class=True)
    held_out = subsample(splits.val, CHECK_HELD_OUT, config.seed, per_class=False)
    sel = DataSplits(train, held_out, [], splits.classes)
    # the loaders draw their base seeds from the global RNG: forked, so the run trains exactly
    # as it would with the flag given (and as auto's candidate of the same settings does)
    with torch.random.fork_rng(devices=[]):
        ds = modality.dataset(backbone, train, sel.class_to_idx, seed=config.seed)
        fit_xy = features("flip-check-train", ds, train)
        check = augmentation_check(features, modality, backbone, sel, config.seed, fit_xy)
    return check.hflip, (
        f"flip check ({len(train)} train / {len(held_out)} val images, frozen pretrained "
        f"features): {check.reasons[0]}" + ("" if check.hflip else " (--hflip to keep them)")
    )

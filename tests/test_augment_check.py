"""Flips measured for explicit strategies (training/augment_check.py): the user's flag wins,
nothing is measured where nothing would be flipped, a mirrored class turns flips off, and the
measurement leaves the RNG as it found it (the run trains as with the flag given)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from headstart.config import TrainConfig
from headstart.data import DataSplits
from headstart.data.scan import Sample
from headstart.models import create_backbone
from headstart.training.activations import ActivationPlan
from headstart.training.augment_check import (
    CHECK_HELD_OUT,
    augmentation_check,
    augmented_images,
    flip_decision,
    subsample,
)

MODALITY = SimpleNamespace(augmentable=True, dataset=lambda *a, **k: None)


def config(**kw: Any) -> TrainConfig:
    return TrainConfig.create(data="d", strategy="fine-tune", **kw)


def splits(n: int = 40) -> DataSplits:
    train = [Sample(Path(f"t{i}.png"), "ab"[i % 2]) for i in range(n)]
    val = [Sample(Path(f"v{i}.png"), "ab"[i % 2]) for i in range(n)]
    return DataSplits(train, val, [], ["a", "b"])


def pretrained_backbone() -> Any:
    real = create_backbone("torchvision:resnet18", 2, weights="none", image_size=32)
    return SimpleNamespace(weights_label="IMAGENET1K_V1", preprocessing=real.preprocessing)


def stub_features(mirror_sign: float) -> Any:
    """Features whose first coordinate says the class; mirror images get ``mirror_sign`` times
    them (-1: a mirror image looks like the other class)."""
    gen = torch.Generator().manual_seed(0)
    calls: list[str] = []

    def features(name: str, dataset: object, samples: list[Sample], plain: bool = True) -> Any:
        calls.append(name)
        y = torch.tensor([0 if s.label == "a" else 1 for s in samples])
        x = torch.stack([1.0 - 2.0 * y, torch.zeros(len(y))], 1)
        x = x + 0.1 * torch.randn(x.shape, generator=gen)
        return (mirror_sign * x if name.endswith("flipped") else x), y

    features.calls = calls  # type: ignore[attr-defined]
    return features


@pytest.mark.parametrize("given", [True, False])
def test_the_users_flag_wins_and_nothing_is_measured(given: bool) -> None:
    def features(*a: Any, **k: Any) -> Any:
        raise AssertionError("measured although --hflip/--no-hflip was given")

    hflip, reason = flip_decision(
        config(hflip=given), splits(), pretrained_backbone(), MODALITY, features, True
    )
    assert hflip is given and "as configured" in reason


@pytest.mark.parametrize(
    ("kw", "flipped", "backbone", "words"),
    [
        ({}, False, "pretrained", "not augmented"),
        ({"augment": "none"}, True, "pretrained", "not augmented"),
        ({}, True, "random", "randomly initialised"),
        ({"dense": True}, True, "pretrained", "a dense task"),
    ],
)
def test_flips_stay_on_where_the_check_has_nothing_to_say(
    kw: dict[str, Any], flipped: bool, backbone: str, words: str
) -> None:
    b = (
        pretrained_backbone()
        if backbone == "pretrained"
        else create_backbone("torchvision:resnet18", 2, weights="none", image_size=32)
    )
    dense = kw.pop("dense", False)
    hflip, reason = flip_decision(
        config(**kw), splits(), b, MODALITY, stub_features(-1), flipped, dense
    )
    assert hflip is True and words in reason


def test_text_is_not_measured_and_auto_says_why() -> None:
    def features(*a: Any, **k: Any) -> Any:
        raise AssertionError("flips measured on text")

    text, backbone = SimpleNamespace(augmentable=False), pretrained_backbone()
    hflip, reason = flip_decision(config(), splits(), backbone, text, features, True)
    assert hflip is True and "not image data" in reason
    check = augmentation_check(
        features, text, backbone, splits(), 0, (torch.zeros(2, 2), torch.zeros(2))
    )
    assert check.hflip is True and "not image data" in check.reasons[0]  # auto's reasons


@pytest.mark.parametrize(("sign", "expected"), [(1.0, True), (-1.0, False)])
def test_a_mirrored_class_turns_flips_off_and_the_rng_is_untouched(
    sign: float, expected: bool
) -> None:
    features, cfg, data, backbone = stub_features(sign), config(), splits(), pretrained_backbone()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    hflip, reason = flip_decision(cfg, data, backbone, MODALITY, features, True)
    assert torch.equal(torch.get_rng_state(), before)
    assert hflip is expected
    assert reason.startswith("flip check (40 train / 40 val images")
    assert ("turned off (--hflip to keep them)" in reason) is not expected
    assert features.calls == ["flip-check-train", "auto-select", "auto-select-flipped"]


def test_the_subsample_keeps_every_class_and_its_limit() -> None:
    samples = [Sample(Path(f"{i}.png"), "abc"[i % 3] if i < 90 else "a") for i in range(400)]
    picked = subsample(samples, 60, seed=0, per_class=True)
    assert Counter(s.label for s in picked) == {"a": 20, "b": 20, "c": 20}
    assert len(subsample(samples, CHECK_HELD_OUT, seed=0, per_class=False)) == CHECK_HELD_OUT
    assert subsample(samples, 60, seed=0, per_class=True) == picked  # seeded


def test_which_runs_see_augmented_images() -> None:
    cfg = config()
    act = ActivationPlan(5, "layer3", (8, 2, 2), 10, views=1)
    assert augmented_images(cfg, cached_features=False, activations=None)  # images every epoch
    assert not augmented_images(cfg, cached_features=True, activations=None)  # one plain view
    assert augmented_images(config(feature_views=4), cached_features=True, activations=None)
    assert not augmented_images(cfg, cached_features=False, activations=act)
    act.until = 2  # gradual: images from epoch 2
    assert augmented_images(cfg, cached_features=False, activations=act)

"""``--strategy auto``: choose a strategy from data size and domain similarity, with reasons.

Rules follow the seeds' tables: a class with at most 10 training images -> few-shot (prototype
head, no probe needed); fewer than 1,000 training images -> feature extraction;
1,000-10,000 -> gradual unfreezing; more -> full fine-tuning (backbone at a lower LR). Domain
similarity is measured, not guessed: a 3-fold cross-validated linear probe on the pretrained
features of (a sample of) the training images. Low similarity moves the choice one step towards
fine-tuning (feature-extract -> partial -> gradual -> fine-tune), as the seeds advise for data
unlike ImageNet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LADDER = ["feature-extract", "partial", "gradual", "fine-tune"]
LOW_SIMILARITY = 0.5  # normalised probe accuracy below this counts as a different domain
FEW_SHOT_MAX = 10  # a class with at most this many training images makes the task few-shot


@dataclass
class AutoDecision:
    strategy: str
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_few_shot(class_counts: dict[str, int]) -> bool:
    """True when some class has at most :data:`FEW_SHOT_MAX` training images."""
    return bool(class_counts) and min(class_counts.values()) <= FEW_SHOT_MAX


def decide_few_shot(class_counts: dict[str, int]) -> AutoDecision:
    """The few-shot decision, with the smallest class named in the reason."""
    smallest = min(class_counts, key=lambda c: class_counts[c])
    n = class_counts[smallest]
    return AutoDecision(
        "few-shot",
        [
            f"class {smallest!r} has {n} training image{'s' if n != 1 else ''} <= {FEW_SHOT_MAX}: "
            "too few to fit even a linear head reliably; class prototypes of the frozen "
            "pretrained embeddings need no fitting (then refined gently)"
        ],
        {
            "train_images": sum(class_counts.values()),
            "classes": len(class_counts),
            "smallest_class": smallest,
            "smallest_class_images": n,
        },
    )


def decide(train_images: int, num_classes: int, probe_accuracy: float | None) -> AutoDecision:
    """The strategy for ``train_images`` images and a probe accuracy (None: not measured).
    (Few-shot data is recognised first, by :func:`is_few_shot`.)"""
    chance = 1.0 / num_classes
    numbers: dict[str, Any] = {"train_images": train_images, "classes": num_classes}
    if train_images < 1000:
        base, why = (
            "feature-extract",
            f"{train_images} training images < 1,000: few enough that training the backbone would overfit",
        )
    elif train_images <= 10_000:
        base, why = (
            "gradual",
            f"{train_images} training images in 1,000-10,000: enough to adapt upper stages gradually",
        )
    else:
        base, why = (
            "fine-tune",
            f"{train_images} training images > 10,000: enough to fine-tune everything at a lower backbone LR",
        )
    reasons = [why]
    choice = base
    if probe_accuracy is not None:
        similarity = (probe_accuracy - chance) / (1.0 - chance)
        numbers.update(
            probe_accuracy=round(probe_accuracy, 4),
            chance=round(chance, 4),
            similarity=round(similarity, 4),
        )
        if similarity < LOW_SIMILARITY:
            choice = LADDER[min(LADDER.index(base) + 1, len(LADDER) - 1)]
            reasons.append(
                f"pretrained features separate the classes poorly (probe {probe_accuracy:.1%} vs chance {chance:.1%}, "
                f"similarity {similarity:.2f} < {LOW_SIMILARITY}): moving one step towards fine-tuning"
            )
        else:
            reasons.append(
                f"pretrained features separate the classes well (probe {probe_accuracy:.1%} vs chance {chance:.1%}, "
                f"similarity {similarity:.2f} >= {LOW_SIMILARITY}): the domain is close enough"
            )
    return AutoDecision(choice, reasons, numbers)

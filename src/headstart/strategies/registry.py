"""The strategy registry: strategy name -> how to build it from a :class:`TrainConfig`.

Adding a strategy = one :class:`~headstart.strategies.base.Strategy` subclass and one entry
here (plus the name in ``config.StrategyName``). ``auto`` is not a strategy object: it is
resolved to one of these names before training (:mod:`headstart.strategies.auto`).
"""

from __future__ import annotations

from collections.abc import Callable

from headstart.config import TrainConfig
from headstart.strategies.base import FeatureExtract, FewShot, FineTune, Gradual, Partial, Strategy
from headstart.strategies.lora import LoRA

STRATEGIES: dict[str, Callable[[TrainConfig], Strategy]] = {
    "feature-extract": lambda c: FeatureExtract(),
    "few-shot": lambda c: FewShot(),
    "partial": lambda c: Partial(c.unfreeze_last),
    "gradual": lambda c: Gradual(c.unfreeze_every, c.gradual_steps, epochs=c.epochs),
    "fine-tune": lambda c: FineTune(),
    "lora": lambda c: LoRA(c.lora_r, c.lora_alpha, c.lora_dropout),
}


def make_strategy(config: TrainConfig) -> Strategy:
    """The strategy object named by ``config.strategy`` (``auto`` must be resolved first)."""
    try:
        build = STRATEGIES[config.strategy]
    except KeyError:
        raise ValueError(
            f"unknown strategy {config.strategy!r} (known: {', '.join(STRATEGIES)})"
        ) from None
    return build(config)

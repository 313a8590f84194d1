"""Transfer strategies: small stateful objects that decide which stages train.

A strategy answers one question per epoch — which stages are trainable — and carries any state
it needs in ``state_dict()``, which headstart stores in every checkpoint so ``--resume`` restores
it exactly (cf. Lightning's ``BaseFinetuning``). The optimizer's parameter groups are derived from
the answer by :mod:`headstart.strategies.param_groups`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from headstart.config import TrainConfig
from headstart.models.backbone import Backbone


class Strategy(ABC):
    """Decides the trainable stages of a :class:`Backbone` for each epoch."""

    name: ClassVar[str]

    @abstractmethod
    def trainable_stages(self, epoch: int, num_stages: int) -> set[int]:
        """Indices of the stages trained during ``epoch`` (0-based)."""

    def describe(self, backbone: Backbone) -> str:
        idx = sorted(self.trainable_stages(0, len(backbone.stages)))
        if not idx:
            return f"{self.name}: backbone frozen, head trained"
        names = [backbone.stages[i].name for i in idx]
        return f"{self.name}: head + {len(idx)}/{len(backbone.stages)} stages trained ({', '.join(names)})"

    def apply(self, backbone: Backbone, epoch: int) -> bool:
        """Set the backbone's trainable stages for ``epoch``; True if they changed."""
        wanted = self.trainable_stages(epoch, len(backbone.stages))
        current = {i for i, frozen in enumerate(backbone.frozen_stages) if not frozen}
        changed = wanted != current
        backbone.set_trainable_stages(wanted)
        return changed

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint strategy {state.get('name')!r} is not {self.name!r}")


class FeatureExtract(Strategy):
    """Backbone frozen (BatchNorm in eval mode); only the head learns."""

    name = "feature-extract"

    def trainable_stages(self, epoch: int, num_stages: int) -> set[int]:
        return set()


class FineTune(Strategy):
    """Every stage trains (at ``lr x backbone_lr_mult``), the head at ``lr``."""

    name = "fine-tune"

    def trainable_stages(self, epoch: int, num_stages: int) -> set[int]:
        return set(range(num_stages))


class Partial(Strategy):
    """The last ``unfreeze_last`` stages and the head train; earlier stages stay frozen."""

    name = "partial"

    def __init__(self, unfreeze_last: int = 1) -> None:
        if unfreeze_last < 1:
            raise ValueError("unfreeze_last must be >= 1")
        self.unfreeze_last = unfreeze_last

    def trainable_stages(self, epoch: int, num_stages: int) -> set[int]:
        n = min(self.unfreeze_last, num_stages)
        return set(range(num_stages - n, num_stages))

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unfreeze_last": self.unfreeze_last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.unfreeze_last = int(state["unfreeze_last"])


def make_strategy(config: TrainConfig) -> Strategy:
    """The strategy object named by ``config.strategy``."""
    if config.strategy == "feature-extract":
        return FeatureExtract()
    if config.strategy == "fine-tune":
        return FineTune()
    if config.strategy == "partial":
        return Partial(config.unfreeze_last)
    raise ValueError(f"unknown strategy {config.strategy!r}")

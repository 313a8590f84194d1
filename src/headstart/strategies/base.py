"""Transfer strategies: small stateful objects that decide which stages train.

A strategy answers one question per epoch — which stages are trainable — and carries any state
it needs in ``state_dict()``, which headstart stores in every checkpoint so ``--resume`` restores
it exactly (cf. Lightning's ``BaseFinetuning``). The optimizer's parameter groups are derived from
the answer by :mod:`headstart.strategies.param_groups`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

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

    def apply(self, backbone: Backbone, epoch: int) -> list[int]:
        """Set the backbone's trainable stages for ``epoch``; returns the stages that became
        trainable (in :meth:`unfreeze_order`), which the optimizer must now take in."""
        wanted = self.trainable_stages(epoch, len(backbone.stages))
        current = {i for i, frozen in enumerate(backbone.frozen_stages) if not frozen}
        backbone.set_trainable_stages(wanted)
        return [i for i in self.unfreeze_order(epoch, len(backbone.stages)) if i not in current]

    def unfreeze_order(self, epoch: int, num_stages: int) -> list[int]:
        """Trainable stages at ``epoch`` in the order they joined the optimizer (output side
        first within one step). Optimizer groups are built in this order, so a resumed run
        rebuilds exactly the groups an uninterrupted run has."""
        order: list[int] = []
        for e in range(epoch + 1):
            new = sorted(self.trainable_stages(e, num_stages) - set(order), reverse=True)
            order.extend(new)
        return order

    def events(self, epochs: int, backbone: Backbone) -> list[tuple[int, list[str]]]:
        """``(epoch, stage names that become trainable)`` for each change within ``epochs``."""
        out: list[tuple[int, list[str]]] = []
        seen: set[int] = set()
        for e in range(epochs):
            new = sorted(self.trainable_stages(e, len(backbone.stages)) - seen, reverse=True)
            if new and e > 0:
                out.append((e, [backbone.stages[i].name for i in new]))
            seen |= set(new)
        return out

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


class FewShot(FeatureExtract):
    """1-10 images per class: the backbone stays frozen and the head starts where a classifier
    can be computed in closed form — class-mean prototypes of the centred, L2-normalised
    embeddings behind a cosine head (``--few-shot-head prototype``), or a logistic-regression
    probe behind a linear head (``logistic``) — and is then optionally refined."""

    name = "few-shot"

    def describe(self, backbone: Backbone) -> str:
        from headstart.models.heads import CosineClassifier

        kind = (
            "cosine prototype head"
            if isinstance(backbone.head, CosineClassifier)
            else "linear head from a logistic-regression probe"
        )
        return f"{self.name}: backbone frozen, {kind}"


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


def gradual_schedule(steps: int, epochs: int) -> tuple[int, int]:
    """``(unfreeze_every, steps that fit)`` for a ``gradual`` run of ``epochs`` epochs without
    ``--unfreeze-every``: every step joins by epoch ``epochs // 2`` (under the cosine schedule
    the LR is then still >= half its peak, and each stage trains for at least the second half
    of the run), spread evenly; fewer steps when fewer epochs fit (the last one still unfreezes
    all remaining stages), none in a 1-epoch run."""
    last = epochs // 2
    fit = min(steps, last)
    return (max(1, last // fit) if fit else 1), fit


class Gradual(Strategy):
    """Gradual unfreezing (ULMFiT; the seeds' fc -> layer4 -> layer3 -> rest): the head alone
    for ``unfreeze_every`` epochs, then one more stage (output side first) every
    ``unfreeze_every`` epochs; step ``steps`` unfreezes all remaining stages.

    Without ``unfreeze_every`` the schedule is fitted to ``epochs`` (:func:`gradual_schedule`),
    so no stage joins when the LR has nearly decayed. The trainable set is a pure function of
    the epoch, so resume and every DDP rank agree.
    """

    name = "gradual"

    def __init__(
        self, unfreeze_every: int | None = None, steps: int = 3, epochs: int | None = None
    ) -> None:
        if (unfreeze_every is not None and unfreeze_every < 1) or steps < 1:
            raise ValueError("unfreeze_every and steps must be >= 1")
        self.epochs = epochs
        self.derived = unfreeze_every is None and epochs is not None
        if self.derived:
            assert epochs is not None
            self.unfreeze_every, self.steps = gradual_schedule(steps, epochs)
        else:
            self.unfreeze_every, self.steps = unfreeze_every or 2, steps

    def trainable_stages(self, epoch: int, num_stages: int) -> set[int]:
        if self.steps == 0:  # a run too short to unfreeze anything
            return set()
        k = min(epoch // self.unfreeze_every, self.steps)
        if k >= self.steps:
            return set(range(num_stages))
        return set(range(max(0, num_stages - k), num_stages))

    def describe(self, backbone: Backbone) -> str:
        """The unfreezing events within the run (all ``steps`` when ``epochs`` is unknown)."""
        horizon = self.epochs or self.steps * self.unfreeze_every + 1
        parts = ["head"]
        for e, names in self.events(horizon, backbone):
            label = names[0] if len(names) == 1 else f"rest ({len(names)} stages)"
            parts.append(f"+{label} @epoch {e}")
        text = f"{self.name}: " + " -> ".join(parts)
        missed = sum(1 for k in range(1, self.steps + 1) if k * self.unfreeze_every >= horizon)
        if self.steps == 0:
            text += f" (a {horizon}-epoch run leaves no epoch to unfreeze in)"
        elif self.derived:
            text += f" (steps fitted to {horizon} epochs: all by epoch {horizon // 2})"
        if missed:
            text += (
                f"; {missed} later step(s) of --unfreeze-every {self.unfreeze_every} fall past "
                f"the {horizon}-epoch run"
            )
        return text

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unfreeze_every": self.unfreeze_every, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.unfreeze_every, self.steps = int(state["unfreeze_every"]), int(state["steps"])

"""``headstart lr-find``: Lightning's learning-rate range test on the run's real setup."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.tuner import Tuner

from headstart.config import TrainConfig
from headstart.console import console, setup_logging
from headstart.errors import HeadstartError
from headstart.tasks import task_for
from headstart.training.fit import load_inputs, prepare
from headstart.training.plugins import PluginFactory
from headstart.training.trainer import make_trainer


@dataclass
class LRFindResult:
    suggestion: float | None
    lrs: list[float]
    losses: list[float]
    plot: Path | None


def lr_find(
    config: TrainConfig | None = None,
    *,
    plot: str | Path | None = "lr_find.png",
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_training: int = 100,
    plugins: Sequence[PluginFactory] = (),
    **overrides: Any,
) -> LRFindResult:
    """Sweep the LR exponentially from ``min_lr`` to ``max_lr`` over ``num_training`` steps with
    the same data, model, strategy and optimizer as :func:`headstart.train`, and suggest the LR at
    the steepest loss descent. Every parameter group gets the swept LR, so the suggestion is for
    ``--lr`` (the head); the backbone keeps its ``--backbone-lr-mult`` relation when training.
    Nothing is written except the plot.

    Example::

        res = headstart.lr_find(data="data/", model="torchvision:resnet18")
        print(res.suggestion)
    """
    setup_logging()
    config = config.replace(**overrides) if config is not None else TrainConfig.create(**overrides)
    inputs = load_inputs(config)
    # the task resolved as train() does (auto: from the data), so prepare builds its head
    config = config.replace(task=task_for(config, inputs.splits.multi_label).name)
    p = prepare(config, inputs, plugins)
    with tempfile.TemporaryDirectory(prefix="headstart-lrfind-") as tmp:
        trainer = make_trainer(
            config, Path(tmp), steps_per_epoch=len(p.loaders.train), max_epochs=num_training,
            distributed=False,
        )  # fmt: skip
        finder = Tuner(trainer).lr_find(
            p.module, train_dataloaders=p.loaders.train, val_dataloaders=p.loaders.val,
            min_lr=min_lr, max_lr=max_lr, num_training=num_training, update_attr=False,
        )  # fmt: skip
    if finder is None:
        raise HeadstartError("the LR range test produced no result")
    suggestion = finder.suggestion()
    plot_path: Path | None = None
    if plot is not None:
        from matplotlib.figure import Figure

        # drawn on a Figure of our own (not pyplot): a notebook's backend and figures stay as
        # they are
        fig = Figure()
        ax = fig.subplots()
        finder.plot(suggest=suggestion is not None, ax=ax)
        ax.set_title(
            f"LR range test: {config.model}, {p.plan.strategy.name}"
            + (f" — suggestion {suggestion:.2e}" if suggestion else "")
        )
        plot_path = Path(plot)
        fig.savefig(plot_path, dpi=120, bbox_inches="tight")
    lrs = [float(v) for v in finder.results.get("lr", [])]
    losses = [float(v) for v in finder.results.get("loss", [])]
    if suggestion is None:
        console.print("no clear suggestion (the loss did not fall enough); inspect the plot")
    else:
        console.print(f"suggested --lr {suggestion:.3g} (steepest descent of the loss)")
    if plot_path:
        console.print(f"plot: {plot_path}")
    return LRFindResult(suggestion, lrs, losses, plot_path)

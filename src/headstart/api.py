"""The public Python API behind ``import headstart`` (the CLI is a thin layer over it).

``train`` and ``lr_find`` are the training core's functions with the library's plug-ins
(domain adaptation: ``--adapt``, ``--target-eval``) attached; the rest is re-exported from
where it lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from headstart.adapt.domain import domain_plugin
from headstart.config import TrainConfig
from headstart.training import fit as _fit
from headstart.training import lr_find as _lr_find
from headstart.training.fit import TrainResult
from headstart.training.lr_find import LRFindResult
from headstart.training.plugins import PluginFactory

#: plug-ins every :func:`train` gets; each decides from the config whether it takes part
PLUGINS: tuple[PluginFactory, ...] = (domain_plugin,)


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
    return _fit.train(
        config, resume=resume, extra_callbacks=extra_callbacks, plugins=PLUGINS, **overrides
    )


def lr_find(
    config: TrainConfig | None = None,
    *,
    plot: str | Path | None = "lr_find.png",
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_training: int = 100,
    **overrides: Any,
) -> LRFindResult:
    """Lightning's LR range test on the run's real setup (see
    :func:`headstart.training.lr_find.lr_find`); suggests ``--lr``.

    Example::

        res = headstart.lr_find(data="data/", model="torchvision:resnet18")
        print(res.suggestion)
    """
    return _lr_find.lr_find(
        config, plot=plot, min_lr=min_lr, max_lr=max_lr, num_training=num_training,
        plugins=PLUGINS, **overrides,
    )  # fmt: skip


__all__ = ["PLUGINS", "LRFindResult", "TrainResult", "lr_find", "train"]

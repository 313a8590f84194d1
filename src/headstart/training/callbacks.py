"""Small Lightning callbacks: the per-epoch ``log.csv``, the NaN/inf guard and Ctrl-C."""

from __future__ import annotations

import csv
import io
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L

from headstart.errors import Interrupted
from headstart.run import atomic_write_text

LOG_FIELDS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr_head",
    "trainable_params",
    "seconds",
]


class EpochLog(L.Callback):
    """Writes one row per finished epoch to ``log.csv`` (rewritten atomically each epoch).

    On resume, rows from epochs at or after the resumed epoch are dropped first, so the log
    always matches the checkpoint it continues from.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start = trainer.current_epoch
        if self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < start]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = trainer.callback_metrics
        lr = next(
            (g["lr"] for g in trainer.optimizers[0].param_groups if g.get("name") == "head"),
            float("nan"),
        )
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        row = {
            "epoch": trainer.current_epoch,
            "train_loss": _f(m.get("train_loss")),
            "train_acc": _f(m.get("train_acc")),
            "val_loss": _f(m.get("val_loss")),
            "val_acc": _f(m.get("val_acc")),
            "lr_head": f"{lr:.3g}",
            "trainable_params": trainable,
            "seconds": f"{time.perf_counter() - self._t0:.2f}",
        }
        self.rows.append(row)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


class NonFiniteLoss(Exception):
    """Raised by :class:`NonFiniteLossGuard` to abort ``trainer.fit`` before anything is saved;
    :func:`headstart.train` turns it into :class:`~headstart.errors.TrainingDiverged`."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"non-finite training loss in epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


class NonFiniteLossGuard(L.Callback):
    """Stops training at the first NaN/inf training loss, *before* the epoch's checkpoints are
    written: ``last.ckpt`` and ``best.ckpt`` stay those of the last good epoch. (Setting
    ``trainer.should_stop`` instead would still run the epoch end, which saves ``last.ckpt``
    with the broken weights.) Under DDP the decision is all-reduced so every rank stops at the
    same step."""

    def __init__(self) -> None:
        self.tripped_at: int | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = loss is not None and not math.isfinite(float(loss))
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            self.tripped_at = trainer.current_epoch
            raise NonFiniteLoss(trainer.current_epoch, trainer.global_step)


class InterruptToResume(L.Callback):
    """Ctrl-C (SIGINT) during ``trainer.fit`` raises :class:`~headstart.errors.Interrupted`
    (exit 130) naming the ``--resume`` command, instead of a ``KeyboardInterrupt``: Lightning
    catches that one itself, prints "attempting graceful shutdown" and exits with code 1. Any
    other exception is torn down by Lightning as usual and re-raised, so this one reaches the
    CLI. Checkpoints are atomic, so the last finished epoch's ``last.ckpt`` is intact."""

    def __init__(self, resume_command: str) -> None:
        self.resume_command = resume_command
        self._installed = False
        self._previous: Any = signal.default_int_handler

    def _raise(self, signum: int, frame: Any) -> None:
        self._restore()  # a second Ctrl-C during shutdown is a plain KeyboardInterrupt
        raise Interrupted(f"interrupted; continue with: {self.resume_command}")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._raise)
            self._previous = signal.default_int_handler if previous is None else previous
            self._installed = True

    def _restore(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()


def _f(v: Any) -> str:
    return "" if v is None else f"{float(v):.4f}"

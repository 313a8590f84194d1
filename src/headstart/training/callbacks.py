"""Small Lightning callbacks: the per-epoch ``log.csv`` and the NaN/inf guard."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

import lightning as L

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


class NonFiniteLossGuard(L.Callback):
    """Stops training when the epoch's training loss is NaN/inf; ``best.ckpt`` stays the last
    good model (the checkpoint callback monitors val loss and never picks a NaN)."""

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
        if loss is not None and not math.isfinite(float(loss)):
            self.tripped_at = trainer.current_epoch
            trainer.should_stop = True


def _f(v: Any) -> str:
    return "" if v is None else f"{float(v):.4f}"

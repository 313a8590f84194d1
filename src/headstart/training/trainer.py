"""``make_trainer``: the one place a Lightning Trainer is assembled (training, lr-find,
pretext training), with atomic checkpoint IO, the epoch log and headstart's defaults."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

from headstart.config import TrainConfig
from headstart.console import console
from headstart.training.callbacks import EpochLog, InterruptToResume
from headstart.training.checkpoint_io import AtomicCheckpointIO
from headstart.training.distributed import trainer_strategy
from headstart.training.trackers import TrackerStart, make_loggers


class _SaveNote(logging.Filter):
    """Drops Lightning's "`weights_only` was not set, defaulting to `False`". Lightning logs it
    when *saving* a full checkpoint (optimizer state included: the LR finder's own checkpoint,
    the unrefined few-shot head's), yet it reads as if a checkpoint were unpickled. Every load
    goes through :class:`AtomicCheckpointIO` (``torch.load(weights_only=True)``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`weights_only` was not set" not in record.getMessage()


_SAVE_NOTE = _SaveNote()

#: Lightning warnings about choices headstart makes, not the user: modules kept in eval mode on
#: purpose (frozen BatchNorm), resuming into a run's own non-empty checkpoint folder, the
#: worker-count hint (``--num-workers`` is the user's), a pytree deprecation inside Lightning
_LIGHTNING_NOISE = (
    r".*module\(s\) in eval mode.*",
    r"Checkpoint directory .* exists and is not empty.*",
    r".*does not have many workers.*",
    r".*LeafSpec.*",
)


def quiet_lightning() -> None:
    """Drop what Lightning prints on every run that a user cannot act on: the "GPU available /
    TPU available" banner, the cloud-logger tip, "`Trainer.fit` stopped" (INFO records; its
    warnings and errors still show) and the warnings in :data:`_LIGHTNING_NOISE`. Called when a
    Trainer is built, after Lightning's import has set its own loggers to INFO."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in _LIGHTNING_NOISE:
        warnings.filterwarnings("ignore", message=message)


def checkpoint_callback(checkpoints: Path) -> ModelCheckpoint:
    """``best.ckpt`` in ``checkpoints``: the epoch with the lowest val loss so far."""
    return ModelCheckpoint(
        dirpath=checkpoints,
        filename="best",
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )


def last_checkpoint_callback(checkpoints: Path) -> ModelCheckpoint:
    """``last.ckpt`` in ``checkpoints``, rewritten after every epoch.

    Not ``save_last=True`` on the best-checkpoint callback: since Lightning 2.6 that writes
    ``last.ckpt`` only in epochs that also wrote a top-k checkpoint, so an epoch whose val loss
    did not improve left ``last.ckpt`` at the last improving epoch (a 4-epoch gradual run ended
    with a ``last.ckpt`` of epoch 1). An unmonitored callback saves every epoch, under one name.
    """
    return ModelCheckpoint(
        dirpath=checkpoints,
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )


def make_trainer(
    config: TrainConfig,
    root: Path,
    *,
    steps_per_epoch: int,
    checkpoints: Path | None = None,
    log_csv: Path | None = None,
    callbacks: Sequence[L.Callback] = (),
    max_epochs: int | None = None,
    distributed: bool = True,
    resume_command: str | None = None,
    trackers: bool = False,
) -> L.Trainer:
    """A Trainer for ``config`` writing under ``root``: checkpoints (when ``checkpoints`` is a
    folder), ``log_csv`` (one row per epoch), early stopping (``--patience``),
    a progress bar on terminals, atomic checkpoint files. ``distributed=False`` runs on one
    device (lr-find). Ctrl-C stops with exit code 130 and ``resume_command`` (default:
    ``headstart train --resume ROOT``) when there are checkpoints to continue from.
    ``trackers=True`` (a training run's own trainer) adds the ``--logger`` trackers."""
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").addFilter(
        _SAVE_NOTE
    )
    quiet_lightning()
    every: list[L.Callback] = []
    if checkpoints is not None:
        every += [checkpoint_callback(checkpoints), last_checkpoint_callback(checkpoints)]
        every.append(InterruptToResume(resume_command or f"headstart train --resume {root}"))
    if log_csv is not None:
        every.append(EpochLog(log_csv))
    every.extend(callbacks)
    if config.early_stopping_patience and checkpoints is not None:
        every.append(
            EarlyStopping(monitor="val_loss", mode="min", patience=config.early_stopping_patience)
        )
    loggers = make_loggers(config, root) if trackers else []
    if loggers:
        every.append(TrackerStart(config, root))
    if console.is_terminal:
        every.append(RichProgressBar(leave=False))
    scale = (
        {
            "devices": config.devices,
            "num_nodes": config.num_nodes,
            "strategy": trainer_strategy(config),
        }
        if distributed
        else {"devices": 1}
    )
    return L.Trainer(
        max_epochs=config.epochs if max_epochs is None else max_epochs,
        accelerator=config.accelerator,
        precision=config.precision,  # type: ignore[arg-type]
        deterministic=config.deterministic,
        logger=loggers or False,
        callbacks=every,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=root,
        num_sanity_val_steps=0,
        enable_checkpointing=checkpoints is not None,
        enable_model_summary=False,
        enable_progress_bar=console.is_terminal,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        **scale,  # type: ignore[arg-type]
    )

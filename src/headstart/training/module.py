"""The LightningModule that trains a :class:`~headstart.models.Backbone` under a strategy."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, StepLR

from headstart.config import TrainConfig
from headstart.models.backbone import Backbone
from headstart.strategies import Strategy, build_param_groups


class HeadstartModule(L.LightningModule):
    """Cross-entropy classification of images, or of cached features when
    ``inputs_are_features`` (the frozen-backbone fast path trains ``backbone.head`` only).

    The strategy's state and the preprocessing are stored in every checkpoint under
    ``"headstart"``, so a resumed run continues exactly and a checkpoint is self-describing.
    """

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy,
        config: TrainConfig,
        steps_per_epoch: int,
        inputs_are_features: bool = False,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.strategy = strategy
        self.config = config
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.inputs_are_features = inputs_are_features
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.strategy.apply(self.backbone, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inputs_are_features:
            return self.backbone.head(x)
        return self.backbone(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        weights = self.class_weights if isinstance(self.class_weights, torch.Tensor) else None
        smoothing = self.config.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, weight=weights, label_smoothing=smoothing)
        acc = (logits.argmax(1) == y).float().mean()
        on_step = stage == "train"
        self.log(
            f"{stage}_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=on_step or stage == "val",
            batch_size=len(y),
        )
        self.log(
            f"{stage}_acc",
            acc,
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=len(y),
        )
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_epoch_start(self) -> None:
        # Random state (augmentation, dropout, worker seeds) is a function of (seed, epoch), so a
        # resumed run continues exactly as an uninterrupted one.
        L.seed_everything(self.config.seed * 1009 + self.current_epoch, workers=True, verbose=False)
        # Re-assert the strategy's trainable set (and frozen stages' eval mode) every epoch.
        self.strategy.apply(self.backbone, self.current_epoch)
        self.backbone.train(True)

    # --- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        c = self.config
        groups = build_param_groups(self.backbone, c.lr, c.weight_decay, c.backbone_lr_mult)
        if c.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum)
        else:
            opt = torch.optim.AdamW(groups, lr=c.lr)
        total = c.epochs * self.steps_per_epoch
        if c.scheduler == "none":
            return opt
        if c.scheduler == "step":
            return {
                "optimizer": opt,
                "lr_scheduler": {
                    "scheduler": StepLR(opt, c.step_size, c.gamma),
                    "interval": "epoch",
                },
            }
        if c.scheduler == "onecycle":
            sched: Any = OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=total)
        else:
            warm = int(c.warmup_epochs * self.steps_per_epoch)
            sched = LambdaLR(opt, _CosineWithWarmup(warm, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- checkpoint ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["headstart"] = {
            "strategy": self.strategy.state_dict(),
            "preprocessing": self.backbone.preprocessing.to_dict(),
            "model": self.backbone.spec,
            "config": self.config.model_dump(mode="json"),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("headstart", {})
        if "strategy" in state:
            self.strategy.load_state_dict(state["strategy"])


class _CosineWithWarmup:
    """LR multiplier: linear warmup for ``warmup`` steps, then cosine decay to 0 at ``total``.

    A class (not a lambda) so the scheduler's state stays picklable-free in checkpoints.
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, max(1, total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

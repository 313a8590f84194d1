"""The LightningModule that trains a :class:`~headstart.models.Backbone` under a strategy."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR
from torchvision.transforms import v2

from headstart.config import TrainConfig
from headstart.models.backbone import Backbone
from headstart.models.heads import head_kind, num_outputs
from headstart.run import CheckpointInfo
from headstart.strategies import Strategy, build_param_groups
from headstart.tasks import TASKS, Task
from headstart.training.schedules import add_param_group, make_schedule

log = logging.getLogger(__name__)


class HeadstartModule(L.LightningModule):
    """Trains a backbone on its task's loss (``task``; single-label cross-entropy by default)
    from model inputs, or from cached features when ``inputs_are_features`` (the
    frozen-backbone fast path trains ``backbone.head`` only).

    Strategy handling, made exact under resume and DDP:

    * the trainable set is re-applied at every epoch start; stages that become trainable join
      the optimizer as new parameter groups (existing groups keep their Adam/momentum state) and
      the LR schedule at its current step;
    * the epoch whose trainable set the optimizer reflects is stored in the checkpoint, so a
      resumed run rebuilds the same groups, in the same order, before the optimizer state loads;
    * under DDP every parameter requires grad when the DDP wrapper is built (``setup``), so its
      reducer covers stages unfrozen later; freezing is applied only afterwards, and DDP runs
      with ``find_unused_parameters=True`` (Lightning #20340: otherwise newly unfrozen stages
      are never all-reduced and the ranks drift apart).
    """

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy,
        config: TrainConfig,
        steps_per_epoch: int,
        inputs_are_features: bool = False,
        class_weights: torch.Tensor | None = None,
        num_classes: int | None = None,
        train_hook: torch.nn.Module | None = None,
        task: Task | None = None,
        activations_from: int | None = None,
        activations_until: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.task = task or TASKS["single-label"]
        # Optional training-step hook (e.g. headstart.adapt.domain.DomainAdaptationStep): called
        # as ``train_hook(self, batch) -> (loss, logits, targets, extra logs)``; its parameters
        # train in the optimizer's first group ("adapt") and live in the checkpoint.
        self.train_hook = train_hook
        self.strategy = strategy
        self.config = config
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.inputs_are_features = inputs_are_features
        # cached-activation path: inputs are the activations at the cut before this stage
        self.activations_from = activations_from
        # ... until this epoch (then images: gradual unfreezing reached stage 0); None: always
        self.activations_until = activations_until
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._applied_epoch = 0
        self.unfreeze_events: list[tuple[int, list[str]]] = []
        self._mix: v2.Transform | None = None
        n = num_classes or num_outputs(backbone.head)
        mixers: list[v2.Transform] = []
        if config.mixup > 0:
            mixers.append(v2.MixUp(alpha=config.mixup, num_classes=n))
        if config.cutmix > 0:
            mixers.append(v2.CutMix(alpha=config.cutmix, num_classes=n))
        if mixers and not inputs_are_features:
            self._mix = mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)

    # --- forward / steps -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is not None:  # a task whose model computes its losses (detection)
            out: torch.Tensor = self.backbone(
                x.contiguous(memory_format=torch.channels_last), targets
            )
            return out
        if self.inputs_are_features:
            return self.backbone.head(x)
        if self.activations_from is not None and self._on_activations():
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.backbone.head(self.backbone.forward_from(self.activations_from, x))
        if isinstance(x, torch.Tensor) and x.dim() == 4:  # text batches are dicts of token ids
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def _on_activations(self) -> bool:
        until = self.activations_until
        return until is None or (self._trainer is not None and self.current_epoch < until)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        target: torch.Tensor = y
        if stage == "train" and self._mix is not None:
            x, target = self._mix(x, y)
        logits = self(x, target) if self.task.model_takes_targets else self(x)
        weights = self.class_weights if isinstance(self.class_weights, torch.Tensor) else None
        smoothing = self.config.label_smoothing if stage == "train" else 0.0
        loss = self.task.loss(logits, target, weight=weights, label_smoothing=smoothing)
        self._log_step(stage, loss, logits, y)
        return loss

    def _log_step(
        self, stage: str, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        acc = self.task.batch_score(logits, y)
        self.log(
            f"{stage}_loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
            sync_dist=True,  # the epoch's mean over every rank's batches (no-op on one device)
        )
        self.log(
            f"{stage}_acc",
            acc,
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=len(y),
            sync_dist=True,
        )

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        if self.train_hook is not None:
            loss, logits, y, extra = self.train_hook(self, batch)
            for k, v in extra.items():
                self.log(
                    f"train_{k}", v, on_step=False, on_epoch=True, batch_size=len(y),
                    sync_dist=True,
                )  # fmt: skip
            self._log_step("train", loss, logits, y)
            return loss
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    # --- strategy ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.trainer.world_size > 1:
            for p in self.backbone.parameters():
                p.requires_grad_(True)

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        # Random state (augmentation, dropout, mixing) is a function of (seed, epoch), so a
        # resumed run continues exactly as an uninterrupted one.
        L.seed_everything(self.config.seed * 1009 + epoch, workers=True, verbose=False)
        new = self.strategy.apply(self.backbone, epoch)
        if new and epoch > self._applied_epoch:
            self._add_stage_groups(new)
            names = [self.backbone.stages[i].name for i in new]
            self.unfreeze_events.append((epoch, names))
            log.info("epoch %d: unfreezing %s", epoch, ", ".join(names))
        self._applied_epoch = epoch
        self.backbone.train(True)

    def _add_stage_groups(self, stages: list[int]) -> None:
        c = self.config
        opt = self.optimizers(use_pl_optimizer=False)
        assert isinstance(opt, torch.optim.Optimizer)
        scheds = self.lr_schedulers()
        sched = scheds if isinstance(scheds, LambdaLR) else None
        groups = build_param_groups(
            self.backbone,
            c.lr,
            c.weight_decay,
            c.backbone_lr_mult,
            c.layer_decay,
            stages=stages,
            include_head=False,
        )
        for g in groups:
            # re-warmed over exactly one epoch: runs resume at epoch boundaries, where the
            # warm-up is over, so a resumed run's groups need only the plain schedule
            add_param_group(opt, sched, g, warmup=int(self.trainer.num_training_batches))

    # --- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        c = self.config
        self.strategy.apply(self.backbone, self._applied_epoch)
        order = self.strategy.unfreeze_order(self._applied_epoch, len(self.backbone.stages))
        groups = build_param_groups(
            self.backbone, c.lr, c.weight_decay, c.backbone_lr_mult, c.layer_decay, stages=order
        )
        hook_params = list(self.train_hook.parameters()) if self.train_hook is not None else []
        if hook_params:  # first, so uninterrupted and resumed runs build the same group order
            adapt = {
                "name": "adapt",
                "params": hook_params,
                "lr": c.lr,
                "weight_decay": c.weight_decay,
            }
            groups.insert(0, adapt)
        if c.optimizer == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum)
        else:
            opt = torch.optim.AdamW(groups, lr=c.lr)
        fn = make_schedule(
            c.scheduler,
            epochs=c.epochs,
            steps_per_epoch=self.steps_per_epoch,
            warmup_epochs=c.warmup_epochs,
            step_size=c.step_size,
            gamma=c.gamma,
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": LambdaLR(opt, fn), "interval": "step"},
        }

    # --- checkpoint ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["headstart"] = CheckpointInfo(
            model=self.backbone.spec,
            head=head_kind(self.backbone.head),
            preprocessing=self.backbone.preprocessing.to_dict(),
            strategy=self.strategy.state_dict(),
            applied_epoch=self._applied_epoch,
            unfreeze_events=[[e, names] for e, names in self.unfreeze_events],
            config=self.config.model_dump(mode="json"),
        ).to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = CheckpointInfo.from_checkpoint(checkpoint)
        if info.strategy is not None:
            self.strategy.load_state_dict(info.strategy)
        self._applied_epoch = int(info.applied_epoch)
        self.unfreeze_events = [(int(e), list(n)) for e, n in info.unfreeze_events]

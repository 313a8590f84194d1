"""Run by tests/test_ddp.py as a real script: Lightning's DDP launcher re-executes it per rank."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

import headstart


class SaveRankWeights(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        frozen = [bool(f) for f in pl_module.backbone.frozen_stages]
        torch.save(
            {"state": state, "frozen": frozen},
            self.out / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.pt",
        )


if __name__ == "__main__":
    data, out, dumps = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    dumps.mkdir(parents=True, exist_ok=True)
    headstart.train(
        data=str(data),
        out=out,
        model="torchvision:resnet18",
        weights="none",
        image_size=32,
        batch_size=4,
        num_workers=0,
        epochs=3,
        strategy="gradual",
        unfreeze_every=1,
        gradual_steps=2,
        early_stopping_patience=None,
        accelerator="cpu",
        devices=2,
        extra_callbacks=[SaveRankWeights(dumps)],
    )

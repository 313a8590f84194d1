"""Checkpoints hold what they say: ``last.ckpt`` is the last epoch run (every strategy), and every
checkpoint load goes through ``torch.load(weights_only=True)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from headstart.run import load_checkpoint_file
from headstart.strategies.registry import STRATEGIES
from headstart.training.module import HeadstartModule
from tests.conftest import train_tiny, write_class_folders

EPOCHS = 3

#: settings that make each strategy train every epoch on the tiny model
EXTRA: dict[str, dict[str, Any]] = {
    "gradual": {"unfreeze_every": 1},
    "few-shot": {"few_shot_refine": True},
    # LoRA adapts attention projections: timm's smallest ViT (0.3 M parameters)
    "lora": {"model": "timm:test_vit", "image_size": 32, "lora_r": 2},
}


@pytest.fixture
def rising_val_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validation loss rises every epoch (as when a model overfits), so only epoch 0 is the
    best: the case in which ``last.ckpt`` stopped being written."""
    real = HeadstartModule._log_step

    def log_step(self: HeadstartModule, stage: str, loss: torch.Tensor, *a: Any) -> None:
        if stage == "val":
            loss = loss + 100.0 * self.current_epoch
        real(self, stage, loss, *a)

    monkeypatch.setattr(HeadstartModule, "_log_step", log_step)


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - {"auto"}))
def test_last_checkpoint_is_the_last_epoch(
    strategy: str, tmp_path: Path, rising_val_loss: None
) -> None:
    data = write_class_folders(tmp_path / "data", 6)
    result = train_tiny(data, tmp_path / "run", strategy=strategy, epochs=EPOCHS,
                        **EXTRA.get(strategy, {}))  # fmt: skip
    ckpts = result.run_dir / "checkpoints"
    last = load_checkpoint_file(ckpts / "last.ckpt")
    best = load_checkpoint_file(ckpts / "best.ckpt")
    log_epochs = (result.run_dir / "log.csv").read_text().splitlines()[1:]
    assert len(log_epochs) == EPOCHS
    assert last["epoch"] == EPOCHS - 1, f"{strategy}: last.ckpt holds epoch {last['epoch']}"
    assert last["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == EPOCHS - 1
    assert best["epoch"] == 0  # val loss rose after epoch 0
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"]

"""Checkpoints hold what they say: ``last.ckpt`` is the last epoch run (every strategy), and every
checkpoint load goes through ``torch.load(weights_only=True)``."""

from __future__ import annotations

import io
import logging
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


@pytest.fixture
def torch_loads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``torch.load`` call's ``weights_only`` argument (the real load still runs)."""
    seen: list[Any] = []
    real = torch.load

    def load(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return seen


@pytest.mark.filterwarnings("error:.*weights_only.*")
def test_lr_find_and_unrefined_few_shot_load_checkpoints_weights_only(
    tmp_path: Path, torch_loads: list[Any]
) -> None:
    """lr-find restores the weights it started from, and an unrefined few-shot run saves and
    evaluates its checkpoint: both through ``weights_only=True``, and neither says Lightning's
    "`weights_only` was not set, defaulting to `False`"."""
    import headstart
    from tests.conftest import TINY

    data = write_class_folders(tmp_path / "data", 6)
    said = io.StringIO()
    handler = logging.StreamHandler(said)
    # Lightning's logger does not propagate to the root, and its level depends on who set it up
    lightning_log = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    lightning_log.addHandler(handler)
    lightning_log.setLevel(logging.INFO)
    settings = {**TINY, "augment": "none"}
    try:
        headstart.lr_find(data=str(data), plot=None, num_training=4, **settings)
        lr_find_loads = len(torch_loads)
        train_tiny(data, tmp_path / "run", strategy="few-shot", few_shot_refine=False)
    finally:
        lightning_log.removeHandler(handler)
        lightning_log.setLevel(logging.NOTSET)
    assert lr_find_loads >= 1 and len(torch_loads) > lr_find_loads  # both paths loaded
    assert set(torch_loads) == {True}, torch_loads
    assert "weights_only" not in said.getvalue()

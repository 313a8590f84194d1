"""Rotation pretext: the loss against its definition, pretraining, and weights that train loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import headstart
from headstart.adapt.pretext import RotationLoss, pretrain, rotate_batch
from headstart.errors import DataError
from headstart.models import create_backbone
from tests.conftest import TINY, train_tiny, write_class_folders


def test_rotate_batch_is_exact_and_labelled() -> None:
    img = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    x, k = rotate_batch(img)
    assert x.shape == (8, 3, 4, 4) and k.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert torch.equal(x[0], img[0]) and torch.equal(x[4], img[1])
    # k=1 is 90 degrees counter-clockwise: the top row becomes the left column, reversed
    assert torch.equal(x[1][0, :, 0], img[0][0, 0, :].flip(0))
    assert torch.equal(torch.rot90(x[2], 2, dims=(1, 2)), img[0])


def test_rotation_loss_is_mean_cross_entropy_over_the_four_rotations() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    img = torch.randn(3, 3, 4, 4)
    loss, logits, k = RotationLoss()(model, img)
    manual = -torch.stack(
        [
            torch.log_softmax(model(torch.rot90(img[i : i + 1], r, dims=(2, 3))), 1)[0, r]
            for i in range(3)
            for r in range(4)
        ]
    ).mean()
    torch.testing.assert_close(loss, manual)
    assert logits.shape == (12, 4) and k.tolist() == [0, 1, 2, 3] * 3


def _tiny_pretrain_settings() -> dict[str, object]:
    return {**TINY, "epochs": 2, "augment": "none", "early_stopping_patience": None}


def test_pretrain_writes_weights_that_train_accepts(tmp_path: Path) -> None:
    unlabeled = write_class_folders(tmp_path / "unlabeled", 4, seed=4)
    r = pretrain(unlabeled, out=tmp_path / "pre", **{**_tiny_pretrain_settings(), "epochs": 1})
    assert r.weights.is_file()
    m = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert m["task"] == "rotation" and 0.0 <= m["rotation_val_accuracy"] <= 1.0
    assert m["train_images"] + m["val_images"] == 12
    state = torch.load(r.weights, weights_only=True)
    ref = create_backbone(TINY["model"], 3, weights="none", image_size=32)  # type: ignore[arg-type]
    assert state.keys() == ref.body.state_dict().keys()
    # pretraining changed the (random) starting weights
    start = create_backbone(TINY["model"], 4, weights="none", image_size=32)  # type: ignore[arg-type]
    assert any(not torch.equal(v, state[k]) for k, v in start.body.state_dict().items())

    labelled = write_class_folders(tmp_path / "labelled", 6, seed=5)
    t = train_tiny(labelled, tmp_path / "run", weights=str(r.weights), epochs=1)
    assert t.metrics["run"]["weights"] == str(r.weights)
    loaded = headstart.load_run(t.run_dir).model.body.state_dict()
    for k, v in state.items():  # frozen backbone: exactly the pretrained tensors
        torch.testing.assert_close(loaded[k], v, atol=0, rtol=0, msg=k)


@pytest.mark.slow
def test_pretrain_learns_rotations(tmp_path: Path) -> None:
    """Images with an unmistakable up direction (bright top band): rotation accuracy well above
    chance (25 %) on held-out images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "unlabeled"
    folder.mkdir()
    for i in range(60):
        arr = rng.integers(0, 60, size=(32, 32, 3)).astype(np.uint8)
        arr[: 8 + int(rng.integers(0, 4))] = rng.integers(180, 255, size=3)
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
    settings = {**_tiny_pretrain_settings(), "epochs": 3, "lr": 3e-3, "batch_size": 32}
    r = pretrain(folder, out=tmp_path / "pre", **settings)
    assert r.metrics["rotation_val_accuracy"] > 0.5


def test_pretrain_refuses_frozen_strategy_and_unknown_task(tmp_path: Path) -> None:
    unlabeled = write_class_folders(tmp_path / "unlabeled", 4)
    with pytest.raises(DataError, match="strategy"):
        pretrain(unlabeled, out=tmp_path / "a", strategy="feature-extract", **TINY)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="jigsaw"):
        pretrain(unlabeled, task="jigsaw", out=tmp_path / "b")


@pytest.mark.slow
def test_cli_pretrain_then_train_with_its_weights(tmp_path: Path) -> None:
    """The commands as a user types them: pretrain, then train --weights <its file>."""
    from tests.test_cli import run_cli

    unlabeled = write_class_folders(tmp_path / "unlabeled", 4, seed=7)
    tiny = ["--model", "torchvision:resnet18", "--weights", "none", "--image-size", "32",
            "--batch-size", "8", "--num-workers", "0"]  # fmt: skip
    r = run_cli("pretrain", str(unlabeled), "--task", "rotation", "-o", str(tmp_path / "pre"),
                "--epochs", "1", "--augment", "none", *tiny)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    weights = tmp_path / "pre" / "backbone.pt"
    assert weights.is_file() and "--weights" in r.stdout
    bad = run_cli("pretrain", str(unlabeled), "--task", "jigsaw", "-o", str(tmp_path / "x"))
    assert bad.returncode == 2 and "rotation" in bad.stdout + bad.stderr
    t = run_cli("train", str(unlabeled), "--model", "torchvision:resnet18", "--weights",
                str(weights), "--image-size", "32", "--epochs", "1", "--num-workers", "0",
                "-o", str(tmp_path / "run"))  # fmt: skip
    assert t.returncode == 0, t.stdout[-2000:] + t.stderr[-2000:]

"""Shared fixtures: small synthetic image folders that a tiny model can learn in seconds."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headstart

os.environ.setdefault("HEADSTART_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def make_image(
    colour: tuple[int, int, int], rng: np.random.Generator, size: int = 24
) -> Image.Image:
    arr = rng.integers(0, 60, size=(size, size, 3)).astype(np.int16)
    arr += np.array(colour, dtype=np.int16)[None, None, :] // 2
    y, x = rng.integers(2, size // 2, size=2)
    arr[y : y + size // 3, x : x + size // 3] = colour
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def write_class_folders(
    root: Path, per_class: int, seed: int = 0, classes: dict | None = None
) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in (classes or COLOURS).items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(colour, rng).save(d / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _isolated_feature_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own feature cache (HEADSTART_CACHE), never the user's."""
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """data/<class>/*.png, 3 classes x 12 images."""
    return write_class_folders(tmp_path / "data", 12)


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """data/{train,val,test}/<class>/*.png."""
    root = tmp_path / "split"
    write_class_folders(root / "train", 10, seed=1)
    write_class_folders(root / "val", 4, seed=2)
    write_class_folders(root / "test", 4, seed=3)
    return root


TINY = {
    "model": "torchvision:resnet18",
    "weights": "none",
    "image_size": 32,
    "batch_size": 8,
    "num_workers": 0,
}


def train_tiny(data: Path, out: Path, **kw: object) -> headstart.TrainResult:
    """A seconds-long training run on the tiny model: 2 epochs, no augmentation, no early stop."""
    settings = {**TINY, "epochs": 2, "early_stopping_patience": None, "augment": "none", **kw}
    return headstart.train(data=str(data), out=str(out), **settings)


@pytest.fixture
def tiny_hf_vit(tmp_path: Path) -> Path:
    """A 3-layer ViT saved as a Hugging Face model folder (32 px, 8 px patches)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    transformers.ViTModel(cfg).save_pretrained(tmp_path / "vit")
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]
    ).save_pretrained(tmp_path / "vit")
    return tmp_path / "vit"


class Crash(Exception):
    """Raised by :func:`crash_and_resume` to interrupt a run at the end of an epoch."""


def crash_and_resume(
    data: Path, out: Path, monkeypatch: pytest.MonkeyPatch, after_epoch: int, **kw: object
) -> headstart.TrainResult:
    """Train :func:`train_tiny` with ``kw`` until it is interrupted at the end of epoch
    ``after_epoch``, then ``--resume`` it; the resumed run's result (``monkeypatch`` is undone)."""
    from headstart.training.module import HeadstartModule

    def crash(self: HeadstartModule) -> None:
        if self.current_epoch == after_epoch:
            raise Crash

    monkeypatch.setattr(HeadstartModule, "on_train_epoch_end", crash, raising=False)
    with pytest.raises(Crash):
        train_tiny(data, out, **kw)
    monkeypatch.undo()
    return headstart.train(resume=out)

"""Cached-feature fast path: disk cache hits and invalidation, augmented views, auto image size."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import headstart
from headstart.data.image_size import auto_image_size
from tests.conftest import train_tiny


def test_second_run_reads_features_from_disk(image_folder: Path, tmp_path: Path) -> None:
    a = train_tiny(image_folder, tmp_path / "a")
    assert a.metrics["run"]["cached_features"] and a.metrics["run"]["feature_cache_hits"] == []
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 2  # train, val
    b = train_tiny(image_folder, tmp_path / "b")
    assert b.metrics["run"]["feature_cache_hits"] == ["train", "val"]
    assert b.metrics["val"]["accuracy"] == a.metrics["val"]["accuracy"]
    c = train_tiny(image_folder, tmp_path / "c", disk_cache=False)
    assert c.metrics["run"]["feature_cache_hits"] == []


def test_cache_invalidated_when_an_image_changes(image_folder: Path, tmp_path: Path) -> None:
    train_tiny(image_folder, tmp_path / "a")
    target = sorted((image_folder / "red").glob("*.png"))[0]
    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(target)
    b = train_tiny(image_folder, tmp_path / "b")
    hits = b.metrics["run"]["feature_cache_hits"]
    assert len(hits) == 1  # the split holding the changed file was recomputed, the other reused
    # a different preprocessing (input size) is a different entry too
    d = train_tiny(image_folder, tmp_path / "d", image_size=40)
    assert d.metrics["run"]["feature_cache_hits"] == []


def test_corrupt_cache_entry_is_recomputed(image_folder: Path, tmp_path: Path) -> None:
    train_tiny(image_folder, tmp_path / "a")
    for f in (tmp_path / "cache" / "features").glob("*.safetensors"):
        f.write_bytes(b"garbage")
    b = train_tiny(image_folder, tmp_path / "b")
    assert b.metrics["run"]["feature_cache_hits"] == []


def test_feature_views_add_augmented_copies(image_folder: Path, tmp_path: Path) -> None:
    r = train_tiny(image_folder, tmp_path / "a", feature_views=3, augment="standard")
    assert r.metrics["run"]["feature_views"] == 3
    n_train = r.metrics["run"]["train_images"]
    # log.csv exists and training ran on 3x the rows: steps per epoch follow the enlarged set
    assert r.metrics["run"]["cached_features"]
    again = train_tiny(image_folder, tmp_path / "b", feature_views=3, augment="standard")
    assert again.metrics["run"]["feature_cache_hits"] == ["train", "train-views", "val"]
    assert n_train == 30


def test_auto_image_size_for_small_images(image_folder: Path) -> None:
    paths = sorted(image_folder.rglob("*.png"))  # 24 px images
    size, reason = auto_image_size(paths, 224)
    assert size == 96 and "less compute" in reason
    assert auto_image_size(paths, 64)[0] == 64  # never above the weights' crop


def test_image_size_auto_in_training(image_folder: Path, tmp_path: Path) -> None:
    r = train_tiny(image_folder, tmp_path / "a", image_size="auto")
    assert r.metrics["run"]["preprocessing"]["crop"] == 96
    preds = headstart.predict(r.run_dir, [image_folder / "red"])
    assert len(preds) == 12


def test_views_dataset_is_deterministic(image_folder: Path) -> None:
    from headstart.data import build_eval_transform, build_train_transform, load_splits
    from headstart.data.datasets import ImageDataset, ViewsDataset
    from headstart.models import create_backbone

    s = load_splits(image_folder)
    p = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32).preprocessing
    base = ImageDataset(s.train, s.class_to_idx, build_eval_transform(p))
    aug = ImageDataset(s.train, s.class_to_idx, build_train_transform(p, "strong"), seed=5)
    v = ViewsDataset(base, aug, 3)
    assert len(v) == 3 * len(base)
    assert torch.equal(v[0][0], base[0][0])
    assert torch.equal(v[len(base) + 1][0], v[len(base) + 1][0])
    assert not torch.equal(v[len(base) + 1][0], v[2 * len(base) + 1][0])

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headstart.data import load_splits
from headstart.data.splits import stratified_split
from headstart.errors import DataError
from tests.conftest import write_class_folders


def test_single_folder_is_split_stratified_and_seeded(image_folder: Path) -> None:
    s = load_splits(image_folder, val_fraction=0.25, seed=3)
    assert s.classes == ["blue", "green", "red"]
    assert s.counts()["val"] == {"blue": 3, "green": 3, "red": 3}
    assert s.counts()["train"] == {"blue": 9, "green": 9, "red": 9}
    again = load_splits(image_folder, val_fraction=0.25, seed=3)
    assert [x.path for x in again.val] == [x.path for x in s.val]
    other = load_splits(image_folder, val_fraction=0.25, seed=4)
    assert [x.path for x in other.val] != [x.path for x in s.val]


def test_train_val_test_layout(split_folder: Path) -> None:
    s = load_splits(split_folder)
    assert len(s.train) == 30 and len(s.val) == 12 and len(s.test) == 12


def test_csv_with_bom_extra_columns_and_missing_rows(image_folder: Path, tmp_path: Path) -> None:
    files = sorted(image_folder.rglob("*.png"))
    lines = ["path,label,notes"] + [f"{f.relative_to(tmp_path)},{f.parent.name},x" for f in files]
    lines += ["does/not/exist.png,red,x", ",red,x"]
    csv = tmp_path / "labels.csv"
    csv.write_text("\ufeff" + "\n".join(lines), encoding="utf-8")
    s = load_splits(csv)
    assert len(s.train) + len(s.val) == len(files)
    assert s.skipped["CSV path not found"] == 1
    assert s.skipped["CSV row missing path or label"] == 1
    with pytest.raises(DataError, match=r"exist\.png"):
        load_splits(csv, strict=True)


def test_csv_without_required_columns(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("file,class\na.png,b\n")
    with pytest.raises(DataError, match="'path' and a 'label'"):
        load_splits(p)


def test_non_images_and_hidden_files_are_counted_skips(image_folder: Path) -> None:
    (image_folder / "red" / "notes.txt").write_text("hello")
    (image_folder / "red" / ".DS_Store").write_bytes(b"\0\0")
    (image_folder / "red" / "Thumbs.db").write_bytes(b"\0\0")
    s = load_splits(image_folder)
    assert s.skipped["non-image file"] == 1
    assert s.skipped["hidden file"] == 2


def test_corrupt_images_skipped_or_fatal_with_strict(image_folder: Path) -> None:
    (image_folder / "red" / "empty.png").write_bytes(b"")
    good = (image_folder / "red" / "red_000.png").read_bytes()
    (image_folder / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    s = load_splits(image_folder)
    assert s.skipped["unreadable image"] == 2
    assert all(
        "empty" not in x.path.name and "truncated" not in x.path.name for x in s.train + s.val
    )
    with pytest.raises(DataError, match=r"empty\.png|truncated\.png"):
        load_splits(image_folder, strict=True)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root / "red" / "red_000.png", "not a folder"),
    ],
)
def test_bad_data_paths(image_folder: Path, mutate, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        load_splits(mutate(image_folder))


def test_empty_class_folder_is_named(image_folder: Path) -> None:
    (image_folder / "purple").mkdir()
    with pytest.raises(DataError, match="purple"):
        load_splits(image_folder)


def test_only_one_class(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "d", 5, classes={"red": (200, 0, 0)})
    with pytest.raises(DataError, match="only one class"):
        load_splits(tmp_path / "d")


def test_val_class_not_in_train(split_folder: Path) -> None:
    write_class_folders(split_folder / "val", 2, classes={"purple": (90, 0, 90)})
    with pytest.raises(DataError, match="purple"):
        load_splits(split_folder)


def test_leakage_is_warned(split_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = split_folder / "train" / "red" / "red_000.png"
    (split_folder / "val" / "red" / "dup.png").symlink_to(src)
    load_splits(split_folder)
    assert "leakage" in caplog.text


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=2, max_value=40), min_size=2, max_size=6),
    frac=st.floats(min_value=0.05, max_value=0.9),
    seed=st.integers(0, 2**16),
)
def test_stratified_split_properties(counts: list[int], frac: float, seed: int) -> None:
    labels = [f"c{i}" for i, n in enumerate(counts) for _ in range(n)]
    tr, va = stratified_split(labels, frac, seed)
    assert sorted(tr + va) == list(range(len(labels)))  # a partition
    vc, tc = Counter(labels[i] for i in va), Counter(labels[i] for i in tr)
    for i, n in enumerate(counts):
        c = f"c{i}"
        assert vc[c] >= 1 and tc[c] >= 1  # every class on both sides
        assert abs(vc[c] - n * frac) <= max(1.0, 0.5 + 1e-9) or vc[c] in (1, n - 1)
    assert stratified_split(labels, frac, seed) == (tr, va)


def test_animal_mnist_picks_are_unique_images_and_old_folders_are_rewritten(
    tmp_path: Path,
) -> None:
    """Animal-MNIST holds 284 images twice; a copy in train and its twin in val leaked (the demo
    warned about its own data)."""
    import hashlib
    import json

    import numpy as np
    from PIL import Image

    from headstart.data.catalog import materialise_animal_mnist

    out = materialise_animal_mnist(tmp_path / "am", 300, 100, 100)
    files = sorted(out.glob("*/*/*.png"))
    assert len(files) == 10 * 500
    digests = [hashlib.sha1(np.asarray(Image.open(f)).tobytes()).digest() for f in files]
    assert len(set(digests)) == len(files)
    # a folder written before de-duplication (its marker lacks "unique") is written anew
    marker = out / "animal-mnist.json"
    marker.write_text(json.dumps({"train": 300, "val": 100, "test": 100, "seed": 0}))
    (out / "train" / "stale.txt").write_text("x")
    assert materialise_animal_mnist(out, 300, 100, 100) == out
    assert not (out / "train" / "stale.txt").exists() and json.loads(marker.read_text())["unique"]


def test_an_image_transform_runs_on_one_thread_and_the_count_is_restored(tmp_path: Path) -> None:
    import torch

    from headstart.data.datasets import ImageDataset

    splits = load_splits(str(write_class_folders(tmp_path / "d", 2)), val_fraction=0.5, seed=0)
    seen: list[int] = []

    def transform(img: object) -> object:
        seen.append(torch.get_num_threads())
        return img

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ds = ImageDataset(splits.train, splits.class_to_idx, transform)
        ds[0], ds[(0, 1)]  # plain, and seeded per (index, epoch)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

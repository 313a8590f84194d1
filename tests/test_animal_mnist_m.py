"""Animal-MNIST-M (headstart.data.catalog.materialise_animal_mnist_m): the domain-adaptation set
after Ganin et al.'s MNIST-M, written from Animal-MNIST and scikit-image's photos."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.data.catalog import (
    ANIMAL_CLASSES,
    load_animal_mnist,
    materialise_animal_mnist_m,
    mnist_m_blend,
)
from headstart.errors import DataError

PARTS = {"source/train": 2, "source/val": 1, "target-unlabeled": 1, "target-eval": 1}


def _write(out: Path, seed: int = 0) -> Path:
    return materialise_animal_mnist_m(
        out, source_train=2, source_val=1, target_unlabeled=1, target_eval=1, seed=seed
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*.png"))}


def test_sizes_disjoint_silhouettes_and_deterministic_by_seed(tmp_path: Path) -> None:
    a = _write(tmp_path / "a")
    for part, n in PARTS.items():
        for name in ANIMAL_CLASSES:
            assert len(list((a / part / name).glob("*.png"))) == n, (part, name)
    # the file names are the Animal-MNIST indices: no silhouette is in two parts
    used = [f.stem for f in a.rglob("*.png")]
    assert len(used) == len(set(used)) == 10 * sum(PARTS.values())
    first = _files(a)
    assert _files(_write(tmp_path / "b")) == first  # same seed: the same bytes
    assert _files(_write(tmp_path / "c", seed=1)) != first
    assert _write(a) == a and _files(a) == first  # written before with these arguments: reused


def test_targets_are_their_own_silhouette_blended_and_differ_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import headstart.data.catalog as catalog

    out = _write(tmp_path / "mm")
    images, _ = load_animal_mnist()
    source = sorted((out / "source").rglob("*.png"))
    for f in source:  # the source stays as Animal-MNIST is: grayscale, the same pixels
        assert np.array_equal(np.asarray(Image.open(f)), images[int(f.stem)])
    targets = sorted(out.glob("target-*/*/*.png"))
    colourful = 0
    for f in targets:
        t = np.asarray(Image.open(f)).astype(np.int16)
        assert t.shape == (28, 28, 3)
        assert np.abs(t - images[int(f.stem)][:, :, None]).mean() > 20, f"{f} ~ its silhouette"
        colourful += int(np.ptp(t, axis=2).mean() > 5)
    assert colourful >= len(targets) // 2  # colour photos, not gray silhouettes
    # with a known crop, each target file is exactly the blend of the silhouette it is named by
    patch = np.full((28, 28, 3), (30, 140, 250), dtype=np.uint8)
    monkeypatch.setattr(catalog, "_random_patch", lambda *_a: patch)
    known = _write(tmp_path / "known")
    for f in sorted(known.glob("target-*/*/*.png")):
        want = mnist_m_blend(images[int(f.stem)], patch)
        assert np.array_equal(np.asarray(Image.open(f)), want), f


def test_blend_formula_and_shape_check() -> None:
    sil = np.array([[0, 255], [128, 0]], dtype=np.uint8)
    patch = np.zeros((2, 2, 3), dtype=np.uint8)
    patch[..., 0], patch[..., 1], patch[..., 2] = 10, 200, 255
    out = mnist_m_blend(sil, patch)
    assert out[0, 0].tolist() == [10, 200, 255]
    assert out[0, 1].tolist() == [245, 55, 0]
    assert out[1, 0].tolist() == [118, 72, 127]
    with pytest.raises(ValueError, match="does not fit"):
        mnist_m_blend(sil, patch[:1])


def test_bad_sizes_and_missing_photos_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match="at least one image per class"):
        materialise_animal_mnist_m(tmp_path / "x", source_train=0)
    with pytest.raises(DataError, match="distinct bear images; asked for 2080"):
        materialise_animal_mnist_m(tmp_path / "y", source_train=1900)
    import headstart.data.catalog as catalog

    real = catalog.importlib.util.find_spec
    monkeypatch.setattr(
        catalog.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "skimage" else real(name, *a),
    )
    with pytest.raises(DataError, match="pip install --no-deps scikit-image"):
        materialise_animal_mnist_m(tmp_path / "z", 1, 1, 1, 1)

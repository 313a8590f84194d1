"""LogME against a direct (matrix-inverse) reference, and a real-weights ranking check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headstart.evaluation.transferability import logme


def reference_logme(f: np.ndarray, y: np.ndarray, iters: int = 200) -> float:
    """The paper's fixed point written with explicit matrices (no SVD tricks)."""
    n, d = f.shape
    ftf = f.T @ f
    evals = np.linalg.eigvalsh(ftf)
    out = []
    for k in np.unique(y):
        t = (y == k).astype(np.float64)
        alpha, beta = 1.0, 1.0
        for _ in range(iters):
            a = alpha * np.eye(d) + beta * ftf
            m = beta * np.linalg.solve(a, f.T @ t)
            gamma = float(np.sum(beta * evals / (alpha + beta * evals)))
            alpha, beta = gamma / float(m @ m), (n - gamma) / float(np.sum((f @ m - t) ** 2))
        a = alpha * np.eye(d) + beta * ftf
        m = beta * np.linalg.solve(a, f.T @ t)
        ev = (
            n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * np.sum((f @ m - t) ** 2) - alpha / 2 * (m @ m) - 0.5 * np.linalg.slogdet(a)[1]
        )  # fmt: skip
        out.append(ev / n)
    return float(np.mean(out))


@pytest.mark.parametrize(("n", "d", "c"), [(60, 8, 3), (40, 25, 4), (20, 30, 2)])
def test_logme_matches_direct_reference(n: int, d: int, c: int) -> None:
    rng = np.random.default_rng(n + d)
    y = rng.integers(0, c, n)
    f = rng.normal(size=(n, d)) + 1.5 * np.eye(c, d)[y]
    assert logme(f, y) == pytest.approx(reference_logme(f, y), abs=1e-5)


def test_logme_prefers_informative_features() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    good = rng.normal(size=(200, 16)) + 3 * np.eye(4, 16)[y]
    noise = rng.normal(size=(200, 16))
    assert logme(good, y) > logme(noise, y)


def test_pretrained_ranks_above_random_init_on_animal_mnist(tmp_path: Path) -> None:
    from headstart.data.catalog import materialise_animal_mnist
    from headstart.ranking import rank_models

    data = materialise_animal_mnist(tmp_path / "am", 20, 5)
    rows = rank_models(
        str(data),
        ["torchvision:mobilenet_v2", "torchvision:mobilenet_v2@none"],
        image_size=96,
        probe=False,
    )
    assert rows[0].spec == "torchvision:mobilenet_v2" and rows[0].weights != "none"
    assert rows[0].logme > rows[1].logme
    assert rows[0].probe_accuracy is None


def test_stage_ranking_scores_every_cut(tmp_path: Path) -> None:
    from headstart.ranking import rank_stages
    from tests.conftest import write_class_folders

    data = write_class_folders(tmp_path / "d", 10)
    rows = rank_stages(str(data), "torchvision:resnet18@none", image_size=32)
    assert [r.spec.split("cut after ")[1] for r in rows] == [
        "conv1..bn1",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    assert [r.feature_dim for r in rows] == [64, 64, 128, 256, 512]
    assert all(r.probe_accuracy is not None and np.isfinite(r.logme) for r in rows)


def test_h_score_matches_its_definition_and_prefers_informative_features() -> None:
    from headstart.evaluation.transferability import h_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    good = rng.normal(size=(300, 6)) + 2 * np.eye(3, 6)[y]
    f = good - good.mean(0)
    means = np.stack([f[y == k].mean(0) for k in y])
    direct = np.trace(
        np.linalg.pinv(np.cov(f, rowvar=False, bias=True)) @ np.cov(means, rowvar=False, bias=True)
    )
    assert h_score(good, y, shrinkage=0.0) == pytest.approx(direct, rel=1e-6)
    assert h_score(good, y) > h_score(rng.normal(size=(300, 6)), y)
    # Ledoit-Wolf keeps the score informative when dimensions approach the sample count
    wide_good = rng.normal(size=(60, 50)) + 2 * np.eye(3, 50)[y[:60]]
    wide_noise = rng.normal(size=(60, 50))
    assert h_score(wide_noise, y[:60], shrinkage=0.0) > 1.5  # plain estimate: noise looks good
    assert h_score(wide_good, y[:60]) > 2 * h_score(wide_noise, y[:60])

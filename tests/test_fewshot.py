from pathlib import Path

import pytest
import torch

from headstart.adapt.fewshot import episodic_accuracy
from tests.conftest import write_class_folders


def _clusters(
    separation: float, n_per_class: int = 30, classes: int = 8, dim: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=g) * separation
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[y] + torch.randn(len(y), dim, generator=g), y


def test_episodes_separate_easy_from_hard_features() -> None:
    easy = episodic_accuracy(*_clusters(3.0), ways=5, shots=5, episodes=100)
    hard = episodic_accuracy(*_clusters(0.05), ways=5, shots=5, episodes=100)
    assert easy.mean_accuracy > 0.9 and hard.mean_accuracy < 0.4  # chance is 0.2
    assert 0 <= easy.ci95 < 0.05 and (easy.ways, easy.shots, easy.episodes) == (5, 5, 100)
    assert hard.ci95 > 0
    one = episodic_accuracy(*_clusters(1.0), ways=5, shots=1, episodes=100)
    five = episodic_accuracy(*_clusters(1.0), ways=5, shots=5, episodes=100)
    assert five.mean_accuracy > one.mean_accuracy  # more shots help
    assert episodic_accuracy(
        *_clusters(1.0), ways=5, shots=1, episodes=50, seed=3
    ) == episodic_accuracy(*_clusters(1.0), ways=5, shots=1, episodes=50, seed=3)


def test_too_few_images_per_class_is_a_clear_error() -> None:
    x, y = _clusters(1.0, n_per_class=10)
    with pytest.raises(ValueError, match="need 5"):
        episodic_accuracy(x, y, ways=5, shots=5, queries=15)


def test_fewshot_eval_on_an_image_folder(tmp_path: Path) -> None:
    from headstart.adapt.evaluate_episodes import fewshot_eval

    data = write_class_folders(tmp_path / "d", 12)
    r = fewshot_eval(
        str(data),
        "torchvision:resnet18@none",
        ways=3,
        shots=2,
        queries=5,
        episodes=20,
        image_size=32,
    )
    assert 0.0 <= r.mean_accuracy <= 1.0 and r.episodes == 20

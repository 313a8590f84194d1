from pathlib import Path

import pytest
import torch

from headstart.adapt.fewshot import episodic_accuracy
from headstart.errors import DataError
from tests.conftest import write_class_folders
from tests.inprocess_cli import run_main


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
    with pytest.raises(DataError, match=r"need 5 classes with at least 20 images") as err:
        episodic_accuracy(x, y, ways=5, shots=5, queries=15)
    assert err.value.exit_code == 2
    assert "to at most 10 (e.g. --shots 5 --queries 5)" in str(err.value)


@pytest.mark.parametrize(
    ("args", "says"),
    [  # 5 images a class (the folder): the default 5 shots + 15 queries cannot fit
        (["--shots", "5"], "lower --shots + --queries (5 + 15) to at most 5 (e.g. --shots 4 "
         "--queries 1)"),
        (["--ways", "20"], "--ways 20 needs 20 classes but the data has 10: lower --ways to at "
         "most 10"),
        (["--ways", "1"], "--ways 1: it must be at least 2"),
    ],
)  # fmt: skip
def test_fewshot_eval_cli_names_the_numbers_to_lower(
    args: list[str],
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    colours = {f"c{i}": (20 * i, 255 - 20 * i, 100) for i in range(10)}
    data = write_class_folders(tmp_path / "few", 5, classes=colours)
    cmd = ["fewshot-eval", str(data), "--model", "torchvision:resnet18@none", "--image-size", "32"]
    r = run_main([*cmd, *args], capsys, monkeypatch)
    assert r.code == 2, r.text[-2000:]
    assert says in " ".join(r.text.split()) and "Traceback" not in r.text


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

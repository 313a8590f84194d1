from pathlib import Path

import pytest

from headstart.config import TrainConfig
from headstart.errors import HeadstartError


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig.create(
        data="d", model="timm:test_resnet", epochs=3, head="mlp", image_size=48
    )
    cfg.save_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_overrides_replace_file_values(tmp_path: Path) -> None:
    TrainConfig.create(data="d", epochs=3).save_yaml(tmp_path / "c.yaml")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml", epochs=7).epochs == 7


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"data": "d", "epochs": 0}, "epochs"),
        ({"data": "d", "strategy": "magic"}, "strategy"),
        ({"data": "d", "lr_typo": 1}, "lr_typo: unknown setting"),
        ({"data": "d", "model": "resnet18"}, "torchvision:resnet18"),
    ],
)
def test_bad_values_name_the_field(values: dict, needle: str) -> None:
    with pytest.raises(HeadstartError, match=needle):
        TrainConfig.create(**values)


def test_bad_yaml_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(HeadstartError, match="mapping"):
        TrainConfig.from_yaml(p)
    with pytest.raises(HeadstartError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")

"""One parser decides what a --weights string means (models/weights_spec.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.models.weights_spec import WeightsSpec, is_random_init, split_model_weights


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("DEFAULT", "default"),
        ("pretrained", "default"),
        ("imagenet", "default"),
        ("none", "none"),
        ("Scratch", "none"),
        ("RANDOM", "none"),
        ("IMAGENET1K_V1", "named"),
        ("ResNet18_Weights.IMAGENET1K_V1", "named"),
        ("ckpt/backbone.pt", "file"),
        ("w.safetensors", "file"),
    ],
)
def test_kinds(text: str, kind: str) -> None:
    spec = WeightsSpec.parse(text)
    assert spec.kind == kind and spec.text == text
    assert spec.pretrained == (kind != "none")
    assert (spec.path == text) == (kind == "file") and (spec.name == text) == (kind == "named")


def test_existing_file_without_suffix_is_a_file_unless_named_like_an_enum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").write_bytes(b"")
    (tmp_path / "IMAGENET1K_V1").write_bytes(b"")
    assert WeightsSpec.parse("mine").kind == "file"
    assert WeightsSpec.parse("IMAGENET1K_V1").kind == "named"


def test_model_at_weights_and_random_init_labels() -> None:
    assert split_model_weights("torchvision:mobilenet_v2@none") == (
        "torchvision:mobilenet_v2",
        "none",
    )
    assert split_model_weights("timm:test_resnet") == ("timm:test_resnet", "DEFAULT")
    assert is_random_init("none") and not is_random_init("MobileNet_V2_Weights.IMAGENET1K_V1")

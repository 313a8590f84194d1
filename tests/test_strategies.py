from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

import headstart
from headstart.data.samplers import EpochBalancedSampler
from headstart.models import create_backbone
from headstart.strategies import Gradual, build_param_groups
from headstart.strategies.auto import decide
from tests.conftest import TINY, crash_and_resume, train_tiny, write_class_folders


def test_gradual_schedule_follows_the_seeds_order() -> None:
    bb = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    g = Gradual(unfreeze_every=2, steps=3)
    names = lambda e: {bb.stages[i].name for i in g.trainable_stages(e, 5)}  # noqa: E731
    assert names(0) == names(1) == set()
    assert names(2) == {"layer4"}
    assert names(4) == {"layer3", "layer4"}
    assert names(6) == set(bb.stage_names)  # "rest": everything
    assert g.unfreeze_order(6, 5) == [4, 3, 2, 1, 0]
    assert "+layer4 @epoch 2" in g.describe(bb)


class _GroupRecorder(L.Callback):
    def __init__(self) -> None:
        self.per_epoch: dict[int, list[tuple[str, float]]] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        groups = trainer.optimizers[0].param_groups
        self.per_epoch[trainer.current_epoch] = [(g["name"], g["lr"]) for g in groups]


def test_param_groups_per_epoch_under_gradual(image_folder: Path, tmp_path: Path) -> None:
    rec = _GroupRecorder()
    r = headstart.train(
        data=str(image_folder), out=str(tmp_path / "run"), extra_callbacks=[rec],
        **{**TINY, "epochs": 4, "strategy": "gradual", "unfreeze_every": 1, "gradual_steps": 2,
           "early_stopping_patience": None, "scheduler": "none", "layer_decay": 0.5},
    )  # fmt: skip
    names = {e: [n for n, _ in groups] for e, groups in rec.per_epoch.items()}
    assert names[0] == ["head", "head/no_decay"]
    assert names[1] == ["head", "head/no_decay", "layer4", "layer4/no_decay"]
    assert names[2][:4] == names[1] and names[2][4:] == [
        "layer3", "layer3/no_decay", "layer2", "layer2/no_decay",
        "layer1", "layer1/no_decay", "conv1..bn1", "conv1..bn1/no_decay",
    ]  # fmt: skip
    lrs = dict(rec.per_epoch[3])
    lr, mult = 3e-3, 0.1
    assert lrs["head"] == pytest.approx(lr)
    assert lrs["layer4"] == pytest.approx(lr * mult)  # layer decay: 0.5 ** 0 for the last stage
    assert lrs["layer3"] == pytest.approx(lr * mult * 0.5)
    assert lrs["conv1..bn1"] == pytest.approx(lr * mult * 0.5**4)
    assert r.metrics["run"]["unfreeze_events"] == [
        [1, ["layer4"]],
        [2, ["layer3", "layer2", "layer1", "conv1..bn1"]],
    ]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_gradual_resume_equals_uninterrupted(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    kw = {
        "strategy": "gradual",
        "unfreeze_every": 1,
        "gradual_steps": 3,
        "epochs": 4,
        "augment": "light",
        "optimizer": optimizer,
    }
    straight = train_tiny(image_folder, tmp_path / "straight", **kw)

    resumed = crash_and_resume(image_folder, tmp_path / "part", monkeypatch, 2, **kw)
    a = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)
    b = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], atol=0, rtol=0, msg=k)
    ga = [(g["name"], g["lr"]) for g in a["optimizer_states"][0]["param_groups"]]
    gb = [(g["name"], g["lr"]) for g in b["optimizer_states"][0]["param_groups"]]
    assert ga == gb
    assert resumed.metrics["run"]["unfreeze_events"] == straight.metrics["run"]["unfreeze_events"]


def test_batchnorm_statistics_frozen_for_small_batches(image_folder: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    init = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    torch.save(init.body.state_dict(), tmp_path / "init.pth")
    r = train_tiny(
        image_folder,
        tmp_path / "run",
        weights=str(tmp_path / "init.pth"),
        strategy="fine-tune",
        epochs=1,
    )
    assert r.metrics["run"]["batchnorm"]["trainable_stages_frozen"] is True  # batch 8 < 16
    after = headstart.load_run(r.run_dir).model.body
    assert torch.equal(after.layer4[0].bn1.running_mean, init.body.layer4[0].bn1.running_mean)
    assert not torch.equal(after.layer4[0].conv1.weight, init.body.layer4[0].conv1.weight)
    r2 = train_tiny(
        image_folder,
        tmp_path / "run2",
        weights=str(tmp_path / "init.pth"),
        strategy="fine-tune",
        epochs=1,
        bn="train",
    )
    after2 = headstart.load_run(r2.run_dir).model.body
    assert not torch.equal(after2.layer4[0].bn1.running_mean, init.body.layer4[0].bn1.running_mean)


def test_class_weights_are_inverse_frequency(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_class_folders(root / "train", 4, classes={"a": (200, 0, 0)})
    write_class_folders(root / "train", 12, classes={"b": (0, 200, 0)})
    write_class_folders(root / "val", 2, classes={"a": (200, 0, 0), "b": (0, 200, 0)})
    r = train_tiny(root, tmp_path / "run", class_weights="auto", epochs=1)
    assert r.metrics["run"]["class_weights"] == pytest.approx([16 / (2 * 4), 16 / (2 * 12)])


def test_balanced_sampler_draws_classes_equally() -> None:
    targets = [0] * 90 + [1] * 10
    s = EpochBalancedSampler(targets, seed=1)
    s.set_epoch(3)
    drawn = [targets[i] for i, _ in s]
    assert len(drawn) == 100 and 35 <= sum(drawn) <= 65
    assert [i for i, _ in s] == [i for i, _ in s]  # same epoch, same draw


def test_layer_decay_param_groups() -> None:
    bb = create_backbone("timm:test_vit", 3, weights="none")
    bb.set_trainable_stages(set(range(len(bb.stages))))
    groups = build_param_groups(bb, lr=1.0, weight_decay=0.0, backbone_lr_mult=1.0, layer_decay=0.5)
    n = len(bb.stages)
    by = {g["name"]: g["lr"] for g in groups}
    for i, st in enumerate(bb.stages):
        assert by[st.name] == pytest.approx(0.5 ** (n - 1 - i))


@pytest.mark.parametrize(
    ("n", "probe", "expected"),
    [
        (500, 0.9, "feature-extract"),
        (500, 0.2, "partial"),
        (5000, 0.9, "gradual"),
        (5000, 0.15, "fine-tune"),
        (50_000, 0.9, "fine-tune"),
        (500, None, "feature-extract"),
    ],
)
def test_auto_decision_rules(n: int, probe: float | None, expected: str) -> None:
    d = decide(n, 10, probe)
    assert d.strategy == expected
    assert d.reasons and d.numbers["train_images"] == n


def test_auto_runs_end_to_end_and_records_why(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "d", 16)  # > 10 training images per class: not few-shot
    r = train_tiny(data, tmp_path / "run", strategy="auto", epochs=1)
    dec = r.metrics["run"]["auto_decision"]
    # auto measures candidates (issue 16): the probe, feature extraction, then trained ones
    assert dec["strategy"] in ("few-shot", "feature-extract", "partial", "gradual", "fine-tune")
    assert 0.0 <= dec["numbers"]["probe_accuracy"] <= 1.0 and len(dec["reasons"]) >= 4
    # no --time-budget, no --trials: the frozen pair and at most one of each trained strategy
    names = [c["name"] for c in r.metrics["run"]["auto"]["candidates"]]
    assert names[:2] == ["probe", "feature-extract"] and len(names) <= 5, names


@pytest.mark.parametrize("mix", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.2, "cutmix": 1.0}])
def test_mixup_cutmix_train_on_images(image_folder: Path, tmp_path: Path, mix: dict) -> None:
    r = train_tiny(image_folder, tmp_path / "run", epochs=1, **mix)
    assert r.metrics["run"]["cached_features"] is False  # mixing needs images
    assert r.metrics["val"]["samples"] == 6


def test_bn_frozen_modules_stay_in_eval() -> None:
    bb = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    bb.set_trainable_stages(set(range(len(bb.stages))))
    bb.bn_frozen = [True] * len(bb.stages)
    bb.train()
    bns = [m for m in bb.body.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert all(p.requires_grad for m in bns for p in m.parameters())


def test_lr_find_suggests_and_plots(image_folder: Path, tmp_path: Path) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    res = headstart.lr_find(
        data=str(image_folder), plot=tmp_path / "lr.png", num_training=30, min_lr=1e-5, max_lr=10.0,
        **{**TINY, "batch_size": 4},
    )  # fmt: skip
    assert len(res.lrs) >= 10 and res.lrs == sorted(res.lrs)
    assert res.plot is not None and res.plot.stat().st_size > 1000
    # drawn without pyplot: a notebook's backend and open figures are left alone
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures
    assert res.suggestion is None or 1e-5 <= res.suggestion <= 10.0
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("policy", ["auto", "train"])
def test_bn_auto_quickens_slow_statistics_of_trained_stages(policy: str) -> None:
    # weights ported from TensorFlow (EfficientNet-Lite0) carry momentum 0.01: their running
    # statistics would still be ImageNet's at the end of a short run (test 0.843 vs 0.910)
    from headstart.config import TrainConfig
    from headstart.strategies import make_strategy
    from headstart.training.plan import apply_bn_policy

    bb = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    for m in bb.body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.01
    n = len(bb.stages)
    config = TrainConfig.create(data=".", strategy="partial", unfreeze_last=2, bn=policy)
    frozen, reason = apply_bn_policy(config, make_strategy(config), bb, probe_start=False)
    trained = [m.momentum for i in (n - 2, n - 1) for m in bb.stage_batchnorms(i)]
    untouched = [m.momentum for i in range(n - 2) for m in bb.stage_batchnorms(i)]
    assert not frozen and trained and untouched and set(untouched) == {0.01}
    if policy == "auto":
        assert set(trained) == {0.1} and "momentum raised from 0.01 to 0.1" in reason
    else:  # an explicit --bn train keeps the model's own momentum
        assert set(trained) == {0.01} and reason == "--bn train"

"""Cached activations (issue 17): the body split at a stage boundary reproduces the body; partial
fine-tuning on stored activations gives the image path's weights, resumes exactly, reads the
disk cache back, and falls back to images (saying why) when it cannot or should not be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import headstart
from headstart.models import Backbone, Preprocessing, Stage, create_backbone
from headstart.models.split import SplitError
from headstart.strategies.base import Gradual, Partial
from headstart.training import activations as act
from tests.conftest import crash_and_resume, train_tiny

PARTIAL = {"strategy": "partial", "unfreeze_last": 2, "head_init": "random"}


def _state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize(
    "spec", ["torchvision:resnet18", "torchvision:mobilenet_v2", "timm:test_resnet",
             "timm:test_efficientnet",
             # its forward reads the input's batch size at the top (bs = x.size(0)) and uses
             # it after the last stage: the suffix reads it from the activations (~10 s)
             pytest.param("efficientnet-lite:efficientnet-lite0", marks=pytest.mark.slow)],
)  # fmt: skip
def test_body_from_every_stage_reproduces_the_body(spec: str) -> None:
    b = create_backbone(spec, 3, weights="none", image_size=64)
    x = torch.randn(3, 3, 64, 64)
    n = len(b.stages)
    for cut in range(1, n):
        b.set_trainable_stages(range(cut, n))
        b.eval()
        with torch.no_grad():
            a = b.forward_to(cut, x)
            torch.testing.assert_close(b.forward_from(cut, a), b.features(x), atol=1e-5, rtol=1e-5)


class _SkipAcrossStages(nn.Module):
    """The input is added back after the last stage: no single tensor crosses any boundary."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.b(self.a(x)) + x).mean((2, 3))


def _skip_backbone() -> Backbone:
    pre = Preprocessing(crop=16, resize=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    stages = [Stage("a", ("a.weight", "a.bias")), Stage("b", ("b.weight", "b.bias"))]
    return Backbone(_SkipAcrossStages(), nn.Linear(3, 2), stages, 3, pre, "test:skip")


def test_a_body_that_cannot_be_cut_falls_back_to_images(capsys: pytest.CaptureFixture) -> None:
    b = _skip_backbone()
    with pytest.raises(SplitError, match="crosses"):
        b.split_at(1)
    config = headstart.TrainConfig(data="x", strategy="partial", epochs=2)
    assert act.plan_activations(config, b, Partial(1), 10, 5) is None
    assert "cached activations: off, training on images" in " ".join(
        capsys.readouterr().out.split()
    )


def test_the_cut_is_the_prefix_frozen_in_every_epoch() -> None:
    assert act.frozen_prefix(Partial(2), 5, epochs=6) == 3
    assert act.frozen_prefix(Gradual(unfreeze_every=2, steps=3), 5, epochs=6) == 3  # epochs 0-5
    assert act.frozen_prefix(Gradual(unfreeze_every=2, steps=3), 5, epochs=7) == 0  # all at 6


def test_a_gradual_run_caches_the_epochs_before_stage_0_joins() -> None:
    # 5 stages; epochs: head, +stage 4, all -> stages 0-3 frozen in epochs 0-1
    assert act.first_phase(Gradual(unfreeze_every=1, steps=2), 5, epochs=3) == (4, 2)
    # head alone until all join: stage 4 is frozen too but runs on the stored rows
    assert act.first_phase(Gradual(unfreeze_every=2, steps=1), 5, epochs=4) == (4, 2)
    assert act.first_phase(Gradual(unfreeze_every=1, steps=3), 5, epochs=6) == (3, 3)
    assert act.first_phase(Partial(5), 5, epochs=3) == (0, 0)  # stage 0 trains from the start
    b = create_backbone("torchvision:resnet18", 3, weights="none", image_size=64)
    b.set_trainable_stages([])  # epoch 0: the head alone
    config = headstart.TrainConfig(data="x", strategy="gradual", epochs=3)
    p = act.plan_activations(config, b, Gradual(unfreeze_every=1, steps=2), 10, 4)
    assert p is not None and (p.cut, p.until, p.boundary) == (4, 2, "layer3")
    # one cached epoch stores what it saves: images throughout
    assert act.plan_activations(config, b, Gradual(unfreeze_every=1, steps=1), 10, 4) is None


def test_gradual_on_cached_activations_then_images_gives_the_image_paths_weights(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through an unfreezing step on the stored rows (epoch 1) and the move to images when
    every stage joins (epoch 2); a crash after epoch 1 resumes on images exactly."""
    kw = {"strategy": "gradual", "unfreeze_every": 1, "gradual_steps": 2, "epochs": 3,
          "optimizer": "sgd", "head_init": "random"}  # fmt: skip
    a = train_tiny(image_folder, tmp_path / "a", **kw)
    b = train_tiny(image_folder, tmp_path / "b", cache_activations=False, **kw)
    assert a.metrics["run"]["cached_activations"]["until_epoch"] == 2
    assert b.metrics["run"]["cached_activations"] is None
    assert _max_diff(_state(a.run_dir), _state(b.run_dir)) <= 1e-4
    # validation follows the phases too: stored rows in epochs 0-1, images in epoch 2
    logs = [np.genfromtxt(r.run_dir / "log.csv", delimiter=",", names=True) for r in (a, b)]
    np.testing.assert_allclose(logs[0]["val_loss"], logs[1]["val_loss"], atol=1e-4)

    resumed = crash_and_resume(image_folder, tmp_path / "part", monkeypatch, 1, **kw)
    assert resumed.metrics["run"]["epochs_run"] == 3
    assert _max_diff(_state(a.run_dir), _state(tmp_path / "part")) == 0.0


def test_store_size_is_rows_times_bytes_per_image() -> None:
    b = create_backbone("torchvision:resnet18", 3, weights="none", image_size=64)
    b.set_trainable_stages([3, 4])
    config = headstart.TrainConfig(data="x", strategy="partial", unfreeze_last=2, feature_views=3)
    p = act.plan_activations(config, b, Partial(2), train_images=10, val_images=4)
    assert p is not None and p.cut == 3 and p.boundary == "layer2" and p.shape == (128, 8, 8)
    assert p.rows == 10 * 3 + 4 and p.total_bytes == p.rows * 128 * 8 * 8 * 2


def test_training_on_cached_activations_gives_the_image_paths_weights(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same seed, views and batches, no augmentation. float16 storage is the only difference:
    with SGD the weights agree to 1e-4; stored as float32 through the unfolded prefix they are
    identical (AdamW). The store runs the prefix with BatchNorm folded (float rounding only:
    test_the_store_runs_the_prefix_with_batchnorm_folded)."""
    a = train_tiny(image_folder, tmp_path / "a", optimizer="sgd", **PARTIAL)
    b = train_tiny(image_folder, tmp_path / "b", optimizer="sgd", cache_activations=False,
                   **PARTIAL)  # fmt: skip
    assert a.metrics["run"]["cached_activations"]["cut"] == 3
    assert b.metrics["run"]["cached_activations"] is None
    assert _max_diff(_state(a.run_dir), _state(b.run_dir)) <= 1e-4
    assert a.metrics["val"]["accuracy"] == b.metrics["val"]["accuracy"]

    monkeypatch.setattr(act, "STORE_DTYPE", np.float32)
    monkeypatch.setattr(
        Backbone, "inference_prefix", lambda self, stage: self.split_at(stage).prefix[False]
    )
    c = train_tiny(image_folder, tmp_path / "c", **PARTIAL)
    d = train_tiny(image_folder, tmp_path / "d", cache_activations=False, **PARTIAL)
    assert c.metrics["run"]["cached_activations"] and not d.metrics["run"]["cached_activations"]
    assert _max_diff(_state(c.run_dir), _state(d.run_dir)) == 0.0


def test_the_store_runs_the_prefix_with_batchnorm_folded() -> None:
    b = create_backbone("torchvision:resnet18", 3, weights="none", image_size=64)
    b.set_trainable_stages([3, 4])
    b.eval()
    x = torch.randn(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    folded = b.inference_prefix(3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), b.forward_to(3, x), rtol=1e-4, atol=1e-5)
    assert b.inference_prefix(3) is folded  # kept while the prefix's weights stay the same
    with torch.no_grad():
        next(b.body.parameters()).add_(1.0)
    assert b.inference_prefix(3) is not folded


def test_resume_on_cached_activations_equals_uninterrupted_run(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = {**PARTIAL, "epochs": 3, "feature_views": 2, "augment": "light"}
    straight = train_tiny(image_folder, tmp_path / "straight", **kw)
    assert straight.metrics["run"]["cached_activations"]["rows"] == 2 * 30 + 6

    resumed = crash_and_resume(image_folder, tmp_path / "part", monkeypatch, 1, **kw)
    assert resumed.metrics["run"]["epochs_run"] == 3
    assert _max_diff(_state(straight.run_dir), _state(tmp_path / "part")) == 0.0


def test_second_run_reads_activations_from_disk_and_the_size_limit_falls_back(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first = train_tiny(image_folder, tmp_path / "a", **PARTIAL)
    capsys.readouterr()
    second = train_tiny(image_folder, tmp_path / "b", **PARTIAL)
    assert "from the disk cache (train, val)" in " ".join(capsys.readouterr().out.split())
    assert _max_diff(_state(first.run_dir), _state(second.run_dir)) == 0.0

    small = train_tiny(image_folder, tmp_path / "c", cache_max_gb=1e-6, **PARTIAL)
    assert small.metrics["run"]["cached_activations"] is None
    assert "> --cache-max-gb" in " ".join(capsys.readouterr().out.split())


def test_an_untraceable_hf_body_trains_on_images_and_says_why(
    tiny_hf_vit: Path, capsys: pytest.CaptureFixture
) -> None:
    b = create_backbone(f"hf:{tiny_hf_vit}", 3)
    b.set_trainable_stages([3])
    config = headstart.TrainConfig(data="x", strategy="partial", epochs=2)
    assert act.plan_activations(config, b, Partial(1), 10, 4) is None
    out = " ".join(capsys.readouterr().out.split())
    assert "cached activations: off, training on images (the body cannot be cut" in out
    assert "torch.fx cannot trace the body" in out


def test_one_pass_gives_the_features_and_the_activations_of_two_passes(tmp_path: Path) -> None:
    """auto's first pass (features for the frozen candidates + the first partial candidate's
    activations) equals extract_features and extract_activations run separately."""
    from headstart.data import load_splits
    from headstart.data.datasets import ImageDataset
    from headstart.data.transforms import build_eval_transform
    from headstart.training.features import extract_features
    from tests.conftest import write_class_folders

    root = write_class_folders(tmp_path / "d", 3)
    b = create_backbone("torchvision:mobilenet_v2", 3, weights="none", image_size=32)
    samples = load_splits(root).train
    idx = {c: i for i, c in enumerate(sorted({s.label for s in samples}))}
    ds = ImageDataset(samples, idx, build_eval_transform(b.preprocessing), b.preprocessing.resize)
    cut = len(b.stages) - 3
    b.set_trainable_stages(range(cut, len(b.stages)))  # as the partial candidate has it
    x, y, a = act.features_with_activations(b, cut, ds)
    x2, y2 = extract_features(b, ds)
    torch.testing.assert_close(x, x2, atol=1e-5, rtol=1e-5)
    assert torch.equal(y, y2) and a.dtype == act.STORE_DTYPE
    act.extract_activations(b, cut, ds, tmp_path / "a.npy")
    stored = act.load_activations(tmp_path / "a.npy", len(ds), a.shape[1:])
    assert stored is not None and np.array_equal(stored.values, a)
    act.store_activation_rows(tmp_path / "b.npy", a, y)
    again = act.load_activations(tmp_path / "b.npy", len(ds), a.shape[1:])
    assert again is not None and np.array_equal(again.values, a)
    assert torch.equal(again.targets, y)

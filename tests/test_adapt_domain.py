"""Domain adaptation: each loss against its definition, and adapted runs through the trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headstart
from headstart.adapt.domain import (
    DomainAdversarialLoss,
    MultiKernelMMD,
    TargetSampler,
    dann_lambda,
    grad_reverse,
)
from headstart.errors import HeadstartError
from headstart.models import create_backbone
from headstart.training.module import HeadstartModule
from tests.conftest import train_tiny, write_class_folders


def _naive_mmd(s: torch.Tensor, t: torch.Tensor, multipliers: tuple[float, ...]) -> float:
    """The docstring's formula written out with explicit loops."""
    z = torch.cat([s, t]).double()
    n_all = len(z)
    pair = [float(((z[i] - z[j]) ** 2).sum()) for i in range(n_all) for j in range(n_all) if i != j]
    sigma2 = sum(pair) / len(pair)

    def k(x: torch.Tensor, y: torch.Tensor) -> float:
        d = float(((x.double() - y.double()) ** 2).sum())
        return sum(math.exp(-d / (2 * g * sigma2)) for g in multipliers) / len(multipliers)

    n, m = len(s), len(t)
    ss = sum(k(a, b) for a in s for b in s) / n**2
    tt = sum(k(a, b) for a in t for b in t) / m**2
    st = sum(k(a, b) for a in s for b in t) / (n * m)
    return ss + tt - 2 * st


def test_mmd_matches_its_definition() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 5, generator=g), torch.randn(5, 5, generator=g) + 0.5
    mmd = MultiKernelMMD()
    assert float(mmd(s, t)) == pytest.approx(_naive_mmd(s, t, mmd.multipliers), rel=1e-5)


def test_mmd_zero_for_same_distribution_and_grows_with_shift() -> None:
    g = torch.Generator().manual_seed(1)
    mmd = MultiKernelMMD()
    x = torch.randn(256, 8, generator=g)
    assert float(mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    same = float(mmd(x, torch.randn(256, 8, generator=g)))  # only the V-statistic's bias
    shifts = [float(mmd(x, torch.randn(256, 8, generator=g) + d)) for d in (0.5, 1.0, 2.0)]
    assert 0 <= same < 0.25 * shifts[0]
    assert shifts == sorted(shifts)


def test_mmd_gradient_pulls_target_towards_source() -> None:
    g = torch.Generator().manual_seed(2)
    s = torch.randn(32, 4, generator=g)
    t = (torch.randn(32, 4, generator=g) + 2.0).requires_grad_(True)
    mmd = MultiKernelMMD()
    before, gap = float(mmd(s, t).detach()), float((t.mean(0) - s.mean(0)).norm().detach())
    opt = torch.optim.Adam([t], lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        mmd(s, t).backward()
        opt.step()
    assert float(mmd(s, t).detach()) < 0.2 * before
    assert float((t.mean(0) - s.mean(0)).norm().detach()) < 0.25 * gap


def test_gradient_reversal_flips_sign_times_lambda() -> None:
    x = torch.randn(6, 3, requires_grad=True)
    w = torch.randn(6, 3)
    (grad_reverse(x, 0.37) * w).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, -0.37 * w)
    y = torch.randn(2, 2)
    assert torch.equal(grad_reverse(y, 5.0), y)


def test_dann_lambda_schedule() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_lambda(0.1) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    vals = [dann_lambda(p / 10) for p in range(11)]
    assert vals == sorted(vals) and vals[-1] < 1.0


def test_dann_loss_trains_discriminator_and_reverses_features() -> None:
    torch.manual_seed(0)
    loss = DomainAdversarialLoss(4, hidden=16)
    s, t = torch.randn(16, 4), torch.randn(16, 4) + 3.0
    # with both inputs as leaves: BCE of the discriminator, and reversed gradients for features
    s.requires_grad_(True)
    value = loss(s, t, progress=1.0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        loss.discriminator(torch.cat([s, t])).squeeze(1),
        torch.cat([torch.ones(16), torch.zeros(16)]),
    )
    torch.testing.assert_close(value, expected)
    value.backward()
    assert s.grad is not None
    s2 = s.detach().clone().requires_grad_(True)
    expected_plain = torch.nn.functional.binary_cross_entropy_with_logits(
        loss.discriminator(torch.cat([s2, t])).squeeze(1),
        torch.cat([torch.ones(16), torch.zeros(16)]),
    )
    expected_plain.backward()
    assert s2.grad is not None
    torch.testing.assert_close(s.grad, -dann_lambda(1.0) * s2.grad)


def test_target_sampler_pairs_every_source_row_and_is_epoch_seeded() -> None:
    a = TargetSampler(5, 12, seed=3)
    first = list(a)
    assert len(first) == 12 and {i for i, _ in first} == set(range(5))
    assert list(a) == first
    a.set_epoch(1)
    assert list(a) != first and all(e == 1 for _, e in a)


# --- through the trainer ---------------------------------------------------------------------
def _invert(src: Path, dst: Path) -> Path:
    for f in src.rglob("*.png"):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        arr = 255 - np.asarray(Image.open(f).convert("RGB"))
        Image.fromarray(arr[:, ::-1].copy()).save(out)
    return dst


@pytest.fixture
def shifted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """source class folders; target = colour-inverted, mirrored copies (unlabeled + eval)."""
    source = write_class_folders(tmp_path / "source", 10, seed=0)
    target = _invert(write_class_folders(tmp_path / "t-raw", 6, seed=5), tmp_path / "target")
    target_eval = _invert(write_class_folders(tmp_path / "e-raw", 4, seed=6), tmp_path / "eval")
    return source, target, target_eval


@pytest.mark.parametrize("method", ["mmd", "dann"])
def test_adapted_run_on_cached_features_reports_both_accuracies(
    shifted: tuple[Path, Path, Path], tmp_path: Path, method: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    source, target, target_eval = shifted
    r = train_tiny(
        source, tmp_path / "run", head="mlp", head_hidden=32, adapt=method,
        target_unlabeled=str(target), target_eval=str(target_eval), epochs=2,
    )  # fmt: skip
    m = json.loads((r.run_dir / "metrics.json").read_text())
    printed = " ".join(capsys.readouterr().out.split())
    a = m["adaptation"]
    assert (
        f"target domain (12 labelled): accuracy {m['target_eval']['accuracy']:.4f} with "
        f"--adapt {method}, source-only {a['source_only_target_accuracy']:.4f}: "
        f"{a['gain_points']:+.2f} points"
    ) in printed, printed
    assert m["run"]["cached_features"] is True
    a = m["adaptation"]
    assert a["method"] == method and a["target_unlabeled_images"] == 18
    assert a["adapted_target_accuracy"] == m["target_eval"]["accuracy"]
    base = json.loads((r.run_dir / "source-only" / "metrics.json").read_text())
    assert a["source_only_target_accuracy"] == base["target_eval"]["accuracy"]
    assert a["gain_points"] == pytest.approx(
        100 * (a["adapted_target_accuracy"] - a["source_only_target_accuracy"]), abs=0.01
    )
    assert "adaptation" not in base and base["target_eval"]["samples"] == 12
    log = (r.run_dir / "log.csv").read_text()
    assert log.count("\n") == 3
    html = (r.run_dir / "report.html").read_text()
    assert "source-only" in html
    ckpt = torch.load(r.run_dir / "checkpoints/last.ckpt", weights_only=True)
    disc = [k for k in ckpt["state_dict"] if k.startswith("train_hook.")]
    assert bool(disc) == (method == "dann")
    # the adapted model loads and predicts like any run
    assert len(headstart.predict(r.run_dir, [str(target_eval)])) == 12


def test_adaptation_changes_the_model(shifted: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Same seed and data: the adapted head differs from the source-only one (the loss acts)."""
    source, target, target_eval = shifted
    kw = {"head": "mlp", "head_hidden": 32, "target_eval": str(target_eval), "epochs": 2}
    r = train_tiny(source, tmp_path / "run", adapt="mmd", target_unlabeled=str(target),
                   adapt_weight=5.0, **kw)  # fmt: skip
    a = torch.load(r.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(r.run_dir / "source-only/checkpoints/last.ckpt", weights_only=True)
    key = "backbone.head.1.weight"
    assert not torch.equal(a[key], b["state_dict"][key])


@pytest.mark.slow  # ~15 s: the default suite keeps under 10 minutes on 2 cores
def test_adapted_partial_run_trains_backbone_stages(
    shifted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    source, target, _ = shifted
    r = train_tiny(source, tmp_path / "run", strategy="partial", adapt="dann",
                   target_unlabeled=str(target), epochs=1)  # fmt: skip
    assert r.metrics["run"]["cached_features"] is False
    assert "target_eval" not in r.metrics
    log = (r.run_dir / "log.csv").read_text().splitlines()
    assert len(log) == 2 and log[1].split(",")[1] not in ("", "nan")


@pytest.mark.slow  # ~15 s: the default suite keeps under 10 minutes on 2 cores
def test_dann_on_cached_activations_gives_the_image_paths_weights(
    shifted: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """partial + DANN: the frozen prefix runs once for source and target images, the trainable
    stages see mixed source+target batches (train-mode BatchNorm) as on images. Stored as
    float32 through the unfolded prefix (stores fold BatchNorm: float rounding, tested in
    test_activations) the weights (discriminator included) are the image path's exactly."""
    from headstart.models import Backbone
    from headstart.training import activations as act

    monkeypatch.setattr(act, "STORE_DTYPE", np.float32)
    monkeypatch.setattr(
        Backbone, "inference_prefix", lambda self, stage: self.split_at(stage).prefix[False]
    )
    source, target, _ = shifted
    kw = {"strategy": "partial", "unfreeze_last": 2, "head_init": "random", "adapt": "dann",
          "target_unlabeled": str(target), "bn": "train", "epochs": 1}  # fmt: skip
    a = train_tiny(source, tmp_path / "a", **kw)
    b = train_tiny(source, tmp_path / "b", cache_activations=False, **kw)
    assert a.metrics["run"]["cached_activations"]["cut"] == 3
    assert b.metrics["run"]["cached_activations"] is None
    sa = torch.load(a.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(b.run_dir / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("train_hook.") for k in sa) and sa.keys() == sb.keys()
    for k in sa:  # BatchNorm running statistics of the trainable stages included
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)
    start = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    assert not torch.equal(
        sa["backbone.body.layer4.0.bn1.running_mean"], start.body.layer4[0].bn1.running_mean
    )


def test_nothing_to_adapt_is_refused(shifted: tuple[Path, Path, Path], tmp_path: Path) -> None:
    source, target, _ = shifted
    with pytest.raises(HeadstartError, match="--head mlp"):
        train_tiny(source, tmp_path / "run", adapt="mmd", target_unlabeled=str(target))


def test_adapt_settings_are_validated() -> None:
    with pytest.raises(HeadstartError, match="target_unlabeled"):
        headstart.TrainConfig.create(data="x", adapt="dann")
    with pytest.raises(HeadstartError, match="adapt"):
        headstart.TrainConfig.create(data="x", target_unlabeled="t/")


class _SimulatedCrash(Exception):
    pass


@pytest.mark.slow
def test_adapted_resume_equals_uninterrupted_run(
    shifted: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target, _ = shifted
    kw = {"strategy": "partial", "adapt": "dann", "target_unlabeled": str(target),
          "augment": "light", "epochs": 3}  # fmt: skip
    straight = train_tiny(source, tmp_path / "straight", **kw)

    def crash_after_epoch_1(self: HeadstartModule) -> None:
        if self.current_epoch == 1:
            raise _SimulatedCrash

    monkeypatch.setattr(HeadstartModule, "on_train_epoch_end", crash_after_epoch_1, raising=False)
    with pytest.raises(_SimulatedCrash):
        train_tiny(source, tmp_path / "part", **kw)
    monkeypatch.undo()
    resumed = headstart.train(resume=tmp_path / "part")
    sa = torch.load(straight.run_dir / "checkpoints/last.ckpt", weights_only=True)
    sb = torch.load(resumed.run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert any(k.startswith("train_hook.") for k in sa["state_dict"])
    for k in sa["state_dict"]:
        torch.testing.assert_close(sa["state_dict"][k], sb["state_dict"][k], atol=0, rtol=0, msg=k)
    oa, ob = sa["optimizer_states"][0]["state"], sb["optimizer_states"][0]["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        torch.testing.assert_close(oa[k]["exp_avg"], ob[k]["exp_avg"], atol=0, rtol=0)


@pytest.mark.slow
def test_adapted_run_under_ddp_keeps_ranks_identical(
    shifted: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """DANN under 2-process DDP: backbone, head and discriminator stay identical across ranks."""
    import os
    import subprocess
    import sys

    source, target, _ = shifted
    dumps = tmp_path / "dumps"
    script = Path(__file__).with_name("ddp_adapt_script.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    r = subprocess.run(
        [sys.executable, str(script), str(source), str(target), str(tmp_path / "run"), str(dumps)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for epoch in range(2):
        a = torch.load(dumps / f"rank0-epoch{epoch}.pt", weights_only=True)["state"]
        b = torch.load(dumps / f"rank1-epoch{epoch}.pt", weights_only=True)["state"]
        assert any(k.startswith("train_hook.") for k in a)
        for k, v in a.items():
            assert torch.equal(v, b[k]), f"epoch {epoch}: {k} differs across ranks"
    first = torch.load(dumps / "rank0-epoch0.pt", weights_only=True)["state"]
    last = torch.load(dumps / "rank0-epoch1.pt", weights_only=True)["state"]
    key = "train_hook.loss.discriminator.0.weight"
    assert not torch.equal(first[key], last[key])


def test_adapt_with_stage_0_joining_later_trains_on_images(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A gradual run that reaches stage 0 would move source batches to images mid-run; the
    target batches cannot follow, so such a run trains on images throughout."""
    from headstart.strategies.base import Gradual
    from headstart.training import activations as act

    b = create_backbone("torchvision:resnet18", 3, weights="none", image_size=64)
    b.set_trainable_stages([])
    kw = {"data": "x", "strategy": "gradual", "epochs": 3}
    plain = headstart.TrainConfig(**kw)
    adapted = headstart.TrainConfig(**kw, adapt="dann", target_unlabeled="t/")
    assert act.plan_activations(plain, b, Gradual(unfreeze_every=1, steps=2), 10, 4) is not None
    capsys.readouterr()
    assert act.plan_activations(adapted, b, Gradual(unfreeze_every=1, steps=2), 10, 4) is None
    assert "--adapt with stage conv1..bn1 joining at epoch 2" in " ".join(
        capsys.readouterr().out.split()
    )

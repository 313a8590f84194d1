"""Issue 16: recipes that hold on short budgets — a gradual schedule fitted to the run, the probe
head start for gradual's head-only first phase, stages re-warmed when they join, and BatchNorm
statistics that do not drift."""

import re
from pathlib import Path

import pytest
import torch

from headstart.models import create_backbone
from headstart.strategies import Gradual
from headstart.training.schedules import CosineWithWarmup, rewarmed
from tests.conftest import train_tiny

STEPS_PER_EPOCH = 10


@pytest.mark.parametrize("epochs", range(1, 13))
def test_derived_gradual_schedule_fits_the_run(epochs: int) -> None:
    bb = create_backbone("torchvision:mobilenet_v2", 3, weights="none", image_size=32)
    n = len(bb.stages)
    g = Gradual(None, 3, epochs=epochs)
    events = g.events(epochs, bb)
    lr = CosineWithWarmup(0, epochs * STEPS_PER_EPOCH)  # the default schedule
    for epoch, _names in events:
        assert 0 < epoch < epochs
        # a stage joins while the LR is at least half its peak: never at (or near) LR 0
        assert lr(epoch * STEPS_PER_EPOCH) >= 0.5
    if epochs >= 2:  # the run ends with every stage trained (the last step is "the rest")
        assert g.trainable_stages(epochs - 1, n) == set(range(n))
        assert 1 <= len(events) <= 3
    else:
        assert not events and g.trainable_stages(0, n) == set()
    # the printed plan lists exactly the events of the run
    printed = [int(e) for e in re.findall(r"@epoch (\d+)", g.describe(bb))]
    assert printed == [e for e, _ in events]


def test_explicit_unfreeze_every_prints_only_events_within_the_run() -> None:
    bb = create_backbone("torchvision:mobilenet_v2", 3, weights="none", image_size=32)
    g = Gradual(2, 3, epochs=5)  # the run: steps at epochs 2, 4 and 6
    text = g.describe(bb)
    assert re.findall(r"@epoch (\d+)", text) == ["2", "4"]
    assert "1 later step(s)" in text and "5-epoch run" in text


def _bn_state(body: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in body.state_dict().items() if "running_" in k}


@pytest.mark.parametrize("head_init", ["probe", "random"])
def test_late_joining_stages_keep_their_batchnorm_statistics(
    image_folder: Path, tmp_path: Path, head_init: str
) -> None:
    torch.manual_seed(0)
    init = create_backbone("torchvision:resnet18", 3, weights="none", image_size=32)
    torch.save(init.body.state_dict(), tmp_path / "init.pth")
    r = train_tiny(
        image_folder, tmp_path / "run", weights=str(tmp_path / "init.pth"), strategy="gradual",
        epochs=4, batch_size=16, head_init=head_init,
    )  # fmt: skip
    run = r.metrics["run"]
    assert run["unfreeze_events"][-1][0] == 2  # 4 epochs: +layer4 @1, +rest @2
    from headstart import load_run

    after = load_run(r.run_dir).model.body
    before = _bn_state(init.body)
    for k, v in _bn_state(after).items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0, msg=k)
    assert not torch.equal(after.layer4[0].conv1.weight, init.body.layer4[0].conv1.weight)
    if head_init == "probe":  # the head-only first phase starts from the probe
        assert run["head_init"].startswith("probe")
        assert run["batchnorm"]["trainable_stages_frozen"] is True
    else:  # batch 16 alone would update them; stages joining late keep theirs
        assert run["head_init"] == "random"
        assert run["batchnorm"]["trainable_stages_frozen"] is False
        assert "join after epoch 0" in run["batchnorm"]["reason"]


@pytest.mark.parametrize("strategy", ["partial", "fine-tune"])
def test_stages_trained_from_the_start_keep_a_random_head(
    image_folder: Path, tmp_path: Path, strategy: str
) -> None:
    # measured: a probe-started head under fine-tuning collapsed (see training/plan.py)
    r = train_tiny(image_folder, tmp_path / "run", strategy=strategy, epochs=1)
    assert r.metrics["run"]["head_init"] == "random"
    assert r.metrics["run"]["cached_features"] is False


def test_a_joining_stage_is_rewarmed_over_its_warmup_steps() -> None:
    base = CosineWithWarmup(0, 100)
    fn = rewarmed(base, start=40, warmup=10)
    assert fn(40) == pytest.approx(base(40) / 10)
    assert fn(44) == pytest.approx(base(44) * 5 / 10)
    for step in (49, 50, 75, 99):
        assert fn(step) == pytest.approx(base(step))
    assert rewarmed(base, 40, 0) is base

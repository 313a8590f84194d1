"""Gradual unfreezing under Lightning DDP (2 CPU processes, gloo): ranks stay identical,
through an unfreezing step on stored activations and the move to images (issue 17).

Lightning #20340: a stage frozen when DDP's reducer was built is never all-reduced after it is
unfrozen, so ranks drift apart. headstart builds the wrapper with every parameter requiring grad
and freezes afterwards (see HeadstartModule).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import headstart
from tests.conftest import write_class_folders


@pytest.mark.slow  # two processes, ~25 s: the default suite keeps under 10 minutes on 2 cores
def test_ranks_identical_after_unfreeze_steps(tmp_path: Path) -> None:
    data = write_class_folders(tmp_path / "data", 16)
    dumps = tmp_path / "dumps"
    script = Path(__file__).with_name("ddp_script.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    r = subprocess.run(
        [sys.executable, str(script), str(data), str(tmp_path / "run"), str(dumps)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # epochs 0-1 train on stored activations (layer4 joins at epoch 1), epoch 2 on images
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["run"]["cached_activations"]["until_epoch"] == 2
    # the run reports once, not once per process; no Lightning advice about sync_dist
    out = r.stdout + r.stderr
    assert out.count("trainable parameters") == 1 and out.count("unfreezing layer4") == 1, out
    assert "sync_dist" not in out
    for epoch in range(3):
        a = torch.load(dumps / f"rank0-epoch{epoch}.pt", weights_only=True)
        b = torch.load(dumps / f"rank1-epoch{epoch}.pt", weights_only=True)
        assert a["frozen"] == b["frozen"]
        for k, v in a["state"].items():
            assert torch.equal(v, b["state"][k]), f"epoch {epoch}: {k} differs across ranks"
    # the schedule really unfroze stages during the run, and they really trained
    first = torch.load(dumps / "rank0-epoch0.pt", weights_only=True)
    last = torch.load(dumps / "rank0-epoch2.pt", weights_only=True)
    assert first["frozen"][-1] and not last["frozen"][-1] and not last["frozen"][0]
    key = "backbone.body.layer4.1.conv2.weight"
    assert not torch.equal(first["state"][key], last["state"][key])


def _keys(block: object) -> object:
    """The nested key structure of a metrics block (values left out)."""
    if isinstance(block, dict):
        return {k: _keys(v) for k, v in block.items()}
    return None


@pytest.mark.slow  # two 2-process runs and two single-process runs (~2 min on 2 loaded cores)
@pytest.mark.parametrize("task", ["multi-label", "multi-task"])
def test_multilabel_and_multitask_train_under_ddp(task: str, tmp_path: Path) -> None:
    """Multi-label and multi-task runs under 2-process DDP: the ranks' weights stay identical
    after every epoch (stored activations, an unfreezing step, then images), validation covers
    every image once, and metrics.json has the same keys, nested, as a single-process run."""
    from tests.ddp_tasks_script import SETTINGS
    from tests.test_multilabel import colour_blobs
    from tests.test_multitask import squares

    if task == "multi-label":
        data, extra = colour_blobs(tmp_path / "data", 24), {"class_weights": "auto"}
    else:
        data, extra = squares(tmp_path / "data", 24), {"label_columns": "colour,size"}
    dumps = tmp_path / "dumps"
    script = Path(__file__).with_name("ddp_tasks_script.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    r = subprocess.run(
        [sys.executable, str(script), str(data), str(tmp_path / "ddp"), str(dumps),
         json.dumps(extra)],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for epoch in range(3):
        a = torch.load(dumps / f"rank0-epoch{epoch}.pt", weights_only=True)
        b = torch.load(dumps / f"rank1-epoch{epoch}.pt", weights_only=True)
        assert a["frozen"] == b["frozen"]
        for k, v in a["state"].items():
            assert torch.equal(v, b["state"][k]), f"epoch {epoch}: {k} differs across ranks"
    first = torch.load(dumps / "rank0-epoch0.pt", weights_only=True)
    last = torch.load(dumps / "rank0-epoch2.pt", weights_only=True)
    assert first["frozen"][-1] and not last["frozen"][-1]  # an unfreezing step happened
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["run"]["cached_activations"]["until_epoch"] == 2
    one = headstart.train(data=str(data), out=str(tmp_path / "one"), devices=1,
                          **{**SETTINGS, **extra}).metrics  # fmt: skip
    assert _keys(ddp["val"]) == _keys(one["val"])
    assert ddp["val"]["samples"] == one["val"]["samples"] == ddp["run"]["val_images"]
    if task == "multi-label":
        assert 0.0 <= ddp["val"]["macro_ap"] <= 1.0 and set(ddp["val"]["per_label"]) == {
            "blue", "green", "red", "yellow"}  # fmt: skip
    else:
        assert ddp["val"]["tasks"] == ["colour", "size"]
        for t in ("colour", "size"):
            assert sum(map(sum, ddp["val"][t]["confusion_matrix"])) == ddp["val"]["samples"]

"""Run by tests/test_ddp.py: a multi-label or multi-task run under Lightning DDP (2 CPU
processes, gloo), gradual unfreezing from stored activations to images; each rank's weights
are saved after every epoch (see :class:`tests.ddp_script.SaveRankWeights`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import headstart
from tests.ddp_script import SaveRankWeights

#: the settings both the DDP run and the single-process run of tests/test_ddp.py use
SETTINGS = {
    "model": "torchvision:resnet18", "weights": "none", "image_size": 32, "batch_size": 4,
    "num_workers": 0, "epochs": 3, "strategy": "gradual", "unfreeze_every": 1,
    "gradual_steps": 2, "early_stopping_patience": None, "augment": "none",
    "accelerator": "cpu",
}  # fmt: skip


def run_and_check(data: Path, tmp_path: Path) -> dict[str, object]:
    """Run this script on ``data`` (64 px) in a subprocess; check that both ranks' weights and
    frozen flags are equal after every epoch and that gradual unfroze the last stage; return
    the run's val metrics (detection and segmentation DDP tests)."""
    import os
    import subprocess

    import torch

    dumps = tmp_path / "dumps"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    r = subprocess.run(
        [sys.executable, __file__, str(data), str(tmp_path / "ddp"), str(dumps),
         json.dumps({"image_size": 64})],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for epoch in range(SETTINGS["epochs"]):  # type: ignore[call-overload]
        a = torch.load(dumps / f"rank0-epoch{epoch}.pt", weights_only=True)
        b = torch.load(dumps / f"rank1-epoch{epoch}.pt", weights_only=True)
        assert a["frozen"] == b["frozen"]
        for k, v in a["state"].items():
            assert torch.equal(v, b["state"][k]), f"epoch {epoch}: {k} differs across ranks"
    assert not b["frozen"][-1]  # gradual unfroze the last stage
    val: dict[str, object] = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["val"]
    return val


if __name__ == "__main__":
    data, out, dumps, extra = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    dumps.mkdir(parents=True, exist_ok=True)
    headstart.train(
        data=str(data), out=out, devices=2, extra_callbacks=[SaveRankWeights(dumps)],
        **{**SETTINGS, **json.loads(extra)},
    )  # fmt: skip

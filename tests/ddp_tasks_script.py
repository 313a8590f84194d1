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

if __name__ == "__main__":
    data, out, dumps, extra = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    dumps.mkdir(parents=True, exist_ok=True)
    headstart.train(
        data=str(data), out=out, devices=2, extra_callbacks=[SaveRankWeights(dumps)],
        **{**SETTINGS, **json.loads(extra)},
    )  # fmt: skip

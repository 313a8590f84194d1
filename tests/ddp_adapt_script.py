"""Run by tests/test_adapt_domain.py: a DANN-adapted run under Lightning DDP (2 CPU processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import headstart
from tests.ddp_script import SaveRankWeights

if __name__ == "__main__":
    data, target, out, dumps = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
    dumps.mkdir(parents=True, exist_ok=True)
    headstart.train(
        data=str(data), out=out, model="torchvision:resnet18", weights="none", image_size=32,
        batch_size=4, num_workers=0, epochs=2, strategy="partial", unfreeze_last=1,
        adapt="dann", target_unlabeled=target, early_stopping_patience=None,
        accelerator="cpu", devices=2, extra_callbacks=[SaveRankWeights(dumps)],
    )  # fmt: skip

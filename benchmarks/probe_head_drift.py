"""What moves a probe-started head away from the probe in its first epoch (issue 16)?

    .venv/bin/python benchmarks/probe_head_drift.py [--per-class 50 --val-per-class 30]

Animal-MNIST, MobileNetV2 ImageNet weights at 224 px, backbone frozen. The head starts from the
logistic-regression probe (l2 1e-3, as ``--head-init probe``) fitted on un-augmented train
features and trains one epoch (batch 32, AdamW, cosine over 4 epochs, as ``headstart train``)
on features of the training images, one variable changed at a time: the LR, weight decay,
label smoothing, augmented vs un-augmented inputs, and BatchNorm in train mode (batch
statistics, what a trainable stage's BN computes with ``--bn train``) vs eval mode. Reports
val accuracy / loss after that epoch next to the probe's. Writes
benchmarks/results/probe_head_drift.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from headstart.config import TrainConfig
from headstart.data import load_splits
from headstart.data.catalog import materialise_animal_mnist
from headstart.evaluation.probe import fit_logistic
from headstart.modalities import modality_for


def features(backbone: Any, ds: Any, bn_train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Body outputs for ``ds`` items keyed (i, epoch 0); BN in train mode when ``bn_train``
    (batch statistics of batches of 32; running statistics left untouched)."""
    body = backbone.body.eval()
    if bn_train:
        for m in body.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()
                m.momentum = 0.0  # use batch statistics, leave the running ones alone
    xs, ys = [], []
    with torch.inference_mode():
        for start in range(0, len(ds), 32):
            items = [ds[(i, 0)] for i in range(start, min(len(ds), start + 32))]
            x = torch.stack([it[0] for it in items]).contiguous(memory_format=torch.channels_last)
            xs.append(body(x).flatten(1).float())
            ys.append(torch.tensor([it[1] for it in items]))
    body.eval()
    return torch.cat(xs), torch.cat(ys)


def one_epoch(
    w0: torch.Tensor, b0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, lr: float,
    wd: float, smoothing: float, epochs: int = 4, seed: int = 42,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    head = torch.nn.Linear(w0.shape[1], w0.shape[0])
    with torch.no_grad():
        head.weight.copy_(w0)
        head.bias.copy_(b0)
    opt = torch.optim.AdamW(
        [{"params": [head.weight], "weight_decay": wd}, {"params": [head.bias], "weight_decay": 0}],
        lr=lr,
    )
    steps = math.ceil(len(x) / 32)
    total = steps * epochs
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * s / total))
        idx = order[s * 32 : (s + 1) * 32]
        loss = F.cross_entropy(head(x[idx]), y[idx], label_smoothing=smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.weight.detach(), head.bias.detach()


def score(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    logits = x @ w.T + b
    return {
        "acc": round(float((logits.argmax(1) == y).float().mean()), 4),
        "loss": round(float(F.cross_entropy(logits, y)), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--val-per-class", type=int, default=30)
    ap.add_argument("--work", default="/tmp/headstart-short-budget")
    ap.add_argument("--out", default="benchmarks/results/probe_head_drift")
    args = ap.parse_args()
    data = materialise_animal_mnist(
        Path(args.work) / f"animal-{args.per_class}-{args.val_per_class}-100",
        args.per_class, args.val_per_class, 100,
    )  # fmt: skip
    torch.manual_seed(0)
    config = TrainConfig.create(data=str(data))
    modality = modality_for(config)
    splits = load_splits(str(data), None, None, seed=42, reader=modality.reader(config))
    backbone = modality.build_backbone(config, len(splits.classes), train=splits.train)
    backbone.body.to(memory_format=torch.channels_last)
    idx = splits.class_to_idx

    def ds(samples: Any, augment: str = "none", flip: bool = True) -> Any:
        return modality.dataset(backbone, samples, idx, augment=augment, seed=42, flip=flip)

    clean = features(backbone, ds(splits.train))
    aug = features(backbone, ds(splits.train, "light"))
    aug_noflip = features(backbone, ds(splits.train, "light", flip=False))
    aug_bn = features(backbone, ds(splits.train, "light"), bn_train=True)
    val = features(backbone, ds(splits.val))
    n = len(splits.classes)
    probe = fit_logistic(clean[0], clean[1], n, 1e-3)
    w0, b0 = probe.weight, probe.bias
    rows: list[dict[str, Any]] = [{"variant": "probe (start)", **score(w0, b0, *val)}]
    rows.append({"variant": "probe on augmented train features", **score(w0, b0, *aug)})
    rows.append({"variant": "probe on un-augmented train features", **score(w0, b0, *clean)})
    rows.append({"variant": "probe on augmented, BN train-mode features", **score(w0, b0, *aug_bn)})
    base = {"lr": 3e-3, "wd": 1e-4, "smoothing": 0.0}
    variants: list[tuple[str, tuple[torch.Tensor, torch.Tensor], dict[str, float]]] = [
        ("1 epoch, defaults (lr 3e-3, wd 1e-4, light augmentation)", aug, {}),
        ("  un-augmented inputs", clean, {}),
        ("  light augmentation without flips", aug_noflip, {}),
        ("  BN in train mode (batch statistics)", aug_bn, {}),
        ("  weight decay 0", aug, {"wd": 0.0}),
        ("  label smoothing 0.1", aug, {"smoothing": 0.1}),
        ("  lr 1e-3", aug, {"lr": 1e-3}),
        ("  lr 3e-4", aug, {"lr": 3e-4}),
        ("  lr 1e-4", aug, {"lr": 1e-4}),
        ("  lr 3e-4, un-augmented", clean, {"lr": 3e-4}),
    ]
    for label, (x, y), change in variants:
        w, b = one_epoch(w0, b0, x, y, **{**base, **change})
        drift = float((w - w0).norm() / w0.norm())
        rows.append({"variant": label, **score(w, b, *val), "weight_drift": round(drift, 3)})
        print(rows[-1])
    meta = {
        "data": f"Animal-MNIST {args.per_class} train / {args.val_per_class} val per class",
        "model": "torchvision:mobilenet_v2 IMAGENET1K_V1, 224 px, frozen",
        "probe_weight_norm": round(float(w0.norm()), 3),
        "command": "python " + " ".join(sys.argv),
    }
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = [f"{meta['data']}, {meta['model']}; val accuracy / loss", ""]
    md += ["| head | val acc | val loss | ‖ΔW‖/‖W₀‖ |", "|---|---|---|---|"]
    md += [
        f"| {r['variant']} | {100 * r['acc']:.1f} % | {r['loss']:.3f} | {r.get('weight_drift', '')} |"
        for r in rows
    ]
    md += [
        "",
        "(rows 2-4: the probe scored on train features of that kind)",
        "",
        f"`{meta['command']}`",
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()

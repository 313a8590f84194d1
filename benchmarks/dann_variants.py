"""DANN variants from the literature on the domain-partial setup of ``benchmarks/adapt.py``
(issue 19): the same data (``runs/adapt-bench/data``, written by ``benchmarks/adapt.py``) and
settings (MobileNetV2 64 px, ``--strategy partial --unfreeze-last 3`` on cached activations,
mlp head 256, 6 epochs, batch 64 + 64, lr 1e-3, backbone x0.1, ``--bn train``,
``--adapt-weight 1``, the GRL coefficient 2/(1+exp(-10p))-1), one adaptation loss swapped in:

* ``dann-bn``: the Transfer-Learning-Library's domain discriminator (Linear-BN-ReLU twice, 1024
  hidden) on the bottleneck (the mlp head's hidden layer);
* ``cdan-e``: CDAN+E (Long et al., NeurIPS 2018): the same discriminator on the outer product of
  the bottleneck features and the detached softmax, samples weighted by 1 + exp(-entropy)
  (normalised per domain).

The variants are patched into :mod:`headstart.adapt.domain` for this script only (they are not
library options). Usage::

    .venv/bin/python benchmarks/dann_variants.py dann-bn 42 43 44 --out /tmp/dann

Prints one JSON row per seed (target-eval and source-val accuracy); compare with the
source-only rows of ``benchmarks/results/adapt.json`` (``domain_partial3``), same seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import headstart
import headstart.adapt.domain as domain
from headstart.models.heads import classifier_layer

DATA = Path(__file__).resolve().parents[1] / "runs" / "adapt-bench" / "data"


def discriminator(d: int, hidden: int = 1024) -> nn.Sequential:
    """tllib's ``DomainDiscriminator`` (logits out)."""
    return nn.Sequential(
        nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 1),
    )  # fmt: skip


class AdversarialLoss(nn.Module):
    """DANN (``conditional`` False) or CDAN+E (True) with the reversal layer and schedule of
    :class:`headstart.adapt.domain.DomainAdversarialLoss`."""

    def __init__(self, d: int, conditional: bool, classes: int = 10) -> None:
        super().__init__()
        self.conditional = conditional
        self.discriminator = discriminator(d * classes if conditional else d)
        self.last_domain_accuracy = float("nan")

    def forward(
        self, s: torch.Tensor, t: torch.Tensor, progress: float, logits: torch.Tensor
    ) -> torch.Tensor:
        f = torch.cat([s, t]).float()
        weight = None
        if self.conditional:
            g = F.softmax(logits.float(), 1).detach()
            f = torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)
            w = 1.0 + torch.exp((g * torch.log(g + 1e-5)).sum(1))  # 1 + exp(-entropy)
            n = len(s)
            weight = torch.cat([w[:n] / w[:n].sum(), w[n:] / w[n:].sum()]) * len(w) / 2
        out = self.discriminator(domain.grad_reverse(f, domain.dann_lambda(progress))).squeeze(1)
        y = torch.cat([out.new_ones(len(s)), out.new_zeros(len(t))])
        with torch.no_grad():
            self.last_domain_accuracy = float(((out > 0).float() == y).float().mean())
        return F.binary_cross_entropy_with_logits(out, y, weight=weight)


def step_forward(self: Any, module: Any, batch: dict[str, Any]) -> tuple[Any, ...]:
    """:meth:`DomainAdaptationStep.forward` passing the logits to the loss."""
    xs, ys = batch["source"]
    xt = batch["target"][0]
    n = xs.shape[0]
    captured: list[torch.Tensor] = []
    hook = classifier_layer(module.backbone.head).register_forward_pre_hook(
        lambda _m, inp: captured.append(inp[0])
    )
    try:
        logits = module(torch.cat([xs, xt]))
    finally:
        hook.remove()
    z = captured[-1].flatten(1)
    progress = min(1.0, module.global_step / max(1, int(module.trainer.estimated_stepping_batches)))
    adapt = self.loss(z[:n], z[n:], progress, logits)
    extra = {"adapt_loss": adapt.detach(), "domain_acc": self.loss.last_domain_accuracy}
    return F.cross_entropy(logits[:n], ys) + self.weight * adapt, logits[:n], ys, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", choices=["dann-bn", "cdan-e"])
    ap.add_argument("seeds", type=int, nargs="*", default=[42, 43, 44])
    ap.add_argument("--out", type=Path, default=Path("runs/dann-variants"))
    args = ap.parse_args()
    conditional = args.variant == "cdan-e"
    domain.make_adaptation_loss = lambda _method, d: AdversarialLoss(d, conditional)  # type: ignore[assignment]
    domain.DomainAdaptationStep.forward = step_forward  # type: ignore[method-assign]
    common: dict[str, Any] = {
        "data": str(DATA / "source"), "model": "torchvision:mobilenet_v2", "image_size": 64,
        "strategy": "partial", "unfreeze_last": 3, "head": "mlp", "head_hidden": 256,
        "epochs": 6, "batch_size": 64, "lr": 1e-3, "backbone_lr_mult": 0.1, "bn": "train",
        "augment": "none", "early_stopping_patience": None, "adapt_baseline": False,
        "num_workers": 0, "target_eval": str(DATA / "target-eval"), "adapt": "dann",
        "adapt_weight": 1.0, "target_unlabeled": str(DATA / "target-unlabeled"),
    }  # fmt: skip
    for seed in args.seeds:
        out = args.out / f"{args.variant}-seed{seed}"
        shutil.rmtree(out, ignore_errors=True)
        r = headstart.train(out=str(out), seed=seed, **common)
        row = {"variant": args.variant, "seed": seed,
               "target_eval_accuracy": r.metrics["target_eval"]["accuracy"],
               "source_val_accuracy": r.metrics["val"]["accuracy"]}  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

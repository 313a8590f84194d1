"""Optimizer parameter groups from a backbone's stages: only trainable parameters, per-stage
learning rates, and no weight decay on norms and biases."""

from __future__ import annotations

from typing import Any

from torch import nn

from headstart.models.backbone import Backbone


def _no_decay_names(module: nn.Module) -> set[str]:
    """Biases and every parameter of normalisation layers (and 1-d tensors such as tokens)."""
    out: set[str] = set()
    for mname, m in module.named_modules():
        is_norm = isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm))
        for pname, p in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if is_norm or pname == "bias" or p.ndim <= 1:
                out.add(full)
    return out


def stage_lr(
    backbone: Backbone, index: int, lr: float, backbone_lr_mult: float, layer_decay: float | None
) -> float:
    """LR of stage ``index``: ``lr * backbone_lr_mult * layer_decay ** (n - 1 - index)``
    (geometric decay towards the input, as timm/BEiT layer decay; no decay when None)."""
    n = len(backbone.stages)
    return lr * backbone_lr_mult * (layer_decay ** (n - 1 - index) if layer_decay else 1.0)


def build_param_groups(
    backbone: Backbone,
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float,
    layer_decay: float | None = None,
    stages: list[int] | None = None,
    include_head: bool = True,
) -> list[dict[str, Any]]:
    """Groups named ``head``, ``head/no_decay``, ``<stage>``, ``<stage>/no_decay``.

    The head trains at ``lr``; trainable stages at :func:`stage_lr`. ``stages`` gives the
    stages and their order (default: every trainable stage, input side first). Frozen stages
    are left out entirely, so the optimizer holds only what trains.
    """
    groups: list[dict[str, Any]] = []

    def add(
        name: str, named: list[tuple[str, nn.Parameter]], group_lr: float, nd: set[str]
    ) -> None:
        decay = [p for n, p in named if n not in nd and p.requires_grad]
        no_decay = [p for n, p in named if n in nd and p.requires_grad]
        if decay:
            groups.append(
                {"name": name, "params": decay, "lr": group_lr, "weight_decay": weight_decay}
            )
        if no_decay:
            groups.append(
                {
                    "name": f"{name}/no_decay",
                    "params": no_decay,
                    "lr": group_lr,
                    "weight_decay": 0.0,
                }
            )

    if include_head:
        add("head", list(backbone.head.named_parameters()), lr, _no_decay_names(backbone.head))
    body_params = dict(backbone.body.named_parameters())
    body_nd = _no_decay_names(backbone.body)
    order = (
        stages if stages is not None else [i for i, f in enumerate(backbone.frozen_stages) if not f]
    )
    for i in order:
        stage = backbone.stages[i]
        named = [(n, body_params[n]) for n in stage.param_names]
        add(stage.name, named, stage_lr(backbone, i, lr, backbone_lr_mult, layer_decay), body_nd)
    return groups

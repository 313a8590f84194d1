"""Find an ordered list of stages in any ``nn.Module`` body (used for torchvision models).

The algorithm, written once for every architecture:

1. Start from the body's top-level children that hold parameters.
2. While there are fewer than ``min_units`` units, or one unit holds most of the parameters,
   expand the largest container into its children (MobileNet's single ``features`` Sequential
   becomes its 19 blocks; ViT's encoder becomes its 12 layers; EfficientNet-Lite's ``_blocks``
   its 16 blocks).
3. Run one forward pass on a blank image and merge consecutive units whose outputs have the same
   image shape (C, H, W) or the same vector shape: MobileNetV2's blocks group into the paper's
   resolution/width stages, ResNet's ``conv1 + bn1`` becomes a stem, VGG's convolutions group by
   resolution. Token outputs (transformer layers) are never merged: each layer is a stage.
4. Fold units holding < 0.5 % of the parameters into their predecessor (a final LayerNorm).
5. Parameters owned directly by a container (ViT's class token and position embedding) join
   the first stage, next to the patch embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from headstart.models.backbone import Stage

log = logging.getLogger(__name__)


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _param_children(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, c) for n, c in m.named_children() if _nparams(c) > 0]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _descend(name: str, m: nn.Module) -> tuple[str, nn.Module]:
    """Through containers with a single parameter-holding child and no parameters of their own
    (an HF encoder's ``layers`` ModuleList) down to the first that branches."""
    while len(kids := _param_children(m)) == 1 and not any(True for _ in m.parameters(False)):
        child_name, m = kids[0]
        name = _join(name, child_name)
    return name, m


def discover_stages(
    body: nn.Module, example: torch.Tensor | None = None, min_units: int = 4
) -> list[Stage]:
    """Ordered stages covering every parameter of ``body`` exactly once."""
    units: list[tuple[str, nn.Module]] = _param_children(body)
    total_params = max(1, _nparams(body))
    while True:
        expandable = [i for i, u in enumerate(units) if len(_param_children(_descend(*u)[1])) > 1]
        if not expandable:
            break
        i = max(expandable, key=lambda k: _nparams(units[k][1]))
        dominant = _nparams(units[i][1]) > 0.5 * total_params
        if len(units) >= min_units and not dominant:
            break
        name, module = _descend(*units[i])
        units[i : i + 1] = [(_join(name, n), c) for n, c in _param_children(module)]

    groups: list[list[tuple[str, nn.Module]]] = [[u] for u in units]
    prev_shape: tuple[int, ...] | None = None
    if example is not None and len(units) > 1:
        shapes = _output_shapes(body, [m for _, m in units], example)
        if shapes is not None:
            groups = []
            for u, shape in zip(units, shapes, strict=True):
                mergeable = shape is not None
                if groups and mergeable and shape == prev_shape:
                    groups[-1].append(u)
                else:
                    groups.append([u])
                prev_shape = shape

    total = max(1, _nparams(body))
    merged: list[list[tuple[str, nn.Module]]] = []
    for g in groups:
        size = sum(_nparams(m) for _, m in g)
        if merged and size / total < 0.005:
            merged[-1].extend(g)
        else:
            merged.append(g)

    stages: list[Stage] = []
    covered: set[str] = set()
    for g in merged:
        names: list[str] = []
        for prefix, m in g:
            names.extend(_join(prefix, n) for n, _ in m.named_parameters())
        covered.update(names)
        stages.append(Stage(_stage_name(g, body), tuple(names)))
    loose = [n for n, _ in body.named_parameters() if n not in covered]
    if loose:
        if not stages:
            return [Stage("body", tuple(loose))]
        first = stages[0]
        stages[0] = Stage(first.name, tuple(loose) + first.param_names)
    return stages


def _stage_name(group: Sequence[tuple[str, nn.Module]], body: nn.Module) -> str:
    first, last = group[0][0], group[-1][0]
    if len(group) == 1:
        return first
    parent = first.rpartition(".")[0]
    if parent and all(n.rpartition(".")[0] == parent for n, _ in group):
        siblings = _param_children(body.get_submodule(parent))
        if len(siblings) == len(group):  # the whole container (e.g. ResNet's layer4)
            return parent
    head_a, _, tail_a = first.rpartition(".")
    head_b, _, tail_b = last.rpartition(".")
    if head_a == head_b and head_a:
        return f"{head_a}.{tail_a}-{tail_b}"
    return f"{first}..{last}"


def _output_shapes(
    body: nn.Module, modules: Sequence[nn.Module], example: torch.Tensor
) -> list[tuple[int, ...] | None] | None:
    """Per-sample output shape of each module in one forward pass (None if the pass fails)."""
    shapes: list[tuple[int, ...] | None] = [None] * len(modules)
    hooks = []
    for i, m in enumerate(modules):

        def hook(_m: nn.Module, _inp: object, out: object, i: int = i) -> None:
            if isinstance(out, torch.Tensor):
                # token outputs (N, L, D) stay None: transformer layers are never merged
                shapes[i] = tuple(out.shape[1:]) if out.dim() in (2, 4) else None

        hooks.append(m.register_forward_hook(hook))
    was_training = body.training
    body.eval()
    try:
        with torch.no_grad():
            body(example)
    except Exception as err:  # an exotic model: fall back to unmerged units
        log.debug("shape probe failed (%s); stages are not merged by shape", err)
        return None
    finally:
        for h in hooks:
            h.remove()
        body.train(was_training)
    return shapes

"""``--strategy lora``: low-rank adapters (Hu et al., 2021) via peft; the pretrained weights stay
frozen and only the adapters and the head learn.

On the stage surface the adapters are one more stage, ``lora``, placed last (output side), so
the rest of headstart needs nothing new: the strategy makes exactly that stage trainable, the
optimizer takes it as a parameter group (LR ``lr x backbone_lr_mult``), the frozen stages stay in
eval mode, and checkpoints hold the adapter weights. The adapters are added by
:func:`add_lora` when the strategy is first applied (before the optimizer is built or a
checkpoint is loaded). For inference (:func:`headstart.load_run`, export, serve) they are merged
into the weights they adapt (:func:`merge_lora`), giving back the plain model at its original
speed.

Targets: the attention query and value projections (``query``/``value`` in BERT-style encoders
and HF ViT, ``q_proj``/``v_proj``, ``q_lin``/``v_lin`` in DistilBERT, fused ``qkv`` in timm ViTs).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from headstart.errors import ModelError
from headstart.models.backbone import Backbone, Stage
from headstart.strategies.base import Strategy

TARGET_NAMES = ("query", "value", "q_proj", "v_proj", "q_lin", "v_lin", "qkv")
STAGE = "lora"


def lora_targets(body: nn.Module) -> list[str]:
    """The module-name suffixes of the attention projections that get adapters."""
    found = {
        name.rpartition(".")[2]
        for name, m in body.named_modules()
        if isinstance(m, nn.Linear) and name.rpartition(".")[2] in TARGET_NAMES
    }
    return sorted(found)


def has_lora(backbone: Backbone) -> bool:
    return bool(backbone.stages) and backbone.stages[-1].name == STAGE


def _restage(backbone: Backbone, with_lora: bool) -> None:
    """Stages again after the body's parameter names changed: each base weight stays in its
    stage (``.base_layer`` ignored), adapter weights form the last stage when ``with_lora``."""
    owner = {
        n.replace(".base_layer", ""): i
        for i, s in enumerate(backbone.stages)
        if s.name != STAGE
        for n in s.param_names
    }
    buckets: list[list[str]] = [[] for _ in backbone.stages]
    adapters: list[str] = []
    for n, _ in backbone.body.named_parameters():
        if ".lora_" in n:
            adapters.append(n)
        else:
            buckets[owner[n.replace(".base_layer", "")]].append(n)
    stages = [Stage(s.name, tuple(b)) for s, b in zip(backbone.stages, buckets, strict=True) if b]
    if with_lora:
        stages.append(Stage(STAGE, tuple(adapters)))
    backbone.set_stages(stages)


def add_lora(backbone: Backbone, r: int = 8, alpha: int = 16, dropout: float = 0.1) -> int:
    """Inject rank-``r`` adapters into the body's attention projections (in place); returns
    the number of adapter parameters. The adapters form the last stage, ``lora``."""
    # without peft: ModuleNotFoundError, which the CLI turns into "needs the ... extra:
    # pip install 'headstart[text]'" (exit 2)
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(backbone):
        raise ValueError("the backbone already has LoRA adapters")
    targets = lora_targets(backbone.body)
    if not targets:
        raise ModelError(
            f"--strategy lora: {backbone.spec} has no attention projections named "
            f"{', '.join(TARGET_NAMES)} to adapt; use a transformer model or another strategy"
        )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    inject_adapter_in_model(config, backbone.body)
    _restage(backbone, with_lora=True)
    return sum(p.numel() for n, p in backbone.body.named_parameters() if ".lora_" in n)


def merge_lora(backbone: Backbone) -> None:
    """Fold the adapters into the weights they adapt (W + B A x alpha / r) and remove them:
    the body is the plain architecture again (same outputs, original speed, exportable)."""
    from peft.tuners.lora import LoraLayer

    if not has_lora(backbone):
        return
    for name, module in list(backbone.body.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = backbone.body.get_submodule(parent_name) if parent_name else backbone.body
            setattr(parent, child, module.get_base_layer())
    _restage(backbone, with_lora=False)


class LoRA(Strategy):
    """Adapters + head train; every pretrained stage stays frozen (see module doc)."""

    name = "lora"

    def __init__(self, r: int = 8, alpha: int = 16, dropout: float = 0.1) -> None:
        if r < 1:
            raise ValueError("lora rank r must be >= 1")
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.targets: list[str] = []

    def trainable_stages(self, epoch: int, num_stages: int) -> set[int]:
        return {num_stages - 1}  # the adapters (added as the last stage by apply)

    def apply(self, backbone: Backbone, epoch: int) -> list[int]:
        if not has_lora(backbone):
            self.targets = lora_targets(backbone.body)
            add_lora(backbone, self.r, self.alpha, self.dropout)
        return super().apply(backbone, epoch)

    def describe(self, backbone: Backbone) -> str:
        if not has_lora(backbone):
            return f"{self.name}: rank {self.r} adapters + head; pretrained weights frozen"
        n = sum(p.numel() for p in backbone.stage_parameters(len(backbone.stages) - 1))
        targets = ", ".join(self.targets) or "attention projections"
        return (
            f"{self.name}: head + rank-{self.r} adapters on {targets} ({n:,} parameters, "
            f"alpha {self.alpha:g}); pretrained weights frozen"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "r": self.r, "alpha": self.alpha, "dropout": self.dropout}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.r, self.alpha, self.dropout = (
            int(state["r"]),
            int(state["alpha"]),
            float(state["dropout"]),
        )

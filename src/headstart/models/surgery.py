"""Model surgery shared by the adapters that take a classification model apart: find its
ImageNet classifier layer and replace a submodule by dotted name."""

from __future__ import annotations

from torch import nn

from headstart.errors import ModelError


def find_classifier(model: nn.Module) -> tuple[str, nn.Module]:
    """The last Linear (or 1x1 Conv2d, SqueezeNet) of the model: its ImageNet classifier."""
    last: tuple[str, nn.Module] | None = None
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and list(m.parameters(recurse=False)):
            last = (name, m)
    if last is None or not last[0]:
        raise ModelError(f"cannot find a classifier layer in {type(model).__name__}")
    return last


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` (``classifier.1``) of ``root`` by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)

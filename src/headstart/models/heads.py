"""Classifier heads placed on top of a backbone's pooled features."""

from __future__ import annotations

from torch import nn


def make_head(
    kind: str, in_features: int, num_classes: int, hidden: int = 512, dropout: float | None = None
) -> nn.Module:
    """``linear``: [Dropout]-Linear; ``mlp``: Dropout-Linear-ReLU-Dropout-Linear.

    ``dropout`` defaults to 0 for the linear head and 0.2 for the mlp head.
    """
    if kind == "linear":
        p = 0.0 if dropout is None else dropout
        linear = nn.Linear(in_features, num_classes)
        return nn.Sequential(nn.Dropout(p), linear) if p > 0 else nn.Sequential(linear)
    if kind == "mlp":
        p = 0.2 if dropout is None else dropout
        return nn.Sequential(
            nn.Dropout(p),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p),
            nn.Linear(hidden, num_classes),
        )
    raise ValueError(f"unknown head kind {kind!r} (linear or mlp)")


def classifier_layer(head: nn.Module) -> nn.Linear:
    """The head's output layer (its last Linear): ``out_features`` is the class count."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the head has no Linear layer")
    return linears[-1]

"""Strategies: which stages train when, and the optimizer groups (with LRs) that follow."""

from headstart.strategies.base import (
    FeatureExtract,
    FewShot,
    FineTune,
    Gradual,
    Partial,
    Strategy,
)
from headstart.strategies.param_groups import build_param_groups
from headstart.strategies.registry import STRATEGIES, make_strategy

__all__ = [
    "STRATEGIES",
    "FeatureExtract",
    "FewShot",
    "FineTune",
    "Gradual",
    "Partial",
    "Strategy",
    "build_param_groups",
    "make_strategy",
]

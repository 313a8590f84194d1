"""Strategies: which stages train when, and the optimizer groups (with LRs) that follow."""

from headstart.strategies.base import (
    FeatureExtract,
    FewShot,
    FineTune,
    Gradual,
    Partial,
    Strategy,
    make_strategy,
)
from headstart.strategies.param_groups import build_param_groups

__all__ = [
    "FeatureExtract",
    "FewShot",
    "FineTune",
    "Gradual",
    "Partial",
    "Strategy",
    "build_param_groups",
    "make_strategy",
]

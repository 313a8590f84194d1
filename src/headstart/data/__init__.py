"""Data: scan folders/CSVs into validated splits with a stable class map, datasets, transforms."""

from headstart.data.folders import DataSplits, Sample, load_splits
from headstart.data.transforms import build_eval_transform, build_train_transform

__all__ = ["DataSplits", "Sample", "build_eval_transform", "build_train_transform", "load_splits"]

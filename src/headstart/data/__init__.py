"""Data: labelled files to validated splits with a stable class map, and the datasets,
samplers and transforms training reads them through.

* :mod:`~headstart.data.scan` — :class:`Sample` and the folder walk/skip rules shared by
  :mod:`~headstart.data.folders` (image folders/CSVs -> :func:`load_splits`) and
  :mod:`~headstart.data.text` (text CSVs/.txt folders, tokenised datasets);
* :mod:`~headstart.data.datasets`, :mod:`~headstart.data.samplers`,
  :mod:`~headstart.data.transforms`, :mod:`~headstart.data.image_size`,
  :mod:`~headstart.data.splits` (the stratified split), :mod:`~headstart.data.catalog`
  (bundled demo datasets).

Exported here: :class:`Sample`, :class:`DataSplits`, :func:`load_splits` and the two transform
builders.
"""

from headstart.data.folders import DataSplits, load_splits
from headstart.data.scan import Sample
from headstart.data.transforms import build_eval_transform, build_train_transform

__all__ = ["DataSplits", "Sample", "build_eval_transform", "build_train_transform", "load_splits"]

"""Map-style datasets: images over :class:`~headstart.data.scan.Sample` lists, augmented views,
and tensors indexed by the ``(index, epoch)`` keys of the epoch samplers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from headstart.data.samplers import item_seed
from headstart.data.scan import MultiLabelSample, MultiTaskSample, Sample
from headstart.files import open_rgb, reading_image

load_rgb = open_rgb  # the one decoder, shared with the torch-free export predictor


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread for one image's transform, as in a DataLoader worker.

    Its tensors are small (3 x 224 x 224). With 2+ threads, each elementwise op (ToDtype,
    Normalize) waits for the other threads, and on a busy machine for threads that are not
    scheduled: measured on 2 cores under load, 47 ms an image with 2 threads, 1.5 ms with one.
    Workers (``--num-workers`` > 0) already run one thread each; this makes loading in the main
    process (the default on small machines) the same."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def target_of(sample: Sample, class_to_idx: dict[str, int]) -> int | torch.Tensor:
    """A sample's training target: its class index, (multi-label) a float multi-hot row, or
    (multi-task) a long row of class indices, one per task."""
    if isinstance(sample, MultiTaskSample):
        return torch.tensor([class_to_idx[label] for label in sample.labels])
    if not isinstance(sample, MultiLabelSample):
        return class_to_idx[sample.label]
    row = torch.zeros(len(class_to_idx))
    row[[class_to_idx[label] for label in sample.labels]] = 1.0
    return row


class ImageDataset(Dataset[tuple[Any, Any]]):
    """``(transform(image), target)`` pairs (target: class index, or a multi-hot row for
    multi-label samples). Decoding errors name the file."""

    def __init__(
        self,
        samples: Sequence[Sample],
        class_to_idx: dict[str, int],
        transform: Callable[[Image.Image], Any] | None = None,
        draft_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.seed = seed
        self.targets = [target_of(s, class_to_idx) for s in self.samples]
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, Any]:
        """``key`` is an index, or ``(index, epoch)`` from :class:`EpochShuffleSampler`, in
        which case the random augmentation is seeded from ``(seed, epoch, index)``."""
        i, epoch = (key, None) if isinstance(key, int) else key
        path = self.samples[i].path
        with reading_image(path, "Remove or replace the file."):
            img = load_rgb(path, self.draft_size)
        if self.transform is None:
            return img, self.targets[i]
        if epoch is None:
            with one_thread():
                return self.transform(img), self.targets[i]
        with torch.random.fork_rng(devices=[]), one_thread():
            torch.manual_seed(item_seed(self.seed, epoch, i))
            return self.transform(img), self.targets[i]


class ViewsDataset(Dataset[tuple[Any, int]]):
    """``views`` copies of a dataset of images: view 0 through ``base`` (the eval transform),
    views 1.. through ``augmented``, each view's augmentation seeded from (seed, view, index)."""

    def __init__(self, base: ImageDataset, augmented: ImageDataset, views: int) -> None:
        self.base, self.augmented, self.views = base, augmented, views

    def __len__(self) -> int:
        return len(self.base) * self.views

    def __getitem__(self, k: int) -> tuple[Any, int]:
        view, i = divmod(k, len(self.base))
        if view == 0:
            return self.base[i]
        return self.augmented[(i, 1_000_000 + view)]


class IndexedTensors(TensorDataset):
    """TensorDataset that accepts the ``(index, epoch)`` keys of :class:`EpochShuffleSampler`."""

    def __getitem__(self, key: Any) -> tuple[torch.Tensor, ...]:
        return super().__getitem__(key[0] if isinstance(key, tuple) else key)

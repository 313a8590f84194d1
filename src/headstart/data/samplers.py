"""Shuffling whose order and augmentation depend only on (seed, epoch, index), so a resumed run
sees exactly the batches an uninterrupted run would have seen — with any number of DataLoader
workers, persistent or not."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` in a permutation drawn from ``(seed, epoch)``.

    Lightning calls ``set_epoch`` before each epoch. Passing the epoch with each index lets the
    dataset seed each item's augmentation from ``(seed, epoch, index)`` (see
    :meth:`ImageDataset.__getitem__`), independent of worker processes and RNG history.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter((i, self.epoch) for i in torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 100_003 + index) % (2**63 - 1)


class EpochBalancedSampler(Sampler[tuple[int, int]]):
    """Class-balanced sampling with replacement: each class is drawn equally often in
    expectation; ``len(targets)`` draws per epoch, seeded from ``(seed, epoch)``."""

    def __init__(self, targets: list[int], seed: int) -> None:
        t = torch.as_tensor(targets)
        counts = torch.bincount(t).clamp(min=1).double()
        self.weights = (1.0 / counts)[t]
        self.n, self.seed, self.epoch = len(targets), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        idx = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        return iter((int(i), self.epoch) for i in idx)

    def __len__(self) -> int:
        return self.n

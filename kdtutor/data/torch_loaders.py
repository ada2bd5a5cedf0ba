"""Batches from any map-style ``torch.utils.data.Dataset`` or a user's ``DataLoader``.

:class:`~kdtutor.data.BatchLoader` over an :class:`~kdtutor.data.ArrayDataset` stays the fast,
deterministic path for in-memory images. These two loaders let ``fit`` train on anything
else and still hand the trainer :class:`~kdtutor.data.Batch` objects:

* :class:`DatasetLoader` reads a map-style dataset in a seeded order per epoch (the same
  order stream as ``BatchLoader``), collates with the task's ``collate`` and knows each
  sample's index;
* :class:`DataLoaderAdapter` wraps a ``DataLoader`` the user built: its order and
  collation are the user's, and the sample indices are unknown, so no teacher cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ._random import mix_seed
from .loader import Batch

_SHUFFLE_STREAM = 1


class DatasetLoader:
    """Iterate over a map-style dataset in batches, deterministically per ``(seed, epoch)``.

    Args:
        dataset: any object with ``__len__`` and ``__getitem__`` returning ``(input, target)``.
        batch_size: samples per batch.
        collate: turns a list of samples into ``(x, y)`` (a task's ``collate``).
        shuffle: a new order each epoch, drawn from ``(seed, epoch)``.
        seed: seed of the order.
        workers: worker processes of the underlying ``DataLoader`` (0: in this process).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        collate: Callable[[Sequence[Any]], tuple[Any, Any]],
        *,
        shuffle: bool = False,
        seed: int = 0,
        workers: int = 0,
    ) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.collate = collate
        self.shuffle = shuffle
        self.seed = int(seed)
        self.workers = int(workers)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> DatasetLoader:
        self.epoch = int(epoch)
        return self

    def __len__(self) -> int:
        return (len(self.dataset) + self.batch_size - 1) // self.batch_size  # type: ignore[arg-type]

    def _batches(self) -> list[list[int]]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, _SHUFFLE_STREAM))
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        return [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]

    def _collate(self, items: list[tuple[int, Any]]) -> Batch:
        index = torch.tensor([i for i, _ in items], dtype=torch.long)
        x, y = self.collate([sample for _, sample in items])
        return Batch(x, y, index, rows=index)

    def __iter__(self) -> Iterator[Batch]:
        indexed = _Indexed(self.dataset)
        loader = DataLoader(
            indexed,
            batch_sampler=self._batches(),
            collate_fn=self._collate,
            num_workers=self.workers,
        )
        yield from loader


class _Indexed(Dataset):
    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.dataset[i]


class DataLoaderAdapter:
    """A user's ``DataLoader`` yielding ``(x, y)`` pairs, seen as :class:`Batch` objects.

    Its order is the user's (``set_epoch`` is passed on to a ``DistributedSampler`` or any
    sampler that has one); the sample indices are unknown (``Batch.index`` is None).
    """

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int) -> DataLoaderAdapter:
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # type: ignore[union-attr]
        return self

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for item in self.loader:
            if isinstance(item, Batch):
                yield item
                continue
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    "a DataLoader given to fit must yield (inputs, targets) pairs, got "
                    f"{type(item).__name__}: give it a collate_fn that returns (x, y)."
                )
            yield Batch(item[0], item[1], None)


class SyntheticLoader:
    """Batches a data-free distiller synthesises (``synthesize_batch``), ``steps`` per epoch."""

    def __init__(self, synthesize: Callable[[int], Batch], batch_size: int, steps: int) -> None:
        self.synthesize = synthesize
        self.batch_size = int(batch_size)
        self.steps = int(steps)

    def set_epoch(self, epoch: int) -> SyntheticLoader:
        return self

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            yield self.synthesize(self.batch_size)

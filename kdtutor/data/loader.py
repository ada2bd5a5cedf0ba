"""A minimal, fast, deterministic batch loader over an :class:`ArrayDataset`.

No worker processes: batches are gathered with one vectorised index per batch, which for
in-memory datasets of small images is faster than torch's ``DataLoader`` with collation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from ._random import mix_seed
from .arrays import ArrayDataset
from .transforms import BatchTransform, build_augment

__all__ = ["Batch", "BatchLoader"]

_SHUFFLE_STREAM = 1
_AUGMENT_STREAM = 2


class Batch(NamedTuple):
    """One batch: normalised images, labels and the dataset indices they came from."""

    x: Tensor
    """float32 (B, C, H, W), normalised (and augmented, if the loader augments)."""
    y: Tensor
    """int64 (B,) labels."""
    index: Tensor
    """int64 (B,) indices into the dataset (e.g. to look up cached teacher logits)."""


class BatchLoader:
    """Iterate over a dataset in batches, deterministically per ``(seed, epoch)``.

    Call :meth:`set_epoch` before iterating each epoch: the shuffle order of epoch ``e`` comes
    from a fresh ``torch.Generator`` seeded with a mix of ``(seed, e)``, and augmentation from
    another one, so the batches never depend on torch's global RNG and a run resumed from a
    checkpoint at epoch ``e`` sees exactly the batches it would have seen. Iterating twice
    without :meth:`set_epoch` repeats the same epoch.

    Batches are CPU tensors; the trainer moves them to its device.

    Args:
        dataset: The dataset to read.
        batch_size: Samples per batch (at least 1).
        shuffle: Visit the samples in a new random order each epoch.
        seed: Seed of the shuffle and augmentation streams.
        drop_last: Drop the last batch when it is smaller than ``batch_size``.
        augment: A :class:`~kdtutor.data.transforms.BatchTransform`, a name accepted by
            :func:`~kdtutor.data.transforms.build_augment`, or None.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        augment: BatchTransform | str | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.augment = build_augment(augment)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> BatchLoader:
        """Select the epoch whose order and augmentation the next iteration uses.

        Returns:
            The loader itself, so ``for batch in loader.set_epoch(e)`` works.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}.")
        self.epoch = int(epoch)
        return self

    def order(self) -> Tensor:
        """The int64 order in which the current epoch visits the dataset indices."""
        n = len(self.dataset)
        if not self.shuffle:
            return torch.arange(n, dtype=torch.int64)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, _SHUFFLE_STREAM))
        return torch.randperm(n, generator=generator)

    def __len__(self) -> int:
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        order = self.order()
        generator = None
        if not self.augment.deterministic:
            generator = torch.Generator().manual_seed(
                mix_seed(self.seed, self.epoch, _AUGMENT_STREAM)
            )
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            x, y = self.dataset.batch(index)
            if generator is not None:
                x = self.augment(x, generator)
            yield Batch(x, y, index)

    def __repr__(self) -> str:
        return (
            f"BatchLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, augment={self.augment.describe()}, "
            f"epoch={self.epoch})"
        )

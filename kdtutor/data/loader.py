"""A minimal, fast, deterministic batch loader over an :class:`ArrayDataset`.

Batches are gathered with one vectorised index per batch, which for in-memory datasets of
small images is faster than torch's ``DataLoader`` with collation. Every random number of an
epoch (order, augmentation, which fixed view) is drawn up front in the main thread, in one
fixed sequence, so the batches are the same with or without worker threads, and every
process of a distributed run can take its own slice of each global batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._random import mix_seed
from .arrays import ArrayDataset
from .transforms import BatchTransform, FixedViews, build_augment

__all__ = ["Batch", "BatchLoader"]

_SHUFFLE_STREAM = 1
_AUGMENT_STREAM = 2


class Batch(NamedTuple):
    """One batch: inputs, targets, and where they came from.

    Everything the trainer and a method need to know of a batch travels in it: which
    samples (``index``), which fixed view of each (``view``) and so which teacher-cache
    ``rows`` to read, and its share of a distributed global batch.
    """

    x: Any
    """Inputs: float32 (B, C, H, W), normalised (and augmented, if the loader augments)."""
    y: Any
    """Targets: int64 (B,) labels for classification; a task's own targets otherwise."""
    index: Tensor | None
    """int64 (B,) indices into the dataset, or None when unknown (a user's DataLoader)."""
    view: Tensor | None = None
    """int64 (B,) fixed view shown of each image (with :class:`FixedViews`), else None."""
    global_size: int | None = None
    """Samples in the whole (global) batch this slice belongs to; None when not sharded."""
    rows: Tensor | None = None
    """int64 (B,) teacher-cache rows: ``index``, or ``view * N + index`` with fixed views."""


class _Plan(NamedTuple):
    index: Tensor
    params: tuple[Tensor, ...] | None
    view: Tensor | None
    global_size: int | None


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
        batch_size: Samples per batch (at least 1); with ``shard``, per *global* batch.
        shuffle: Visit the samples in a new random order each epoch.
        seed: Seed of the shuffle and augmentation streams.
        drop_last: Drop the last batch when it is smaller than ``batch_size``.
        augment: A :class:`~kdtutor.data.transforms.BatchTransform`, a name accepted by
            :func:`~kdtutor.data.transforms.build_augment`, or None.
        views: Show one of these fixed views of each image instead of fresh augmentation
            (see :class:`~kdtutor.data.transforms.FixedViews`); replaces ``augment``.
        shard: ``(rank, world_size)``: yield only this process's slice ``rank::world_size``
            of every global batch (distributed training). A last global batch with fewer
            samples than processes is dropped, so that no process gets an empty batch.
        workers: Threads that gather and augment batches ahead of the training loop
            (0: in the loop's own thread). The batches are identical for every value.
        pin_memory: Put batches in page-locked memory (only when CUDA is available), so that
            copies to the GPU can overlap with compute.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        augment: BatchTransform | str | None = None,
        *,
        views: FixedViews | None = None,
        shard: tuple[int, int] | None = None,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if isinstance(workers, bool) or int(workers) != workers or workers < 0:
            raise ValueError(f"workers must be a non-negative integer, got {workers!r}.")
        if shard is not None:
            rank, world = shard
            if not 0 <= rank < world:
                raise ValueError(
                    f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}."
                )
        if views is not None and views.n != len(dataset):
            raise ValueError(
                f"the fixed views were drawn for {views.n} images but the dataset has {len(dataset)}."
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.augment = build_augment(augment) if views is None else views.augment
        self.views = views
        self.shard = shard
        self.workers = int(workers)
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
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
        batches = (n + self.batch_size - 1) // self.batch_size
        if self.shard is not None and 0 < n % self.batch_size < self.shard[1]:
            batches -= 1  # a last global batch too small to give every process a sample
        return batches

    def _plan(self) -> tuple[list[_Plan], torch.Generator | None]:
        """Every batch's indices and random parameters, drawn in one fixed sequence; and, for a
        random transform without ``sample``/``apply``, the (untouched) generator it draws from
        as it runs."""
        order = self.order()
        whole_transform = False
        generator = None
        if self.views is not None or not self.augment.deterministic:
            generator = torch.Generator().manual_seed(
                mix_seed(self.seed, self.epoch, _AUGMENT_STREAM)
            )
        plans = []
        for b in range(len(self)):
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            params, view = None, None
            if self.views is not None:
                view = torch.randint(0, self.views.views, (len(index),), generator=generator)
            elif generator is not None:
                params = self.augment.sample(len(index), generator)
                whole_transform = params is None
                if whole_transform and (self.workers or self.shard is not None):
                    raise ValueError(
                        f"{self.augment.describe()} cannot draw its parameters apart from applying "
                        "them (no sample/apply), so it cannot run in loader workers or be sharded; "
                        "use workers=0 and one process, or implement sample() and apply()."
                    )
            global_size = None
            if self.shard is not None:
                rank, world = self.shard
                global_size = len(index)
                index = index[rank::world]
                params = None if params is None else tuple(t[rank::world] for t in params)
                view = None if view is None else view[rank::world]
            plans.append(_Plan(index, params, view, global_size))
        return plans, generator if whole_transform else None

    def _make(self, plan: _Plan, generator: torch.Generator | None = None) -> Batch:
        x, y = self.dataset.batch(plan.index)
        if self.views is not None:
            x = self.views.apply(x, plan.view, plan.index)
        elif plan.params is not None:
            x = self.augment.apply(x, *plan.params)
        elif generator is not None:  # a transform without sample/apply: drawn as it runs
            x = self.augment(x, generator)
        if self.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        rows = plan.index if plan.view is None else plan.view * len(self.dataset) + plan.index
        return Batch(x, y, plan.index, plan.view, plan.global_size, rows)

    def __iter__(self) -> Iterator[Batch]:
        plans, whole_transform_generator = self._plan()
        if not self.workers:
            for plan in plans:
                yield self._make(plan, whole_transform_generator)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="kdtutor-loader") as pool:
            ahead: deque[Future[Batch]] = deque()
            pending = iter(plans)
            for plan in pending:
                ahead.append(pool.submit(self._make, plan))
                if len(ahead) >= 2 * self.workers:
                    break
            while ahead:
                batch = ahead.popleft().result()
                nxt = next(pending, None)
                if nxt is not None:
                    ahead.append(pool.submit(self._make, nxt))
                yield batch

    def __repr__(self) -> str:
        augment = self.views.describe() if self.views is not None else self.augment.describe()
        extra = f", shard={self.shard}" if self.shard is not None else ""
        return (
            f"BatchLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, augment={augment}, "
            f"epoch={self.epoch}{extra})"
        )

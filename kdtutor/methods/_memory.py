r"""Exemplar memory for class-incremental learning (iCaRL, Rebuffi et al., 2017), shared by
the lifelong methods (:mod:`~kdtutor.methods.icarl`, and :mod:`~kdtutor.methods.lwf` with
exemplars).

:class:`ExemplarMemory` keeps, per class, the indices of a few training images, chosen by
herding (:func:`~kdtutor.losses.lifelong.herding`) on the model's L2-normalised embeddings,
and ranked so that a smaller memory keeps a prefix (iCaRL's Algorithms 4 and 5). It is a
map-style dataset of ``(image, label)`` pairs itself.

:func:`with_memory` joins a task's training split and a memory into one map-style dataset
whose length and items are read **when they are read**, not when it is built. That is what
lets :func:`~kdtutor.train.fit_sequence` run rehearsal unchanged: ``fit_sequence`` calls
``make(i, previous)`` *before* ``fit`` reads task ``i``'s training split, so a ``make`` that
updates the memory with ``previous`` on task ``i - 1`` makes task ``i`` train on its own images
followed by the exemplars of every earlier task::

    memory = ExemplarMemory(total=200)
    splits = [(train.select_classes(g), test.select_classes(g)) for g in groups]
    tasks = [(with_memory(tr, memory), te) for tr, te in splits]

    def make(i, previous):
        if previous is not None:
            memory.update(previous, splits[i - 1][0])   # exemplars of task i-1's classes
        ...                                              # the distiller for task i
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..errors import KDTutorError
from ..features import FeatureExtractor
from ..losses.lifelong import herding

__all__ = ["ExemplarMemory", "MemoryDataset", "embed", "with_memory"]

_CHUNK = 256


def _rows(data: Any, index: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs and labels of rows ``index`` of a dataset: ``data.batch`` where it has one."""
    if hasattr(data, "batch"):
        x, y = data.batch(index)
        return x, torch.as_tensor(y, dtype=torch.int64)
    items = [data[int(i)] for i in index]
    return (
        torch.stack([torch.as_tensor(x) for x, _ in items]),
        torch.as_tensor([int(y) for _, y in items], dtype=torch.int64),
    )


def _labels(data: Any) -> Tensor:
    targets = getattr(data, "targets", None)
    if isinstance(targets, Tensor):
        return targets.to(torch.int64)
    return torch.as_tensor([int(data[i][1]) for i in range(len(data))], dtype=torch.int64)


@torch.no_grad()
def embed(model: nn.Module, x: Tensor) -> Tensor:
    """The model's embeddings :math:`\\varphi(x)` ``(B, D)``, read at ``model.embedding_path``
    (the penultimate features every kdtutor model names) in eval mode, not normalised; the
    model's train/eval mode is restored afterwards."""
    path = getattr(model, "embedding_path", None)
    if not isinstance(path, str):
        raise KDTutorError(
            f"{type(model).__name__} has no embedding_path, so its features cannot be read for "
            "the exemplar memory: build it with kdtutor.models.build_model, or set "
            "model.embedding_path to the module path of its penultimate features (e.g. "
            "'fc:input')."
        )
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = []
        with FeatureExtractor(model, [path], detach=True) as fx:
            for chunk in x.split(_CHUNK):
                model(chunk.to(device))
                out.append(fx.tensor(path).flatten(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).float()


class ExemplarMemory(Dataset):
    """A fixed budget of ``total`` exemplars, shared equally by the classes seen so far.

    Args:
        total: the memory size :math:`K` (iCaRL's CIFAR-100 code: 2,000 = 20 per class at the
            end, ``nb_protos = 20``).
        flip_means: average each exemplar's embedding with its horizontal flip's when
            computing the class means (the official code's variant; the paper uses the image
            alone).

    Attributes:
        exemplars: class -> ``(dataset, indices)``, the indices ranked by herding.
    """

    def __init__(self, total: int = 200, *, flip_means: bool = False) -> None:
        if not isinstance(total, int) or isinstance(total, bool) or total < 1:
            raise KDTutorError(f"ExemplarMemory's total must be a positive int, got {total!r}.")
        self.total = total
        self.flip_means = flip_means
        self.exemplars: dict[int, tuple[Any, Tensor]] = {}
        self.updates = 0
        """How many times :meth:`update` ran (tests read it to check the order of events)."""

    # -- what it holds --------------------------------------------------------------------
    @property
    def classes(self) -> list[int]:
        """The classes with exemplars, in increasing order."""
        return sorted(self.exemplars)

    def per_class(self, n_classes: int | None = None) -> int:
        """:math:`m = \\lfloor K / t \\rfloor` exemplars per class for ``t`` classes (the
        classes held now by default): the paper's :math:`m = K/t`, rounded down so that the
        memory never exceeds ``total`` (the official code rounds up)."""
        t = len(self.exemplars) if n_classes is None else n_classes
        return self.total // t if t else self.total

    def __len__(self) -> int:
        return sum(len(idx) for _, idx in self.exemplars.values())

    def _flat(self) -> list[tuple[Any, int]]:
        flat = []
        for c in self.classes:
            data, idx = self.exemplars[c]
            flat.extend((data, int(i)) for i in idx.tolist())
        return flat

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"exemplar {index} of a memory of {n}.")
        data, row = self._flat()[index]
        x, y = data[row]
        return x, int(y)

    def batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of exemplars ``indices`` (positions in this memory)."""
        flat = self._flat()
        items = [flat[int(i)] for i in indices]
        xs, ys = [], []
        for data, row in items:
            x, y = _rows(data, torch.tensor([row]))
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    # -- updates --------------------------------------------------------------------------
    def update(self, model: nn.Module, train: Any, classes: Sequence[int] | None = None) -> None:
        """Add the exemplars of ``classes`` (default: every label of ``train``) chosen by
        herding on ``model``'s normalised embeddings of ``train``'s images (iCaRL's
        ``ConstructExemplarSet``), after shrinking the classes held to the new per-class
        budget (``ReduceExemplarSet``: each keeps the first :math:`m` of its ranking).

        Args:
            model: the model trained on the task of ``classes`` (a plain network with
                ``embedding_path``; pass a distiller's ``student``).
            train: that task's training split (an ArrayDataset or a map-style dataset of
                ``(image, label)``), *without* the memory.
            classes: the classes to add; each must have at least :math:`m` images in ``train``.
        """
        if isinstance(train, MemoryDataset):
            raise KDTutorError(
                "ExemplarMemory.update got a with_memory(...) dataset: pass the task's own "
                "training split (the first argument you gave with_memory)."
            )
        if (
            isinstance(model, nn.Module)
            and hasattr(model, "student")
            and not hasattr(model, "embedding_path")
        ):
            model = model.student  # a distiller: its student is the model
        labels = _labels(train)
        wanted = sorted(set(labels.tolist())) if classes is None else [int(c) for c in classes]
        if not wanted:
            raise KDTutorError("ExemplarMemory.update: no classes to add (the split is empty).")
        present = set(labels.tolist())
        missing = [c for c in wanted if c not in present]
        if missing:
            raise KDTutorError(
                f"ExemplarMemory.update: classes {missing} have no images in the training split "
                "given: pass the split of the task that learnt them."
            )
        m = self.per_class(len(set(self.exemplars) | set(wanted)))
        if m < 1:
            raise KDTutorError(
                f"ExemplarMemory of total {self.total} cannot hold one exemplar for each of "
                f"{len(set(self.exemplars) | set(wanted))} classes: raise total."
            )
        for c in wanted:
            rows = torch.nonzero(labels == c).flatten()
            x, _ = _rows(train, rows)
            order = herding(embed(model, x), min(m, len(rows)))
            self.exemplars[c] = (train, rows[order])
        self.reduce(m)
        self.updates += 1

    def reduce(self, per_class: int) -> None:
        """Keep the first ``per_class`` exemplars (herding's priority) of every class."""
        if per_class < 1:
            raise KDTutorError(f"ExemplarMemory.reduce: per_class must be >= 1, got {per_class}.")
        self.exemplars = {c: (d, idx[:per_class]) for c, (d, idx) in self.exemplars.items()}

    # -- the nearest-mean classifier -------------------------------------------------------
    def class_means(self, model: nn.Module, n_classes: int | None = None) -> Tensor:
        """iCaRL's class means :math:`\\mu_c`: the mean of the normalised embeddings of the
        class's exemplars, normalised again (as the official code does), ``(C, D)``; rows of
        classes without exemplars are NaN (:func:`~kdtutor.losses.lifelong.nme_scores` never
        picks them). ``n_classes`` defaults to ``model.num_classes``."""
        if not self.exemplars:
            raise KDTutorError(
                "the exemplar memory is empty: call update(model, train) after the first task "
                "before asking for class means."
            )
        k = n_classes if n_classes is not None else int(getattr(model, "num_classes", 0))
        k = max(k, max(self.exemplars) + 1)
        means: Tensor | None = None
        for c in self.classes:
            data, idx = self.exemplars[c]
            x, _ = _rows(data, idx)
            phi = F.normalize(embed(model, x), dim=1)
            if self.flip_means:
                phi = (phi + F.normalize(embed(model, x.flip(-1)), dim=1)) / 2
            mu = F.normalize(phi.mean(0), dim=0)
            if means is None:
                means = torch.full((k, mu.numel()), math.nan)
            means[c] = mu
        assert means is not None
        return means


class MemoryDataset(Dataset):
    """A task's training split followed by an exemplar memory, read at access time (see
    :func:`with_memory`)."""

    def __init__(self, train: Any, memory: ExemplarMemory) -> None:
        self.train = train
        self.memory = memory

    def __len__(self) -> int:
        return len(self.train) + len(self.memory)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        n = len(self.train)
        if index < 0:
            index += len(self)
        if index < n:
            x, y = self.train[index]
            return x, int(y)
        return self.memory[index - n]

    def __getattr__(self, name: str) -> Any:  # num_classes, in_channels, task, ... of the split
        if name in ("train", "memory") or name.startswith("__"):
            raise AttributeError(name)
        if name in ("batch", "fingerprint", "targets", "subset", "select_classes"):
            raise AttributeError(f"{name} describes the split alone, not split + memory")
        return getattr(self.train, name)


def with_memory(train: Any, memory: ExemplarMemory) -> MemoryDataset:
    """``train`` followed by ``memory``'s exemplars, as one map-style dataset whose length
    and items are those of the memory *when they are read*: build every task's training set
    up front and update the memory in ``fit_sequence``'s ``make`` (module docstring).

    Args:
        train: a task's training split (``ArrayDataset`` or map-style dataset of pairs).
        memory: the :class:`ExemplarMemory` shared by the sequence.
    """
    if not isinstance(memory, ExemplarMemory):
        raise KDTutorError(
            f"with_memory's memory must be an ExemplarMemory, got {type(memory).__name__}: "
            "build one with ExemplarMemory(total=...)."
        )
    if isinstance(train, str) or not hasattr(train, "__len__") or not hasattr(train, "__getitem__"):
        raise KDTutorError(
            f"with_memory's train must be a dataset of (image, label) pairs, got "
            f"{type(train).__name__}: load it first (kdtutor.data.load_dataset(...))."
        )
    return MemoryDataset(train, memory)

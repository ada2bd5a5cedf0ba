"""What training runs record: the losses of every step, and loss curves averaged over seeds.

:func:`kdtutor.train.fit` keeps, per epoch, the mean of each named loss over the epoch's
batches. Two things a user often wants beyond that:

* :class:`StepLosses`: the named losses of *every* training step of a distiller (a forward
  hook; FitNets' two stages, or a warm-up, are best seen step by step);
* :func:`mean_loss_curves`: the per-epoch mean, over several runs (seeds), of every named
  loss, e.g. of :func:`kdtutor.train.run_seeds`'s results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import KDTutorError
from ..methods import Distiller

__all__ = ["StepLosses", "mean_loss_curves"]


class StepLosses:
    """Record the named losses a distiller returns on every training step.

    A forward hook on the distiller stores each training-mode call's losses (as floats) in
    :attr:`steps`; evaluation (:meth:`Distiller.predict`) does not call ``forward`` and is not
    recorded. Use it as a context manager around :func:`kdtutor.train.fit`.

    Example:
        >>> import torch
        >>> from kdtutor.methods import build_distiller
        >>> from kdtutor.models import build_model
        >>> distiller = build_distiller("scratch", build_model("cnn_micro"))
        >>> with StepLosses(distiller) as recorder:
        ...     _ = distiller(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
        >>> list(recorder.steps[0])
        ['ce']
    """

    def __init__(self, distiller: Distiller) -> None:
        if not isinstance(distiller, Distiller):
            raise TypeError(
                f"StepLosses records a Distiller's losses, got {type(distiller).__name__}; "
                "wrap a plain model with build_distiller('scratch', model)."
            )
        self.distiller = distiller
        self.steps: list[dict[str, float]] = []
        self._handle: RemovableHandle | None = None

    def _hook(self, module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if module.training and isinstance(output, tuple) and len(output) == 2:
            losses = output[1]
            self.steps.append({k: float(v.detach()) for k, v in losses.items()})  # type: ignore[union-attr]

    def __enter__(self) -> StepLosses:
        if self._handle is None:
            self._handle = self.distiller.register_forward_hook(self._hook)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def series(self, name: str) -> list[float]:
        """The loss ``name`` at every recorded step (``nan`` where the step did not return it)."""
        return [step.get(name, math.nan) for step in self.steps]

    @property
    def names(self) -> list[str]:
        """Every loss name recorded, in order of first appearance."""
        return list(dict.fromkeys(name for step in self.steps for name in step))


def mean_loss_curves(histories: Sequence[Any]) -> dict[str, np.ndarray]:
    """The per-epoch mean, over runs, of every named loss the runs recorded.

    Args:
        histories: :class:`~kdtutor.train.FitResult` objects (or their ``history`` lists) of
            runs of the same method and number of epochs, e.g. ``run_seeds(...).results``.

    Returns:
        ``{loss name: (epochs,) array}``, the names in the order of the first run's history.
    """
    runs = [h.history if hasattr(h, "history") else h for h in histories]
    if not runs or not runs[0]:
        raise KDTutorError("mean_loss_curves needs at least one run with at least one epoch.")
    if len({len(run) for run in runs}) != 1:
        raise KDTutorError(
            f"the runs have different numbers of epochs ({sorted({len(r) for r in runs})}): "
            "average runs of the same length."
        )
    names = list(runs[0][0]["losses"])
    return {
        name: np.array([[record["losses"][name] for record in run] for run in runs]).mean(axis=0)
        for name in names
    }

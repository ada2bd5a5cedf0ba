"""What a model was trained on, and the check that it fits a run's data.

A teacher from the zoo (:func:`kdtutor.zoo.load_teacher`) or a model built from a weights file
that records its data (:func:`kdtutor.specs.build_from_spec`) carries :class:`TrainedOn` as
``model.trained_on``; :func:`check_trained_on` (called by ``fit`` before training) refuses it
on another dataset, image shape or class count, naming both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import KDTutorError

__all__ = ["IncompatibleTeacherError", "TrainedOn", "check_trained_on"]


class IncompatibleTeacherError(KDTutorError, ValueError):
    """A model trained on other data (dataset, input shape or classes) than the run's."""


@dataclass(frozen=True)
class TrainedOn:
    """What a model was trained on, as its manifest or weights file records it."""

    dataset: str
    num_classes: int
    input_shape: tuple[int, ...] | None = None
    """(channels, height, width) of its inputs, when recorded."""


def check_trained_on(
    model: nn.Module, *, role: str, dataset: str | None, num_classes: int, input_shape: Any
) -> None:
    """Refuse a model trained on another dataset, input shape or class count than the run's.

    ``input_shape`` is the run's (channels, height, width); a model without ``trained_on``
    (built without a file that records it, or made by hand) passes unchecked.
    """
    trained = getattr(model, "trained_on", None)
    if not isinstance(trained, TrainedOn):
        return
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    problems = []
    if dataset is not None and trained.dataset != dataset:
        problems.append(f"it was trained on {trained.dataset!r}, this run uses {dataset!r}")
    if trained.num_classes != num_classes:
        problems.append(f"it has {trained.num_classes} classes, the data {num_classes}")
    if trained.input_shape is not None and shape is not None and trained.input_shape != shape:
        problems.append(
            f"it takes {'x'.join(map(str, trained.input_shape))} inputs, the data is "
            f"{'x'.join(map(str, shape))}"
        )
    if problems:
        raise IncompatibleTeacherError(
            f"the {role} does not fit this data: {'; '.join(problems)}. Pick a {role} trained "
            f"on {dataset or 'this dataset'} (`kdtutor zoo list` shows each teacher's dataset) "
            "or train one first (`kdtutor distill --method scratch --save-student`)."
        )

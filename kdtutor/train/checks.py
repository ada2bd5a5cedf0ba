"""Checks ``fit`` makes before any training: do the networks fit the data?

Each check raises one clear error naming the problem and the fix, instead of a shape error
deep inside the first step (or, worse, a run that trains silently from a teacher made for
other data). Only what can be known cheaply is checked: class counts, input channels, image
shapes of the two splits, and what a teacher was trained on (:class:`~kdtutor.models.trained_on.TrainedOn`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import ArrayDataset
from ..errors import ShapeMismatchError
from ..models.summary import first_in_channels
from ..models.trained_on import check_trained_on

__all__ = ["check_networks_fit_data"]


def _input_shape(data: Any) -> tuple[int, ...] | None:
    """(channels, height, width) of an image dataset's inputs; None when it is not one."""
    if isinstance(data, ArrayDataset):
        return tuple(data.images.shape[1:])
    if (
        data is None
        or not hasattr(data, "__getitem__")
        or isinstance(data, torch.utils.data.DataLoader)
    ):
        return None
    try:
        sample = data[0][0]
    except Exception:  # an unusual dataset: leave it to the first step
        return None
    return tuple(sample.shape) if isinstance(sample, torch.Tensor) and sample.dim() == 3 else None


def _num_classes(data: Any) -> int | None:
    if isinstance(data, ArrayDataset):
        return data.num_classes
    classes = getattr(data, "classes", None)
    return len(classes) if classes is not None and not isinstance(classes, str) else None


def check_networks_fit_data(
    networks: dict[str, nn.Module], train_data: Any, test_data: Any, *, classification: bool
) -> None:
    """Refuse networks that cannot work on this data, before training.

    Args:
        networks: role -> network (``student``, ``teacher``, peers ...).
        train_data, test_data: the splits given to ``fit`` (either may be None).
        classification: whether class counts are to be checked.
    """
    train_shape, test_shape = _input_shape(train_data), _input_shape(test_data)
    if train_shape is not None and test_shape is not None and train_shape != test_shape:
        raise ShapeMismatchError(
            f"the test split's images are {'x'.join(map(str, test_shape))} but the training "
            f"split's are {'x'.join(map(str, train_shape))}: load both splits of one dataset "
            "with the same options (size, channels)."
        )
    data = train_data if train_data is not None else test_data
    shape = train_shape or test_shape
    classes = _num_classes(data)
    name = getattr(data, "name", None) if isinstance(data, ArrayDataset) else None
    if classification and classes is not None:  # first: it names the data each net knows
        for role, net in networks.items():
            if net is not None:
                check_trained_on(
                    net, role=role, dataset=name, num_classes=classes, input_shape=shape
                )
    for role, net in networks.items():
        if net is None:
            continue
        channels = first_in_channels(net)
        if shape is not None and channels is not None and channels != shape[0]:
            raise ShapeMismatchError(
                f"the {role} takes {channels}-channel images but the data has {shape[0]} "
                f"channel(s): build it with in_channels={shape[0]}."
            )
        outputs = getattr(net, "num_classes", None)
        if (
            classification
            and classes is not None
            and isinstance(outputs, int)
            and outputs != classes
        ):
            raise ShapeMismatchError(
                f"the {role} has {outputs} outputs but the data has {classes} classes: build "
                f"it with num_classes={classes}."
            )

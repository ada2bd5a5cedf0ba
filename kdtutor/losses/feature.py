"""Feature-based losses: they compare what student and teacher compute inside the network.

Pure functions of tensors (no modules, no training loop). Each takes student and teacher
features that already have matching shapes where the method needs it (a connector from
:mod:`kdtutor.connectors` does the matching) and returns a scalar averaged over the batch.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError


def check_same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    """Raise a clear error when two features that must agree in shape do not."""
    if student.shape != teacher.shape:
        raise ShapeMismatchError(
            f"{what}: student feature {tuple(student.shape)} and teacher feature "
            f"{tuple(teacher.shape)} differ. Map the student feature with a connector "
            "(kdtutor.connectors.build_connector) or choose paths with equal shapes."
        )


def hint_loss(student: Tensor, teacher: Tensor) -> Tensor:
    r"""FitNets' hint loss (Romero et al., 2015): the mean squared error between the regressed
    student feature (the *hint*) and the teacher's guided-layer feature.

    .. math::
        \mathcal{L}_{HT} = \frac{1}{B\,C\,H\,W} \sum \big(r(F_s) - F_t\big)^2

    The paper writes :math:`\tfrac12\|\cdot\|^2` summed per sample; RepDistiller (and we) take
    the mean over all elements, which only rescales the weight ``beta`` (100 in RepDistiller).
    """
    check_same_shape(student, teacher, "hint_loss")
    return F.mse_loss(student, teacher)

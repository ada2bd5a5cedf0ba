r"""Measuring response-based distillation: how close a student's outputs are to its teacher's.

:func:`response_diagnostics` gives every response-based measure between a student's and a
teacher's logits at once (the KD loss, its two DKD halves, DIST's two correlation losses,
top-1 agreement with the teacher and accuracy), all computed by the package's own losses so
that the numbers are the ones the methods optimise. Chapter 3's response notebook uses it
to ask what KD and DKD students actually matched.

>>> import torch
>>> z = torch.tensor([[4.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
>>> d = response_diagnostics(z, z, torch.tensor([0, 1]), T=4.0)
>>> round(d["kd"], 6), d["agreement"], d["accuracy"]
(0.0, 100.0, 100.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ShapeMismatchError
from ..losses.response import dist_loss, dkd_loss, kd_loss

__all__ = ["DIAGNOSTICS", "response_diagnostics"]

#: The keys :func:`response_diagnostics` returns, in a sensible order for a table.
DIAGNOSTICS: tuple[str, ...] = ("kd", "tckd", "nckd", "inter", "intra", "agreement", "accuracy")


@torch.no_grad()
def response_diagnostics(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, T: float = 4.0
) -> dict[str, float]:
    r"""Every response-based distance between a student's and a teacher's logits on one split.

    Args:
        student_logits: ``(N, K)`` logits of the student (e.g. from
            :func:`kdtutor.train.predict_logits`).
        teacher_logits: ``(N, K)`` logits of the teacher on the same samples, in the same order.
        labels: ``(N,)`` true classes.
        T: The temperature of every loss.

    Returns:
        A dict with the keys of :data:`DIAGNOSTICS`: ``kd`` (:func:`~kdtutor.losses.kd_loss`),
        ``tckd`` and ``nckd`` (:func:`~kdtutor.losses.dkd_loss`, unweighted), ``inter`` and
        ``intra`` (:func:`~kdtutor.losses.dist_loss`, unweighted), all :math:`T^2`-scaled
        averages over the ``N`` samples (DIST's intra-class term correlates whole columns);
        ``agreement``, the percentage of samples where the student's top-1 class is the
        teacher's; ``accuracy``, the student's top-1 accuracy in percent.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ShapeMismatchError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must both be (N, K)."
        )
    if labels.shape != student_logits.shape[:1]:
        raise ShapeMismatchError(
            f"labels {tuple(labels.shape)} must be (N,) = ({student_logits.shape[0]},)."
        )
    zs, zt = student_logits.float(), teacher_logits.float()
    tckd, nckd = dkd_loss(zs, zt, labels, T)
    inter, intra = dist_loss(zs, zt, T)
    top = zs.argmax(dim=1)
    return {
        "kd": float(kd_loss(zs, zt, T)),
        "tckd": float(tckd),
        "nckd": float(nckd),
        "inter": float(inter),
        "intra": float(intra),
        "agreement": 100.0 * float((top == zt.argmax(dim=1)).float().mean()),
        "accuracy": 100.0 * float((top == labels).float().mean()),
    }

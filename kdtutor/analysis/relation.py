r"""Measuring relation-based knowledge: how closely a student reproduces the teacher's relations.

:func:`relation_gaps` gives the RKD distance, RKD angle and SP losses between a student's and
the teacher's features of the same samples, averaged over batches of fixed size (the
relations are those of a batch, so the batch size is part of the measurement). Chapter 3's
relation notebook uses it to ask how much of the teacher's *geometry* students trained with
SP, RKD, PKT and CRD learnt.

Reference:
    Park, W., Kim, D., Lu, Y., Cho, M. (2019). Relational Knowledge Distillation. CVPR.
    Tung, F., Mori, G. (2019). Similarity-Preserving Knowledge Distillation. ICCV.
    Tian, Y., Krishnan, D., Isola, P. (2020). Contrastive Representation Distillation. ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import KDTutorError
from ..losses.relation import rkd_angle_loss, rkd_distance_loss, sp_loss

__all__ = ["GAP_NAMES", "relation_gaps"]

GAP_NAMES: tuple[str, ...] = ("rkd_distance", "rkd_angle", "sp")
"""The relation losses :func:`relation_gaps` measures, in its order."""


def relation_gaps(
    student_features: Tensor,
    teacher_features: Tensor,
    *,
    batch_size: int = 64,
    seed: int = 0,
    gaps: Sequence[str] = GAP_NAMES,
) -> dict[str, float]:
    """Mean relation losses between a student's and the teacher's features of the same samples.

    ``student_features`` ``(N, ...)`` and ``teacher_features`` ``(N, ...)`` (e.g. from
    :func:`kdtutor.features.probe_features`) are flattened, shuffled together with ``seed``
    (so every student meets the same batches) and cut into batches of ``batch_size`` (a last,
    smaller batch is dropped); on each batch the losses of :mod:`kdtutor.losses.relation` named in ``gaps`` (``"rkd_distance"``,
    ``"rkd_angle"``, ``"sp"``, unweighted) compare the two. Zero means that the student's
    relations are the teacher's.

    Returns:
        ``{name: mean over the batches}``.
    """
    losses = {"rkd_distance": rkd_distance_loss, "rkd_angle": rkd_angle_loss, "sp": sp_loss}
    unknown = [g for g in gaps if g not in losses]
    if unknown:
        raise KDTutorError(f"unknown relation gaps {unknown}; choose among {list(losses)}.")
    n_samples = student_features.shape[0]
    if teacher_features.shape[0] != n_samples:
        raise KDTutorError(
            f"relation_gaps: {n_samples} student and {teacher_features.shape[0]} teacher "
            "feature rows; pass the features of the same samples."
        )
    if n_samples < batch_size:
        raise KDTutorError(f"relation_gaps needs at least one batch of {batch_size} samples.")
    order = torch.randperm(n_samples, generator=torch.Generator().manual_seed(seed))
    fs, ft = student_features[order].flatten(1), teacher_features[order].flatten(1)
    n = n_samples // batch_size
    totals = dict.fromkeys(gaps, 0.0)
    with torch.no_grad():
        for b in range(n):
            s, t = (f[b * batch_size : (b + 1) * batch_size] for f in (fs, ft))
            for name in gaps:
                totals[name] += float(losses[name](s, t))
    return {name: total / n for name, total in totals.items()}

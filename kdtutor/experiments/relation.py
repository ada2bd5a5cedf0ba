r"""Measuring relation-based knowledge: how closely a student reproduces the teacher's relations.

Chapter 3's relation notebook trains students with RKD, SP, PKT and CRD and then asks how much
of the teacher's *geometry* each one learnt. The pieces:

* :func:`class_sorted_indices`: a probe batch with the same number of samples of each class,
  sorted by class, so that a ``B x B`` relation matrix shows one block per class;
* :func:`features`: a model's features at a module path for a batch (eval mode, no gradient,
  flattened to ``(B, D)``);
* :func:`relation_gaps`: the RKD distance, RKD angle and SP losses between a student's and the
  teacher's features of the same samples, averaged over batches of fixed size (the relations
  are those of a batch, so the batch size is part of the measurement);
* :func:`memory_bank_bytes`: what CRD's memory banks cost.

Reference:
    Park, W., Kim, D., Lu, Y., Cho, M. (2019). Relational Knowledge Distillation. CVPR.
    Tung, F., Mori, G. (2019). Similarity-Preserving Knowledge Distillation. ICCV.
    Tian, Y., Krishnan, D., Isola, P. (2020). Contrastive Representation Distillation. ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import KDTutorError
from ..features import probe_features
from ..losses.relation import rkd_angle_loss, rkd_distance_loss, sp_loss

__all__ = ["class_sorted_indices", "features", "memory_bank_bytes", "relation_gaps"]

GAP_NAMES: tuple[str, ...] = ("rkd_distance", "rkd_angle", "sp")
"""The relation losses :func:`relation_gaps` measures, in its order."""


def class_sorted_indices(targets: Tensor, per_class: int) -> Tensor:
    """The first ``per_class`` indices of each class, class 0 first: ``(C * per_class,)``.

    Raises:
        KDTutorError: a class has fewer than ``per_class`` samples.
    """
    targets = torch.as_tensor(targets).reshape(-1)
    if per_class < 1:
        raise KDTutorError(f"per_class must be at least 1, got {per_class}.")
    chosen = []
    for c in range(int(targets.max()) + 1):
        where = torch.nonzero(targets == c).flatten()
        if where.numel() < per_class:
            raise KDTutorError(
                f"class {c} has {where.numel()} samples, fewer than per_class={per_class}."
            )
        chosen.append(where[:per_class])
    return torch.cat(chosen)


def features(model: nn.Module, path: str, x: Tensor, batch_size: int = 512) -> Tensor:
    """``model``'s features at ``path`` for the inputs ``x``, flattened to ``(N, D)``.

    The model runs in eval mode (batch norm uses its running statistics) without gradients,
    ``batch_size`` inputs at a time (:func:`~kdtutor.features.probe_features`); its
    train/eval modes are restored.
    """
    device = next(model.parameters()).device
    out = []
    for chunk in x.split(batch_size):
        _, feature = probe_features(model, chunk.to(device), [path])
        out.append(feature[path].flatten(1).cpu())
    return torch.cat(out)


def relation_gaps(
    student_features: Tensor,
    teacher_features: Tensor,
    *,
    batch_size: int = 64,
    seed: int = 0,
    gaps: Sequence[str] = GAP_NAMES,
) -> dict[str, float]:
    """Mean relation losses between a student's and the teacher's features of the same samples.

    ``student_features`` ``(N, ...)`` and ``teacher_features`` ``(N, ...)`` (see
    :func:`features`) are shuffled together with ``seed`` (so every student meets the same
    batches) and cut into batches of ``batch_size`` (a last, smaller batch is dropped); on each
    batch the losses of :mod:`kdtutor.losses.relation` named in ``gaps`` (``"rkd_distance"``,
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


def memory_bank_bytes(
    n_data: int, feat_dim: int = 128, *, banks: int = 2, bytes_per_value: int = 4
) -> int:
    """Bytes held by CRD's memory banks: ``banks`` x ``n_data`` rows of ``feat_dim`` values.

    CRD keeps one bank for the student's and one for the teacher's embeddings, float32.
    """
    return banks * n_data * feat_dim * bytes_per_value

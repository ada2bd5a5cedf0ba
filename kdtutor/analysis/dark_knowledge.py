r"""Dark knowledge: soft targets, their entropy, a teacher's class similarities, KD's gradients.

Every function is a pure function of tensors (or of a model and a dataset, run in ``eval()``
mode without gradients), so the chapters can show what it returns and the tests can check
it against independent NumPy computations.

>>> import torch
>>> from kdtutor.analysis import soft_targets, entropy
>>> p = soft_targets(torch.tensor([[4.0, 2.0, 0.0]]), T=2.0)
>>> [round(v, 3) for v in p[0].tolist()]
[0.665, 0.245, 0.09]
>>> round(entropy(p).item(), 3)
0.832
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ..data import ArrayDataset
from ..errors import ShapeMismatchError
from ..losses.response import kd_loss
from ..train import predict_logits

__all__ = [
    "class_similarity_matrix",
    "entropy",
    "kd_gradient_norms",
    "mean_entropy_by_temperature",
    "most_similar_other_class",
    "soft_targets",
]


def _check_temperature(T: float) -> None:
    if not (isinstance(T, int | float) and math.isfinite(T) and T > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {T!r}.")


def soft_targets(logits: Tensor, T: float = 1.0) -> Tensor:
    r"""Softmax at temperature ``T``: :math:`p^T_k = \exp(z_k/T) / \sum_j \exp(z_j/T)`.

    ``T = 1`` is the ordinary softmax; larger ``T`` flattens the distribution and reveals
    the small probabilities a confident model gives to the wrong classes (Hinton et al., 2015).

    Args:
        logits: ``(..., K)`` logits :math:`z`; the softmax runs over the last dimension.
        T: The temperature, ``> 0``.

    Returns:
        Probabilities with the shape of ``logits``, summing to one over the last dimension.
    """
    _check_temperature(T)
    return torch.softmax(logits / T, dim=-1)


def entropy(p: Tensor) -> Tensor:
    r"""Shannon entropy in nats of each probability vector: :math:`H(p) = -\sum_k p_k \log p_k`.

    Terms with :math:`p_k = 0` count as zero (the limit of :math:`p \log p`), so a one-hot
    vector has entropy 0 and the uniform distribution over ``K`` classes has :math:`\log K`.

    Args:
        p: ``(..., K)`` probabilities over the last dimension.

    Returns:
        ``(...)``: one entropy per vector (e.g. per sample).
    """
    return -torch.special.xlogy(p, p).sum(dim=-1)


def mean_entropy_by_temperature(logits: Tensor, temperatures: Iterable[float]) -> Tensor:
    r"""Mean entropy (nats) of the soft targets of ``logits`` at each temperature.

    Args:
        logits: ``(N, K)`` logits, e.g. a teacher's on a test split.
        temperatures: The temperatures to try.

    Returns:
        ``(len(temperatures),)`` float tensor: entry ``i`` is the mean over the ``N`` samples
        of :math:`H(\mathrm{softmax}(z / T_i))`.
    """
    return torch.stack([entropy(soft_targets(logits, float(T))).mean() for T in temperatures])


def class_similarity_matrix(
    source: nn.Module | Tensor,
    data: ArrayDataset | Tensor,
    T: float = 1.0,
    *,
    num_classes: int | None = None,
) -> Tensor:
    r"""The teacher's mean soft target per true class: its "dark knowledge" as a ``(K, K)`` matrix.

    .. math::
        S_{ck} = \frac{1}{|\{i : y_i = c\}|} \sum_{i : y_i = c} \mathrm{softmax}(z_i / T)_k .

    Row ``c`` is the average probability the model gives to each class ``k`` for images
    whose label is ``c``; every row sums to one. Large off-diagonal entries mark classes the
    model finds similar.

    Args:
        source: A model (run on ``data`` with :func:`predict_logits`) or ``(N, K)`` logits.
        data: A dataset (its labels are used; it is also the model's input), or, when
            ``source`` holds logits, the ``(N,)`` labels.
        T: Temperature of the softmax.
        num_classes: ``K``; defaults to the logits' width.

    Returns:
        ``(K, K)`` float tensor. A class with no sample gets a row of NaN.

    Raises:
        ShapeMismatchError: Logits and labels of different lengths.
        TypeError: A model given with labels instead of a dataset.
    """
    if isinstance(source, nn.Module):
        if not isinstance(data, ArrayDataset):
            raise TypeError("pass a dataset as `data` when `source` is a model.")
        logits, labels = predict_logits(source, data)
    else:
        logits = source
        labels = data.targets if isinstance(data, ArrayDataset) else torch.as_tensor(data)
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ShapeMismatchError(
            f"need (N, K) logits and (N,) labels, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}."
        )
    k = num_classes if num_classes is not None else logits.shape[1]
    probs = soft_targets(logits if logits.is_floating_point() else logits.float(), T)
    sums = torch.zeros(k, logits.shape[1], dtype=probs.dtype).index_add_(0, labels.long(), probs)
    counts = torch.bincount(labels.long(), minlength=k).to(probs.dtype)
    return sums / counts[:, None]


def most_similar_other_class(matrix: Tensor) -> Tensor:
    """For each row ``c`` of a square similarity matrix, the column ``k != c`` with the most mass.

    Args:
        matrix: ``(K, K)``, e.g. from :func:`class_similarity_matrix`.

    Returns:
        ``(K,)`` int64 tensor of class indices.
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ShapeMismatchError(f"need a square matrix, got {tuple(matrix.shape)}.")
    off = matrix.clone()
    off.fill_diagonal_(-math.inf)
    return off.argmax(dim=1)


def kd_gradient_norms(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperatures: Sequence[float],
    *,
    scale_by_t2: bool = True,
) -> Tensor:
    r"""The norm of :math:`\partial \mathcal{L}_{KD} / \partial z_s` at each temperature.

    For every ``T`` this evaluates :func:`kdtutor.losses.kd_loss` (with or without its
    :math:`T^2` factor) at the given logits and returns the Frobenius norm of the gradient
    with respect to the student logits (the whole ``(B, K)`` batch). Without the factor the
    norm falls like :math:`1/T^2` at high temperature; with it, it stays roughly constant.

    Args:
        student_logits: ``(B, K)`` student logits (not modified; a detached copy is used).
        teacher_logits: ``(B, K)`` teacher logits.
        temperatures: The temperatures to evaluate.
        scale_by_t2: Passed to :func:`~kdtutor.losses.kd_loss`.

    Returns:
        ``(len(temperatures),)`` float tensor of gradient norms.
    """
    norms = []
    for T in temperatures:
        zs = student_logits.detach().clone().requires_grad_(True)
        loss = kd_loss(zs, teacher_logits.detach(), float(T), scale_by_t2=scale_by_t2)
        (grad,) = torch.autograd.grad(loss, zs)
        norms.append(grad.norm())
    return torch.stack(norms)

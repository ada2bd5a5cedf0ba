r"""Losses and pieces of lifelong (class-incremental) distillation, as pure tensor functions.

* Learning without Forgetting (Li & Hoiem, 2016/2017): :func:`lwf_loss`, the cross entropy on
  the new task plus a temperature-softened cross entropy towards the outputs the model of the
  previous task gives the old classes (:func:`lwf_distillation`).
* iCaRL (Rebuffi, Kolesnikov, Sperl, Lampert, 2017): :func:`icarl_loss` (the official code's
  single binary cross entropy with mixed targets), :func:`herding` (the exemplar selection of
  its Algorithm 4) and :func:`nme_scores` (the nearest-mean-of-exemplars classifier).

Class sets (``old``, ``new``) are sequences of label indices into the logits' last dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import KDTutorError, ShapeMismatchError

__all__ = [
    "CE_SCOPES",
    "herding",
    "icarl_loss",
    "lwf_distillation",
    "lwf_loss",
    "nme_scores",
]

CE_SCOPES: tuple[str, ...] = ("task", "all")
"""Where LwF's cross entropy runs: over the new task's outputs only, or over every output."""


def _classes(classes: Sequence[int], k: int, what: str) -> Tensor:
    idx = torch.as_tensor(list(classes), dtype=torch.int64)
    if idx.ndim != 1:
        raise KDTutorError(f"{what} must be a flat sequence of class indices, got {classes!r}.")
    bad = [c for c in idx.tolist() if not 0 <= c < k]
    if bad:
        raise KDTutorError(
            f"{what} {bad} are not outputs of a {k}-way classifier: give class indices in "
            f"0..{k - 1}."
        )
    if len(set(idx.tolist())) != len(idx):
        raise KDTutorError(f"{what} {list(classes)} repeats a class: list each class once.")
    return idx


def _check_logits(logits: Tensor, other: Tensor, what: str) -> None:
    if logits.ndim != 2 or other.shape != logits.shape:
        raise ShapeMismatchError(
            f"{what}: the logits and the previous model's logits must both be (B, K) with the "
            f"same shape, got {tuple(logits.shape)} and {tuple(other.shape)}."
        )


def lwf_distillation(
    logits: Tensor, old_logits: Tensor, old: Sequence[int], T: float = 2.0
) -> Tensor:
    r"""LwF's distillation term over the old classes (Li & Hoiem, 2017, Eq. 2):

    .. math::
        \mathcal{L}_{old} = -\frac1B \sum_{i=1}^{B} \sum_{c \in \mathcal{O}}
            \mathrm{softmax}\big(z^{o}_{i,\mathcal{O}} / T\big)_c\,
            \log \mathrm{softmax}\big(z_{i,\mathcal{O}} / T\big)_c,

    :math:`z^{o}` the logits the model of the previous task gives (recorded before the task
    is trained, i.e. the frozen previous model), :math:`\mathcal{O}` the old classes, both
    softmaxes taken over the old classes only. A cross entropy, not a KL (they differ by the
    teacher's entropy, a constant) and **no** :math:`T^2` factor, as in the paper and FACIL's
    ``lwf.py`` (whose ``exp = 1/T`` power-and-renormalise is exactly the softmax at ``T``).
    Reduction: sum over classes, mean over the batch.

    Args:
        logits: the current model's logits ``(B, K)``.
        old_logits: the previous model's logits ``(B, K)`` (no gradient flows into them).
        old: the old classes' indices.
        T: the temperature (the paper's 2).
    """
    _check_logits(logits, old_logits, "lwf_distillation")
    if T <= 0:
        raise KDTutorError(f"lwf_distillation: T must be positive, got {T}.")
    idx = _classes(old, logits.shape[1], "lwf_distillation's old classes").to(logits.device)
    if len(idx) == 0:
        return logits.sum() * 0.0
    target = F.softmax(old_logits.detach().index_select(1, idx) / T, dim=1)
    log_q = F.log_softmax(logits.index_select(1, idx) / T, dim=1)
    return -(target * log_q).sum(1).mean()


def lwf_loss(
    logits: Tensor,
    old_logits: Tensor | None,
    y: Tensor,
    old: Sequence[int],
    new: Sequence[int],
    *,
    T: float = 2.0,
    lamb: float = 1.0,
    ce_scope: str = "task",
) -> Tensor:
    r"""Learning without Forgetting's loss (Li & Hoiem, 2017):

    .. math::
        \mathcal{L} = \mathrm{CE}(z_{\mathcal{S}}, y) + \lambda\,\mathcal{L}_{old},

    with :math:`\mathcal{L}_{old}` the distillation term of :func:`lwf_distillation` (old
    classes :math:`\mathcal{O}`, temperature ``T``, no :math:`T^2`) and the cross entropy over
    the outputs :math:`\mathcal{S}`: the new task's classes ``new`` when ``ce_scope="task"``
    (the paper's new-task head; FACIL without exemplars), every output when ``"all"`` (FACIL
    with exemplars). Both terms are batch means. Defaults ``T=2`` and ``lamb=1`` are the
    paper's (p. 5), as FACIL quotes them.

    Args:
        logits: the current model's logits ``(B, K)``.
        old_logits: the previous model's logits ``(B, K)``; ``None`` when ``old`` is empty.
        y: labels ``(B,)`` (original class indices; with ``"task"`` each must be in ``new``).
        old: the classes of the tasks before this one.
        new: the classes of this task.
        T: the distillation temperature.
        lamb: :math:`\lambda`, the distillation weight.
        ce_scope: ``"task"`` or ``"all"`` (see :data:`CE_SCOPES`).
    """
    if ce_scope not in CE_SCOPES:
        raise KDTutorError(f"lwf_loss: ce_scope must be one of {CE_SCOPES}, got {ce_scope!r}.")
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise ShapeMismatchError(
            f"lwf_loss: logits must be (B, K) and labels (B,), got {tuple(logits.shape)} and "
            f"{tuple(y.shape)}."
        )
    k = logits.shape[1]
    new_idx = _classes(new, k, "lwf_loss's new classes")
    old_idx = _classes(old, k, "lwf_loss's old classes")
    if ce_scope == "task" and len(new_idx) == 0:
        raise KDTutorError(
            "lwf_loss: new (this task's classes) is empty: list them (ce_scope='task')."
        )
    if set(new_idx.tolist()) & set(old_idx.tolist()):
        raise KDTutorError(
            f"lwf_loss: classes {sorted(set(new_idx.tolist()) & set(old_idx.tolist()))} are "
            "both old and new: a class belongs to one task."
        )
    if ce_scope == "task":
        position = torch.full((k,), -1, dtype=torch.int64, device=y.device)
        position[new_idx.to(y.device)] = torch.arange(len(new_idx), device=y.device)
        target = position[y]
        if (target < 0).any():
            stray = sorted(set(y[target < 0].tolist()))
            raise KDTutorError(
                f"lwf_loss: labels {stray} are not among this task's classes {new_idx.tolist()} "
                "(ce_scope='task'): list them in new, or with exemplars of old classes in the "
                "batch use ce_scope='all'."
            )
        ce = F.cross_entropy(logits.index_select(1, new_idx.to(logits.device)), target)
    else:
        ce = F.cross_entropy(logits, y)
    if len(old_idx) == 0:
        return ce
    if old_logits is None:
        raise KDTutorError(
            "lwf_loss: old classes given but no old_logits: pass the previous model's."
        )
    return ce + lamb * lwf_distillation(logits, old_logits, old_idx.tolist(), T)


def icarl_loss(logits: Tensor, old_logits: Tensor | None, y: Tensor, old: Sequence[int]) -> Tensor:
    r"""iCaRL's classification-plus-distillation loss, as its official code computes it
    (Rebuffi et al., 2017; ``main_cifar_100_theano.py``): one binary cross entropy over every
    output, on sigmoids, whose targets are the one-hot label for the non-old classes and the
    previous model's sigmoid outputs for the old ones:

    .. math::
        \mathcal{L} = -\frac{1}{BK} \sum_{i=1}^{B} \sum_{c=1}^{K}
            \big[t_{ic} \log \sigma(z_{ic}) + (1 - t_{ic}) \log(1 - \sigma(z_{ic}))\big],
        \quad t_{ic} = \begin{cases} \sigma(z^{o}_{ic}) & c \in \mathcal{O} \\
            [y_i = c] & \text{otherwise.} \end{cases}

    Reduction: mean over the batch and all :math:`K` outputs (the code's ``loss.mean()``; the
    paper's Eq. 1 writes a sum). Outputs of classes not seen yet have target 0, as in the code.

    Args:
        logits: the current model's logits ``(B, K)``.
        old_logits: the previous model's logits ``(B, K)``; ``None`` when ``old`` is empty.
        y: labels ``(B,)``.
        old: the classes learnt in earlier tasks.
    """
    if logits.ndim != 2 or y.shape != logits.shape[:1]:
        raise ShapeMismatchError(
            f"icarl_loss: logits must be (B, K) and labels (B,), got {tuple(logits.shape)} and "
            f"{tuple(y.shape)}."
        )
    old_idx = _classes(old, logits.shape[1], "icarl_loss's old classes").to(logits.device)
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    if len(old_idx):
        if old_logits is None:
            raise KDTutorError(
                "icarl_loss: old classes given but no old_logits: pass the previous model's."
            )
        _check_logits(logits, old_logits, "icarl_loss")
        target[:, old_idx] = torch.sigmoid(old_logits.detach().index_select(1, old_idx))
    return F.binary_cross_entropy_with_logits(logits, target)


def herding(features: Tensor, m: int) -> Tensor:
    r"""iCaRL's herding selection (Rebuffi et al., 2017, Algorithm 4), on L2-normalised
    features: with :math:`\mu` the mean of a class's normalised features
    :math:`\varphi(x)`, the :math:`k`-th exemplar is

    .. math::
        p_k = \operatorname*{arg\,min}_{x \notin \{p_1..p_{k-1}\}}
            \Big\| \mu - \frac1k \Big[\varphi(x) + \sum_{j=1}^{k-1} \varphi(p_j)\Big] \Big\|,

    so that the running mean of the exemplars stays closest to the class mean. The order is
    a priority: the first :math:`m'` rows are the herding choice for a smaller memory (the
    paper's ``ReduceExemplarSet``). Ties go to the lowest row. This is the paper's and FACIL's
    form (``HerdingExemplarsSelector``); the official Theano code ranks the rows by an
    equivalent-in-spirit greedy update :math:`w \leftarrow w + \mu - \varphi(p_k)`.

    Args:
        features: one class's features ``(N, D)`` (normalised here).
        m: how many exemplars to pick, ``1 <= m <= N``.

    Returns:
        int64 row indices ``(m,)``, in the order picked.
    """
    if features.ndim != 2:
        raise ShapeMismatchError(
            f"herding needs one class's features as (N, D), got shape {tuple(features.shape)}."
        )
    n = features.shape[0]
    if not 1 <= m <= n:
        raise KDTutorError(
            f"herding: cannot pick {m} exemplars from {n} samples: ask for 1..{n} (fewer "
            "exemplars per class, or more training images of the class)."
        )
    phi = F.normalize(features.detach().double(), dim=1)
    mu = phi.mean(0)
    total = torch.zeros_like(mu)
    taken = torch.zeros(n, dtype=torch.bool)
    picked: list[int] = []
    for k in range(1, m + 1):
        dist = (mu - (phi + total) / k).norm(dim=1)
        dist[taken] = float("inf")
        best = int(torch.argmin(dist))
        picked.append(best)
        taken[best] = True
        total = total + phi[best]
    return torch.tensor(picked, dtype=torch.int64)


def nme_scores(features: Tensor, class_means: Tensor) -> Tensor:
    r"""Scores of iCaRL's nearest-mean-of-exemplars classifier (Rebuffi et al., 2017,
    Algorithm 1): :math:`y^* = \arg\min_c \|\varphi(x) - \mu_c\|`, with :math:`\varphi(x)`
    L2-normalised (as the class means, which are means of normalised exemplar features,
    normalised again, as in the official code). Returns the negated squared distances
    :math:`s_{c} = -\|\varphi(x) - \mu_c\|^2`, ``(B, C)``, so that ``argmax`` is the nearest
    mean; a row of ``class_means`` that is all NaN (a class with no exemplars) never wins.

    Args:
        features: ``(B, D)`` features (normalised here).
        class_means: ``(C, D)`` class means (used as given).
    """
    if features.ndim != 2 or class_means.ndim != 2 or features.shape[1] != class_means.shape[1]:
        raise ShapeMismatchError(
            f"nme_scores needs features (B, D) and class means (C, D) of the same D, got "
            f"{tuple(features.shape)} and {tuple(class_means.shape)}."
        )
    phi = F.normalize(features, dim=1)
    d2 = (phi[:, None, :] - class_means[None, :, :]).pow(2).sum(-1)
    return torch.nan_to_num(-d2, nan=float("-inf"))

"""Losses of the online and self-distillation schemes: peers, branches, exits and ensembles.

Every function is pure (tensors in, tensors out). The soft targets a scheme builds from its
own networks are detached here, so that a peer is pulled towards its peers but never pulls
them: each network's gradient comes from its own loss only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError, UnknownNameError
from .response import kd_loss

__all__ = [
    "KDCL_ENSEMBLES",
    "byot_feature_loss",
    "ensemble_log_probs",
    "gated_ensemble",
    "kdcl_teacher_logits",
    "mutual_kl",
]

KDCL_ENSEMBLES: tuple[str, ...] = ("mean", "naive", "min_logit")
"""The soft targets :func:`kdcl_teacher_logits` can build from the peers' logits."""


def _check_same_shapes(logits: Sequence[Tensor], what: str) -> None:
    if len(logits) == 0:
        raise ValueError(f"{what}: got no logits; pass one (B, K) tensor per network.")
    first = tuple(logits[0].shape)
    if len(first) != 2:
        raise ShapeMismatchError(f"{what}: logits must be (B, K), got {first}.")
    for i, z in enumerate(logits[1:], start=2):
        if tuple(z.shape) != first:
            raise ShapeMismatchError(
                f"{what}: network 1's logits are {first} but network {i}'s are "
                f"{tuple(z.shape)}; every network must see the same batch and predict the "
                "same classes (build them with the same num_classes)."
            )


def ensemble_log_probs(logits: Sequence[Tensor]) -> Tensor:
    r"""Log-probabilities of the ensemble that averages its members' probabilities.

    .. math::
        \log \bar p(x) = \log \frac{1}{M} \sum_{m=1}^{M} \mathrm{softmax}(z_m(x))

    Averaging probabilities, not logits, is how Born-Again Networks (Furlanello et al.,
    2018), DML (Zhang et al., 2018) and most papers score an ensemble; the argmax of the
    result is the ensemble's prediction. Computed as a ``logsumexp`` of log-softmaxes, so it
    stays finite when one member is certain.

    Args:
        logits: ``M`` tensors of shape ``(B, K)``, one per member.

    Returns:
        ``(B, K)`` log-probabilities (each row's exponentials sum to 1).
    """
    _check_same_shapes(logits, "ensemble_log_probs")
    log_probs = torch.stack([F.log_softmax(z, dim=1) for z in logits])
    return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))


def mutual_kl(logits: Tensor, others: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    r"""Deep mutual learning's pull of one peer towards the others (Zhang et al., 2018).

    .. math::
        \mathcal{L}_{k} = \frac{1}{K-1} \sum_{l \ne k}
            \mathrm{KL}\big(p_l \,\|\, p_k\big), \qquad p = \mathrm{softmax}(z / T)

    times :math:`T^2` (1 at the paper's :math:`T = 1`). The other peers' logits are
    detached: peer :math:`k` learns from them, they do not learn from this term. The paper
    adds each peer's cross entropy with the labels to this term.

    Args:
        logits: ``(B, K)`` logits :math:`z_k` of the peer being trained.
        others: the ``K - 1`` other peers' ``(B, K)`` logits.
        temperature: :math:`T > 0` (the paper uses 1).

    Returns:
        A scalar tensor.
    """
    _check_same_shapes([logits, *others], "mutual_kl")
    if len(others) == 0:
        raise ValueError("mutual_kl needs at least one other peer; DML trains 2 or more.")
    terms = [kd_loss(logits, other.detach(), temperature) for other in others]
    return torch.stack(terms).mean()


def gated_ensemble(branch_logits: Tensor, gate: Tensor) -> Tensor:
    r"""ONE's on-the-fly teacher: the branches' logits weighted by the gate (Lan et al., 2018).

    .. math:: z_e(x) = \sum_{i=1}^{M} g_i(x)\, z_i(x), \qquad \sum_i g_i(x) = 1

    Args:
        branch_logits: ``(M, B, K)`` logits of the ``M`` branches.
        gate: ``(B, M)`` gate weights (a softmax over the branches, per image).

    Returns:
        ``(B, K)`` ensemble logits :math:`z_e`.
    """
    if branch_logits.dim() != 3:
        raise ShapeMismatchError(
            f"gated_ensemble: branch logits must be (M, B, K), got {tuple(branch_logits.shape)}."
        )
    branches, batch, _ = branch_logits.shape
    if tuple(gate.shape) != (batch, branches):
        raise ShapeMismatchError(
            f"gated_ensemble: the gate must be (B, M) = ({batch}, {branches}) for these "
            f"branch logits, got {tuple(gate.shape)}."
        )
    return torch.einsum("bm,mbk->bk", gate, branch_logits)


def kdcl_teacher_logits(
    logits: Sequence[Tensor], target: Tensor, mode: str = "min_logit"
) -> Tensor:
    r"""The soft target KDCL builds from its peers' logits (Guo et al., 2020), detached.

    ``"mean"``: the average of the peers' logits, :math:`z_t = \frac{1}{K}\sum_i z_i`.

    ``"naive"``: per image, the logits of the peer with the lowest cross entropy on the label,
    :math:`z_t(x) = z_{i^*}(x)`, :math:`i^* = \arg\min_i \mathrm{CE}(z_i(x), y)`.

    ``"min_logit"``: each peer's logits are shifted so that the label's logit is 0, and the
    teacher takes, class by class, the smallest shifted logit:

    .. math:: z_t^{c}(x) = \min_i \big(z_i^{c}(x) - z_i^{y}(x)\big)

    so the label's logit is 0 and every other class sits as far below it as the most
    confident peer puts it. Its true-class probability is therefore at least every peer's.
    (These definitions are our reading of section 3 of the paper; no official code exists.)

    Args:
        logits: ``K`` peers' ``(B, C)`` logits.
        target: ``(B,)`` integer labels.
        mode: one of :data:`KDCL_ENSEMBLES`.

    Returns:
        ``(B, C)`` teacher logits, without gradient.
    """
    _check_same_shapes(logits, "kdcl_teacher_logits")
    if mode not in KDCL_ENSEMBLES:
        raise UnknownNameError(
            f"unknown KDCL ensemble {mode!r}; choose one of {', '.join(KDCL_ENSEMBLES)}."
        )
    stacked = torch.stack([z.detach() for z in logits])  # (K, B, C)
    if tuple(target.shape) != (stacked.shape[1],):
        raise ShapeMismatchError(
            f"kdcl_teacher_logits: {stacked.shape[1]} images but target has shape "
            f"{tuple(target.shape)}; pass one label per image."
        )
    if mode == "mean":
        return stacked.mean(dim=0)
    if mode == "naive":
        ce = torch.stack([F.cross_entropy(z, target, reduction="none") for z in stacked])  # (K, B)
        best = ce.argmin(dim=0)  # (B,)
        return stacked[best, torch.arange(stacked.shape[1])]
    index = target.view(1, -1, 1).expand(stacked.shape[0], -1, 1)
    shifted = stacked - stacked.gather(2, index)
    return shifted.min(dim=0).values


def byot_feature_loss(feature: Tensor, target: Tensor, mode: str = "code") -> Tensor:
    r"""BYOT's hint from the deepest exit's features to a shallow exit's (Zhang et al., 2019).

    ``mode="paper"``: the squared distance averaged over the batch,
    :math:`\frac{1}{B}\sum_b \lVert F_i(x_b) - F_C(x_b) \rVert_2^2`.

    ``mode="code"`` (the published re-implementation's, whose weight :math:`\lambda = 10^{-6}`
    is the one quoted): the squared differences summed over the batch and the features,
    counting only the features where either vector is positive,

    .. math::
        \sum_b \sum_j \big(F_i - F_C\big)_{bj}^2 \;
            \mathbb{1}\big[(F_i)_{bj} > 0 \lor (F_C)_{bj} > 0\big].

    The target :math:`F_C` is detached: the hint shapes the shallow exit, not the deepest.

    Args:
        feature: ``(B, D)`` pooled features :math:`F_i` of a shallow exit.
        target: ``(B, D)`` pooled features :math:`F_C` of the deepest exit.
        mode: ``"code"`` or ``"paper"``.

    Returns:
        A scalar tensor.
    """
    if feature.shape != target.shape:
        raise ShapeMismatchError(
            f"byot_feature_loss: exit features {tuple(feature.shape)} and deepest features "
            f"{tuple(target.shape)} differ; the exit's bottleneck must output as many "
            "channels as the last stage."
        )
    target = target.detach()
    squared = (feature - target).pow(2)
    if mode == "paper":
        return squared.flatten(1).sum(dim=1).mean()
    if mode == "code":
        mask = (feature > 0) | (target > 0)
        return (squared * mask).sum()
    raise UnknownNameError(f"unknown BYOT feature-loss mode {mode!r}; choose 'code' or 'paper'.")

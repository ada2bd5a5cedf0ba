r"""Relation-based losses: they compare how samples relate to *each other* in the student and in
the teacher, not the samples' features one by one.

Pure functions of tensors (no modules, no training loop). Each takes a batch of student
features ``(B, ...)`` and the teacher's features of the same ``B`` samples (flattened to
``(B, D)`` where needed; student and teacher dimensions may differ unless said otherwise) and
returns a scalar. A batch of one sample has no relations: the losses are then zero. Most relations are ``B x B`` matrices, so none of these losses needs a
connector between the two networks.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError

__all__ = [
    "cc_correlation",
    "cc_loss",
    "crd_nce_from_scores",
    "crd_nce_loss",
    "irg_edges",
    "irg_losses",
    "momentum_update",
    "pairwise_distances",
    "pkt_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "sp_loss",
]


def _flat_pair(student: Tensor, teacher: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Flatten both to ``(B, D)`` and check that they hold the same number of samples."""
    if student.dim() < 2 or teacher.dim() < 2 or student.shape[0] != teacher.shape[0]:
        raise ShapeMismatchError(
            f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must be "
            "batches of the same samples, (B, ...) with the same B."
        )
    return student.flatten(1), teacher.flatten(1)


def pairwise_distances(x: Tensor, *, squared: bool = False, eps: float = 1e-12) -> Tensor:
    r"""Euclidean distances between the rows of ``x`` (``(B, D)``): a ``(B, B)`` matrix with an
    exact zero diagonal.

    Computed as :math:`\|x_i\|^2 + \|x_j\|^2 - 2\,x_i\cdot x_j`, clamped at ``eps`` before the
    square root so that the gradient stays finite where two rows coincide.
    """
    sq_norms = x.pow(2).sum(dim=1)
    sq = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.t())).clamp_min(eps)
    d = sq if squared else sq.sqrt()
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return d.masked_fill(eye, 0.0)


def _mean_normalized(d: Tensor, eps: float = 1e-12) -> Tensor:
    # d >= 0, so the sum over the positive entries is the sum over all (no host sync needed)
    mean = d.sum() / (d > 0).sum().clamp_min(1)
    return d / mean.clamp_min(eps)


def rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    r"""RKD's distance-wise loss (Park, Kim, Lu, Cho, 2019, *Relational Knowledge Distillation*).

    With :math:`\psi_D(t_i, t_j) = \|t_i - t_j\|_2 / \mu` and :math:`\mu` the mean of the
    non-zero (off-diagonal) pairwise distances of the batch,

    .. math::
        \mathcal{L}_{RKD\text{-}D} = \frac{1}{B^2} \sum_{i,j}
            \ell_\delta\big(\psi_D(s_i, s_j),\, \psi_D(t_i, t_j)\big),

    where :math:`\ell_\delta` is the Huber (smooth L1) loss with :math:`\delta = 1`. Dividing
    by :math:`\mu` makes the loss invariant to the scale of either embedding space, so the
    student matches the *shape* of the teacher's embedding, not its size.

    The paper sums over the pairs :math:`i \ne j`; like the authors' and RepDistiller's code we
    average over all :math:`B^2` entries (the diagonal contributes zero), which only rescales
    the weight (25 in both). The teacher's distances carry no gradient.
    """
    s, t = _flat_pair(student, teacher, "rkd_distance_loss")
    with torch.no_grad():
        t_d = _mean_normalized(pairwise_distances(t))
    s_d = _mean_normalized(pairwise_distances(s))
    return F.smooth_l1_loss(s_d, t_d)


def _angles(x: Tensor) -> Tensor:
    """``a[i, j, k]`` = cosine of the angle at ``x_i`` between ``x_j - x_i`` and ``x_k - x_i``
    (zero where ``j`` or ``k`` equals ``i``)."""
    diff = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2))


def rkd_angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
    r"""RKD's angle-wise loss (Park et al., 2019).

    For every triplet, the cosine of the angle at :math:`e_j` between the other two,

    .. math::
        \psi_A(e_i, e_j, e_k) = \Big\langle \frac{e_i - e_j}{\|e_i - e_j\|_2},
            \frac{e_k - e_j}{\|e_k - e_j\|_2} \Big\rangle, \qquad
        \mathcal{L}_{RKD\text{-}A} = \frac{1}{B^3} \sum_{i,j,k}
            \ell_\delta\big(\psi_A(s_i, s_j, s_k),\, \psi_A(t_i, t_j, t_k)\big).

    Angles do not change when an embedding is scaled, rotated or translated. As in the
    authors' and RepDistiller's code, the mean runs over all :math:`B^3` index triples, the
    degenerate ones (:math:`i = j` or :math:`k = j`) contributing zero; the paper's sum over
    distinct triplets differs only by a constant factor (absorbed in the weight 50). Memory grows
    as :math:`B^2 D`. The teacher's angles carry no gradient.
    """
    s, t = _flat_pair(student, teacher, "rkd_angle_loss")
    with torch.no_grad():
        t_a = _angles(t)
    return F.smooth_l1_loss(_angles(s), t_a)


def sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    r"""Similarity-preserving loss (Tung & Mori, 2019, *Similarity-Preserving Knowledge
    Distillation*).

    With :math:`F \in \mathbb{R}^{B \times D}` the flattened features (any :math:`D` on either
    side), :math:`G = F F^\top` and :math:`\tilde G` its rows divided by their L2 norms,

    .. math::
        \mathcal{L}_{SP} = \frac{1}{B^2}\, \big\|\tilde G_s - \tilde G_t\big\|_F^2 .

    The row normalisation makes it invariant to the scale of the features. Matches the paper
    and RepDistiller (weight 3000).
    """
    s, t = _flat_pair(student, teacher, "sp_loss")
    g_s = F.normalize(s @ s.t(), p=2, dim=1)
    g_t = F.normalize(t @ t.t(), p=2, dim=1)
    return (g_s - g_t).pow(2).sum() / s.shape[0] ** 2


def cc_correlation(features: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    r"""CC's correlation matrix: a Gaussian RBF kernel by its Taylor expansion (Peng et al.,
    2019, *Correlation Congruence for Knowledge Distillation*).

    The rows are first L2-normalised, so that
    :math:`\|f_i - f_j\|^2 = 2 - 2\, f_i \cdot f_j` and

    .. math::
        k(f_i, f_j) = e^{-\gamma \|f_i - f_j\|^2}
            = e^{-2\gamma}\, e^{2\gamma\, f_i \cdot f_j}
            \approx \sum_{p=0}^{P} e^{-2\gamma}\, \frac{(2\gamma)^p}{p!}\, (f_i \cdot f_j)^p .

    Args:
        features: ``(B, D)`` (or ``(B, ...)``, flattened).
        gamma: the kernel's :math:`\gamma > 0` (0.4 in the paper).
        order: :math:`P \ge 0`, the order of the expansion (2 in the paper).

    Returns:
        The ``(B, B)`` matrix.
    """
    if gamma <= 0 or order < 0:
        raise ValueError(f"cc_correlation needs gamma > 0 and order >= 0, got {gamma}, {order}.")
    f = F.normalize(features.flatten(1), p=2, dim=1)
    cos = f @ f.t()
    out = torch.zeros_like(cos)
    power = torch.ones_like(cos)
    for p in range(order + 1):
        out = out + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * power
        power = power * cos
    return out


def cc_loss(
    student: Tensor,
    teacher: Tensor,
    *,
    mode: Literal["paper", "code"] = "paper",
    gamma: float = 0.4,
    order: int = 2,
) -> Tensor:
    r"""Correlation congruence (Peng et al., 2019).

    ``mode="paper"``: the squared Frobenius distance between the batch's correlation matrices
    (:func:`cc_correlation`),

    .. math:: \mathcal{L}_{CC} = \frac{1}{B^2}\,\big\|\psi(F_s) - \psi(F_t)\big\|_F^2 .

    ``mode="code"``: what RepDistiller runs (code the CC authors sent to Tian et al.) and what
    the published CIFAR-100 numbers of RepDistiller's table used: with
    :math:`\delta_i = |f^s_i - f^t_i|` (element-wise, equal dimensions needed),

    .. math:: \mathcal{L} = \frac{1}{B-1}\sum_{i=1}^{B-1} \delta_i \cdot \delta_{i+1},

    a product of the errors of *consecutive* samples of the batch rather than a kernel
    correlation. Gradients flow into both arguments (CC trains an embedding on each side).
    """
    s, t = _flat_pair(student, teacher, "cc_loss")
    if mode == "paper":
        diff = cc_correlation(s, gamma, order) - cc_correlation(t, gamma, order)
        return diff.pow(2).sum() / s.shape[0] ** 2
    if mode == "code":
        if s.shape != t.shape:
            raise ShapeMismatchError(
                f"cc_loss(mode='code') compares features element-wise: student {tuple(s.shape)} "
                f"and teacher {tuple(t.shape)} differ. Embed both to the same dimension."
            )
        if s.shape[0] < 2:  # no consecutive pair: nothing to match (e.g. a last batch of one)
            return s.sum() * 0.0
        delta = (s - t).abs()
        return (delta[:-1] * delta[1:]).sum(dim=1).mean()
    raise ValueError(f"cc_loss mode must be 'paper' or 'code', got {mode!r}.")


def _pkt_conditional(x: Tensor, eps: float) -> Tensor:
    x = x / (x.norm(dim=1, keepdim=True) + eps)
    sim = (x @ x.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    r"""Probabilistic knowledge transfer (Passalis & Tefas, 2018, *Learning Deep Representations
    with Probabilistic Knowledge Transfer*).

    Cosine similarities mapped to :math:`[0, 1]` define conditional probabilities

    .. math::
        p_{j|i} = \frac{(1 + \cos(t_i, t_j))/2}{\sum_k (1 + \cos(t_i, t_k))/2}, \qquad
        q_{j|i} \text{ likewise from the student},

    and the loss is their KL divergence, averaged over all :math:`B^2` pairs as in the
    authors' code (and RepDistiller, weight 30000):

    .. math::
        \mathcal{L}_{PKT} = \frac{1}{B^2}\sum_{i,j} p_{j|i}\,
            \log\frac{p_{j|i} + \epsilon}{q_{j|i} + \epsilon}, \qquad \epsilon = 10^{-7}.

    The paper writes the plain sum over :math:`i, j` (:math:`B^2` times larger); with the mean,
    the loss is :math:`\frac{1}{B}` times the per-anchor KL averaged over the batch. The sum over
    ``j`` includes :math:`j = i`, as in the code. The teacher's side carries no gradient.
    """
    s, t = _flat_pair(student, teacher, "pkt_loss")
    with torch.no_grad():
        p = _pkt_conditional(t, eps)
    q = _pkt_conditional(s, eps)
    return (p * torch.log((p + eps) / (q + eps))).mean()


def crd_nce_loss(
    anchor: Tensor,
    positive: Tensor,
    negatives: Tensor,
    z: float | Tensor,
    n_data: int,
    temperature: float = 0.07,
) -> Tensor:
    r"""CRD's NCE objective for one direction (Tian, Krishnan, Isola, 2020, *Contrastive
    Representation Distillation*, eq. 18).

    With unit-norm vectors, the unnormalised model probability of a pair is
    :math:`P(v, m) = \exp(v \cdot m / \tau) / Z`, and with :math:`K` negatives drawn uniformly
    (:math:`P_n = 1 / N`) the posterior that a pair is the positive one is
    :math:`h(v, m) = P(v, m) / (P(v, m) + K P_n)`. The loss, averaged over the batch, is

    .. math::
        \mathcal{L} = -\frac{1}{B}\sum_{b}\Big[\log h(v_b, m_b^+)
            + \sum_{k=1}^{K} \log\big(1 - h(v_b, m_{b,k}^-)\big)\Big].

    It is computed in log space (:math:`\log h = \log P - \operatorname{logaddexp}(\log P,
    \log K P_n)`), which never overflows; RepDistiller computes :math:`P` itself and adds
    :math:`10^{-7}` to the denominators, a negligible difference.

    Args:
        anchor: ``(B, D)`` embeddings :math:`v` (gradients flow through them).
        positive: ``(B, D)`` memory-bank rows of the same samples, :math:`m^+`.
        negatives: ``(B, K, D)`` memory-bank rows of other samples, :math:`m^-`.
        z: the normalisation constant :math:`Z > 0`.
        n_data: :math:`N`, the number of training samples (rows of the memory bank).
        temperature: :math:`\tau` (0.07 in the paper).
    """
    if anchor.shape != positive.shape or negatives.dim() != 3:
        raise ShapeMismatchError(
            f"crd_nce_loss: anchor {tuple(anchor.shape)}, positive {tuple(positive.shape)} and "
            f"negatives {tuple(negatives.shape)} must be (B, D), (B, D) and (B, K, D)."
        )
    pos = (anchor * positive).sum(dim=1)
    neg = torch.einsum("bd,bkd->bk", anchor, negatives)
    return crd_nce_from_scores(pos, neg, z, n_data, temperature)


def crd_nce_from_scores(
    positive_scores: Tensor,
    negative_scores: Tensor,
    z: float | Tensor,
    n_data: int,
    temperature: float = 0.07,
) -> Tensor:
    r""":func:`crd_nce_loss` from the dot products: ``positive_scores`` :math:`v_b \cdot m_b^+`
    ``(B,)`` and ``negative_scores`` :math:`v_b \cdot m_{b,k}^-` ``(B, K)``."""
    k = negative_scores.shape[1]
    if k < 1 or n_data < 1:
        raise ValueError(f"crd needs K >= 1 negatives and n_data >= 1, got {k} and {n_data}.")
    log_z = torch.log(
        torch.as_tensor(z, dtype=positive_scores.dtype, device=positive_scores.device)
    )
    log_noise = math.log(k / n_data)
    pos = positive_scores / temperature - log_z
    neg = negative_scores / temperature - log_z
    noise = torch.full_like(neg, log_noise)
    log_h_pos = pos - torch.logaddexp(pos, noise[:, 0])
    log_1mh_neg = log_noise - torch.logaddexp(neg, noise)
    return -(log_h_pos + log_1mh_neg.sum(dim=1)).mean()


@torch.no_grad()
def momentum_update(rows: Tensor, new: Tensor, momentum: float = 0.5) -> Tensor:
    r"""The memory-bank update of instance discrimination and CRD:
    :math:`m \leftarrow \frac{\mu\, m + (1 - \mu)\, v}{\|\mu\, m + (1 - \mu)\, v\|_2}`
    (momentum :math:`\mu` = 0.5 in CRD). Returns the new unit-norm rows (no gradient)."""
    return F.normalize(momentum * rows + (1.0 - momentum) * new.detach().to(rows.dtype), dim=1)


def irg_edges(features: Tensor, eps: float = 1e-12) -> Tensor:
    r"""IRG's edge matrix (Liu et al., 2019, *Knowledge Distillation via Instance Relationship
    Graph*): squared Euclidean distances between the samples of the batch, divided by their
    maximum, :math:`A_{ij} = \|f_i - f_j\|^2 / \max_{kl} \|f_k - f_l\|^2 \in [0, 1]`, as in
    the authors' Caffe layer (``BatchEuclideanMap``)."""
    d = pairwise_distances(features.flatten(1), squared=True, eps=eps)
    return d / (d.max() + eps)


def irg_losses(
    student_embedding: Tensor,
    teacher_embedding: Tensor,
    student_logits: Tensor,
    teacher_logits: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The three unweighted parts of the instance relationship graph loss (Liu et al., 2019).

    The graph of a layer has the samples as vertices and :func:`irg_edges` as edges. We build it
    on two layers, the pooled embedding :math:`e` and the logits :math:`z`:

    .. math::
        \mathcal{L}_V = \mathrm{MSE}(z_s, z_t), \qquad
        \mathcal{L}_E = \mathrm{MSE}(A(e_s), A(e_t)) + \mathrm{MSE}(A(z_s), A(z_t)), \\
        \mathcal{L}_T = \mathrm{MSE}\big(A(z_s) - A(e_s),\; A(z_t) - A(e_t)\big).

    :math:`\mathcal{L}_V` is the paper's vertex (logits) loss; :math:`\mathcal{L}_E` its edge
    loss on two layers. :math:`\mathcal{L}_T` is our form of the paper's *IRG transformation*:
    the paper measures, per sample, the squared distance between its features at two layers of
    the same width (vertex transformation) and found the edge transformation unnecessary; the
    embedding and the logits have different widths, so we match instead how the graph's edges
    change from the embedding to the logits (an edge transformation). Means replace the
    paper's sums (a rescaling of the weights). The student's embedding and logits may differ
    in width from the teacher's except the logits, which must match.

    Returns:
        ``(vertex, edge, transform)``, scalars.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ShapeMismatchError(
            f"irg_losses: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; build both with the same num_classes."
        )
    es, et = _flat_pair(student_embedding, teacher_embedding, "irg_losses")
    a_es, a_zs = irg_edges(es), irg_edges(student_logits)
    with torch.no_grad():
        a_et, a_zt = irg_edges(et), irg_edges(teacher_logits)
    vertex = F.mse_loss(student_logits, teacher_logits.detach())
    edge = F.mse_loss(a_es, a_et) + F.mse_loss(a_zs, a_zt)
    transform = F.mse_loss(a_zs - a_es, a_zt - a_et)
    return vertex, edge, transform

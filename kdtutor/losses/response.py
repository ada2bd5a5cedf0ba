"""Response-based losses: they compare the student's and the teacher's outputs (logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ShapeMismatchError


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ShapeMismatchError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ. Teacher and student must predict the same "
            "classes: build both with the same num_classes."
        )
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}. Hinton et al. use T in 1..20; try T=4."
        )


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    *,
    scale_by_t2: bool = True,
) -> Tensor:
    r"""Hinton's distillation loss between softened teacher and student distributions.

    .. math::
        \mathcal{L}_{KD} = T^2 \, \frac{1}{B} \sum_{i=1}^{B}
            \mathrm{KL}\big(p^T_t(x_i) \,\|\, p^T_s(x_i)\big),
        \qquad p^T = \mathrm{softmax}(z / T).

    The KL divergence is summed over classes and averaged over the batch ("batchmean"),
    not over elements (averaging over elements divides by the number of classes too: a
    frequent bug). The :math:`T^2` factor keeps the gradient's scale roughly independent
    of :math:`T`, because the gradient of the softened KL shrinks as :math:`1/T^2`.

    Paper: Hinton, Vinyals, Dean (2015), *Distilling the Knowledge in a Neural Network*.

    Args:
        student_logits: ``(B, K)`` student logits :math:`z_s`.
        teacher_logits: ``(B, K)`` teacher logits :math:`z_t` (no gradient needed).
        temperature: :math:`T > 0`.
        scale_by_t2: multiply by :math:`T^2` (the paper's advice); ``False`` gives the raw KL.

    Returns:
        A scalar tensor.
    """
    _check_logits(student_logits, teacher_logits, temperature)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2 if scale_by_t2 else kl


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    r"""Cross entropy against a probability vector, averaged over the batch.

    .. math:: \mathcal{L} = -\frac{1}{B}\sum_i \sum_k q_{ik} \log \mathrm{softmax}(z_i)_k
    """
    if logits.shape != target_probs.shape:
        raise ShapeMismatchError(
            f"logits {tuple(logits.shape)} and target probabilities {tuple(target_probs.shape)} differ."
        )
    return -(target_probs * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float = 4.0,
) -> tuple[Tensor, Tensor]:
    r"""The two parts of decoupled knowledge distillation: TCKD and NCKD.

    With :math:`b = [p_y, 1 - p_y]` the binary target/non-target split of the softened
    distribution and :math:`\hat p` the distribution over the non-target classes alone,

    .. math::
        \mathrm{TCKD} = T^2\,\frac{1}{B}\sum_i \mathrm{KL}(b_t \| b_s), \qquad
        \mathrm{NCKD} = T^2\,\frac{1}{B}\sum_i \mathrm{KL}(\hat p_t \| \hat p_s),

    and per sample the classical KD loss decomposes exactly as
    :math:`\mathrm{KL}(p_t\|p_s) = \mathrm{KL}(b_t\|b_s) + (1 - p_{t,y})\,\mathrm{KL}(\hat p_t\|\hat p_s)`:
    KD couples NCKD to the teacher's confidence, which DKD removes by weighting the two
    terms independently (:math:`\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}`).

    Paper: Zhao, Cui, Song, Qiu, Liang (2022), *Decoupled Knowledge Distillation*.

    Returns:
        ``(tckd, nckd)``, both scalars, unweighted (the Distiller applies alpha, beta and warm-up).
    """
    _check_logits(student_logits, teacher_logits, temperature)
    target_mask = F.one_hot(target, student_logits.shape[1]).bool()
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    b_s = torch.stack([p_s[target_mask], 1 - p_s[target_mask]], dim=1).clamp_min(1e-12)
    b_t = torch.stack([p_t[target_mask], 1 - p_t[target_mask]], dim=1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean()
    masked = float("-inf")
    log_hat_s = F.log_softmax(
        (student_logits / temperature).masked_fill(target_mask, masked), dim=1
    )
    log_hat_t = F.log_softmax(
        (teacher_logits / temperature).masked_fill(target_mask, masked), dim=1
    )
    terms = log_hat_t.exp() * (log_hat_t - log_hat_s)
    nckd = terms.masked_fill(target_mask, 0.0).sum(1).mean()
    return tckd * temperature**2, nckd * temperature**2


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation between matching rows of ``a`` and ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0
) -> tuple[Tensor, Tensor]:
    r"""DIST's inter-class and intra-class relation losses.

    With :math:`P^s, P^t \in \mathbb{R}^{B\times K}` the softened predictions and
    :math:`\rho` the Pearson correlation,

    .. math::
        \mathcal{L}_{inter} = T^2\Big(1 - \frac{1}{B}\sum_i \rho(P^s_{i,:}, P^t_{i,:})\Big),\qquad
        \mathcal{L}_{intra} = T^2\Big(1 - \frac{1}{K}\sum_k \rho(P^s_{:,k}, P^t_{:,k})\Big).

    Matching correlations instead of exact probabilities relaxes KD's KL to a relation the
    student can meet even when the teacher is much stronger.

    Paper: Huang, You, Wang, Qian, Xu (2022), *Knowledge Distillation from A Stronger Teacher*.

    Returns:
        ``(inter, intra)``, both scalars, unweighted.
    """
    _check_logits(student_logits, teacher_logits, temperature)
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    inter = 1 - _pearson_rows(p_s, p_t).mean()
    intra = 1 - _pearson_rows(p_s.t(), p_t.t()).mean()
    return inter * temperature**2, intra * temperature**2


def tfkd_reg_loss(
    student_logits: Tensor,
    target: Tensor,
    correct_prob: float = 0.99,
    temperature: float = 20.0,
    *,
    soften_student: bool = False,
) -> Tensor:
    r"""Tf-KD's regularisation term: KL from a hand-made "virtual teacher" to the student.

    The virtual teacher puts :math:`a` on the true class and spreads the rest evenly,
    :math:`p^d(k) = a` if :math:`k = y` else :math:`(1 - a)/(K - 1)`; it is then softened
    *as if it were logits*, :math:`p^d_\tau = \mathrm{softmax}(p^d / \tau)`, exactly as in the
    authors' code, and

    .. math::
        \mathcal{L}_{reg} = \frac{1}{B}\sum_i \mathrm{KL}\big(p^d_\tau(x_i)\,\|\,
            \mathrm{softmax}(z_s(x_i) / \tau_s)\big)

    with :math:`\tau_s = 1` (the code) or :math:`\tau_s = \tau` (``soften_student=True``, the
    paper's :math:`p_\tau`). Because :math:`p^d` lies in :math:`[0, 1]`, the softened target is
    close to uniform at large :math:`\tau` (true class :math:`\approx 0.105` for :math:`K = 10`,
    :math:`a = 0.99`, :math:`\tau = 20`): in practice a label-smoothing-like pull towards
    uniform. The authors' ``KLDivLoss`` averaged over all :math:`B K` elements and multiplied by
    a per-model ``multiplier``; we average over the batch only ("batchmean"), so their
    ``multiplier`` corresponds to ours times :math:`K`.

    Paper: Yuan, Tay, Li, Wang, Feng (2020), *Revisiting Knowledge Distillation via Label
    Smoothing Regularization* (CVPR).
    """
    if not 0.0 < correct_prob <= 1.0:
        raise ValueError(f"correct_prob must be in (0, 1], got {correct_prob}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    k = student_logits.shape[1]
    if k < 2:
        raise ShapeMismatchError("tfkd_reg_loss needs at least 2 classes.")
    virtual = torch.full_like(student_logits, (1.0 - correct_prob) / (k - 1))
    virtual.scatter_(1, target.view(-1, 1), correct_prob)
    log_target = F.log_softmax(virtual / temperature, dim=1)
    scale = temperature if soften_student else 1.0
    log_p_student = F.log_softmax(student_logits / scale, dim=1)
    return F.kl_div(log_p_student, log_target, reduction="batchmean", log_target=True)

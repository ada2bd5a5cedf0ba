r"""Chapter 2 (principles) coursework: check a learner's implementation of Hinton's KD loss.

>>> import torch.nn.functional as F
>>> def my_kd_loss(zs, zt, T):
...     log_ps = F.log_softmax(zs / T, dim=1)
...     pt = F.softmax(zt / T, dim=1)
...     return F.kl_div(log_ps, pt, reduction="batchmean") * T**2
>>> check_kd_loss(my_kd_loss)  # doctest: +ELLIPSIS
✓ ... your KD loss matches the reference ...
True

The reference is written here from scratch in float64 (explicit log-sum-exp, explicit sum
over classes and mean over the batch), independently of :func:`kdtutor.losses.kd_loss`:

.. math::
    \mathcal{L}_{KD} = T^2 \, \frac{1}{B} \sum_{i=1}^{B} \sum_{k=1}^{K}
        p^T_{t,ik} \big(\log p^T_{t,ik} - \log p^T_{s,ik}\big),
    \qquad p^T = \mathrm{softmax}(z / T),

and so is its gradient, :math:`\partial \mathcal{L}_{KD} / \partial z_s = T\,(p^T_s - p^T_t) / B`.
When a learner's values disagree, the checker tries the classic mistakes (a missing
:math:`T^2`, ``reduction="mean"``, the KL the wrong way round, a softmax without the
temperature, cross-entropy instead of KL, probabilities given to ``F.kl_div``, and
combinations of these) and names the one that reproduces the learner's numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .engine import LossCheck, mistakes_from, run_check

__all__ = ["KDLossCheckError", "check_kd_loss", "reference_kd_loss"]

KDLossFn = Callable[[Tensor, Tensor, float], Tensor]

RTOL = 1e-4
ATOL = 1e-6


class KDLossCheckError(AssertionError):
    """Raised by :func:`check_kd_loss` when the learner's loss is wrong; the message says why."""


@dataclass(frozen=True)
class _Case:
    batch: int
    classes: int
    T: float
    student_scale: float
    teacher_scale: float
    hard: bool = False  # extreme logits

    def describe(self) -> str:
        kind = "extreme logits, " if self.hard else ""
        return f"({kind}batch {self.batch}, {self.classes} classes, T={self.T:g})"

    def inputs(self, index: int) -> tuple[Tensor, Tensor, float]:
        gen = torch.Generator().manual_seed(1000 + index)
        zs = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        zt = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        return zs * self.student_scale, zt * self.teacher_scale, self.T


_CASES: tuple[_Case, ...] = (
    _Case(1, 10, 1.0, 2.0, 2.0),
    _Case(7, 10, 2.0, 2.0, 3.0),
    _Case(32, 10, 4.0, 3.0, 5.0),
    _Case(64, 10, 20.0, 3.0, 8.0),
    _Case(16, 5, 3.5, 1.0, 4.0),
    _Case(8, 100, 10.0, 2.0, 6.0),
    _Case(4, 3, 1.0, 1.0, 1.0),
    # extreme logits: naive log(softmax(...)) underflows to log(0) = -inf here
    _Case(16, 10, 1.0, 100.0, 100.0, hard=True),
    _Case(8, 10, 2.0, 1.0, 300.0, hard=True),
)


def _log_softmax(z: Tensor) -> Tensor:
    """log softmax over dim 1 by the explicit log-sum-exp trick (float64)."""
    shifted = z - z.max(dim=1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


def reference_kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float) -> Tensor:
    """The KD loss computed from scratch in float64 (see the module docstring)."""
    zs, zt = student_logits.double(), teacher_logits.double()
    log_ps, log_pt = _log_softmax(zs / T), _log_softmax(zt / T)
    per_sample = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)
    return T**2 * per_sample.sum() / zs.shape[0]


def _reference_grad(zs: Tensor, zt: Tensor, T: float) -> Tensor:
    """d L_KD / d z_s = T (p_s - p_t) / B, in closed form."""
    ps, pt = _log_softmax(zs.double() / T).exp(), _log_softmax(zt.double() / T).exp()
    return T * (ps - pt) / zs.shape[0]


# ----------------------------------------------------------------------------------------------
# the classic mistakes, as variants of the reference
# ----------------------------------------------------------------------------------------------
_HINTS = {
    ("factor", "1"): (
        "the T² factor is missing: multiply the KL by T**2. The gradient of the softened KL "
        "shrinks like 1/T², and T² restores its scale (Hinton et al., 2015)."
    ),
    ("factor", "T"): "you multiply by T; the factor is T**2 (T squared).",
    ("reduction", "mean"): (
        "the KL is averaged over every element (reduction='mean'), which also divides by the "
        "number of classes K (your value is off by a factor of K): sum over classes and "
        "average over the batch, i.e. reduction='batchmean'."
    ),
    ("reduction", "sum"): (
        "the KL is summed over the batch (reduction='sum'): divide by the batch size, "
        "i.e. reduction='batchmean'."
    ),
    ("direction", "student||teacher"): (
        "the KL direction is swapped: you compute KL(p_student || p_teacher), but distillation "
        "uses KL(p_teacher || p_student), the teacher's distribution as the target. With "
        "F.kl_div the first argument is the student's log-probabilities and the second the "
        "teacher's probabilities."
    ),
    ("temperature", "none"): (
        "the softmax is taken without the temperature: divide both the student's and the "
        "teacher's logits by T before the softmax."
    ),
    ("temperature", "teacher only"): (
        "only the teacher's logits are divided by T: soften the student's softmax with the "
        "same T (softmax(student_logits / T))."
    ),
    ("temperature", "student only"): (
        "only the student's logits are divided by T: soften the teacher's softmax with the "
        "same T (softmax(teacher_logits / T))."
    ),
    ("kind", "cross-entropy"): (
        "you compute the cross-entropy -sum p_t log p_s, not the KL divergence: it is larger "
        "by the teacher's entropy. The gradients agree (the entropy does not depend on the "
        "student), but the KL is zero when the student matches the teacher; subtract "
        "sum p_t log p_t, or use F.kl_div."
    ),
    ("kind", "probabilities into kl_div"): (
        "F.kl_div expects log-probabilities as its first argument: pass "
        "F.log_softmax(student_logits / T, dim=1), not the softmax."
    ),
}


@dataclass(frozen=True)
class _Variant:
    """One way of computing the loss; the defaults are the correct way."""

    # in the order the hints list the errors
    kind: str = "kl"
    direction: str = "teacher||student"
    temperature: str = "both"
    reduction: str = "batchmean"
    factor: str = "T2"

    def value(self, zs: Tensor, zt: Tensor, T: float) -> Tensor:
        ts = T if self.temperature in ("both", "student only") else 1.0
        tt = T if self.temperature in ("both", "teacher only") else 1.0
        log_ps, log_pt = _log_softmax(zs / ts), _log_softmax(zt / tt)
        if self.direction == "teacher||student":
            log_target, log_input = log_pt, log_ps
        else:
            log_target, log_input = log_ps, log_pt
        target = log_target.exp()
        if self.kind == "kl":
            elementwise = target * (log_target - log_input)
        elif self.kind == "cross-entropy":
            elementwise = -target * log_input
        else:  # F.kl_div(probabilities, target): target * (log target - probabilities)
            elementwise = target * (log_target - log_input.exp())
        total = elementwise.sum()
        batch, classes = zs.shape
        divisor = {"batchmean": batch, "mean": batch * classes, "sum": 1}[self.reduction]
        factor = {"T2": T**2, "1": 1.0, "T": T}[self.factor]
        return factor * total / divisor


# ----------------------------------------------------------------------------------------------
# the check
# ----------------------------------------------------------------------------------------------
_CHECK = LossCheck(
    name="check_kd_loss",
    error=KDLossCheckError,
    call="fn(student_logits, teacher_logits, T)",
    cases=_CASES,
    reference=reference_kd_loss,
    reference_grad=_reference_grad,
    rtol=RTOL,
    atol=ATOL,
    mistakes=mistakes_from(
        _Variant(),
        _HINTS,
        factor=("T2", "1", "T"),
        reduction=("batchmean", "mean", "sum"),
        direction=("teacher||student", "student||teacher"),
        temperature=("both", "none", "teacher only", "student only"),
        kind=("kl", "cross-entropy", "probabilities into kl_div"),
    ),
    mistake_kind="classic",
    loss="the KD loss",
    in_place=(
        "your function changed its input tensors in place (e.g. `zs /= T`); compute new tensors "
        "instead (`zs / T`)."
    ),
    per_sample_hint=(
        " It looks like one value per sample (reduction='none'): average over the batch."
    ),
    unmatched=(
        "the values match none of the classic mistakes. Check each step: divide both logits by "
        "T, take log_softmax of the student and softmax of the teacher, sum "
        "p_t * (log p_t - log p_s) over classes, average over the batch, multiply by T**2."
    ),
    ordinary="logits",
    hard_hint=(
        "The computation is numerically unstable: log(softmax(z)) underflows to log(0) = -inf "
        "when logits differ by more than about 100. Use F.log_softmax (and F.kl_div, which "
        "treats 0 * log 0 as 0) instead of taking the log of a softmax."
    ),
    student="the student's logits",
    gradient_cases=range(1, 4),
    success=(
        f"your KD loss matches the reference on {len(_CASES)} cases (batch 1 to 64, 3 to 100 "
        "classes, T from 1 to 20, extreme logits included), and so does its gradient."
    ),
)


def check_kd_loss(fn: KDLossFn, *, raise_on_failure: bool = True, verbose: bool = True) -> bool:
    r"""Check a learner's ``fn(student_logits, teacher_logits, T)`` against the KD loss.

    ``fn`` must return a scalar tensor, differentiable with respect to ``student_logits``,
    equal to :math:`T^2 \cdot \frac{1}{B}\sum_i \mathrm{KL}(p^T_t \| p^T_s)`. It is called on
    several float32 cases (batch sizes 1 to 64, 3 to 100 classes, T from 1 to 20, and
    extreme logits where a naive ``log(softmax(...))`` underflows). Values are compared
    with an independent float64 reference (relative tolerance ``1e-4``) and so are the
    gradients. On a mismatch the message names the classic mistake that reproduces the
    numbers, when one does.

    Args:
        fn: The learner's loss function.
        raise_on_failure: Raise :class:`KDLossCheckError` with the explanation (default);
            with ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).

    Raises:
        KDLossCheckError: The loss is wrong (the message says how), unless
            ``raise_on_failure=False``.
    """
    return run_check(fn, _CHECK, raise_on_failure=raise_on_failure, verbose=verbose)

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

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .messages import report_failure, scalar_loss_problem, within, wrap_message

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
    extreme: bool = False

    def describe(self) -> str:
        kind = "extreme logits, " if self.extreme else ""
        return f"({kind}batch {self.batch}, {self.classes} classes, T={self.T:g})"


_CASES: tuple[_Case, ...] = (
    _Case(1, 10, 1.0, 2.0, 2.0),
    _Case(7, 10, 2.0, 2.0, 3.0),
    _Case(32, 10, 4.0, 3.0, 5.0),
    _Case(64, 10, 20.0, 3.0, 8.0),
    _Case(16, 5, 3.5, 1.0, 4.0),
    _Case(8, 100, 10.0, 2.0, 6.0),
    _Case(4, 3, 1.0, 1.0, 1.0),
    # extreme logits: naive log(softmax(...)) underflows to log(0) = -inf here
    _Case(16, 10, 1.0, 100.0, 100.0, extreme=True),
    _Case(8, 10, 2.0, 1.0, 300.0, extreme=True),
)


def _make_inputs(case: _Case, index: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1000 + index)
    zs = torch.randn(case.batch, case.classes, generator=gen, dtype=torch.float64)
    zt = torch.randn(case.batch, case.classes, generator=gen, dtype=torch.float64)
    return zs * case.student_scale, zt * case.teacher_scale


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
_FACTORS = ("T2", "1", "T")
_REDUCTIONS = ("batchmean", "mean", "sum")
_DIRECTIONS = ("teacher||student", "student||teacher")
_TEMPERATURES = ("both", "none", "teacher only", "student only")
_KINDS = ("kl", "cross-entropy", "probabilities into kl_div")

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
    factor: str = "T2"
    reduction: str = "batchmean"
    direction: str = "teacher||student"
    temperature: str = "both"
    kind: str = "kl"

    def bugs(self) -> list[tuple[str, str]]:
        correct = _Variant()
        return [
            (field, getattr(self, field))
            for field in ("kind", "direction", "temperature", "reduction", "factor")
            if getattr(self, field) != getattr(correct, field)
        ]

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


_VARIANTS: list[_Variant] = sorted(
    (
        _Variant(f, r, d, t, k)
        for f, r, d, t, k in itertools.product(
            _FACTORS, _REDUCTIONS, _DIRECTIONS, _TEMPERATURES, _KINDS
        )
    ),
    key=lambda v: len(v.bugs()),
)


# ----------------------------------------------------------------------------------------------
# the check
# ----------------------------------------------------------------------------------------------
def _fail(message: str, raise_on_failure: bool) -> bool:
    return report_failure("check_kd_loss", message, KDLossCheckError, raise_on_failure)


def _close(got: float, expected: float) -> bool:
    return within(got, expected, atol=ATOL, rtol=RTOL)


def _call(fn: KDLossFn, zs: Tensor, zt: Tensor, T: float) -> Tensor:
    return fn(zs, zt, T)


def _diagnose(got: list[float], cases: list[tuple[_Case, Tensor, Tensor]]) -> str | None:
    """Name the simplest variant reproducing every value, or ``None``."""
    for variant in _VARIANTS[1:]:
        if all(
            _close(g, float(variant.value(zs, zt, case.T)))
            for g, (case, zs, zt) in zip(got, cases, strict=True)
        ):
            hints = [_HINTS[bug] for bug in variant.bugs()]
            if len(hints) == 1:
                return f"your loss reproduces a classic mistake: {hints[0]}"
            listed = "\n".join(f"  {n}. {h}" for n, h in enumerate(hints, 1))
            return f"your loss reproduces {len(hints)} classic mistakes at once:\n{listed}"
    return None


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
    cases = [(case, *_make_inputs(case, i)) for i, case in enumerate(_CASES)]
    got: list[float] = []
    for case, zs, zt in cases:
        zs32, zt32 = zs.float(), zt.float()
        zs_in, zt_in = zs32.clone(), zt32.clone()
        try:
            out = _call(fn, zs_in, zt_in, case.T)
        except Exception as exc:  # the learner's code may raise anything
            return _fail(
                f"calling fn(student_logits, teacher_logits, T) on {case.describe()} raised "
                f"{type(exc).__name__}: {exc}",
                raise_on_failure,
            )
        if not torch.equal(zs_in, zs32) or not torch.equal(zt_in, zt32):
            return _fail(
                "your function changed its input tensors in place (e.g. `zs /= T`); compute "
                "new tensors instead (`zs / T`).",
                raise_on_failure,
            )
        problem = scalar_loss_problem(
            out,
            case.describe(),
            per_sample=(case.batch,),
            per_sample_hint=" It looks like one value per sample (reduction='none'): average "
            "over the batch.",
        )
        if problem is not None:
            return _fail(problem, raise_on_failure)
        got.append(float(out.detach().double()))

    expected = [float(reference_kd_loss(zs, zt, case.T)) for case, zs, zt in cases]
    normal = [i for i, (case, _, _) in enumerate(cases) if not case.extreme]
    wrong_normal = [i for i in normal if not _close(got[i], expected[i])]
    if wrong_normal:
        diagnosis = _diagnose([got[i] for i in normal], [cases[i] for i in normal])
        i = wrong_normal[0]
        detail = (
            f"on {cases[i][0].describe()} it returned {got[i]:.6g}, the KD loss is "
            f"{expected[i]:.6g} (ratio {got[i] / expected[i]:.4g})."
            if expected[i] != 0
            else f"on {cases[i][0].describe()} it returned {got[i]:.6g}, expected {expected[i]:.6g}."
        )
        if diagnosis is None:
            diagnosis = (
                "the values match none of the classic mistakes. Check each step: divide both "
                "logits by T, take log_softmax of the student and softmax of the teacher, sum "
                "p_t * (log p_t - log p_s) over classes, average over the batch, multiply by T**2."
            )
        return _fail(f"{diagnosis}\n  For example, {detail}", raise_on_failure)

    wrong_extreme = [
        i for i in range(len(cases)) if i not in normal and not _close(got[i], expected[i])
    ]
    if wrong_extreme:
        i = wrong_extreme[0]
        return _fail(
            f"correct on ordinary logits, but on {cases[i][0].describe()} it returned {got[i]:.6g} "
            f"instead of {expected[i]:.6g}. The computation is numerically unstable: log(softmax(z)) "
            "underflows to log(0) = -inf when logits differ by more than about 100. Use "
            "F.log_softmax (and F.kl_div, which treats 0 * log 0 as 0) instead of taking the log "
            "of a softmax.",
            raise_on_failure,
        )

    for case, zs, zt in cases[1:4]:
        zs_in = zs.float().requires_grad_(True)
        out = _call(fn, zs_in, zt.float(), case.T)
        if not out.requires_grad:
            return _fail(
                "the loss is not differentiable with respect to the student's logits (no "
                "gradient flows back): avoid .detach(), .item(), .numpy() and torch.no_grad() on "
                "the student's side.",
                raise_on_failure,
            )
        (grad,) = torch.autograd.grad(out.sum(), zs_in)
        ref = _reference_grad(zs, zt, case.T)
        if not torch.allclose(grad.double(), ref, rtol=1e-3, atol=1e-6):
            return _fail(
                f"the values are right but the gradient with respect to the student's logits is "
                f"not, on {case.describe()} (max error {float((grad.double() - ref).abs().max()):.3g}). "
                "Do not detach any part of the student's computation.",
                raise_on_failure,
            )

    if verbose:
        print(
            wrap_message(
                f"✓ check_kd_loss: your KD loss matches the reference on {len(cases)} cases "
                "(batch 1 to 64, 3 to 100 classes, T from 1 to 20, extreme logits included), "
                "and so does its gradient. Well done!"
            )
        )
    return True

r"""Chapter 3 (response-based knowledge) coursework: check a learner's DKD loss.

Decoupled knowledge distillation (Zhao et al., 2022) splits Hinton's KD loss into a
*target-class* term (TCKD) and a *non-target-class* term (NCKD). A learner writes
``my_dkd(student_logits, teacher_logits, target, T)`` returning ``(tckd, nckd)`` and runs

>>> from kdtutor.losses import dkd_loss
>>> check_dkd_loss(dkd_loss)  # doctest: +ELLIPSIS
✓ check_dkd_loss: ... TCKD and NCKD match the reference ...
True

The reference is written here from scratch in float64, independently of
:func:`kdtutor.losses.dkd_loss`. With :math:`p^T = \mathrm{softmax}(z / T)`, :math:`y` the true
class, :math:`b = [p^T_y,\ 1 - p^T_y]` the binary target/non-target split and :math:`\hat p` the
distribution over the non-target classes alone (:math:`\hat p_k = p^T_k / (1 - p^T_y)`,
:math:`k \ne y`),

.. math::
    \mathrm{TCKD} = T^2\,\frac{1}{B}\sum_i \mathrm{KL}(b_{t,i} \| b_{s,i}), \qquad
    \mathrm{NCKD} = T^2\,\frac{1}{B}\sum_i \mathrm{KL}(\hat p_{t,i} \| \hat p_{s,i}).

Both are computed from log-sum-exps of the logits (:math:`\log(1 - p_y)` as the log-sum-exp
of the non-target logits minus that of all logits), so the reference stays exact when the
teacher is certain. When a learner's values disagree, the checker looks at each term on its
own and tries the typical mistakes (a missing :math:`T^2`, the KL the wrong way round, no
temperature, an element-wise mean, and for NCKD: probabilities not renormalised over the
non-target classes, the target class left in, the target's logit set to 0 instead of removed,
NCKD weighted by :math:`1 - p_{t,y}` as in KD), and names the one that reproduces the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .engine import LossCheck, Outcome, find_mistake, mistakes_from, run_check
from .messages import scalar_pair

__all__ = ["DKDLossCheckError", "check_dkd_loss", "reference_dkd_loss"]

DKDLossFn = Callable[[Tensor, Tensor, Tensor, float], Sequence[Tensor]]

RTOL = 1e-4
ATOL = 1e-5


class DKDLossCheckError(AssertionError):
    """Raised by :func:`check_dkd_loss` when the learner's loss is wrong; the message says why."""


@dataclass(frozen=True)
class _Case:
    batch: int
    classes: int
    T: float
    student_scale: float
    teacher_scale: float
    teacher_margin: float = 0.0  # added to the teacher's target logit
    hard: bool = False  # a certain teacher

    def describe(self) -> str:
        kind = "a certain teacher, " if self.hard else ""
        return f"({kind}batch {self.batch}, {self.classes} classes, T={self.T:g})"

    def inputs(self, index: int) -> tuple[Tensor, Tensor, Tensor, float]:
        gen = torch.Generator().manual_seed(2000 + index)
        zs = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        zt = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        y = torch.randint(self.classes, (self.batch,), generator=gen)
        zs, zt = zs * self.student_scale, zt * self.teacher_scale
        zt[torch.arange(self.batch), y] += self.teacher_margin
        return zs, zt, y, self.T


_CASES: tuple[_Case, ...] = (
    _Case(1, 10, 1.0, 2.0, 2.0),
    _Case(7, 10, 2.0, 2.0, 3.0, teacher_margin=2.0),
    _Case(32, 10, 4.0, 3.0, 5.0, teacher_margin=4.0),
    _Case(64, 10, 20.0, 3.0, 8.0),
    _Case(16, 5, 3.5, 1.0, 4.0, teacher_margin=1.0),
    _Case(8, 100, 10.0, 2.0, 6.0, teacher_margin=5.0),
    _Case(4, 3, 1.0, 1.0, 1.0),
    # the teacher is certain: 1 - p_t,target is exactly 0 in float32, so dividing by it
    # (p / (1 - p_y)) or taking log(1 - p_y) without care gives nan or inf
    _Case(16, 10, 1.0, 2.0, 2.0, teacher_margin=60.0, hard=True),
    _Case(8, 10, 2.0, 1.0, 100.0, teacher_margin=400.0, hard=True),
)


# ----------------------------------------------------------------------------------------------
# the reference and its variants (the typical mistakes), all in float64
# ----------------------------------------------------------------------------------------------
def _lse(z: Tensor, keep: Tensor | None = None) -> Tensor:
    """log-sum-exp over dim 1 (of the entries where ``keep`` is True), shape ``(B, 1)``."""
    if keep is not None:
        z = z.masked_fill(~keep, float("-inf"))
    top = z.max(dim=1, keepdim=True).values
    return top + (z - top).exp().sum(dim=1, keepdim=True).log()


def _kl_rows(log_p: Tensor, log_q: Tensor, keep: Tensor | None = None) -> Tensor:
    """Per-row KL(p || q) summed over the entries where ``keep`` is True (0 log 0 = 0)."""
    terms = log_p.exp() * (log_p - log_q)
    terms = torch.where(log_p == float("-inf"), torch.zeros_like(terms), terms)
    if keep is not None:
        terms = terms.masked_fill(~keep, 0.0)
    return terms.sum(dim=1)


@dataclass(frozen=True)
class _Variant:
    """One way of computing a term; the default fields are the correct computation."""

    # in the order the hints list the errors
    kind: str  # TCKD: "binary" (correct), "full"; NCKD: "renormalised" (correct), ...
    direction: str = "teacher||student"
    temperature: str = "both"
    reduction: str = "batchmean"
    factor: str = "T2"

    def value(self, zs: Tensor, zt: Tensor, y: Tensor, T: float) -> Tensor:
        tau = T if self.temperature == "both" else 1.0
        zs, zt = zs.double() / tau, zt.double() / tau
        batch, classes = zs.shape
        target = torch.nn.functional.one_hot(y, classes).bool()
        other = ~target
        if self.direction == "student||teacher":
            first, second = zs, zt
        else:
            first, second = zt, zs
        count = 2 if self.kind == "binary" else classes  # entries per row for reduction="mean"
        if self.kind == "binary":
            per_row = _binary_kl(first, second, target)
        elif self.kind in ("full", "zeroed target, all classes", "zeroed target, non-target"):
            if self.kind != "full":
                first, second = first.masked_fill(target, 0.0), second.masked_fill(target, 0.0)
            keep = other if self.kind == "zeroed target, non-target" else None
            per_row = _kl_rows(first - _lse(first), second - _lse(second), keep)
        elif self.kind == "not renormalised":
            per_row = _kl_rows(first - _lse(first), second - _lse(second), other)
        else:  # "renormalised" (correct) and "weighted by 1 - p_t,y" (KD's coupling)
            log_hat_first = first - _lse(first, other)
            log_hat_second = second - _lse(second, other)
            per_row = _kl_rows(
                log_hat_first.masked_fill(target, float("-inf")),
                log_hat_second.masked_fill(target, 0.0),
            )
            if self.kind == "weighted by 1 - p_t,y":  # the teacher's non-target mass
                per_row = per_row * (_lse(zt, other) - _lse(zt)).exp().squeeze(1)
        divisor = {"batchmean": batch, "mean": batch * count, "sum": 1}[self.reduction]
        factor = {"T2": T**2, "1": 1.0, "T": T}[self.factor]
        return factor * per_row.sum() / divisor


def _binary_kl(first: Tensor, second: Tensor, target: Tensor) -> Tensor:
    """Per-row KL([p_y, 1 - p_y] of ``first`` || that of ``second``), from log-sum-exps."""

    def log_b(z: Tensor) -> Tensor:
        total = _lse(z)
        return torch.cat([_lse(z, target) - total, _lse(z, ~target) - total], dim=1)

    return _kl_rows(log_b(first), log_b(second))


def reference_dkd_loss(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, T: float
) -> tuple[Tensor, Tensor]:
    """``(tckd, nckd)`` computed from scratch in float64 (see the module docstring)."""
    tckd = _Variant("binary").value(student_logits, teacher_logits, target, T)
    nckd = _Variant("renormalised").value(student_logits, teacher_logits, target, T)
    return tckd, nckd


# ----------------------------------------------------------------------------------------------
# the typical mistakes and their hints
# ----------------------------------------------------------------------------------------------
def _hints(term: str) -> dict[tuple[str, str], str]:
    """What to say about each error in ``term`` ("TCKD" or "NCKD")."""
    count = "2 (the two entries of b)" if term == "TCKD" else "the number of classes K"
    return {
        ("factor", "1"): f"{term} lacks the T² factor: multiply it by T**2, as in KD.",
        ("factor", "T"): f"{term} is multiplied by T; the factor is T**2 (T squared).",
        ("direction", "student||teacher"): (
            f"{term}'s KL is the wrong way round: you compute KL(student || teacher), "
            "distillation uses KL(teacher || student), the teacher's distribution as the target."
        ),
        ("temperature", "none"): (
            f"{term} uses the softmax without the temperature: divide both the student's and the "
            "teacher's logits by T first."
        ),
        ("reduction", "mean"): (
            f"{term} is averaged over every element (reduction='mean'), which also divides it by "
            f"{count}: sum over the classes and average over the batch only ('batchmean')."
        ),
        ("reduction", "sum"): (
            f"{term} is summed over the batch: divide by the batch size ('batchmean')."
        ),
        ("kind", "full"): (
            f"Your {term} is the whole KD divergence KL(p_t || p_s) over all K classes. "
            + (
                "TCKD compares only the binary split b = [p_target, 1 - p_target] of the two "
                "distributions."
                if term == "TCKD"
                else "NCKD leaves the target class out: it compares the distributions among "
                "the K - 1 non-target classes, renormalised to sum to 1."
            )
        ),
        ("kind", "not renormalised"): (
            "NCKD sums p_t,k log(p_t,k / p_s,k) over the non-target classes with the full "
            "softmax's probabilities. Renormalise them over the non-target classes first "
            "(p̂_k = p_k / (1 - p_target)), or, more stably, take log_softmax of the logits with "
            "the target's logit masked to -inf."
        ),
        ("kind", "zeroed target, all classes"): (
            "NCKD sets the target's logit to 0 instead of removing the target class: a logit of "
            "0 is still a class with probability exp(0). Mask it with -inf (masked_fill(mask, "
            "float('-inf'))), or subtract a large number as Zhao et al. do, before log_softmax, "
            "and leave the target's term out of the sum."
        ),
        ("kind", "zeroed target, non-target"): (
            "NCKD sets the target's logit to 0 before the softmax instead of removing the "
            "target class: a logit of 0 is still a class with probability exp(0), so the "
            "non-target probabilities do not sum to 1. Mask it with -inf (or subtract a large "
            "number, as Zhao et al. do) before log_softmax."
        ),
        ("kind", "weighted by 1 - p_t,y"): (
            "NCKD is multiplied by the teacher's non-target mass 1 - p_t,target. That weight is "
            "exactly how KD couples the two terms (KL = TCKD + (1 - p_t,target) NCKD); DKD's NCKD "
            "is the plain KL between the renormalised non-target distributions, and DKD weights "
            "it with its own beta instead."
        ),
    }


# the errors either term can make, beside its own kinds of computation
_COMMON_ERRORS = {
    "factor": ("T2", "1", "T"),
    "direction": ("teacher||student", "student||teacher"),
    "temperature": ("both", "none"),
    "reduction": ("batchmean", "mean", "sum"),
}
_MISTAKES = {
    "TCKD": mistakes_from(
        _Variant("binary"), _hints("TCKD"), kind=("binary", "full"), **_COMMON_ERRORS
    ),
    "NCKD": mistakes_from(
        _Variant("renormalised"),
        _hints("NCKD"),
        kind=(
            "renormalised",
            "not renormalised",
            "full",
            "zeroed target, all classes",
            "zeroed target, non-target",
            "weighted by 1 - p_t,y",
        ),
        **_COMMON_ERRORS,
    ),
}

_STEPS = {
    "TCKD": (
        "TCKD: from p = softmax(z / T), form b = [p_target, 1 - p_target] for the teacher and "
        "the student, sum b_t * (log b_t - log b_s) over the two entries, average over the "
        "batch, multiply by T**2."
    ),
    "NCKD": (
        "NCKD: mask the target's logit with -inf, take log_softmax(z / T) of the rest for the "
        "teacher and the student, sum p̂_t * (log p̂_t - log p̂_s) over the non-target classes, "
        "average over the batch, multiply by T**2."
    ),
}


# ----------------------------------------------------------------------------------------------
# the check: two terms, each diagnosed on its own
# ----------------------------------------------------------------------------------------------
_TERMS = ("TCKD", "NCKD")
_NAMES = ("tckd", "nckd")


def _unpack(out: object, case: _Case) -> tuple[Tensor, Tensor] | str:
    """The two scalar tensors, or the reason they are not."""
    return scalar_pair(
        out, _NAMES, case.describe(), purpose="the two terms separately", noun="term",
        batch=case.batch,
    )  # fmt: skip


def _explain_wrong(check: LossCheck, ordinary: Sequence[Outcome]) -> str:
    """The terms swapped, or each wrong term's mistake and its worst case."""
    close = check.close
    if all(close(o.got[0], o.expected[1]) and close(o.got[1], o.expected[0]) for o in ordinary):
        return (
            "the two terms are right but in the wrong order: return (tckd, nckd), the "
            "target-class term first."
        )
    wrong = {
        term: [o for o in ordinary if not close(o.got[j], o.expected[j])]
        for j, term in enumerate(_TERMS)
    }
    bad_terms = [term for term in _TERMS if wrong[term]]
    header = {
        ("TCKD",): "TCKD is wrong (NCKD is right):",
        ("NCKD",): "NCKD is wrong (TCKD is right):",
        ("TCKD", "NCKD"): "both terms are wrong:",
    }[tuple(bad_terms)]
    messages = [header]
    for n, term in enumerate(bad_terms, 1):
        j = _TERMS.index(term)
        mistake = find_mistake(
            _MISTAKES[term], [o.got[j] for o in ordinary], [o.inputs for o in ordinary], close
        )
        if mistake is None:
            diagnosis = (
                f"{term} matches none of the typical mistakes; check each step. " + _STEPS[term]
            )
        elif len(mistake.hints) == 1:
            diagnosis = mistake.hints[0]
        else:
            diagnosis = f"{term} has {len(mistake.hints)} mistakes at once: " + " ".join(
                f"({k}) {h}" for k, h in enumerate(mistake.hints, 1)
            )
        worst = max(
            wrong[term],
            key=lambda o: abs(o.got[j] - o.expected[j]) / (abs(o.expected[j]) + ATOL),
        )
        detail = (
            f"on {worst.case.describe()} it is {worst.got[j]:.6g}, the reference "
            f"{worst.expected[j]:.6g}"
        )
        messages.append(f"  {n}. {diagnosis} (For example, {detail}.)")
    return "\n".join(messages)


def _explain_hard(check: LossCheck, outcome: Outcome) -> str:
    values = ", ".join(
        f"{term} {got:.6g} instead of {expected:.6g}"
        for term, got, expected in zip(_TERMS, outcome.got, outcome.expected, strict=True)
        if not check.close(got, expected)
    )
    return (
        f"correct on ordinary {check.ordinary}, but with {outcome.case.describe()} you return "
        f"{values}. {check.hard_hint}"
    )


_CHECK = LossCheck(
    name="check_dkd_loss",
    error=DKDLossCheckError,
    call="fn(student_logits, teacher_logits, target, T)",
    cases=_CASES,
    reference=reference_dkd_loss,
    rtol=RTOL,
    atol=ATOL,
    terms=("tckd", "nckd"),
    read_output=_unpack,
    explain_wrong=_explain_wrong,
    explain_hard=_explain_hard,
    in_place=(
        "your function changed its input tensors in place (e.g. `zs /= T` or `z[mask] = ...`); "
        "compute new tensors instead (`zs / T`, `z.masked_fill(...)`)."
    ),
    ordinary="logits",
    hard_hint=(
        "When the teacher is certain, 1 - p_target is exactly 0 in float32: dividing by it "
        "(p / (1 - p_target)) gives 0/0 = nan, and log(1 - p_target) is -inf. Compute NCKD's "
        "distributions with log_softmax over the non-target logits (target masked to -inf), and "
        "clamp b before its log (b.clamp_min(1e-12)) or compute log(1 - p_target) from the "
        "logits."
    ),
    student="the student's logits",
    gradient_cases=range(1, 4),
    success=(
        f"your TCKD and NCKD match the reference on {len(_CASES)} cases (batch 1 to 64, 3 to 100 "
        "classes, T from 1 to 20, a certain teacher included), and so does their gradient."
    ),
)


def check_dkd_loss(fn: DKDLossFn, *, raise_on_failure: bool = True, verbose: bool = True) -> bool:
    r"""Check a learner's ``fn(student_logits, teacher_logits, target, T) -> (tckd, nckd)``.

    Both terms must be scalar tensors, differentiable with respect to ``student_logits``,
    unweighted (no DKD ``alpha``/``beta``, no warm-up) and multiplied by :math:`T^2` (see the
    module docstring). ``fn`` is called on float32 cases with batch sizes 1 to 64, 3 to 100
    classes, :math:`T` from 1 to 20, and a teacher so certain that :math:`1 - p_{t,y}` is 0 in
    float32. Values are compared with an independent float64 reference (relative tolerance
    ``1e-4``) and so is the gradient of ``tckd + nckd``. On a mismatch the message names the
    typical mistake that reproduces the numbers, term by term, when one does.

    Args:
        fn: The learner's function.
        raise_on_failure: Raise :class:`DKDLossCheckError` with the explanation (default); with
            ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).
    """
    return run_check(fn, _CHECK, raise_on_failure=raise_on_failure, verbose=verbose)

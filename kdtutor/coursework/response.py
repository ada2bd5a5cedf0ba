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

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .messages import report_failure, within, wrap_message

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
    extreme: bool = False

    def describe(self) -> str:
        kind = "a certain teacher, " if self.extreme else ""
        return f"({kind}batch {self.batch}, {self.classes} classes, T={self.T:g})"


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
    _Case(16, 10, 1.0, 2.0, 2.0, teacher_margin=60.0, extreme=True),
    _Case(8, 10, 2.0, 1.0, 100.0, teacher_margin=400.0, extreme=True),
)


def _make_inputs(case: _Case, index: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(2000 + index)
    zs = torch.randn(case.batch, case.classes, generator=gen, dtype=torch.float64)
    zt = torch.randn(case.batch, case.classes, generator=gen, dtype=torch.float64)
    y = torch.randint(case.classes, (case.batch,), generator=gen)
    zs, zt = zs * case.student_scale, zt * case.teacher_scale
    zt[torch.arange(case.batch), y] += case.teacher_margin
    return zs, zt, y


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

    kind: str  # tckd: "binary", "full"; nckd: see _NCKD_KINDS
    factor: str = "T2"
    direction: str = "teacher||student"
    temperature: str = "both"
    reduction: str = "batchmean"

    def bugs(self, correct_kind: str) -> list[tuple[str, str]]:
        found = [("kind", self.kind)] if self.kind != correct_kind else []
        defaults = {
            "direction": "teacher||student",
            "temperature": "both",
            "reduction": "batchmean",
            "factor": "T2",
        }
        return found + [
            (name, getattr(self, name))
            for name, default in defaults.items()
            if getattr(self, name) != default
        ]

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


_TCKD_KINDS = ("binary", "full")
_NCKD_KINDS = (
    "renormalised",
    "not renormalised",
    "full",
    "zeroed target, all classes",
    "zeroed target, non-target",
    "weighted by 1 - p_t,y",
)


def _variants(kinds: Sequence[str]) -> list[_Variant]:
    every = [
        _Variant(k, f, d, t, r)
        for k, f, d, t, r in itertools.product(
            kinds,
            ("T2", "1", "T"),
            ("teacher||student", "student||teacher"),
            ("both", "none"),
            ("batchmean", "mean", "sum"),
        )
    ]
    return sorted(every, key=lambda v: len(v.bugs(kinds[0])))


_TERMS = {
    "TCKD": ("binary", _variants(_TCKD_KINDS)),
    "NCKD": ("renormalised", _variants(_NCKD_KINDS)),
}


def reference_dkd_loss(
    student_logits: Tensor, teacher_logits: Tensor, target: Tensor, T: float
) -> tuple[Tensor, Tensor]:
    """``(tckd, nckd)`` computed from scratch in float64 (see the module docstring)."""
    tckd = _Variant("binary").value(student_logits, teacher_logits, target, T)
    nckd = _Variant("renormalised").value(student_logits, teacher_logits, target, T)
    return tckd, nckd


# ----------------------------------------------------------------------------------------------
# the hints
# ----------------------------------------------------------------------------------------------
def _hint(term: str, bug: tuple[str, str]) -> str:
    count = "2 (the two entries of b)" if term == "TCKD" else "the number of classes K"
    hints = {
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
    return hints[bug]


def _diagnose_term(term: str, got: list[float], cases: list[tuple]) -> str | None:
    correct_kind, variants = _TERMS[term]
    for variant in variants[1:]:
        if all(
            _close(g, float(variant.value(zs, zt, y, case.T)))
            for g, (case, zs, zt, y) in zip(got, cases, strict=True)
        ):
            hints = [_hint(term, bug) for bug in variant.bugs(correct_kind)]
            if len(hints) == 1:
                return hints[0]
            return f"{term} has {len(hints)} mistakes at once: " + " ".join(
                f"({n}) {h}" for n, h in enumerate(hints, 1)
            )
    return None


# ----------------------------------------------------------------------------------------------
# the check
# ----------------------------------------------------------------------------------------------
def _close(got: float, expected: float) -> bool:
    return within(got, expected, atol=ATOL, rtol=RTOL)


def _fail(message: str, raise_on_failure: bool) -> bool:
    return report_failure("check_dkd_loss", message, DKDLossCheckError, raise_on_failure)


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


def _unpack(out: object, case: _Case) -> tuple[Tensor, Tensor] | str:
    """The two scalar tensors, or the reason they are not."""
    if isinstance(out, Tensor) or not isinstance(out, tuple | list) or len(out) != 2:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else repr(out)
        return f"fn must return a pair (tckd, nckd), the two terms separately; it returned {what[:80]}."
    for name, value in zip(("tckd", "nckd"), out, strict=True):
        if not isinstance(value, Tensor):
            return (
                f"{name} is a {type(value).__name__}, not a torch.Tensor: keep both terms tensors "
                "(no .item() or float()) so that they can be back-propagated."
            )
        if value.numel() != 1:
            hint = (
                " It looks like one value per sample: average over the batch."
                if tuple(value.shape) == (case.batch,)
                else ""
            )
            return (
                f"{name} has shape {tuple(value.shape)} on {case.describe()}; each term must be a "
                f"single number (a scalar tensor).{hint}"
            )
    return out[0], out[1]


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
    cases = [(case, *_make_inputs(case, i)) for i, case in enumerate(_CASES)]
    got: list[tuple[float, float]] = []
    for case, zs, zt, y in cases:
        zs32, zt32 = zs.float(), zt.float()
        zs_in, zt_in, y_in = zs32.clone(), zt32.clone(), y.clone()
        try:
            out = fn(zs_in, zt_in, y_in, case.T)
        except Exception as exc:  # the learner's code may raise anything
            return _fail(
                f"calling fn(student_logits, teacher_logits, target, T) on {case.describe()} "
                f"raised {type(exc).__name__}: {exc}",
                raise_on_failure,
            )
        if not (torch.equal(zs_in, zs32) and torch.equal(zt_in, zt32) and torch.equal(y_in, y)):
            return _fail(
                "your function changed its input tensors in place (e.g. `zs /= T` or "
                "`z[mask] = ...`); compute new tensors instead (`zs / T`, `z.masked_fill(...)`).",
                raise_on_failure,
            )
        terms = _unpack(out, case)
        if isinstance(terms, str):
            return _fail(terms, raise_on_failure)
        got.append((float(terms[0].detach().double()), float(terms[1].detach().double())))

    expected = [
        tuple(float(v) for v in reference_dkd_loss(zs, zt, y, case.T)) for case, zs, zt, y in cases
    ]
    normal = [i for i, (case, *_) in enumerate(cases) if not case.extreme]
    wrong = {
        term: [i for i in normal if not _close(got[i][j], expected[i][j])]
        for j, term in enumerate(("TCKD", "NCKD"))
    }
    if wrong["TCKD"] or wrong["NCKD"]:
        swapped = all(
            _close(got[i][0], expected[i][1]) and _close(got[i][1], expected[i][0]) for i in normal
        )
        if swapped:
            return _fail(
                "the two terms are right but in the wrong order: return (tckd, nckd), the "
                "target-class term first.",
                raise_on_failure,
            )
        bad_terms = [term for term in ("TCKD", "NCKD") if wrong[term]]
        header = {
            ("TCKD",): "TCKD is wrong (NCKD is right):",
            ("NCKD",): "NCKD is wrong (TCKD is right):",
            ("TCKD", "NCKD"): "both terms are wrong:",
        }[tuple(bad_terms)]
        messages = [header]
        for n, term in enumerate(bad_terms, 1):
            j = ("TCKD", "NCKD").index(term)
            values = [got[i][j] for i in normal]
            diagnosis = _diagnose_term(term, values, [cases[i] for i in normal])
            i = max(
                wrong[term],
                key=lambda k: abs(got[k][j] - expected[k][j]) / (abs(expected[k][j]) + ATOL),
            )
            detail = (
                f"on {cases[i][0].describe()} it is {got[i][j]:.6g}, the reference "
                f"{expected[i][j]:.6g}"
            )
            if diagnosis is None:
                diagnosis = (
                    f"{term} matches none of the typical mistakes; check each step. " + _STEPS[term]
                )
            messages.append(f"  {n}. {diagnosis} (For example, {detail}.)")
        return _fail("\n".join(messages), raise_on_failure)

    for i in range(len(cases)):
        if i in normal:
            continue
        bad = [
            term for j, term in enumerate(("TCKD", "NCKD")) if not _close(got[i][j], expected[i][j])
        ]
        if bad:
            values = ", ".join(
                f"{term} {got[i][j]:.6g} instead of {expected[i][j]:.6g}"
                for j, term in enumerate(("TCKD", "NCKD"))
                if term in bad
            )
            return _fail(
                f"correct on ordinary logits, but with {cases[i][0].describe()} you return "
                f"{values}. When the teacher is certain, 1 - p_target is exactly 0 in float32: "
                "dividing by it (p / (1 - p_target)) gives 0/0 = nan, and log(1 - p_target) is "
                "-inf. Compute NCKD's distributions with log_softmax over the non-target logits "
                "(target masked to -inf), and clamp b before its log (b.clamp_min(1e-12)) or "
                "compute log(1 - p_target) from the logits.",
                raise_on_failure,
            )

    for case, zs, zt, y in cases[1:4]:
        zs_in = zs.float().requires_grad_(True)
        tckd, nckd = fn(zs_in, zt.float(), y, case.T)
        total = tckd + nckd
        if not total.requires_grad:
            return _fail(
                "the terms are not differentiable with respect to the student's logits (no "
                "gradient flows back): avoid .detach(), .item(), .numpy() and torch.no_grad() on "
                "the student's side.",
                raise_on_failure,
            )
        (grad,) = torch.autograd.grad(total, zs_in)
        zs_ref = zs.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(sum(reference_dkd_loss(zs_ref, zt, y, case.T)), zs_ref)
        if not torch.allclose(grad.double(), ref, rtol=1e-3, atol=1e-6):
            error = float((grad.double() - ref).abs().max())
            return _fail(
                f"the values are right but the gradient of tckd + nckd with respect to the "
                f"student's logits is not, on {case.describe()} (max error {error:.3g}). Do not "
                "detach any part of the student's computation.",
                raise_on_failure,
            )

    if verbose:
        print(
            wrap_message(
                f"✓ check_dkd_loss: your TCKD and NCKD match the reference on {len(cases)} cases "
                "(batch 1 to 64, 3 to 100 classes, T from 1 to 20, a certain teacher included), "
                "and so does their gradient. Well done!"
            )
        )
    return True

"""The checking engine the loss checkers share.

A checker *describes* what it checks in a :class:`LossCheck`: its cases, the reference, the
classic mistakes (each a variant of the reference, with the hints that name it), the tolerance
and the words of its messages. :func:`run_check` does the same steps for every checker:

1. call the learner's ``fn`` on float32 copies of each case's inputs: it must not raise, must
   leave its inputs as they are and must return a scalar tensor;
2. compare its values with the reference on the ordinary cases; when they disagree, name the
   simplest classic mistake that reproduces all of them, and show one case;
3. compare them on the hard cases (extreme logits, a certain teacher, an all-zero feature map),
   where a naive implementation underflows or divides by zero;
4. compare the gradient with respect to the student's input with the reference's, on a few
   cases;
5. on the first failure raise ``check.error`` with the explanation (or print it and return
   ``False``); else print a line of success and return ``True``.

A loss of several terms (DKD's ``(tckd, nckd)``) brings its own ``read_output``,
``explain_wrong`` and ``explain_hard``; the steps stay the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import torch
from torch import Tensor

from .messages import report_failure, scalar_loss_problem, within, wrap_message

__all__ = ["Case", "LossCheck", "Mistake", "Outcome", "find_mistake", "mistakes_from", "run_check"]


class Case(Protocol):
    """One call of the learner's function (each checker has its own kind of case)."""

    @property
    def batch(self) -> int: ...

    @property
    def hard(self) -> bool:
        """A case where a naive implementation breaks: compared after the ordinary ones."""

    def inputs(self, index: int) -> tuple[Any, ...]:
        """The arguments of ``fn`` for the ``index``-th case (its tensors in float64)."""

    def describe(self) -> str:
        """How the messages name the case, e.g. ``(batch 7, 10 classes, T=2)``."""


@dataclass(frozen=True)
class Mistake:
    """A classic mistake: what it computes, and a hint for each error it makes."""

    value: Callable[..., Tensor | float]  # on a case's inputs (tensors in float64)
    hints: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What the learner's function returned on one case, beside the reference."""

    case: Case
    inputs: tuple[Any, ...]  # float64, as the case made them
    got: tuple[float, ...]  # one value per term of the loss
    expected: tuple[float, ...]
    right: bool


@dataclass(frozen=True, kw_only=True)
class LossCheck:
    """What a checker checks, step by step; :func:`run_check` checks it."""

    name: str  # "check_kd_loss": every message starts with it
    error: type[AssertionError]
    cases: Sequence[Case]
    reference: Callable[..., Tensor | tuple[Tensor, ...]]  # on a case's inputs, in float64
    rtol: float
    atol: float
    # 1. calling fn
    call: str  # the call as messages write it: "fn(student_logits, teacher_logits, T)"
    explain_error: Callable[[Case, Exception], str] | None = None  # after "raised TypeError: "
    in_place: str  # what to say when fn changes its inputs
    per_sample_hint: str = ""  # added when fn returns one value per sample
    scalar_advice: str = "."  # ends "the loss must be a single number (a scalar tensor)"
    # 2. the values on the ordinary cases
    mistakes: Sequence[Mistake] = ()  # simplest first: the first that reproduces them is named
    mistake_kind: str = "typical"  # as in "your loss reproduces a typical mistake"
    loss: str = "the loss"  # as in "it returned 0.5, the loss is 0.25"
    unmatched_hint: Callable[[Sequence[Case]], str | None] | None = None  # from the wrong cases
    unmatched: str = ""  # what to say when the values match no mistake (and no hint)
    # 3. the hard cases
    ordinary: str  # "logits", as in "correct on ordinary logits, but on ..."
    hard_hint: str  # why a naive implementation fails on the hard cases
    also_right: Callable[..., Tensor] | None = None  # another right value there
    finite_gradient_on_hard_cases: bool = False
    # 4. the gradient
    student: str  # "the student's logits": the gradient is taken with respect to it
    gradient_cases: range = range(3)  # the indices of the cases whose gradient is compared
    reference_grad: Callable[..., Tensor] | None = None  # autograd of the reference if None
    grads_agree: Callable[[Tensor, Tensor], bool] | None = None  # rtol 1e-3, atol 1e-6 if None
    no_gradient_note: str = ""
    wrong_gradient_note: str = ""
    # 5. success
    success: str
    # a loss of several terms reads them and explains what is wrong in its own words
    terms: tuple[str, ...] = ("loss",)
    read_output: Callable[[object, Case], tuple[Tensor, ...] | str] | None = None
    explain_wrong: Callable[[LossCheck, Sequence[Outcome]], str] | None = None
    explain_hard: Callable[[LossCheck, Outcome], str] | None = None

    def close(self, got: float, expected: float) -> bool:
        return within(got, expected, atol=self.atol, rtol=self.rtol)


def run_check(
    fn: Callable[..., object], check: LossCheck, *, raise_on_failure: bool, verbose: bool
) -> bool:
    """Check the learner's ``fn`` as ``check`` describes (see the module docstring).

    Returns:
        ``True`` when every step passes; ``False`` on the first failure, printed, when
        ``raise_on_failure`` is false.

    Raises:
        AssertionError: ``check.error`` (the check's own subclass), on the first failure, with
            the explanation, when ``raise_on_failure``.
    """

    def fail(message: str) -> bool:
        return report_failure(check.name, message, check.error, raise_on_failure)

    # 1. call fn on every case
    outcomes = []
    for index, case in enumerate(check.cases):
        inputs = case.inputs(index)
        given = tuple(_as_given(x) for x in inputs)
        kept = tuple(x.clone() if isinstance(x, Tensor) else x for x in given)
        try:
            out = fn(*given)
        except Exception as exc:  # the learner's code may raise anything
            said = check.explain_error(case, exc) if check.explain_error else str(exc)
            return fail(
                f"calling {check.call} on {case.describe()} raised {type(exc).__name__}: {said}"
            )
        if not all(
            torch.equal(a, b) for a, b in zip(given, kept, strict=True) if isinstance(a, Tensor)
        ):
            return fail(check.in_place)
        terms = (
            check.read_output(out, case) if check.read_output else _read_scalar(check, out, case)
        )
        if isinstance(terms, str):
            return fail(terms)
        outcomes.append(_outcome(check, case, inputs, terms))

    # 2. the values on the ordinary cases
    ordinary = [o for o in outcomes if not o.case.hard]
    if not all(o.right for o in ordinary):
        return fail((check.explain_wrong or _explain_wrong)(check, ordinary))

    # 3. the values (and, where asked, the gradient's finiteness) on the hard cases
    for outcome in outcomes:
        if not outcome.case.hard:
            continue
        if check.finite_gradient_on_hard_cases:
            total, student = _student_call(fn, outcome)
            what = None
            if not torch.isfinite(total.detach()):
                what = "the loss"
            elif total.requires_grad:
                (grad,) = torch.autograd.grad(total, student)
                what = None if torch.isfinite(grad).all() else "the gradient"
            if what is not None:
                return fail(
                    f"correct on ordinary {check.ordinary}, but on {outcome.case.describe()} "
                    f"{what} is not finite. {check.hard_hint}"
                )
        if not outcome.right:
            return fail((check.explain_hard or _explain_hard)(check, outcome))

    # 4. the gradient with respect to the student's input
    several = len(check.terms) > 1
    for outcome in (outcomes[i] for i in check.gradient_cases):
        total, student = _student_call(fn, outcome)
        if not total.requires_grad:
            return fail(
                f"{'the terms are' if several else 'the loss is'} not differentiable with "
                f"respect to {check.student} (no gradient flows back): avoid .detach(), .item(), "
                f".numpy() and torch.no_grad() on the student's side{check.no_gradient_note}."
            )
        (grad,) = torch.autograd.grad(total, student)
        ref = _reference_grad(check, outcome.inputs)
        agree = check.grads_agree or _grads_agree
        if not agree(grad.double(), ref):
            of = f"of {' + '.join(check.terms)} " if several else ""
            return fail(
                f"the values are right but the gradient {of}with respect to {check.student} is "
                f"not, on {outcome.case.describe()} (max error "
                f"{float((grad.double() - ref).abs().max()):.3g}). Do not detach any part of the "
                f"student's computation{check.wrong_gradient_note}."
            )

    # 5. success
    if verbose:
        print(wrap_message(f"✓ {check.name}: {check.success} Well done!"))
    return True


# ----------------------------------------------------------------------------------------------
# the classic mistakes
# ----------------------------------------------------------------------------------------------
def mistakes_from(
    correct: Any, hints: Mapping[tuple[str, Any], str], **options: Sequence[Any]
) -> list[Mistake]:
    """Every variant of ``correct`` with its fields set to values in ``options``, simplest first.

    ``correct`` is a dataclass whose ``value`` method computes the loss the way its fields say;
    each variant's hints are ``hints[(field, value)]`` for each field it gets wrong, in the
    order of the dataclass's fields. Variants with as many errors stay in ``options``'s order.
    """

    def errors(variant: Any) -> list[tuple[str, Any]]:
        return [
            (f.name, getattr(variant, f.name))
            for f in fields(correct)
            if getattr(variant, f.name) != getattr(correct, f.name)
        ]

    variants = (
        replace(correct, **dict(zip(options, values, strict=True)))
        for values in itertools.product(*options.values())
    )
    ranked = sorted(((v, errors(v)) for v in variants), key=lambda pair: len(pair[1]))
    return [Mistake(v.value, tuple(hints[e] for e in found)) for v, found in ranked if found]


def find_mistake(
    mistakes: Sequence[Mistake],
    got: Sequence[float],
    inputs: Sequence[tuple[Any, ...]],
    close: Callable[[float, float], bool],
) -> Mistake | None:
    """The first mistake whose value is close to ``got`` on every case, or ``None``."""
    for mistake in mistakes:
        if all(close(g, float(mistake.value(*x))) for g, x in zip(got, inputs, strict=True)):
            return mistake
    return None


# ----------------------------------------------------------------------------------------------
# the steps' details
# ----------------------------------------------------------------------------------------------
def _as_given(x: Any) -> Any:
    """What ``fn`` receives: float32 copies of float tensors, copies of other tensors."""
    if isinstance(x, Tensor):
        return x.float() if x.is_floating_point() else x.clone()
    return x


def _terms(out: Any) -> tuple[Any, ...]:
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def _read_scalar(check: LossCheck, out: object, case: Case) -> tuple[Tensor, ...] | str:
    problem = scalar_loss_problem(
        out,
        case.describe(),
        per_sample=(case.batch,),
        per_sample_hint=check.per_sample_hint,
        advice=check.scalar_advice,
    )
    return problem if problem is not None else (out,)  # type: ignore[return-value]


def _outcome(
    check: LossCheck, case: Case, inputs: tuple[Any, ...], terms: tuple[Tensor, ...]
) -> Outcome:
    got = tuple(float(t.detach().double()) for t in terms)
    expected = tuple(float(v) for v in _terms(check.reference(*inputs)))
    right_values = [expected]
    if case.hard and check.also_right is not None:
        right_values.append(tuple(float(v) for v in _terms(check.also_right(*inputs))))
    right = any(
        all(check.close(g, e) for g, e in zip(got, values, strict=True)) for values in right_values
    )
    return Outcome(case, inputs, got, expected, right)


def _explain_wrong(check: LossCheck, ordinary: Sequence[Outcome]) -> str:
    """Name the mistake (or give the check's advice), then show the first wrong case."""
    wrong = [o for o in ordinary if not o.right]
    got = [o.got[0] for o in ordinary]
    mistake = find_mistake(check.mistakes, got, [o.inputs for o in ordinary], check.close)
    if mistake is None:
        hint = check.unmatched_hint([o.case for o in wrong]) if check.unmatched_hint else None
        diagnosis = hint or check.unmatched
    elif len(mistake.hints) == 1:
        diagnosis = f"your loss reproduces a {check.mistake_kind} mistake: {mistake.hints[0]}"
    else:
        listed = "\n".join(f"  {n}. {h}" for n, h in enumerate(mistake.hints, 1))
        diagnosis = (
            f"your loss reproduces {len(mistake.hints)} {check.mistake_kind} mistakes at once:"
            f"\n{listed}"
        )
    first = wrong[0]
    value, expected = first.got[0], first.expected[0]
    ratio = f" (ratio {value / expected:.4g})" if expected != 0 else ""
    return (
        f"{diagnosis}\n  For example, on {first.case.describe()} it returned {value:.6g}, "
        f"{check.loss} is {expected:.6g}{ratio}."
    )


def _explain_hard(check: LossCheck, outcome: Outcome) -> str:
    return (
        f"correct on ordinary {check.ordinary}, but on {outcome.case.describe()} it returned "
        f"{outcome.got[0]:.6g} instead of {outcome.expected[0]:.6g}. {check.hard_hint}"
    )


def _student_call(fn: Callable[..., object], outcome: Outcome) -> tuple[Tensor, Tensor]:
    """Call ``fn`` with the student's input requiring grad; the sum of its terms, and that input."""
    student, *others = outcome.inputs
    student = student.float().requires_grad_(True)
    out = fn(student, *(_as_given(x) for x in others))
    return sum(term.sum() for term in _terms(out)), student  # type: ignore[return-value]


def _reference_grad(check: LossCheck, inputs: tuple[Any, ...]) -> Tensor:
    if check.reference_grad is not None:
        return check.reference_grad(*inputs)
    student, *others = inputs
    student = student.clone().requires_grad_(True)
    total = sum(term.sum() for term in _terms(check.reference(student, *others)))
    (grad,) = torch.autograd.grad(total, student)
    return grad


def _grads_agree(got: Tensor, ref: Tensor) -> bool:
    return torch.allclose(got, ref, rtol=1e-3, atol=1e-6)

r"""Comparison chapter coursework: check a learner's Spearman rank correlation.

A learner writes ``my_spearman(x, y)`` returning Spearman's :math:`\rho` between two equally
long sequences: Pearson's correlation of their ranks, where tied values share the mean of the
ranks they occupy. :func:`check_spearman` tries it on cases with and without ties, negative
values and reversed orders against an independent reference (the closed form
:math:`1 - 6\sum d_i^2 / (n(n^2-1))` where it applies, and Pearson on averaged ranks
otherwise) and names the likely mistake when it fails: one sequence ranked in the opposite
direction (the sign flips), ties broken by position instead of averaged, Pearson on the raw
values instead of the ranks, or the closed form used despite ties.

>>> from kdtutor.bench import spearman
>>> check_spearman(spearman)  # doctest: +ELLIPSIS
✓ ...your Spearman correlation is right...
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .engine import Mistake, find_mistake
from .messages import wrap_message

__all__ = ["SpearmanCheckError", "check_spearman", "reference_spearman"]

SpearmanFn = Callable[[Sequence[float], Sequence[float]], float]


class SpearmanCheckError(AssertionError):
    """Raised by :func:`check_spearman` when the learner's function is wrong."""


def _average_ranks(values: Sequence[float]) -> list[float]:
    # rank of v = (number of values below v) + (number of values equal to v + 1) / 2
    return [
        sum(1 for w in values if w < v) + (sum(1 for w in values if w == v) + 1) / 2 for v in values
    ]


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb)


def reference_spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho, written independently of :func:`kdtutor.bench.spearman`."""
    rx, ry = _average_ranks(x), _average_ranks(y)
    if len(set(x)) == len(x) and len(set(y)) == len(y):  # no ties: the closed form
        n = len(x)
        d2 = sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True))
        return 1 - 6 * d2 / (n * (n * n - 1))
    return _pearson(rx, ry)


_CASES: tuple[tuple[tuple[float, ...], tuple[float, ...], str], ...] = (
    ((1, 2, 3, 4, 5), (2, 4, 6, 8, 10), "a perfect monotone relation"),
    ((1, 2, 3, 4, 5), (5, 4, 3, 2, 1), "a reversed order"),
    ((0.3, -1.2, 2.5, 0.0, 7.1, 1.1), (1.0, 0.2, 3.3, -0.5, 2.0, 9.0), "no ties, negatives"),
    ((1, 2, 2, 3, 4), (1, 3, 2, 4, 5), "ties in x"),
    ((5, 1, 1, 1, 2, 9), (2, 2, 1, 3, 3, 8), "ties in both"),
    ((1, 10, 100, 1000), (1, 2, 3, 4), "a monotone but non-linear relation"),
)


def _ordinal_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    for r, i in enumerate(order, start=1):
        ranks[i] = float(r)
    return ranks


def _closed_form(rx: Sequence[float], ry: Sequence[float]) -> float:
    n = len(rx)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry, strict=True)) / (n * (n * n - 1))


_MISTAKES = (
    Mistake(_pearson, ("Pearson's correlation of the raw values instead of their ranks",)),
    Mistake(
        lambda x, y: _pearson(_ordinal_ranks(x), _ordinal_ranks(y)),
        ("ties broken by position (ranks 1, 2, 3 ...) instead of sharing their mean rank",),
    ),
    Mistake(
        lambda x, y: _closed_form(_average_ranks(x), _average_ranks(y)),
        (
            "the closed form 1 - 6 sum d^2 / (n (n^2 - 1)) used although there are ties (it is "
            "exact only without ties)",
        ),
    ),
    Mistake(
        lambda x, y: -reference_spearman(x, y),
        ("the sign flipped (x ranked ascending, y descending)",),
    ),
)


def _diagnose(fn_values: list[float]) -> str:
    """Name the mistake whose outputs match the learner's on every case."""
    mistake = find_mistake(
        _MISTAKES,
        fn_values,
        [(x, y) for x, y, _ in _CASES],
        lambda got, expected: math.isclose(expected, got, abs_tol=1e-9),
    )
    return f" It looks like {mistake.hints[0]}." if mistake else ""


def check_spearman(fn: SpearmanFn, *, raise_on_failure: bool = True, verbose: bool = True) -> bool:
    """Check ``fn(x, y) -> rho`` against an independent reference on six cases.

    Returns ``True`` when every case agrees within 1e-9; otherwise raises
    :class:`SpearmanCheckError` naming the first failing case and the likely mistake (or
    returns ``False`` with ``raise_on_failure=False``).
    """
    got: list[float] = []
    for x, y, _ in _CASES:
        value = fn(list(x), list(y))
        try:
            got.append(float(value))
        except (TypeError, ValueError):
            raise SpearmanCheckError(
                f"my_spearman returned {value!r}; it must return one number (a float)."
            ) from None
    for (x, y, what), value in zip(_CASES, got, strict=True):
        expected = reference_spearman(x, y)
        if not math.isclose(value, expected, abs_tol=1e-9):
            message = (
                f"✗ on {what} (x={list(x)}, y={list(y)}) your function returned {value:.6f}, "
                f"expected {expected:.6f}.{_diagnose(got)}"
            )
            if raise_on_failure:
                raise SpearmanCheckError(message)
            if verbose:
                print(wrap_message(message))
            return False
    if verbose:
        print(
            wrap_message(
                f"✓ all {len(_CASES)} cases pass: your Spearman correlation is right, ties "
                "included."
            )
        )
    return True

r"""Checks for an honest comparison: a t-interval over seeds and McNemar's exact test.

* :func:`check_mean_interval`: a learner's ``mean_and_interval(values, level)``, which returns
  the mean of a few runs (one per seed) and Student's t-interval around it (Student, 1908),

  .. math:: \bar x \pm t_{(1 + \mathrm{level})/2,\; n - 1}\, \frac{s}{\sqrt n},
     \qquad s^2 = \frac{1}{n - 1} \sum_i (x_i - \bar x)^2,

  compared with an independent reference (scipy's t quantile) on runs of 2 to 6 values at
  several levels. A wrong interval is explained by the classic mistake that reproduces it: a
  normal quantile (1.96) instead of Student's t, the population standard deviation (ddof=0),
  the standard deviation instead of the standard error, n degrees of freedom instead of
  n - 1, a one-sided quantile, or the level ignored.
* :func:`check_mcnemar`: a learner's ``mcnemar_p(pred_a, pred_b, labels)``, the two-sided p-value
  of McNemar's exact test (McNemar, 1947) of two classifiers on the same images: of the
  :math:`n = n_a + n_b` discordant images (``a`` right and ``b`` wrong: :math:`n_a`; the
  reverse: :math:`n_b`), each goes either way with probability 1/2 if the classifiers are
  equally good, so

  .. math:: p = \min\Big(1,\; 2 \sum_{k=0}^{\min(n_a, n_b)} \binom{n}{k} 2^{-n}\Big),
     \qquad p = 1 \text{ when } n = 0.

  Its mistakes: a one-sided p, the doubled tail not capped at 1, the chi-square approximation
  (with or without continuity correction), every test image counted instead of the
  discordant ones, or images the two classifiers both get wrong (with different wrong labels)
  counted as discordant.

Each check prints a short verdict when the function is right and raises an
``AssertionError`` subclass with the explanation when it is not (or prints it and returns
``False`` with ``raise_on_failure=False``).

>>> check_mean_interval(reference_mean_interval)  # doctest: +ELLIPSIS
✓ check_mean_interval: ...
True
>>> check_mcnemar(reference_mcnemar_p)  # doctest: +ELLIPSIS
✓ check_mcnemar: ...
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .engine import Mistake, find_mistake, mistakes_from
from .messages import report_failure, within, wrap_message

__all__ = [
    "IntervalCheckError",
    "McNemarCheckError",
    "check_mcnemar",
    "check_mean_interval",
    "reference_mcnemar_p",
    "reference_mean_interval",
]


class IntervalCheckError(AssertionError):
    """Raised by :func:`check_mean_interval` when the learner's function is wrong."""


class McNemarCheckError(AssertionError):
    """Raised by :func:`check_mcnemar` when the learner's function is wrong."""


# ----------------------------------------------------------------------------------------------
# the t-interval
# ----------------------------------------------------------------------------------------------
def reference_mean_interval(
    values: Sequence[float], level: float = 0.95
) -> tuple[float, float, float]:
    """Mean and Student's t-interval ``(mean, low, high)`` of at least two values."""
    x = np.asarray(values, dtype=float)
    half = _Interval().value(x, level)
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


@dataclass(frozen=True)
class _Interval:
    """The half-width of the interval, computed the way the fields say (right by default)."""

    quantile: str = "t"
    ddof: int = 1
    scale: str = "sem"

    def value(self, values: Sequence[float], level: float) -> float:
        x = np.asarray(values, dtype=float)
        n = x.size
        q = {
            "t": lambda: stats.t.ppf((1 + level) / 2, n - 1),
            "z": lambda: stats.norm.ppf((1 + level) / 2),
            "1.96": lambda: 1.96,
            "df n": lambda: stats.t.ppf((1 + level) / 2, n),
            "one-sided": lambda: stats.t.ppf(level, n - 1),
            "0.95": lambda: stats.t.ppf(0.975, n - 1),
        }[self.quantile]()
        s = float(np.std(x, ddof=self.ddof))
        return float(q) * (s / math.sqrt(n) if self.scale == "sem" else s)


_INTERVAL_HINTS = {
    ("quantile", "z"): (
        "a normal (z) quantile instead of Student's t with n - 1 degrees of freedom: with "
        "3 seeds the 95% quantile is t = 4.30, not z = 1.96 (scipy.stats.t.ppf)"
    ),
    ("quantile", "1.96"): (
        "the normal quantile 1.96 instead of Student's t with n - 1 degrees of freedom (with "
        "3 seeds the 95% quantile is 4.30), and whatever the level"
    ),
    ("quantile", "df n"): "n degrees of freedom instead of n - 1",
    ("quantile", "one-sided"): (
        "the quantile at `level` instead of (1 + level) / 2: a two-sided interval leaves "
        "(1 - level) / 2 in each tail"
    ),
    ("quantile", "0.95"): "the `level` argument ignored (a 95% interval whatever the level)",
    ("ddof", 0): (
        "the population standard deviation (numpy's default, ddof=0) instead of the sample's "
        "(ddof=1, dividing by n - 1)"
    ),
    ("scale", "std"): (
        "the standard deviation s instead of the standard error s / sqrt(n) of the mean"
    ),
}

_INTERVAL_MISTAKES = mistakes_from(
    _Interval(),
    _INTERVAL_HINTS,
    quantile=("t", "z", "1.96", "df n", "one-sided", "0.95"),
    ddof=(1, 0),
    scale=("sem", "std"),
)

_INTERVAL_CASES: tuple[tuple[tuple[float, ...], float], ...] = (
    ((91.1, 93.0, 92.4), 0.95),
    ((1.0, 2.0, 4.0, 7.0), 0.95),
    ((-0.3, 0.8, 0.1, 1.6, 0.4), 0.9),
    ((97.2, 96.4, 97.8, 96.9, 97.5, 96.1), 0.99),
    ((2.0, 3.0), 0.8),
    ((-1.5, -0.5, 0.5), 0.95),
    ((5.0, 5.0, 5.0), 0.95),
)


def _three_numbers(out: object) -> tuple[float, float, float] | None:
    try:
        mean, low, high = out  # type: ignore[misc]
        return float(mean), float(low), float(high)
    except (TypeError, ValueError):
        return None


def check_mean_interval(
    fn: Callable[[Sequence[float], float], tuple[float, float, float]],
    *,
    raise_on_failure: bool = True,
    verbose: bool = True,
) -> bool:
    """Check ``fn(values, level) -> (mean, low, high)`` on seven runs of 2 to 6 values.

    Returns ``True`` when every case agrees with :func:`reference_mean_interval` (relative
    tolerance 1e-6); otherwise raises :class:`IntervalCheckError` naming the first failing
    case and the classic mistake that reproduces the learner's intervals (or prints it and
    returns ``False`` with ``raise_on_failure=False``).
    """

    def fail(message: str) -> bool:
        return report_failure("check_mean_interval", message, IntervalCheckError, raise_on_failure)

    got = []
    for values, level in _INTERVAL_CASES:
        where = f"values={list(values)}, level={level}"
        try:
            out = fn(list(values), level)
        except Exception as exc:  # the learner's code may raise anything
            return fail(f"mean_and_interval({where}) raised {type(exc).__name__}: {exc}")
        numbers = _three_numbers(out)
        if numbers is None:
            return fail(
                f"mean_and_interval({where}) returned {out!r}; it must return three numbers, "
                "(mean, low, high)."
            )
        got.append(numbers)

    def close(a: float, b: float) -> bool:
        return within(a, b, atol=1e-9, rtol=1e-6)

    for (values, level), (mean, low, high) in zip(_INTERVAL_CASES, got, strict=True):
        want_mean, want_low, want_high = reference_mean_interval(values, level)
        where = f"values={list(values)}, level={level}"
        if not close(mean, want_mean):
            return fail(
                f"on {where} the mean is {mean:.6g}, expected {want_mean:.6g}: the first number "
                "returned must be the mean of the values."
            )
        if not close(high - mean, mean - low):
            return fail(
                f"on {where} the interval ({low:.6g}, {high:.6g}) is not centred on the mean "
                f"{mean:.6g}: return (mean, mean - half_width, mean + half_width)."
            )
        if not (close(low, want_low) and close(high, want_high)):
            halves = [h - m for m, _, h in got]
            inputs = list(_INTERVAL_CASES)
            mistake = find_mistake(_INTERVAL_MISTAKES, halves, inputs, close)
            if mistake is None:
                diagnosis = (
                    "the half-width is t_{(1 + level)/2, n - 1} * s / sqrt(n), with s the "
                    "sample standard deviation (ddof=1)."
                )
            elif len(mistake.hints) == 1:
                diagnosis = f"it looks like {mistake.hints[0]}."
            else:
                listed = "\n".join(f"  {k}. {h}" for k, h in enumerate(mistake.hints, 1))
                diagnosis = f"it looks like {len(mistake.hints)} mistakes at once:\n{listed}"
            return fail(
                f"on {where} your interval is ({low:.6g}, {high:.6g}), expected "
                f"({want_low:.6g}, {want_high:.6g}); {diagnosis}"
            )
    if verbose:
        print(
            wrap_message(
                f"✓ check_mean_interval: all {len(_INTERVAL_CASES)} cases pass, your mean and "
                "t-interval are right. Well done!"
            )
        )
    return True


# ----------------------------------------------------------------------------------------------
# McNemar's exact test
# ----------------------------------------------------------------------------------------------
def _binom_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), in exact integer arithmetic."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def _counts(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    right_a, right_b = pred_a == labels, pred_b == labels
    return int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))


def reference_mcnemar_p(
    pred_a: Sequence[int], pred_b: Sequence[int], labels: Sequence[int]
) -> float:
    """Two-sided p-value of McNemar's exact test (the binomial tail, doubled, capped at 1)."""
    n_a, n_b = _counts(np.asarray(pred_a), np.asarray(pred_b), np.asarray(labels))
    return 1.0 if n_a + n_b == 0 else min(1.0, 2 * _binom_tail(min(n_a, n_b), n_a + n_b))


def _chi2(a: np.ndarray, b: np.ndarray, y: np.ndarray, correction: float) -> float:
    n01, n10 = _counts(a, b, y)
    if n01 + n10 == 0:
        return 1.0
    statistic = max(abs(n01 - n10) - correction, 0) ** 2 / (n01 + n10)
    return float(stats.chi2.sf(statistic, 1))


def _binomtest(k: int, n: int) -> float:
    """scipy's two-sided exact binomial test of k successes in n trials (1 when n = 0)."""
    return 1.0 if n == 0 else float(stats.binomtest(k, n, 0.5).pvalue)


def _by_predictions(
    a: np.ndarray, b: np.ndarray, y: np.ndarray, *, doubled_tail: bool = True
) -> float:
    n01, n10 = _counts(a, b, y)
    n = int(np.sum(a != b))
    if doubled_tail:
        return 1.0 if n == 0 else min(1.0, 2 * _binom_tail(min(n01, n10), n))
    return _binomtest(n01, n)


def _all_images(a: np.ndarray, b: np.ndarray, y: np.ndarray, *, doubled_tail: bool = True) -> float:
    n01, n10 = _counts(a, b, y)
    if doubled_tail:
        return min(1.0, 2 * _binom_tail(min(n01, n10), y.size))
    return _binomtest(n01, y.size)


def _one_sided(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    n01, n10 = _counts(a, b, y)
    return 1.0 if n01 + n10 == 0 else _binom_tail(min(n01, n10), n01 + n10)


def _uncapped(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    n01, n10 = _counts(a, b, y)
    return 1.0 if n01 + n10 == 0 else 2 * _binom_tail(min(n01, n10), n01 + n10)


_MCNEMAR_MISTAKES = (
    Mistake(
        _one_sided,
        ("a one-sided p-value: the test is two-sided, so double the tail (and cap it at 1)",),
    ),
    Mistake(
        _uncapped,
        ("the doubled tail not capped at 1: when n_a = n_b it exceeds 1; take min(1, 2 * tail)",),
    ),
    *(
        Mistake(
            lambda a, b, y, d=doubled: _by_predictions(a, b, y, doubled_tail=d),
            (
                "every image where the two predictions differ counted as discordant: an image "
                "both classifiers get wrong (with different wrong labels) is not; only right or "
                "wrong matters",
            ),
        )
        for doubled in (True, False)
    ),
    *(
        Mistake(
            lambda a, b, y, d=doubled: _all_images(a, b, y, doubled_tail=d),
            (
                "the binomial over all the test images instead of the discordant ones only "
                "(n = n_a + n_b)",
            ),
        )
        for doubled in (True, False)
    ),
    Mistake(
        lambda a, b, y: _chi2(a, b, y, 1.0),
        (
            "McNemar's chi-square approximation (with continuity correction) instead of the "
            "exact binomial test",
        ),
    ),
    Mistake(
        lambda a, b, y: _chi2(a, b, y, 0.0),
        ("McNemar's chi-square approximation instead of the exact binomial test",),
    ),
)

# (only a right, only b right, both right, both wrong alike, both wrong differently)
_MCNEMAR_CASES: tuple[tuple[int, int, int, int, int], ...] = (
    (0, 0, 12, 3, 2),
    (5, 0, 20, 3, 0),
    (7, 1, 30, 2, 4),
    (3, 3, 15, 0, 2),
    (2, 9, 40, 5, 5),
    (12, 4, 300, 10, 30),
    (40, 22, 250, 20, 27),
)


def _describe(case: tuple[int, int, int, int, int]) -> str:
    only_a, only_b, both, alike, differently = case
    return (
        f"{sum(case)} images: a alone right on {only_a}, b alone right on {only_b}, both right "
        f"on {both}, both wrong on {alike + differently} ({differently} of them with different "
        "wrong labels)"
    )


def _mcnemar_inputs(
    case: tuple[int, int, int, int, int], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions of a and b, and the labels (10 classes, shuffled), with the case's counts."""
    rng = np.random.default_rng(seed)
    n = sum(case)
    y = rng.integers(0, 10, n)
    shift = rng.integers(1, 10, n)  # 1..9: a wrong label
    wrong = (y + shift) % 10
    other = (y + 1 + (shift - 1 + rng.integers(1, 9, n)) % 9) % 10  # neither y nor wrong
    kind = np.repeat(np.arange(5), case)
    a = np.where((kind == 0) | (kind == 2), y, wrong)
    b = np.where((kind == 1) | (kind == 2), y, np.where(kind == 4, other, wrong))
    order = rng.permutation(n)
    return a[order], b[order], y[order]


def check_mcnemar(
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float],
    *,
    raise_on_failure: bool = True,
    verbose: bool = True,
) -> bool:
    """Check ``fn(pred_a, pred_b, labels) -> p`` on seven sets of predictions.

    Returns ``True`` when every p-value agrees with :func:`reference_mcnemar_p` (relative
    tolerance 1e-6); otherwise raises :class:`McNemarCheckError` naming the first failing case
    and the classic mistake that reproduces the learner's p-values (or prints it and returns
    ``False`` with ``raise_on_failure=False``).
    """

    def fail(message: str) -> bool:
        return report_failure("check_mcnemar", message, McNemarCheckError, raise_on_failure)

    inputs = [_mcnemar_inputs(case, seed) for seed, case in enumerate(_MCNEMAR_CASES)]
    got = []
    for case, (a, b, y) in zip(_MCNEMAR_CASES, inputs, strict=True):
        try:
            out = fn(a.copy(), b.copy(), y.copy())
        except Exception as exc:  # the learner's code may raise anything
            return fail(f"on {_describe(case)} mcnemar_p raised {type(exc).__name__}: {exc}")
        try:
            got.append(float(out))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return fail(f"on {_describe(case)} mcnemar_p returned {out!r}; return one number.")

    def close(x: float, want: float) -> bool:
        return within(x, want, atol=1e-12, rtol=1e-6)

    for case, args, p in zip(_MCNEMAR_CASES, inputs, got, strict=True):
        want = reference_mcnemar_p(*args)
        if close(p, want):
            continue
        mistake = find_mistake(_MCNEMAR_MISTAKES, got, inputs, close)
        if mistake is not None:
            diagnosis = f"it looks like {mistake.hints[0]}."
        elif not 0 <= p <= 1:
            diagnosis = "a p-value is a probability, between 0 and 1."
        else:
            diagnosis = (
                "count n_a (a right, b wrong) and n_b (b right, a wrong), then p = min(1, "
                "2 P(X <= min(n_a, n_b))) for X ~ Binomial(n_a + n_b, 1/2)."
            )
        return fail(
            f"on {_describe(case)} you return p = {p:.6g}, expected {want:.6g}; {diagnosis}"
        )
    if verbose:
        print(
            wrap_message(
                f"✓ check_mcnemar: all {len(_MCNEMAR_CASES)} cases pass, your exact McNemar "
                "test is right. Well done!"
            )
        )
    return True

"""check_mean_interval and check_mcnemar: right implementations pass; classic mistakes fail
with their name."""

import math

import numpy as np
import pytest
from scipy import stats

from kdtutor.coursework.significance import (
    IntervalCheckError,
    McNemarCheckError,
    check_mcnemar,
    check_mean_interval,
    reference_mcnemar_p,
    reference_mean_interval,
)


# ----------------------------------------------------------------------------------------------
# mean_and_interval
# ----------------------------------------------------------------------------------------------
def scipy_interval(values, level=0.95):
    x = np.asarray(values, dtype=float)
    if np.all(x == x[0]):
        return float(x[0]), float(x[0]), float(x[0])
    low, high = stats.t.interval(level, df=x.size - 1, loc=x.mean(), scale=stats.sem(x))
    return float(x.mean()), float(low), float(high)


def interval_with(quantile, ddof=1, sqrt_n=True):
    def fn(values, level=0.95):
        x = np.asarray(values, dtype=float)
        s = x.std(ddof=ddof)
        half = quantile(level, x.size) * (s / math.sqrt(x.size) if sqrt_n else s)
        return x.mean(), x.mean() - half, x.mean() + half

    return fn


def fails_naming(check, error, fn, needle):
    """``check(fn)`` raises ``error`` whose message (its line breaks undone) holds ``needle``."""
    with pytest.raises(error) as info:
        check(fn)
    said = " ".join(str(info.value).split())
    assert needle in said, said
    assert check(fn, raise_on_failure=False, verbose=False) is False
    return said


T = lambda level, n: stats.t.ppf((1 + level) / 2, n - 1)  # noqa: E731


@pytest.mark.parametrize("fn", [reference_mean_interval, scipy_interval])
def test_right_intervals_pass(fn, capsys):
    assert check_mean_interval(fn)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "needle"),
    [
        (interval_with(lambda level, n: stats.norm.ppf((1 + level) / 2)), "normal (z) quantile"),
        (interval_with(lambda level, n: 1.96), "quantile 1.96"),
        (interval_with(T, ddof=0), "ddof=0"),
        (interval_with(T, sqrt_n=False), "standard error"),
        (interval_with(lambda level, n: stats.t.ppf((1 + level) / 2, n)), "n degrees"),
        (interval_with(lambda level, n: stats.t.ppf(level, n - 1)), "each tail"),
        (interval_with(lambda level, n: stats.t.ppf(0.975, n - 1)), "argument ignored"),
    ],
)
def test_interval_mistakes_fail_with_their_name(fn, needle):
    fails_naming(check_mean_interval, IntervalCheckError, fn, needle)


def test_two_interval_mistakes_at_once_are_both_named():
    fn = interval_with(lambda level, n: stats.norm.ppf((1 + level) / 2), ddof=0)
    said = fails_naming(check_mean_interval, IntervalCheckError, fn, "2 mistakes at once")
    assert "normal (z) quantile" in said and "ddof=0" in said


def test_interval_shape_and_centre_are_checked():
    with pytest.raises(IntervalCheckError, match="three numbers"):
        check_mean_interval(lambda values, level: (1.0, 2.0))
    with pytest.raises(IntervalCheckError, match="the mean"):
        check_mean_interval(lambda values, level: (0.0, -1.0, 1.0))
    with pytest.raises(IntervalCheckError, match="not centred"):
        check_mean_interval(lambda values, level: (np.mean(values), np.min(values), 1e9))
    with pytest.raises(IntervalCheckError, match="raised ZeroDivisionError"):
        check_mean_interval(lambda values, level: 1 / 0)


@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
def test_reference_interval_matches_scipy(level):
    x = [0.3, 1.2, -0.4, 0.9]
    assert reference_mean_interval(x, level) == pytest.approx(scipy_interval(x, level))


# ----------------------------------------------------------------------------------------------
# mcnemar_p
# ----------------------------------------------------------------------------------------------
def scipy_mcnemar(pred_a, pred_b, labels):
    a, b = pred_a == labels, pred_b == labels
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def counts(pred_a, pred_b, labels):
    a, b = pred_a == labels, pred_b == labels
    return int(np.sum(a & ~b)), int(np.sum(b & ~a))


def one_sided(pred_a, pred_b, labels):
    b, c = counts(pred_a, pred_b, labels)
    return 1.0 if b + c == 0 else float(stats.binom.cdf(min(b, c), b + c, 0.5))


def uncapped(pred_a, pred_b, labels):
    b, c = counts(pred_a, pred_b, labels)
    return 1.0 if b + c == 0 else 2 * float(stats.binom.cdf(min(b, c), b + c, 0.5))


def by_predictions(pred_a, pred_b, labels):
    b, _ = counts(pred_a, pred_b, labels)
    n = int(np.sum(pred_a != pred_b))
    return 1.0 if n == 0 else float(stats.binomtest(b, n, 0.5).pvalue)


def by_predictions_tail(pred_a, pred_b, labels):
    b, c = counts(pred_a, pred_b, labels)
    n = int(np.sum(pred_a != pred_b))
    return 1.0 if n == 0 else min(1.0, 2 * float(stats.binom.cdf(min(b, c), n, 0.5)))


def all_images_binomtest(pred_a, pred_b, labels):
    b, _ = counts(pred_a, pred_b, labels)
    return float(stats.binomtest(b, labels.size, 0.5).pvalue)


def all_images(pred_a, pred_b, labels):
    b, c = counts(pred_a, pred_b, labels)
    return min(1.0, 2 * float(stats.binom.cdf(min(b, c), labels.size, 0.5)))


def chi2_corrected(pred_a, pred_b, labels):
    b, c = counts(pred_a, pred_b, labels)
    if b + c == 0:
        return 1.0
    return float(stats.chi2.sf(max(abs(b - c) - 1, 0) ** 2 / (b + c), 1))


@pytest.mark.parametrize("fn", [reference_mcnemar_p, scipy_mcnemar])
def test_right_mcnemar_passes(fn, capsys):
    assert check_mcnemar(fn)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("fn", "needle"),
    [
        (one_sided, "one-sided"),
        (uncapped, "not capped"),
        (by_predictions, "predictions differ"),
        (by_predictions_tail, "predictions differ"),
        (all_images, "all the test images"),
        (all_images_binomtest, "all the test images"),
        (chi2_corrected, "continuity correction"),
    ],
)
def test_mcnemar_mistakes_fail_with_their_name(fn, needle):
    fails_naming(check_mcnemar, McNemarCheckError, fn, needle)


def test_mcnemar_non_number_and_errors_are_reported():
    with pytest.raises(McNemarCheckError, match="one number"):
        check_mcnemar(lambda a, b, y: [0.5])
    with pytest.raises(McNemarCheckError, match="raised KeyError"):
        check_mcnemar(lambda a, b, y: {}["p"])


def test_reference_mcnemar_on_hand_cases():
    y = np.zeros(10, dtype=int)
    assert reference_mcnemar_p(y, y, y) == 1.0  # no discordant image
    a = np.array([0] * 5 + [1] * 5)
    assert reference_mcnemar_p(a, np.ones(10, dtype=int), y) == pytest.approx(2 / 32)

"""kdtutor.bench.significance against formulas written another way (beta quantiles, the
binomial sum by hand, the t statistic of rho, a simulated coverage)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kdtutor.bench.significance import (
    accuracy_interval,
    decode_correct,
    encode_correct,
    leave_one_group_out,
    mcnemar_exact,
    paired_difference_interval,
    spearman_interval,
    spearman_test,
)


@pytest.mark.parametrize(("correct", "n"), [(950, 1000), (8500, 10000), (0, 50), (50, 50)])
def test_clopper_pearson_from_beta_quantiles(correct, n):
    low = 0.0 if correct == 0 else stats.beta.ppf(0.025, correct, n - correct + 1)
    high = 1.0 if correct == n else stats.beta.ppf(0.975, correct + 1, n - correct)
    got = accuracy_interval(correct, n)
    assert got == pytest.approx((100 * low, 100 * high), abs=1e-9)
    # the sampling error of 1,000 images is about 1.4 points each way at 95%
    if n == 1000:
        assert 1.2 < got[1] - 95.0 < 1.6 and 1.2 < 95.0 - got[0] < 1.6


def test_mcnemar_is_a_binomial_test_of_the_discordant_images():
    rng = np.random.default_rng(0)
    a = rng.random(500) < 0.8
    b = a.copy()
    flip = rng.choice(500, 40, replace=False)
    b[flip[:30]] = ~b[flip[:30]]
    result = mcnemar_exact(a, b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    assert (result.only_a, result.only_b) == (only_a, only_b)
    n, k = only_a + only_b, min(only_a, only_b)
    by_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    assert result.p_value == pytest.approx(by_hand, rel=1e-9)
    assert mcnemar_exact(a, a).p_value == 1.0
    with pytest.raises(ValueError, match="same images"):
        mcnemar_exact(a, b[:10])


def test_paired_interval_covers_the_true_difference_and_has_the_right_width():
    rng = np.random.default_rng(1)
    n = 4000
    base = rng.random(n) < 0.85
    better = base | (rng.random(n) < 0.1)  # about 1.5 points better, on the same images
    diff, low, high = paired_difference_interval(better, base, seed=3)
    assert diff == pytest.approx(100 * (better.mean() - base.mean()))
    d = better.astype(float) - base.astype(float)
    se = 100 * d.std(ddof=1) / math.sqrt(n)
    assert low < diff < high
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert low > 0  # paired, a 1.5-point gain on 4,000 images is clear
    same = paired_difference_interval(base, base)
    assert same == (0.0, 0.0, 0.0)


def test_spearman_p_value_is_the_t_approximation():
    x = [1, 2, 3, 4, 5, 6, 7, 8]
    y = [2, 1, 4, 3, 6, 5, 8, 7]
    rho, p = spearman_test(x, y)
    n = len(x)
    d2 = sum((a - b) ** 2 for a, b in zip(x, y, strict=True))
    assert rho == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)))
    t = rho * math.sqrt((n - 2) / (1 - rho * rho))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), n - 2), rel=1e-9)


def test_spearman_interval_is_wide_for_few_methods_and_narrow_for_many():
    rng = np.random.default_rng(2)
    few = rng.normal(size=6)
    low, high = spearman_interval(few, few + rng.normal(scale=1.0, size=6))
    assert high - low > 0.5
    many = rng.normal(size=200)
    low, high = spearman_interval(many, many + rng.normal(scale=0.3, size=200))
    assert 0.8 < low < high < 1.0 and high - low < 0.1


def test_leave_one_group_out_shows_what_a_group_carries():
    # two groups far apart and shuffled within: the agreement is all between the groups
    x = [1, 2, 3, 4, 10, 11, 12, 13]
    y = [4, 3, 2, 1, 13, 12, 11, 10]
    groups = ["feature"] * 4 + ["response"] * 4
    rho_all = spearman_test(x, y)[0]
    within = leave_one_group_out(x, y, groups)
    assert rho_all > 0.5
    assert within == {"feature": pytest.approx(-1.0), "response": pytest.approx(-1.0)}


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_correct_flags_round_trip_through_text(n):
    flags = np.random.default_rng(n).random(n) < 0.7
    text = encode_correct(flags)
    assert text.isascii() and len(text) <= 4 * math.ceil(math.ceil(n / 8) / 3)
    assert np.array_equal(decode_correct(text, n), flags)
    with pytest.raises(ValueError, match="bits"):
        decode_correct(text, n + 8)

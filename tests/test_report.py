"""The comparison's uncertainty (kdtutor.bench.report), against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from kdtutor.bench.report import correct_matrix, gains_with_intervals, rank_agreement
from kdtutor.bench.significance import encode_correct
from kdtutor.errors import KDTutorError

N = 400


def _row(method: str, seed: int, flags: np.ndarray, pair: str = "p") -> dict:
    return {"pair": pair, "method": method, "seed": seed, "correct": encode_correct(flags)}


def _flags(n_right: int, offset: int = 0) -> np.ndarray:
    flags = np.zeros(N, dtype=bool)
    flags[offset : offset + n_right] = True
    return flags


def test_gain_is_the_difference_of_mean_accuracies_and_mcnemar_counts_seeds():
    # the student alone gets images 0..199 right in every seed (50%);
    # "good" gets 0..259 right (65%) in seeds 0 and 1, and 0..199 in seed 2 (a tie with it)
    rows = [_row("scratch", s, _flags(200)) for s in range(3)]
    rows += [
        _row("good", 0, _flags(260)),
        _row("good", 1, _flags(260)),
        _row("good", 2, _flags(200)),
    ]
    rows += [_row("bad", s, _flags(150)) for s in range(3)]
    table = {r["method"]: r for r in gains_with_intervals(rows, N, n_resamples=500)}
    assert set(table) == {"good", "bad"}
    good, bad = table["good"], table["bad"]
    assert good["acc"] == pytest.approx((65 + 65 + 50) / 3)
    assert good["acc_std"] == pytest.approx(np.std([65, 65, 50], ddof=1))
    assert good["gain"] == pytest.approx(10.0)  # (65 + 65 + 50) / 3 - 50
    assert good["gain_std"] == pytest.approx(np.std([15, 15, 0], ddof=1))  # per-seed gains
    assert good["low"] < 10.0 < good["high"] and good["low"] > 0
    # seeds 0 and 1: 60 images only "good" gets right, none the other way: p = 2 / 2**60
    assert (good["better"], good["worse"]) == (2, 0)
    assert bad["gain"] == pytest.approx(-12.5) and (bad["better"], bad["worse"]) == (0, 3)
    assert bad["high"] < 0


def test_correct_matrix_orders_seeds_and_names_old_rows():
    rows = [_row("kd", 2, _flags(3)), _row("kd", 0, _flags(1))]
    seeds, flags = correct_matrix(rows, "p", "kd", N)
    assert seeds == [0, 2] and flags.sum(axis=1).tolist() == [1, 3]
    with pytest.raises(KDTutorError, match="no runs"):
        correct_matrix(rows, "p", "at", N)
    with pytest.raises(KDTutorError, match="older suite"):
        correct_matrix([{**rows[0], "correct": ""}], "p", "kd", N)


def test_rank_agreement_matches_scipy_and_leaves_families_out():
    ours = {"a": 3.0, "b": 2.0, "c": 1.5, "d": -1.0, "e": 0.5, "x": 9.0}
    published = {"a": 2.0, "b": 2.5, "c": 1.0, "d": -0.5, "e": 0.2}  # x is not published
    families = {"a": "response", "b": "response", "c": "feature", "d": "feature", "e": "relation"}
    result = rank_agreement(ours, published, families, n_resamples=500)
    assert result.methods == ["a", "b", "c", "d", "e"]
    expected = stats.spearmanr([3, 2, 1.5, -1, 0.5], [2, 2.5, 1, -0.5, 0.2])
    assert result.rho == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.low <= result.rho <= result.high
    without_feature = stats.spearmanr([3, 2, 0.5], [2, 2.5, 0.2]).statistic
    assert result.leave_one_out["feature"] == pytest.approx(without_feature)
    with pytest.raises(KDTutorError, match="at least 3"):
        rank_agreement({"a": 1.0, "b": 2.0}, published, families)

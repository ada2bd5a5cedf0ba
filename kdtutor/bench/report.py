"""The comparison's numbers with their uncertainty: each method's gain over the student alone
with a test-set interval and paired tests, and the rank agreement with the published table
as a test that can fail.

Suite rows (:func:`~kdtutor.bench.knowledge.load_results`) carry each run's right/wrong flag
per test image (``correct``), so two methods are compared image by image:

* a method's **gain** is its mean last-epoch accuracy over seeds minus the student alone's;
  its interval resamples the test images (paired bootstrap of the per-image fraction of seeds
  that got the image right), so it says how much the *test set* could move the gain; the
  spread over seeds is reported beside it as a standard deviation;
* **McNemar's exact test** compares the method's and the student alone's run of the same seed
  (same initial weights, same batch order), one test per seed;
* the **rank agreement** is Spearman's rho between our mean gains and the published ones, with
  its p-value, a bootstrap interval over the methods, and its value with each knowledge family
  left out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import KDTutorError
from .significance import (
    decode_correct,
    leave_one_group_out,
    mcnemar_exact,
    paired_difference_interval,
    spearman_interval,
    spearman_test,
)
from .stats import mean_std

__all__ = ["RankAgreement", "correct_matrix", "gains_with_intervals", "rank_agreement"]


def correct_matrix(
    rows: Sequence[dict[str, Any]], pair: str, method: str, n_test: int
) -> tuple[list[int], np.ndarray]:
    """The seeds of ``(pair, method)`` in order, and their right/wrong flags per test image as
    a ``(seeds, n_test)`` boolean array."""
    runs = sorted((r for r in rows if r["pair"] == pair and r["method"] == method),
                  key=lambda r: r["seed"])  # fmt: skip
    if not runs:
        raise KDTutorError(f"no runs of {method!r} on the pair {pair!r} in these results.")
    missing = [r["seed"] for r in runs if not r["correct"]]
    if missing:
        raise KDTutorError(
            f"runs of {method!r} on {pair!r} (seeds {missing}) have no per-image flags: they "
            "come from an older suite; re-run them."
        )
    return [r["seed"] for r in runs], np.stack([decode_correct(r["correct"], n_test) for r in runs])


def gains_with_intervals(
    rows: Sequence[dict[str, Any]],
    n_test: int,
    *,
    baseline: str = "scratch",
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_resamples: int = 2000,
) -> list[dict[str, Any]]:
    """One row per (pair, method other than ``baseline``), in the order of ``rows``:

    ``acc`` and ``acc_std`` (last epoch, mean and std over seeds), ``gain`` over the baseline
    with its test-set interval ``low``/``high`` (paired bootstrap over images), ``gain_std``
    (the std over seeds of the gain of each seed over the baseline's run of the same seed:
    same initial weights and batch order, so the seed noise of the gain itself), and, from
    McNemar's test of each seed against the baseline's run of the same seed, ``better`` and
    ``worse`` (the number of seeds significantly above or below it at level ``alpha``).
    """
    order = list(dict.fromkeys((r["pair"], r["method"]) for r in rows))
    out = []
    for pair, method in order:
        if method == baseline:
            continue
        seeds, correct = correct_matrix(rows, pair, method, n_test)
        base_seeds, base = correct_matrix(rows, pair, baseline, n_test)
        gain, low, high = paired_difference_interval(
            correct.mean(axis=0), base.mean(axis=0), confidence=confidence,
            n_resamples=n_resamples,
        )  # fmt: skip
        better = worse = 0
        paired = []  # per seed: the method's accuracy minus the baseline's, same seed
        for seed, flags in zip(seeds, correct, strict=True):
            if seed not in base_seeds:
                continue
            same_seed = base[base_seeds.index(seed)]
            paired.append(100.0 * (flags.mean() - same_seed.mean()))
            test = mcnemar_exact(flags, same_seed)
            if test.p_value < alpha:
                better += test.only_a > test.only_b
                worse += test.only_b > test.only_a
        acc, acc_std = mean_std([100.0 * float(f.mean()) for f in correct])
        gain_std = mean_std(paired)[1] if paired else float("nan")
        out.append(
            {
                "pair": pair, "method": method, "seeds": len(seeds), "acc": acc,
                "acc_std": acc_std, "gain": gain, "gain_std": gain_std,
                "low": low, "high": high, "better": better, "worse": worse,
            }
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class RankAgreement:
    """Spearman's rho between our gains and the published ones, tested."""

    methods: list[str]
    ours: list[float]
    published: list[float]
    rho: float
    p_value: float
    """Two-sided p-value of rho = 0 (scipy's t approximation)."""
    low: float
    high: float
    """Bootstrap interval of rho, resampling the methods."""
    leave_one_out: dict[Hashable, float]
    """Rho with each family's methods left out."""


def rank_agreement(
    ours: Mapping[str, float],
    published: Mapping[str, float],
    families: Mapping[str, Hashable],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
) -> RankAgreement:
    """Rho over the methods in both ``ours`` and ``published`` (in ``ours``' order), its
    p-value, bootstrap interval and leave-one-family-out values."""
    methods = [m for m in ours if m in published]
    if len(methods) < 3:
        raise KDTutorError(f"need at least 3 methods in both rankings, got {methods}.")
    x = [ours[m] for m in methods]
    y = [published[m] for m in methods]
    rho, p = spearman_test(x, y)
    low, high = spearman_interval(x, y, confidence=confidence, n_resamples=n_resamples)
    loo = leave_one_group_out(x, y, [families[m] for m in methods])
    return RankAgreement(methods, x, y, rho, p, low, high, loo)

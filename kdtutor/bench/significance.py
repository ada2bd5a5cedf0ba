"""Uncertainty for comparison tables: can this test set tell two methods apart?

A test accuracy is a binomial proportion, so it carries sampling error of its own, on top of
the seed-to-seed spread: on 1,000 images at 95% the standard error is about 0.7 points. Two
methods scored on the same images are compared pairwise, image by image, which is far more
sensitive than comparing their two intervals. A rank correlation between two orderings of
methods gets a p-value, a bootstrap interval over the methods, and a leave-one-group-out
value, so that "the rankings agree" is a claim that can fail.

All of it uses :mod:`scipy.stats` (exact binomial intervals and tests, the bootstrap,
Spearman's rho); nothing here is hand-rolled statistics.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "McNemar",
    "accuracy_interval",
    "decode_correct",
    "encode_correct",
    "leave_one_group_out",
    "mcnemar_exact",
    "paired_difference_interval",
    "spearman_interval",
    "spearman_test",
]


def encode_correct(correct: Sequence[bool] | np.ndarray) -> str:
    """One flag per test image (right or wrong), packed 8 to a byte and base64-encoded: a
    compact text field that lets a results file hold what paired tests need."""
    flags = _as_bool(correct, "correct")
    return base64.b64encode(np.packbits(flags).tobytes()).decode("ascii")


def decode_correct(text: str, n: int) -> np.ndarray:
    """The ``n`` flags :func:`encode_correct` packed into ``text``."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    if bits.size < n or bits.size - n >= 8:
        raise ValueError(f"the encoded flags hold {bits.size} bits, not room for exactly {n}.")
    return bits[:n].astype(bool)


def accuracy_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a test accuracy, in percent.

    Args:
        correct: images classified correctly.
        n: images in the test set.
        confidence: coverage of the interval.
    """
    if not 0 <= correct <= n or n < 1:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got correct={correct}, n={n}.")
    ci = stats.binomtest(int(correct), int(n)).proportion_ci(confidence, method="exact")
    return 100.0 * ci.low, 100.0 * ci.high


@dataclass(frozen=True)
class McNemar:
    """An exact McNemar test of two classifiers on the same images."""

    only_a: int
    """Images ``a`` gets right and ``b`` wrong."""
    only_b: int
    """Images ``b`` gets right and ``a`` wrong."""
    p_value: float
    """Two-sided: the chance of a split of the discordant images at least this uneven if
    either classifier were as likely to win each of them."""


def _as_bool(values: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one flag per test image (1-D), got shape {array.shape}.")
    return array.astype(bool)


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """Exact McNemar test (McNemar, 1947): a binomial test of the discordant images.

    Only images where exactly one classifier is right carry information; under the null
    hypothesis each goes either way with probability 1/2.
    """
    a, b = _as_bool(a_correct, "a_correct"), _as_bool(b_correct, "b_correct")
    if a.shape != b.shape:
        raise ValueError(
            f"both classifiers must be scored on the same images: {a.shape} vs {b.shape}."
        )
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    return McNemar(only_a, only_b, float(p))


def _percentile_bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., float],
    confidence: float,
    n_resamples: int,
    seed: int,
    **options: bool,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (scipy.stats.bootstrap), seeded."""
    result = stats.bootstrap(
        data,
        statistic,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
        **options,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _as_scores(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one score per test image (1-D), got {array.shape}.")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name} must hold per-image scores in [0, 1] (right = 1, wrong = 0).")
    return array


def paired_difference_interval(
    a_correct: Sequence[float] | np.ndarray,
    b_correct: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus that of ``b`` (percentage points) with a paired bootstrap
    interval over the test images: (difference, low, high).

    Each argument holds one score per test image: a right/wrong flag, or the fraction of a
    method's seeds that got the image right (then the difference is that of the mean
    accuracies over seeds, and the interval covers the test-set sampling, not the seeds).
    """
    a, b = _as_scores(a_correct, "a_correct"), _as_scores(b_correct, "b_correct")
    if a.shape != b.shape:
        raise ValueError(f"both must be scored on the same images: {a.shape} vs {b.shape}.")
    diff = a - b
    if np.all(diff == diff[0]):
        value = 100.0 * float(diff[0])
        return value, value, value
    low, high = _percentile_bootstrap((diff,), np.mean, confidence, n_resamples, seed)
    return 100.0 * float(diff.mean()), 100.0 * low, 100.0 * high


def spearman_test(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (scipy's t approximation)."""
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need two sequences of equal length >= 3, got {len(x)} and {len(y)}.")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


def spearman_interval(
    x: Sequence[float],
    y: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of Spearman's rho, resampling the (x, y) pairs (the methods)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        with warnings.catch_warnings():  # a resample of one repeated method is constant
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            value = stats.spearmanr(a, b).statistic
        return 0.0 if np.isnan(value) else float(value)  # a resample of ties: no information

    return _percentile_bootstrap(
        (xs, ys), rho, confidence, n_resamples, seed, paired=True, vectorized=False
    )


def leave_one_group_out(
    x: Sequence[float], y: Sequence[float], groups: Sequence[Hashable]
) -> dict[Hashable, float]:
    """Spearman's rho of ``x`` and ``y`` with each group's entries left out in turn (e.g. each
    family of methods): how much of an agreement one group carries."""
    if not len(x) == len(y) == len(groups):
        raise ValueError("x, y and groups must have one entry per method.")
    out: dict[Hashable, float] = {}
    for group in dict.fromkeys(groups):
        keep = [i for i, g in enumerate(groups) if g != group]
        if len(keep) >= 3:
            out[group] = float(
                stats.spearmanr([x[i] for i in keep], [y[i] for i in keep]).statistic
            )
    return out

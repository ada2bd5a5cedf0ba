"""Small statistics for comparison tables: mean +- std and Spearman's rank correlation."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    if not values:
        raise ValueError("mean_std needs at least one value.")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def rank(values: Sequence[float]) -> list[float]:
    """Ranks from 1 (smallest) to n; tied values share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    r"""Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks.

    .. math:: \rho = \frac{\mathrm{cov}(r_x, r_y)}{\sigma_{r_x}\,\sigma_{r_y}}
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(
            f"spearman needs two sequences of equal length >= 2, got {len(x)} and {len(y)}."
        )
    rx, ry = rank(x), rank(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    if sx == 0 or sy == 0:
        return float("nan")
    return cov / (sx * sy)

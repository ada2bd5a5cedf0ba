"""Benchmarks and comparison tables: suites that train many runs and write CSV results.

``kdtutor bench --suite knowledge`` (see :mod:`kdtutor.bench.knowledge`) compares every
knowledge-type method on two teacher-student pairs beside RepDistiller's published numbers
(:mod:`kdtutor.bench.published`).
"""

from .published import PUBLISHED_CIFAR100, published_gains
from .stats import mean_std, rank, spearman

__all__ = ["PUBLISHED_CIFAR100", "mean_std", "published_gains", "rank", "spearman"]

"""Several seeds of one configuration: :func:`run_seeds`, and mean and std of best and last."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from ..seeding import seed_everything
from .loop import FitResult, fit, logger
from .recorder import EpochEnd


@dataclass
class SeedsResult:
    """Runs of one configuration over several seeds: mean and sample standard deviation (ddof=1)."""

    results: list[FitResult]
    seeds: list[int]

    @staticmethod
    def _mean_std(values: Sequence[float]) -> tuple[float, float]:
        t = torch.tensor(values, dtype=torch.float64)
        std = float(t.std(unbiased=True)) if len(values) > 1 else 0.0
        return float(t.mean()), std

    @property
    def best(self) -> tuple[float, float]:
        return self._mean_std([r.best_acc for r in self.results])

    @property
    def last(self) -> tuple[float, float]:
        return self._mean_std([r.last_acc for r in self.results])

    @property
    def method(self) -> str:
        return self.results[0].method

    def to_dict(self) -> dict[str, Any]:
        (bm, bs), (lm, ls) = self.best, self.last
        return {
            "method": self.method,
            "seeds": self.seeds,
            "best_mean": bm,
            "best_std": bs,
            "last_mean": lm,
            "last_std": ls,
            "runs": [r.to_dict() for r in self.results],
        }

    def __str__(self) -> str:
        (bm, bs), (lm, ls) = self.best, self.last
        return f"{self.method}: best {bm:.2f} ± {bs:.2f} | last {lm:.2f} ± {ls:.2f} ({len(self.seeds)} seeds)"


def parse_seeds(seeds: str | int | Sequence[int]) -> list[int]:
    """Accept ``"0,1,2"``, ``"0-4"``, ``3`` (meaning seed 3) or a sequence of ints."""
    if isinstance(seeds, bool):
        raise ConfigError(f"seeds must be integers, got {seeds!r}.")
    if isinstance(seeds, int):
        values = [seeds]
    elif isinstance(seeds, str):
        try:
            if "-" in seeds.strip()[1:] and "," not in seeds:
                lo, hi = seeds.split("-")
                values = list(range(int(lo), int(hi) + 1))
            else:
                values = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(
                f"could not read seeds {seeds!r}: write comma-separated non-negative integers like "
                "'0,1,2' or a range like '0-2'."
            ) from None
    else:
        values = list(seeds)
    if not values or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in values):
        raise ConfigError(
            f"seeds must be a non-empty list of non-negative integers, got {seeds!r}."
        )
    if len(set(values)) != len(values):
        raise ConfigError(f"seeds {values} repeat a value: every seed should appear once.")
    return values


def run_seeds(
    make: Callable[[int], nn.Module],
    train_data: Any,
    test_data: Any = None,
    *,
    seeds: str | Sequence[int] = (0, 1, 2),
    seed_log: Callable[[str], None] | None = None,
    resume: bool = False,
    on_epoch: Callable[[int], Callable[[EpochEnd], None] | None] | None = None,
    **fit_kwargs: Any,
) -> SeedsResult:
    """Build a fresh distiller per seed with ``make(seed)`` (after seeding) and ``fit`` it.

    A ``checkpoint=`` path may contain ``{seed}``, replaced by each run's seed. With
    ``resume=True`` each seed whose checkpoint exists continues from it (a finished one is
    not retrained). ``on_epoch(seed)`` gives each seed's ``fit(on_epoch=)`` callback (e.g. a
    :class:`~kdtutor.train.recorder.RunRecorder`). ``seed_log`` gets one line per seed
    (default: the ``kdtutor.train`` logger at INFO).

    Example:
        >>> run = run_seeds(lambda s: build_distiller("kd", build_model("cnn_small"), teacher),
        ...                 train, test, seeds=[0, 1, 2], epochs=10)  # doctest: +SKIP
        >>> run.best  # (mean, std)  # doctest: +SKIP
    """
    seed_list = parse_seeds(seeds)
    checkpoint = fit_kwargs.pop("checkpoint", None)
    if checkpoint is not None and len(seed_list) > 1 and "{seed}" not in str(checkpoint):
        raise ConfigError(
            f"checkpoint {checkpoint!r} would be overwritten by each of the {len(seed_list)} seeds: "
            "put {seed} in the path, e.g. 'runs/kd-{seed}.pt'."
        )
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint= (the path each seed resumes from).")
    results = []
    for seed in seed_list:
        seed_everything(seed)
        path = str(checkpoint).replace("{seed}", str(seed)) if checkpoint is not None else None
        start = path if resume and path is not None and Path(path).exists() else None
        results.append(
            fit(
                make(seed),
                train_data,
                test_data,
                seed=seed,
                checkpoint=path,
                resume=start,
                on_epoch=on_epoch(seed) if on_epoch is not None else None,
                **fit_kwargs,
            )
        )
        (seed_log or logger.info)(f"seed {seed}: {results[-1]}")
    return SeedsResult(results, seed_list)

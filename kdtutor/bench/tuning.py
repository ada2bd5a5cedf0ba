"""Equal tuning for the comparison: every method's loss weights chosen on a validation split,
with the same small budget.

The published loss weights were tuned for CIFAR-100, 240 epochs and students of about a
million parameters; some cripple a 9k-parameter student (FT at its published ``beta`` = 200
loses 30 points on one, and recovers at 2). A fair comparison gives each method the same
chance: here each method's :attr:`~kdtutor.methods.Distiller.loss_weights` (the weights of its
distillation terms against the cross-entropy) are multiplied by each of :data:`FACTORS`, one
run per factor on the preset's tuning pair (seed 0), each scored by its last-epoch accuracy
on the preset's validation images (never the test set). The factor that scores best is the
method's tuned factor (ties go to the factor nearest the published weights).

The factor scales the distillation terms only: most methods add them to a cross-entropy of
weight 1, so a small factor tends to the student alone; KD's label term has weight 0.1, so a
small factor also shrinks KD's whole loss, and with it its step size.

``kdtutor bench --suite knowledge --preset book --tune`` runs the grid into
``data/results/tuning_<preset>.csv`` (resumable, like the suite), and
``kdtutor bench --suite knowledge --preset book --weights tuned`` runs the suite at the
tuned weights into ``knowledge_<preset>_tuned.csv``; a method whose tuned factor is 1 reuses
its published-weight runs instead of repeating them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataNotFoundError, KDTutorError
from ..methods import get_method
from .knowledge import (
    COLUMNS,
    canonical_preset,
    get_preset,
    knowledge_methods,
    load_results,
    method_hparams,
    run_one,
    run_tasks,
    suite_header,
    write_results,
)
from .provenance import results_path

__all__ = [
    "FACTORS",
    "TUNING_COLUMNS",
    "default_tuned_results_path",
    "default_tuning_path",
    "load_tuning",
    "require_tuning",
    "run_tuned_suite",
    "run_tuning",
    "tunable_methods",
    "tuned_factors",
    "tuned_overrides",
    "weights_for",
]

FACTORS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
"""Multipliers of the published loss weights tried for every method: the same four runs each."""

TUNING_COLUMNS = (*COLUMNS, "factor")
"""The suite's columns (accuracies measured on the validation images) and the factor."""


def default_tuning_path(preset_name: str) -> Path:
    """``data/results/tuning_<preset>.csv`` (``$KDTUTOR_RESULTS`` replaces the folder)."""
    return results_path(f"tuning_{canonical_preset(preset_name)}.csv")


def tunable_methods(methods: Sequence[str] | None = None) -> list[str]:
    """The suite's methods that have loss weights to tune (not ``scratch`` nor Tf-KD)."""
    return [m for m in (methods or knowledge_methods()) if get_method(m).loss_weights]


def weights_for(method: str, factor: float, epochs: int, n_train: int | None) -> dict[str, Any]:
    """The method's hyperparameters for a run of ``epochs`` epochs with every loss weight
    multiplied by ``factor``, e.g. ``{"beta": 20.0}`` for FT at ``factor`` 0.1."""
    cls = get_method(method)
    values = {f.name: f.default for f in dataclasses.fields(cls.hparams_cls)}
    values.update(method_hparams(method, epochs, n_train))
    return {name: values[name] * factor for name in cls.loss_weights}


def load_tuning(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows (``factor`` as a float) and header of a tuning CSV."""
    rows, header = load_results(path)
    for row in rows:
        row["factor"] = float(row["factor"])
    return rows, header


def tuned_factors(rows: Sequence[dict[str, Any]], key: str = "last_acc") -> dict[str, float]:
    """Each tuned method's best factor by validation accuracy ``key``; ties go to the factor
    nearest 1 (the published weights)."""
    best: dict[str, tuple[float, float, float]] = {}
    for row in rows:
        score = (row[key], -abs(math.log10(row["factor"])), row["factor"])
        if row["method"] not in best or score > best[row["method"]]:
            best[row["method"]] = score
    return {method: score[2] for method, score in best.items()}


def run_tuning(
    preset_name: str = "book",
    *,
    methods: Sequence[str] | None = None,
    factors: Sequence[float] = FACTORS,
    pair: str | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run every (method, factor) of the tuning grid not yet in ``out`` on the preset's
    tuning pair (its first, or ``pair``), seed 0, scored on the validation images; returns
    all rows. Resumable: rows are written after each finished run."""
    preset = get_preset(preset_name)
    preset_name = canonical_preset(preset_name)
    if not preset.val_size:
        raise KDTutorError(f"preset {preset_name!r} has no validation split to tune on.")
    chosen = (
        preset.pairs[0]
        if pair is None
        else next((p for p in preset.pairs if p.label == pair), None)
    )
    if chosen is None:
        raise KDTutorError(
            f"unknown pair {pair!r}: pairs of this preset: {[p.label for p in preset.pairs]}."
        )
    bad = [f for f in factors if not (isinstance(f, int | float) and f > 0)]
    if bad:
        raise KDTutorError(f"tuning factors must be positive numbers, got {bad}.")
    methods = tunable_methods(methods)
    path = Path(out) if out is not None else default_tuning_path(preset_name)
    rows: list[dict[str, Any]] = load_tuning(path)[0] if path.exists() else []
    done = {(r["pair"], r["method"], r["factor"]) for r in rows}
    tasks = [
        (preset_name, chosen, method, float(f))
        for method in methods
        for f in factors
        if (chosen.label, method, float(f)) not in done
    ]
    header = [
        *suite_header(preset_name, command or "kdtutor " + " ".join(sys.argv[1:])),
        "accuracies: last and best epoch on the validation images (val_size of the preset)",
    ]
    if log:
        log(f"{len(tasks)} tuning runs to do ({len(done)} already in {path})")

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        write_results(path, header, rows, TUNING_COLUMNS)
        if log:
            log(f"{row['method']:<9} x{row['factor']:<6g} val {row['last_acc']:.2f}")

    run_tasks(_tuning_task, tasks, jobs, record)
    return rows


def _tuning_task(task: tuple[str, Any, str, float]) -> dict[str, Any]:
    """One tuning run (a module-level function, so that worker processes can run it)."""
    preset_name, pair, method, factor = task
    preset = get_preset(preset_name)
    weights = weights_for(method, factor, preset.epochs, preset.train_size)
    return {**run_one(pair, method, 0, preset, weights, evaluate="val"), "factor": factor}


def default_tuned_results_path(preset_name: str) -> Path:
    """``data/results/knowledge_<preset>_tuned.csv``: the suite at the tuned weights."""
    return results_path(f"knowledge_{canonical_preset(preset_name)}_tuned.csv")


def tuned_overrides(preset_name: str, factors: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The hyperparameters of every method whose tuned factor is not 1, for
    :func:`~kdtutor.bench.knowledge.run_suite`'s ``overrides``."""
    preset = get_preset(preset_name)
    return {
        method: weights_for(method, factor, preset.epochs, preset.train_size)
        for method, factor in factors.items()
        if factor != 1.0
    }


def run_tuned_suite(
    preset_name: str = "book",
    *,
    tuning: str | os.PathLike[str] | None = None,
    published: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    **suite_options: Any,
) -> list[dict[str, Any]]:
    """The suite at each method's tuned loss weights (from the tuning CSV ``tuning``), into
    ``out``; methods whose tuned factor is 1 copy their runs from the published-weight suite
    CSV ``published`` when it has them."""
    from .knowledge import default_results_path, run_suite

    factors = require_tuning(Path(tuning) if tuning else default_tuning_path(preset_name))
    return run_suite(
        preset_name,
        out=out if out is not None else default_tuned_results_path(preset_name),
        overrides=tuned_overrides(preset_name, factors),
        reuse=published if published is not None else default_results_path(preset_name),
        **suite_options,
    )


def require_tuning(path: Path) -> dict[str, float]:
    """The tuned factors stored at ``path``, or a clear error saying how to produce them."""
    if not path.exists():
        raise DataNotFoundError(
            f"no tuning results at {path}: run `kdtutor bench --suite knowledge --preset "
            "book --tune` first."
        )
    return tuned_factors(load_tuning(path)[0])

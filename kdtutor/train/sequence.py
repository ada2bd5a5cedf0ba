"""Sequences of tasks (lifelong learning): ``fit`` once per task, the last model teaching
the next, and the accuracy on every task seen so far after each step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import KDTutorError
from .evaluation import evaluate
from .loop import FitResult, fit


@dataclass
class SequenceResult:
    """What :func:`fit_sequence` returns.

    Attributes:
        accuracy: ``accuracy[i][j]``: accuracy (percent) on task ``j``'s test split after
            training on task ``i`` (``j <= i``; later tasks are not yet seen: ``None``).
        results: the :class:`FitResult` of each step.
    """

    accuracy: list[list[float | None]]
    results: list[FitResult]

    @property
    def average(self) -> list[float]:
        """Mean accuracy over the tasks seen so far, after each step."""
        return [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(self.accuracy)]  # type: ignore[arg-type, misc]

    @property
    def forgetting(self) -> list[float]:
        """For each task but the last: its best accuracy minus its accuracy at the end."""
        final = self.accuracy[-1]
        return [
            max(row[j] for row in self.accuracy[j:]) - final[j]  # type: ignore[type-var, operator]
            for j in range(len(final) - 1)
        ]


def fit_sequence(
    make: Callable[[int, nn.Module | None], nn.Module],
    tasks: Sequence[tuple[Any, Any]],
    *,
    model_of: Callable[[nn.Module], nn.Module] = lambda d: getattr(d, "student", d),
    log: Callable[[str], None] | None = None,
    **fit_kwargs: Any,
) -> SequenceResult:
    """Train on ``tasks`` (``(train, test)`` splits) in order.

    ``make(i, previous)`` builds what trains on task ``i``: a distiller or a plain model.
    ``previous`` is the model trained on task ``i - 1`` (``None`` for the first task), to
    use as the frozen teacher of the next step (Learning without Forgetting) or to copy and
    fine-tune. After each step the trained model (``model_of(distiller)``: its student) is
    scored on the test split of every task seen so far.
    """
    if not tasks:
        raise KDTutorError("fit_sequence needs at least one (train, test) task.")
    previous: nn.Module | None = None
    rows: list[list[float | None]] = []
    results = []
    for i, (train, _) in enumerate(tasks):
        trainee = make(i, previous)
        results.append(fit(trainee, train, tasks[i][1], **fit_kwargs))
        previous = model_of(trainee)
        row: list[float | None] = [
            evaluate(previous, test) if j <= i else None for j, (_, test) in enumerate(tasks)
        ]
        rows.append(row)
        if log is not None:
            seen = ", ".join(f"task {j + 1} {a:.1f}%" for j, a in enumerate(row[: i + 1]))
            log(f"after task {i + 1}: {seen}")
    return SequenceResult(rows, results)

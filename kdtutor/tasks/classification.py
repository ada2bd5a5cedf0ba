"""Classification: integer labels, top-1 accuracy counted exactly as the book always has."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..metrics import get_metric
from .base import Task, register_task


class _Counting:
    """A (sum, count) metric with torchmetrics' update/compute interface, in percent."""

    def __init__(self, name: str) -> None:
        self.score = get_metric(name)
        self.total, self.count = 0.0, 0

    def update(self, logits: Tensor, target: Tensor) -> None:
        s, n = self.score(logits.float(), target)
        self.total, self.count = self.total + s, self.count + n

    def compute(self) -> float:
        return 100.0 * self.total / max(1, self.count)


@register_task
class Classification(Task):
    """Logits ``(B, K)`` against labels ``(B,)``; accuracy (and top-5) in percent.

    Accuracy is counted (hits / samples) rather than taken from torchmetrics, so that the
    book's numbers stay exactly what they were: both give the same micro-averaged value.
    """

    name = "classification"
    primary = "accuracy"
    short = "acc"
    metric_names = ("accuracy", "top5")

    def __init__(self, metric: str = "accuracy") -> None:
        get_metric(metric)
        self.metric = metric

    def train_score(self, outputs: Any, y: Any) -> tuple[float, int] | None:
        if not isinstance(outputs, Tensor) or outputs.dim() != 2:
            return None
        return get_metric(self.metric)(outputs.detach().float(), y)

    def metrics(self) -> dict[str, Any]:
        return {self.metric: _Counting(self.metric)}

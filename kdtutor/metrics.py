"""Evaluation metrics, chosen per task by name (the trainer hard-wires none)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .errors import unknown_name

#: A metric returns (sum of per-sample scores, number of samples) for one batch, so batches
#: can be accumulated exactly; the epoch value is 100 * sum / count.
Metric = Callable[[Tensor, Tensor], tuple[float, int]]


def accuracy(logits: Tensor, target: Tensor) -> tuple[float, int]:
    """Top-1 accuracy counts: (number correct, batch size)."""
    return float((logits.argmax(dim=1) == target).sum().item()), int(target.shape[0])


def top5(logits: Tensor, target: Tensor) -> tuple[float, int]:
    """Top-5 accuracy counts."""
    k = min(5, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == target[:, None]).any(dim=1)
    return float(hits.sum().item()), int(target.shape[0])


METRICS: dict[str, Metric] = {"accuracy": accuracy, "top5": top5}


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``."""
    try:
        return METRICS[name]
    except KeyError:
        raise unknown_name("metric", name, METRICS) from None

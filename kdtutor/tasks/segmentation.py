"""Semantic segmentation: per-pixel class logits against a mask, mIoU from torchmetrics."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import Task, register_task


@register_task
class Segmentation(Task):
    """Logits ``(B, K, H, W)`` (or a dict with ``"out"``, as torchvision's segmentation models
    return) against masks ``(B, H, W)`` of class indices, ``ignore_index`` pixels left out.
    mIoU (primary) from torchmetrics' ``JaccardIndex`` (macro over classes) and pixel
    accuracy, in percent."""

    name = "segmentation"
    primary = "miou"
    short = "miou"
    metric_names = ("miou", "pixel_accuracy")

    def __init__(self, num_classes: int | None = None, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._metrics_for: int | None = None

    def train_score(self, outputs: Any, y: Any) -> tuple[float, int] | None:
        logits = _logits(outputs)
        keep = y != self.ignore_index
        hits = ((logits.detach().argmax(1) == y) & keep).sum()
        return float(hits), int(keep.sum())

    def metrics(self) -> dict[str, Any]:
        return {}  # built on the first batch, when the number of classes is known

    def _build(self, metrics: dict[str, Any], num_classes: int) -> None:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        ignore = self.ignore_index if self.ignore_index >= num_classes else None
        metrics["miou"] = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore)
        metrics["pixel_accuracy"] = MulticlassAccuracy(
            num_classes, average="micro", ignore_index=ignore
        )

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        logits = _logits(outputs)
        if not metrics:
            self._build(metrics, self.num_classes or logits.shape[1])
        pred = logits.argmax(1).cpu()
        for metric in metrics.values():
            metric.update(pred, y.cpu())

    def compute(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {name: 100.0 * float(m.compute()) for name, m in metrics.items()}


def _logits(outputs: Any) -> Tensor:
    return outputs["out"] if isinstance(outputs, dict) else outputs

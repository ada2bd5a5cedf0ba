"""Dense regression: depth maps, keypoint heatmaps, super-resolved images.

Outputs and targets are tensors of one shape (``(B, C, H, W)``); the primary score is PSNR
from torchmetrics (``data_range`` given, 1.0 for images in [0, 1]), with SSIM and the mean
squared error beside it.
"""

from __future__ import annotations

from typing import Any

from .base import Task, register_task


@register_task
class Regression(Task):
    """PSNR in dB (primary), SSIM and MSE, from torchmetrics."""

    name = "regression"
    primary = "psnr"
    unit = " dB"
    short = "psnr"
    metric_names = ("psnr", "ssim", "mse")

    def __init__(self, data_range: float = 1.0) -> None:
        self.data_range = data_range

    def metrics(self) -> dict[str, Any]:
        from torchmetrics import MeanSquaredError
        from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

        return {
            "psnr": PeakSignalNoiseRatio(data_range=self.data_range),
            "ssim": StructuralSimilarityIndexMeasure(data_range=self.data_range),
            "mse": MeanSquaredError(),
        }

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        preds, target = outputs.detach().float().cpu(), y.float().cpu()
        for name, metric in metrics.items():
            if name == "mse":
                metric.update(preds.flatten(), target.flatten())
            else:
                metric.update(preds, target)

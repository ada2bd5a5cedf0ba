"""Monocular depth: a predicted depth map against the true one, scored as depth papers do.

Outputs and targets are depth maps of one shape, ``(B, 1, H, W)`` (or ``(B, H, W)``), in
the data's depth units; pixels whose true depth is not positive are left out (the scenes of
chapter 8 have none). The three numbers are Eigen et al.'s (NIPS 2014, section 4.1) as
Monodepth2 computes them (``layers.py: compute_depth_errors`` and ``evaluate_depth.py``, read
in copies of those files: each image scored, the scores averaged over images):

* AbsRel ``= mean_i |d^_i - d_i| / d_i`` (primary, lower is better), from torchmetrics'
  ``MeanAbsolutePercentageError`` (the same formula, pooled over pixels: with every map the
  same size, the pooled mean equals the mean over images of the per-image means);
* RMSE ``= mean over images of sqrt(mean_i (d^_i - d_i)^2)``, in the data's units;
* delta1 ``= fraction of pixels with max(d^/d, d/d^) < 1.25``.

All three are fractions or depth units, as depth tables print them (AbsRel 0.115, delta1
0.877), not percentages.

>>> import torch
>>> from kdtutor.tasks.depth import Depth
>>> task = Depth()
>>> metrics = task.metrics()
>>> target = torch.full((2, 1, 4, 4), 10.0)
>>> task.update(metrics, target * 1.1, target)
>>> {k: round(v, 4) for k, v in task.compute(metrics).items()}
{'absrel': 0.1, 'rmse': 1.0, 'delta1': 1.0}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ShapeMismatchError
from .base import Task, register_task

__all__ = ["Depth", "delta_accuracy", "per_image_rmse"]


def per_image_rmse(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """The root mean squared error of each image, ``sqrt(mean_i (d^_i - d_i)^2)`` over its
    valid pixels (Eigen et al. 2014's RMSE, computed per image as Monodepth2 does).

    Args:
        pred: predicted depth ``(B, ...)``.
        target: true depth, the shape of ``pred``.
        valid: pixels to score (default: every pixel), the shape of ``pred``.

    Returns:
        One RMSE per image, ``(B,)`` float64 (NaN for an image with no valid pixel).
    """
    pred, target = pred.double().flatten(1), target.double().flatten(1)
    keep = torch.ones_like(pred) if valid is None else valid.flatten(1).double()
    sq = ((pred - target) ** 2 * keep).sum(1)
    return (sq / keep.sum(1)).sqrt()


def delta_accuracy(pred: Tensor, target: Tensor, threshold: float = 1.25) -> Tensor:
    """Per pixel, whether ``max(d^/d, d/d^) < threshold`` (Eigen et al. 2014's threshold
    accuracy delta; 1.25 for delta1). Predictions are clamped to at least 1e-6, so a
    prediction of zero or less counts as a miss.

    Returns:
        A boolean tensor of the shape of ``pred``.
    """
    pred = pred.double().clamp_min(1e-6)
    target = target.double()
    return torch.maximum(pred / target, target / pred) < threshold


class _PerImageMean:
    """Mean over images of a per-image score: (sum, count) in float64."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, scores: Tensor) -> None:
        self.total += float(scores.sum())
        self.count += int(scores.numel())

    def compute(self) -> float:
        return self.total / self.count if self.count else float("nan")


class _Fraction:
    """Hits over counted items, accumulated exactly (Python integers)."""

    def __init__(self) -> None:
        self.hits, self.count = 0, 0

    def update(self, hits: Tensor) -> None:
        self.hits += int(hits.sum())
        self.count += int(hits.numel())

    def compute(self) -> float:
        return self.hits / self.count if self.count else float("nan")


def _prediction(outputs: Any) -> Tensor:
    return outputs["out"] if isinstance(outputs, dict) else outputs


@register_task
class Depth(Task):
    """Depth maps ``(B, 1, H, W)`` against true depth: AbsRel (primary, lower is better),
    RMSE (mean over images of each image's RMSE) and delta1 (fraction of pixels within a
    factor 1.25), as Eigen et al. 2014 define them and Monodepth2 averages them.

    AbsRel is torchmetrics' ``MeanAbsolutePercentageError`` (``|d^ - d| / max(|d|, eps)``
    summed over pixels, divided by their count; a fraction, not multiplied by 100). RMSE is
    not torchmetrics' ``MeanSquaredError(squared=False)``, which pools the squared errors of
    every pixel of the split before the root: depth benchmarks take the root per image, and
    the two differ as soon as the error varies between images. delta1 is counted here.
    """

    name = "depth"
    primary = "absrel"
    short = "absrel"
    higher_is_better = False
    unit = ""
    decimals = 3
    metric_names = ("absrel", "rmse", "delta1")

    def metrics(self) -> dict[str, Any]:
        from torchmetrics import MeanAbsolutePercentageError

        absrel = MeanAbsolutePercentageError()
        absrel.set_dtype(torch.float64)
        return {"absrel": absrel, "rmse": _PerImageMean(), "delta1": _Fraction()}

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        pred = _prediction(outputs).detach().double().cpu()
        target = y.double().cpu()
        if pred.shape != target.shape:
            if pred.numel() != target.numel():
                raise ShapeMismatchError(
                    f"depth predictions {tuple(pred.shape)} do not match the depth maps "
                    f"{tuple(target.shape)}: the network must predict one depth per pixel."
                )
            pred = pred.reshape(target.shape)
        valid = target > 0
        metrics["absrel"].update(pred[valid], target[valid])
        rmse = per_image_rmse(pred, target, valid)
        metrics["rmse"].update(rmse[~rmse.isnan()])
        metrics["delta1"].update(delta_accuracy(pred[valid], target[valid]))

    def compute(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {name: float(metric.compute()) for name, metric in metrics.items()}

"""Keypoints, top-down: one heatmap per keypoint slot, scored by PCK.

A network predicts heatmaps ``(B, J, h, w)`` for crops centred on one object each; targets
are a dict of tensors, as ``default_collate`` stacks them:

* ``"keypoints"``: ``(B, J, 2)`` (or ``(B, J, 3)``, the third column ignored): the true
  ``(x, y)`` of each slot **in heatmap pixels**, ``x`` the column and ``y`` the row, integer
  values at pixel centres (where a Gaussian target ``exp(-((u - x)^2 + (v - y)^2) / 2 s^2)``
  sampled at integer ``(u, v)`` peaks);
* ``"weight"``: ``(B, J)`` or ``(B, J, 1)``: 0 for a slot that is not scored (the
  triangle's empty 4th slot), 1 otherwise (pytorch-pose's ``target_weight``);
* ``"scale"``: ``(B,)``: the normalising length (the object's box side) in the same heatmap
  pixels;
* ``"heatmaps"``: the training targets, not used for scoring.

Decoding (:func:`decode_heatmaps`) is the Stacked Hourglass convention as bearpaw/pytorch-pose
writes it (``pose/utils/evaluation.py: final_preds``; not verified at the source here):
the argmax of each map, moved a quarter pixel toward the larger of its two neighbours along
``x`` and along ``y`` when the argmax is not on the border. PCK@a (:func:`pck_hits`) counts a slot as
correct when ``||p - g|| / scale <= a`` (pytorch-pose's ``dist_acc`` uses ``<=``); PCK@0.2
of the box side plays the part of MPII's PCKh@0.5 (half the head segment).

>>> import torch
>>> from kdtutor.tasks.keypoints import decode_heatmaps
>>> maps = torch.zeros(1, 1, 8, 8)
>>> maps[0, 0, 3, 5], maps[0, 0, 3, 6] = 1.0, 0.5
>>> decode_heatmaps(maps)
tensor([[[5.2500, 3.0000]]])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ShapeMismatchError
from .base import Task, register_task

__all__ = ["Keypoints", "decode_heatmaps", "pck_hits"]


def decode_heatmaps(heatmaps: Tensor) -> Tensor:
    """Keypoint coordinates from heatmaps: argmax plus a quarter-pixel shift.

    For each map, ``(x, y)`` is the position of its largest value (the first one in row-major
    order on a tie); then, when the peak is not on the border (``0 < x < w - 1`` and
    ``0 < y < h - 1``), ``x += 0.25 * sign(H[y, x + 1] - H[y, x - 1])`` and ``y += 0.25 *
    sign(H[y + 1, x] - H[y - 1, x])`` (the Hourglass convention, Newell et al. 2016, as
    pytorch-pose's ``final_preds`` applies it; that code also zeroes the coordinates of a
    map whose maximum is not positive, which is not done here).

    Args:
        heatmaps: ``(B, J, h, w)``.

    Returns:
        ``(B, J, 2)`` float32 ``(x, y)`` in heatmap pixels (integers at pixel centres).
    """
    if heatmaps.dim() != 4:
        raise ShapeMismatchError(
            f"heatmaps must be (B, J, h, w), got shape {tuple(heatmaps.shape)}."
        )
    b, j, h, w = heatmaps.shape
    maps = heatmaps.detach().float().reshape(b * j, h, w)
    flat = maps.reshape(b * j, h * w).argmax(1)
    y, x = flat // w, flat % w
    rows = torch.arange(b * j)
    coords = torch.stack([x, y], 1).float()
    inner = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    right = maps[rows, y, (x + 1).clamp(max=w - 1)]
    left = maps[rows, y, (x - 1).clamp(min=0)]
    below = maps[rows, (y + 1).clamp(max=h - 1), x]
    above = maps[rows, (y - 1).clamp(min=0), x]
    coords[:, 0] += 0.25 * torch.sign(right - left) * inner
    coords[:, 1] += 0.25 * torch.sign(below - above) * inner
    return coords.reshape(b, j, 2)


def pck_hits(pred: Tensor, target: Tensor, scale: Tensor, alpha: float) -> Tensor:
    """Whether each predicted keypoint lies within ``alpha * scale`` of the true one.

    ``||p_bj - g_bj||_2 / scale_b <= alpha`` (PCK, Yang and Ramanan 2013; normalised by
    the box side here, as PCKh is by the head segment).

    Args:
        pred: ``(B, J, 2)`` predicted ``(x, y)``.
        target: ``(B, J, 2)`` true ``(x, y)``, in the units of ``pred``.
        scale: ``(B,)`` normalising lengths, in the same units.
        alpha: the threshold as a fraction of ``scale`` (0.2 for PCK@0.2).

    Returns:
        ``(B, J)`` booleans.
    """
    dist = (pred.double() - target.double()).norm(dim=-1)
    return dist / scale.double().reshape(-1, 1) <= alpha


class _PCK:
    """Hits and counted slots per joint for one threshold, accumulated exactly."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.hits: list[int] = []
        self.count: list[int] = []

    def update(self, pred: Tensor, target: Tensor, scale: Tensor, weight: Tensor) -> None:
        hits = pck_hits(pred, target, scale, self.alpha) & weight
        joints = hits.shape[1]
        if not self.count:
            self.hits, self.count = [0] * joints, [0] * joints
        for j in range(joints):
            self.hits[j] += int(hits[:, j].sum())
            self.count[j] += int(weight[:, j].sum())

    def compute(self) -> float:
        total = sum(self.count)
        return 100.0 * sum(self.hits) / total if total else float("nan")

    def per_joint(self) -> list[float]:
        return [
            100.0 * h / c if c else float("nan") for h, c in zip(self.hits, self.count, strict=True)
        ]


@register_task
class Keypoints(Task):
    """Heatmaps ``(B, J, h, w)`` against keypoints in heatmap pixels: PCK@0.2 (primary) and
    PCK@0.1 of the box side over every scored slot, and PCK@0.2 per slot
    (``pck02_slot<j>``), in percent. Written here: torchmetrics has no PCK.
    """

    name = "keypoints"
    primary = "pck02"
    short = "pck02"
    metric_names = ("pck02", "pck01")

    def batch_size(self, y: Any) -> int:
        return len(y["keypoints"]) if isinstance(y, dict) else len(y)

    def metrics(self) -> dict[str, Any]:
        return {"pck02": _PCK(0.2), "pck01": _PCK(0.1)}

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        heatmaps = outputs["out"] if isinstance(outputs, dict) else outputs
        pred = decode_heatmaps(heatmaps.cpu())
        target = y["keypoints"][..., :2].cpu()
        if target.shape != pred.shape:
            raise ShapeMismatchError(
                f"{pred.shape[1]} heatmaps per sample do not match the targets' keypoints "
                f"{tuple(y['keypoints'].shape)}: the network needs one heatmap per slot."
            )
        weight = y["weight"].cpu().reshape(pred.shape[:2]) > 0
        scale = y["scale"].cpu().reshape(-1)
        for metric in metrics.values():
            metric.update(pred, target, scale, weight)

    def compute(self, metrics: dict[str, Any]) -> dict[str, float]:
        scores = {name: metric.compute() for name, metric in metrics.items()}
        for j, value in enumerate(metrics["pck02"].per_joint()):
            scores[f"pck02_slot{j}"] = value
        return scores

"""Lane detection: slot segmentation plus existence, scored as CULane and TuSimple score it.

A network's eval output is a dict ``{"out": (B, 1 + S, H, W) slot logits (0 background,
1..S the lane slots), "exist": (B, S) existence logits}`` at the image's resolution; targets
are a dict ``{"mask": (B, H, W), "exist": (B, S), "points": (B, S, R)}`` where ``points``
holds each slot's column ``x`` at the R sample rows (``-1`` where the lane is absent).

**Lanes.** A lane is a slot with at least 2 points at the sample rows, the points joined in
row order. Predicted lanes (:func:`decode_lanes`, SCNN's and ENet-SAD's ``prob2lines``
convention, not verified here): for each slot whose existence probability exceeds 0.5, at each sample row the
column of the largest slot probability (softmax over the 1 + S channels) if that probability
exceeds 0.3.

**CULane F1** (:func:`culane_counts`; CULane's evaluator, XingangPan/SCNN
``tools/lane_evaluation/src/counter.cpp`` and ``lane_compare.cpp``, read in the copy of
cardwing/Codes-for-Lane-Detection): each lane is drawn ``line`` pixels wide
(:func:`draw_lanes`), the IoU of every (true, predicted) pair is computed, the pairs are
matched one-to-one maximising the summed IoU (``scipy.optimize.linear_sum_assignment``; the
evaluator calls its own bipartite matcher, ``hungarianGraph.hpp``, not read), and a matched pair with IoU > ``iou_threshold`` is a
true positive; ``FP = predicted - TP``, ``FN = true - TP``, summed over the split, then
``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``, ``F1 = 2 P R / (P + R)`` (0 when
a denominator is 0; the evaluator returns -1 there). Two deviations: the evaluator draws
OpenCV lines of thickness ``line`` through a cubic-spline interpolation of the points, here
the pixels whose centre lies within ``line / 2`` of the polyline through the points; and
CULane runs it with width 30 at 1640 x 590 (not verified), here 3 at 128 px.

**TuSimple accuracy** (:func:`tusimple_accuracy`; TuSimple/tusimple-benchmark
``evaluate/lane.py: LaneEval.bench`` at ``365c4cd``): per image, each true lane's accuracy is
the best over predicted lanes of the fraction of sample rows where ``|x_pred - x_true| <
pixel_threshold / cos(theta)`` (theta the lane's angle, from a least-squares fit of ``x`` on
the row; a row absent from both lanes counts as matched, as ``-100 == -100`` does there);
the image's score is their sum over ``max(min(4, n_true), 1)`` (the worst dropped beyond 4
lanes; 0 when the image has more than ``n_true + 2`` predicted lanes; 0 for an image with no
true lane, whose sum is empty), averaged over images. ``pixel_threshold`` 20 px at TuSimple's 1280 px
width scales to 2 px at 128.

All four in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ShapeMismatchError
from .base import Task, register_task

__all__ = [
    "Lanes",
    "culane_counts",
    "decode_lanes",
    "default_rows",
    "draw_lanes",
    "lane_iou",
    "tusimple_accuracy",
]


def default_rows(height: int, count: int) -> Tensor:
    """``count`` sample rows spread evenly from the top row to the bottom one, rounded:
    ``round(linspace(0, height - 1, count))``, int64."""
    return torch.linspace(0, height - 1, count).round().long()


def decode_lanes(
    logits: Tensor,
    exist_logits: Tensor,
    rows: Tensor,
    exist_threshold: float = 0.5,
    point_threshold: float = 0.3,
) -> Tensor:
    """Lane points from slot logits and existence logits (SCNN's ``prob2lines`` rule).

    For slot s (channel ``s + 1`` of the softmax over channels) with ``sigmoid(exist_s) >
    exist_threshold``, at each sample row the column of the largest probability, kept if
    that probability exceeds ``point_threshold``; a slot left with fewer than 2 points is
    no lane.

    Args:
        logits: ``(B, 1 + S, H, W)`` slot logits.
        exist_logits: ``(B, S)`` existence logits.
        rows: ``(R,)`` the sample rows (int64, in ``[0, H)``).
        exist_threshold: the existence probability a slot must exceed.
        point_threshold: the probability a point must exceed.

    Returns:
        ``(B, S, R)`` float32 columns, ``-1`` where there is no point.
    """
    prob = logits.detach().float()[:, :, rows.long(), :].softmax(1)[:, 1:]  # (B, S, R, W)
    value, column = prob.max(-1)
    points = torch.where(value > point_threshold, column.float(), torch.full_like(value, -1.0))
    exists = exist_logits.detach().float().sigmoid() > exist_threshold
    points = torch.where(exists[..., None], points, torch.full_like(points, -1.0))
    too_few = (points >= 0).sum(-1) < 2
    return torch.where(too_few[..., None], torch.full_like(points, -1.0), points)


def _lanes_of(points: Tensor, rows: Tensor) -> list[np.ndarray]:
    """The lanes of one image: for each slot with at least 2 points, its ``(x, y)`` points
    ``(n, 2)`` in row order."""
    lanes = []
    y = rows.double().cpu().numpy()
    for slot in points.double().cpu().numpy():
        keep = slot >= 0
        if keep.sum() >= 2:
            lane = np.stack([slot[keep], y[keep]], 1)
            lanes.append(lane[np.argsort(lane[:, 1], kind="stable")])
    return lanes


def draw_lanes(lanes: Sequence[np.ndarray], height: int, width: int, line: float) -> np.ndarray:
    """Each lane drawn ``line`` pixels wide: the pixels whose centre ``(column, row)`` lies
    within ``line / 2`` of the polyline through the lane's points.

    Args:
        lanes: polylines, each ``(n, 2)`` points ``(x, y)``, ``n >= 2``.
        height: image height.
        width: image width.
        line: line width in pixels.

    Returns:
        ``(len(lanes), height, width)`` booleans.
    """
    masks = np.zeros((len(lanes), height, width), dtype=bool)
    lanes = [np.asarray(lane, dtype=np.float64).reshape(-1, 2) for lane in lanes]
    if not any(len(lane) >= 2 for lane in lanes):
        return masks
    # every segment of every lane at once, each on the pixels of its own bounding box grown
    # by the radius (a window as large as the largest box; pixels outside a box are masked)
    a = np.concatenate([lane[:-1] for lane in lanes])
    b = np.concatenate([lane[1:] for lane in lanes])
    owner = np.concatenate([np.full(max(len(lane) - 1, 0), k) for k, lane in enumerate(lanes)])
    radius = line / 2
    low, high = np.minimum(a, b) - radius, np.maximum(a, b) + radius
    x0 = np.clip(np.ceil(low[:, 0]), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(high[:, 0]), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(low[:, 1]), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(high[:, 1]), -1, height - 1).astype(np.int64)
    rows = max(int((y1 - y0).max()) + 1, 1)
    cols = max(int((x1 - x0).max()) + 1, 1)
    yy = (y0[:, None] + np.arange(rows)[None])[:, :, None].astype(np.float64)  # (S, rows, 1)
    xx = (x0[:, None] + np.arange(cols)[None])[:, None, :].astype(np.float64)  # (S, 1, cols)
    inside = (yy <= y1[:, None, None]) & (xx <= x1[:, None, None])
    ab = b - a
    length2 = (ab**2).sum(1)[:, None, None]
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    abx, aby = ab[:, 0, None, None], ab[:, 1, None, None]
    t = ((xx - ax) * abx + (yy - ay) * aby) / np.where(length2 > 0, length2, 1.0)
    t = np.where(length2 > 0, np.clip(t, 0.0, 1.0), 0.0)
    dist2 = (xx - ax - t * abx) ** 2 + (yy - ay - t * aby) ** 2
    segment, r, c = np.nonzero(inside & (dist2 <= radius**2))
    masks[owner[segment], y0[segment] + r, x0[segment] + c] = True
    return masks


def lane_iou(true_masks: np.ndarray, pred_masks: np.ndarray) -> np.ndarray:
    """IoU of every (true, predicted) pair of drawn lanes: ``|A & B| / |A | B|`` (0 when
    both are empty). Returns ``(n_true, n_pred)``."""
    t = true_masks.reshape(len(true_masks), -1).astype(np.float64)
    p = pred_masks.reshape(len(pred_masks), -1).astype(np.float64)
    inter = t @ p.T
    union = t.sum(1)[:, None] + p.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def culane_counts(
    true_lanes: Sequence[np.ndarray],
    pred_lanes: Sequence[np.ndarray],
    height: int,
    width: int,
    line: float = 3.0,
    iou_threshold: float = 0.5,
) -> tuple[int, int, int]:
    """CULane's counts for one image (``Counter::count_im_pair``): lanes drawn ``line``
    pixels wide, matched one-to-one by ``linear_sum_assignment`` maximising the summed IoU,
    a match with IoU > ``iou_threshold`` a true positive.

    Returns:
        ``(TP, FP, FN)``.
    """
    if not true_lanes:
        return 0, len(pred_lanes), 0
    if not pred_lanes:
        return 0, 0, len(true_lanes)
    from scipy.optimize import linear_sum_assignment

    iou = lane_iou(
        draw_lanes(true_lanes, height, width, line), draw_lanes(pred_lanes, height, width, line)
    )
    r, c = linear_sum_assignment(iou, maximize=True)
    tp = int((iou[r, c] > iou_threshold).sum())
    return tp, len(pred_lanes) - tp, len(true_lanes) - tp


def tusimple_accuracy(
    true_points: np.ndarray,
    pred_points: np.ndarray,
    rows: np.ndarray,
    pixel_threshold: float = 2.0,
) -> float:
    """TuSimple's accuracy of one image (``LaneEval.bench``).

    Args:
        true_points: ``(n_true, R)`` columns of the true lanes at the sample rows, ``< 0``
            where absent.
        pred_points: ``(n_pred, R)`` the same for the predicted lanes.
        rows: ``(R,)`` the sample rows.
        pixel_threshold: the point tolerance before the angle correction (20 at 1280 px).

    Returns:
        The image's accuracy, a fraction.
    """
    n_true, n_pred = len(true_points), len(pred_points)
    if n_true + 2 < n_pred:
        return 0.0
    rows = np.asarray(rows, dtype=np.float64)
    pred = np.where(np.asarray(pred_points) >= 0, pred_points, -100.0)
    accs = []
    for lane in np.asarray(true_points, dtype=np.float64):
        keep = lane >= 0
        theta = 0.0
        if keep.sum() > 1:
            theta = float(np.arctan(np.polyfit(rows[keep], lane[keep], 1)[0]))
        threshold = pixel_threshold / np.cos(theta)
        gt = np.where(keep, lane, -100.0)
        per_pred = [np.mean(np.abs(p - gt) < threshold) for p in pred]
        accs.append(max(per_pred) if per_pred else 0.0)
    total = sum(accs)
    if n_true > 4:
        total -= min(accs)
    return float(total / max(min(4.0, n_true), 1.0))


class _LaneCounts:
    """CULane's TP/FP/FN and TuSimple's per-image accuracies, summed over the split."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0
        self.tusimple, self.images = 0.0, 0

    def compute(self) -> dict[str, float]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        tusimple = self.tusimple / self.images if self.images else float("nan")
        return {
            "f1": 100.0 * f1,
            "precision": 100.0 * precision,
            "recall": 100.0 * recall,
            "tusimple_acc": 100.0 * tusimple,
        }


@register_task
class Lanes(Task):
    """Slot logits and existence logits against lane points at sample rows: CULane F1
    (primary), precision and recall, and TuSimple accuracy, in percent. Written here
    (no maintained Python package has CULane's evaluator); the matching is scipy's.

    Args:
        rows: the sample rows of the targets' ``points`` (default: ``default_rows(H, R)``,
            evenly spread over the image).
        line: the width lanes are drawn at for CULane's IoU (3 px at 128 px).
        iou_threshold: the IoU a match must exceed to be a true positive (CULane's 0.5).
        exist_threshold: the existence probability a predicted slot must exceed.
        point_threshold: the probability a predicted point must exceed (0.3).
        pixel_threshold: TuSimple's point tolerance (2 px at 128 px).
    """

    name = "lanes"
    primary = "f1"
    short = "f1"
    metric_names = ("f1", "precision", "recall", "tusimple_acc")

    def __init__(
        self,
        rows: Sequence[int] | Tensor | None = None,
        line: float = 3.0,
        iou_threshold: float = 0.5,
        exist_threshold: float = 0.5,
        point_threshold: float = 0.3,
        pixel_threshold: float = 2.0,
    ) -> None:
        self.rows = None if rows is None else torch.as_tensor(rows).long()
        self.line = line
        self.iou_threshold = iou_threshold
        self.exist_threshold = exist_threshold
        self.point_threshold = point_threshold
        self.pixel_threshold = pixel_threshold

    def batch_size(self, y: Any) -> int:
        return len(y["points"]) if isinstance(y, dict) else len(y)

    def metrics(self) -> dict[str, Any]:
        return {"lanes": _LaneCounts()}

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        logits, exist = outputs["out"].cpu(), outputs["exist"].cpu()
        true = y["points"].cpu()
        height, width = logits.shape[-2:]
        rows = self.rows if self.rows is not None else default_rows(height, true.shape[-1])
        if rows.numel() != true.shape[-1] or logits.shape[1] != true.shape[1] + 1:
            raise ShapeMismatchError(
                f"lane outputs {tuple(logits.shape)} with {rows.numel()} sample rows do not "
                f"match the targets' points {tuple(true.shape)} (slots + background channels, "
                "one column per sample row)."
            )
        pred = decode_lanes(logits, exist, rows, self.exist_threshold, self.point_threshold)
        counts = metrics["lanes"]
        for t, p in zip(true, pred, strict=True):
            true_lanes, pred_lanes = _lanes_of(t, rows), _lanes_of(p, rows)
            tp, fp, fn = culane_counts(
                true_lanes, pred_lanes, height, width, self.line, self.iou_threshold
            )
            counts.tp, counts.fp, counts.fn = counts.tp + tp, counts.fp + fp, counts.fn + fn
            t_np, p_np = t.double().numpy(), p.double().numpy()
            true_rows = t_np[(t_np >= 0).sum(1) >= 2]
            pred_rows = p_np[(p_np >= 0).sum(1) >= 2]
            counts.tusimple += tusimple_accuracy(
                true_rows, pred_rows, rows.numpy(), self.pixel_threshold
            )
            counts.images += 1

    def compute(self, metrics: dict[str, Any]) -> dict[str, float]:
        return metrics["lanes"].compute()

"""Object detection: torchvision's conventions, mAP from torchmetrics.

Inputs are a batch of images ``(B, C, H, W)`` (or a list of images); targets are a list of
dicts with ``boxes`` (``(N_i, 4)`` float, ``xyxy`` pixels) and ``labels`` (``(N_i,)`` int64),
as torchvision's detection models take them. A network's eval outputs are torchvision's list
of dicts with ``boxes``, ``scores`` and ``labels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import Task, register_task


@register_task
class Detection(Task):
    """mAP@0.5 (primary) and mAP@[.5:.95] in percent, from torchmetrics'
    ``MeanAveragePrecision`` (pycocotools backend: COCO's own evaluation)."""

    name = "detection"
    primary = "map_50"
    short = "map50"
    metric_names = ("map_50", "map")
    uncacheable = (
        "a detector's outputs are lists of boxes of varying length, which the teacher-output "
        "cache (tensors, one row per sample) does not store"
    )

    def collate(self, samples: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
        images = [s[0] for s in samples]
        same = all(im.shape == images[0].shape for im in images)
        return (torch.stack(images) if same else images), [s[1] for s in samples]

    def metrics(self) -> dict[str, Any]:
        from pycocotools.cocoeval import Params
        from torchmetrics.detection import MeanAveragePrecision

        # COCO's own thresholds: torchmetrics' defaults are float32 linspaces, which COCOeval
        # compares against its float64 ones and then misses (tests/test_detection_cocoeval.py)
        coco = Params(iouType="bbox")
        return {
            "map": MeanAveragePrecision(
                box_format="xyxy",
                backend="pycocotools",
                iou_thresholds=coco.iouThrs.tolist(),
                rec_thresholds=coco.recThrs.tolist(),
            )
        }

    def update(self, metrics: dict[str, Any], outputs: Any, y: Any) -> None:
        preds = [{k: v.detach().cpu() for k, v in o.items()} for o in outputs]
        target = [{k: v.cpu() for k, v in t.items()} for t in y]
        metrics["map"].update(preds, target)

    def compute(self, metrics: dict[str, Any]) -> dict[str, float]:
        result = metrics["map"].compute()
        return {"map_50": 100.0 * float(result["map_50"]), "map": 100.0 * float(result["map"])}

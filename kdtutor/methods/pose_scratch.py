"""The pose baseline: the student trained alone to regress the ground-truth heatmaps.

``scratch`` cannot serve here: its loss is a cross entropy over classes, and a pose network
regresses one heatmap per keypoint slot against dict targets (``"heatmaps"``, ``"weight"``).
This is fast pose distillation with ``alpha = 0`` (``fpd`` at ``alpha=0`` gives exactly these
losses), kept as its own method so that it needs no teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..losses.dense import heatmap_mse
from ._dense import DenseDistiller, heatmap_targets, output_map
from .base import HParams
from .registry import register_method

__all__ = ["PoseScratch", "PoseScratchHParams"]


@dataclass(frozen=True)
class PoseScratchHParams(HParams):
    """``use_target_weight``: multiply both heatmaps of a slot by its ``weight`` (0 for the
    triangle's empty fourth slot; HRNet's convention), default on."""

    use_target_weight: bool = True


@register_method
class PoseScratch(DenseDistiller):
    r"""Train a pose student alone: :math:`\mathcal{L} = \mathrm{MSE}(w H_s, w H_{gt})`, the
    element mean over the batch's heatmaps (:func:`~kdtutor.losses.dense.heatmap_mse`)."""

    name = "pose_scratch"
    task = "keypoints"
    paper = "baseline: the pose student trained on ground-truth heatmaps only"
    hparams_cls = PoseScratchHParams
    requires_teacher = False

    def forward(
        self, x: Tensor, y: Any, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        heatmaps, weight = heatmap_targets(y, self.name)
        outputs = self.student(x)
        weight = weight if self.hparams.use_target_weight else None
        return outputs, {"heatmap": heatmap_mse(output_map(outputs), heatmaps, weight)}

"""Lane detection, the student alone: slot segmentation and lane existence (SCNN's and
ENet-SAD's supervised criterion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ._applications import LaneDistiller, LaneLossWeights, lane_label_losses
from .registry import register_method


@dataclass(frozen=True)
class LaneScratchHParams(LaneLossWeights):
    """Defaults: ENet-SAD's criterion without SAD (cross entropy 1 with background weight 1,
    existence BCE 0.1; see :class:`~kdtutor.methods._applications.LaneLossWeights`)."""


@register_method
class LaneScratch(LaneDistiller):
    r"""The lane student trained on the labels alone,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE}_w(z, m) + \lambda_{ex}\,
            \mathrm{BCE}(e, y_{ex}),

    the cross entropy of the slot logits ``out`` (background + S slots, at the image's
    resolution) with the slot mask, background weighted ``background_weight``, and the binary
    cross entropy of the existence logits ``exist`` with the slots' existence (0.1). The
    student returns ``{"out": (B, 1 + S, H, W), "exist": (B, S)}``; targets are the roads'
    ``{"mask", "exist", "points"}``."""

    name = "lane_scratch"
    paper = "baseline: the lane student trained on labels only (SCNN / ENet-SAD's criterion)"
    hparams_cls = LaneScratchHParams
    requires_teacher = False

    def forward(
        self, x: Tensor, y: Any, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        out = self.student(x)
        return out, lane_label_losses(out, y, self.hparams)

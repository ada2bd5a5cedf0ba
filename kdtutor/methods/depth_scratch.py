"""The depth baseline: the student trained alone on the true depth maps.

``scratch`` cannot serve here: its loss is a cross entropy over classes, and a depth network
regresses one positive number per pixel. The loss is the mean absolute error of log-depths
(:func:`~kdtutor.losses.dense.log_depth_l1`; design note ``docs/design/applications.md``,
3.3: the scenes' depth scale is fixed, so a scale-aware loss fits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..losses.dense import log_depth_l1
from ._dense import DenseDistiller, output_map
from .base import HParams
from .registry import register_method

__all__ = ["DepthScratch", "DepthScratchHParams"]


@dataclass(frozen=True)
class DepthScratchHParams(HParams):
    """No hyperparameters: the supervised loss is the whole loss."""


@register_method
class DepthScratch(DenseDistiller):
    r"""Train a depth student alone: :math:`\mathcal{L} = \frac{1}{|V|}\sum_{i\in V}
    |\log \hat d_i - \log d_i|` over the pixels with a true depth, on the network's output
    (``(B, 1, H, W)`` depth, or ``{"out": ...}``)."""

    name = "depth_scratch"
    task = "depth"
    paper = "baseline: the depth student trained on true depth only"
    hparams_cls = DepthScratchHParams
    requires_teacher = False

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        outputs = self.student(x)
        return outputs, {"depth": log_depth_l1(output_map(outputs), y)}

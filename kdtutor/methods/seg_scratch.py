"""The segmentation baseline: the student trained alone, pixel-wise cross entropy.

``scratch`` cannot serve here: its cross entropy reads a logits tensor, while torchvision's
segmentation networks (LRASPP, chapter 8's ``lraspp_s``) return ``{"out": logits}``, and a
segmentation mask may mark pixels to ignore (255).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..config import non_negative
from ._dense import DenseDistiller, segmentation_ce
from .base import HParams
from .registry import register_method

__all__ = ["SegScratch", "SegScratchHParams"]


@dataclass(frozen=True)
class SegScratchHParams(HParams):
    """``ignore_index``: the mask value left out of the loss (255, as the ``segmentation``
    task and torchvision's references)."""

    ignore_index: int = 255

    def validate(self) -> None:
        non_negative("ignore_index", self.ignore_index, "seg_scratch")


@register_method
class SegScratch(DenseDistiller):
    r"""Train a segmentation student alone: :math:`\mathcal{L} = \mathrm{CE}(z_s, y)` per
    pixel, on the upsampled output (``outputs["out"]``), ignored pixels left out
    (:func:`~kdtutor.methods._dense.segmentation_ce`)."""

    name = "seg_scratch"
    task = "segmentation"
    paper = "baseline: the segmentation student trained on masks only"
    hparams_cls = SegScratchHParams
    requires_teacher = False

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        outputs = self.student(x)
        return outputs, {"ce": segmentation_ce(outputs, y, ignore_index=self.hparams.ignore_index)}

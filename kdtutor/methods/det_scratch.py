r"""The detection baseline: a one-stage detector trained alone on its own losses.

``scratch`` cannot serve here: a torchvision detector in training mode takes the targets and
returns its losses, not logits. For FCOS (Tian et al., 2019) they are

.. math::

    \mathcal{L}_{FCOS} = \mathcal{L}_{focal}(\text{classes})
    + \mathcal{L}_{GIoU}(\text{boxes}) + \mathcal{L}_{BCE}(\text{centerness}),

each averaged over the foreground locations as torchvision's ``FCOSHead.compute_loss`` does.
This is the ``scratch`` row of chapter 8's detection table and the loss the zoo's detection
teacher trains with; every detection distiller adds its terms to the same three.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ._detection import DetectionDistiller
from .base import HParams
from .registry import register_method

__all__ = ["DetScratch"]


@register_method
class DetScratch(DetectionDistiller):
    """Train a detection student alone: ``forward`` returns ``(None, {"classification",
    "bbox_regression", "bbox_ctrness"})``, the detector's own losses, exactly those of
    ``model(images, targets)`` in training mode (:func:`~kdtutor.methods._detection.run_detector`
    unrolls it)."""

    name: ClassVar[str] = "det_scratch"
    paper: ClassVar[str] = "baseline: the detection student trained on boxes only (FCOS's losses)"
    hparams_cls: ClassVar[type[HParams]] = HParams
    requires_teacher: ClassVar[bool] = False

    def forward(
        self, x: Tensor, y: Any, index: Tensor | None = None
    ) -> tuple[None, dict[str, Tensor]]:
        return None, dict(self.student_pass(x, y).losses)

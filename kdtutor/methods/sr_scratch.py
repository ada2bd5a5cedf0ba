"""Super-resolution, the student alone: the L1 distance to the high-resolution image (EDSR's
loss, Lim et al. 2017; FAKD's ``DS`` term)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ._applications import output_map
from .base import Distiller
from .hparams import HParams
from .registry import register_method


@dataclass(frozen=True)
class SRScratchHParams(HParams):
    """No hyperparameters: the L1 loss is the whole objective."""


@register_method
class SRScratch(Distiller):
    r"""The SR student trained on the high-resolution images alone,

    .. math:: \mathcal{L} = \frac{1}{B\,C\,H\,W} \big\| S(x) - y_{HR} \big\|_1

    (``nn.L1Loss``, a mean over pixels; EDSR's loss and FAKD's data term ``DS``, verified in
    Vincent-Hoo/Knowledge-Distillation-for-Super-resolution ``code/loss.py``). The student
    maps the LR image ``(B, 3, h, w)`` to ``(B, 3, s h, s w)``."""

    name = "sr_scratch"
    family = "application"
    task = "superres"
    paper = "baseline: the SR student trained on the HR images alone (L1, as EDSR)"
    hparams_cls = SRScratchHParams
    requires_teacher = False

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        sr = output_map(self.student(x))
        return sr, {"l1": F.l1_loss(sr, y)}

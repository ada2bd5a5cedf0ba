"""The baseline: the student trained alone on the labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..config import non_negative
from .base import Distiller, HParams
from .registry import register_method


@dataclass(frozen=True)
class ScratchHParams(HParams):
    """Cross entropy, with optional label smoothing (Szegedy et al., 2016). No
    :class:`~kdtutor.methods.hparams.LossWeights`: the labels' term is the whole loss and
    there is no teacher to distil from."""

    label_smoothing: float = 0.0

    def validate(self) -> None:
        non_negative("label_smoothing", self.label_smoothing, "scratch")


@register_method
class Scratch(Distiller):
    r"""Train the student alone: :math:`\mathcal{L} = \mathrm{CE}(z_s, y)`."""

    name = "scratch"
    family = "baseline"
    paper = "baseline: the student trained on labels only"
    hparams_cls = ScratchHParams
    requires_teacher = False

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {
            "ce": F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        }

"""Decoupled knowledge distillation (Zhao et al., 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..config import non_negative, positive
from ..losses.response import dkd_loss
from .base import Distiller, HParams
from .registry import register_method


@dataclass(frozen=True)
class DKDHParams(HParams):
    """Defaults of Zhao et al. (2022) for CIFAR-100: CE weight 1, alpha (TCKD) 1, beta (NCKD) 8,
    T=4, the KD terms ramped up linearly over the first 20 epochs."""

    T: float = 4.0
    ce_weight: float = 1.0
    alpha: float = 1.0
    beta: float = 8.0
    warmup_epochs: int = 20

    def validate(self) -> None:
        positive("T", self.T, "dkd")
        for name in ("ce_weight", "alpha", "beta", "warmup_epochs"):
            non_negative(name, getattr(self, name), "dkd")


@register_method
class DKD(Distiller):
    r""":math:`\mathcal{L} = \mathrm{CE} + w(e)\,(\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD})`,
    with :math:`w(e) = \min(e / e_{warm}, 1)` (see :func:`~kdtutor.losses.dkd_loss`)."""

    name = "dkd"
    paper = "Zhao, Cui, Song, Qiu, Liang (2022). Decoupled Knowledge Distillation"
    hparams_cls = DKDHParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warmup = 1.0

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        warm = self.hparams.warmup_epochs
        self.warmup = 1.0 if warm == 0 else min((epoch + 1) / warm, 1.0)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = self.student(x)
        tckd, nckd = dkd_loss(logits, self.teacher_outputs(x, index).logits, y, hp.T)
        return logits, {
            "ce": hp.ce_weight * F.cross_entropy(logits, y),
            "tckd": self.warmup * hp.alpha * tckd,
            "nckd": self.warmup * hp.beta * nckd,
        }

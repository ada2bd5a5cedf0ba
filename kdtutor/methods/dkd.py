"""Decoupled knowledge distillation (Zhao et al., 2022)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..config import non_negative
from ..losses.response import dkd_loss
from .base import Distiller
from .hparams import LossWeights
from .registry import register_method


@dataclass(frozen=True)
class DKDHParams(LossWeights):
    """Defaults of Zhao et al. (2022) for CIFAR-100: CE weight 1, ``alpha`` (TCKD) 1, ``beta``
    (NCKD) 8, T=4, the KD terms ramped up linearly over the first 20 epochs. ``alpha`` and
    ``beta`` keep the paper's names; ``kd_weight`` > 0 adds Hinton's KD term (default 0)."""

    alpha: float = 1.0
    beta: float = 8.0
    warmup_epochs: int = 20

    def validate(self) -> None:
        super().validate()
        for name in ("alpha", "beta", "warmup_epochs"):
            non_negative(name, getattr(self, name), "dkd")


@register_method
class DKD(Distiller):
    r""":math:`\mathcal{L} = \lambda_{CE}\,\mathrm{CE} + w(e)\,(\alpha\,\mathrm{TCKD}
    + \beta\,\mathrm{NCKD})`, with :math:`w(e) = \min(e / e_{warm}, 1)` (see
    :func:`~kdtutor.losses.dkd_loss`)."""

    name = "dkd"
    family = "response"
    loss_weights = ("alpha", "beta")
    paper = "Zhao, Cui, Song, Qiu, Liang (2022). Decoupled Knowledge Distillation"
    hparams_cls = DKDHParams
    epoch_hparams: ClassVar[Mapping[str, int]] = {"warmup_epochs": 20}

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
        teacher_logits = self.teacher_outputs(x, index).logits
        tckd, nckd = dkd_loss(logits, teacher_logits, y, hp.T)
        terms = {"tckd": self.warmup * hp.alpha * tckd, "nckd": self.warmup * hp.beta * nckd}
        return logits, hp.weighted_losses(logits, y, teacher_logits, terms)

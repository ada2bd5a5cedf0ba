"""FitNets: hints for thin deep nets (Romero, Ballas, Kahou, Chassang, Gatta, Bengio, 2015)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import non_negative
from ..losses.feature import hint_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method


@dataclass(frozen=True)
class FitNetHParams(FeatureHParams):
    """Defaults: RepDistiller's single-stage FitNet on CIFAR-100 (CE + 100 x hint, the hint at
    the middle stage, a 1x1 conv + BN regressor). For the paper's two stages set
    ``init_epochs`` (hint stage) and ``kd_weight`` (the KD stage), e.g. ``init_epochs=5,
    ce_weight=0.1, kd_weight=0.9, beta=1.0``. In stage one the hint is the only loss, so
    ``beta`` acts as a multiplier of the learning rate: with the single-stage default of 100
    the two-stage student reached 77.6% on mnist5k against 94.3% with ``beta=1`` (chapter
    3.2's exercise)."""

    connector: str = "conv"
    beta: float = 100.0

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, "fitnet")


@register_method
class FitNet(FeatureDistiller):
    r"""FitNets. Stage one (``init_epochs`` epochs, optional): only the hint loss
    :math:`\beta\,\mathrm{MSE}(r(F_s), F_t)`, which trains the student up to its hint layer and
    the regressor :math:`r`. Stage two (or the only stage): :math:`\mathrm{CE} + \beta\,
    \mathcal{L}_{HT} + \lambda_{KD}\,\mathcal{L}_{KD}`, where the hint term is dropped after a
    stage one, as in the paper."""

    name = "fitnet"
    family = "feature"
    paper = "Romero et al. (2015). FitNets: Hints for Thin Deep Nets"
    hparams_cls = FitNetHParams
    path_policy = "hint"

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        hints = [
            hint_loss(s, t)
            for s, t in zip(self.connect(student_features), teacher_features, strict=True)
        ]
        hint = hp.beta * sum(hints) / len(hints)
        if self.in_init_stage:
            return {"hint": hint}
        terms = {"hint": hint} if hp.init_epochs == 0 else {}
        return hp.weighted_losses(logits, y, teacher_logits, terms)

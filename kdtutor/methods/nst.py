"""Neuron selectivity transfer (Huang & Wang, 2017)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import non_negative
from ..losses.feature import nst_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["NST", "NSTHParams"]


@dataclass(frozen=True)
class NSTHParams(FeatureHParams):
    """Defaults: RepDistiller's NST on CIFAR-100, CE + 50 x the polynomial-kernel MMD summed
    over all paired stage outputs (the stage outputs of its ``feat[1:-1]``). The paper tunes
    its weight :math:`\\lambda/2` per setting and kernel and places the loss on chosen
    layers; pass ``student_paths`` / ``teacher_paths`` (e.g. only the last stages) and
    ``beta`` to follow a particular setting."""

    beta: float = 50.0

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, "nst")


@register_method
class NST(FeatureDistiller):
    r"""Neuron selectivity transfer: each channel's spatial activation pattern, L2-normalised,
    is a sample of the layer's "neuron selectivity" distribution, and the student's and
    teacher's distributions are matched by the squared MMD with kernel
    :math:`k(x, y) = (x^\top y)^2` (see :func:`~kdtutor.losses.feature.nst_loss`):

    .. math::
        \mathcal{L} = \mathrm{CE} + \beta \sum_j \mathrm{MMD}^2\big(F^j_s, F^j_t\big)

    Channel counts may differ and spatial sizes are pooled to the smaller, so no connectors
    are used."""

    name = "nst"
    family = "feature"
    paper = (
        "Huang & Wang (2017). Like What You Like: Knowledge Distill via Neuron Selectivity Transfer"
    )
    hparams_cls = NSTHParams
    path_policy = "stages"
    uses_connectors = False

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        nst = sum(nst_loss(s, t) for s, t in zip(student_features, teacher_features, strict=True))
        return hp.weighted_losses(logits, y, teacher_logits, {"nst": hp.beta * nst})

"""Probabilistic knowledge transfer (Passalis & Tefas, 2018)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import non_negative, positive
from ..losses.relation import pkt_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method


@dataclass(frozen=True)
class PKTHParams(FeatureHParams):
    """Defaults: CE weight 1 and ``beta`` = 30000 on the pooled embedding, RepDistiller's
    CIFAR-100 setting (``-r 1 -a 0 -b 30000``) with the authors' loss (mean over the ``B^2``
    pairs, epsilon 1e-7). ``kd_weight`` > 0 adds Hinton's KD at temperature ``T``."""

    beta: float = 30000.0
    eps: float = 1e-7

    def validate(self) -> None:
        super().validate()
        positive("eps", self.eps, "pkt")
        non_negative("beta", self.beta, "pkt")


@register_method
class PKT(FeatureDistiller):
    r"""PKT: match the probability that sample :math:`j` is a neighbour of sample :math:`i`,
    estimated from cosine similarities in each network's embedding,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE} + \beta\,\frac{1}{B^2}\sum_{i,j}
            p_{j|i}\log\frac{p_{j|i}}{q_{j|i}} + \lambda_{KD}\,\mathcal{L}_{KD}

    (:func:`~kdtutor.losses.relation.pkt_loss`). Embedding widths may differ."""

    name = "pkt"
    family = "relation"
    paper = (
        "Passalis, Tefas (2018). Learning Deep Representations with Probabilistic Knowledge "
        "Transfer"
    )
    hparams_cls = PKTHParams
    path_policy = "embedding"
    uses_connectors = False

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        pkt = pkt_loss(student_features[0], teacher_features[0], hp.eps)
        return hp.weighted_losses(logits, y, teacher_logits, {"pkt": hp.beta * pkt})

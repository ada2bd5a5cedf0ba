"""Correlation congruence for knowledge distillation (Peng et al., 2019)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..config import ConfigError, non_negative, positive
from ..losses.relation import cc_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method


@dataclass(frozen=True)
class CCHParams(FeatureHParams):
    """Defaults: CE weight 1, ``beta`` = 0.02 (RepDistiller, ``-r 1 -a 0 -b 0.02``), trainable
    linear embeddings of width ``feat_dim`` = 128 on both sides (RepDistiller's
    ``LinearEmbed``), and the paper's kernel: a Gaussian RBF with ``gamma`` = 0.4 expanded to
    order ``order`` = 2 (Peng et al. 2019).

    ``mode="paper"`` (default) is the paper's correlation congruence; ``mode="code"`` is the
    loss RepDistiller actually runs (see :func:`~kdtutor.losses.relation.cc_loss`), which is
    what produced the CC column of RepDistiller's published CIFAR-100 table.
    ``kd_weight`` > 0 adds Hinton's KD at temperature ``T``."""

    beta: float = 0.02
    feat_dim: int = 128
    mode: str = "paper"
    gamma: float = 0.4
    order: int = 2

    def validate(self) -> None:
        super().validate()
        positive("feat_dim", self.feat_dim, "cc")
        positive("gamma", self.gamma, "cc")
        non_negative("order", self.order, "cc")
        non_negative("beta", self.beta, "cc")
        if self.mode not in ("paper", "code"):
            raise ConfigError(f"cc.mode must be 'paper' or 'code', got {self.mode!r}.")


@register_method
class CC(FeatureDistiller):
    r"""CC: the student keeps the teacher's correlations *between* samples. Both pooled
    embeddings are projected to ``feat_dim`` by trainable linear layers :math:`\phi_s, \phi_t`,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE} + \beta\,\frac{1}{B^2}
            \big\|\psi(\phi_s(F_s)) - \psi(\phi_t(F_t))\big\|_F^2 + \lambda_{KD}\,\mathcal{L}_{KD},

    with :math:`\psi` the ``B x B`` Taylor-expanded RBF correlation of the L2-normalised rows
    (:func:`~kdtutor.losses.relation.cc_correlation`). Caveat: both projections are trained,
    so the term alone could be satisfied by collapsing them; the cross entropy does not
    prevent that for :math:`\phi`, only for the student's own features."""

    name = "cc"
    family = "relation"
    paper = (
        "Peng, Jin, Liu, Li, Wu, Liu, Zhou, Zhang (2019). Correlation Congruence for Knowledge "
        "Distillation"
    )
    hparams_cls = CCHParams
    path_policy = "embedding"
    uses_connectors = False

    def build_modules(self) -> None:
        hp = self.hparams
        self.embed_s = nn.Linear(math.prod(self.student_shapes[0]), hp.feat_dim)
        self.embed_t = nn.Linear(math.prod(self.teacher_shapes[0]), hp.feat_dim)

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        f_s = self.embed_s(student_features[0].flatten(1))
        f_t = self.embed_t(teacher_features[0].flatten(1))
        cc = cc_loss(f_s, f_t, mode=hp.mode, gamma=hp.gamma, order=hp.order)
        return hp.weighted_losses(logits, y, teacher_logits, {"cc": hp.beta * cc})

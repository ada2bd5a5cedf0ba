"""Variational information distillation (Ahn, Hu, Damianou, Lawrence & Dai, 2019)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..errors import ShapeMismatchError
from ..losses.feature import pool_to_smaller, vid_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["VID", "VIDHParams", "VIDRegressor"]


@dataclass(frozen=True)
class VIDHParams(FeatureHParams):
    """Defaults: RepDistiller's VID on CIFAR-100: CE + 1 x the Gaussian negative
    log-likelihood summed over the paired stage outputs; regressor 1x1 conv - ReLU - 1x1 conv -
    ReLU - 1x1 conv (no biases) with as many hidden channels as the teacher feature
    (``mid_channels=0``), initial variance 5 (``init_variance``) and ``eps=1e-5``."""

    beta: float = 1.0
    mid_channels: int = 0
    init_variance: float = 5.0
    eps: float = 1e-5

    def validate(self) -> None:
        super().validate()
        positive("eps", self.eps, "vid")
        non_negative("mid_channels", self.mid_channels, "vid")
        non_negative("beta", self.beta, "vid")
        if not self.init_variance > self.eps:
            raise ConfigError(
                f"vid.init_variance must be > eps ({self.eps}), got {self.init_variance!r}."
            )


class VIDRegressor(nn.Sequential):
    """VID's mean :math:`\\mu(s)`: three 1x1 convolutions (no biases) with ReLUs between,
    ``in_channels -> mid_channels -> mid_channels -> out_channels``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid_channels, out_channels, 1, bias=False),
        )


@register_method
class VID(FeatureDistiller):
    r"""Variational information distillation: maximise a variational lower bound on the mutual
    information between teacher and student features by fitting, per paired stage, a Gaussian
    :math:`q(t \mid s) = \mathcal{N}\big(t;\ \mu(s),\ \operatorname{diag}(\sigma^2)\big)` whose
    mean :math:`\mu` is a small regressor on the student feature and whose per-channel
    variance :math:`\sigma_c^2 = \operatorname{softplus}(\alpha_c) + \epsilon` is learnt:

    .. math::
        \mathcal{L} = \mathrm{CE} + \beta \sum_j \frac{1}{B C H W} \sum
        \frac12\Big(\log \sigma_c^2 + \frac{(t - \mu(s))^2}{\sigma_c^2}\Big)

    (see :func:`~kdtutor.losses.feature.vid_loss`; it can be negative). When the spatial sizes
    differ the larger of student and teacher map is average-pooled to the smaller before the
    regressor (RepDistiller). The regressors and :math:`\alpha` are trained with the student.
    """

    name = "vid"
    family = "feature"
    paper = (
        "Ahn, Hu, Damianou, Lawrence & Dai (2019). Variational Information Distillation for "
        "Knowledge Transfer"
    )
    hparams_cls = VIDHParams
    path_policy = "stages"
    uses_connectors = False

    def build_modules(self) -> None:
        hp = self.hparams
        self.regressors = nn.ModuleList()
        self.log_scales = nn.ParameterList()
        # softplus(alpha) + eps = init_variance
        alpha = math.log(math.expm1(hp.init_variance - hp.eps))
        for sp, tp, ss, ts in zip(
            self.student_paths,
            self.teacher_paths,
            self.student_shapes,
            self.teacher_shapes,
            strict=True,
        ):
            if len(ss) != 3 or len(ts) != 3:
                raise ShapeMismatchError(
                    f"vid needs feature maps (C, H, W) on both sides, got {ss} at {sp!r} and "
                    f"{ts} at {tp!r}. Choose convolutional stage outputs as paths."
                )
            mid = hp.mid_channels or ts[0]
            self.regressors.append(VIDRegressor(ss[0], mid, ts[0]))
            self.log_scales.append(nn.Parameter(torch.full((ts[0],), alpha)))

    def variances(self) -> list[Tensor]:
        """The current per-channel variances :math:`\\sigma^2` of each pair."""
        return [F.softplus(a) + self.hparams.eps for a in self.log_scales]

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        terms = []
        for regressor, variance, s, t in zip(
            self.regressors, self.variances(), student_features, teacher_features, strict=True
        ):
            s, t = pool_to_smaller(s, t)
            terms.append(vid_loss(regressor(s), variance, t))
        return hp.weighted_losses(logits, y, teacher_logits, {"vid": hp.beta * sum(terms)})

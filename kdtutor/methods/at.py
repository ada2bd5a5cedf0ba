"""Attention transfer (Zagoruyko & Komodakis, 2017).

The student learns to put its spatial "attention" where the teacher does: at each paired
stage the channel-pooled activation energy :math:`\\sum_c |F_c|^p`, normalised per sample, is
matched. The maps need no connector (channel counts may differ; spatial sizes are pooled to
the smaller one), which is why the book uses :func:`attention_map` to show them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..config import ConfigError, non_negative, positive
from ..losses.feature import at_loss, attention_map
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["AT", "ATHParams", "attention_map"]

MODES = ("paper", "code")


@dataclass(frozen=True)
class ATHParams(FeatureHParams):
    """Defaults: RepDistiller's AT on CIFAR-100 (CE + 1000 x the code-form loss summed over the
    stage outputs, ``p=2``), which is the form behind its published numbers and the authors'
    own code. ``mode="paper"`` uses the paper's eq. 2 instead (a norm of the difference of the
    normalised maps), weighted per layer by ``beta / (2 * H * W)``: the paper sets
    :math:`\\beta` to :math:`10^3` divided by the attention map's size and the batch size (the
    batch division is our batch mean), so ``beta=1000`` gives the paper's weights in both
    modes. The authors' code multiplies the code-form loss by :math:`\\beta/2 = 500`;
    RepDistiller by 1000, without the 1/2 (we follow RepDistiller)."""

    beta: float = 1000.0
    p: float = 2.0
    mode: str = "code"

    def validate(self) -> None:
        super().validate()
        if self.mode not in MODES:
            raise ConfigError(f"at.mode must be 'paper' or 'code', got {self.mode!r}.")
        positive("p", self.p, "at")
        non_negative("beta", self.beta, "at")


@register_method
class AT(FeatureDistiller):
    r"""Attention transfer. With :math:`\hat Q = Q/\lVert Q\rVert_2`,
    :math:`Q = \operatorname{vec}(\sum_c |F_c|^p)` (see :func:`attention_map`), summed over the
    paired stages :math:`j`:

    * code form (default; the authors' code and RepDistiller):
      :math:`\mathcal{L} = \mathrm{CE} + \beta \sum_j \frac{1}{B\,HW_j}
      \sum_b \lVert \hat Q^j_s - \hat Q^j_t \rVert_2^2`;
    * paper form (eq. 2): :math:`\mathcal{L} = \mathrm{CE} + \sum_j \frac{\beta}{2\,HW_j}
      \frac1B \sum_b \lVert \hat Q^j_s - \hat Q^j_t \rVert_2`.

    Spatial sizes are matched by average-pooling the larger map; no connectors are used."""

    name = "at"
    family = "feature"
    paper = (
        "Zagoruyko & Komodakis (2017). Paying More Attention to Attention: Improving the "
        "Performance of Convolutional Neural Networks via Attention Transfer"
    )
    hparams_cls = ATHParams
    path_policy = "stages"
    uses_connectors = False

    def build_modules(self) -> None:
        # the matched attention maps have min(H_s, H_t) x min(W_s, W_t) positions
        self.map_sizes = [
            min(s[-2], t[-2]) * min(s[-1], t[-1])
            for s, t in zip(self.student_shapes, self.teacher_shapes, strict=True)
        ]

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        terms = [
            at_loss(s, t, hp.p, hp.mode)
            for s, t in zip(student_features, teacher_features, strict=True)
        ]
        if hp.mode == "code":
            at: Tensor = hp.beta * sum(terms)
        else:
            at = sum(
                hp.beta / (2 * n) * term for n, term in zip(self.map_sizes, terms, strict=True)
            )
        return hp.weighted_losses(logits, y, teacher_logits, {"at": at})

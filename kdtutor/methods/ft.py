"""Factor transfer (Kim, Park, Kwak, 2018): paraphrase the teacher, translate the student.

A *paraphraser*, a small convolutional auto-encoder on the teacher's last-stage feature, is
first trained alone to reconstruct it (stage one, ``init_epochs`` epochs); its bottleneck, the
teacher *factor*, is then the target of a *translator*, a few convolutions on the student's
last-stage feature, trained with the student (stage two) through
:func:`~kdtutor.losses.feature.ft_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..connectors import match_spatial
from ..errors import ShapeMismatchError
from ..features import evaluating
from ..losses.feature import ft_loss
from .feature_base import FeatureDistiller, FeatureHParams
from .registry import register_method

__all__ = ["FT", "FTHParams", "Paraphraser", "Translator"]


@dataclass(frozen=True)
class FTHParams(FeatureHParams):
    """Defaults: RepDistiller's CIFAR-100 factor transfer (30 paraphraser epochs, then CE +
    200 x FT in its ``"code"`` form, factor rate :math:`k = 0.5`, a paraphraser without batch
    norm and a translator with it, L2 reconstruction loss). ``mode="paper"`` takes the paper's
    L1 distance of the normalised flattened factors (rescale ``beta`` with it).
    ``paraphraser_bn``: batch norm in the paraphraser, as in the authors' code."""

    init_epochs: int = 30
    beta: float = 200.0
    rate: float = 0.5
    mode: str = "code"
    paraphraser_bn: bool = False

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, "ft")
        positive("rate", self.rate, "ft")
        if self.mode not in ("code", "paper"):
            raise ConfigError(f"ft.mode must be 'code' or 'paper', got {self.mode!r}.")


def _conv_block(
    in_channels: int, out_channels: int, bn: bool, transpose: bool = False
) -> list[nn.Module]:
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    return [
        conv(in_channels, out_channels, kernel_size=3, padding=1, bias=not bn),
        nn.BatchNorm2d(out_channels) if bn else nn.Identity(),
        nn.LeakyReLU(0.1),
    ]


class Paraphraser(nn.Module):
    """Convolutional auto-encoder of the teacher feature: ``encoder`` (three conv3x3 +
    LeakyReLU(0.1) layers, ``channels -> channels -> factor -> factor``) gives the factor,
    ``decoder`` (three transposed conv3x3 layers back to ``channels``) the reconstruction."""

    def __init__(self, channels: int, factor_channels: int, bn: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            *_conv_block(channels, channels, bn),
            *_conv_block(channels, factor_channels, bn),
            *_conv_block(factor_channels, factor_channels, bn),
        )
        self.decoder = nn.Sequential(
            *_conv_block(factor_channels, factor_channels, bn, transpose=True),
            *_conv_block(factor_channels, channels, bn, transpose=True),
            *_conv_block(channels, channels, bn, transpose=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x`` (``self.encoder(x)`` is the factor)."""
        return self.decoder(self.encoder(x))


class Translator(nn.Sequential):
    """Three conv3x3 + BN + LeakyReLU(0.1) layers mapping the student feature to a factor
    (``channels -> channels -> factor -> factor``)."""

    def __init__(self, channels: int, factor_channels: int, bn: bool = True) -> None:
        super().__init__(
            *_conv_block(channels, channels, bn),
            *_conv_block(channels, factor_channels, bn),
            *_conv_block(factor_channels, factor_channels, bn),
        )


@register_method
class FT(FeatureDistiller):
    r"""Factor transfer. Stage one (``init_epochs`` epochs): only the paraphraser :math:`P`
    is trained, by the reconstruction loss :math:`\mathrm{MSE}(P(F_t), F_t)` on the teacher's
    last-stage feature (reported as ``"paraphrase"``; the student is not trained and runs in
    eval mode, only to report accuracy). Stage two:

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE} + \beta\,
            \mathcal{L}_{FT}\big(T(F_s),\, E(F_t)\big)

    with the translator :math:`T`, the frozen paraphraser encoder :math:`E` (run without
    gradients, in eval mode) and :math:`\mathcal{L}_{FT}` of
    :func:`~kdtutor.losses.feature.ft_loss`.

    Deviations: the paper's reconstruction loss is L2, which RepDistiller (and we) take as the
    mean squared error; when the factors differ in spatial size the student factor is brought
    to the teacher's (:func:`~kdtutor.connectors.match_spatial`), whereas RepDistiller pools
    whichever is larger.
    """

    name = "ft"
    family = "feature"
    epoch_hparams: ClassVar[Mapping[str, int]] = {"init_epochs": 30}
    paper = (
        "Kim, Park, Kwak (2018). Paraphrasing Complex Network: Network Compression via "
        "Factor Transfer"
    )
    hparams_cls = FTHParams
    path_policy = "last"
    uses_connectors = False

    def build_modules(self) -> None:
        hp = self.hparams
        if len(self.student_paths) != 1:
            raise ConfigError("ft uses one pair of features: give one student and teacher path.")
        (s_shape,), (t_shape,) = self.student_shapes, self.teacher_shapes
        if len(s_shape) != 3 or len(t_shape) != 3:
            raise ShapeMismatchError(
                f"ft paraphrases feature maps (C, H, W), but the student feature has shape "
                f"{s_shape} and the teacher's {t_shape}. Choose one convolutional stage output "
                "on each side (student_paths=(...,), teacher_paths=(...,))."
            )
        factor = max(1, int(t_shape[0] * hp.rate))
        self.paraphraser = Paraphraser(t_shape[0], factor, bn=hp.paraphraser_bn)
        self.translator = Translator(s_shape[0], factor)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.in_init_stage:
            return super().forward(x, y, index)
        # Stage one trains the paraphraser only: run the student without gradients and
        # without touching its batch-norm statistics, just to report its accuracy.
        with evaluating(self.student), torch.no_grad():
            logits = self.student(x)
        teacher = self.teacher_outputs(x, index)
        feature = teacher.features[self.teacher_paths[0]]
        return logits, self.feature_losses(logits, y, [], [feature], teacher.logits, index)

    def feature_losses(self, logits, y, student_features, teacher_features, teacher_logits, index):
        hp = self.hparams
        (teacher,) = teacher_features
        if self.in_init_stage:
            self.paraphraser.train(self.training)
            return {"paraphrase": F.mse_loss(self.paraphraser(teacher), teacher)}
        self.paraphraser.eval()
        with torch.no_grad():
            target = self.paraphraser.encoder(teacher)
        (student,) = student_features
        factor = match_spatial(self.translator(student), target.shape[-2:])
        terms = {"ft": hp.beta * ft_loss(factor, target, hp.mode)}
        return hp.weighted_losses(logits, y, teacher_logits, terms)

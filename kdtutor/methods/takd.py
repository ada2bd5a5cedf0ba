r"""Teacher Assistant Knowledge Distillation, TAKD (Mirzadeh, Farajtabar, Li, Levine, Matsukawa,
Ghasemzadeh, AAAI 2020).

A large teacher distils into an intermediate-size *teacher assistant*, which then distils into
the student; with several assistants the path goes through them from the largest to the
smallest. Each step is Hinton's KD (the paper's "BLKD" loss), so TAKD is a path, not a loss:
one :class:`TAKD` run is one step, and :func:`kdtutor.chain.fit_chain` trains a whole path
(``fit_chain(teacher, [assistant, student], train, test, method="takd")``).

Checked at the authors' code (imirzadeh/Teacher-Assistant-Knowledge-Distillation,
``train.py``): each step's loss is ``(1 - lambda_) * CE + lambda_ * T * T *
nn.KLDivLoss()(log_softmax(z_s / T), softmax(z_t / T))``. ``nn.KLDivLoss()``'s default
reduction averages over every element, batch *and* classes, so the code's KD term is the
batch-mean KL divided by the number of classes :math:`K` (``kl_reduction="elementwise"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from ..losses.response import kd_loss
from .kd import KD, KDHParams
from .registry import register_method

__all__ = ["TAKD", "TAKDHParams"]

KL_REDUCTIONS = ("batchmean", "elementwise")


@dataclass(frozen=True)
class TAKDHParams(KDHParams):
    r"""KD's defaults, so that a step of a TAKD path and direct KD differ only in the teacher:
    ``ce_weight`` :math:`= 1-\lambda = 0.1`, ``kd_weight`` :math:`= \lambda = 0.9`, ``T`` = 4
    (RepDistiller's CIFAR-100 protocol; :math:`\lambda = 0.9` lies in the authors' search
    grid, 0.05 to 1 by 0.05, :math:`T = 4` does not: they search :math:`T \in \{1, 2, 5, 10,
    15, 20\}`, and the seed, by a tree-structured Parzen estimator over 120 trials scored on
    the test set).

    Attributes:
        kl_reduction: ``"batchmean"`` (the KL summed over classes, averaged over the batch:
            KD's loss, the paper's formula) or ``"elementwise"`` (the authors' code:
            ``nn.KLDivLoss()``'s mean over batch and classes, i.e. the batch mean divided by
            the number of classes :math:`K`).
    """

    kl_reduction: Literal["batchmean", "elementwise"] = "batchmean"

    def validate(self) -> None:
        super().validate()
        if self.kl_reduction not in KL_REDUCTIONS:
            raise ConfigError(
                f"takd.kl_reduction must be one of {', '.join(map(repr, KL_REDUCTIONS))}, got "
                f"{self.kl_reduction!r}."
            )


@register_method
class TAKD(KD):
    r"""One step of a teacher-assistant path: KD from the previous network of the path.

    .. math::
        \mathcal{L} = (1-\lambda)\,\mathrm{CE}(z_s, y)
            + \lambda\,\tau^2\,\frac1B\sum_{i=1}^{B}
              \mathrm{KL}\big(p^\tau_t(x_i) \,\|\, p^\tau_s(x_i)\big),
        \qquad p^\tau = \mathrm{softmax}(z/\tau),

    :math:`z_t` the logits of the step's teacher (the teacher for the first assistant, the
    previous assistant after it), :math:`1-\lambda` = ``ce_weight``, :math:`\lambda` =
    ``kd_weight``, :math:`\tau` = ``T``. With ``kl_reduction="elementwise"`` the KL term is
    divided by the number of classes :math:`K`, as the authors' code computes it. The
    teacher may be any trained network of the same label space: the teacher, or an
    assistant, of any architecture.

    Paper: Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh (2020), *Improved
    Knowledge Distillation via Teacher Assistant*, AAAI.
    """

    name = "takd"
    family = "architecture"
    paper = (
        "Mirzadeh, Farajtabar, Li, Levine, Matsukawa, Ghasemzadeh (2020). Improved Knowledge "
        "Distillation via Teacher Assistant"
    )
    hparams_cls = TAKDHParams

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        if hp.kl_reduction == "batchmean":
            return super().forward(x, y, index)  # exactly KD's loss
        logits = self.student(x)
        losses = {"ce": hp.ce_weight * F.cross_entropy(logits, y)}
        if hp.kd_weight > 0:
            teacher = self.teacher_outputs(x, index)
            kd = kd_loss(logits, teacher.logits, hp.T, scale_by_t2=hp.scale_by_t2)
            losses["kd"] = hp.kd_weight * kd / logits.shape[1]
        return logits, losses

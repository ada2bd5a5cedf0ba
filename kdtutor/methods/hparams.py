r"""Hyperparameter dataclasses: the base of every method's, and the loss weights they share.

Every method's hyperparameters are a frozen dataclass with the paper's defaults, built from a
flat dict by :func:`~kdtutor.methods.build_distiller`. The weights of the two terms most
methods share, the cross entropy with the labels and Hinton's KD term, are
:class:`LossWeights`, named alike in every method:

* ``ce_weight`` :math:`\lambda_{CE}`: weight of the cross entropy with the labels;
* ``kd_weight`` :math:`\lambda_{KD}`: weight of Hinton's KD term (0: no KD term);
* ``T``: the temperature of the KD term (and of a response method's own terms).

A method's own terms keep the names of its paper (AT's and FitNets' ``beta``, DKD's ``alpha``
for TCKD and ``beta`` for NCKD, DIST's ``beta`` and ``gamma``), so a reader finds the
paper's symbols in the code; ``alpha`` and ``beta`` never name the CE or KD weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from ..config import non_negative, positive
from ..losses.response import kd_loss

__all__ = ["HParams", "LossWeights"]


@dataclass(frozen=True)
class HParams:
    """Base class of the per-method hyperparameter dataclasses.

    ``renamed`` maps keys a method used to accept to their new names: passing an old key is
    still an unknown-key error, which then says what the key is called now.
    """

    renamed: ClassVar[Mapping[str, str]] = {}

    def validate(self) -> None:
        """Check value ranges; subclasses extend it."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def owner(cls) -> str:
        """The method's name in error messages: ``CRDHParams`` -> ``"crd"``."""
        return cls.__name__.removesuffix("HParams").lower()


@dataclass(frozen=True)
class LossWeights(HParams):
    r"""The cross-entropy and KD weights every method with a CE or KD term shares.

    A method's loss is

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_s, y) + \sum_k w_k\,\mathcal{L}_k
            + \lambda_{KD}\,T^2\,\frac1B\sum_i \mathrm{KL}\big(p^T_t \,\|\, p^T_s\big),

    where the :math:`w_k\,\mathcal{L}_k` are the method's own terms (with the paper's names for
    the :math:`w_k`) and the last term is Hinton's KD (:func:`~kdtutor.losses.kd_loss`,
    Hinton, Vinyals, Dean, 2015), left out when ``kd_weight`` is 0. Adding it to a feature or
    relation method is RepDistiller's ``-a`` flag (e.g. CRD+KD: ``kd_weight=1``). Methods set
    their own defaults (KD: ``ce_weight=0.1, kd_weight=0.9``); see :meth:`weighted_losses`.
    """

    ce_weight: float = 1.0
    kd_weight: float = 0.0
    T: float = 4.0

    def validate(self) -> None:
        super().validate()
        positive("T", self.T, self.owner())
        non_negative("ce_weight", self.ce_weight, self.owner())
        non_negative("kd_weight", self.kd_weight, self.owner())

    def weighted_losses(
        self,
        logits: Tensor,
        y: Tensor,
        teacher_logits: Tensor | None,
        terms: Mapping[str, Tensor] | None = None,
        *,
        scale_by_t2: bool = True,
    ) -> dict[str, Tensor]:
        """A method's named, weighted losses: ``"ce"`` (:math:`\\lambda_{CE}` CE), then the
        method's own already-weighted ``terms``, then ``"kd"`` (:math:`\\lambda_{KD}` times
        :func:`~kdtutor.losses.kd_loss` at ``T``) when ``kd_weight`` > 0.

        Args:
            logits: the student's logits :math:`z_s`, ``(B, K)``.
            y: the labels, ``(B,)``.
            teacher_logits: the teacher's logits :math:`z_t` (only read when ``kd_weight`` > 0).
            terms: the method's own terms, in the order to log them.
            scale_by_t2: the KD term's :math:`T^2` factor (KD's flag of the same name).
        """
        losses = {"ce": self.ce_weight * F.cross_entropy(logits, y), **(terms or {})}
        if self.kd_weight > 0:
            if teacher_logits is None:
                raise ValueError(f"{self.owner()}: kd_weight > 0 needs the teacher's logits.")
            kd = kd_loss(logits, teacher_logits, self.T, scale_by_t2=scale_by_t2)
            losses["kd"] = self.kd_weight * kd
        return losses

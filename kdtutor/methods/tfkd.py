"""Teacher-free knowledge distillation, Tf-KD (Yuan, Tay, Li, Wang, Feng, 2020)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..errors import KDTutorError
from ..losses.response import kd_loss, tfkd_reg_loss
from .base import Distiller, HParams
from .registry import register_method

# The authors' per-model settings for ResNet18 on CIFAR-100 (their experiments/ params.json):
# reg: reg_alpha 0.1, reg_temperature 20, multiplier 100; self: alpha 0.95, temperature 6,
# multiplier 50. Their KLDivLoss averages over B*K elements, ours over B: multiplier / K (100).
_MODE_DEFAULTS = {
    "reg": {"alpha": 0.1, "T": 20.0, "multiplier": 1.0},
    "self": {"alpha": 0.95, "T": 6.0, "multiplier": 0.5},
}


@dataclass(frozen=True)
class TfKDHParams(HParams):
    """``mode="reg"``: a hand-made virtual teacher (no network); ``mode="self"``: KD from a
    pretrained copy of the student (passed as the teacher).

    ``alpha``, ``T`` and ``multiplier`` left at ``None`` take the mode's defaults, the authors'
    ResNet18 / CIFAR-100 settings (Teacher-free-Knowledge-Distillation repository,
    ``experiments/*/params.json``): reg ``alpha=0.1, T=20``, self ``alpha=0.95, T=6``, with
    their ``multiplier`` (100 and 50) divided by the 100 classes because their KL is averaged
    over every element and ours over the batch: reg 1.0, self 0.5. The authors tuned these per
    model (e.g. MobileNetV2 reg: ``alpha=0.95, T=40``, multiplier 1, i.e. 0.01 here).
    ``correct_prob`` (0.99) is the virtual teacher's probability of the true class, hard-coded
    in their code. ``soften_student`` divides the student's logits by ``T`` in the reg term, as
    the paper's equation writes; the code (default) does not.

    Tf-KD keeps the paper's ``alpha``, which weights both terms (CE by ``1 - alpha``), instead
    of :class:`~kdtutor.methods.hparams.LossWeights`' ``ce_weight`` and ``kd_weight``."""

    mode: str = "reg"
    alpha: float | None = None
    T: float | None = None
    multiplier: float | None = None
    correct_prob: float = 0.99
    soften_student: bool = False

    def resolved(self) -> tuple[float, float, float]:
        """``(alpha, T, multiplier)`` with the mode's defaults filled in."""
        d = _MODE_DEFAULTS.get(self.mode, _MODE_DEFAULTS["reg"])
        return (
            d["alpha"] if self.alpha is None else self.alpha,
            d["T"] if self.T is None else self.T,
            d["multiplier"] if self.multiplier is None else self.multiplier,
        )

    def validate(self) -> None:
        if self.mode not in _MODE_DEFAULTS:
            raise ConfigError(f"tfkd.mode must be 'reg' or 'self', got {self.mode!r}.")
        alpha, temperature, multiplier = self.resolved()
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"tfkd.alpha must be in [0, 1], got {alpha!r}.")
        positive("T", temperature, "tfkd")
        non_negative("multiplier", multiplier, "tfkd")
        if not 0.0 < self.correct_prob <= 1.0:
            raise ConfigError(f"tfkd.correct_prob must be in (0, 1], got {self.correct_prob!r}.")


@register_method
class TfKD(Distiller):
    r"""Tf-KD: distillation without a stronger teacher.

    .. math::
        \mathcal{L} = (1 - \alpha)\,\mathrm{CE}(z_s, y) + \alpha\, m\, \mathcal{L}_{T},

    where :math:`\mathcal{L}_T` is, in mode ``"reg"``, the KL from the virtual teacher
    :math:`\mathrm{softmax}(p^d / T)` to the student (:func:`~kdtutor.losses.response.tfkd_reg_loss`,
    no teacher network) and, in mode ``"self"``, Hinton's :math:`T^2`-scaled KD from the
    teacher, a pretrained copy of the student (:func:`~kdtutor.losses.response.kd_loss`).
    :math:`m` is the ``multiplier``. The losses are logged as ``ce`` and ``tfkd``."""

    name = "tfkd"
    family = "response"
    paper = (
        "Yuan, Tay, Li, Wang, Feng (2020). Revisiting Knowledge Distillation via Label "
        "Smoothing Regularization"
    )
    hparams_cls = TfKDHParams
    requires_teacher = False  # mode "self" checks for its teacher itself

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        mode = getattr(hparams, "mode", "reg")
        if mode == "self" and teacher is None:
            raise KDTutorError(
                "tfkd mode 'self' needs a teacher: a pretrained copy of the student (train it "
                "first with method 'scratch'), passed as teacher=...; or use mode='reg', whose "
                "virtual teacher needs no network."
            )
        if mode == "reg" and teacher is not None:
            warnings.warn(
                "tfkd mode 'reg' uses a virtual teacher: the teacher network given is ignored.",
                stacklevel=2,
            )
            teacher = None
        super().__init__(student, teacher, hparams)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp: TfKDHParams = self.hparams  # type: ignore[assignment]
        alpha, temperature, multiplier = hp.resolved()
        logits = self.student(x)
        if hp.mode == "self":
            term = kd_loss(logits, self.teacher_outputs(x, index).logits, temperature)
        else:
            term = tfkd_reg_loss(
                logits, y, hp.correct_prob, temperature, soften_student=hp.soften_student
            )
        return logits, {
            "ce": (1.0 - alpha) * F.cross_entropy(logits, y),
            "tfkd": alpha * multiplier * term,
        }

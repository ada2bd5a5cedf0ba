r"""Adversarial distillation: a discriminator on the logits (Xu, Hsu, Huang, 2018; MEAL, Shen
et al., 2019), with its own optimizer, stepped before the student in each training step."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..errors import KDTutorError
from ..losses.adversarial import conditioned_input, gan_d_loss, gan_g_loss
from .base import Distiller
from .hparams import HParams, LossWeights
from .registry import register_method
from .steps import OptimizerGroup, Steps

__all__ = [
    "AdversarialHParams",
    "AdversarialKD",
    "build_discriminator",
    "discriminator_accuracy",
]


@dataclass(frozen=True)
class AdversarialHParams(LossWeights):
    """Defaults: ``ce_weight`` 0.1, ``kd_weight`` 0.9, ``T`` 4 (KD's RepDistiller values: the
    adversarial term is added beside plain KD); ``adv_weight`` 0.1 (our choice, the engine
    demo's; no verified source fixes it: tune it on validation images). The discriminator is
    an MLP ``in -> d_hidden -> d_hidden -> 1`` (LeakyReLU 0.2) trained by Adam at ``d_lr``
    2e-4, betas (0.5, 0.999), no weight decay, constant rate: DCGAN's settings (Radford et al.,
    2016), not verified for Xu et al. ``condition=True`` shows it the label too
    (``[z ; onehot(y)]``). MEAL-style (Shen et al., 2019): ``ce_weight=0, kd_weight=1, T=1``
    with a :class:`~kdtutor.methods._teachers.TeacherEnsemble` teacher."""

    ce_weight: float = 0.1
    kd_weight: float = 0.9
    T: float = 4.0
    adv_weight: float = 0.1
    condition: bool = False
    d_hidden: int = 64
    d_lr: float = 2e-4

    def validate(self) -> None:
        super().validate()
        non_negative("adv_weight", self.adv_weight, self.owner())
        positive("d_hidden", self.d_hidden, self.owner())
        positive("d_lr", self.d_lr, self.owner())
        if self.ce_weight == 0 and self.kd_weight == 0 and self.adv_weight == 0:
            raise ConfigError(
                "adversarial: ce_weight, kd_weight and adv_weight are all 0, so the student "
                "would learn nothing; give one a positive weight."
            )


def build_discriminator(in_features: int, hidden: int = 64) -> nn.Sequential:
    """The discriminator: ``Linear(in, h) - LeakyReLU(0.2) - Linear(h, h) - LeakyReLU(0.2) -
    Linear(h, 1)``, one logit per sample ("teacher" when large). No BatchNorm, so a batch of
    teacher outputs and one of student outputs are scored independently."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )


@register_method
class AdversarialKD(Distiller):
    r"""Adversarial KD: each step first trains the discriminator :math:`D` to tell teacher
    logits (real) from student logits (fake),
    :math:`\mathcal{L}_D = \mathrm{BCE}(D(z_t), 1) + \mathrm{BCE}(D(z_s), 0)`
    (:func:`~kdtutor.losses.adversarial.gan_d_loss`, its own Adam optimizer), then the student
    on :math:`\lambda_{CE}\,\mathrm{CE} + \lambda_{KD}\,T^2\,\mathrm{KL}(p_t^T\|p_s^T) +
    \lambda_{adv}\,\mathrm{BCE}(D(z_s), 1)` (:func:`~kdtutor.losses.adversarial.gan_g_loss`),
    with :math:`D` held fixed. Logged: ``ce``, ``kd``, ``adv`` and ``disc`` (:math:`\mathcal{L}_D`).
    """

    name = "adversarial"
    family = "adversarial"
    supports_ddp = False  # the discriminator is stepped outside steps.forward
    loss_weights = ("adv_weight",)
    paper = (
        "Xu, Hsu, Huang (2018). Training Shallow and Thin Networks for Acceleration via "
        "Knowledge Distillation with Conditional Adversarial Networks"
    )
    hparams_cls = AdversarialHParams

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        super().__init__(student, teacher, hparams)
        classes = getattr(teacher, "num_classes", None) or getattr(student, "num_classes", None)
        if classes is None:
            raise KDTutorError(
                "adversarial: the discriminator's input size is the class count, but neither "
                "the student nor the teacher has a num_classes attribute; set "
                "model.num_classes = K on your model (models from kdtutor.models have it)."
            )
        hp = self.hparams
        self.num_classes = int(classes)
        width = 2 * self.num_classes if hp.condition else self.num_classes
        self.discriminator = build_discriminator(width, hp.d_hidden)

    def discriminate(self, logits: Tensor, y: Tensor | None) -> Tensor:
        """:math:`D`'s logits ``(B,)`` on ``logits`` (with the labels when ``condition``)."""
        return self.discriminator(conditioned_input(logits, y if self.hparams.condition else None))[
            :, 0
        ]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The student's parameters (the discriminator has its own group)."""
        return (p for p in self.student.parameters() if p.requires_grad)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        return {
            "student": OptimizerGroup(list(self.trainable_parameters())),
            "discriminator": OptimizerGroup(
                list(self.discriminator.parameters()),
                optimizer="adam",
                lr=self.hparams.d_lr,
                weight_decay=0.0,
                betas=(0.5, 0.999),
                schedule="constant",
            ),
        }

    def discriminator_loss(self, logits: Tensor, teacher_logits: Tensor, y: Tensor) -> Tensor:
        """:math:`\\mathcal{L}_D` on a batch (the student's logits detached here)."""
        return gan_d_loss(
            self.discriminate(teacher_logits.detach(), y), self.discriminate(logits.detach(), y)
        )

    def student_losses(
        self, logits: Tensor, teacher_logits: Tensor, y: Tensor
    ) -> dict[str, Tensor]:
        """The student's weighted losses; :math:`D`'s parameters get no gradient from them."""
        hp = self.hparams
        frozen = [p for p in self.discriminator.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            adv = gan_g_loss(self.discriminate(logits, y))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return hp.weighted_losses(logits, y, teacher_logits, {"adv": hp.adv_weight * adv})

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits and losses (no discriminator step: see :meth:`train_step`)."""
        logits = self.student(x)
        teacher = self.teacher_outputs(x, index).logits
        return logits, self.student_losses(logits, teacher, y)

    def train_step(self, batch: Any, steps: Steps) -> tuple[Any, dict[str, Tensor]]:
        """Step the discriminator on this batch, then the student against the updated one."""
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch.x, batch.rows).logits
        d_loss = steps.step(
            "discriminator", {"disc": self.discriminator_loss(logits, teacher, batch.y)}
        )
        losses = self.student_losses(logits, teacher, batch.y)
        steps.step("student", losses)
        return logits, {**{k: v.detach() for k, v in losses.items()}, "disc": d_loss}


@torch.no_grad()
def discriminator_accuracy(distiller: AdversarialKD, data: Any, n: int = 2000) -> float:
    """How often the discriminator tells teacher from student on the first ``n`` images of
    ``data`` (an ``ArrayDataset``), in percent: a teacher output counts as right when
    :math:`D > 0`, a student output when :math:`D \\le 0`; 50% means :math:`D` is fooled.
    Call it from ``fit(..., on_epoch=...)`` on held-out images to draw its curve."""
    from ..train import predict_logits

    if not isinstance(distiller, AdversarialKD):
        raise KDTutorError(
            f"discriminator_accuracy needs an adversarial distiller, got {type(distiller).__name__}."
        )
    if n <= 0:
        raise KDTutorError(f"discriminator_accuracy: n must be positive, got {n}.")
    subset = data.subset(min(n, len(data))) if hasattr(data, "subset") else data
    zs, y = predict_logits(distiller.student, subset)
    zt, _ = predict_logits(distiller.teacher, subset)
    device = next(distiller.discriminator.parameters()).device
    was = distiller.discriminator.training
    distiller.discriminator.eval()
    try:
        real = distiller.discriminate(zt.to(device), y.to(device))
        fake = distiller.discriminate(zs.to(device), y.to(device))
    finally:
        distiller.discriminator.train(was)
    right = int((real > 0).sum()) + int((fake <= 0).sum())
    return 100.0 * right / (2 * len(y))

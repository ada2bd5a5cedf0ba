r"""QKD: quantization-aware knowledge distillation in three phases (Kim, Bhalgat, Lee, Patel,
Kwak 2019).

The student trains fake-quantized (:func:`kdtutor.qat.prepare_qat`), as in
:class:`~kdtutor.methods.qat.QAT`, through three phases chosen by the epoch
(:meth:`QKD.on_epoch_start`):

1. **self-studying**, epochs :math:`[0, e_{SS})`: quantization-aware fine-tuning alone,
   :math:`\lambda_{CE}\,\mathrm{CE}(y, \hat p_s)`;
2. **co-studying**, epochs :math:`[e_{SS}, e_{SS} + e_{CS})`: a trainable copy of the teacher
   (group ``"teacher"``, its own learning rate) learns
   :math:`\mathrm{CE}(y, p_t) + T^2\,\mathrm{KL}(\hat p_s^T \,\|\, p_t^T)` (towards the
   quantized student, which makes it "quantization-friendly"), while the student learns
   KD's :math:`\lambda_{CE}\,\mathrm{CE} + \lambda_{KD}\,T^2\,\mathrm{KL}(p_t^T \,\|\,
   \hat p_s^T)` from it; both from the logits of the step's start, each detached in the
   other's loss, so the two updates are simultaneous;
3. **tutoring**, the remaining epochs: the co-studied teacher is frozen (eval mode) and the
   student learns KD from it.

The three phases are the paper's (abstract, verified); the teacher's loss weights, the phase
lengths (ours: 1, 2 and the rest of a 5-epoch fine-tune) and the teacher's learning rate
(ours: 0.005) are not verified. QKD's trainable interval quantizer (QIL's) is replaced by
torch's min/max observers (a deviation). The teacher changes during training, so its outputs
are never cached.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import non_negative, positive
from ..losses.response import kd_loss
from ..losses.schemes import mutual_kl
from .qat import QAT, QATHParams
from .registry import register_method
from .steps import OptimizerGroup, Steps

if TYPE_CHECKING:
    from ..cache import TeacherCache
    from ..data import Batch

__all__ = ["PHASES", "QKD", "QKDHParams"]

PHASES: tuple[str, ...] = ("self_study", "co_study", "tutoring")
"""QKD's phases, in order."""


@dataclass(frozen=True)
class QKDHParams(QATHParams):
    """:class:`~kdtutor.methods.qat.QATHParams` plus the phase lengths in epochs
    (``self_study_epochs`` 1, ``co_study_epochs`` 2; tutoring takes the rest) and the
    co-studying teacher's learning rate ``teacher_lr`` (0.005): our choices, not verified."""

    self_study_epochs: int = 1
    co_study_epochs: int = 2
    teacher_lr: float = 0.005

    def validate(self) -> None:
        super().validate()
        non_negative("self_study_epochs", self.self_study_epochs, self.owner())
        non_negative("co_study_epochs", self.co_study_epochs, self.owner())
        positive("teacher_lr", self.teacher_lr, self.owner())


@register_method
class QKD(QAT):
    """QKD's self-studying, co-studying and tutoring phases over a fake-quantized student
    (see the module docstring). ``self.co_teacher`` is the trainable copy of the teacher;
    the given teacher stays frozen and unchanged."""

    name = "qkd"
    family = "quantized"
    paper = "Kim, Bhalgat, Lee, Patel, Kwak (2019). QKD: Quantization-aware Knowledge Distillation"
    hparams_cls = QKDHParams
    supports_ddp = False  # the teacher's update runs outside steps.forward

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: QKDHParams | None = None,
    ):
        super().__init__(student, teacher, hparams)
        assert self.teacher is not None  # requires_teacher
        self.co_teacher = copy.deepcopy(self.teacher).requires_grad_(True).eval()
        self.phase = PHASES[0]

    def phase_of(self, epoch: int) -> str:
        """The phase of epoch ``epoch`` (0-based)."""
        hp = self.hparams
        if epoch < hp.self_study_epochs:
            return "self_study"
        if epoch < hp.self_study_epochs + hp.co_study_epochs:
            return "co_study"
        return "tutoring"

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Enter the epoch's phase (and freeze ranges and BN for the last epochs, as QAT)."""
        super().on_epoch_start(epoch, epochs)
        self.phase = self.phase_of(epoch)

    def cache_teacher(self, *args: Any, **kwargs: Any) -> TeacherCache | None:
        """No cache: the co-studying teacher changes during training."""
        self.teacher_cache = None
        return None

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The student's parameters (the co-teacher has its own group)."""
        return (p for p in self.student.parameters() if p.requires_grad)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        """``"student"`` and ``"teacher"`` (the co-teacher, at ``teacher_lr``)."""
        return {
            "student": OptimizerGroup(list(self.trainable_parameters())),
            "teacher": OptimizerGroup(
                list(self.co_teacher.parameters()), lr=self.hparams.teacher_lr
            ),
        }

    def teacher_losses(
        self, teacher_logits: Tensor, student_logits: Tensor, y: Tensor
    ) -> dict[str, Tensor]:
        """The co-teacher's co-studying loss ``{"teacher_ce", "teacher_kl"}``: its CE plus
        :math:`T^2\\,\\mathrm{KL}(\\hat p_s^T \\| p_t^T)` (student detached)."""
        T = self.hparams.T
        return {
            "teacher_ce": F.cross_entropy(teacher_logits, y),
            "teacher_kl": mutual_kl(teacher_logits, [student_logits], T),
        }

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's weighted losses of the current phase: CE alone in self-studying,
        CE + KD from the co-teacher (detached) otherwise."""
        hp = self.hparams
        logits = self.student(x)
        losses = {"ce": hp.ce_weight * F.cross_entropy(logits, y)}
        if self.phase != "self_study" and hp.kd_weight > 0:
            with torch.no_grad():
                self.co_teacher.eval()
                teacher = self.co_teacher(x)
            losses["kd"] = hp.kd_weight * kd_loss(logits, teacher, hp.T)
        return logits, losses

    def train_step(self, batch: Batch, steps: Steps) -> tuple[Any, dict[str, Tensor]]:
        """Self-studying and tutoring: the default step (the co-teacher in eval mode).
        Co-studying: one forward of both networks, then the student's step and the
        co-teacher's, each on the other's detached logits."""
        if self.phase != "co_study":
            self.co_teacher.eval()
            return super().train_step(batch, steps)
        hp = self.hparams
        x, y = batch.x, batch.y
        self.co_teacher.train()
        student_logits = self.student(x)
        teacher_logits = self.co_teacher(x)
        losses = {"ce": hp.ce_weight * F.cross_entropy(student_logits, y)}
        if hp.kd_weight > 0:
            losses["kd"] = hp.kd_weight * kd_loss(student_logits, teacher_logits.detach(), hp.T)
        steps.step("student", losses)
        teacher = self.teacher_losses(teacher_logits, student_logits.detach(), y)
        steps.step("teacher", teacher)
        logged = {k: v.detach() for k, v in {**losses, **teacher}.items()}
        return student_logits.detach(), logged

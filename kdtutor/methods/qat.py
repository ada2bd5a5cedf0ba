r"""Quantized distillation: KD into a student that trains fake-quantized (Apprentice, Mishra &
Marr 2018; quantized distillation, Polino, Pascanu, Alistarh 2018).

The student is a fake-quantized copy of the float student (:func:`kdtutor.qat.prepare_qat`):
every forward pass rounds its weights and activations to a ``bits``-bit grid, the backward pass
goes straight through the rounding to full-precision shadow weights, and the loss is Hinton's

.. math::
    \mathcal{L} = \lambda_{CE}\,\mathrm{CE}(y, \sigma(\hat z_s))
        + \lambda_{KD}\,T^2\,\mathrm{KL}\big(\sigma(z_t/T)\,\|\,\sigma(\hat z_s/T)\big),

with :math:`\hat z_s` the fake-quantized student's logits and :math:`z_t` the frozen float
teacher's (cached). ``kd_weight=0`` is quantization-aware training alone. For the last
``freeze_epochs`` epochs the quantization ranges and the batch-norm statistics are frozen
(:func:`kdtutor.qat.freeze`); :meth:`QAT.convert` then gives the int8 model.

Mishra & Marr (2018) name three schemes: (A) teacher and low-precision student trained
jointly, (B) a low-precision student trained from scratch by distillation from a trained
teacher, (C) a trained full-precision student fine-tuned in low precision with distillation.
Given a trained float student this method is **scheme C**; given a freshly built one it is
**scheme B**; scheme A is QKD's co-studying phase run for the whole training.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import ConfigError, non_negative, positive
from ..errors import KDTutorError
from ..qat import BACKENDS, BITS, convert_int8, example_input, fake_quantizers, freeze, prepare_qat
from .kd import KD, KDHParams
from .registry import register_method

__all__ = ["QAT", "QATHParams"]


@dataclass(frozen=True)
class QATHParams(KDHParams):
    """KD's weights and temperature (``ce_weight`` 0.1, ``kd_weight`` 0.9, ``T`` 4, from
    RepDistiller's protocol; Apprentice's own are :math:`\\alpha=\\beta=\\gamma=1`, not
    verified here), plus:

    * ``bits``: 8 or 4, the student's weight and activation width (:data:`kdtutor.qat.BITS`);
    * ``freeze_epochs``: the last epochs with frozen quantization ranges and BN statistics
      (our choice: 1; 0 never freezes);
    * ``backend``: the quantized engine of the int8 model (:data:`kdtutor.qat.BACKENDS`);
    * ``image_size``: the side of the square input used to trace the student.
    """

    bits: int = 8
    freeze_epochs: int = 1
    backend: str = "x86"
    image_size: int = 32

    def validate(self) -> None:
        super().validate()
        if isinstance(self.bits, bool) or self.bits not in BITS:
            raise ConfigError(f"qat: bits={self.bits!r} is not offered; use one of {BITS}.")
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"qat: unknown backend {self.backend!r}; use one of {BACKENDS} ('x86' on "
                "Intel/AMD CPUs, 'qnnpack' on ARM)."
            )
        non_negative("freeze_epochs", self.freeze_epochs, self.owner())
        positive("image_size", self.image_size, self.owner())


@register_method
class QAT(KD):
    r"""KD into a fake-quantized student (Apprentice's schemes B and C, Mishra & Marr 2018).

    The float ``student`` given is copied and prepared with :func:`kdtutor.qat.prepare_qat`:
    it is not trained in place (``self.student`` is the fake-quantized copy). The loss is KD's
    (:class:`~kdtutor.methods.kd.KD`) on the fake-quantized logits.
    """

    name = "qat"
    family = "quantized"
    paper = (
        "Mishra, Marr (2018). Apprentice: Using Knowledge Distillation Techniques To Improve "
        "Low-Precision Network Accuracy"
    )
    hparams_cls = QATHParams

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: QATHParams | None = None,
    ):
        super().__init__(student, teacher, hparams)
        if fake_quantizers(student):
            raise KDTutorError(
                "qat: the student is already fake-quantized: pass the float student (this "
                "method prepares its own copy with kdtutor.qat.prepare_qat)."
            )
        hp = self.hparams
        example = example_input(student, hp.image_size)
        self.student = prepare_qat(student, hp.bits, example, backend=hp.backend)

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Freeze the quantization ranges and BN statistics from epoch
        ``epochs - freeze_epochs`` on (never when ``freeze_epochs`` is 0)."""
        hp = self.hparams
        if hp.freeze_epochs > 0 and epoch >= epochs - hp.freeze_epochs:
            freeze(self.student)

    def convert(self) -> nn.Module:
        """The student as an int8 model (:func:`kdtutor.qat.convert_int8`), in eval mode."""
        return convert_int8(self.student)

"""Self attention distillation for lane detection (Hou, Ma, Liu, Loy, 2019)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from ._applications import LaneDistiller, SADHParams, lane_label_losses
from .registry import register_method


@register_method
class SAD(LaneDistiller):
    r"""Self attention distillation: no teacher; each block of the student's encoder learns
    to attend where the next, deeper block attends,

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE}_w(z, m) + \lambda_{ex}\,\mathrm{BCE}(e, y_{ex})
            + w_{SAD} \sum_{m} \big\|\Psi(A_m) - \mathrm{sg}[\Psi(A_{m+1})]\big\|^2 / N,

    with :math:`\Psi` = channels' squares summed, bilinear to the largest block's size, softmax
    over positions (:func:`~kdtutor.losses.applications.sad_attention`,
    :func:`~kdtutor.losses.applications.sad_loss`), the deeper map detached, added from epoch
    ``sad_start`` on (before it, ``sad`` is logged as 0). Defaults
    (:class:`~kdtutor.methods._applications.SADHParams`): ENet-SAD's criterion, verified in
    ``ENet-Label-Torch/models/init.lua`` (CE 1, existence BCE 0.1, each SAD pair 0.1); SAD from
    epoch 13 of the book's 20 (ours: the paper adds SAD late, not verified)."""

    name = "sad"
    paper = (
        "Hou, Ma, Liu, Loy (2019). Learning Lightweight Lane Detection CNNs by Self Attention "
        "Distillation"
    )
    hparams_cls = SADHParams
    requires_teacher = False
    epoch_hparams: ClassVar[Mapping[str, int]] = {"sad_start": 13}
    loss_weights = ("sad_weight",)

    def forward(
        self, x: Tensor, y: Any, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        out, features = self.student_forward(x)
        losses = lane_label_losses(out, y, self.hparams)
        losses.update(self.sad_losses(features, losses["ce"]))
        return out, losses

"""Face recognition, the student alone: a normalised softmax over the training identities
(NormFace, Wang et al. 2017), through a cosine head that belongs to the distiller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ._applications import FaceDistiller, FaceHParams
from .registry import register_method


@dataclass(frozen=True)
class FaceScratchHParams(FaceHParams):
    """Defaults: a cosine head of scale ``s`` = 16 over ``num_ids`` = 1,000 identities, no
    margin (NormFace; CosFace's margin is an exercise). See
    :class:`~kdtutor.methods._applications.FaceHParams`."""


@register_method
class FaceScratch(FaceDistiller):
    r"""The face student trained alone with a normalised softmax over the training identities,

    .. math::
        \mathcal{L} = \mathrm{CE}\big(s \cos(e, w_y)\ \text{over}\ k\big), \qquad
        z_k = s\,\frac{e^\top w_k}{\|e\|\,\|w_k\|}

    (:func:`~kdtutor.losses.applications.cosine_logits`), ``e`` the student's embedding and
    ``w`` the distiller's trainable
    :class:`~kdtutor.methods._applications.CosineHead`."""

    name = "face_scratch"
    paper = "Wang, Xiang, Cheng, Yuille (2017). NormFace: L2 Hypersphere Embedding for Face Verification"
    hparams_cls = FaceScratchHParams
    requires_teacher = False

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        out, e, _ = self.embed(x)
        assert self.head is not None
        return out, {"ce": F.cross_entropy(self.head(e), y)}

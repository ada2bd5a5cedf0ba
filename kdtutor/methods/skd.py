"""Structured knowledge distillation for semantic segmentation (Liu et al., CVPR 2019).

The student copies the teacher's class distribution at every pixel (pixel-wise KD) and the
similarities between the teacher's pooled feature nodes (pair-wise KD). The third term of
the paper, holistic adversarial distillation (``lambda_d = 0.1``), is left out: chapter 6's
discriminator adds it in an exercise. The label ``pixel`` of chapter 8's suite is this method
with ``pair_weight=0`` (pixel-wise KD alone, as lane_kd reuses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from ..config import ConfigError, non_negative
from ..losses.dense import PIXEL_MODES, pair_wise_loss, pixel_kd_loss
from ._dense import DenseDistiller, segmentation_ce
from .base import HParams
from .registry import register_method

__all__ = ["SKD", "SKDHParams"]


@dataclass(frozen=True)
class SKDHParams(HParams):
    """Defaults: the authors' ``run_train_val.sh`` (irfanICMLL/structure_knowledge_distillation,
    read at ``5cb4e49``): ``lambda_pi`` 10 (``pixel_weight``), ``lambda_pa`` 0.5
    (``pair_weight``), ``--pool-scale 0.5``; the cross entropy with the masks at weight 1.

    ``mode`` is the pixel term's reduction (:func:`~kdtutor.losses.dense.pixel_kd_loss`):
    ``"paper"`` (the mean KL per pixel, default) or ``"code"`` (the authors' cross entropy
    summed over the batch: its gradient is B times the paper's, so the script's weight 10 at
    batch 8 acts as 80 on the paper's loss). ``detach_norm`` detaches the feature norms of
    the pair-wise similarities as the authors' ``similarity`` does (default: the paper's
    cosine, differentiated as written). ``logits_path``: the module whose output is the
    ``(B, K, h, w)`` logit map before upsampling (torchvision LRASPP's ``"classifier"``;
    ``""``: the network's output); ``feature_path``: the feature map whose nodes the
    pair-wise term compares (the design's ``"high"``, the encoder's stride-16 output).
    ``ignore_index``: mask value left out of the cross entropy."""

    ce_weight: float = 1.0
    pixel_weight: float = 10.0
    pair_weight: float = 0.5
    pool_scale: float = 0.5
    mode: str = "paper"
    detach_norm: bool = False
    logits_path: str = "classifier"
    feature_path: str = "high"
    ignore_index: int = 255

    def validate(self) -> None:
        owner = self.owner()
        for name in ("ce_weight", "pixel_weight", "pair_weight", "ignore_index"):
            non_negative(name, getattr(self, name), owner)
        if self.mode not in PIXEL_MODES:
            raise ConfigError(
                f"{owner}.mode must be 'paper' (mean KL per pixel) or 'code' (the authors' "
                f"summed cross entropy), got {self.mode!r}."
            )
        if not 0 < self.pool_scale <= 1:
            raise ConfigError(
                f"{owner}.pool_scale must be in (0, 1] (the pooling window as a fraction of the "
                f"feature map; SKD uses 0.5), got {self.pool_scale!r}."
            )
        if self.pair_weight > 0 and not self.feature_path:
            raise ConfigError(
                f"{owner}: pair_weight > 0 needs a feature_path (the feature map whose nodes "
                "are compared, e.g. 'high'); set pair_weight=0 for pixel-wise KD alone."
            )


@register_method
class SKD(DenseDistiller):
    r"""Structured KD: :math:`\mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_s, y) +
    \lambda_{pi}\,\mathcal{L}_{pi}(z_s, z_t) + \lambda_{pa}\,\mathcal{L}_{pa}(F_s, F_t)`,
    the pixel-wise KL at :math:`T = 1` on the pre-upsample logit maps
    (:func:`~kdtutor.losses.dense.pixel_kd_loss`) and the pair-wise similarity distance of
    the max-pooled feature nodes (:func:`~kdtutor.losses.dense.pair_wise_loss`). A term
    whose weight is 0 is neither computed nor logged (and with ``pair_weight=0`` no feature
    is read or cached)."""

    name = "skd"
    task = "segmentation"
    paper = (
        "Liu, Chen, Liu, Qin, Luo, Wang (2019). Structured Knowledge Distillation for "
        "Semantic Segmentation"
    )
    hparams_cls = SKDHParams
    loss_weights: ClassVar[tuple[str, ...]] = ("pixel_weight", "pair_weight")

    def feature_path_hparams(self) -> dict[str, str]:
        hp: SKDHParams = self.hparams  # type: ignore[assignment]
        return {"feature_path": hp.feature_path} if hp.pair_weight > 0 else {}

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Any, dict[str, Tensor]]:
        hp: SKDHParams = self.hparams  # type: ignore[assignment]
        student = self.student_maps(x)
        teacher = self.teacher_outputs(x, index)
        losses = {
            "ce": hp.ce_weight * segmentation_ce(student.outputs, y, ignore_index=hp.ignore_index)
        }
        if hp.pixel_weight > 0:
            pixel = pixel_kd_loss(student.logits, teacher.logits, 1.0, mode=hp.mode)
            losses["pixel"] = hp.pixel_weight * pixel
        if hp.pair_weight > 0:
            pair = pair_wise_loss(
                student.features[hp.feature_path],
                teacher.features[hp.feature_path],
                hp.pool_scale,
                detach_norm=hp.detach_norm,
            )
            losses["pair"] = hp.pair_weight * pair
        return student.outputs, losses

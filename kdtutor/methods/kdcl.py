"""Knowledge distillation via collaborative learning, KDCL (Guo et al., 2020).

No teacher: K peers train at once, and one soft target built from all their logits on the
batch (:func:`~kdtutor.losses.schemes.kdcl_teacher_logits`: their mean, the best peer per
image, or the paper's min-logit ensemble) teaches every peer beside its labels. In the paper
each peer sees its own random distortion of the images; ``augment`` does that here, and the
book's protocol, which has no augmentation, leaves it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from ..data._random import mix_seed
from ..data.transforms import BatchTransform, build_augment
from ..errors import UnknownNameError
from ..losses.response import kd_loss
from ..losses.schemes import KDCL_ENSEMBLES, kdcl_teacher_logits
from ._online import PeerDistiller, validate_peers
from .hparams import LossWeights
from .registry import register_method

__all__ = ["KDCL", "KDCLHParams"]

_PEER_VIEW_STREAM = 11  # the random stream of the peers' own views (see BatchLoader's)


@dataclass(frozen=True)
class KDCLHParams(LossWeights):
    """Each peer's cross entropy and its KD term towards the ensemble weighted 1
    (``ce_weight``, ``kd_weight``); ``T`` = 4 is our choice (the temperature of the paper's
    runs is not verified here; 4 is the KD default of the knowledge suite).

    Attributes:
        peers: the other peers by model name (``kdtutor models``), e.g.
            ``("resnet8_half_s2",)``; empty: ``num_peers - 1`` fresh copies of the student.
        num_peers: K, the student included (at least 2).
        ensemble: the soft target, one of ``"mean"``, ``"naive"``, ``"min_logit"``
            (:func:`~kdtutor.losses.schemes.kdcl_teacher_logits`).
        augment: each peer sees its own random draw of this augmentation
            (:func:`~kdtutor.data.transforms.build_augment` name, e.g. ``"crop_flip"``) of the
            batch, on top of any ``fit(augment=...)``; ``None``: every peer sees the batch.
    """

    ce_weight: float = 1.0
    kd_weight: float = 1.0
    T: float = 4.0
    peers: tuple[str, ...] = ()
    num_peers: int = 2
    ensemble: str = "min_logit"
    augment: str | None = None

    def validate(self) -> None:
        super().validate()
        validate_peers(self)
        if self.ensemble not in KDCL_ENSEMBLES:
            raise ConfigError(
                f"kdcl.ensemble must be one of {', '.join(map(repr, KDCL_ENSEMBLES))}, got "
                f"{self.ensemble!r}."
            )
        if self.augment is not None:
            try:
                build_augment(self.augment)
            except UnknownNameError as error:
                raise ConfigError(f"kdcl.augment: {error}") from None


@register_method
class KDCL(PeerDistiller):
    r"""KDCL: peer :math:`i` of :math:`K` minimises

    .. math::
        \mathcal{L}_i = \lambda_{CE}\,\mathrm{CE}(z_i, y)
            + \lambda_{KD}\,T^2\,\mathrm{KL}\big(p_t^T \,\|\, p_i^T\big),
        \qquad z_t = \mathrm{ensemble}(z_1, \dots, z_K;\, y)\ \text{(detached)},

    logged as ``ce1, kd1, ce2, kd2, ...`` (already weighted). All peers are stepped at once
    by one optimizer (group ``student``) from one forward each. With ``augment`` each peer's
    input is its own draw, from a generator seeded by (run seed, epoch, step, peer), so a
    resumed run sees the same views. No label at test time: the scored ``ensemble`` averages
    the peers' probabilities (:func:`~kdtutor.losses.schemes.ensemble_log_probs`).

    Example:
        >>> from kdtutor.methods import build_distiller
        >>> from kdtutor.models import build_model
        >>> kdcl = build_distiller("kdcl", build_model("cnn_tiny"), ensemble="mean")
        >>> list(kdcl.eval_networks())
        ['peer1', 'peer2', 'ensemble']
    """

    name = "kdcl"
    paper = (
        "Guo, Wang, Wu, Yu, Liang, Hu, Luo (2020). Online Knowledge Distillation via "
        "Collaborative Learning"
    )
    hparams_cls = KDCLHParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        augment = self.hparams.augment
        self.augment: BatchTransform | None = None if augment is None else build_augment(augment)
        self._seed = torch.initial_seed()
        self._epoch = 0
        self._step = 0

    def bind_data(self, train_data: Any) -> None:
        """Keep the run's seed (``fit`` seeds torch just before), which seeds the views."""
        self._seed = torch.initial_seed()

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        self._epoch, self._step = epoch, 0

    def views(self, x: Tensor) -> list[Tensor]:
        """Each peer's input: its own draw of ``augment`` in training, else ``x`` itself."""
        count = len(self.others) + 1
        if self.augment is None or self.augment.deterministic or not self.training:
            return [x] * count
        self._step += 1
        return [
            self.augment(
                x,
                torch.Generator().manual_seed(
                    mix_seed(self._seed, self._epoch, self._step, k, _PEER_VIEW_STREAM)
                ),
            )
            for k in range(count)
        ]

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = [peer(view) for peer, view in zip(self.peers, self.views(x), strict=True)]
        teacher = kdcl_teacher_logits(logits, y, hp.ensemble) if hp.kd_weight > 0 else None
        losses: dict[str, Tensor] = {}
        for k, z in enumerate(logits, start=1):
            losses[f"ce{k}"] = hp.ce_weight * F.cross_entropy(z, y)
            if teacher is not None:
                losses[f"kd{k}"] = hp.kd_weight * kd_loss(z, teacher, hp.T)
        return logits[0], losses

"""Deep mutual learning (Zhang, Xiang, Hospedales, Lu, 2018).

No teacher: K peers, untrained, learn the labels and each other's predictions at once. Peer
:math:`k` minimises its cross entropy plus the mean KL divergence from every other peer's
(detached) prediction to its own, so each network is both a student and a teacher.

The paper's Algorithm 1 (two networks) updates them in turn on one mini-batch: compute both
predictions, update :math:`\\Theta_1`, compute the predictions again, update
:math:`\\Theta_2`; peer 2 therefore learns from the *updated* peer 1. ``update="sequential"``
(the default) does that for K peers; ``update="simultaneous"`` gives every peer the targets of
the step's start (one optimizer over all peers; what most re-implementations do).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from ..losses.schemes import mutual_kl
from ._online import PeerDistiller, validate_peers
from ._peers import frozen_bn_stats
from .hparams import LossWeights
from .registry import register_method
from .steps import OptimizerGroup, Steps

if TYPE_CHECKING:
    from ..data import Batch

__all__ = ["DML", "UPDATES", "DMLHParams"]

UPDATES: tuple[str, ...] = ("sequential", "simultaneous")
"""How DML steps its peers: in turn, each on the freshest targets (the paper's Algorithm 1),
or all at once from the targets of the step's start."""


@dataclass(frozen=True)
class DMLHParams(LossWeights):
    """Defaults of Zhang et al. (2018): each peer's cross entropy and its mutual term
    weighted 1 (``ce_weight``, ``kd_weight``; the paper has no weights), at ``T`` = 1 (the
    paper's plain softmax; ``T`` > 1 softens both sides and multiplies the term by
    :math:`T^2`, as KD's).

    Attributes:
        peers: the other peers by model name (``kdtutor models``), e.g.
            ``("resnet8_half_s2",)``; empty: ``num_peers - 1`` fresh copies of the student.
        num_peers: K, the student included (at least 2).
        update: ``"sequential"`` (the paper's Algorithm 1) or ``"simultaneous"``.
    """

    ce_weight: float = 1.0
    kd_weight: float = 1.0
    T: float = 1.0
    peers: tuple[str, ...] = ()
    num_peers: int = 2
    update: str = "sequential"

    def validate(self) -> None:
        super().validate()
        validate_peers(self)
        if self.update not in UPDATES:
            raise ConfigError(
                f"dml.update must be one of {', '.join(map(repr, UPDATES))}, got {self.update!r}."
            )


@register_method
class DML(PeerDistiller):
    r"""Deep mutual learning: peer :math:`k` of :math:`K` minimises

    .. math::
        \mathcal{L}_k = \lambda_{CE}\,\mathrm{CE}(z_k, y)
            + \lambda_{KD}\,\frac{1}{K-1}\sum_{l \ne k} T^2\,
              \mathrm{KL}\big(p_l^T \,\|\, p_k^T\big)

    with the other peers' :math:`p_l` detached (:func:`~kdtutor.losses.schemes.mutual_kl`),
    logged as ``ce1, kl1, ce2, kl2, ...`` (already weighted).

    ``update="sequential"`` (the paper's Algorithm 1, generalised to K peers): one forward of
    every peer, then for :math:`k = 1..K` peer :math:`k` is stepped by its own optimizer
    (group ``peer{k}``) towards the peers updated before it in this step (each re-run once,
    without gradient, right after its update; BatchNorm statistics are not updated twice)
    and the others' logits of the step's start. ``update="simultaneous"``: every target
    comes from the step's start and one optimizer (group ``student``) steps all peers on the
    sum of the losses, which, the targets being detached, is K independent updates.

    Scored after each epoch: ``peer1`` (the student) ... ``peerK`` and their ``ensemble``.
    Sequential updates run outside ``forward``, so that mode cannot train under
    DistributedDataParallel (``supports_ddp`` is False for it).

    Example:
        >>> from kdtutor.methods import build_distiller
        >>> from kdtutor.models import build_model
        >>> dml = build_distiller("dml", build_model("cnn_tiny"), num_peers=3)
        >>> list(dml.eval_networks()), sorted(dml.optimizer_groups())
        (['peer1', 'peer2', 'peer3', 'ensemble'], ['peer1', 'peer2', 'peer3'])
    """

    name = "dml"
    paper = "Zhang, Xiang, Hospedales, Lu (2018). Deep Mutual Learning"
    hparams_cls = DMLHParams

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.supports_ddp = self.hparams.update == "simultaneous"  # type: ignore[misc]

    @property
    def sequential(self) -> bool:
        """True when the peers are stepped in turn (the paper's Algorithm 1)."""
        return self.hparams.update == "sequential"

    def peer_losses(
        self, k: int, logits: Tensor, y: Tensor, targets: list[Tensor]
    ) -> dict[str, Tensor]:
        """Peer ``k``'s weighted losses ``{"ce{k}": ..., "kl{k}": ...}`` given its ``logits``
        and the other peers' logits ``targets`` (detached inside
        :func:`~kdtutor.losses.schemes.mutual_kl`); no ``kl{k}`` when ``kd_weight`` is 0."""
        hp = self.hparams
        losses = {f"ce{k}": hp.ce_weight * F.cross_entropy(logits, y)}
        if hp.kd_weight > 0:
            losses[f"kl{k}"] = hp.kd_weight * mutual_kl(logits, targets, hp.T)
        return losses

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Every peer's losses with the targets of this one forward (the simultaneous step;
        in sequential mode :meth:`train_step` is what trains)."""
        logits = [peer(x) for peer in self.peers]
        losses: dict[str, Tensor] = {}
        for k, z in enumerate(logits, start=1):
            losses.update(self.peer_losses(k, z, y, logits[: k - 1] + logits[k:]))
        return logits[0], losses

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        """Simultaneous: one ``"student"`` group over every peer. Sequential: one group per
        peer, ``"peer1"`` (the student) ... ``"peerK"``."""
        if not self.sequential:
            return super().optimizer_groups()
        return {
            f"peer{k}": OptimizerGroup(list(_trainable(peer)))
            for k, peer in enumerate(self.peers, start=1)
        }

    def train_step(self, batch: Batch, steps: Steps) -> tuple[Any, dict[str, Tensor]]:
        """Simultaneous: the default step. Sequential: the peers in turn (see the class)."""
        if not self.sequential:
            return super().train_step(batch, steps)
        x, y = batch.x, batch.y
        peers = self.peers
        logits = [peer(x) for peer in peers]
        targets = [z.detach() for z in logits]
        logged: dict[str, Tensor] = {}
        for k, (peer, z) in enumerate(zip(peers, logits, strict=True), start=1):
            losses = self.peer_losses(k, z, y, targets[: k - 1] + targets[k:])
            steps.step(f"peer{k}", losses)
            logged.update({name: value.detach() for name, value in losses.items()})
            if k < len(peers) and self.hparams.kd_weight > 0:
                with torch.no_grad(), frozen_bn_stats(peer):
                    targets[k - 1] = peer(x)  # the updated peer teaches the ones after it
        return logits[0].detach(), logged


def _trainable(module: nn.Module) -> Iterator[nn.Parameter]:
    return (p for p in module.parameters() if p.requires_grad)

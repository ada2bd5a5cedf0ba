"""What the online methods with peers (DML, KDCL) share: the peers trained beside the student,
their hyperparameters' checks, and the networks scored after each epoch.

Private (the leading ``_`` keeps it out of the registry's import loop); the methods are
:mod:`kdtutor.methods.dml` and :mod:`kdtutor.methods.kdcl`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ConfigError
from ..errors import KDTutorError, NotAModelError, ShapeMismatchError
from ..losses.schemes import ensemble_log_probs
from ._peers import build_peers
from .base import Distiller, _check_same_inputs
from .feature_base import guess_input_shape
from .hparams import HParams


def validate_peers(hp: Any) -> None:
    """Check the ``peers`` (model names) and ``num_peers`` fields of an online method's
    hyperparameters: at least two networks, and as many names as peers beside the student."""
    owner = hp.owner()
    count, names = hp.num_peers, hp.peers
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise ConfigError(
            f"{owner}.num_peers must be an integer >= 2 (the student and at least one peer), "
            f"got {count!r}."
        )
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(
            f"{owner}.peers must be a tuple of model names (`kdtutor models`), e.g. "
            f"('resnet8_half_s2',), got {names!r}."
        )
    if names and len(names) != count - 1:
        raise ConfigError(
            f"{owner}.peers names {len(names)} network(s) beside the student, so num_peers must "
            f"be {len(names) + 1}, but num_peers={count}: set num_peers={len(names) + 1}, or "
            f"name {count - 1} peer(s)."
        )


class PeerDistiller(Distiller):
    """Base of the online methods whose peers are whole networks (DML, KDCL).

    ``self.student`` is peer 1, the deployable network (what ``fit`` checkpoints as the best
    weights and what a run is scored by); the other peers are ``self.others``. They are the
    ``peers`` modules when given (Python API), else built by name from ``hparams.peers``
    (``build_model(name, num_classes=student.num_classes, ...)`` at ``input_shape``), else
    ``num_peers - 1`` fresh copies of the student (:func:`~kdtutor.methods._peers.fresh_copy`:
    seed torch before building the student, and the peers are reproducible too).

    Args:
        student: peer 1.
        teacher: must be ``None``: the peers teach each other.
        hparams: the method's hyperparameters (with ``peers`` and ``num_peers``).
        peers: the other peers as modules (then ``hparams.peers`` must be empty and
            ``hparams.num_peers`` equal ``len(peers) + 1``).
        input_shape: one sample's shape, ``(C, H, W)``, for peers built by name (default:
            guessed from the student's first convolution, 32x32).
    """

    requires_teacher = False
    family = "online"
    loss_weights = ("kd_weight",)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: HParams | None = None,
        *,
        peers: Sequence[nn.Module] | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if teacher is not None:
            raise KDTutorError(
                f"method {self.name!r} trains its peers from each other and takes no teacher: "
                "pass teacher=None (on the command line: --teacher none)."
            )
        super().__init__(student, None, hparams)
        hp = self.hparams
        if peers is not None:
            others = self._given_peers(student, peers, hp)
        else:
            shape = tuple(input_shape) if input_shape else guess_input_shape(student)
            if hp.peers and len(shape) != 3:
                raise KDTutorError(
                    f"{self.name}: peers built by name ({', '.join(hp.peers)}) need the image "
                    f"shape (C, H, W), but the input shape is {shape}: pass "
                    "input_shape=(C, H, W) (e.g. (3, 32, 32)), or the peers as modules."
                )
            others = build_peers(student, hp.peers, hp.num_peers, shape)
        self.others = nn.ModuleList(others)

    def _given_peers(
        self, student: nn.Module, peers: Sequence[nn.Module], hp: Any
    ) -> list[nn.Module]:
        others = list(peers)
        if hp.peers:
            raise KDTutorError(
                f"{self.name}: peers given both as modules and by name ({', '.join(hp.peers)}): "
                "pass one or the other."
            )
        if len(others) != hp.num_peers - 1:
            raise ConfigError(
                f"{self.name}: {len(others)} peer module(s) beside the student, so num_peers "
                f"must be {len(others) + 1}, but num_peers={hp.num_peers}: set "
                f"num_peers={len(others) + 1}."
            )
        seen = {id(student)}
        for i, peer in enumerate(others, start=2):
            if not isinstance(peer, nn.Module):
                raise NotAModelError(
                    f"{self.name}: peer {i} must be an nn.Module, got {type(peer).__name__}; "
                    "build it first, e.g. kdtutor.models.build_model('cnn_wide_s2')."
                )
            if id(peer) in seen:
                raise KDTutorError(
                    f"{self.name}: peer {i} is the student or an earlier peer again; every peer "
                    "must be a network of its own (kdtutor.methods._peers.fresh_copy(student) "
                    "makes an independent copy)."
                )
            seen.add(id(peer))
            _check_same_inputs(student, peer)
            s, p = getattr(student, "num_classes", None), getattr(peer, "num_classes", None)
            if s is not None and p is not None and s != p:
                raise ShapeMismatchError(
                    f"{self.name}: the student predicts {s} classes but peer {i} predicts {p}; "
                    f"build every peer with num_classes={s}."
                )
        return others

    @property
    def peers(self) -> list[nn.Module]:
        """Every peer, the student first: ``[student, *others]``."""
        return [self.student, *self.others]

    @torch.no_grad()
    def ensemble(self, x: Tensor) -> Tensor:
        """Log-probabilities of the peers' ensemble (their averaged probabilities, see
        :func:`~kdtutor.losses.schemes.ensemble_log_probs`)."""
        return ensemble_log_probs([peer(x) for peer in self.peers])

    def eval_networks(self) -> dict[str, Callable[[Any], Any]]:
        """``peer1`` (the student, the run's score), ``peer2`` ... ``peerK``, ``ensemble``."""
        networks: dict[str, Callable[[Any], Any]] = {
            f"peer{k}": peer for k, peer in enumerate(self.peers, start=1)
        }
        networks["ensemble"] = self.ensemble
        return networks

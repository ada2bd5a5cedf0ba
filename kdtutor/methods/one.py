r"""On-the-fly native ensemble, ONE (Lan, Zhu, Gong, 2018).

No teacher: the student's first stages become a shared *trunk* and its last stage (with the
pooling and classifier after it) is copied into :math:`M` *branches*. A small *gate* reads the
trunk's output and weighs the branches' logits into an ensemble :math:`z_e`, and the ensemble,
detached, teaches every branch by Hinton's KD term. The ensemble is built on the fly, in the
same forward pass, so it costs one trunk and :math:`M` branches instead of :math:`M` networks.

Branch 1 is the student's own last stage: after training, the user's student object is trunk
+ branch 1 and is deployed alone. The split is made by
:func:`~kdtutor.models.split.split_at_stage` (``torch.fx``), so the student's ``forward`` must
be traceable; a student that is not (``vgg8``, ``mlp``) is refused with a pointer to DML.

Checked against the authors' code (Lan1991Xu/ONE_NeurIPS2018, commit 54afde3):
``models/cifar/resnet.py`` lines 191-192 and 237-243 (the gate: global average pooling of the
shared layer2's output, ``Linear(C, 3)``, ``BatchNorm1d(3)``, ReLU, softmax) and 260-263
(:math:`z_e = \sum_i g_i z_i`); ``cifar_one.py`` lines 294-297 (every branch's CE, the
ensemble's own CE, and ``consistency_weight`` times the sum of the branches' KL terms);
``loss/kl_loss.py`` lines 16-22 (:math:`T = 3`, the target :math:`z_e` detached, the KL times
:math:`T^2` and averaged over the batch); ``utils/ramps.py`` lines 4-11 with ``cifar_one.py``
lines 284 and 397-399 (the weight :math:`\exp(-5(1 - e/80)^2)` of the 0-based epoch
:math:`e`, set once per epoch); ``scripts/ONE_ResNet32.sh`` (300 epochs, ramp-up 80).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative
from ..errors import KDTutorError, ShapeMismatchError
from ..features import evaluating
from ..losses.response import kd_loss
from ..losses.schemes import gated_ensemble
from ..models.split import SplitError, split_at_stage
from ._peers import fresh_copy
from .base import Distiller
from .feature_base import guess_input_shape
from .hparams import LossWeights
from .registry import register_method

__all__ = ["ONE", "GatedEnsemble", "ONEGate", "ONEHParams", "sigmoid_rampup"]


def sigmoid_rampup(epoch: float, length: float) -> float:
    r"""ONE's weight of the KD term at the 0-based ``epoch``: a "sigmoid-shaped" ramp-up.

    .. math::
        w(e) = \exp\!\big(-5\,(1 - \min(e, R) / R)^2\big), \qquad w = 1 \text{ when } R = 0,

    rising from :math:`e^{-5} \approx 0.0067` at epoch 0 to 1 at epoch :math:`R` and staying
    there. Laine & Aila (2017, Temporal Ensembling) introduced it; ONE's code (Lan et al.,
    2018; ``utils/ramps.py``) uses it with :math:`R = 80` of 300 epochs.

    Args:
        epoch: the 0-based epoch :math:`e` (values below 0 count as 0).
        length: the ramp's length :math:`R` in epochs (>= 0).

    Returns:
        The weight :math:`w(e)` in :math:`(0, 1]`.
    """
    if length < 0:
        raise ConfigError(f"sigmoid_rampup: the ramp length must be >= 0, got {length!r}.")
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(float(epoch), 0.0), float(length)) / float(length)
    return math.exp(-5.0 * phase * phase)


class ONEGate(nn.Module):
    r"""ONE's gate: one weight per branch and image, from the trunk's output :math:`h`.

    .. math:: g(h) = \mathrm{softmax}\big(\mathrm{ReLU}(\mathrm{BN}(W\,\mathrm{avgpool}(h)
        + b))\big) \in \Delta^{M-1}

    (Lan et al., 2018; the authors' ``control_v1``, ``bn_v1``). The BatchNorm1d needs at
    least two images per training batch.

    Args:
        channels: :math:`C`, the trunk output's channels (``(B, C, H, W)``) or features
            (``(B, C)``).
        branches: :math:`M`.
    """

    def __init__(self, channels: int, branches: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, branches)
        self.bn = nn.BatchNorm1d(branches)

    def forward(self, h: Tensor) -> Tensor:
        """``(B, M)`` gate weights; each row sums to 1."""
        pooled = h.flatten(2).mean(dim=2) if h.dim() > 2 else h
        return F.softmax(F.relu(self.bn(self.fc(pooled))), dim=1)


class GatedEnsemble(nn.Module):
    """The network ONE scores as its ensemble: one trunk, every branch, the gate.

    It holds the distiller's own modules (no copies), so it is built on demand and never
    registered in the distiller (its parameters would appear twice in the state dict).
    ``forward`` returns the ensemble's logits :math:`z_e` (see
    :func:`~kdtutor.losses.schemes.gated_ensemble`).
    """

    def __init__(self, trunk: nn.Module, branches: Sequence[nn.Module], gate: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.branches = nn.ModuleList(branches)
        self.gate = gate

    def forward(self, x: Tensor) -> Tensor:
        h = self.trunk(x)
        return gated_ensemble(torch.stack([branch(h) for branch in self.branches]), self.gate(h))


@dataclass(frozen=True)
class ONEHParams(LossWeights):
    """Defaults of the authors' code (Lan1991Xu/ONE_NeurIPS2018): every CE weighted 1
    (``ce_weight``), the KD term weighted 1 (``kd_weight``) times the ramp-up
    :func:`sigmoid_rampup` over ``rampup_epochs`` = 80 of its 300 epochs, ``T`` = 3 and
    ``branches`` = 3.

    Attributes:
        branches: :math:`M`, the student's own last stage included (at least 2).
        rampup_epochs: length of the KD weight's ramp-up, in epochs (0: weight 1 at once).
        split_at: the stage whose input the trunk ends at (one of the student's
            ``stage_names``); empty: the last stage, as the authors' ResNets (layer 3).
    """

    ce_weight: float = 1.0
    kd_weight: float = 1.0
    T: float = 3.0
    branches: int = 3
    rampup_epochs: int = 80
    split_at: str = ""

    def validate(self) -> None:
        super().validate()
        if (
            isinstance(self.branches, bool)
            or not isinstance(self.branches, int)
            or self.branches < 2
        ):
            raise ConfigError(
                f"one.branches must be an integer >= 2 (the student's own branch and at least "
                f"one copy), got {self.branches!r}."
            )
        non_negative("rampup_epochs", self.rampup_epochs, "one")


@register_method
class ONE(Distiller):
    r"""On-the-fly native ensemble: with branch logits :math:`z_1..z_M` on a shared trunk,
    the gate's weights :math:`g(x)` and :math:`z_e = \sum_i g_i z_i`,

    .. math::
        \mathcal{L} = \lambda_{CE}\Big(\sum_{i=1}^{M} \mathrm{CE}(z_i, y)
            + \mathrm{CE}(z_e, y)\Big)
            + \lambda_{KD}\, w(e) \sum_{i=1}^{M} T^2\,
              \mathrm{KL}\big(p_e^T \,\|\, p_i^T\big),

    with :math:`z_e` detached in the KL terms (it is trained by its own CE, which reaches the
    branches, the gate and the trunk) and :math:`w(e)` the ramp-up :func:`sigmoid_rampup`
    (set by :meth:`on_epoch_start`; before it, the first epoch's weight). Logged as
    ``ce1..ceM``, ``ce_ens``, ``kd1..kdM`` (already weighted). The authors' KL adds
    :math:`10^{-7}` to the target probabilities; :func:`~kdtutor.losses.kd_loss` is the exact KL.

    ``self.student`` is the user's model, i.e. the trunk + branch 1 (they share its
    parameters); branches 2..M are :func:`~kdtutor.methods._peers.fresh_copy` copies of its
    last part (seed torch before building the student and they are reproducible).
    Scored after each epoch: ``branch1`` (the student, the run's score) ... ``branchM`` and
    the gated ``ensemble``.

    Args:
        student: a model with ``stage_names`` whose ``forward`` ``torch.fx`` can trace.
        teacher: must be ``None``.
        hparams: :class:`ONEHParams`.
        input_shape: one sample's shape, to size the gate (default: guessed from the
            student's first convolution, 32x32).

    Example:
        >>> from kdtutor.methods import build_distiller
        >>> from kdtutor.models import build_model
        >>> one = build_distiller("one", build_model("cnn_tiny"))
        >>> list(one.eval_networks())
        ['branch1', 'branch2', 'branch3', 'ensemble']
    """

    name = "one"
    family = "online"
    paper = "Lan, Zhu, Gong (2018). Knowledge Distillation by On-the-Fly Native Ensemble"
    hparams_cls = ONEHParams
    requires_teacher = False
    loss_weights = ("kd_weight",)
    epoch_hparams: ClassVar[Mapping[str, int]] = {"rampup_epochs": 80}
    protocol_epochs = 300

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: ONEHParams | None = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if teacher is not None:
            raise KDTutorError(
                "method 'one' builds its own teacher (the gated ensemble of its branches) and "
                "takes none: pass teacher=None (on the command line: --teacher none)."
            )
        super().__init__(student, None, hparams)
        hp = self.hparams
        try:
            trunk, head = split_at_stage(student, hp.split_at or None)
        except SplitError as exc:
            reason = str(exc).rstrip(".")
            raise SplitError(
                "ONE needs a traceable model (its branches share the student's first stages, "
                f"cut out by torch.fx): {reason}; use dml for this student (its peers are "
                "whole networks)."
            ) from exc
        self._parts = (trunk, head)  # a tuple: not registered (the student holds the modules)
        self.branch_copies = nn.ModuleList(fresh_copy(head) for _ in range(hp.branches - 1))
        shape = tuple(input_shape) if input_shape else guess_input_shape(student)
        self.gate = ONEGate(_trunk_channels(trunk, shape), hp.branches)
        self.kd_ramp = sigmoid_rampup(0, hp.rampup_epochs)

    @property
    def trunk(self) -> nn.Module:
        """The student's first part, shared by every branch (a ``torch.fx.GraphModule``)."""
        return self._parts[0]

    @property
    def branches(self) -> list[nn.Module]:
        """The :math:`M` branches, the student's own last part (branch 1) first."""
        return [self._parts[1], *self.branch_copies]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Set this epoch's KD weight :math:`w(e)` (:func:`sigmoid_rampup`)."""
        self.kd_ramp = sigmoid_rampup(epoch, self.hparams.rampup_epochs)

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Branch 1's (the student's) logits and the weighted losses of the class formula."""
        hp = self.hparams
        if self.training and x.shape[0] < 2:
            raise KDTutorError(
                "ONE's gate normalises over the batch (BatchNorm1d) and needs at least 2 images "
                f"per training batch, got {x.shape[0]}: choose a batch size that does not leave "
                "a last batch of one image (or drop one training image)."
            )
        h = self.trunk(x)
        logits = torch.stack([branch(h) for branch in self.branches])  # (M, B, K)
        ensemble = gated_ensemble(logits, self.gate(h))
        losses = {
            f"ce{i}": hp.ce_weight * F.cross_entropy(z, y) for i, z in enumerate(logits, start=1)
        }
        losses["ce_ens"] = hp.ce_weight * F.cross_entropy(ensemble, y)
        if hp.kd_weight > 0:
            target = ensemble.detach()
            weight = hp.kd_weight * self.kd_ramp
            for i, z in enumerate(logits, start=1):
                losses[f"kd{i}"] = weight * kd_loss(z, target, hp.T)
        return logits[0], losses

    def branch_network(self, i: int) -> nn.Module:
        """Branch ``i`` (1-based) as a network: trunk + branch ``i`` (branch 1 is the student)."""
        if not 1 <= i <= len(self.branch_copies) + 1:
            raise KDTutorError(
                f"ONE has branches 1..{len(self.branch_copies) + 1}, got branch {i}."
            )
        return self.student if i == 1 else nn.Sequential(self.trunk, self.branch_copies[i - 2])

    def ensemble_network(self) -> GatedEnsemble:
        """The gated ensemble as a network (one trunk, the M branches, the gate), sharing this
        distiller's modules, e.g. for :func:`~kdtutor.models.summary.model_summary`."""
        return GatedEnsemble(self.trunk, self.branches, self.gate)

    def eval_networks(self) -> dict[str, Callable[[Any], Any]]:
        """``branch1`` (the student, the run's score) ... ``branchM`` and the gated
        ``ensemble`` (its logits :math:`z_e`)."""
        networks: dict[str, Callable[[Any], Any]] = {
            f"branch{i}": self.branch_network(i) for i in range(1, len(self.branch_copies) + 2)
        }
        networks["ensemble"] = self.ensemble_network()
        return networks


def _trunk_channels(trunk: nn.Module, input_shape: Sequence[int]) -> int:
    """Channels (dim 1) of the trunk's output on two images of ``input_shape``."""
    first = next(trunk.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(2, *input_shape, device=device)
    try:
        with torch.no_grad(), evaluating(trunk):
            h = trunk(x)
    except RuntimeError as exc:
        raise ShapeMismatchError(
            f"ONE could not run the student's trunk on inputs of shape {tuple(input_shape)}: "
            f"{str(exc).splitlines()[0]}. Pass input_shape=(C, H, W) of your data."
        ) from None
    if not isinstance(h, Tensor) or h.dim() not in (2, 4):
        shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
        raise ShapeMismatchError(
            f"ONE's gate reads the trunk's output as (B, C, H, W) or (B, C), but it is {shape}: "
            "split the student at another stage (split_at=...), or use dml."
        )
    return int(h.shape[1])

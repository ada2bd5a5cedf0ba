r"""Be Your Own Teacher, BYOT (Zhang, Song, Gao, Chen, Bao, Ma, 2019): self-distillation by exits.

No teacher: the network is cut into its stages, and after every stage but the last an *exit*
(a small bottleneck, global pooling and a linear classifier) makes its own prediction. The
deepest exit, the network's own classifier, teaches the shallow ones: each shallow exit
learns the labels, the deepest exit's softened prediction and, through a hint, the deepest
exit's pooled features. The shallow exits give the network "anytime" predictions (stop after
stage :math:`i`, pay only the FLOPs up to exit :math:`i`), and the extra supervision of the
early stages is meant to improve the deepest exit too.

The paper gives the loss but no hyperparameters; the published re-implementation that the
references quote (llf000000/llf000000-pytorch-be-your-own-teacher, a fork of
luanyunteng/pytorch-be-your-own-teacher with the same training code) uses
:math:`\alpha = 0.1`, :math:`T = 3`, :math:`\lambda = 10^{-6}` (``train.py``, lines 77-82) and
differs from the paper's equation in three places, which ``mode`` chooses between (see
:class:`BYOT`). :func:`exit_networks` gives every exit as a standalone network from the input,
to measure its cost with :func:`~kdtutor.models.summary.model_summary`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative
from ..errors import KDTutorError, ShapeMismatchError, unknown_name
from ..features import FeatureExtractor
from ..losses.response import kd_loss, soft_cross_entropy
from ..losses.schemes import byot_feature_loss, ensemble_log_probs
from ..models.common import FeatureAttributeError, stage_names
from ..models.split import split_at_stage
from .base import Distiller, HParams
from .feature_base import guess_input_shape, probe_shapes
from .hparams import LossWeights
from .registry import register_method

__all__ = [
    "BYOT",
    "BYOT_MODES",
    "BYOTHParams",
    "EarlyExit",
    "ExitHead",
    "byot_kd_loss",
    "exit_networks",
]

BYOT_MODES: tuple[str, ...] = ("code", "paper")
"""``"code"``: the published re-implementation's loss (the default: its settings are the only
published ones); ``"paper"``: the paper's equation (see :class:`BYOT`)."""


def byot_kd_loss(
    logits: Tensor, deepest_logits: Tensor, temperature: float, mode: str = "code"
) -> Tensor:
    r"""The pull of a shallow exit towards the deepest exit's softened prediction.

    ``mode="paper"``: Hinton's term, :math:`T^2\,\frac1B\sum_b
    \mathrm{KL}\big(p_C^T(x_b) \,\|\, p_i^T(x_b)\big)` (:func:`~kdtutor.losses.kd_loss`).

    ``mode="code"`` (the re-implementation's ``kd_loss_function`` times ``T**2``): the soft
    cross entropy

    .. math::
        T^2\,\frac1B\sum_b \Big(-\sum_k p_{C,k}^T(x_b) \log p_{i,k}^T(x_b)\Big)
        = T^2\,\frac1B\sum_b \Big(\mathrm{KL}\big(p_C^T \,\|\, p_i^T\big) + H\big(p_C^T\big)\Big),

    with :math:`p^T = \mathrm{softmax}(z / T)`. The two differ by the deepest exit's entropy,
    a constant for the shallow exit, so their gradients are equal. The deepest logits are
    detached in both: the shallow exit learns from the deepest, not the other way round.

    Args:
        logits: ``(B, K)`` logits :math:`z_i` of a shallow exit.
        deepest_logits: ``(B, K)`` logits :math:`z_C` of the deepest exit.
        temperature: :math:`T > 0`.
        mode: one of :data:`BYOT_MODES`.

    Returns:
        A scalar tensor.
    """
    target = deepest_logits.detach()
    if mode == "paper":
        return kd_loss(logits, target, temperature)
    if mode == "code":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        soft_target = F.softmax(target / temperature, dim=1)
        return temperature**2 * soft_cross_entropy(logits / temperature, soft_target)
    raise ConfigError(f"unknown BYOT mode {mode!r}; choose one of {', '.join(BYOT_MODES)}.")


@dataclass(frozen=True)
class BYOTHParams(LossWeights):
    r"""Defaults from the re-implementation the references quote (the paper gives none):
    llf000000/llf000000-pytorch-be-your-own-teacher, ``train.py``: ``--alpha 0.1``,
    ``--temperature 3``, ``--beta 1e-6`` (lines 77-82) and the total loss
    ``(1 - alpha) * (CE of every exit) + alpha * (KD terms) + beta * (feature terms)``
    (lines 252-254).

    Attributes:
        ce_weight: :math:`1-\alpha`, the weight of every exit's cross entropy (in
            ``mode="paper"`` the deepest exit's cross entropy is weighted 1).
        kd_weight: :math:`\alpha`, the weight of each shallow exit's KD term.
        T: the KD temperature.
        beta: the code's name for the paper's :math:`\lambda`, the weight of the feature hint.
            1e-6 is the code's value for its loss summed over the batch and the features;
            ``mode="paper"`` averages over the batch and has no published weight.
        mode: ``"code"`` or ``"paper"`` (:data:`BYOT_MODES`).
        exits: the stages (paths from the student's ``stage_names``, all but the last) after
            which an exit is attached, shallowest first; empty: every stage but the last.
        bottleneck_ratio: the bottleneck's middle width is the deepest features' width
            divided by this (the code's ``channel_out // 4``).
    """

    ce_weight: float = 0.9
    kd_weight: float = 0.1
    T: float = 3.0
    beta: float = 1e-6
    mode: str = "code"
    exits: tuple[str, ...] = ()
    bottleneck_ratio: int = 4

    def validate(self) -> None:
        super().validate()
        non_negative("beta", self.beta, self.owner())
        if self.mode not in BYOT_MODES:
            raise ConfigError(
                f"byot.mode must be one of {', '.join(map(repr, BYOT_MODES))}, got {self.mode!r}."
            )
        if isinstance(self.exits, str) or not all(isinstance(p, str) and p for p in self.exits):
            raise ConfigError(
                f"byot.exits must be a tuple of stage paths, e.g. ('stages.0', 'stages.1'), got "
                f"{self.exits!r}."
            )
        ratio = self.bottleneck_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ConfigError(f"byot.bottleneck_ratio must be an integer >= 1, got {ratio!r}.")


class ExitHead(nn.Module):
    r"""One shallow exit of BYOT: a bottleneck, global average pooling and a linear classifier.

    The bottleneck brings a stage's :math:`(C_i, H_i, W_i)` map to the deepest features' width
    :math:`D` and about their resolution, as the re-implementation's ``branchBottleNeck`` does
    (``models/resnet.py``, lines 17-31): conv1x1 (:math:`C_i \to D/r`)-BN-ReLU, a
    :math:`k_h \times k_w` convolution of stride :math:`(k_h, k_w)`-BN-ReLU, conv1x1
    (:math:`D/r \to D`)-BN-ReLU, convolutions with biases. :meth:`embed` returns the pooled
    :math:`F_i` (the hint's input), :meth:`forward` the exit's logits.

    Args:
        in_channels: :math:`C_i`.
        channels: :math:`D`, the width of the deepest exit's pooled features.
        kernel: :math:`(k_h, k_w)`, the downsampling of the middle convolution.
        num_classes: the classifier's outputs.
        ratio: :math:`r`; the middle width is ``max(1, channels // ratio)``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel: tuple[int, int],
        num_classes: int,
        ratio: int = 4,
    ) -> None:
        super().__init__()
        middle = max(1, channels // ratio)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels, middle, kernel_size=1),
            nn.BatchNorm2d(middle),
            nn.ReLU(),
            nn.Conv2d(middle, middle, kernel_size=kernel, stride=kernel),
            nn.BatchNorm2d(middle),
            nn.ReLU(),
            nn.Conv2d(middle, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():  # the code's init: Kaiming (fan_out) convolutions
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def embed(self, h: Tensor) -> Tensor:
        """The pooled features :math:`F_i`, ``(B, D)``, of a stage's output ``h``."""
        return self.flatten(self.pool(self.bottleneck(h)))

    def forward(self, h: Tensor) -> Tensor:
        return self.fc(self.embed(h))


@register_method
class BYOT(Distiller):
    r"""Be Your Own Teacher: exits after the early stages, taught by the deepest exit.

    With :math:`z_i, F_i` the logits and pooled features of shallow exit :math:`i`
    (:class:`ExitHead` after stage :math:`i`), :math:`z_C, F_C` the student's own logits and
    pooled last-stage features (at its ``embedding_path``), :math:`p^T = \mathrm{softmax}(z/T)`,
    :math:`\lambda_{CE} = 1-\alpha` (``ce_weight``), :math:`\lambda_{KD} = \alpha`
    (``kd_weight``) and :math:`\beta` (``beta``, the paper's :math:`\lambda`),
    ``mode="code"`` (default; the re-implementation's ``train.py``, lines 218-254) minimises

    .. math::
        \lambda_{CE}\Big(\mathrm{CE}(z_C, y) + \sum_i \mathrm{CE}(z_i, y)\Big)
        + \lambda_{KD} \sum_i T^2\,\frac1B\sum_b \Big(-\sum_k p^T_{C,k} \log p^T_{i,k}\Big)
        + \beta \sum_i \sum_{b,j} (F_i - F_C)_{bj}^2\,
          \mathbb{1}\big[(F_i)_{bj} > 0 \lor (F_C)_{bj} > 0\big]

    and ``mode="paper"`` (Zhang et al., 2019, section 3, as the references give it)

    .. math::
        \mathrm{CE}(z_C, y) + \sum_i \Big(\lambda_{CE}\,\mathrm{CE}(z_i, y)
        + \lambda_{KD}\,T^2\,\frac1B\sum_b \mathrm{KL}\big(p_C^T \,\|\, p_i^T\big)
        + \beta\,\frac1B\sum_b \lVert F_i - F_C \rVert_2^2\Big).

    The three differences: the code weights the deepest exit's cross entropy by
    :math:`1-\alpha` too; its KD term is a soft cross entropy (:func:`byot_kd_loss`: the KL
    plus the constant entropy of :math:`p_C^T`, same gradient); its hint is summed over the
    batch and counts only features where either side is positive
    (:func:`~kdtutor.losses.schemes.byot_feature_loss`). In both modes :math:`z_C` and
    :math:`F_C` are detached in the KD and hint terms, so the deepest exit learns from the
    labels only. The :math:`T^2` of the paper mode is Hinton's convention (as in the code).

    Logged (already weighted): ``ce`` (deepest exit), then ``ce{i}``, ``kd{i}``, ``feat{i}``
    per shallow exit (``kd{i}`` absent when ``kd_weight`` is 0, ``feat{i}`` when ``beta`` is
    0). Scored after each epoch: ``student`` (the deepest exit, the run's score), ``exit1``
    ... ``exit{S-1}`` (shallowest first; :class:`EarlyExit` runs the student only up to the
    exit's stage, so its FLOPs are the exit's own) and ``ensemble`` (the exits' averaged
    probabilities, :func:`~kdtutor.losses.schemes.ensemble_log_probs`; our choice: the
    re-implementation scores each exit only). The heads train with the student and are
    checkpointed with it (``heads.*`` in the state dict).

    Args:
        student: a model with ``stage_names`` whose stage outputs are feature maps (C, H, W)
            and an ``embedding_path`` (every CNN of :func:`kdtutor.models.build_model`).
        teacher: must be ``None``: the network teaches itself.
        hparams: :class:`BYOTHParams`.
        input_shape: one sample's shape, to probe the stage shapes (default: guessed from the
            student's first convolution, 32x32).

    Example:
        >>> from kdtutor.methods import build_distiller
        >>> from kdtutor.models import build_model
        >>> byot = build_distiller("byot", build_model("cnn_wide_s2"))
        >>> byot.exit_paths, list(byot.eval_networks())
        (('stages.0', 'stages.1'), ['student', 'exit1', 'exit2', 'ensemble'])
    """

    name = "byot"
    family = "self"
    paper = (
        "Zhang, Song, Gao, Chen, Bao, Ma (2019). Be Your Own Teacher: Improve the Performance "
        "of Convolutional Neural Networks via Self Distillation"
    )
    hparams_cls = BYOTHParams
    requires_teacher = False
    loss_weights = ("kd_weight", "beta")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: HParams | None = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if teacher is not None:
            raise KDTutorError(
                "method 'byot' trains the student's shallow exits from its own deepest exit and "
                "takes no teacher: pass teacher=None (on the command line: --teacher none)."
            )
        super().__init__(student, None, hparams)
        hp: BYOTHParams = self.hparams  # type: ignore[assignment]
        stages = stage_names(student)
        if len(stages) < 2:
            raise KDTutorError(
                f"byot attaches exits after every stage but the last, and "
                f"{type(student).__name__} has {len(stages)} stage(s) ({', '.join(stages)}): "
                "use a student with two or more stages."
            )
        self.exit_paths: tuple[str, ...] = self._check_exits(hp.exits or stages[:-1], stages)
        embedding = getattr(student, "embedding_path", None)
        if not isinstance(embedding, str) or not embedding:
            raise FeatureAttributeError(
                f"byot reads the deepest exit's pooled features at the student's embedding_path, "
                f"and {type(student).__name__} has none: set it with "
                "kdtutor.models.set_feature_paths(model, ..., embedding='fc:input')."
            )
        self.embedding_path: str = embedding
        self.input_shape = tuple(input_shape) if input_shape else guess_input_shape(student)
        paths = [*self.exit_paths, stages[-1], embedding]
        *exit_shapes, last, embedded = probe_shapes(student, paths, self.input_shape, "student")
        if len(embedded) != 1:
            raise ShapeMismatchError(
                f"byot needs a pooled vector (D,) at the student's embedding_path "
                f"{embedding!r}, got per-sample shape {embedded}."
            )
        for path, shape in zip([*self.exit_paths, stages[-1]], [*exit_shapes, last], strict=True):
            if len(shape) != 3:
                raise ShapeMismatchError(
                    f"byot's exits take feature maps (C, H, W), but stage {path!r} of "
                    f"{type(student).__name__} outputs per-sample shape {shape}: use a "
                    "convolutional student (e.g. cnn_wide_s2, resnet8_half_s2)."
                )
        num_classes = getattr(student, "num_classes", None)
        if num_classes is None:  # a user's model: the width of its last linear layer
            num_classes = probe_shapes(student, [_classifier(student)], self.input_shape)[0][0]
        device = next(student.parameters()).device
        self.heads = nn.ModuleList(
            ExitHead(
                shape[0],
                embedded[0],
                (max(1, shape[1] // last[1]), max(1, shape[2] // last[2])),
                num_classes,
                hp.bottleneck_ratio,
            ).to(device)
            for shape in exit_shapes
        )

    @staticmethod
    def _check_exits(exits: Sequence[str], stages: Sequence[str]) -> tuple[str, ...]:
        allowed = list(stages[:-1])
        for path in exits:
            if path == stages[-1]:
                raise KDTutorError(
                    f"byot.exits: {path!r} is the student's last stage, whose exit is the "
                    f"student's own classifier; choose among {', '.join(allowed)}."
                )
            if path not in allowed:
                raise unknown_name("byot exit stage", path, allowed, "byot.exits names stages.")
        order = [allowed.index(p) for p in exits]
        if order != sorted(set(order)):
            raise KDTutorError(
                f"byot.exits must name distinct stages from shallowest to deepest, got "
                f"{tuple(exits)}; e.g. {tuple(allowed)}."
            )
        return tuple(exits)

    # -- the exits -------------------------------------------------------------------------------
    def exits_forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Logits and pooled features of every exit, shallowest first, the deepest last:
        ``([z_1, ..., z_C], [F_1, ..., F_C])`` from one forward of the student (with
        gradients)."""
        with FeatureExtractor(self.student, [*self.exit_paths, self.embedding_path]) as fx:
            deepest = self.student(x)
        logits, features = [], []
        for path, head in zip(self.exit_paths, self.heads, strict=True):
            feature = head.embed(fx.tensor(path))
            features.append(feature)
            logits.append(head.fc(feature))
        return [*logits, deepest], [*features, fx.tensor(self.embedding_path)]

    @torch.no_grad()
    def exit_logits(self, x: Tensor) -> list[Tensor]:
        """Every exit's logits, shallowest first, the student's (deepest) last; no gradient."""
        return self.exits_forward(x)[0]

    @torch.no_grad()
    def ensemble(self, x: Tensor) -> Tensor:
        """Log-probabilities of the exits' ensemble (their averaged probabilities)."""
        return ensemble_log_probs(self.exit_logits(x))

    def exit_networks(self) -> dict[str, nn.Module]:
        """Each exit as a standalone network from the input (see :func:`exit_networks`)."""
        return exit_networks(self)

    # -- the contract ----------------------------------------------------------------------------
    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp: BYOTHParams = self.hparams  # type: ignore[assignment]
        logits, features = self.exits_forward(x)
        *shallow, deepest = logits
        *hints, deepest_features = features
        deepest_weight = hp.ce_weight if hp.mode == "code" else 1.0
        losses = {"ce": deepest_weight * F.cross_entropy(deepest, y)}
        for i, (z, f) in enumerate(zip(shallow, hints, strict=True), start=1):
            losses[f"ce{i}"] = hp.ce_weight * F.cross_entropy(z, y)
            if hp.kd_weight > 0:
                losses[f"kd{i}"] = hp.kd_weight * byot_kd_loss(z, deepest, hp.T, hp.mode)
            if hp.beta > 0:
                losses[f"feat{i}"] = hp.beta * byot_feature_loss(f, deepest_features, hp.mode)
        return deepest, losses

    def eval_networks(self) -> dict[str, Callable[[Any], Any]]:
        """``student`` (the deepest exit, the run's score), ``exit1`` ... ``exit{S-1}``
        (shallowest first; each runs the student only up to its stage, see :class:`EarlyExit`),
        ``ensemble`` (of all exits)."""
        networks: dict[str, Callable[[Any], Any]] = {"student": self.predict}
        for i, (path, head) in enumerate(zip(self.exit_paths, self.heads, strict=True), start=1):
            networks[f"exit{i}"] = EarlyExit(self.student, path, head)
        networks["ensemble"] = self.ensemble
        return networks


class _StopForward(Exception):
    """Raised by :class:`EarlyExit`'s hook to end the student's forward at the exit's stage."""


class EarlyExit(nn.Module):
    """A shallow exit scored without running the stages after it, for any student.

    The student runs with a forward hook on the exit's ``stage`` that keeps the stage's output
    and ends the forward there (by raising an exception it catches), then ``head`` predicts
    from that output; no gradient is recorded. What runs, and so the FLOPs counted, is the
    exit's own cost, whether or not the student can be traced (compare :func:`exit_networks`,
    the same exits built with ``torch.fx``). The modules are shared, not copied.

    Args:
        student: the network the exit belongs to.
        stage: the path of the stage whose output the exit reads.
        head: the exit's :class:`ExitHead`.
    """

    def __init__(self, student: nn.Module, stage: str, head: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.head = head
        self.stage = stage

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        captured: list[Tensor] = []

        def stop(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            captured.append(output)
            raise _StopForward

        handle = self.student.get_submodule(self.stage).register_forward_hook(stop)
        try:
            self.student(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise KDTutorError(
                f"the student's forward never called stage {self.stage!r}, so its exit has no "
                "input: name stages that forward runs (byot.exits)."
            )
        return self.head(captured[0])


def _classifier(model: nn.Module) -> str:
    """The path of the model's last linear layer (for a model without ``num_classes``)."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise FeatureAttributeError(
            f"{type(model).__name__} has no num_classes and no linear classifier: set "
            "model.num_classes."
        )
    return linear[-1]


class _ExitEnsemble(nn.Module):
    """The ensemble of a BYOT distiller's exits as a network from the input."""

    def __init__(self, distiller: BYOT) -> None:
        super().__init__()
        self.distiller = distiller

    def forward(self, x: Tensor) -> Tensor:
        return ensemble_log_probs(self.distiller.exits_forward(x)[0])


def exit_networks(distiller: BYOT) -> dict[str, nn.Module]:
    """Every exit of a BYOT distiller as a standalone network from the input, by cost.

    ``exit{i}`` is ``nn.Sequential(trunk, stage, head)``: the student's layers before the exit's
    stage (the trunk of :func:`~kdtutor.models.split.split_at_stage`), the stage itself and the
    exit's :class:`ExitHead`, so it computes exactly what the exit predicts during training
    and costs only what running up to that exit costs; ``student`` is the student itself (the
    deepest exit); ``ensemble`` runs the student once and every head (the averaged
    probabilities of all exits, as log-probabilities). The modules share the distiller's
    parameters (nothing is copied). Measure them with
    :func:`~kdtutor.models.summary.model_summary` for the FLOPs of each exit. They compute
    what :meth:`BYOT.eval_networks` scores, by another route (``torch.fx`` instead of a hook
    that ends the forward: :class:`EarlyExit`), and cost the same.

    Args:
        distiller: a :class:`BYOT` distiller.

    Returns:
        ``{"exit1": ..., ..., "exit{S-1}": ..., "student": ..., "ensemble": ...}``, in order of
        increasing cost.

    Raises:
        SplitError: the student's ``forward`` cannot be traced by ``torch.fx`` (see
            :func:`~kdtutor.models.split.split_at_stage`); training and scoring work anyway.

    Example:
        >>> from kdtutor.methods import build_distiller
        >>> from kdtutor.models import build_model, model_summary
        >>> byot = build_distiller("byot", build_model("cnn_wide_s2"))
        >>> flops = {name: model_summary(net, latency_runs=0).flops
        ...          for name, net in exit_networks(byot).items()}
        >>> flops["exit1"] < flops["exit2"] < flops["student"] < flops["ensemble"]
        True
    """
    if not isinstance(distiller, BYOT):
        raise KDTutorError(
            f"exit_networks needs a BYOT distiller (build_distiller('byot', student)), got "
            f"{type(distiller).__name__}."
        )
    student = distiller.student
    networks: dict[str, nn.Module] = {}
    for i, (path, head) in enumerate(zip(distiller.exit_paths, distiller.heads, strict=True)):
        trunk, _ = split_at_stage(student, path)
        networks[f"exit{i + 1}"] = nn.Sequential(trunk, student.get_submodule(path), head)
    networks["student"] = student
    networks["ensemble"] = _ExitEnsemble(distiller)
    return networks

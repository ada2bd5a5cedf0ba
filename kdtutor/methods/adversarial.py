r"""Adversarial distillation (Xu, Hsu, Huang, 2018; MEAL, Shen et al., 2019): a discriminator,
with its own optimizer and stepped before the student in each training step, tells the
teacher's outputs from the student's; the student learns to fool it.

What the discriminator reads is ``target``: the logits (``"logits"``, Xu et al.'s form,
optionally conditioned on the label) or the pooled embeddings the classifiers see
(``"features"``, MEAL's form on one block: the teacher's embedding against the student's
through a linear connector to the teacher's width, trained with the student)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..cache import TeacherOutputs, teacher_forward
from ..config import ConfigError, non_negative, positive
from ..connectors import build_connector
from ..errors import KDTutorError, ShapeMismatchError
from ..features import FeatureExtractor, evaluating
from ..losses.adversarial import conditioned_input, gan_d_loss, gan_g_loss
from .base import Distiller
from .feature_base import FeatureHParams, default_paths, guess_input_shape, probe_shapes
from .hparams import HParams
from .registry import register_method
from .steps import OptimizerGroup, Steps

__all__ = [
    "AdversarialHParams",
    "AdversarialKD",
    "build_discriminator",
    "discriminator_accuracy",
]

#: What the discriminator may read: the logits, or the pooled embeddings.
_TARGETS: tuple[str, ...] = ("logits", "features")


@dataclass(frozen=True)
class AdversarialHParams(FeatureHParams):
    """Defaults: ``ce_weight`` 0.1, ``kd_weight`` 0.9, ``T`` 4 (KD's RepDistiller values: the
    adversarial term is added beside plain KD); ``adv_weight`` 0.1 (our choice, the engine
    demo's; no verified source fixes it: tune it on validation images). The discriminator is
    an MLP ``in -> d_hidden -> d_hidden -> 1`` (LeakyReLU 0.2) trained by Adam at ``d_lr``
    2e-4, betas (0.5, 0.999), no weight decay, constant rate: DCGAN's settings (Radford et al.,
    2016), not verified for Xu et al. MEAL-style (Shen et al., 2019): ``ce_weight=0,
    kd_weight=1, T=1`` with a :class:`~kdtutor.methods._teachers.TeacherEnsemble` teacher.

    ``target`` is what the discriminator reads: ``"logits"`` (the default; Xu, Hsu, Huang,
    2018) or ``"features"``: the teacher's pooled embedding against the student's mapped to
    the teacher's width by a connector of kind ``connector`` (default ``"linear"``; see
    :func:`~kdtutor.connectors.build_connector`), which trains with the student. The pair is
    the models' ``embedding_path`` unless ``student_paths`` / ``teacher_paths`` name one pair
    of vector features (both only with ``target="features"``). ``condition=True`` shows the
    discriminator the label too, with either target: ``[z ; onehot(y)]`` (the conditional form
    of Xu et al.'s title), ``[c(f_s) ; onehot(y)]`` and ``[f_t ; onehot(y)]`` for features.
    ``init_epochs`` (from :class:`~kdtutor.methods.feature_base.FeatureHParams`) must stay 0:
    the method has one stage."""

    ce_weight: float = 0.1
    kd_weight: float = 0.9
    T: float = 4.0
    connector: str = "linear"
    adv_weight: float = 0.1
    target: str = "logits"
    condition: bool = False
    d_hidden: int = 64
    d_lr: float = 2e-4

    def validate(self) -> None:
        super().validate()
        non_negative("adv_weight", self.adv_weight, self.owner())
        positive("d_hidden", self.d_hidden, self.owner())
        positive("d_lr", self.d_lr, self.owner())
        if self.target not in _TARGETS:
            raise ConfigError(
                f"adversarial.target must be one of {', '.join(_TARGETS)} (what the "
                f"discriminator reads); got {self.target!r}."
            )
        if self.init_epochs:
            raise ConfigError(
                f"adversarial has one stage, so init_epochs must be 0; got {self.init_epochs}."
            )
        if self.target == "logits" and (self.student_paths or self.teacher_paths):
            raise ConfigError(
                "adversarial: student_paths / teacher_paths choose the features the "
                "discriminator reads, so they need target='features' (the logits target "
                "reads no features); drop them or set target='features'."
            )
        if len(self.student_paths) > 1:
            raise ConfigError(
                f"adversarial reads one pair of features, got {len(self.student_paths)} "
                "student_paths; give one path on each side (or none: the embeddings)."
            )
        if self.ce_weight == 0 and self.kd_weight == 0 and self.adv_weight == 0:
            raise ConfigError(
                "adversarial: ce_weight, kd_weight and adv_weight are all 0, so the student "
                "would learn nothing; give one a positive weight."
            )


def build_discriminator(in_features: int, hidden: int = 64) -> nn.Sequential:
    """The discriminator: ``Linear(in, h) - LeakyReLU(0.2) - Linear(h, h) - LeakyReLU(0.2) -
    Linear(h, 1)``, one logit per sample ("teacher" when large). No BatchNorm, so a batch of
    teacher outputs and one of student outputs are scored independently."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )


@register_method
class AdversarialKD(Distiller):
    r"""Adversarial KD: each step first trains the discriminator :math:`D` to tell the
    teacher's outputs :math:`u_t` (real) from the student's :math:`u_s` (fake),

    .. math::
        \mathcal{L}_D = \mathrm{BCE}(D(u_t), 1) + \mathrm{BCE}(D(u_s), 0)

    (:func:`~kdtutor.losses.adversarial.gan_d_loss`, its own Adam optimizer, :math:`u_s`
    detached), then the student on

    .. math::
        \lambda_{CE}\,\mathrm{CE} + \lambda_{KD}\,T^2\,\mathrm{KL}(p_t^T\|p_s^T)
            + \lambda_{adv}\,\mathrm{BCE}(D(u_s), 1)

    (:func:`~kdtutor.losses.adversarial.gan_g_loss`), with :math:`D` held fixed. With
    ``target="logits"`` :math:`u = z`, the logits (Xu, Hsu, Huang, 2018); with
    ``target="features"`` :math:`u_t = f_t`, the teacher's pooled embedding (read from the
    teacher-output cache when the trainer caches), and :math:`u_s = c(f_s)`, the student's
    embedding through the connector :math:`c` (a linear layer to the teacher's width, in the
    student's optimizer group): the discriminator on features of MEAL (Shen, He, Xue, 2019),
    on the last block only. ``condition=True`` appends :math:`\mathrm{onehot}(y)` to
    :math:`u`. Logged: ``ce``, ``kd``, ``adv`` and ``disc`` (:math:`\mathcal{L}_D`).

    ``input_shape`` (one sample, e.g. ``(3, 32, 32)``) sizes the embeddings with
    ``target="features"``, as for the feature methods (default: guessed from the student).
    """

    name = "adversarial"
    family = "adversarial"
    supports_ddp = False  # the discriminator is stepped outside steps.forward
    loss_weights = ("adv_weight",)
    paper = (
        "Xu, Hsu, Huang (2018). Training Shallow and Thin Networks for Acceleration via "
        "Knowledge Distillation with Conditional Adversarial Networks"
    )
    hparams_cls = AdversarialHParams

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: HParams | None = None,
        *,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(student, teacher, hparams)
        hp: AdversarialHParams = self.hparams  # type: ignore[assignment]
        classes = getattr(teacher, "num_classes", None) or getattr(student, "num_classes", None)
        self.reads_features = hp.target == "features"
        if classes is None and (hp.condition or not self.reads_features):
            raise KDTutorError(
                "adversarial: the discriminator's input size is the class count, but neither "
                "the student nor the teacher has a num_classes attribute; set "
                "model.num_classes = K on your model (models from kdtutor.models have it)."
            )
        self.num_classes = int(classes) if classes is not None else None
        self.student_paths: tuple[str, ...] = ()
        self.teacher_paths: tuple[str, ...] = ()
        self.connector: nn.Module | None = None
        if self.reads_features:
            assert teacher is not None  # Distiller refused a missing teacher
            width = self._build_connector(student, teacher, input_shape)
        else:
            width = self.num_classes
        if hp.condition:
            width += self.num_classes  # type: ignore[operator]
        self.discriminator = build_discriminator(width, hp.d_hidden)

    def _build_connector(
        self, student: nn.Module, teacher: nn.Module, input_shape: Sequence[int] | None
    ) -> int:
        """Choose the feature pair, probe its shapes, build the connector; the teacher's width."""
        hp: AdversarialHParams = self.hparams  # type: ignore[assignment]
        self.input_shape = tuple(input_shape) if input_shape else guess_input_shape(student)
        if hp.student_paths:
            self.student_paths, self.teacher_paths = hp.student_paths, hp.teacher_paths
        else:
            self.student_paths, self.teacher_paths = default_paths(student, teacher, "embedding")
        (s_shape,) = probe_shapes(student, self.student_paths, self.input_shape, "student")
        (t_shape,) = probe_shapes(teacher, self.teacher_paths, self.input_shape, "teacher")
        where = f"{self.student_paths[0]!r} -> {self.teacher_paths[0]!r}"
        if len(s_shape) != 1 or len(t_shape) != 1:
            raise ShapeMismatchError(
                f"adversarial with target='features' reads vectors (pooled embeddings), but "
                f"the features at {where} have shapes {s_shape} and {t_shape}. Leave "
                "student_paths / teacher_paths empty (the models' embedding_path) or name "
                "vector features (kdtutor.features.feature_shapes shows the shapes)."
            )
        self.connector = build_connector(s_shape, t_shape, hp.connector, where=where)  # type: ignore[arg-type]
        return int(t_shape[0])

    # -- what the discriminator reads ---------------------------------------------------------
    def discriminate(self, logits: Tensor, y: Tensor | None) -> Tensor:
        """:math:`D`'s logits ``(B,)`` on ``logits`` (the logits, or with ``target="features"``
        the embeddings), with the labels when ``condition``."""
        labels = y if self.hparams.condition else None
        classes = self.num_classes if self.reads_features else None
        return self.discriminator(conditioned_input(logits, labels, classes))[:, 0]

    def student_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The student's logits and what :math:`D` reads of it, :math:`u_s` (with
        gradients): the logits, or :math:`c(f_s)` with ``target="features"``."""
        if not self.reads_features:
            logits = self.student(x)
            return logits, logits
        assert self.connector is not None
        with FeatureExtractor(self.student, self.student_paths) as fx:
            logits = self.student(x)
        return logits, self.connector(fx.tensor(self.student_paths[0]))

    def teacher_side(self, teacher: TeacherOutputs) -> Tensor:
        """What :math:`D` reads of the teacher, :math:`u_t`: its logits, or its embedding
        (cached with the logits) with ``target="features"``."""
        if not self.reads_features:
            return teacher.logits
        return teacher.features[self.teacher_paths[0]]

    # -- the contract -------------------------------------------------------------------------
    def teacher_feature_paths(self) -> Sequence[str]:
        """The teacher's embedding with ``target="features"`` (cached with the logits); none
        for the logits."""
        return self.teacher_paths

    def bind_data(self, train_data: Any) -> None:
        images = getattr(train_data, "images", None)
        if (
            self.reads_features
            and images is not None
            and tuple(images.shape[1:]) != self.input_shape
        ):
            raise ShapeMismatchError(
                f"'adversarial' (target='features') was built for inputs of shape "
                f"{self.input_shape}, but the training data has samples of shape "
                f"{tuple(images.shape[1:])}. Build it with input_shape="
                f"{tuple(images.shape[1:])} (build_distiller(..., input_shape=...))."
            )

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The student's parameters, then the connector's (the discriminator has its own
        group)."""
        connector = self.connector.parameters() if self.connector is not None else ()
        return (p for p in itertools.chain(self.student.parameters(), connector) if p.requires_grad)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        return {
            "student": OptimizerGroup(list(self.trainable_parameters())),
            "discriminator": OptimizerGroup(
                list(self.discriminator.parameters()),
                optimizer="adam",
                lr=self.hparams.d_lr,
                weight_decay=0.0,
                betas=(0.5, 0.999),
                schedule="constant",
            ),
        }

    def discriminator_loss(
        self,
        logits: Tensor,
        teacher_logits: Tensor,
        y: Tensor,
        *,
        fake: Tensor | None = None,
        real: Tensor | None = None,
    ) -> Tensor:
        """:math:`\\mathcal{L}_D` on a batch, on ``real`` (:math:`u_t`) and ``fake``
        (:math:`u_s`, detached here), by default the teacher's and the student's logits."""
        real = teacher_logits if real is None else real
        fake = logits if fake is None else fake
        return gan_d_loss(self.discriminate(real.detach(), y), self.discriminate(fake.detach(), y))

    def student_losses(
        self, logits: Tensor, teacher_logits: Tensor, y: Tensor, *, fake: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The student's weighted losses, the adversarial term on ``fake`` (:math:`u_s`, by
        default the logits); :math:`D`'s parameters get no gradient from them."""
        hp = self.hparams
        fake = logits if fake is None else fake
        frozen = [p for p in self.discriminator.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            adv = gan_g_loss(self.discriminate(fake, y))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return hp.weighted_losses(logits, y, teacher_logits, {"adv": hp.adv_weight * adv})

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits and losses (no discriminator step: see :meth:`train_step`)."""
        logits, fake = self.student_forward(x)
        teacher = self.teacher_outputs(x, index)
        return logits, self.student_losses(logits, teacher.logits, y, fake=fake)

    def train_step(self, batch: Any, steps: Steps) -> tuple[Any, dict[str, Tensor]]:
        """Step the discriminator on this batch, then the student against the updated one."""
        logits, fake = self.student_forward(batch.x)
        teacher = self.teacher_outputs(batch.x, batch.rows)
        d_loss = steps.step(
            "discriminator",
            {
                "disc": self.discriminator_loss(
                    logits, teacher.logits, batch.y, fake=fake, real=self.teacher_side(teacher)
                )
            },
        )
        losses = self.student_losses(logits, teacher.logits, batch.y, fake=fake)
        steps.step("student", losses)
        return logits, {**{k: v.detach() for k, v in losses.items()}, "disc": d_loss}


@torch.no_grad()
def discriminator_accuracy(distiller: AdversarialKD, data: Any, n: int = 2000) -> float:
    """How often the discriminator tells teacher from student on the first ``n`` images of
    ``data`` (an ``ArrayDataset``), in percent: a teacher output counts as right when
    :math:`D > 0`, a student output when :math:`D \\le 0`; 50% means :math:`D` is fooled.
    :math:`D` reads what it reads in training (logits, or embeddings with
    ``target="features"``), with every network in eval mode. Call it from
    ``fit(..., on_epoch=...)`` on held-out images to draw its curve."""
    from ..train import predict_logits

    if not isinstance(distiller, AdversarialKD):
        raise KDTutorError(
            f"discriminator_accuracy needs an adversarial distiller, got {type(distiller).__name__}."
        )
    if n <= 0:
        raise KDTutorError(f"discriminator_accuracy: n must be positive, got {n}.")
    subset = data.subset(min(n, len(data))) if hasattr(data, "subset") else data
    device = next(distiller.discriminator.parameters()).device
    if distiller.reads_features:
        zs, zt, y = _embeddings(distiller, subset, device)
    else:
        zs, y = predict_logits(distiller.student, subset)
        zt, _ = predict_logits(distiller.teacher, subset)
    was = distiller.discriminator.training
    distiller.discriminator.eval()
    try:
        real = distiller.discriminate(zt.to(device), y.to(device))
        fake = distiller.discriminate(zs.to(device), y.to(device))
    finally:
        distiller.discriminator.train(was)
    right = int((real > 0).sum()) + int((fake <= 0).sum())
    return 100.0 * right / (2 * len(y))


def _embeddings(
    distiller: AdversarialKD, data: Any, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """:math:`c(f_s)`, :math:`f_t` and the labels on every sample of ``data``, in eval mode."""
    from ..data import BatchLoader

    fake, real, labels = [], [], []
    with evaluating(distiller):
        for batch in BatchLoader(data, 512):
            x = batch.x.to(device)
            fake.append(distiller.student_forward(x)[1].float())
            teacher = teacher_forward(distiller.teacher, x, distiller.teacher_paths)  # type: ignore[arg-type]
            real.append(distiller.teacher_side(teacher).float())
            labels.append(batch.y)
    if not labels:
        raise KDTutorError("discriminator_accuracy: the data has no samples.")
    return torch.cat(fake), torch.cat(real), torch.cat(labels)

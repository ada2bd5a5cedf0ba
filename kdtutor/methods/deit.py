r"""DeiT's distillation through attention (Touvron, Cord, Douze, Massa, Sablayrolles, Jégou, 2021).

A vision transformer student gets a second learnt token beside its class token, the
*distillation token*: both go through every attention block with the patch tokens, the class
token's final state feeds the classifier ``head``, the distillation token's feeds a second
classifier ``head_dist``. During training ``head`` learns from the labels and ``head_dist``
from the teacher; at test time either head, or both together, predict.

With :math:`z_c, z_d` the two heads' logits, :math:`z_t` the teacher's, :math:`\psi` the
softmax, :math:`\lambda_{CE}` = ``ce_weight``, :math:`\lambda_{KD}` = ``kd_weight`` and
:math:`\mathrm{CE}_\varepsilon` the cross entropy with labels smoothed by :math:`\varepsilon`
(``label_smoothing``), the loss is

.. math::
    \mathcal{L}_{hard} = \lambda_{CE}\,\mathrm{CE}_\varepsilon(z_c, y)
        + \lambda_{KD}\,\mathrm{CE}(z_d, y_t), \qquad y_t = \arg\max_k z_{t,k}

for *hard* distillation (the paper's eq. 3 with :math:`\lambda_{CE} = \lambda_{KD} = 1/2`), and

.. math::
    \mathcal{L}_{soft} = \lambda_{CE}\,\mathrm{CE}_\varepsilon(z_c, y)
        + \lambda_{KD}\,\tau^2\,\frac1B\sum_i \mathrm{KL}\big(\psi(z_t/\tau) \,\|\,
          \psi(z_d/\tau)\big)

for *soft* distillation (eq. 2, :math:`\lambda_{CE} = 1 - \lambda`, :math:`\lambda_{KD} =
\lambda`, :math:`\tau` = ``T``). Without the token (``token=False``: Table 3's "usual
distillation" and "hard distillation" rows), the one head :math:`z_c` takes both terms.

What the authors' code (facebookresearch/deit) does, read at commit ``7e160fe``:

* ``losses.py``, ``DistillationLoss.forward`` (lines 25-70): ``loss = base_loss * (1 - alpha) +
  distillation_loss * alpha`` (line 69); hard: ``F.cross_entropy(outputs_kd,
  teacher_outputs.argmax(dim=1))`` (line 67), no smoothing of the teacher's label; soft:
  ``F.kl_div(log_softmax(outputs_kd / T), log_softmax(teacher_outputs / T), reduction='sum',
  log_target=True) * (T * T) / outputs_kd.numel()`` (lines 54-62), i.e. the batch-mean KL
  divided by the number of classes :math:`K` (``kl_reduction="code"`` here); the teacher runs
  under ``torch.no_grad()`` (lines 46-48); distillation without a second output is refused
  (lines 42-45).
* ``main.py``: ``--distillation-type`` default ``'none'``, ``--distillation-alpha`` 0.5,
  ``--distillation-tau`` 1.0 (lines 145-147); ``--smoothing`` 0.1 (line 101) smooths the label
  term only (the base criterion, lines 357-365; with Mixup on, by default, through Mixup's
  label transform). ``README_deit.md`` (line 241) trains the distilled models with
  ``--distillation-type hard`` and those defaults.
* ``models.py``, ``DistilledVisionTransformer`` (lines 20-59): ``dist_token`` a separate
  ``nn.Parameter`` (line 23), position embeddings for ``num_patches + 2`` tokens (line 25),
  ``head_dist`` (line 26), both tokens initialised by a truncated normal of std 0.02 (lines
  28-29); in training ``forward`` returns both heads' logits, at inference their **mean of
  logits** ``(x + x_dist) / 2`` (lines 55-59).

The paper (section 4, "joint classifiers") instead *adds the softmax outputs* of the two heads.
Both are offered (``inference``): ``"both"``, the logit mean, is the default because it is
what produced the published numbers: ``README_deit.md`` (lines 166-174) evaluates
``deit_tiny_distilled_patch16_224`` with ``main.py --eval``, which calls the model's
``forward`` (the logit mean), and gets 74.476 %, the 74.5 of the paper's Table 3
"class+distillation" row. It is also what the student's own ``forward`` returns
(:meth:`kdtutor.models.vit.VisionTransformer.forward`), so a student saved after a run scores
the same without its distiller. ``"both_prob"`` is the paper's softmax sum (returned as the
log of the mean probability: same argmax), ``"cls"`` and ``"dist"`` one head each; after each
epoch all four are scored, from one forward of the student per test batch.

Where the paper and the code differ we follow the paper and name the code's form: the KL is
averaged over the batch (``kl_reduction="batchmean"``, as :func:`~kdtutor.losses.kd_loss`);
``"code"`` divides it by :math:`K` as well. The label smoothing is PyTorch's (and timm's
``LabelSmoothingCrossEntropy``, which the code uses): :math:`1 - \varepsilon + \varepsilon/K`
on the true class, :math:`\varepsilon/K` on the others; the paper's sentence shares
:math:`\varepsilon` among the *other* classes only (:math:`\varepsilon/(K-1)` each), a
difference of :math:`\varepsilon/K` on the true class that we do not offer.

The student: any model with ``forward_heads(x) -> (z_c, z_d)``, such as
``build_model("vit_tiny", distill_token=True)`` (:func:`deit_student`, patch 8 by default
here). DeiT trains with AdamW (the paper's Table 9); this module leaves the optimiser to the
training config.

References:
    Touvron, H., Cord, M., Douze, M., Massa, F., Sablayrolles, A., Jégou, H. (2021). Training
    data-efficient image transformers & distillation through attention. ICML.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError, non_negative
from ..errors import KDTutorError, ShapeMismatchError
from ..losses.schemes import ensemble_log_probs
from ..models.vit import VisionTransformer
from .base import Distiller, HParams
from .hparams import LossWeights
from .registry import register_method

__all__ = [
    "DEIT_DISTILLATIONS",
    "DEIT_INFERENCE",
    "DEIT_KL_REDUCTIONS",
    "DEIT_STUDENT",
    "DeiT",
    "DeiTHParams",
    "deit_hard_loss",
    "deit_losses",
    "deit_soft_loss",
    "deit_student",
]

DEIT_DISTILLATIONS: tuple[str, ...] = ("hard", "soft")
"""``"hard"``: cross entropy with the teacher's argmax; ``"soft"``: KL to its softened output."""

DEIT_KL_REDUCTIONS: tuple[str, ...] = ("batchmean", "code")
"""How the soft term's KL is reduced: ``"batchmean"`` (summed over classes, averaged over the
batch: the paper's KL) or ``"code"`` (the authors' ``losses.py``: also divided by the number of
classes)."""

DEIT_INFERENCE: tuple[str, ...] = ("both", "both_prob", "cls", "dist")
"""How the student predicts: ``"both"`` the mean of the two heads' logits (the code's, the
default), ``"both_prob"`` the mean of their softmaxes (the paper's), ``"cls"`` the class head,
``"dist"`` the distillation head."""

DEIT_STUDENT = "vit_tiny(distill_token=True,patch_size=8)"
"""The book's DeiT student as a model spec: ``vit_tiny`` (width 96, depth 6, 3 heads) with the
distillation token and 8x8 patches (16 patches of a 32x32 image; patch 4 costs about 4 times
as much per step)."""


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, what: str) -> None:
    if student_logits.ndim != 2 or teacher_logits.shape != student_logits.shape:
        raise ShapeMismatchError(
            f"{what} takes student and teacher logits of one shape (batch, classes), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}: the teacher and "
            "the student must predict the same classes for the same batch."
        )


def deit_hard_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    r"""DeiT's hard-label distillation term: the cross entropy with the teacher's decision.

    .. math::
        \mathcal{L} = \frac1B \sum_i -\log \psi(z_{s,i})_{y_{t,i}},
        \qquad y_{t,i} = \arg\max_k z_{t,i,k}

    (Touvron et al., 2021, eq. 3's teacher term; the code's ``losses.py``, line 67). The
    teacher's label is not smoothed, and ties go to the first largest logit. No gradient
    reaches the teacher's logits.

    Args:
        student_logits: ``(B, K)`` logits :math:`z_s` (the distillation head's, with the token).
        teacher_logits: ``(B, K)`` teacher logits :math:`z_t`.

    Returns:
        A scalar tensor (mean over the batch).
    """
    _check_logits(student_logits, teacher_logits, "deit_hard_loss")
    return F.cross_entropy(student_logits, teacher_logits.detach().argmax(dim=1))


def deit_soft_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    *,
    reduction: str = "batchmean",
) -> Tensor:
    r"""DeiT's soft distillation term: the KL divergence between softened outputs.

    .. math::
        \mathcal{L} = \tau^2\,\frac1B\sum_i \sum_k p_{t,ik}\,\big(\log p_{t,ik}
            - \log p_{s,ik}\big), \qquad p = \psi(z / \tau)

    with ``reduction="batchmean"`` (the paper's eq. 2, Hinton's KD term); ``"code"`` divides
    it by the number of classes :math:`K` as well (``losses.py``, lines 54-62: ``reduction=
    'sum'`` over :math:`B \cdot K` elements). No gradient reaches the teacher's logits.

    Args:
        student_logits: ``(B, K)`` logits :math:`z_s`.
        teacher_logits: ``(B, K)`` teacher logits :math:`z_t`.
        temperature: :math:`\tau > 0`.
        reduction: one of :data:`DEIT_KL_REDUCTIONS`.

    Returns:
        A scalar tensor.
    """
    _check_logits(student_logits, teacher_logits, "deit_soft_loss")
    if not temperature > 0:
        raise ConfigError(f"deit_soft_loss: the temperature must be > 0, got {temperature!r}.")
    if reduction not in DEIT_KL_REDUCTIONS:
        raise ConfigError(
            f"deit_soft_loss: reduction must be one of {', '.join(map(repr, DEIT_KL_REDUCTIONS))}"
            f", got {reduction!r}."
        )
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    total = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
    count = student_logits.numel() if reduction == "code" else student_logits.shape[0]
    return temperature**2 * total / count


def deit_losses(
    cls_logits: Tensor,
    dist_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    *,
    distillation: str = "hard",
    ce_weight: float = 0.5,
    kd_weight: float = 0.5,
    T: float = 1.0,
    label_smoothing: float = 0.1,
    kl_reduction: str = "batchmean",
) -> dict[str, Tensor]:
    r"""DeiT's weighted losses: the label term on the class head, the teacher term on the
    distillation head.

    .. math::
        \{\texttt{ce}: \lambda_{CE}\,\mathrm{CE}_\varepsilon(z_c, y),\;
          \texttt{dist}: \lambda_{KD}\,\mathcal{L}_{teacher}(z_d, z_t)\}

    with :math:`\mathcal{L}_{teacher}` :func:`deit_hard_loss` or :func:`deit_soft_loss` (at
    :math:`\tau` = ``T``) and :math:`\mathrm{CE}_\varepsilon` PyTorch's label-smoothed cross
    entropy (the code's). Pass the same logits as ``cls_logits`` and ``dist_logits`` for a
    student without the token (both terms on one head). ``dist`` is left out when
    ``kd_weight`` is 0 (then ``teacher_logits`` may be ``None``).

    Args:
        cls_logits: ``(B, K)`` class-head logits :math:`z_c`.
        dist_logits: ``(B, K)`` distillation-head logits :math:`z_d`.
        teacher_logits: ``(B, K)`` teacher logits :math:`z_t`.
        labels: ``(B,)`` class indices :math:`y`.
        distillation: one of :data:`DEIT_DISTILLATIONS`.
        ce_weight: :math:`\lambda_{CE}` (the code's ``1 - alpha``).
        kd_weight: :math:`\lambda_{KD}` (the code's ``alpha``).
        T: the soft term's temperature :math:`\tau` (unused by hard distillation).
        label_smoothing: :math:`\varepsilon` of the label term, in [0, 1).
        kl_reduction: one of :data:`DEIT_KL_REDUCTIONS` (soft distillation only).

    Returns:
        ``{"ce": ..., "dist": ...}``, already weighted.

    Example:
        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> losses = deit_losses(z, z, z, torch.tensor([0, 1]), label_smoothing=0.0)
        >>> sorted(losses), bool(torch.isclose(losses["ce"], losses["dist"]))
        (['ce', 'dist'], True)
    """
    if distillation not in DEIT_DISTILLATIONS:
        raise ConfigError(
            f"deit: distillation must be one of {', '.join(map(repr, DEIT_DISTILLATIONS))}, "
            f"got {distillation!r}."
        )
    if not 0 <= label_smoothing < 1:
        raise ConfigError(f"deit: label_smoothing must be in [0, 1), got {label_smoothing!r}.")
    if cls_logits.ndim != 2 or dist_logits.shape != cls_logits.shape:
        raise ShapeMismatchError(
            f"deit: the two heads' logits must be (batch, classes) of one shape, got "
            f"{tuple(cls_logits.shape)} and {tuple(dist_logits.shape)}."
        )
    if labels.shape != cls_logits.shape[:1]:
        raise ShapeMismatchError(
            f"deit: labels must be ({cls_logits.shape[0]},) class indices for logits "
            f"{tuple(cls_logits.shape)}, got shape {tuple(labels.shape)}."
        )
    losses = {
        "ce": ce_weight * F.cross_entropy(cls_logits, labels, label_smoothing=label_smoothing)
    }
    if kd_weight > 0:
        if teacher_logits is None:
            raise KDTutorError("deit: kd_weight > 0 needs the teacher's logits.")
        if distillation == "hard":
            term = deit_hard_loss(dist_logits, teacher_logits)
        else:
            term = deit_soft_loss(dist_logits, teacher_logits, T, reduction=kl_reduction)
        losses["dist"] = kd_weight * term
    return losses


def deit_student(
    num_classes: int = 10, *, patch_size: int = 8, in_channels: int = 3, **kwargs: Any
) -> VisionTransformer:
    """The book's DeiT student: ``vit_tiny`` with the distillation token (:data:`DEIT_STUDENT`).

    The same model as ``build_model("vit_tiny", distill_token=True, patch_size=8)``: the token
    and ``head_dist`` are :class:`~kdtutor.models.vit.VisionTransformer`'s own
    (``distill_token=True``), so nothing here changes the model code.

    Args:
        num_classes: Number of classes.
        patch_size: Patch size (8: 16 patches of a 32x32 image; ``vit_tiny``'s default is 4).
        in_channels: Channels of the input images.
        **kwargs: Other options of ``vit_tiny`` (``dim``, ``depth``, ``heads``, ...).

    Returns:
        A :class:`~kdtutor.models.vit.VisionTransformer` with ``dist_token`` and ``head_dist``.

    Example:
        >>> model = deit_student()
        >>> model.distill_token, model.patch_size, model.pos_embed.shape[1]
        (True, 8, 18)
    """
    from ..models import build_model

    if "distill_token" in kwargs:
        raise KDTutorError(
            "deit_student always has the distillation token; for a ViT without it use "
            "build_model('vit_tiny', patch_size=8)."
        )
    model = build_model(
        "vit_tiny",
        num_classes=num_classes,
        in_channels=in_channels,
        patch_size=patch_size,
        distill_token=True,
        **kwargs,
    )
    assert isinstance(model, VisionTransformer)
    return model


@dataclass(frozen=True)
class DeiTHParams(LossWeights):
    r"""Defaults: hard distillation with the token, the paper's headline setting (its eq. 3:
    :math:`\frac12` / :math:`\frac12`; the code's ``--distillation-alpha 0.5``).

    For the paper's soft distillation set ``distillation="soft", ce_weight=0.9, kd_weight=0.1,
    T=3`` (section 6: "τ = 3.0 and λ = 0.1 for the usual (soft) distillation"); with only
    ``distillation="soft"`` the weights are the code's defaults (alpha 0.5, tau 1.0). The code's
    names ``alpha`` and ``tau`` are refused with the names to use (``kd_weight``, ``T``).

    Attributes:
        ce_weight: :math:`\lambda_{CE}` of the (smoothed) label term on the class head.
        kd_weight: :math:`\lambda_{KD}` of the teacher term on the distillation head.
        T: :math:`\tau` of the soft term (code default 1.0; unused by hard distillation).
        distillation: ``"hard"`` or ``"soft"`` (:data:`DEIT_DISTILLATIONS`).
        token: ``True``: the teacher term trains the distillation head (the student needs
            ``forward_heads`` and a distillation token); ``False``: it trains the class head,
            as Table 3's rows without the token (any classifier without the token).
        label_smoothing: :math:`\varepsilon` = 0.1 on the label term only (paper: "in all our
            experiments that use true labels"; code: ``--smoothing 0.1``).
        kl_reduction: ``"batchmean"`` (the paper's KL) or ``"code"`` (divided by the number
            of classes too, :data:`DEIT_KL_REDUCTIONS`).
        inference: how the student predicts and is scored first (:data:`DEIT_INFERENCE`):
            ``"both"`` (the code's logit mean, default), ``"both_prob"`` (the paper's softmax
            sum), ``"cls"``, ``"dist"``. Without the token the one head predicts.
    """

    renamed: ClassVar[Mapping[str, str]] = {
        "alpha": "kd_weight",
        "tau": "T",
        "distillation_type": "distillation",
    }

    ce_weight: float = 0.5
    kd_weight: float = 0.5
    T: float = 1.0
    distillation: Literal["hard", "soft"] = "hard"
    token: bool = True
    label_smoothing: float = 0.1
    kl_reduction: Literal["batchmean", "code"] = "batchmean"
    inference: Literal["both", "both_prob", "cls", "dist"] = "both"

    def validate(self) -> None:
        super().validate()
        for name, value, choices in (
            ("distillation", self.distillation, DEIT_DISTILLATIONS),
            ("kl_reduction", self.kl_reduction, DEIT_KL_REDUCTIONS),
            ("inference", self.inference, DEIT_INFERENCE),
        ):
            if value not in choices:
                raise ConfigError(
                    f"deit.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}."
                )
        if not isinstance(self.token, bool):
            raise ConfigError(f"deit.token must be True or False, got {self.token!r}.")
        non_negative("label_smoothing", self.label_smoothing, "deit")
        if not self.label_smoothing < 1:
            raise ConfigError(
                f"deit.label_smoothing must be in [0, 1), got {self.label_smoothing!r}."
            )


_NEEDS_TOKEN = (
    "build the student with the token, e.g. kdtutor.models.build_model('vit_tiny', "
    "distill_token=True, patch_size=8) (kdtutor.methods.deit.deit_student()), or set "
    "token=False to put the teacher term on the class head"
)


@register_method
class DeiT(Distiller):
    r"""DeiT: a transformer student whose distillation token learns from the teacher.

    Minimises :func:`deit_losses` (``ce``: the smoothed labels on the class head, ``dist``:
    the teacher's argmax, or its softened output, on the distillation head); see the module
    docstring for the formulas and where the code differs. The teacher's logits come through
    :meth:`~kdtutor.methods.Distiller.teacher_outputs`, so a run without augmentation caches
    them (the teacher's hard label is then fixed per image).

    Scored after each epoch: ``student`` (the ``inference`` mode, by default the two heads'
    logit mean, which equals ``student(x)``), then each other mode of :data:`DEIT_INFERENCE`
    by name (by default ``both_prob``, ``cls``, ``dist``); one forward of the student per test
    batch serves them all (:meth:`heads` keeps the last batch's two heads while the distiller
    is in eval mode without gradients and no parameter has changed). Without the token only
    ``student`` is scored.

    Args:
        student: with ``token=True``, a model with ``forward_heads(x) -> (z_c, z_d)`` and a
            distillation token (``build_model("vit_tiny", distill_token=True)``); with
            ``token=False``, any classifier without a distillation token.
        teacher: a trained classifier of the same classes (a CNN in the paper and the book).
        hparams: :class:`DeiTHParams`.

    Example:
        >>> from kdtutor.methods import build_distiller
        >>> from kdtutor.models import build_model
        >>> deit = build_distiller("deit", deit_student(), build_model("cnn_small"))
        >>> list(deit.eval_networks())
        ['student', 'both_prob', 'cls', 'dist']
    """

    name = "deit"
    family = "architecture"
    paper = (
        "Touvron, Cord, Douze, Massa, Sablayrolles, Jégou (2021). Training data-efficient "
        "image transformers & distillation through attention"
    )
    hparams_cls = DeiTHParams
    loss_weights = ("kd_weight",)
    protocol_epochs = 300

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        super().__init__(student, teacher, hparams)
        hp: DeiTHParams = self.hparams  # type: ignore[assignment]
        has_token = getattr(student, "distill_token", None)
        if hp.token:
            if not callable(getattr(student, "forward_heads", None)):
                raise KDTutorError(
                    f"deit with token=True reads the class and distillation heads through "
                    f"student.forward_heads(x), and {type(student).__name__} has none: "
                    f"{_NEEDS_TOKEN}."
                )
            if has_token is False:
                raise KDTutorError(
                    f"deit with token=True needs a distillation token, and this "
                    f"{type(student).__name__} was built without one: {_NEEDS_TOKEN}."
                )
        elif has_token is True:
            raise KDTutorError(
                "deit with token=False trains one head, but this student has a distillation "
                "token whose head would never learn (and whose logits its forward averages "
                "in): build it without the token (build_model('vit_tiny', patch_size=8)) or "
                "set token=True."
            )
        self._memo: tuple[Tensor, tuple[int, ...], tuple[Tensor, Tensor]] | None = None

    # -- the two heads -----------------------------------------------------------------------
    def _forward_heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.hparams.token:  # type: ignore[attr-defined]
            logits = self.student(x)
            return logits, logits
        z_cls, z_dist = self.student.forward_heads(x)
        if z_dist is None:
            raise KDTutorError(
                f"the student's forward_heads returned no distillation-head logits: {_NEEDS_TOKEN}."
            )
        return z_cls, z_dist

    def _versions(self, x: Tensor) -> tuple[int, ...] | None:
        """The version counters of ``x`` and of the student's parameters (they change with
        every in-place update: an optimizer step, ``load_state_dict``), or ``None``."""
        try:
            return (x._version, *(p._version for p in self.student.parameters()))
        except RuntimeError:  # inference-mode tensors have no version counter
            return None

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""The class and distillation heads' logits :math:`(z_c, z_d)` on ``x`` (without the
        token, the one head's logits twice).

        In eval mode without gradients the last call's result is kept and returned again
        for the same tensor ``x`` while neither ``x`` nor any student parameter has been
        modified, so scoring four inference modes costs one forward.
        """
        if self.training or torch.is_grad_enabled():
            return self._forward_heads(x)
        versions = self._versions(x)
        memo = self._memo
        if versions is not None and memo is not None and memo[0] is x and memo[1] == versions:
            return memo[2]
        out = self._forward_heads(x)
        self._memo = (x, versions, out) if versions is not None else None
        return out

    def infer(self, x: Tensor, mode: str) -> Tensor:
        """The student's prediction on ``x`` in ``mode`` (:data:`DEIT_INFERENCE`): logits, or
        for ``"both_prob"`` the log of the heads' mean probability."""
        z_cls, z_dist = self.heads(x)
        if not self.hparams.token:  # type: ignore[attr-defined]
            return z_cls
        return _combine(z_cls, z_dist, mode)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The student's prediction in the ``inference`` mode (the run's score)."""
        return self.infer(x, self.hparams.inference)  # type: ignore[attr-defined]

    @torch.no_grad()
    def predict_both(self, x: Tensor) -> Tensor:
        """The mean of the two heads' logits (the code's inference; ``student(x)``)."""
        return self.infer(x, "both")

    @torch.no_grad()
    def predict_both_prob(self, x: Tensor) -> Tensor:
        """The log of the two heads' mean softmax (the paper's "add the softmax outputs")."""
        return self.infer(x, "both_prob")

    @torch.no_grad()
    def predict_cls(self, x: Tensor) -> Tensor:
        """The class head's logits."""
        return self.infer(x, "cls")

    @torch.no_grad()
    def predict_dist(self, x: Tensor) -> Tensor:
        """The distillation head's logits."""
        return self.infer(x, "dist")

    # -- the contract ------------------------------------------------------------------------
    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp: DeiTHParams = self.hparams  # type: ignore[assignment]
        z_cls, z_dist = self.heads(x)
        teacher = self.teacher_outputs(x, index).logits if hp.kd_weight > 0 else None
        losses = deit_losses(
            z_cls,
            z_dist,
            teacher,
            y,
            distillation=hp.distillation,
            ce_weight=hp.ce_weight,
            kd_weight=hp.kd_weight,
            T=hp.T,
            label_smoothing=hp.label_smoothing,
            kl_reduction=hp.kl_reduction,
        )
        outputs = _combine(z_cls, z_dist, hp.inference) if hp.token else z_cls
        return outputs, losses

    def eval_networks(self) -> dict[str, Callable[[Any], Any]]:
        """``student`` (the ``inference`` mode), then the other modes by name; only
        ``student`` without the token."""
        hp: DeiTHParams = self.hparams  # type: ignore[assignment]
        networks: dict[str, Callable[[Any], Any]] = {"student": self.predict}
        if hp.token:
            for mode in DEIT_INFERENCE:
                if mode != hp.inference:
                    networks[mode] = getattr(self, f"predict_{mode}")
        return networks

    def has_unused_parameters(self) -> bool:
        """With the token and ``kd_weight`` 0 the distillation head gets no gradient."""
        hp: DeiTHParams = self.hparams  # type: ignore[assignment]
        return hp.token and hp.kd_weight == 0

    def train(self, mode: bool = True) -> DeiT:
        self._memo = None
        super().train(mode)
        return self


def _combine(z_cls: Tensor, z_dist: Tensor, mode: str) -> Tensor:
    if mode == "both":
        return (z_cls + z_dist) / 2
    if mode == "both_prob":
        return ensemble_log_probs([z_cls, z_dist])
    if mode == "cls":
        return z_cls
    if mode == "dist":
        return z_dist
    raise ConfigError(
        f"deit: inference must be one of {', '.join(map(repr, DEIT_INFERENCE))}, got {mode!r}."
    )

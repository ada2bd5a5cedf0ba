r"""Learning without Forgetting, LwF (Li & Hoiem, ECCV 2016; TPAMI 2017).

A model is trained on a sequence of tasks without the old tasks' data. Before task :math:`t`
starts, the model of task :math:`t-1` is frozen; while task :math:`t` trains, its outputs
for the *old* classes on the new images are the soft targets of a distillation term, next to
the cross entropy on the new task:

.. math::
    \mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_{\mathcal{S}}, y)
        - \lambda \frac1B \sum_i \sum_{c \in \mathcal{O}}
        \mathrm{softmax}(z^{o}_{i,\mathcal{O}}/T)_c \log \mathrm{softmax}(z_{i,\mathcal{O}}/T)_c.

In kdtutor the frozen previous model is the distiller's *teacher*, so its outputs are
recorded once per task by the teacher cache (keyed by its weights, as BAN's), and the loop
over tasks is :func:`~kdtutor.train.fit_sequence`, whose ``make(i, previous)`` builds::

    build_distiller("lwf", copy.deepcopy(previous), previous,
                    old_classes=seen_before_i, new_classes=classes_of_i)

Fine-tuning is the same with ``lamb=0`` (identical cross entropy). Defaults (verified in
FACIL's ``src/approach/lwf.py``, which quotes the paper): ``lamb=1`` (p. 5), ``T=2`` (a grid
search, p. 5); the distillation term has no :math:`T^2`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..config import ConfigError, non_negative
from ..errors import KDTutorError
from ..losses.lifelong import CE_SCOPES, lwf_distillation, lwf_loss
from ..losses.response import kd_loss
from .base import Distiller, HParams
from .hparams import LossWeights
from .registry import register_method

__all__ = ["LwF", "LwFHParams", "check_class_sets", "check_classes_fit"]


def check_class_sets(owner: str, old: tuple[int, ...], new: tuple[int, ...]) -> None:
    """Refuse negative, repeated or shared classes in ``old_classes``/``new_classes``."""
    for what, classes in (("old_classes", old), ("new_classes", new)):
        if any(int(c) < 0 for c in classes) or len(set(classes)) != len(classes):
            raise ConfigError(
                f"{owner}.{what} must list distinct class indices >= 0, got {classes!r}."
            )
    shared = sorted(set(old) & set(new))
    if shared:
        raise ConfigError(
            f"{owner}: classes {shared} are in both old_classes and new_classes: a class "
            "belongs to the task that introduced it."
        )


@dataclass(frozen=True)
class LwFHParams(LossWeights):
    """LwF's hyperparameters.

    Attributes:
        ce_weight: weight of the new task's cross entropy (the paper has none: 1).
        kd_weight: Hinton's KD over *all* outputs on top (0: off, as in the paper).
        T: the distillation temperature (the paper's 2).
        lamb: :math:`\\lambda`, the distillation weight (the paper's 1; 0 is fine-tuning).
        ce_scope: ``"task"``: cross entropy over the new task's outputs (the paper's new
            head; FACIL without exemplars); ``"all"``: over every output (FACIL with
            exemplars, the engine's demo).
        old_classes: the classes of the earlier tasks (distilled).
        new_classes: this task's classes.
    """

    ce_weight: float = 1.0
    kd_weight: float = 0.0
    T: float = 2.0
    lamb: float = 1.0
    ce_scope: str = "task"
    old_classes: tuple[int, ...] = ()
    new_classes: tuple[int, ...] = ()

    def validate(self) -> None:
        super().validate()
        non_negative("lamb", self.lamb, "lwf")
        if self.ce_scope not in CE_SCOPES:
            raise ConfigError(
                f"lwf.ce_scope must be one of {', '.join(map(repr, CE_SCOPES))}, got "
                f"{self.ce_scope!r}."
            )
        check_class_sets("lwf", self.old_classes, self.new_classes)
        if self.ce_scope == "task" and not self.new_classes:
            raise ConfigError(
                "lwf.new_classes is empty but ce_scope='task' needs this task's classes: pass "
                "new_classes=(...) (or ce_scope='all')."
            )


def check_classes_fit(owner: str, student: nn.Module, classes: tuple[int, ...]) -> None:
    """Refuse classes beyond the student's ``num_classes`` outputs."""
    k = getattr(student, "num_classes", None)
    if isinstance(k, int) and any(c >= k for c in classes):
        raise ConfigError(
            f"{owner}: classes {sorted(c for c in classes if c >= k)} are beyond the student's "
            f"{k} outputs: build the student with num_classes covering every task (a single "
            "head for the whole sequence)."
        )


@register_method
class LwF(Distiller):
    r"""Learning without Forgetting: the cross entropy on the new task plus the temperature-
    softened cross entropy towards the previous model's outputs for the old classes
    (:func:`~kdtutor.losses.lifelong.lwf_loss`; no :math:`T^2`). The teacher is the frozen
    model of the previous task (needed only when ``old_classes`` is not empty); the student
    usually starts as its copy. Logged terms: ``ce`` and ``lwf`` (and ``kd`` when
    ``kd_weight`` > 0).

    Paper: Li & Hoiem (2017), *Learning without Forgetting*, TPAMI (ECCV 2016).
    """

    name = "lwf"
    family = "lifelong"
    paper = "Li, Hoiem (2017). Learning without Forgetting"
    hparams_cls = LwFHParams
    requires_teacher = False
    loss_weights = ("lamb",)

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        super().__init__(student, teacher, hparams)
        hp = self.hparams
        if (hp.old_classes or hp.kd_weight > 0) and teacher is None:
            raise KDTutorError(
                "lwf with old_classes (or kd_weight > 0) needs the previous task's model as the teacher: pass "
                "teacher=previous (fit_sequence's make(i, previous) receives it)."
            )
        check_classes_fit("lwf", student, (*hp.old_classes, *hp.new_classes))

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = self.student(x)
        ce = lwf_loss(logits, None, y, (), hp.new_classes, ce_scope=hp.ce_scope)
        losses = {"ce": hp.ce_weight * ce}
        if hp.old_classes or hp.kd_weight > 0:
            old_logits = self.teacher_outputs(x, index).logits
            if hp.old_classes:
                distill = lwf_distillation(logits, old_logits, hp.old_classes, hp.T)
                losses["lwf"] = hp.lamb * distill
            if hp.kd_weight > 0:
                losses["kd"] = hp.kd_weight * kd_loss(logits, old_logits, hp.T)
        return logits, losses

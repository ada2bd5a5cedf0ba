r"""iCaRL: incremental classifier and representation learning (Rebuffi, Kolesnikov, Sperl,
Lampert, CVPR 2017).

Class-incremental learning with a small memory of exemplars: each task trains on its new
images plus the exemplars of the old classes (:func:`~kdtutor.methods._memory.with_memory`),
with one binary cross entropy whose targets are the labels for the new classes and the
previous model's sigmoid outputs for the old ones (:func:`~kdtutor.losses.lifelong.icarl_loss`,
as the official code computes it); after each task the memory is rebuilt by herding
(:class:`~kdtutor.methods._memory.ExemplarMemory`), and images are classified by the nearest
mean of exemplars (:func:`~kdtutor.losses.lifelong.nme_scores`).

With :func:`~kdtutor.train.fit_sequence` (the memory is updated in ``make``, before task ``i``
is read)::

    memory = ExemplarMemory(total=200)
    tasks = [(with_memory(tr, memory), te) for tr, te in splits]

    def make(i, previous):
        if previous is not None:
            memory.update(previous, splits[i - 1][0])
        student = copy.deepcopy(previous) if previous is not None else build_model(...)
        hp = ICaRLHParams(old_classes=tuple(memory.classes))
        return ICaRL(student, previous, hp, memory=memory)

Defaults verified in the official code (srebuffi/iCaRL,
``iCaRL-TheanoLasagne/main_cifar_100_theano.py``): sigmoid outputs and one BCE, ``nb_protos =
20`` exemplars per class at the end (memory 2,000 for 100 classes), herding on L2-normalised
features, class means of normalised features normalised again (averaged with the flipped
image's: ``ExemplarMemory(flip_means=True)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import KDTutorError
from ..losses.lifelong import icarl_loss, nme_scores
from ..losses.response import kd_loss
from ._memory import ExemplarMemory, MemoryDataset, _labels, _rows, embed
from .base import Distiller, HParams
from .hparams import LossWeights
from .lwf import check_class_sets, check_classes_fit
from .registry import register_method

__all__ = ["ICaRL", "ICaRLHParams"]


@dataclass(frozen=True)
class ICaRLHParams(LossWeights):
    """iCaRL's hyperparameters (the memory's size is the :class:`ExemplarMemory`'s ``total``).

    Attributes:
        ce_weight: weight of iCaRL's single BCE (classification and distillation at once;
            the paper has no weight: 1).
        kd_weight: Hinton's KD from the previous model over all outputs on top (0: off, as
            in the paper).
        T: the temperature of that optional KD term.
        old_classes: the classes of earlier tasks, whose outputs are distilled.
    """

    ce_weight: float = 1.0
    kd_weight: float = 0.0
    T: float = 2.0
    old_classes: tuple[int, ...] = ()

    def validate(self) -> None:
        super().validate()
        check_class_sets("icarl", self.old_classes, ())


@register_method
class ICaRL(Distiller):
    r"""iCaRL's training step and nearest-mean-of-exemplars classifier.

    .. math::
        \mathcal{L} = \frac{1}{BK}\sum_{i,c} \mathrm{BCE}\big(\sigma(z_{ic}), t_{ic}\big),
        \quad t_{ic} = \sigma(z^{o}_{ic}) \text{ for old } c, \text{ else } [y_i = c]

    (:func:`~kdtutor.losses.lifelong.icarl_loss`; logged as ``icarl``). The teacher is the
    frozen model of the previous task (needed when ``old_classes`` is not empty).

    With ``memory=`` (an :class:`ExemplarMemory`), :meth:`eval_networks` also scores ``nme``:
    the nearest class mean, with the means of the memory's classes from their exemplars and,
    for classes of the current training split that have no exemplars yet (the paper computes
    them after the memory update that follows training), from all their training images
    (the official code's "theoretical" NCM mean). The means are recomputed whenever the
    student has trained since they were last computed.

    Paper: Rebuffi, Kolesnikov, Sperl, Lampert (2017), *iCaRL: Incremental Classifier and
    Representation Learning*, CVPR.
    """

    name = "icarl"
    family = "lifelong"
    paper = (
        "Rebuffi, Kolesnikov, Sperl, Lampert (2017). iCaRL: Incremental Classifier and "
        "Representation Learning"
    )
    hparams_cls = ICaRLHParams
    requires_teacher = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        hparams: HParams | None = None,
        *,
        memory: ExemplarMemory | None = None,
    ) -> None:
        super().__init__(student, teacher, hparams)
        hp = self.hparams
        if (hp.old_classes or hp.kd_weight > 0) and teacher is None:
            raise KDTutorError(
                "icarl with old_classes (or kd_weight > 0) needs the previous task's model as the teacher: pass "
                "teacher=previous (fit_sequence's make(i, previous) receives it)."
            )
        if memory is not None and not isinstance(memory, ExemplarMemory):
            raise KDTutorError(
                f"icarl's memory must be an ExemplarMemory, got {type(memory).__name__}."
            )
        check_classes_fit("icarl", student, hp.old_classes)
        self.memory = memory
        self._train_data: Any = None
        self._trained_steps = 0
        self._means: Tensor | None = None
        self._means_at = -1

    def bind_data(self, train_data: Any) -> None:
        self._train_data = train_data

    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        hp = self.hparams
        logits = self.student(x)
        need_teacher = bool(hp.old_classes) or hp.kd_weight > 0
        old_logits = self.teacher_outputs(x, index).logits if need_teacher else None
        if self.training:
            self._trained_steps += 1
        losses = {"icarl": hp.ce_weight * icarl_loss(logits, old_logits, y, hp.old_classes)}
        if hp.kd_weight > 0:
            losses["kd"] = hp.kd_weight * kd_loss(logits, old_logits, hp.T)
        return logits, losses

    def eval_networks(self) -> dict[str, Callable[[Any], Any]]:
        nets: dict[str, Callable[[Any], Any]] = {"student": self.predict}
        if self.memory is not None:
            nets["nme"] = self.nme
        return nets

    def class_means(self) -> Tensor:
        """The NME classifier's class means ``(K, D)`` (see the class docstring); rows of
        classes with neither exemplars nor training images are NaN."""
        if self._means is not None and self._means_at == self._trained_steps:
            return self._means
        assert self.memory is not None
        k = int(getattr(self.student, "num_classes", 0))
        means = self.memory.class_means(self.student, k) if len(self.memory) else None
        train = self._train_data
        if isinstance(train, MemoryDataset):
            train = train.train
        if train is not None:
            labels = _labels(train)
            for c in sorted(set(labels.tolist()) - set(self.memory.classes)):
                x, _ = _rows(train, torch.nonzero(labels == c).flatten())
                mu = F.normalize(F.normalize(embed(self.student, x), dim=1).mean(0), dim=0)
                if means is None:
                    means = torch.full((max(k, c + 1), mu.numel()), float("nan"))
                means[c] = mu
        if means is None:
            raise KDTutorError(
                "icarl's nme classifier has no class means: the memory is empty and no "
                "training split was bound (train with fit first, or update the memory)."
            )
        self._means, self._means_at = means, self._trained_steps
        return means

    @torch.no_grad()
    def nme(self, x: Tensor) -> Tensor:
        """Nearest-mean-of-exemplars scores ``(B, K)`` (argmax = the predicted class)."""
        means = self.class_means()
        return nme_scores(embed(self.student, x), means).to(x.device)

r"""Several frozen teachers run as one: the teacher of multi-teacher distillation.

:class:`TeacherEnsemble` is an ordinary ``nn.Module``, so the trainer's teacher-output cache
(:mod:`kdtutor.cache`) keys and stores it like any teacher: its weights digest covers every
member, and reading the feature at :data:`STACK_PATH` stores every member's logits in one
cache row. A method that needs the members' logits declares ``teacher_feature_paths() =
(STACK_PATH,)``; its ``teacher_outputs(x, rows).features[STACK_PATH]`` is then ``(B, M, K)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import KDTutorError, NotAModelError, ShapeMismatchError
from ..losses.schemes import ensemble_log_probs
from ..models.summary import first_in_channels

__all__ = ["STACK_PATH", "TeacherEnsemble"]

STACK_PATH = "stack"
"""The module path whose output is the members' stacked logits, ``(B, M, K)``."""


class TeacherEnsemble(nn.Module):
    r"""Frozen teachers whose ``forward`` is their ensemble, with every member's logits exposed.

    .. math::
        \log \bar p(x) = \log \frac1M \sum_{k=1}^M \mathrm{softmax}(z_k(x))

    (:func:`~kdtutor.losses.schemes.ensemble_log_probs`): scored as a classifier, it is the
    teachers' ensemble itself. On the way, the stacked member logits ``(B, M, K)`` pass
    through ``self.stack`` (an ``nn.Identity``), so a feature hook at :data:`STACK_PATH`
    reads (and the teacher cache stores) them in one row.

    Sets ``num_classes``, and ``trained_on`` when every member records the same one (so
    ``fit`` still refuses the ensemble on other data).

    Args:
        members: the teachers (at least one), predicting the same classes from images with
            the same channels. They are frozen and put in eval mode.

    Raises:
        NotAModelError: a member is not an ``nn.Module``.
        ShapeMismatchError: members with different class counts or input channels.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members) if not isinstance(members, nn.Module) else [members]
        if not members:
            raise KDTutorError(
                "TeacherEnsemble needs at least one teacher: pass a list of models, e.g. "
                "[load_teacher('shapes_cnn_large'), load_teacher('shapes_resnet14')]."
            )
        for k, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise NotAModelError(
                    f"TeacherEnsemble member {k} is a {type(m).__name__}, not an nn.Module: "
                    "build or load each teacher first (kdtutor.zoo.load_teacher(name))."
                )
        classes = [getattr(m, "num_classes", None) for m in members]
        known = {c for c in classes if c is not None}
        if len(known) > 1:
            raise ShapeMismatchError(
                f"TeacherEnsemble members predict different class counts {classes}: every "
                "teacher must share one label space."
            )
        channels = [first_in_channels(m) for m in members]
        if len({c for c in channels if c is not None}) > 1:
            raise ShapeMismatchError(
                f"TeacherEnsemble members take images with different channel counts {channels}: "
                "every teacher must read the same images."
            )
        self.members = nn.ModuleList(members)
        self.stack = nn.Identity()
        if known:
            self.num_classes = known.pop()
        trained = [getattr(m, "trained_on", None) for m in members]
        if trained[0] is not None and all(t == trained[0] for t in trained):
            self.trained_on = trained[0]
        self.requires_grad_(False)
        self.eval()

    def __len__(self) -> int:
        return len(self.members)

    def member_logits(self, x: Tensor) -> Tensor:
        """Every member's logits on ``x``, stacked ``(B, M, K)`` (through ``self.stack``)."""
        logits = [m(x) for m in self.members]
        shapes = {tuple(z.shape) for z in logits}
        if len(shapes) != 1:
            raise ShapeMismatchError(
                f"TeacherEnsemble members gave logits of shapes {sorted(shapes)} on one batch: "
                "each must return (B, K) logits over the same classes."
            )
        return self.stack(torch.stack(logits, dim=1))

    def forward(self, x: Tensor) -> Tensor:
        """The ensemble's log-probabilities ``(B, K)`` (valid logits: their softmax is the
        mean of the members' softmaxes)."""
        return ensemble_log_probs(list(self.member_logits(x).unbind(1)))

    def train(self, mode: bool = True) -> TeacherEnsemble:
        """Stay in eval mode: the members are frozen teachers."""
        return super().train(False)

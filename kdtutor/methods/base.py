"""The distillation contract every method follows.

A :class:`Distiller` wraps a student (and usually a frozen teacher). During training,
``forward(x, y)`` returns the student's logits and a dict of named, already-weighted losses;
the trainer sums them, logs each one and knows nothing else about the method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import KDTutorError, ShapeMismatchError
from ..features import FeatureExtractor

if TYPE_CHECKING:
    from ..cache import TeacherCache


@dataclass(frozen=True)
class HParams:
    """Base class of the per-method hyperparameter dataclasses."""

    def validate(self) -> None:
        """Check value ranges; subclasses extend it."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TeacherOutputs:
    """What a method may read from its teacher: logits and named intermediate features."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


class Distiller(nn.Module):
    """Base class for every distillation method.

    Subclasses set ``name``, ``paper``, ``hparams_cls`` and implement :meth:`forward`.
    The teacher is frozen (``requires_grad=False``) and stays in ``eval()`` mode whatever
    ``train()`` is called on the distiller; :meth:`trainable_parameters` never yields it.

    Args:
        student: the network being trained.
        teacher: a trained network, or ``None`` for methods that need none.
        hparams: the method's hyperparameters (defaults: the paper's).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    hparams_cls: ClassVar[type[HParams]] = HParams
    requires_teacher: ClassVar[bool] = True
    supports_ddp: ClassVar[bool] = True
    """False for methods with per-sample state that DDP would not synchronise (CRD's banks)."""

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ):
        super().__init__()
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}.")
        if self.requires_teacher and teacher is None:
            raise KDTutorError(
                f"method {self.name!r} needs a teacher: pass teacher=... (e.g. "
                "kdtutor.zoo.load_teacher('shapes_cnn_large')), or use method 'scratch' to train "
                "the student alone."
            )
        hparams = hparams if hparams is not None else self.hparams_cls()
        if not isinstance(hparams, self.hparams_cls):
            raise TypeError(
                f"{self.name} expects {self.hparams_cls.__name__}, got {type(hparams).__name__}."
            )
        hparams.validate()
        self.hparams = hparams
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            _check_same_classes(student, teacher)
            teacher.requires_grad_(False)
            teacher.eval()
        self._cache: TeacherCache | None = None
        self.teacher_forward_calls = 0

    # -- what methods use -------------------------------------------------------------------
    def teacher_feature_paths(self) -> Sequence[str]:
        """Module paths of the teacher features this method reads (cached with the logits)."""
        return ()

    def teacher_outputs(self, x: Tensor, index: Tensor | None = None) -> TeacherOutputs:
        """The teacher's logits (and requested features) for batch ``x``.

        With a teacher-output cache attached (see :mod:`kdtutor.cache`) and the batch's dataset
        ``index`` given, they are looked up instead of computed.
        """
        if self.teacher is None:
            raise KDTutorError(f"method {self.name!r} has no teacher.")
        if self._cache is not None and index is not None:
            return self._cache.lookup(index, device=x.device)
        return self.compute_teacher_outputs(x)

    @torch.no_grad()
    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        """Run the frozen teacher on ``x`` (never cached)."""
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        paths = list(self.teacher_feature_paths())
        if not paths:
            return TeacherOutputs(self.teacher(x))
        with FeatureExtractor(self.teacher, paths, detach=True) as fx:
            logits = self.teacher(x)
            return TeacherOutputs(logits, dict(fx.features))

    # -- the contract -------------------------------------------------------------------------
    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Training step: the student's logits and a dict of named, weighted losses."""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Student parameters and those of any connectors, never the teacher's."""
        for name, param in self.named_parameters():
            if not name.startswith("teacher.") and param.requires_grad:
                yield param

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Student logits for evaluation."""
        return self.student(x)

    def has_unused_parameters(self) -> bool:
        """True when some trainable parameters get no gradient in some steps (staged
        methods); DistributedDataParallel then looks for them after each backward."""
        return bool(getattr(self.hparams, "init_epochs", 0))

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Hook called by the trainer before each epoch (e.g. for loss warm-up)."""

    def bind_data(self, train_data: Any) -> None:
        """Hook called by the trainer with the training split, before the optimizer is built.

        Methods that size state by the dataset (CRD's memory bank) or check the input shape
        (feature methods) override it.
        """

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # -- checkpoints --------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The state to checkpoint: everything but the (frozen, separately stored) teacher."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher.")]
        if missing or unexpected:
            raise KDTutorError(
                f"checkpoint does not fit this {self.name!r} distiller: missing {missing[:5]}, "
                f"unexpected {list(unexpected)[:5]}. It was probably saved for another model or method."
            )

    def extra_repr(self) -> str:
        return f"method={self.name!r}, hparams={self.hparams}"


def _check_same_classes(student: nn.Module, teacher: nn.Module) -> None:
    s, t = getattr(student, "num_classes", None), getattr(teacher, "num_classes", None)
    if s is not None and t is not None and s != t:
        raise ShapeMismatchError(
            f"the student predicts {s} classes but the teacher predicts {t}. Build the student "
            f"with num_classes={t} (they must share one label space)."
        )

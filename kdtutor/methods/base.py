"""The distillation contract every method follows.

A :class:`Distiller` wraps a student (and usually a frozen teacher). In the simple case a
method writes one thing, ``forward(x, y, index)``, which returns the student's outputs and
a dict of named, already-weighted losses; the trainer sums them, steps one optimizer, logs
each loss and knows nothing else about the method.

Methods that need more override one of a handful of named places, never the trainer:

* ``optimizer_groups()``: several trainable parts with their own optimizers (a
  discriminator, a generator, peers with their own learning rates);
* ``train_step(batch, steps)``: what one training step does (alternating updates: step the
  discriminator, then the student; generator steps, then student steps);
* ``synthesize_batch(batch_size)``: data-free methods make their own training inputs;
* ``eval_networks()``: every network to score (each peer of an online method, the ensemble).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ..cache import CacheOptions, TeacherCache, TeacherOutputs, open_teacher_cache, teacher_forward
from ..errors import KDTutorError, NotAModelError, ShapeMismatchError
from .hparams import HParams
from .steps import OptimizerGroup, Steps

if TYPE_CHECKING:
    from ..data import Batch


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
    """False for methods with state DistributedDataParallel would not synchronise: per-sample
    memory banks (CRD), or networks a custom ``train_step`` runs outside ``steps.forward``
    (a discriminator, a generator), whose gradients DDP never sees."""
    family: ClassVar[str] = ""
    """The survey's kind of knowledge or scheme: "response", "feature", "relation" (later
    "online", "self", ...); "baseline" for the student alone."""
    epoch_hparams: ClassVar[Mapping[str, int]] = {}
    """Hyperparameters counted in epochs of the published ``protocol_epochs``-epoch schedule
    (e.g. FT's ``init_epochs`` = 30), which :meth:`scaled_hparams` shrinks for shorter runs."""
    protocol_epochs: ClassVar[int] = 240
    """Length of the published schedule (RepDistiller's CIFAR-100 protocol: 240 epochs)."""
    loss_weights: ClassVar[tuple[str, ...]] = ()
    """The hyperparameters that weight the distillation terms against the cross-entropy (e.g.
    ``("beta",)``); the comparison's equal tuning multiplies them all by one factor
    (:mod:`kdtutor.bench.tuning`). Empty for methods with nothing to tune that way."""

    @classmethod
    def scaled_hparams(cls, epochs: int, n_train: int | None = None) -> dict[str, Any]:
        """Hyperparameters for a run of ``epochs`` epochs on ``n_train`` training samples:
        each of :attr:`epoch_hparams` scaled by ``epochs / protocol_epochs`` (at least 1),
        none from ``protocol_epochs`` on (the method's defaults then apply). Methods with
        data-dependent values extend it when ``n_train`` is known (CRD caps its negatives)."""
        if epochs >= cls.protocol_epochs:
            return {}
        return {
            key: max(1, round(value * epochs / cls.protocol_epochs))
            for key, value in cls.epoch_hparams.items()
        }

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ):
        super().__init__()
        for role, net in (("student", student), ("teacher", teacher)):
            if net is not None and not isinstance(net, nn.Module):
                example = (
                    "kdtutor.zoo.load_teacher('shapes_cnn_large')"
                    if role == "teacher"
                    else "kdtutor.models.build_model('cnn_small', num_classes=10)"
                )
                raise NotAModelError(
                    f"the {role} must be an nn.Module, got {type(net).__name__} {net!r}: "
                    f"build it first, e.g. {example}."
                )
        if teacher is not None:
            _check_same_inputs(student, teacher)
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
        self.teacher_cache: TeacherCache | None = None
        """Set by the trainer for the length of a run when the teacher's outputs are cached."""
        self.teacher_forward_calls = 0

    # -- what methods use -------------------------------------------------------------------
    def teacher_feature_paths(self) -> Sequence[str]:
        """Module paths of the teacher features this method reads (cached with the logits)."""
        return ()

    def teacher_outputs(self, x: Tensor, index: Tensor | None = None) -> TeacherOutputs:
        """The teacher's logits (and requested features) for batch ``x``.

        With a teacher-output cache in use (see :mod:`kdtutor.cache`) and the batch's cache
        rows given as ``index``, they are looked up instead of computed.
        """
        if self.teacher is None:
            raise KDTutorError(f"method {self.name!r} has no teacher.")
        if self.teacher_cache is not None and index is not None:
            return self.teacher_cache.lookup(index, device=x.device)
        return self.compute_teacher_outputs(x)

    def cache_teacher(
        self,
        dataset: Any,
        augment: Any = None,
        *,
        options: CacheOptions | None = None,
        device: torch.device | str = "cpu",
        build: bool = True,
        **fields: Any,
    ) -> TeacherCache | None:
        """Open (building it if needed) the cache of this distiller's teacher outputs on
        ``dataset`` and read from it from now on. ``options``, or its ``fields`` (``mode``,
        ``location``, ``dtype``, ``views``), as :class:`~kdtutor.cache.CacheOptions`.
        ``fit`` does this for a run; call it yourself to train with your own loop."""
        self.teacher_cache = None
        if self.teacher is not None:
            self.teacher_cache = open_teacher_cache(
                self.teacher,
                dataset,
                augment,
                paths=self.teacher_feature_paths(),
                options=options or CacheOptions(**fields),
                forward=self.compute_teacher_outputs,
                device=device,
                build=build,
            )
        return self.teacher_cache

    def compute_teacher_outputs(self, x: Tensor) -> TeacherOutputs:
        """Run the frozen teacher on ``x`` (never cached)."""
        assert self.teacher is not None
        self.teacher_forward_calls += 1
        return teacher_forward(self.teacher, x, list(self.teacher_feature_paths()))

    # -- the contract -------------------------------------------------------------------------
    def forward(
        self, x: Tensor, y: Tensor, index: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's outputs on ``x`` and a dict of named, weighted losses.

        ``index`` holds the batch's teacher-cache rows (``Batch.rows``: the dataset index
        of each sample, or ``view * N + index`` with fixed augmented views); pass it on to
        :meth:`teacher_outputs`. Methods keeping per-sample state take it modulo ``N``.
        """
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Student parameters and those of any connectors, never the teacher's."""
        for name, param in self.named_parameters():
            if not name.startswith("teacher.") and param.requires_grad:
                yield param

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        """The optimizers to build, by name: one ``"student"`` group over
        :meth:`trainable_parameters` unless a method declares more (each parameter in one
        group; a group's unset fields take the training config's values)."""
        return {"student": OptimizerGroup(list(self.trainable_parameters()))}

    def train_step(self, batch: Batch, steps: Steps) -> tuple[Any, dict[str, Tensor]]:
        """One training step on ``batch``; returns the outputs to score and the losses to log.

        The default runs :meth:`forward` (through ``steps.forward``, so distributed runs
        synchronise gradients) and steps the ``"student"`` group on the sum of its losses.
        Methods with several optimizers override it and call ``steps.step(group, losses)``
        once per update, e.g. the discriminator, then the student.
        """
        outputs, losses = steps.forward(batch)
        steps.step("student", losses)
        return outputs, losses

    def synthesize_batch(self, batch_size: int) -> Batch:
        """A batch of synthetic training inputs (data-free methods); others need data."""
        raise KDTutorError(
            f"method {self.name!r} trains on data: give fit() a training set (only data-free "
            "methods, which synthesise their inputs, train with train_data=None)."
        )

    @property
    def is_data_free(self) -> bool:
        """True for methods that synthesise their inputs (they override synthesize_batch)."""
        return type(self).synthesize_batch is not Distiller.synthesize_batch

    def eval_networks(self) -> dict[str, Callable[[Any], Any]]:
        """The networks to score after each epoch, by name; the first is the run's score.

        Default: the student. Online methods add each peer and their ensemble.
        """
        return {"student": self.predict}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Student outputs for evaluation."""
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


def _check_same_inputs(student: nn.Module, teacher: nn.Module) -> None:
    """Refuse a teacher and student whose first convolutions take different channel counts."""
    from ..models.summary import first_in_channels

    s, t = first_in_channels(student), first_in_channels(teacher)
    if s is not None and t is not None and s != t:
        raise ShapeMismatchError(
            f"the student takes {s}-channel images but the teacher takes {t}: both must see "
            f"the same images. Build the student with in_channels={t}, or pick a teacher "
            f"trained on {s}-channel data."
        )


def _check_same_classes(student: nn.Module, teacher: nn.Module) -> None:
    s, t = getattr(student, "num_classes", None), getattr(teacher, "num_classes", None)
    if s is not None and t is not None and s != t:
        raise ShapeMismatchError(
            f"the student predicts {s} classes but the teacher predicts {t}. Build the student "
            f"with num_classes={t} (they must share one label space)."
        )

r"""Born-Again Networks, BAN (Furlanello, Lipton, Tschannen, Itti, Anandkumar, 2018).

A sequence of generations of one architecture: generation 0 is trained on the labels alone
(method ``scratch``); generation :math:`k+1` starts from a fresh initialisation and learns by
Hinton's KD from generation :math:`k`, frozen. The paper also scores the ensemble of the
generations (BANE), averaging their probabilities
(:func:`~kdtutor.losses.schemes.ensemble_log_probs`).

One generation is a :class:`BAN` run; the loop over generations is the experiment, written
where it is taught (chapter 4): ``teacher = scratch run``, then for each generation
``fit(build_distiller("ban", fresh_student, teacher), ...)`` and ``teacher = that student``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import KDTutorError, ShapeMismatchError
from .base import HParams
from .kd import KD, KDHParams
from .registry import register_method

__all__ = ["BAN", "BANHParams"]


@dataclass(frozen=True)
class BANHParams(KDHParams):
    """KD's defaults (``T=4``, ``ce_weight=0.1``, ``kd_weight=0.9``, RepDistiller's CIFAR-100
    protocol), so that BAN and offline KD differ only in the teacher. The paper's own weights
    per generation are not verified here (no official code was found); change them as for
    KD. Tf-KD's mode ``"self"`` is the same scheme with other weights (``alpha=0.95, T=6``)."""


@register_method
class BAN(KD):
    r"""One Born-Again generation: KD from the previous generation of the same network.

    .. math::
        \mathcal{L} = \lambda_{CE}\,\mathrm{CE}(z_{k+1}, y)
            + \lambda_{KD}\,T^2\,\frac1B\sum_{i=1}^{B}
              \mathrm{KL}\big(p^T_{k}(x_i) \,\|\, p^T_{k+1}(x_i)\big),

    :math:`z_k` the logits of generation :math:`k` (the teacher, frozen) and :math:`z_{k+1}`
    those of the student, a freshly initialised network of the same architecture: the loss
    is :class:`~kdtutor.methods.kd.KD`'s, and its teacher outputs are cached as KD's. The
    teacher must have exactly the student's parameter and buffer names and shapes (a
    teacher of another architecture is offline KD: use method ``kd``), and must be another
    object than the student.

    Paper: Furlanello, Lipton, Tschannen, Itti, Anandkumar (2018), *Born-Again Neural
    Networks*, ICML.
    """

    name = "ban"
    family = "self"
    paper = "Furlanello, Lipton, Tschannen, Itti, Anandkumar (2018). Born-Again Neural Networks"
    hparams_cls = BANHParams

    def __init__(
        self, student: nn.Module, teacher: nn.Module | None = None, hparams: HParams | None = None
    ) -> None:
        if teacher is None:
            raise KDTutorError(
                "ban needs a teacher: the previous generation, a trained network of the "
                "student's architecture (generation 0 is trained alone with method 'scratch'), "
                "passed as teacher=..."
            )
        if isinstance(student, nn.Module) and isinstance(teacher, nn.Module):
            _check_same_architecture(student, teacher)
        super().__init__(student, teacher, hparams)


def _check_same_architecture(student: nn.Module, teacher: nn.Module) -> None:
    """Refuse a BAN teacher that is not another network of the student's architecture: the
    same object (or one sharing parameters with it), or one whose ``state_dict`` names and
    shapes differ from the student's."""
    if teacher is student or _shares_parameters(student, teacher):
        raise KDTutorError(
            "ban's teacher is the student itself (or shares its parameters): the teacher would "
            "be frozen with it. Pass the previous generation as the teacher and a freshly built "
            "network of the same architecture as the student (e.g. build_model(name) again)."
        )
    from ..train.checkpoints import signature

    s, t = signature(student.state_dict()), signature(teacher.state_dict())
    if s == t:
        return
    only_student = [k for k in s if k not in t]
    only_teacher = [k for k in t if k not in s]
    reshaped = [f"{k} {t[k]} vs {s[k]}" for k in s if k in t and s[k] != t[k]]
    details = "; ".join(
        f"{what}: {names[:3]}{' ...' if len(names) > 3 else ''}"
        for what, names in (
            ("only in the student", only_student),
            ("only in the teacher", only_teacher),
            ("teacher vs student shapes", reshaped),
        )
        if names
    )
    raise ShapeMismatchError(
        f"ban's teacher must be the previous generation of the student's architecture, but "
        f"their parameters differ ({details}). To distil a network of another architecture, "
        "use method 'kd'."
    )


def _shares_parameters(a: nn.Module, b: nn.Module) -> bool:
    ids = {id(p) for p in a.parameters()}
    return any(id(p) in ids for p in b.parameters())

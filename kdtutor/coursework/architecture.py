r"""Chapter 5 (teacher-student architecture) coursework: check a learner's DeiT loss and a
learner's successive-halving search.

**DeiT** (Touvron, Cord, Douze, Massa, Sablayrolles, Jégou, 2021) trains a vision transformer
with two heads: the class head :math:`z_c` learns from the labels, the distillation head
:math:`z_d` (the distillation token's) from the teacher. A learner writes
``my_deit_loss(z_cls, z_dist, z_teacher, y, mode, alpha, tau, eps)``:

.. math::
    \mathcal{L} = (1 - \alpha)\,\mathrm{CE}_\varepsilon(z_c, y) + \alpha\,\mathcal{L}_{teacher},
    \qquad
    \mathcal{L}_{teacher} = \begin{cases}
        \mathrm{CE}(z_d, y_t), \; y_t = \arg\max_k z_{t,k} & \text{mode} = \text{"hard"} \\
        \tau^2\,\frac1B \sum_i \mathrm{KL}\big(\psi(z_{t,i}/\tau) \,\|\, \psi(z_{d,i}/\tau)\big)
            & \text{mode} = \text{"soft"}
    \end{cases}

with :math:`\psi` the softmax, :math:`\mathrm{CE}_\varepsilon` the cross entropy with labels
smoothed by :math:`\varepsilon` (PyTorch's ``label_smoothing``: :math:`1 - \varepsilon +
\varepsilon/K` on the true class, :math:`\varepsilon/K` on the others) and the teacher's logits
a constant (no gradient reaches them). These are the conventions of kdtutor's ``deit`` method
(:func:`kdtutor.methods.deit.deit_losses` with ``ce_weight = 1 - alpha``, ``kd_weight =
alpha``, ``T = tau``, ``label_smoothing = eps``), read from the authors' code
(facebookresearch/deit ``losses.py``: ``base_loss * (1 - alpha) + distillation_loss * alpha``,
the base criterion on the class output, the teacher term on the distillation output, the hard
label not smoothed, the teacher under ``torch.no_grad()``) except for one reduction: the code
divides the summed KL by ``outputs_kd.numel()`` (batch :math:`\times` classes), kdtutor follows
the paper's KL, averaged over the batch only (``kl_reduction="batchmean"``;
``book/appendix/deviations.md``, the DeiT row).

>>> import torch.nn.functional as F
>>> def my_deit_loss(z_cls, z_dist, z_teacher, y, mode, alpha, tau, eps):
...     label_term = F.cross_entropy(z_cls, y, label_smoothing=eps)
...     z_teacher = z_teacher.detach()
...     if mode == "hard":
...         teacher_term = F.cross_entropy(z_dist, z_teacher.argmax(dim=1))
...     else:
...         log_p = F.log_softmax(z_dist / tau, dim=1)
...         p_t = F.softmax(z_teacher / tau, dim=1)
...         kl = F.kl_div(log_p, p_t, reduction="batchmean")
...         teacher_term = tau**2 * kl
...     return (1 - alpha) * label_term + alpha * teacher_term
>>> check_deit_loss(my_deit_loss)  # doctest: +ELLIPSIS
✓ check_deit_loss: your DeiT loss matches the reference ...
True

**Successive halving** (Karnin, Koren, Somekh, 2013; Jamieson & Talwalkar, 2016; here in the
geometric form with a factor :math:`\eta` of :mod:`kdtutor.search`) spends a training budget on
a pool of candidate students: rung :math:`k` trains each of its :math:`n_k` candidates for
:math:`r_k = \min(r_0 \eta^k, R)` epochs and keeps the best :math:`\lfloor n_k / \eta \rfloor`
for the next rung; the last rung, the one that would keep a single candidate
(:math:`\lfloor n_k / \eta \rfloor \le 1`), trains for :math:`R` epochs and its best candidate
wins. With 27 candidates, :math:`\eta = 3`, :math:`r_0 = 2` and :math:`R = 20`: 27 at 2
epochs, 9 at 6, 3 at 20, a budget of :math:`27 \cdot 2 + 9 \cdot 6 + 3 \cdot 20 = 168`
candidate-epochs (:func:`kdtutor.search.halving_schedule`). A learner writes the allocation
loop against a given scorer, ``score(candidate, epochs) -> accuracy`` (higher is better, each
call one training run of that many epochs), and returns the winner:

>>> def my_successive_halving(candidates, score, *, min_epochs, max_epochs, eta):
...     rung, k = list(candidates), 0
...     while True:
...         last = len(rung) // eta <= 1
...         epochs = max_epochs if last else min(min_epochs * eta**k, max_epochs)
...         scores = {c: score(c, epochs) for c in rung}
...         ranked = sorted(rung, key=scores.get, reverse=True)
...         if last:
...             return ranked[0]
...         rung, k = ranked[: len(rung) // eta], k + 1
>>> check_successive_halving(my_successive_halving)  # doctest: +ELLIPSIS
✓ check_successive_halving: your search allocates ...
True

Both references are written here from scratch (the DeiT loss in float64 with an explicit
log-sum-exp; the search as its own loop), independently of :mod:`kdtutor.methods.deit` and
:mod:`kdtutor.search`. When a learner's values (or calls of the scorer) disagree, the checker
tries the typical mistakes and names the one that reproduces them: for DeiT the teacher term on
the class head, a missing :math:`\tau^2`, the KL averaged over the classes too (the authors'
code's form), the teacher's hard label smoothed, and more; then it checks the gradients with
respect to both heads and that the teacher's logits receive none. For successive halving:
keeping :math:`\eta` candidates instead of :math:`1/\eta` of them, not growing the epochs,
scoring the survivors at the old budget, spending more than the budget, and more.
"""

from __future__ import annotations

import math
import operator
import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import KDTutorError

# float64 pieces and the two-step check (values, then the gradients of the other inputs)
# shared with chapter 4's checkers (see the report of issue 16: they belong in a shared module)
from ._float64 import (
    _HARD_HINT,
    _cross_entropy,
    _divergence,
    _log_softmax,
    _require_callable,
    _values_then_gradients,
)
from .engine import LossCheck, Mistake, mistakes_from
from .messages import report_failure, scalar_loss_problem, wrap_message

__all__ = [
    "DeiTLossCheckError",
    "SuccessiveHalvingCheckError",
    "check_deit_loss",
    "check_successive_halving",
    "reference_deit_loss",
    "reference_successive_halving",
]

DeiTLossFn = Callable[[Tensor, Tensor, Tensor, Tensor, str, float, float, float], Tensor]
Scorer = Callable[[Any, int], float]
HalvingFn = Callable[..., Any]

RTOL = 1e-4
ATOL = 1e-6
DEIT_MODES = ("hard", "soft")


class DeiTLossCheckError(AssertionError):
    """Raised by :func:`check_deit_loss` when the learner's loss is wrong; the message says
    why."""


class SuccessiveHalvingCheckError(AssertionError):
    """Raised by :func:`check_successive_halving` when the learner's search is wrong; the
    message says why."""


# ==============================================================================================
# DeiT
# ==============================================================================================
def _smoothed_cross_entropy(z: Tensor, y: Tensor, eps: float) -> Tensor:
    """Mean over the batch of the cross entropy against ``(1 - eps) onehot(y) + eps / K``:
    ``(1 - eps) CE(z, y)`` plus ``eps`` times the mean over the classes of ``-log softmax(z)``."""
    uniform = -_log_softmax(z).mean(dim=1).mean()
    return (1 - eps) * _cross_entropy(z, y) + eps * uniform


@dataclass(frozen=True)
class _DeiTCase:
    mode: str
    batch: int
    classes: int
    alpha: float
    tau: float
    eps: float
    scale: float  # of both heads' logits
    teacher_scale: float
    extreme: bool = False  # extreme logits: the engine's "hard" cases

    @property
    def hard(self) -> bool:
        return self.extreme

    def describe(self) -> str:
        kind = "extreme logits, " if self.extreme else ""
        return (
            f"({kind}mode={self.mode!r}, batch {self.batch}, {self.classes} classes, "
            f"alpha={self.alpha:g}, tau={self.tau:g}, eps={self.eps:g})"
        )

    def inputs(self, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor, str, float, float, float]:
        gen = torch.Generator().manual_seed(5000 + index)
        shape = (self.batch, self.classes)
        z_cls = torch.randn(shape, generator=gen, dtype=torch.float64) * self.scale
        z_dist = torch.randn(shape, generator=gen, dtype=torch.float64) * self.scale
        z_t = torch.randn(shape, generator=gen, dtype=torch.float64) * self.teacher_scale
        y = torch.randint(self.classes, (self.batch,), generator=gen)
        return z_cls, z_dist, z_t, y, self.mode, self.alpha, self.tau, self.eps


_DEIT_CASES: tuple[_DeiTCase, ...] = (
    _DeiTCase("hard", 1, 10, 0.5, 1.0, 0.1, 2.0, 2.0),
    _DeiTCase("hard", 7, 10, 0.5, 3.0, 0.1, 2.0, 3.0),
    _DeiTCase("soft", 32, 10, 0.1, 3.0, 0.1, 2.0, 4.0),  # the paper's soft setting
    _DeiTCase("soft", 64, 10, 0.5, 1.0, 0.1, 3.0, 3.0),  # the code's defaults
    _DeiTCase("hard", 16, 5, 0.3, 2.0, 0.2, 1.0, 2.0),
    _DeiTCase("soft", 8, 100, 0.7, 4.0, 0.0, 2.0, 6.0),
    _DeiTCase("soft", 4, 3, 0.25, 2.0, 0.1, 1.0, 1.0),
    _DeiTCase("hard", 12, 100, 0.8, 1.0, 0.0, 2.0, 3.0),
    # extreme logits: naive log(softmax(...)) underflows to log(0) = -inf here
    _DeiTCase("soft", 16, 10, 0.5, 1.0, 0.1, 100.0, 100.0, extreme=True),
    _DeiTCase("hard", 8, 10, 0.5, 2.0, 0.1, 300.0, 300.0, extreme=True),
)
_DEIT_GRADIENT_CASES = range(1, 4)  # one hard, two soft


@dataclass(frozen=True)
class _DeiTVariant:
    """One way of computing the DeiT loss; the defaults are the correct way."""

    # in the order the hints list the errors
    heads: str = "cls/dist"  # the label term's head / the teacher term's head
    weights: str = "1-alpha/alpha"
    smoothing: str = "label"
    reduction: str = "batchmean"
    factor: str = "tau2"
    temperature: str = "both"

    def value(
        self,
        z_cls: Tensor,
        z_dist: Tensor,
        z_teacher: Tensor,
        y: Tensor,
        mode: str,
        alpha: float,
        tau: float,
        eps: float,
    ) -> Tensor:
        zc, zd, zt = z_cls.double(), z_dist.double(), z_teacher.double().detach()
        mean = (zc + zd) / 2
        label_head, teacher_head = {
            "cls/dist": (zc, zd),
            "cls/cls": (zc, zc),
            "dist/cls": (zd, zc),
            "mean/mean": (mean, mean),
        }[self.heads]
        label = _smoothed_cross_entropy(label_head, y, 0.0 if self.smoothing == "none" else eps)
        if mode == "hard":
            smooth = eps if self.smoothing == "label and teacher" else 0.0
            teacher = _smoothed_cross_entropy(teacher_head, zt.argmax(dim=1), smooth)
        else:
            t = tau if self.temperature == "both" else 1.0
            factor = {"tau2": tau**2, "1": 1.0, "tau": tau}[self.factor]
            kl = _divergence(
                _log_softmax(zt / t), _log_softmax(teacher_head / t), "kl", self.reduction
            )
            teacher = factor * kl
        w_label, w_teacher = {
            "1-alpha/alpha": (1 - alpha, alpha),
            "alpha/1-alpha": (alpha, 1 - alpha),
            "1/alpha": (1.0, alpha),
        }[self.weights]
        return w_label * label + w_teacher * teacher


def reference_deit_loss(
    z_cls: Tensor,
    z_dist: Tensor,
    z_teacher: Tensor,
    y: Tensor,
    mode: str,
    alpha: float,
    tau: float,
    eps: float,
) -> Tensor:
    """The DeiT loss computed from scratch in float64 (see the module docstring).

    Args:
        z_cls: ``(B, K)`` class-head logits (the label term's).
        z_dist: ``(B, K)`` distillation-head logits (the teacher term's).
        z_teacher: ``(B, K)`` teacher logits (detached here).
        y: ``(B,)`` class indices.
        mode: ``"hard"`` (cross entropy with the teacher's argmax) or ``"soft"`` (KL).
        alpha: the teacher term's weight (the label term's is ``1 - alpha``).
        tau: the soft term's temperature (unused in hard mode).
        eps: label smoothing of the label term.

    Returns:
        A float64 scalar tensor.

    Raises:
        KDTutorError: ``mode`` is neither ``"hard"`` nor ``"soft"``.
    """
    if mode not in DEIT_MODES:
        raise KDTutorError(f"reference_deit_loss: mode must be 'hard' or 'soft', got {mode!r}.")
    return _DeiTVariant().value(z_cls, z_dist, z_teacher, y, mode, alpha, tau, eps)


_DEIT_HINTS = {
    ("heads", "cls/cls"): (
        "the teacher term is on the class head: with the distillation token, the class head "
        "z_cls learns from the labels and the distillation head z_dist from the teacher (DeiT's "
        "losses.py: the base criterion on the class output, the distillation term on "
        "outputs_kd). Both terms on z_cls is distillation without the token (the paper's "
        "Table 3 rows without it, kdtutor's token=False), and z_dist would never learn."
    ),
    ("heads", "dist/cls"): (
        "the two heads are swapped: the label term goes on the class head z_cls, the teacher "
        "term on the distillation head z_dist."
    ),
    ("heads", "mean/mean"): (
        "both terms are on the mean of the two heads' logits, (z_cls + z_dist) / 2: that is how "
        "the student predicts at test time; in training each head has its own term, the labels "
        "on z_cls and the teacher on z_dist."
    ),
    ("weights", "alpha/1-alpha"): (
        "the weights are swapped: alpha weighs the teacher term and 1 - alpha the label term, "
        "(1 - alpha) * label_term + alpha * teacher_term (DeiT's code: base_loss * (1 - alpha) "
        "+ distillation_loss * alpha)."
    ),
    ("weights", "1/alpha"): (
        "the label term is not weighted by 1 - alpha: the loss is (1 - alpha) * label_term + "
        "alpha * teacher_term."
    ),
    ("smoothing", "label and teacher"): (
        "the loss smooths the teacher's hard label: label smoothing (eps) applies to the true "
        "labels only; the hard teacher term is F.cross_entropy(z_dist, z_teacher.argmax(dim=1)) "
        "without label_smoothing (DeiT's losses.py; kdtutor's deit_hard_loss)."
    ),
    ("smoothing", "none"): (
        "the labels are not smoothed: the label term is F.cross_entropy(z_cls, y, "
        "label_smoothing=eps)."
    ),
    ("reduction", "mean"): (
        "the KL is averaged over the classes as well as the batch (reduction='mean', or a sum "
        "divided by z_dist.numel()), K times smaller than the paper's KL: that is the authors' "
        "code's form (DeiT's losses.py divides the summed KL by outputs_kd.numel(), batch x "
        "classes, 'to have the legacy PyTorch behavior'). Here, as in kdtutor "
        "(kl_reduction='batchmean'; kl_reduction='code' is the code's form), sum over the "
        "classes and average over the batch: reduction='batchmean'."
    ),
    ("reduction", "sum"): (
        "the KL is summed over the batch (reduction='sum'): divide it by the batch size "
        "(reduction='batchmean')."
    ),
    ("factor", "1"): (
        "the tau² factor is missing: multiply the KL by tau**2. The gradient of the softened KL "
        "shrinks like 1/tau², and tau² restores its scale against the label term (Hinton et al., "
        "2015; DeiT's code: * (T * T))."
    ),
    ("factor", "tau"): "you multiply the KL by tau; the factor is tau**2 (tau squared).",
    ("temperature", "none"): (
        "the soft term's softmaxes are taken without the temperature: divide both z_dist and "
        "z_teacher by tau before the softmax."
    ),
}

_DEIT_STEPS = (
    "the label term F.cross_entropy(z_cls, y, label_smoothing=eps) on the class head; the "
    "teacher term on the distillation head: in hard mode F.cross_entropy(z_dist, "
    "z_teacher.argmax(dim=1)), in soft mode tau**2 times the KL from softmax(z_teacher / tau) "
    "to softmax(z_dist / tau), summed over the classes and averaged over the batch; the loss "
    "(1 - alpha) * label_term + alpha * teacher_term."
)


def _deit_mode_hint(wrong: Sequence[Any]) -> str | None:
    """Which mode is wrong, when only one is."""
    modes = {case.mode for case in wrong}
    if modes == {"hard"}:
        return (
            "the values are right in soft mode but not in hard mode: there the teacher term is "
            "F.cross_entropy(z_dist, z_teacher.argmax(dim=1)), the teacher's decision as a "
            "label, not smoothed and without the temperature."
        )
    if modes == {"soft"}:
        return (
            "the values are right in hard mode but not in soft mode: there the teacher term is "
            "tau**2 times the KL from softmax(z_teacher / tau) to softmax(z_dist / tau), summed "
            "over the classes and averaged over the batch (F.kl_div(F.log_softmax(z_dist / tau, "
            "1), F.softmax(z_teacher / tau, 1), reduction='batchmean'))."
        )
    return None


def _deit_output(out: object, case: Any) -> tuple[Tensor, ...] | str:
    if isinstance(out, dict | tuple | list):
        return (
            f"fn returned a {type(out).__name__} on {case.describe()}; return one scalar tensor, "
            "the weighted sum (1 - alpha) * label_term + alpha * teacher_term, not its terms."
        )
    problem = scalar_loss_problem(
        out,
        case.describe(),
        per_sample=(case.batch,),
        per_sample_hint=" It looks like one value per sample: average over the batch.",
    )
    return problem if problem is not None else (out,)  # type: ignore[return-value]


_DEIT_IN_PLACE = (
    "your function changed its input tensors in place (e.g. `z_dist /= tau` or "
    "`z_teacher.detach_()`); compute new tensors instead (`z_dist / tau`, `z_teacher.detach()`)."
)

_DEIT_CHECK = LossCheck(
    name="check_deit_loss",
    error=DeiTLossCheckError,
    call="fn(z_cls, z_dist, z_teacher, y, mode, alpha, tau, eps)",
    cases=_DEIT_CASES,
    reference=reference_deit_loss,
    rtol=RTOL,
    atol=ATOL,
    mistakes=mistakes_from(
        _DeiTVariant(),
        _DEIT_HINTS,
        heads=("cls/dist", "cls/cls", "dist/cls", "mean/mean"),
        weights=("1-alpha/alpha", "alpha/1-alpha", "1/alpha"),
        smoothing=("label", "label and teacher", "none"),
        reduction=("batchmean", "mean", "sum"),
        factor=("tau2", "1", "tau"),
        temperature=("both", "none"),
    ),
    loss="the DeiT loss",
    in_place=_DEIT_IN_PLACE,
    read_output=_deit_output,
    unmatched_hint=_deit_mode_hint,
    unmatched=f"the values match none of the typical mistakes. Check each step: {_DEIT_STEPS}",
    ordinary="logits",
    hard_hint=_HARD_HINT,
    student="the class head's logits z_cls",
    gradient_cases=_DEIT_GRADIENT_CASES,
    success=(
        f"your DeiT loss matches the reference on {len(_DEIT_CASES)} cases (hard and soft, "
        "batch 1 to 64, 3 to 100 classes, tau 1 to 4, eps 0 to 0.2, extreme logits included), "
        "so do its gradients with respect to both heads, and the teacher's logits are detached."
    ),
)


def _deit_gradient_problem(fn: DeiTLossFn) -> str | None:
    """The gradient with respect to ``z_dist`` (as the reference's) and ``z_teacher`` (none)."""
    for index in _DEIT_GRADIENT_CASES:
        case = _DEIT_CASES[index]
        z_cls, z_dist, z_t, y, mode, alpha, tau, eps = case.inputs(index)
        dist = z_dist.float().requires_grad_(True)
        teacher = z_t.float().requires_grad_(True)
        loss = fn(z_cls.float(), dist, teacher, y.clone(), mode, alpha, tau, eps)
        if not (dist.requires_grad and teacher.requires_grad):  # e.g. z_teacher.detach_()
            return _DEIT_IN_PLACE
        if not loss.requires_grad:
            return _not_differentiable(case)
        grad_dist, grad_teacher = torch.autograd.grad(loss, [dist, teacher], allow_unused=True)
        if grad_dist is None:
            return _not_differentiable(case)
        leaf = z_dist.clone().requires_grad_(True)
        reference = reference_deit_loss(z_cls, leaf, z_t, y, mode, alpha, tau, eps)
        (expected,) = torch.autograd.grad(reference, leaf)
        if not torch.allclose(grad_dist.double(), expected, rtol=1e-3, atol=1e-6):
            return (
                "the values are right but the gradient with respect to the distillation head's "
                f"logits z_dist is not, on {case.describe()} (max error "
                f"{float((grad_dist.double() - expected).abs().max()):.3g}). Do not detach any "
                "part of the student's computation."
            )
        if grad_teacher is not None and float(grad_teacher.abs().max()) > 0:
            return (
                "the values and the student's gradients are right, but the loss sends gradient "
                f"into z_teacher (up to {float(grad_teacher.abs().max()):.3g} on "
                f"{case.describe()}): the teacher is not detached. The teacher's logits are a "
                "fixed target: detach them (z_teacher.detach()), or compute them under "
                "torch.no_grad() as DeiT's code does. Otherwise loss.backward() also pulls the "
                "teacher towards the student, and an optimizer holding the teacher's "
                "parameters would train it."
            )
    return None


def _not_differentiable(case: _DeiTCase) -> str:
    return (
        "the loss is not differentiable with respect to the distillation head's logits z_dist "
        f"(no gradient flows back, on {case.describe()}): avoid .detach(), .item(), .numpy() and "
        "torch.no_grad() on the student's side; detach only the teacher's logits."
    )


def check_deit_loss(fn: DeiTLossFn, *, raise_on_failure: bool = True, verbose: bool = True) -> bool:
    r"""Check a learner's ``fn(z_cls, z_dist, z_teacher, y, mode, alpha, tau, eps)`` against
    DeiT's loss (Touvron et al., 2021).

    The learner writes, for example (the module docstring has the formula)::

        def my_deit_loss(z_cls, z_dist, z_teacher, y, mode, alpha, tau, eps):
            label_term = F.cross_entropy(z_cls, y, label_smoothing=eps)
            z_teacher = z_teacher.detach()
            if mode == "hard":
                teacher_term = F.cross_entropy(z_dist, z_teacher.argmax(dim=1))
            else:
                log_p = F.log_softmax(z_dist / tau, dim=1)
                p_t = F.softmax(z_teacher / tau, dim=1)
                kl = F.kl_div(log_p, p_t, reduction="batchmean")
                teacher_term = tau**2 * kl
            return (1 - alpha) * label_term + alpha * teacher_term

        check_deit_loss(my_deit_loss)

    ``fn`` must return a scalar tensor: :math:`(1 - \alpha)\,\mathrm{CE}_\varepsilon(z_c, y) +
    \alpha\,\mathcal{L}_{teacher}(z_d, z_t)`, the labels (smoothed by ``eps``) on the class
    head, the teacher on the distillation head, by its argmax (``mode="hard"``, not smoothed) or
    by :math:`\tau^2` times the batch-mean KL of the softened outputs (``mode="soft"``). It is
    called on float32 cases of both modes with batch sizes 1 to 64, 3 to 100 classes, several
    ``alpha``, ``tau`` and ``eps``, and extreme logits. The values are compared with an
    independent float64 reference (relative tolerance ``1e-4``); then the gradients with
    respect to ``z_cls`` and ``z_dist`` are compared with the reference's, and ``z_teacher``
    must receive no gradient (the teacher is detached). On a mismatch the message names the
    typical mistake that reproduces the numbers, when one does.

    Args:
        fn: The learner's loss function.
        raise_on_failure: Raise :class:`DeiTLossCheckError` with the explanation (default);
            with ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).

    Raises:
        DeiTLossCheckError: The loss is wrong (the message says how), unless
            ``raise_on_failure=False``.
        KDTutorError: ``fn`` is not callable.
    """
    _require_callable(
        fn, "check_deit_loss", "my_deit_loss(z_cls, z_dist, z_teacher, y, mode, alpha, tau, eps)"
    )
    return _values_then_gradients(
        fn, _DEIT_CHECK, _deit_gradient_problem, DeiTLossCheckError, raise_on_failure, verbose
    )


# ==============================================================================================
# Successive halving
# ==============================================================================================
_SH_NAME = "check_successive_halving"
_SH_CALL = "fn(candidates, score, min_epochs=..., max_epochs=..., eta=...)"
_RUNAWAY = 10  # a search that spends this many times the budget is stopped


@dataclass(frozen=True)
class _HalvingCase:
    n: int
    min_epochs: int
    max_epochs: int
    eta: int
    seed: int

    def candidates(self) -> list[str]:
        return [f"c{i:02d}" for i in range(self.n)]

    def describe(self) -> str:
        return (
            f"({self.n} candidates, min_epochs={self.min_epochs}, max_epochs={self.max_epochs}, "
            f"eta={self.eta})"
        )

    def table(self) -> _ScoreTable:
        return _ScoreTable(self.candidates(), self.seed)


class _ScoreTable:
    """A synthetic score table: candidate ``i``'s accuracy after ``r`` epochs is
    ``A_i (1 - exp(-r / s_i))``, with the larger final accuracies ``A_i`` learnt more slowly
    (larger ``s_i``), so that short runs and long runs rank the candidates differently."""

    def __init__(self, names: Sequence[str], seed: int) -> None:
        rng = random.Random(seed)
        self.curves: dict[str, tuple[float, float]] = {}
        for name in names:
            final = rng.uniform(50.0, 90.0)
            slowness = 0.5 + 12.0 * ((final - 50.0) / 40.0) ** 1.5 * rng.uniform(0.5, 1.5)
            self.curves[name] = (final, slowness)

    def __call__(self, candidate: str, epochs: int) -> float:
        final, slowness = self.curves[candidate]
        return final * (1.0 - math.exp(-epochs / slowness))


_SH_CASES: tuple[_HalvingCase, ...] = (
    _HalvingCase(27, 2, 20, 3, seed=0),  # the chapter's: 27 at 2, 9 at 6, 3 at 20
    _HalvingCase(9, 1, 9, 3, seed=1),  # 9 at 1, 3 at 9
    _HalvingCase(16, 1, 16, 2, seed=2),  # 16 at 1, 8 at 2, 4 at 4, 2 at 16
    _HalvingCase(10, 2, 10, 3, seed=3),  # 10 at 2, 3 at 10: a pool that is no power of eta
    _HalvingCase(81, 2, 10, 3, seed=4),  # 81 at 2, 27 at 6, 9 at 10 (capped), 3 at 10
    _HalvingCase(30, 1, 30, 2, seed=5),  # 30 at 1, 15 at 2, 7 at 4, 3 at 30
    _HalvingCase(3, 5, 5, 3, seed=6),  # a single rung: 3 at 5
)


@dataclass(frozen=True)
class _Run:
    """What a search did on one case: its calls of the scorer, in order, and its winner."""

    calls: tuple[tuple[Any, int], ...]
    winner: Any

    @property
    def spent(self) -> int:
        """Candidate-epochs: the sum of the epochs of every call (each call is a run)."""
        return sum(epochs for _, epochs in self.calls)

    def key(self, budget: int) -> tuple[frozenset[tuple[Any, int]], Any, bool]:
        """What two searches must share to be the same: the (candidate, epochs) pairs they
        scored, their winner, and whether they spent more than ``budget``."""
        return frozenset(self.calls), self.winner, self.spent > budget


class _Recorder:
    """The scorer a search is handed: records its calls, refuses bad ones, stops a runaway."""

    def __init__(self, score: Callable[[Any, int], float], pool: Sequence[Hashable], limit: float):
        self.score, self.pool, self.limit = score, set(pool), limit
        self.calls: list[tuple[Any, int]] = []
        self.spent = 0

    def __call__(self, candidate: Any, epochs: Any) -> float:
        try:
            known = candidate in self.pool
        except TypeError:
            known = False
        if not known:
            raise _Misuse(
                f"score was called with {_short(candidate)}, which is not one of the "
                "candidates: call score(candidate, epochs) with an item of the candidates list."
            )
        whole = _whole_epochs(epochs)
        if whole is None:
            raise _Misuse(
                f"score was called with epochs={epochs!r}: epochs are a whole number of at least "
                "1 (use // for integer division, e.g. len(rung) // eta, and min(min_epochs * "
                "eta**k, max_epochs) for the epochs)."
            )
        self.calls.append((candidate, whole))
        self.spent += whole
        if self.spent > self.limit:
            raise _Runaway
        return self.score(candidate, whole)


class _Misuse(BaseException):
    """The learner called the scorer wrongly (a BaseException: ``except Exception`` in the
    learner's code does not swallow it)."""


class _Runaway(BaseException):
    """The learner's search spent far more than the budget: stopped."""


def _whole_epochs(epochs: Any) -> int | None:
    if isinstance(epochs, bool):
        return None
    if isinstance(epochs, float):
        return int(epochs) if epochs.is_integer() and epochs >= 1 else None
    try:
        value = operator.index(epochs)
    except TypeError:
        return None
    return value if value >= 1 else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class _Halving:
    """One way of allocating the epochs; the defaults are successive halving's."""

    # in the order the hints list the errors
    keep: str = "1/eta"
    order: str = "highest"
    epochs: str = "grow"
    last: str = "max"
    rescore: str = "yes"
    spend: str = "once"

    def search(
        self, candidates: Sequence[Any], score: Scorer, min_epochs: int, max_epochs: int, eta: int
    ) -> Any:
        """Run the search (calling ``score``) and return its winner."""
        rung, k = list(candidates), 0
        first: dict[Any, float] = {}
        while True:
            last = len(rung) // eta <= 1
            epochs = self._epochs(k, last, min_epochs, max_epochs, eta)
            if k > 0 and self.rescore == "never":  # ranked by the first rung's scores
                scores = {c: first[c] for c in rung}
            else:
                scores = {}
                for c in rung:
                    scores[c] = score(c, epochs)
                    if self.spend == "twice":
                        score(c, epochs)
                if k == 0:
                    first = scores
                elif self.rescore == "ignored":
                    scores = {c: first[c] for c in rung}
            sign = -1.0 if self.order == "highest" else 1.0
            ranked = sorted(rung, key=lambda c: sign * scores[c])  # stable: ties to the earlier
            if last:
                return ranked[0]
            size = len(rung)
            keep = {"1/eta": size // eta, "eta": eta, "drop 1/eta": size - size // eta}[self.keep]
            kept = set(ranked[:keep])
            rung, k = [c for c in rung if c in kept], k + 1

    def _epochs(self, k: int, last: bool, r0: int, big_r: int, eta: int) -> int:
        if self.epochs == "fixed":
            return r0
        if last and (self.last == "max" or self.epochs == "fixed but the last"):
            return big_r
        return {
            "grow": min(r0 * eta**k, big_r),
            "fixed but the last": r0,
            "lagged": min(r0 * eta ** max(k - 1, 0), big_r),
            "uncapped": r0 * eta**k,
        }[self.epochs]

    def value(self, case: _HalvingCase) -> _Run:
        recorder = _Recorder(case.table(), case.candidates(), math.inf)
        winner = self.search(
            case.candidates(), recorder, case.min_epochs, case.max_epochs, case.eta
        )
        return _Run(tuple(recorder.calls), winner)


def reference_successive_halving(
    candidates: Sequence[Any],
    score: Scorer,
    *,
    min_epochs: int,
    max_epochs: int,
    eta: int = 3,
) -> Any:
    """Successive halving written from scratch (see the module docstring): the winner.

    Rung ``k`` scores its candidates, in the pool's order, at ``min(min_epochs * eta**k,
    max_epochs)`` epochs and keeps the best ``len(rung) // eta`` (ties: the earlier in the
    pool); the rung with ``len(rung) // eta <= 1`` is the last, scored at ``max_epochs``, and
    its best candidate wins. Each rung calls ``score`` once per candidate.

    Args:
        candidates: The pool (distinct, hashable items).
        score: ``score(candidate, epochs) -> float``, higher is better.
        min_epochs: The first rung's epochs.
        max_epochs: The last rung's epochs.
        eta: Keep one candidate in ``eta`` at each rung.

    Returns:
        The winning candidate.

    Raises:
        KDTutorError: An empty or duplicated pool, ``eta`` below 2, or epochs that are not
            positive integers with ``min_epochs <= max_epochs``.

    Example:
        Four candidates and ``eta = 2``: all four at 1 epoch, the best two at 4 epochs, where
        the best after 1 epoch (``"a"``) loses:

        >>> table = {("a", 1): 50, ("b", 1): 40, ("c", 1): 30, ("d", 1): 20,
        ...          ("a", 4): 55, ("b", 4): 70}
        >>> reference_successive_halving(
        ...     "abcd", lambda c, r: table[c, r], min_epochs=1, max_epochs=4, eta=2
        ... )
        'b'
    """
    pool = list(candidates)
    if not pool or len(set(pool)) != len(pool):
        raise KDTutorError(
            "reference_successive_halving needs a non-empty pool of distinct candidates."
        )
    for name, value in (("min_epochs", min_epochs), ("max_epochs", max_epochs), ("eta", eta)):
        if _whole_epochs(value) != value or isinstance(value, float):
            raise KDTutorError(f"{name} must be a positive integer, got {value!r}.")
    if eta < 2 or min_epochs > max_epochs:
        raise KDTutorError(
            f"successive halving needs eta >= 2 and min_epochs <= max_epochs, got eta={eta}, "
            f"min_epochs={min_epochs}, max_epochs={max_epochs}."
        )
    return _Halving().search(pool, score, min_epochs, max_epochs, eta)


_HALVING_HINTS = {
    ("keep", "eta"): (
        "keeping eta candidates instead of 1/eta of them: each rung keeps its best "
        "len(rung) // eta (27 -> 9 -> 3 for eta = 3), not its best eta."
    ),
    ("keep", "drop 1/eta"): (
        "dropping 1/eta of the candidates instead of keeping 1/eta of them: each rung keeps its "
        "best len(rung) // eta (27 -> 9 -> 3 for eta = 3), not len(rung) - len(rung) // eta "
        "(27 -> 18 -> 12 -> ...)."
    ),
    ("order", "lowest"): (
        "keeping the lowest scores: score returns an accuracy, higher is better; rank each rung "
        "best first (sorted(..., reverse=True)) and keep the first len(rung) // eta."
    ),
    ("epochs", "fixed"): (
        "not growing the epochs: rung k trains its candidates for min(min_epochs * eta**k, "
        "max_epochs) epochs (2, 6, then 20 in the last rung for min_epochs=2, eta=3, "
        "max_epochs=20); yours trains every rung for min_epochs, so the survivors are compared "
        "on the same short runs that selected them."
    ),
    ("epochs", "fixed but the last"): (
        "not growing the epochs between rungs: rung k trains its candidates for "
        "min(min_epochs * eta**k, max_epochs) epochs (2, 6, ... for min_epochs=2, eta=3); yours "
        "keeps min_epochs until the last rung."
    ),
    ("epochs", "lagged"): (
        "scoring the survivors at the old budget: rung k's candidates train for rung k's "
        "epochs, min(min_epochs * eta**k, max_epochs); yours scores them at the epochs of the "
        "rung that selected them (grow the epochs before scoring a rung, not after)."
    ),
    ("epochs", "uncapped"): (
        "epochs not capped at max_epochs, which spends more than the budget: min_epochs * "
        "eta**k grows past max_epochs (2 * 3**2 = 18 > 10 for min_epochs=2, eta=3, "
        "max_epochs=10); train rung k for min(min_epochs * eta**k, max_epochs) epochs."
    ),
    ("last", "geometric"): (
        "the last rung (the one that would keep a single candidate, len(rung) // eta <= 1) "
        "trains for max_epochs, so that the winner is chosen on full-length runs "
        "(kdtutor.search.halving_schedule); yours trains it for min_epochs * eta**k like the "
        "others."
    ),
    ("rescore", "never"): (
        "scoring the survivors at the old budget: after the first rung you never call score "
        "again and rank the survivors by the scores they got at min_epochs. Each rung scores "
        "its candidates afresh at its own epochs (a memo of scores must be keyed by "
        "(candidate, epochs), not by the candidate alone)."
    ),
    ("rescore", "ignored"): (
        "ranking the survivors by their old-budget scores: you call score at each rung's "
        "epochs but rank by the scores of the first rung (at min_epochs); rank each rung by "
        "the scores it has just computed."
    ),
    ("spend", "twice"): (
        "spending more than the budget: you score candidates more than once at the same epochs "
        "(e.g. once in sorted(key=...) and again in max(key=...), or again to print them). Each "
        "call of score trains a network from scratch: call it once per candidate and rung, and "
        "keep the values in a dict."
    ),
}

_HALVING_MISTAKES: list[Mistake] = mistakes_from(
    _Halving(),
    _HALVING_HINTS,
    keep=("1/eta", "eta", "drop 1/eta"),
    order=("highest", "lowest"),
    epochs=("grow", "fixed", "fixed but the last", "lagged", "uncapped"),
    last=("max", "geometric"),
    rescore=("yes", "never", "ignored"),
    spend=("once", "twice"),
)

_HALVING_RULE = (
    "Rung k scores each of its candidates once at min(min_epochs * eta**k, max_epochs) epochs "
    "and keeps the best len(rung) // eta; the last rung, the one with len(rung) // eta <= 1, "
    "is scored at max_epochs and its best candidate wins."
)


def _rungs(calls: Sequence[tuple[Any, int]]) -> list[tuple[int, int]]:
    """The calls read as rungs, ``(candidates, epochs)``: a rung ends when the epochs change or
    a candidate comes again."""
    rungs: list[tuple[int, set[Any]]] = []
    for candidate, epochs in calls:
        if not rungs or rungs[-1][0] != epochs or candidate in rungs[-1][1]:
            rungs.append((epochs, set()))
        rungs[-1][1].add(candidate)
    return [(len(members), epochs) for epochs, members in rungs]


def _describe_rungs(calls: Sequence[tuple[Any, int]], most: int = 8) -> str:
    rungs = _rungs(calls)
    if not rungs:
        return "no call of score"
    parts = [
        f"{n} at {epochs}" + (" epochs" if i == 0 else "") for i, (n, epochs) in enumerate(rungs)
    ][:most]
    more = ", ..." if len(rungs) > most else ""
    return ", ".join(parts) + more + f" ({sum(e for _, e in calls)} candidate-epochs)"


def _explain_error(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, TypeError) and ("argument" in text or "positional" in text):
        return (
            f"{text}. The checker calls {_SH_CALL}: name the parameters min_epochs, max_epochs "
            "and eta."
        )
    if isinstance(exc, TypeError) and "indices must be integers" in text:
        return f"{text}. Keep len(rung) // eta candidates (// is integer division)."
    return text


def _winner_problem(winner: Any, case: _HalvingCase) -> str | None:
    try:
        known = winner in set(case.candidates())
    except TypeError:
        known = False
    if known:
        return None
    shape = (
        " (return the candidate alone, not a pair or a list)"
        if isinstance(winner, tuple | list)
        else ""
    )
    return (
        f"on {case.describe()} fn returned {_short(winner)}; it must return the winning "
        f"candidate itself, one item of candidates (such as 'c07'){shape}."
    )


def _runaway_message(case: _HalvingCase, calls: Sequence[tuple[Any, int]], budget: int) -> str:
    rungs = _rungs(calls)
    stuck = ""
    if len(rungs) >= 3 and all(n == case.eta for n, _ in rungs[-3:]):
        stuck = (
            " It is keeping eta candidates instead of 1/eta of them at every rung, so the pool "
            "stops shrinking and the last rung never comes."
        )
    return (
        f"on {case.describe()} your search did not stop: it had spent more than "
        f"{_RUNAWAY * budget} candidate-epochs, {_RUNAWAY} times the budget of {budget}, and was "
        f"still calling score. Its rungs so far: {_describe_rungs(calls)}.{stuck} {_HALVING_RULE}"
    )


def _last_rung_scores(case: _HalvingCase, want: _Run) -> dict[Any, float]:
    """The reference's last rung (its last calls, one per candidate) and its scores."""
    size = _rungs(want.calls)[-1][0]
    table = case.table()
    return {c: table(c, e) for c, e in want.calls[-size:]}


def _unmatched(case: _HalvingCase, got: _Run, want: _Run) -> str:
    budget = want.spent
    if got.spent > budget:
        repeats = len(got.calls) - len(set(got.calls))
        longest = max(e for _, e in got.calls)
        causes = []
        if repeats:
            causes.append(
                f"It scores the same candidate at the same epochs more than once ({repeats} "
                "repeated calls): every call of score trains a network from scratch; compute "
                "each score once per rung and keep it in a dict."
            )
        if longest > case.max_epochs:
            causes.append(
                f"Some runs are longer than max_epochs ({longest} > {case.max_epochs}): cap the "
                "epochs at max_epochs."
            )
        return (
            f"your search spends more than the budget: {got.spent} candidate-epochs where "
            f"successive halving spends {budget}. " + " ".join(causes or [_HALVING_RULE])
        )
    if set(got.calls) == set(want.calls):
        last = _last_rung_scores(case, want)
        best = max(last, key=last.__getitem__)
        worst = min(last, key=last.__getitem__)
        if got.winner == worst:
            return (
                f"your rungs are right but you return the candidate with the lowest score of "
                f"the last rung ({got.winner!r}: {last[worst]:.2f}); higher is better: return "
                f"the best one ({best!r}: {last[best]:.2f})."
            )
        where = f" ({last[got.winner]:.2f})" if got.winner in last else ", not in the last rung"
        return (
            f"your rungs are right but the winner is not: return the candidate with the highest "
            f"score in the last rung (at max_epochs), {best!r} ({last[best]:.2f}), not "
            f"{got.winner!r}{where}."
        )
    return f"your rungs differ from successive halving's. {_HALVING_RULE}"


def _matching_mistake(
    runs: Sequence[_Run], same: Callable[[_Run, _Run, int], bool]
) -> Mistake | None:
    """The first typical mistake whose runs are ``same`` as the learner's on every case."""
    budgets = [_Halving().value(case).spent for case in _SH_CASES]
    for mistake in _HALVING_MISTAKES:
        if all(
            same(mistake.value(case), run, budget)
            for case, run, budget in zip(_SH_CASES, runs, budgets, strict=True)
        ):
            return mistake
    return None


def _explain_halving(runs: Sequence[_Run], expected: Sequence[_Run]) -> str:
    """Name the mistake that reproduces every case (or say what differs), then one case."""
    budgets = [want.spent for want in expected]
    found = _matching_mistake(runs, lambda a, b, _: Counter(a.calls) == Counter(b.calls)
                              and a.winner == b.winner)  # fmt: skip
    if found is None:  # e.g. a search that reuses scores: compare what it scored, not how often
        found = _matching_mistake(runs, lambda a, b, budget: a.key(budget) == b.key(budget))
    first = next(
        i
        for i, (run, want) in enumerate(zip(runs, expected, strict=True))
        if run.key(budgets[i]) != want.key(budgets[i])
    )
    case, got, want = _SH_CASES[first], runs[first], expected[first]
    if found is None:
        diagnosis = _unmatched(case, got, want)
    elif len(found.hints) == 1:
        diagnosis = f"your search reproduces a typical mistake: {found.hints[0]}"
    else:
        listed = "\n".join(f"  {n}. {h}" for n, h in enumerate(found.hints, 1))
        diagnosis = f"your search reproduces {len(found.hints)} typical mistakes at once:\n{listed}"
    over = (
        f" You spent {got.spent} candidate-epochs, more than the budget of {want.spent}."
        if got.spent > want.spent and found is not None
        else ""
    )
    return (
        f"{diagnosis}\n  For example, on {case.describe()} your rungs were "
        f"{_describe_rungs(got.calls)} and your winner {got.winner!r}; successive halving's "
        f"rungs are {_describe_rungs(want.calls)} and its winner {want.winner!r}.{over}"
    )


def check_successive_halving(
    fn: HalvingFn, *, raise_on_failure: bool = True, verbose: bool = True
) -> bool:
    r"""Check a learner's successive halving,
    ``fn(candidates, score, *, min_epochs, max_epochs, eta) -> winner``.

    The learner writes the allocation loop of :func:`kdtutor.search.successive_halving`
    against a given scorer ``score(candidate, epochs) -> float`` (higher is better; each call
    trains one candidate for that many epochs) and returns the winning candidate. For example
    (the module docstring has the rule)::

        def my_successive_halving(candidates, score, *, min_epochs, max_epochs, eta):
            rung, k = list(candidates), 0
            while True:
                last = len(rung) // eta <= 1
                epochs = max_epochs if last else min(min_epochs * eta**k, max_epochs)
                scores = {c: score(c, epochs) for c in rung}
                ranked = sorted(rung, key=scores.get, reverse=True)
                if last:
                    return ranked[0]
                rung, k = ranked[: len(rung) // eta], k + 1

        check_successive_halving(my_successive_halving)

    ``fn`` is called as ``fn(candidates, score, min_epochs=..., max_epochs=..., eta=...)`` on
    seven synthetic score tables (learning curves whose ranking changes with the epochs: the
    best candidate after 2 epochs is rarely the best after 20), with pools of 3 to 81
    candidates (names such as ``'c07'``), ``eta`` 2 or 3, and a case where ``max_epochs``
    caps the growth. It passes when, on every table, it scores the same (candidate, epochs)
    pairs as successive halving, spends no more candidate-epochs (the sum of the epochs of its
    calls) than the budget :math:`\sum_k n_k r_k`, and returns the same winner. Otherwise the
    message names the typical mistake that reproduces its calls, when one does (keeping
    :math:`\eta` candidates instead of :math:`1/\eta` of them, not growing the epochs, scoring
    the survivors at the old budget, spending more than the budget, ...), and shows its rungs
    beside successive halving's on one table. A search that spends ten times the budget is
    stopped.

    Args:
        fn: The learner's search.
        raise_on_failure: Raise :class:`SuccessiveHalvingCheckError` with the explanation
            (default); with ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every table passes (``False`` on failure if ``raise_on_failure=False``).

    Raises:
        SuccessiveHalvingCheckError: The search is wrong (the message says how), unless
            ``raise_on_failure=False``.
        KDTutorError: ``fn`` is not callable.
    """
    _require_callable(
        fn,
        _SH_NAME,
        "my_successive_halving(candidates, score, *, min_epochs, max_epochs, eta)",
    )

    def fail(message: str) -> bool:
        return report_failure(_SH_NAME, message, SuccessiveHalvingCheckError, raise_on_failure)

    reference = _Halving()
    expected = [reference.value(case) for case in _SH_CASES]
    runs = []
    for case, want in zip(_SH_CASES, expected, strict=True):
        recorder = _Recorder(case.table(), case.candidates(), _RUNAWAY * want.spent)
        try:
            winner = fn(
                case.candidates(),
                recorder,
                min_epochs=case.min_epochs,
                max_epochs=case.max_epochs,
                eta=case.eta,
            )
        except _Misuse as misuse:
            return fail(f"on {case.describe()} {misuse}")
        except _Runaway:
            return fail(_runaway_message(case, recorder.calls, want.spent))
        except Exception as exc:  # the learner's code may raise anything
            return fail(
                f"calling {_SH_CALL} on {case.describe()} raised {type(exc).__name__}: "
                f"{_explain_error(exc)}"
            )
        problem = _winner_problem(winner, case)
        if problem is not None:
            return fail(problem)
        runs.append(_Run(tuple(recorder.calls), winner))
    if any(
        run.key(want.spent) != want.key(want.spent)
        for run, want in zip(runs, expected, strict=True)
    ):
        return fail(_explain_halving(runs, expected))
    if verbose:
        print(
            wrap_message(
                f"✓ {_SH_NAME}: your search allocates the epochs as successive halving does on "
                f"{len(_SH_CASES)} score tables (3 to 81 candidates, eta 2 and 3, epochs capped "
                "at max_epochs included): the same rungs, within the budget, and the same "
                "winner. Well done!"
            )
        )
    return True

r"""Distillation algorithms coursework: check a learner's LwF term and DeepInversion's
batch-norm statistics loss (distillation without the old data).

Two losses distil without the data the teacher was trained on. A learner writes them and runs

>>> import torch.nn.functional as F
>>> def my_lwf_loss(new_logits, old_logits, T):
...     target = F.softmax(old_logits / T, dim=1)
...     return -(target * F.log_softmax(new_logits / T, dim=1)).sum(1).mean()
>>> check_lwf_loss(my_lwf_loss)  # doctest: +ELLIPSIS
✓ check_lwf_loss: ... matches the reference ...
True
>>> def my_bn_loss(features, running_mean, running_var):
...     dims = [0, *range(2, features.dim())]
...     mean = features.mean(dims)
...     var = features.var(dims, unbiased=False)
...     return (mean - running_mean).norm() + (var - running_var).norm()
>>> check_bn_statistics_loss(my_bn_loss)  # doctest: +ELLIPSIS
✓ check_bn_statistics_loss: ... matches the reference ...
True

Both references are written here from scratch in float64, independently of
:mod:`kdtutor.losses.lifelong` and :mod:`kdtutor.losses.data_free`:

* **Learning without Forgetting** (Li & Hoiem, 2017, Eq. 2; the book's
  :func:`~kdtutor.losses.lifelong.lwf_distillation`): with :math:`z` the current model's
  logits on the old task's outputs and :math:`z^o` those the frozen previous model gave the
  same images,

  .. math::
      \mathcal{L}_{old} = -\frac1B \sum_{i=1}^{B} \sum_{c}
          \mathrm{softmax}(z^o_i / T)_c \, \log \mathrm{softmax}(z_i / T)_c ,

  a cross entropy (not a KL: they differ by the recorded outputs' entropy, a constant) with
  **no** :math:`T^2` factor, summed over classes and averaged over the batch. When the values
  disagree the checker tries the classic mistakes (Hinton's :math:`T^2` carried over, the KL,
  the raw recorded logits as targets, the temperature on one side or none, an element-wise
  mean or a sum over the batch, the two models swapped) and names the one that reproduces
  them.
* **DeepInversion's feature-distribution regulariser** for one BatchNorm layer (Yin et al.,
  2020, Eq. 4; the book's :func:`~kdtutor.losses.data_free.bn_statistics_loss`, which sums it
  over the layers):

  .. math::
      \mathcal{R}(x) = \big\| \mu(x) - \hat\mu \big\|_2 + \big\| \sigma^2(x) - \hat\sigma^2
          \big\|_2 ,

  :math:`\mu, \sigma^2` the per-channel mean and *biased* variance of the layer's input over
  the batch and every position (all dimensions but 1), :math:`\hat\mu, \hat\sigma^2` the
  layer's ``running_mean`` and ``running_var``; norms, not squared (as the official
  ``deepinversion_cifar10.py``). The classic mistakes tried: squared norms, a mean of squares
  (``F.mse_loss``), one norm over both differences, the unbiased variance, the standard
  deviation, statistics over the batch only (not the positions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .engine import LossCheck, mistakes_from, run_check
from .messages import scalar_loss_problem

__all__ = [
    "BNStatisticsLossCheckError",
    "LwFLossCheckError",
    "check_bn_statistics_loss",
    "check_lwf_loss",
    "reference_bn_statistics_loss",
    "reference_lwf_loss",
]

LwFLossFn = Callable[[Tensor, Tensor, float], Tensor]
BNLossFn = Callable[[Tensor, Tensor, Tensor], Tensor]

RTOL = 1e-4
ATOL = 1e-6


class LwFLossCheckError(AssertionError):
    """Raised by :func:`check_lwf_loss` when the learner's loss is wrong; the message says why."""


class BNStatisticsLossCheckError(AssertionError):
    """Raised by :func:`check_bn_statistics_loss` when the learner's loss is wrong; the message
    says why."""


def _log_softmax(z: Tensor) -> Tensor:
    """log softmax over dim 1 by the explicit log-sum-exp trick (float64)."""
    shifted = z - z.max(dim=1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


# ==============================================================================================
# Learning without Forgetting
# ==============================================================================================
@dataclass(frozen=True)
class _LwFCase:
    batch: int
    classes: int
    T: float
    new_scale: float
    old_scale: float
    hard: bool = False  # extreme logits

    def describe(self) -> str:
        kind = "extreme logits, " if self.hard else ""
        return f"({kind}batch {self.batch}, {self.classes} old classes, T={self.T:g})"

    def inputs(self, index: int) -> tuple[Tensor, Tensor, float]:
        gen = torch.Generator().manual_seed(3000 + index)
        z = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        zo = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        return z * self.new_scale, zo * self.old_scale, self.T


_LWF_CASES: tuple[_LwFCase, ...] = (
    _LwFCase(1, 5, 2.0, 2.0, 2.0),
    _LwFCase(7, 5, 2.0, 2.0, 3.0),
    _LwFCase(32, 10, 4.0, 3.0, 5.0),
    _LwFCase(16, 5, 1.0, 1.0, 2.0),
    _LwFCase(64, 20, 0.5, 1.0, 1.0),
    _LwFCase(8, 100, 10.0, 2.0, 6.0),
    _LwFCase(4, 3, 3.0, 1.0, 4.0),
    # extreme logits: naive log(softmax(...)) underflows to log(0) = -inf here
    _LwFCase(16, 5, 1.0, 100.0, 100.0, hard=True),
    _LwFCase(8, 10, 2.0, 300.0, 1.0, hard=True),
)


def reference_lwf_loss(new_logits: Tensor, old_logits: Tensor, T: float = 2.0) -> Tensor:
    """LwF's distillation term computed from scratch in float64 (see the module docstring)."""
    z, zo = new_logits.double(), old_logits.double()
    log_q, log_p = _log_softmax(z / T), _log_softmax(zo / T)
    return -(log_p.exp() * log_q).sum() / z.shape[0]


def _lwf_grad(z: Tensor, zo: Tensor, T: float) -> Tensor:
    """d L_old / d z = (softmax(z / T) - softmax(z^o / T)) / (T B), in closed form."""
    q, p = _log_softmax(z.double() / T).exp(), _log_softmax(zo.double() / T).exp()
    return (q - p) / (T * z.shape[0])


_LWF_HINTS = {
    ("factor", "T2"): (
        "your loss is multiplied by T²: that factor belongs to Hinton's KD loss. LwF's "
        "distillation term (Li & Hoiem, 2017, Eq. 2; the book's lwf_distillation) has none: "
        "remove the T**2."
    ),
    ("factor", "T"): "your loss is multiplied by T: LwF's term has no factor of T; remove it.",
    ("kind", "kl"): (
        "you compute the KL divergence; LwF's term, as the paper and the book write it, is the "
        "cross entropy -sum p_old log p_new, larger by the recorded outputs' entropy. The "
        "gradients agree (that entropy does not depend on the model being trained), but the "
        "values do not: use -(p_old * F.log_softmax(new_logits / T, dim=1)).sum(1).mean()."
    ),
    ("kind", "logits as targets"): (
        "the recorded logits are used as the targets as they are: turn them into "
        "probabilities first, F.softmax(old_logits / T, dim=1)."
    ),
    ("temperature", "none"): (
        "the softmaxes are taken without the temperature: divide both the new and the recorded "
        "logits by T before the softmax."
    ),
    ("temperature", "old only"): (
        "only the recorded (old) logits are divided by T: soften the current model's softmax "
        "with the same T (F.log_softmax(new_logits / T, dim=1))."
    ),
    ("temperature", "new only"): (
        "only the current model's logits are divided by T: soften the recorded targets with "
        "the same T (F.softmax(old_logits / T, dim=1))."
    ),
    ("reduction", "mean"): (
        "the loss is averaged over every element, which also divides by the number of old "
        "classes: sum over the classes and average over the batch only."
    ),
    ("reduction", "sum"): "the loss is summed over the batch: divide by the batch size.",
    ("direction", "swapped"): (
        "the two models are swapped: the targets are the recorded outputs of the previous "
        "model, softmax(old_logits / T), and the log-probabilities are the current model's, "
        "log_softmax(new_logits / T)."
    ),
}


@dataclass(frozen=True)
class _LwFVariant:
    """One way of computing LwF's term; the defaults are the correct way."""

    # in the order the hints list the errors
    kind: str = "cross-entropy"
    direction: str = "old->new"
    temperature: str = "both"
    reduction: str = "batchmean"
    factor: str = "1"

    def value(self, z: Tensor, zo: Tensor, T: float) -> Tensor:
        if self.direction == "swapped":
            z, zo = zo, z
        tn = T if self.temperature in ("both", "new only") else 1.0
        to = T if self.temperature in ("both", "old only") else 1.0
        log_q, log_p = _log_softmax(z / tn), _log_softmax(zo / to)
        if self.kind == "cross-entropy":
            elementwise = -log_p.exp() * log_q
        elif self.kind == "kl":
            elementwise = log_p.exp() * (log_p - log_q)
        else:  # the recorded logits (softened as the variant says) as targets
            elementwise = -(zo / to) * log_q
        batch, classes = z.shape
        divisor = {"batchmean": batch, "mean": batch * classes, "sum": 1}[self.reduction]
        factor = {"1": 1.0, "T2": T**2, "T": T}[self.factor]
        return factor * elementwise.sum() / divisor


_LWF_CHECK = LossCheck(
    name="check_lwf_loss",
    error=LwFLossCheckError,
    call="fn(new_logits, old_logits, T)",
    cases=_LWF_CASES,
    reference=reference_lwf_loss,
    reference_grad=_lwf_grad,
    rtol=RTOL,
    atol=ATOL,
    mistakes=mistakes_from(
        _LwFVariant(),
        _LWF_HINTS,
        factor=("1", "T2", "T"),
        reduction=("batchmean", "mean", "sum"),
        kind=("cross-entropy", "kl", "logits as targets"),
        temperature=("both", "none", "old only", "new only"),
        direction=("old->new", "swapped"),
    ),
    mistake_kind="classic",
    loss="LwF's term",
    in_place=(
        "your function changed its input tensors in place (e.g. `new_logits /= T`); compute "
        "new tensors instead (`new_logits / T`)."
    ),
    per_sample_hint=" It looks like one value per sample: average over the batch.",
    unmatched=(
        "the values match none of the classic mistakes. Check each step: divide both logits "
        "by T, take softmax of the recorded logits and log_softmax of the new ones, sum "
        "-p_old * log p_new over the classes, average over the batch (no T**2)."
    ),
    ordinary="logits",
    hard_hint=(
        "The computation is numerically unstable: log(softmax(z)) underflows to log(0) = -inf "
        "when logits differ by more than about 100 (and 0 * -inf is nan). Use F.log_softmax "
        "instead of taking the log of a softmax."
    ),
    finite_gradient_on_hard_cases=True,
    student="the new logits",
    gradient_cases=range(1, 4),
    success=(
        f"your LwF term matches the reference on {len(_LWF_CASES)} cases (batch 1 to 64, 3 to "
        "100 old classes, T from 0.5 to 10, extreme logits included), and so does its gradient."
    ),
)


def check_lwf_loss(fn: LwFLossFn, *, raise_on_failure: bool = True, verbose: bool = True) -> bool:
    r"""Check a learner's ``fn(new_logits, old_logits, T)`` against LwF's distillation term.

    ``fn`` receives the current model's logits on the old task's outputs and the logits the
    frozen previous model gave the same images, both float32 ``(B, K_old)``, and must return
    a scalar tensor, differentiable with respect to ``new_logits``, equal to
    :math:`-\frac1B \sum_i \sum_c \mathrm{softmax}(z^o_i/T)_c \log \mathrm{softmax}(z_i/T)_c`
    (no :math:`T^2`). Nine cases (batch 1 to 64, 3 to 100 classes, T from 0.5 to 10, and
    extreme logits where a naive ``log(softmax(...))`` underflows); values are compared with
    an independent float64 reference (relative tolerance ``1e-4``) and so are the gradients.
    On a mismatch the message names the classic mistake that reproduces the numbers.

    Args:
        fn: The learner's loss function.
        raise_on_failure: Raise :class:`LwFLossCheckError` with the explanation (default);
            with ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).

    Raises:
        LwFLossCheckError: The loss is wrong (the message says how), unless
            ``raise_on_failure=False``.
    """
    return run_check(fn, _LWF_CHECK, raise_on_failure=raise_on_failure, verbose=verbose)


# ==============================================================================================
# DeepInversion's batch-norm statistics loss
# ==============================================================================================
@dataclass(frozen=True)
class _BNCase:
    shape: tuple[int, ...]  # (B, C, ...)
    offset: float = 0.0  # added to the features and to the running mean
    hard: bool = False  # a large offset: E[x²] - E[x]² cancels in float32

    @property
    def batch(self) -> int:
        return self.shape[0]

    def describe(self) -> str:
        kind = f"features of mean about {self.offset:g}, " if self.hard else ""
        return f"({kind}features of shape {tuple(self.shape)})"

    def inputs(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        gen = torch.Generator().manual_seed(4000 + index)
        c = self.shape[1]
        per_channel = (1, c, *([1] * (len(self.shape) - 2)))
        scale = 0.5 + torch.rand(c, generator=gen, dtype=torch.float64)
        shift = torch.randn(c, generator=gen, dtype=torch.float64)
        x = torch.randn(*self.shape, generator=gen, dtype=torch.float64)
        x = x * scale.view(per_channel) + shift.view(per_channel) + self.offset
        running_mean = self.offset + torch.randn(c, generator=gen, dtype=torch.float64)
        running_var = 0.2 + 2 * torch.rand(c, generator=gen, dtype=torch.float64)
        return x, running_mean, running_var


_BN_CASES: tuple[_BNCase, ...] = (
    _BNCase((8, 4)),
    _BNCase((4, 3, 5, 5)),
    _BNCase((16, 8, 4, 4)),
    _BNCase((2, 6)),
    _BNCase((1, 6, 7, 7)),  # one image: the statistics run over its positions
    _BNCase((5, 4, 9)),  # (B, C, L), as BatchNorm1d on sequences
    _BNCase((8, 4, 3, 6)),
    _BNCase((64, 16)),
    # a large mean beside a small spread: E[x²] - E[x]² loses its digits in float32
    _BNCase((16, 8, 4, 4), offset=500.0, hard=True),
    _BNCase((64, 8), offset=500.0, hard=True),
)


def _stat_dims(x: Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def reference_bn_statistics_loss(
    features: Tensor, running_mean: Tensor, running_var: Tensor
) -> Tensor:
    """DeepInversion's statistics loss for one BatchNorm layer, from scratch in float64 (see
    the module docstring)."""
    x = features.double()
    dims = _stat_dims(x)
    count = x.numel() // x.shape[1]
    mean = x.sum(dims) / count
    shape = (1, x.shape[1], *([1] * (x.dim() - 2)))
    var = ((x - mean.view(shape)) ** 2).sum(dims) / count
    d_mean = mean - running_mean.double()
    d_var = var - running_var.double()
    return (d_mean**2).sum().sqrt() + (d_var**2).sum().sqrt()


_BN_HINTS = {
    ("norm", "squared"): (
        "the norms are squared: DeepInversion's regulariser (Yin et al., 2020, Eq. 4, and the "
        "official code) takes the L2 norms themselves, ||mean - running_mean||_2 + "
        "||var - running_var||_2 (torch.linalg.vector_norm, or .norm()), not their squares."
    ),
    ("norm", "mse"): (
        "you average the squared differences over the channels (F.mse_loss): take the L2 norm "
        "of each difference instead, (mean - running_mean).norm() + (var - running_var).norm()."
    ),
    ("norm", "joint"): (
        "you take one norm of both differences together; the regulariser is the sum of two "
        "norms, ||mean - running_mean||_2 + ||var - running_var||_2."
    ),
    ("variance", "unbiased"): (
        "the variance is the unbiased one (divided by N - 1; torch's .var() default): "
        "BatchNorm normalises with, and DeepInversion compares, the biased variance, divided "
        "by N: use .var(dims, unbiased=False)."
    ),
    ("variance", "std"): (
        "you compare the standard deviation with running_var, which holds a variance: use "
        "the (biased) variance, .var(dims, unbiased=False), not .std()."
    ),
    ("axes", "batch only"): (
        "the statistics are taken over the batch only: BatchNorm's statistics are per "
        "channel, over the batch and every position, so reduce over all dimensions but 1 "
        "(dims [0, 2, 3] for images)."
    ),
}


@dataclass(frozen=True)
class _BNVariant:
    """One way of computing the statistics loss; the defaults are the correct way."""

    # in the order the hints list the errors
    axes: str = "batch and positions"
    variance: str = "biased"
    norm: str = "l2"

    def value(self, x: Tensor, running_mean: Tensor, running_var: Tensor) -> Tensor:
        if self.axes == "batch only":
            if x.shape[0] == 1 and self.variance == "unbiased":
                return torch.tensor(float("nan"), dtype=torch.float64)  # 0 / 0
            mean = x.mean(0)
            var = x.var(0, unbiased=self.variance == "unbiased")
            target_shape = (x.shape[1], *([1] * (x.dim() - 2)))
            rm, rv = running_mean.view(target_shape), running_var.view(target_shape)
        else:
            dims = _stat_dims(x)
            mean = x.mean(dims)
            var = x.var(dims, unbiased=self.variance == "unbiased")
            rm, rv = running_mean, running_var
        if self.variance == "std":
            var = var.sqrt()
        d_mean = (mean - rm).flatten()
        d_var = (var - rv).flatten()
        if self.norm == "l2":
            return d_mean.norm() + d_var.norm()
        if self.norm == "squared":
            return d_mean.pow(2).sum() + d_var.pow(2).sum()
        if self.norm == "mse":
            return d_mean.pow(2).mean() + d_var.pow(2).mean()
        return torch.cat([d_mean, d_var]).norm()  # joint


def _bn_output(out: object, case: _BNCase) -> tuple[Tensor, ...] | str:
    channels = case.shape[1]
    if isinstance(out, Tensor) and tuple(out.shape) == (channels,) and channels != 1:
        return (
            f"fn returned a tensor of shape {tuple(out.shape)} on {case.describe()}, one value "
            "per channel; the loss must be a single number (a scalar tensor): take the L2 norm "
            "over the channels, (mean - running_mean).norm() + (var - running_var).norm()."
        )
    problem = scalar_loss_problem(out, case.describe(), advice=".")
    return problem if problem is not None else (out,)  # type: ignore[return-value]


_BN_CHECK = LossCheck(
    name="check_bn_statistics_loss",
    error=BNStatisticsLossCheckError,
    call="fn(features, running_mean, running_var)",
    cases=_BN_CASES,
    reference=reference_bn_statistics_loss,
    rtol=RTOL,
    atol=ATOL,
    read_output=_bn_output,
    mistakes=mistakes_from(
        _BNVariant(),
        _BN_HINTS,
        norm=("l2", "squared", "mse", "joint"),
        variance=("biased", "unbiased", "std"),
        axes=("batch and positions", "batch only"),
    ),
    mistake_kind="classic",
    loss="the statistics loss",
    in_place=(
        "your function changed its input tensors in place (e.g. `features -= mean`, or a "
        "BatchNorm's running statistics updated by a forward pass in training mode); compute "
        "new tensors instead."
    ),
    unmatched=(
        "the values match none of the classic mistakes. Check each step: the mean and the "
        "biased variance of each channel over the batch and every position (every dimension "
        "but 1), then the L2 norm of mean - running_mean plus the L2 norm of "
        "var - running_var (norms, not squared)."
    ),
    ordinary="features",
    hard_hint=(
        "The variance loses its digits: E[x²] - E[x]² subtracts two nearly equal large numbers "
        "when the features' mean is large beside their spread (float32 keeps about 7 digits). "
        "Compute it as the mean of (x - mean)², or with .var(dims, unbiased=False)."
    ),
    student="the features",
    gradient_cases=range(0, 3),
    success=(
        f"your statistics loss matches the reference on {len(_BN_CASES)} cases ((B, C), "
        "(B, C, L) and (B, C, H, W) features, a batch of one image, features of large mean), "
        "and so does its gradient."
    ),
)


def check_bn_statistics_loss(
    fn: BNLossFn, *, raise_on_failure: bool = True, verbose: bool = True
) -> bool:
    r"""Check a learner's ``fn(features, running_mean, running_var)`` against DeepInversion's
    statistics loss for one BatchNorm layer.

    ``fn`` receives a float32 BatchNorm input ``(B, C, ...)`` and the layer's float32
    ``running_mean`` and ``running_var`` ``(C,)``, and must return a scalar tensor,
    differentiable with respect to ``features``, equal to
    :math:`\|\mu - \hat\mu\|_2 + \|\sigma^2 - \hat\sigma^2\|_2` with the per-channel mean and
    biased variance over every dimension but 1. Ten cases ((B, C), (B, C, L) and
    (B, C, H, W), a batch of one image, and features of large mean where
    :math:`E[x^2] - E[x]^2` cancels in float32); values are compared with an independent
    float64 reference (relative tolerance ``1e-4``) and so are the gradients. On a mismatch
    the message names the classic mistake that reproduces the numbers.

    Args:
        fn: The learner's loss function.
        raise_on_failure: Raise :class:`BNStatisticsLossCheckError` with the explanation
            (default); with ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).

    Raises:
        BNStatisticsLossCheckError: The loss is wrong (the message says how), unless
            ``raise_on_failure=False``.
    """
    return run_check(fn, _BN_CHECK, raise_on_failure=raise_on_failure, verbose=verbose)

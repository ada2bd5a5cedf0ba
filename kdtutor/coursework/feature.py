r"""Chapter 3 (feature-based knowledge) coursework: check a learner's attention-transfer loss.

Attention transfer (Zagoruyko & Komodakis, 2017) compares *where* two networks look. A learner
writes ``my_at_loss(student_feature, teacher_feature, p)`` for feature maps of shapes
(B, C_s, H_s, W_s) and (B, C_t, H_t, W_t) and runs

>>> from kdtutor.losses.feature import at_loss
>>> check_at_loss(at_loss)  # doctest: +ELLIPSIS
✓ check_at_loss: ... matches the reference ...
True

The reference is written here from scratch in float64, independently of
:func:`kdtutor.losses.feature.at_loss`:

1. bring both features to the smaller spatial size by average pooling the larger one
   (pooling the *features*, before the attention map, as the authors' code and RepDistiller
   do; the checker's sizes divide exactly, so this is a plain block mean);
2. the attention map of each sample, :math:`Q = \operatorname{vec}(\sum_c |F_c|^p)`, divided by
   its L2 norm (a map of zeros stays zeros, as with ``F.normalize``);
3. ``mode="code"`` (the default; the authors' code and RepDistiller): the mean over samples and
   positions of :math:`(\hat Q_s - \hat Q_t)^2`; ``mode="paper"`` (eq. 2 of the paper): the
   mean over samples of :math:`\lVert \hat Q_s - \hat Q_t \rVert_2`.

Channel counts may differ: the maps sum over channels. When a learner's values disagree, the
checker tries the typical mistakes (no normalisation, an L1 normalisation, one normalisation
over the whole batch, :math:`F^p` without the absolute value for odd :math:`p`, the other
form of the loss, a sum over positions or over everything instead of a mean, pooling the maps
instead of the features, upsampling the smaller map instead of pooling the larger one) and
names the one that reproduces the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .engine import LossCheck, mistakes_from, run_check

__all__ = ["ATLossCheckError", "check_at_loss", "reference_at_loss"]

ATLossFn = Callable[[Tensor, Tensor, float], Tensor]

RTOL = 1e-4
ATOL = 1e-7
MODES = ("code", "paper")


class ATLossCheckError(AssertionError):
    """Raised by :func:`check_at_loss` when the learner's loss is wrong; the message says why."""


@dataclass(frozen=True)
class _Case:
    batch: int
    student: tuple[int, int, int]  # (C, H, W)
    teacher: tuple[int, int, int]
    p: float
    relu: bool = True  # post-ReLU features (non-negative), as stage outputs are
    hard: bool = False  # one sample's student map is all zeros (a dead stage)

    def describe(self) -> str:
        s, t = self.student, self.teacher
        sign = "" if self.relu else "signed features, "
        dead = "one all-zero student feature map, " if self.hard else ""
        return (
            f"({dead}{sign}batch {self.batch}, student {s[0]}x{s[1]}x{s[2]}, teacher "
            f"{t[0]}x{t[1]}x{t[2]}, p={self.p:g})"
        )

    @property
    def resized(self) -> bool:
        return self.student[1:] != self.teacher[1:]

    def inputs(self, index: int) -> tuple[Tensor, Tensor, float]:
        gen = torch.Generator().manual_seed(2000 + index)
        s = torch.randn(self.batch, *self.student, generator=gen, dtype=torch.float64)
        t = torch.randn(self.batch, *self.teacher, generator=gen, dtype=torch.float64)
        if self.relu:
            s, t = s.clamp_min(0.0), t.clamp_min(0.0)
        if self.hard:
            s[0] = 0.0
        return s, t, self.p


_CASES: tuple[_Case, ...] = (
    _Case(4, (8, 8, 8), (16, 8, 8), 2.0),
    _Case(1, (3, 5, 5), (3, 5, 5), 2.0),
    _Case(6, (4, 6, 6), (6, 6, 6), 1.0, relu=False),
    _Case(5, (6, 4, 4), (12, 4, 4), 3.0, relu=False),
    _Case(3, (5, 4, 4), (5, 4, 4), 2.0, relu=False),
    _Case(16, (16, 16, 16), (32, 8, 8), 2.0),  # student larger: pool it
    _Case(8, (8, 7, 7), (4, 14, 14), 2.0),  # teacher larger: pool it
    _Case(3, (6, 8, 6), (10, 4, 3), 2.0),  # non-square
    # a dead stage: q / q.norm() is 0 / 0 here, F.normalize gives zeros
    _Case(4, (8, 6, 6), (16, 6, 6), 2.0, hard=True),
)


def _block_mean(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Average pooling of (B, C, H, W) to ``size`` when it divides (H, W) exactly."""
    b, c, h, w = x.shape
    kh, kw = h // size[0], w // size[1]
    return x.reshape(b, c, size[0], kh, size[1], kw).mean(dim=(3, 5))


def _attention(x: Tensor, p: float, norm: str = "l2", use_abs: bool = True) -> Tensor:
    """(B, H*W) attention maps; ``norm`` in l2 (per sample), l1, batch (l2 over all), none."""
    q = (x.abs() if use_abs else x).pow(p).sum(dim=1).flatten(1)
    if norm == "l2":
        n = q.pow(2).sum(dim=1, keepdim=True).sqrt()
    elif norm == "l1":
        n = q.abs().sum(dim=1, keepdim=True)
    elif norm == "batch":
        n = q.pow(2).sum().sqrt()
    else:
        return q
    return q / n.clamp_min(1e-12)


def _reduce(diff: Tensor, reduction: str) -> Tensor:
    if reduction == "mean_sq":
        return diff.pow(2).mean()
    if reduction == "norm":
        return diff.pow(2).sum(dim=1).sqrt().mean()
    if reduction == "sum_sq":  # summed over positions, averaged over samples
        return diff.pow(2).sum(dim=1).mean()
    if reduction == "total_sq":  # summed over everything
        return diff.pow(2).sum()
    if reduction == "mean_abs":
        return diff.abs().mean()
    raise ValueError(reduction)


def _matched(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
    return _block_mean(s, size), _block_mean(t, size)


def reference_at_loss(
    student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0, mode: str = "code"
) -> Tensor:
    """The attention-transfer loss computed from scratch in float64 (see the module docstring).

    Spatial sizes must divide one another exactly (the checker's cases do).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'code' or 'paper', got {mode!r}.")
    s, t = _matched(student_feature.double(), teacher_feature.double())
    diff = _attention(s, p) - _attention(t, p)
    return _reduce(diff, "mean_sq" if mode == "code" else "norm")


# ----------------------------------------------------------------------------------------------
# the typical mistakes, as variants of the reference
# ----------------------------------------------------------------------------------------------
_HINTS = {
    ("norm", "none"): (
        "the attention maps are not normalised: divide each sample's map Q = sum_c |F_c|^p by "
        "its L2 norm (F.normalize(q, dim=1)). Without it the loss compares activation energies, "
        "which differ between any two networks, instead of where they look."
    ),
    ("norm", "l1"): (
        "the maps are divided by their L1 norm (their sum); attention transfer divides by the "
        "L2 norm, so that each map is a unit vector (F.normalize(q, dim=1), p=2 by default)."
    ),
    ("norm", "batch"): (
        "the maps are normalised once over the whole batch; normalise each sample's map on "
        "its own: flatten to (B, H*W) and use F.normalize(q, dim=1)."
    ),
    ("use_abs", False): (
        "F^p is taken without the absolute value: for odd p a negative activation then lowers "
        "the attention. Use feature.abs().pow(p) (pre-activation features can be negative)."
    ),
    ("reduction", "norm"): (
        "you computed the paper's form, the mean over samples of the L2 norm ||Q_s - Q_t||_2; "
        "the code form asked for is the mean over samples and positions of the squared "
        "difference, (q_s - q_t).pow(2).mean()."
    ),
    ("reduction", "mean_sq"): (
        "you computed the code form, the mean of the squared differences; the paper's form "
        "asked for is the mean over samples of the (not squared) L2 norm, "
        "(q_s - q_t).norm(dim=1).mean()."
    ),
    ("reduction", "sum_sq"): (
        "the squared differences are summed over positions (and averaged over samples): take "
        "the mean over positions too, (q_s - q_t).pow(2).mean(); the sum is larger by H*W."
    ),
    ("reduction", "total_sq"): (
        "the squared differences are summed over samples and positions: average over both, "
        "(q_s - q_t).pow(2).mean()."
    ),
    ("reduction", "mean_abs"): (
        "you average the absolute differences |q_s - q_t|; attention transfer uses squared "
        "differences (the code form) or their L2 norm (the paper's form)."
    ),
    ("resize", "pool maps"): (
        "you resized the attention maps; resize the features instead, before the maps are "
        "computed (F.adaptive_avg_pool2d(feature, size)), as the authors' code and "
        "RepDistiller do: the square of an average is not the average of the squares."
    ),
    ("resize", "upsample"): (
        "the smaller feature map is enlarged (interpolated) to the larger one's size; shrink "
        "the larger one instead, with F.adaptive_avg_pool2d(feature, (H_small, W_small)), so "
        "that no positions are made up."
    ),
}


@dataclass(frozen=True)
class _Variant:
    """One way of computing the loss; the defaults are the correct way (in the code form)."""

    # in the order the hints list the errors
    resize: str = "pool features"
    norm: str = "l2"
    use_abs: bool = True
    reduction: str = "mean_sq"  # the code form; "norm" is the paper's

    def value(self, s: Tensor, t: Tensor, p: float) -> Tensor:
        if self.resize == "pool features":
            s, t = _matched(s, t)
            qs, qt = (_attention(x, p, self.norm, self.use_abs) for x in (s, t))
        elif self.resize == "pool maps":
            size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
            maps = []
            for x in (s, t):
                q = (x.abs() if self.use_abs else x).pow(p).sum(dim=1, keepdim=True)
                q = _block_mean(q, size)
                maps.append(_attention(q, 1.0, self.norm, use_abs=False))
            qs, qt = maps
        else:
            size = (max(s.shape[-2], t.shape[-2]), max(s.shape[-1], t.shape[-1]))
            s, t = (
                x
                if tuple(x.shape[-2:]) == size
                else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                for x in (s, t)
            )
            qs, qt = (_attention(x, p, self.norm, self.use_abs) for x in (s, t))
        return _reduce(qs - qt, self.reduction)


# ----------------------------------------------------------------------------------------------
# the check
# ----------------------------------------------------------------------------------------------
def _check(mode: str) -> LossCheck:
    code = mode == "code"
    form = "code form" if code else "paper's form"
    return LossCheck(
        name="check_at_loss",
        error=ATLossCheckError,
        call="fn(student_feature, teacher_feature, p)",
        explain_error=_explain_error,
        cases=_CASES,
        reference=lambda s, t, p: reference_at_loss(s, t, p, mode),
        rtol=RTOL,
        atol=ATOL,
        mistakes=mistakes_from(
            _Variant(reduction="mean_sq" if code else "norm"),
            _HINTS,
            norm=("l2", "none", "l1", "batch"),
            use_abs=(True, False),
            reduction=("mean_sq", "norm", "sum_sq", "total_sq", "mean_abs"),
            resize=("pool features", "pool maps", "upsample"),
        ),
        loss="the AT loss",
        in_place=(
            "your function changed its input tensors in place (e.g. `f.pow_(2)` or `f /= n`); "
            "compute new tensors instead."
        ),
        per_sample_hint=" It looks like one value per sample: average over the batch.",
        unmatched=(
            "the values match none of the typical mistakes. Check each step: shrink the larger "
            "feature map to the smaller size (F.adaptive_avg_pool2d), take "
            "q = f.abs().pow(p).sum(dim=1).flatten(1) for each, normalise each row "
            "(F.normalize(q, dim=1)), then "
            + ("(q_s - q_t).pow(2).mean()." if code else "(q_s - q_t).norm(dim=1).mean().")
        ),
        ordinary="features",
        hard_hint=(
            "A stage whose activations are all zero for an image (a dead ReLU stage) gives a map "
            "of zeros, and q / q.norm() is then 0 / 0 = nan. Use F.normalize(q, dim=1), which "
            "divides by max(norm, eps)."
        ),
        student="the student's feature",
        grads_agree=lambda got, ref: torch.allclose(got, ref, rtol=1e-3, atol=1e-7),
        success=(
            f"your attention-transfer loss ({form}) matches the reference on {len(_CASES)} cases "
            "(different channel counts, student or teacher larger, non-square maps, p = 1, 2 and "
            "3, an all-zero feature map), and so does its gradient."
        ),
    )


def _explain_error(case: _Case, exc: Exception) -> str:
    if not case.resized:
        return f"{exc}."
    return (
        f"{exc}. The two feature maps have different spatial sizes here: first shrink the larger "
        "one to the smaller one's size with F.adaptive_avg_pool2d."
    )


_CHECKS = {mode: _check(mode) for mode in MODES}


def check_at_loss(
    fn: ATLossFn, *, mode: str = "code", raise_on_failure: bool = True, verbose: bool = True
) -> bool:
    r"""Check a learner's ``fn(student_feature, teacher_feature, p)`` against attention transfer.

    ``fn`` receives two float32 feature maps (B, C_s, H_s, W_s) and (B, C_t, H_t, W_t) (channel
    counts and spatial sizes may differ; one size always divides the other) and the exponent
    ``p``, and must return a scalar tensor, differentiable with respect to the student's
    feature: for ``mode="code"`` the mean over samples and positions of
    :math:`(\hat Q_s - \hat Q_t)^2`, for ``mode="paper"`` the mean over samples of
    :math:`\lVert \hat Q_s - \hat Q_t \rVert_2`, where :math:`\hat Q` is the L2-normalised map
    :math:`\sum_c |F_c|^p` of the features after average pooling the larger one to the smaller
    size. Nine cases: different channel counts, student or teacher larger, non-square maps,
    signed features with :math:`p = 1, 2, 3`, and an all-zero feature map. On a mismatch the
    message names the typical mistake that reproduces the numbers, when one does.

    Args:
        fn: The learner's loss function.
        mode: ``"code"`` (default) or ``"paper"``: which form ``fn`` implements.
        raise_on_failure: Raise :class:`ATLossCheckError` with the explanation (default); with
            ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).

    Raises:
        ATLossCheckError: The loss is wrong (the message says how), unless
            ``raise_on_failure=False``.
        ValueError: ``mode`` is neither ``"code"`` nor ``"paper"``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'code' or 'paper', got {mode!r}.")
    return run_check(fn, _CHECKS[mode], raise_on_failure=raise_on_failure, verbose=verbose)

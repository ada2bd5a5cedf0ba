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

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .messages import report_failure, scalar_loss_problem, within, wrap_message

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
    dead: bool = False  # one sample's student map is all zeros

    def describe(self) -> str:
        s, t = self.student, self.teacher
        sign = "" if self.relu else "signed features, "
        dead = "one all-zero student feature map, " if self.dead else ""
        return (
            f"({dead}{sign}batch {self.batch}, student {s[0]}x{s[1]}x{s[2]}, teacher "
            f"{t[0]}x{t[1]}x{t[2]}, p={self.p:g})"
        )

    @property
    def resized(self) -> bool:
        return self.student[1:] != self.teacher[1:]


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
    _Case(4, (8, 6, 6), (16, 6, 6), 2.0, dead=True),
)


def _make_inputs(case: _Case, index: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(2000 + index)
    s = torch.randn(case.batch, *case.student, generator=gen, dtype=torch.float64)
    t = torch.randn(case.batch, *case.teacher, generator=gen, dtype=torch.float64)
    if case.relu:
        s, t = s.clamp_min(0.0), t.clamp_min(0.0)
    if case.dead:
        s[0] = 0.0
    return s, t


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
_NORMS = ("l2", "none", "l1", "batch")
_ABS = (True, False)
_REDUCTIONS = ("mean_sq", "norm", "sum_sq", "total_sq", "mean_abs")
_RESIZES = ("pool features", "pool maps", "upsample")

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
    ("abs", False): (
        "F^p is taken without the absolute value: for odd p a negative activation then lowers "
        "the attention. Use feature.abs().pow(p) (pre-activation features can be negative)."
    ),
    ("mode", "norm"): (
        "you computed the paper's form, the mean over samples of the L2 norm ||Q_s - Q_t||_2; "
        "the code form asked for is the mean over samples and positions of the squared "
        "difference, (q_s - q_t).pow(2).mean()."
    ),
    ("mode", "mean_sq"): (
        "you computed the code form, the mean of the squared differences; the paper's form "
        "asked for is the mean over samples of the (not squared) L2 norm, "
        "(q_s - q_t).norm(dim=1).mean()."
    ),
    ("mode", "sum_sq"): (
        "the squared differences are summed over positions (and averaged over samples): take "
        "the mean over positions too, (q_s - q_t).pow(2).mean(); the sum is larger by H*W."
    ),
    ("mode", "total_sq"): (
        "the squared differences are summed over samples and positions: average over both, "
        "(q_s - q_t).pow(2).mean()."
    ),
    ("mode", "mean_abs"): (
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
    norm: str = "l2"
    use_abs: bool = True
    reduction: str = "mean_sq"
    resize: str = "pool features"

    def bugs(self, correct: _Variant) -> list[tuple[str, object]]:
        found: list[tuple[str, object]] = []
        for name, key in (("resize", "resize"), ("norm", "norm"), ("abs", "use_abs")):
            if getattr(self, key) != getattr(correct, key):
                found.append((name, getattr(self, key)))
        if self.reduction != correct.reduction:
            found.append(("mode", self.reduction))
        return found

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


def _variants(mode: str) -> tuple[_Variant, list[_Variant]]:
    correct = _Variant(reduction="mean_sq" if mode == "code" else "norm")
    every = [
        _Variant(n, a, r, z)
        for n, a, r, z in itertools.product(_NORMS, _ABS, _REDUCTIONS, _RESIZES)
        if _Variant(n, a, r, z) != correct
    ]
    return correct, sorted(every, key=lambda v: len(v.bugs(correct)))


# ----------------------------------------------------------------------------------------------
# the check
# ----------------------------------------------------------------------------------------------
def _fail(message: str, raise_on_failure: bool) -> bool:
    return report_failure("check_at_loss", message, ATLossCheckError, raise_on_failure)


def _close(got: float, expected: float) -> bool:
    return within(got, expected, atol=ATOL, rtol=RTOL)


def _diagnose(got: list[float], cases: list[tuple[_Case, Tensor, Tensor]], mode: str) -> str | None:
    """Name the simplest variant reproducing every value, or ``None``."""
    correct, variants = _variants(mode)
    for variant in variants:
        if all(
            _close(g, float(variant.value(s, t, case.p)))
            for g, (case, s, t) in zip(got, cases, strict=True)
        ):
            hints = [_HINTS[bug] for bug in variant.bugs(correct)]
            if len(hints) == 1:
                return f"your loss reproduces a typical mistake: {hints[0]}"
            listed = "\n".join(f"  {n}. {h}" for n, h in enumerate(hints, 1))
            return f"your loss reproduces {len(hints)} typical mistakes at once:\n{listed}"
    return None


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
    cases = [(case, *_make_inputs(case, i)) for i, case in enumerate(_CASES)]
    got: list[float] = []
    for case, s, t in cases:
        s32, t32 = s.float(), t.float()
        s_in, t_in = s32.clone(), t32.clone()
        try:
            out = fn(s_in, t_in, case.p)
        except Exception as exc:  # the learner's code may raise anything
            hint = (
                " The two feature maps have different spatial sizes here: first shrink the "
                "larger one to the smaller one's size with F.adaptive_avg_pool2d."
                if case.resized
                else ""
            )
            return _fail(
                f"calling fn(student_feature, teacher_feature, p) on {case.describe()} raised "
                f"{type(exc).__name__}: {exc}.{hint}",
                raise_on_failure,
            )
        if not torch.equal(s_in, s32) or not torch.equal(t_in, t32):
            return _fail(
                "your function changed its input tensors in place (e.g. `f.pow_(2)` or "
                "`f /= n`); compute new tensors instead.",
                raise_on_failure,
            )
        problem = scalar_loss_problem(
            out,
            case.describe(),
            per_sample=(case.batch,),
            per_sample_hint=" It looks like one value per sample: average over the batch.",
        )
        if problem is not None:
            return _fail(problem, raise_on_failure)
        got.append(float(out.detach().double()))

    expected = [float(reference_at_loss(s, t, case.p, mode)) for case, s, t in cases]
    normal = [i for i, (case, _, _) in enumerate(cases) if not case.dead]
    wrong_normal = [i for i in normal if not _close(got[i], expected[i])]
    if wrong_normal:
        diagnosis = _diagnose([got[i] for i in normal], [cases[i] for i in normal], mode)
        i = wrong_normal[0]
        ratio = f" (ratio {got[i] / expected[i]:.4g})" if expected[i] != 0 else ""
        detail = (
            f"on {cases[i][0].describe()} it returned {got[i]:.6g}, the AT loss is "
            f"{expected[i]:.6g}{ratio}."
        )
        if diagnosis is None:
            diagnosis = (
                "the values match none of the typical mistakes. Check each step: shrink the "
                "larger feature map to the smaller size (F.adaptive_avg_pool2d), take "
                "q = f.abs().pow(p).sum(dim=1).flatten(1) for each, normalise each row "
                "(F.normalize(q, dim=1)), then "
                + (
                    "(q_s - q_t).pow(2).mean()."
                    if mode == "code"
                    else "(q_s - q_t).norm(dim=1).mean()."
                )
            )
        return _fail(f"{diagnosis}\n  For example, {detail}", raise_on_failure)

    wrong_dead = [
        i for i in range(len(cases)) if i not in normal and not _close(got[i], expected[i])
    ]
    if wrong_dead:
        i = wrong_dead[0]
        return _fail(
            f"correct on ordinary features, but on {cases[i][0].describe()} it returned "
            f"{got[i]:.6g} instead of {expected[i]:.6g}. A stage whose activations are all zero "
            "for an image (a dead ReLU stage) gives a map of zeros, and q / q.norm() is then "
            "0 / 0 = nan. Use F.normalize(q, dim=1), which divides by max(norm, eps).",
            raise_on_failure,
        )

    for case, s, t in cases[:3]:
        s_in = s.float().requires_grad_(True)
        out = fn(s_in, t.float(), case.p)
        if not out.requires_grad:
            return _fail(
                "the loss is not differentiable with respect to the student's feature (no "
                "gradient flows back): avoid .detach(), .item(), .numpy() and torch.no_grad() "
                "on the student's side.",
                raise_on_failure,
            )
        (grad,) = torch.autograd.grad(out.sum(), s_in)
        s_ref = s.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(reference_at_loss(s_ref, t, case.p, mode), s_ref)
        if not torch.allclose(grad.double(), ref, rtol=1e-3, atol=1e-7):
            return _fail(
                f"the values are right but the gradient with respect to the student's feature "
                f"is not, on {case.describe()} (max error "
                f"{float((grad.double() - ref).abs().max()):.3g}). Do not detach any part of the "
                "student's computation.",
                raise_on_failure,
            )

    if verbose:
        form = "code form" if mode == "code" else "paper's form"
        print(
            wrap_message(
                f"✓ check_at_loss: your attention-transfer loss ({form}) matches the reference "
                f"on {len(cases)} cases (different channel counts, student or teacher larger, "
                "non-square maps, p = 1, 2 and 3, an all-zero feature map), and so does its "
                "gradient. Well done!"
            )
        )
    return True

r"""Chapter 3 (relation-based knowledge) coursework: check a learner's RKD distance and SP losses.

>>> import torch
>>> import torch.nn.functional as F
>>> def my_sp_loss(fs, ft):
...     fs, ft = fs.flatten(1), ft.flatten(1)
...     gs, gt = F.normalize(fs @ fs.T, dim=1), F.normalize(ft @ ft.T, dim=1)
...     return (gs - gt).pow(2).sum() / fs.shape[0] ** 2
>>> check_sp_loss(my_sp_loss)  # doctest: +ELLIPSIS
✓ check_sp_loss: your SP loss matches the reference ...
True

Both references are written here from scratch in float64 (explicit differences of every pair
of rows, explicit Huber loss, explicit row norms), independently of
:mod:`kdtutor.losses.relation`:

* RKD's distance-wise loss (Park et al. 2019), with :math:`\mu` the mean of the non-zero
  pairwise distances of the batch and :math:`\ell_1` the Huber loss with :math:`\delta = 1`,

  .. math::
      \mathcal{L}_{RKD\text{-}D} = \frac{1}{B^2}\sum_{i,j}
          \ell_1\Big(\frac{\|s_i - s_j\|}{\mu_s},\ \frac{\|t_i - t_j\|}{\mu_t}\Big);

* the similarity-preserving loss (Tung & Mori 2019), with :math:`F` the features flattened to
  ``(B, D)`` and :math:`\tilde G` the Gram matrix :math:`F F^\top` with its rows divided by
  their L2 norms (a zero row stays zero),

  .. math:: \mathcal{L}_{SP} = \frac{1}{B^2}\,\big\|\tilde G_s - \tilde G_t\big\|_F^2 .

When a learner's values disagree, the checker tries the typical mistakes (squared distances,
no normalisation or the wrong mean, MSE or L1 instead of Huber, the wrong average; a Gram
matrix without row normalisation, cosine similarities instead, a Frobenius norm that is not
squared, the wrong average) and names the simplest combination that reproduces the numbers.
It also checks the gradient with respect to the student's features, and that the loss stays
finite where a naive implementation divides by zero (two samples with the same embedding for
RKD, a sample whose features are all zero for SP).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .engine import LossCheck, mistakes_from, run_check

__all__ = [
    "RelationCheckError",
    "check_rkd_distance_loss",
    "check_sp_loss",
    "reference_rkd_distance_loss",
    "reference_sp_loss",
]

RelationLossFn = Callable[[Tensor, Tensor], Tensor]

RTOL = 1e-4
ATOL = 1e-7


class RelationCheckError(AssertionError):
    """Raised by this module's checks when the learner's loss is wrong; the message says why."""


@dataclass(frozen=True)
class _Case:
    student_shape: tuple[int, ...]
    teacher_shape: tuple[int, ...]
    student_scale: float = 1.0
    kind: str = "random"  # random | outlier | duplicate | zero-row
    relu: bool = False

    @property
    def batch(self) -> int:
        return self.student_shape[0]

    @property
    def hard(self) -> bool:
        """Where a naive implementation divides by zero."""
        return self.kind in ("duplicate", "zero-row")

    def describe(self) -> str:
        extra = {
            "random": "",
            "outlier": ", one far-away student sample",
            "duplicate": ", two samples with the same student embedding",
            "zero-row": ", one sample whose student features are all zero",
        }[self.kind]
        scale = f", student features x{self.student_scale:g}" if self.student_scale != 1 else ""
        return (
            f"(student {tuple(self.student_shape)}, teacher {tuple(self.teacher_shape)}"
            f"{scale}{extra})"
        )

    def inputs(self, index: int) -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(2000 + index)
        s = torch.randn(self.student_shape, generator=gen, dtype=torch.float64)
        t = torch.randn(self.teacher_shape, generator=gen, dtype=torch.float64)
        if self.relu:
            s, t = s.clamp_min(0), t.clamp_min(0)
        if self.kind == "outlier":
            s[0] += 30.0
        elif self.kind == "duplicate":
            s[1] = s[0]
        elif self.kind == "zero-row":
            s[2] = 0.0
        return s * self.student_scale, t


# ----------------------------------------------------------------------------------------------
# what the two checks share
# ----------------------------------------------------------------------------------------------
def _explain_error(case: _Case, exc: Exception) -> str:
    hint = ""
    if len(case.student_shape) > 2:
        hint = (
            " These are feature maps (B, C, H, W): flatten each to (B, C*H*W) first, "
            "e.g. features.flatten(1)."
        )
    elif case.student_shape[1] != case.teacher_shape[1]:
        hint = (
            " Student and teacher widths differ here: a relation compares samples within "
            "one network, so compute the student's B x B matrix from the student alone and "
            "the teacher's from the teacher alone, never student against teacher."
        )
    return f"{str(exc).splitlines()[0] if str(exc) else ''}.{hint}"


def _feature_map_hint(wrong: Sequence[_Case]) -> str | None:
    if all(len(case.student_shape) > 2 for case in wrong):
        return (
            "your loss is right on (B, D) inputs but not on feature maps (B, C, H, W): "
            "flatten each network's features to (B, C*H*W) first (features.flatten(1))."
        )
    return None


def _grads_agree(got: Tensor, ref: Tensor) -> bool:
    return torch.allclose(got, ref, rtol=1e-3, atol=1e-6 * float(ref.abs().max()))


def _relation_check(**specific: Any) -> LossCheck:
    """A :class:`LossCheck` with what both of this module's checks share."""
    return LossCheck(
        error=RelationCheckError,
        call="fn(student, teacher)",
        explain_error=_explain_error,
        rtol=RTOL,
        atol=ATOL,
        in_place=(
            "your function changed its input tensors in place (e.g. `s /= mean`); compute new "
            "tensors instead (`s / mean`)."
        ),
        scalar_advice=": average as the definition says.",
        ordinary="batches",
        finite_gradient_on_hard_cases=True,
        student="the student's features",
        grads_agree=_grads_agree,
        no_gradient_note=" (the teacher's side may be detached)",
        wrong_gradient_note=" (its normaliser included)",
        **specific,
    )


# ----------------------------------------------------------------------------------------------
# RKD distance-wise loss
# ----------------------------------------------------------------------------------------------
def _distances(x: Tensor, squared: bool = False) -> Tensor:
    """Euclidean distances between all rows of ``x`` (float64), differentiable everywhere."""
    sq = (x[:, None, :] - x[None, :, :]).pow(2).sum(dim=2)
    if squared:
        return sq
    return torch.where(sq > 0, sq.clamp_min(1e-300).sqrt(), torch.zeros_like(sq))


def _huber(x: Tensor) -> Tensor:
    a = x.abs()
    return torch.where(a < 1, 0.5 * x * x, a - 0.5)


@dataclass(frozen=True)
class _RKDVariant:
    """One way of computing the loss; the defaults are the correct way."""

    distance: str = "euclidean"
    normaliser: str = "mean of non-zero"
    criterion: str = "huber"
    reduction: str = "B^2"

    def value(self, s: Tensor, t: Tensor) -> Tensor:
        psi_s, psi_t = self.psi(s.flatten(1)), self.psi(t.flatten(1)).detach()
        diff = psi_s - psi_t
        elementwise = {
            "huber": _huber,
            "mse": lambda d: d * d,
            "half mse": lambda d: 0.5 * d * d,
            "l1": torch.abs,
        }[self.criterion](diff)
        b = s.shape[0]
        divisor = {"B^2": b * b, "pairs": b * (b - 1), "sum": 1}[self.reduction]
        return elementwise.sum() / divisor

    def psi(self, x: Tensor) -> Tensor:
        d = _distances(x, squared=self.distance == "squared")
        if self.normaliser == "mean of non-zero":
            return d / (d.sum() / (d > 0).sum())
        if self.normaliser == "mean over all":
            return d / d.mean()
        if self.normaliser == "max":
            return d / d.max()
        return d


_RKD_HINTS = {
    ("distance", "squared"): (
        "you use squared distances ||s_i - s_j||^2; RKD's potential is the distance itself: take "
        "the square root (clamped away from zero, see below)."
    ),
    ("normaliser", "none"): (
        "the distances are not normalised: divide each network's distance matrix by its own "
        "mean distance mu, which makes the loss blind to the scale of either embedding."
    ),
    ("normaliser", "mean over all"): (
        "mu is the mean over all B x B entries, zeros of the diagonal included (d.mean()); RKD "
        "averages the non-zero distances only: d.sum() / (d > 0).sum(), or d[d > 0].mean()."
    ),
    ("normaliser", "max"): (
        "you divide by the largest distance (that is IRG's normalisation); RKD divides by the "
        "mean of the non-zero distances."
    ),
    ("criterion", "mse"): (
        "you use the squared error (F.mse_loss); RKD uses the Huber loss (F.smooth_l1_loss), "
        "which is 0.5 x^2 for |x| < 1 and |x| - 0.5 beyond, so a few outlying pairs do not "
        "dominate."
    ),
    ("criterion", "half mse"): (
        "you use 0.5 (psi_s - psi_t)^2 everywhere; that is the Huber loss only for differences "
        "below 1. Beyond, Huber grows like |x| - 0.5: use F.smooth_l1_loss."
    ),
    ("criterion", "l1"): (
        "you use the absolute error (F.l1_loss); RKD uses the Huber loss (F.smooth_l1_loss), "
        "quadratic for differences below 1."
    ),
    ("reduction", "pairs"): (
        "you average over the B(B-1) pairs i != j, as the paper writes it; the definition here "
        "(and RKD's and RepDistiller's code) averages over all B x B entries, the zero diagonal "
        "included, i.e. F.smooth_l1_loss's default mean. The two differ by a factor B/(B-1)."
    ),
    ("reduction", "sum"): (
        "you sum over the pairs: average over all B x B entries (reduction='mean')."
    ),
}

_RKD_CASES = (
    _Case((8, 16), (8, 32)),
    _Case((16, 8), (16, 64), student_scale=10.0),
    _Case((32, 4), (32, 4)),
    _Case((6, 3), (6, 5), kind="outlier"),
    _Case((64, 32), (64, 128), student_scale=0.1),
    _Case((3, 2), (3, 7)),
    _Case((10, 6), (10, 12), kind="duplicate"),
)


def reference_rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD's distance-wise loss computed from scratch in float64 (see the module docstring)."""
    return _RKDVariant().value(student.double(), teacher.double())


def _rkd_off_diagonal_mean(s: Tensor, t: Tensor) -> Tensor:
    """The reference with mu the mean over the B(B-1) pairs i != j, zero distances included."""
    b = s.shape[0]

    def psi(x: Tensor) -> Tensor:
        d = _distances(x.flatten(1))
        return d / (d.sum() / (b * (b - 1)))

    return _huber(psi(s) - psi(t)).sum() / (b * b)


def _rkd_unmatched_hint(wrong: Sequence[_Case]) -> str | None:
    if all(case.batch > 25 for case in wrong):
        return (
            "your loss is right on small batches but not on those of more than 25 samples. If "
            "you use torch.cdist: from 25 rows on it computes the distances through a matrix "
            "product in float32, and the diagonal is then not exactly zero, so d[d > 0] "
            "counts B tiny distances in the mean. Pass "
            "compute_mode='donot_use_mm_for_euclid_dist', or zero the diagonal yourself."
        )
    return _feature_map_hint(wrong)


_RKD_CHECK = _relation_check(
    name="check_rkd_distance_loss",
    cases=_RKD_CASES,
    reference=reference_rkd_distance_loss,
    # with a zero distance off the diagonal, the mean over the pairs i != j is fine too
    also_right=_rkd_off_diagonal_mean,
    mistakes=mistakes_from(
        _RKDVariant(),
        _RKD_HINTS,
        distance=("euclidean", "squared"),
        normaliser=("mean of non-zero", "mean over all", "none", "max"),
        criterion=("huber", "mse", "half mse", "l1"),
        reduction=("B^2", "pairs", "sum"),
    ),
    unmatched_hint=_rkd_unmatched_hint,
    unmatched=(
        "the values match none of the typical mistakes. Check each step, for each network "
        "separately: the B x B Euclidean distances between its samples, divided by their "
        "mean over the non-zero entries; then the Huber loss (F.smooth_l1_loss) between the "
        "two matrices, averaged over all B x B entries."
    ),
    hard_hint=(
        "Two samples at distance 0 make sqrt(0) appear, whose derivative is infinite: "
        "clamp the squared distances before the square root (sq.clamp_min(1e-12).sqrt()) "
        "and set the diagonal to zero afterwards, or use torch.cdist or "
        "(x[:, None] - x[None]).norm(dim=2), whose gradients are defined at 0. Do not "
        "count the zero distances in the mean."
    ),
    success=(
        f"your RKD distance loss matches the reference on {len(_RKD_CASES)} batches (3 to "
        "64 samples, scaled embeddings, an outlier, two identical samples), and so does its "
        "gradient."
    ),
)


def check_rkd_distance_loss(
    fn: RelationLossFn, *, raise_on_failure: bool = True, verbose: bool = True
) -> bool:
    r"""Check a learner's ``fn(student, teacher)`` against RKD's distance-wise loss.

    ``fn`` takes the student's and the teacher's embeddings of the same ``B`` samples,
    ``(B, D_s)`` and ``(B, D_t)`` (``D_s`` and ``D_t`` may differ), and returns the scalar
    :math:`\frac{1}{B^2}\sum_{i,j} \ell_1(\|s_i - s_j\| / \mu_s, \|t_i - t_j\| / \mu_t)`, with
    :math:`\mu` the mean of the non-zero distances and :math:`\ell_1` the Huber loss
    (``F.smooth_l1_loss``), differentiable with respect to ``student``. It is called on float32
    batches of 3 to 64 samples (scaled embeddings, an outlier, two identical samples) and
    compared with an independent float64 reference (relative tolerance ``1e-4``); so is its
    gradient. On a mismatch the message names the typical mistake that reproduces the numbers,
    when one does.

    Args:
        fn: The learner's loss function.
        raise_on_failure: Raise :class:`RelationCheckError` with the explanation (default);
            with ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).
    """
    return run_check(fn, _RKD_CHECK, raise_on_failure=raise_on_failure, verbose=verbose)


# ----------------------------------------------------------------------------------------------
# SP loss
# ----------------------------------------------------------------------------------------------
def _row_normalise(g: Tensor) -> Tensor:
    norms = g.pow(2).sum(dim=1, keepdim=True).sqrt()
    return torch.where(norms > 0, g / norms.clamp_min(1e-300), torch.zeros_like(g))


@dataclass(frozen=True)
class _SPVariant:
    """One way of computing the loss; the defaults are the correct way."""

    normalisation: str = "rows of G"
    power: str = "squared"
    reduction: str = "B^2"

    def similarity(self, f: Tensor) -> Tensor:
        f = f.flatten(1)
        if self.normalisation == "cosine":
            f = _row_normalise(f)
        g = f @ f.t()
        if self.normalisation == "rows of G":
            return _row_normalise(g)
        if self.normalisation == "whole G":
            return g / g.pow(2).sum().sqrt()
        return g

    def value(self, s: Tensor, t: Tensor) -> Tensor:
        sq = (self.similarity(s) - self.similarity(t).detach()).pow(2).sum()
        total = sq if self.power == "squared" else sq.sqrt()
        b = s.shape[0]
        return total / {"B^2": b * b, "B": b, "sum": 1}[self.reduction]


_SP_HINTS = {
    ("normalisation", "none"): (
        "the Gram matrix G = F F^T is not normalised: divide each of its rows by the row's L2 "
        "norm (F.normalize(G, dim=1)). Without it the loss depends on the scale of the "
        "features, and the student's and teacher's scales are unrelated."
    ),
    ("normalisation", "cosine"): (
        "you normalise the features before the product, which gives cosine similarities; SP "
        "normalises the rows of the Gram matrix G = F F^T after the product "
        "(F.normalize(F @ F.T, dim=1))."
    ),
    ("normalisation", "whole G"): (
        "you divide G by its whole Frobenius norm; SP divides each row of G by that row's L2 "
        "norm (F.normalize(G, dim=1))."
    ),
    ("power", "norm"): (
        "you take the Frobenius norm ||G_s - G_t||_F; SP uses its square, the sum of squared "
        "differences."
    ),
    ("reduction", "B"): (
        "you divide by B; SP divides the squared Frobenius norm by B^2 (equivalently, "
        "F.mse_loss(G_s, G_t), the mean over the B x B entries)."
    ),
    ("reduction", "sum"): (
        "you do not divide by anything: SP divides the squared Frobenius norm by B^2 "
        "(equivalently, F.mse_loss(G_s, G_t))."
    ),
}

_SP_CASES = (
    _Case((8, 4, 3, 3), (8, 16, 2, 2), relu=True),
    _Case((16, 20), (16, 50)),
    _Case((32, 8, 4, 4), (32, 32, 2, 2), student_scale=10.0, relu=True),
    _Case((4, 6), (4, 3), student_scale=0.01),
    _Case((64, 32), (64, 128), relu=True),
    _Case((1, 5), (1, 8)),
    _Case((12, 6, 2, 2), (12, 10), kind="zero-row", relu=True),
)


def reference_sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """The SP loss computed from scratch in float64 (see the module docstring)."""
    return _SPVariant().value(student.double(), teacher.double())


_SP_CHECK = _relation_check(
    name="check_sp_loss",
    cases=_SP_CASES,
    reference=reference_sp_loss,
    mistakes=mistakes_from(
        _SPVariant(),
        _SP_HINTS,
        normalisation=("rows of G", "none", "cosine", "whole G"),
        power=("squared", "norm"),
        reduction=("B^2", "B", "sum"),
    ),
    unmatched_hint=_feature_map_hint,
    unmatched=(
        "the values match none of the typical mistakes. Check each step, for each network "
        "separately: flatten the features to (B, D), take G = F @ F.T (B x B), divide each "
        "row of G by its L2 norm; then sum the squared differences of the two matrices and "
        "divide by B^2."
    ),
    hard_hint=(
        "A sample whose features are all zero (a dead ReLU does that) has a zero row in "
        "G, and dividing it by its norm computes 0 / 0. Use F.normalize(G, dim=1), which "
        "clamps the norm with a small eps, or divide by "
        "G.norm(dim=1, keepdim=True).clamp_min(1e-12). If you take the square root of a "
        "sum of squares yourself, clamp the sum before the square root: the derivative "
        "of sqrt is infinite at 0."
    ),
    success=(
        f"your SP loss matches the reference on {len(_SP_CASES)} batches (1 to 64 samples, "
        "feature maps and vectors, scaled features, a sample of all-zero features), and so "
        "does its gradient."
    ),
)


def check_sp_loss(
    fn: RelationLossFn, *, raise_on_failure: bool = True, verbose: bool = True
) -> bool:
    r"""Check a learner's ``fn(student_features, teacher_features)`` against the SP loss.

    ``fn`` takes the student's and teacher's features of the same ``B`` samples, of any shapes
    ``(B, ...)`` (feature maps ``(B, C, H, W)`` included; the two may differ), and returns the
    scalar :math:`\frac{1}{B^2}\|\tilde G_s - \tilde G_t\|_F^2` with :math:`\tilde G` the
    row-normalised Gram matrix of the flattened features, differentiable with respect to the
    student's features. It is called on float32 batches of 1 to 64 samples (feature maps,
    scaled features, a sample whose features are all zero) and compared with an independent
    float64 reference (relative tolerance ``1e-4``); so is its gradient. On a mismatch the
    message names the typical mistake that reproduces the numbers, when one does.

    Args:
        fn: The learner's loss function.
        raise_on_failure: Raise :class:`RelationCheckError` with the explanation (default);
            with ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).
    """
    return run_check(fn, _SP_CHECK, raise_on_failure=raise_on_failure, verbose=verbose)

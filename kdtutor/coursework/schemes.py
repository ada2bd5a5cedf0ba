r"""Chapter 4 (distillation schemes) coursework: check a learner's DML and CS-KD losses.

**Deep mutual learning** (Zhang, Xiang, Hospedales, Lu, 2018) trains two peers at once, each
on the labels and on the other's prediction. A learner writes
``my_dml_losses(logits_1, logits_2, y)`` returning both peers' losses and runs

>>> import torch.nn.functional as F
>>> def my_dml_losses(logits_1, logits_2, y):
...     def kl(target, z):  # KL(softmax(target) || softmax(z)), target detached
...         p = F.softmax(target.detach(), dim=1)
...         return F.kl_div(F.log_softmax(z, dim=1), p, reduction="batchmean")
...     loss_1 = F.cross_entropy(logits_1, y) + kl(logits_2, logits_1)
...     loss_2 = F.cross_entropy(logits_2, y) + kl(logits_1, logits_2)
...     return loss_1, loss_2
>>> check_dml_loss(my_dml_losses)  # doctest: +ELLIPSIS
✓ check_dml_loss: your two DML losses match the reference ...
True

With :math:`p_k = \mathrm{softmax}(z_k)` (the paper's :math:`T = 1`) the losses are

.. math::
    \mathcal{L}_1 = \mathrm{CE}(z_1, y) + \mathrm{KL}\big(\bar p_2 \,\|\, p_1\big), \qquad
    \mathcal{L}_2 = \mathrm{CE}(z_2, y) + \mathrm{KL}\big(\bar p_1 \,\|\, p_2\big),

the KL divergences summed over the classes and averaged over the batch, and
:math:`\bar p` detached: peer 1 learns from peer 2's prediction, but its loss sends no
gradient into peer 2 (:func:`kdtutor.losses.schemes.mutual_kl`).

**Class-wise self-knowledge distillation** (Yun, Park, Lee, Shin, 2020) teaches a network
with its own prediction on another image of the same class. ``my_cskd_loss(logits,
pair_logits, y, T, lam)`` takes the logits of a batch of anchors :math:`x_i`, those of their
partners :math:`x'_i` (same labels :math:`y_i`) and returns

.. math::
    \mathcal{L} = \mathrm{CE}(z(x), y)
        + \lambda\, T^2\, \frac1B \sum_{i=1}^{B}
          \mathrm{KL}\big(p^T(x'_i) \,\|\, p^T(x_i)\big), \qquad
    p^T = \mathrm{softmax}(z / T),

with :math:`p^T(x')` detached and the cross entropy on the anchors only, as in the authors'
code (alinlab/cs-kd, ``train.py``: the partners' forward runs under ``torch.no_grad()``, and
the KL is summed, times :math:`T^2`, divided by the number of anchors).

>>> def my_cskd_loss(logits, pair_logits, y, T, lam):
...     p_pair = F.softmax(pair_logits.detach() / T, dim=1)
...     log_p = F.log_softmax(logits / T, dim=1)
...     kl = F.kl_div(log_p, p_pair, reduction="batchmean")
...     return F.cross_entropy(logits, y) + lam * T**2 * kl
>>> check_cskd_loss(my_cskd_loss)  # doctest: +ELLIPSIS
✓ check_cskd_loss: your CS-KD loss matches the reference ...
True

Both references are written here from scratch in float64 (explicit log-sum-exp, explicit sums
over the classes and means over the batch), independently of :mod:`kdtutor.losses`. When a
learner's values disagree, the checker tries the typical mistakes (the KL the wrong way round,
a cross entropy instead of the KL, an element-wise mean, a sum over the batch, a missing
:math:`T^2`, no temperature, the cross entropy of the wrong peer or on the partners too,
``lam`` forgotten or on the whole loss) and names the one that reproduces the numbers. It
then checks the gradients, and that the target is detached: a loss that sends gradient into
the other peer's logits (DML) or into the partners' logits (CS-KD) is named as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ._float64 import (
    _HARD_HINT,
    _cross_entropy,
    _divergence,
    _log_softmax,
    _require_callable,
    _values_then_gradients,
)
from .engine import LossCheck, Mistake, Outcome, find_mistake, mistakes_from
from .messages import scalar_pair

__all__ = [
    "CSKDLossCheckError",
    "DMLLossCheckError",
    "check_cskd_loss",
    "check_dml_loss",
    "reference_cskd_loss",
    "reference_dml_losses",
]

DMLLossFn = Callable[[Tensor, Tensor, Tensor], Sequence[Tensor]]
CSKDLossFn = Callable[[Tensor, Tensor, Tensor, float, float], Tensor]

RTOL = 1e-4
ATOL = 1e-6


class DMLLossCheckError(AssertionError):
    """Raised by :func:`check_dml_loss` when the learner's losses are wrong; the message says
    why."""


class CSKDLossCheckError(AssertionError):
    """Raised by :func:`check_cskd_loss` when the learner's loss is wrong; the message says
    why."""


# ==============================================================================================
# DML
# ==============================================================================================
@dataclass(frozen=True)
class _DMLCase:
    batch: int
    classes: int
    scale_1: float
    scale_2: float
    hard: bool = False  # extreme logits

    def describe(self) -> str:
        kind = "extreme logits, " if self.hard else ""
        return f"({kind}batch {self.batch}, {self.classes} classes)"

    def inputs(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        gen = torch.Generator().manual_seed(3000 + index)
        z1 = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        z2 = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        y = torch.randint(self.classes, (self.batch,), generator=gen)
        return z1 * self.scale_1, z2 * self.scale_2, y


_DML_CASES: tuple[_DMLCase, ...] = (
    _DMLCase(1, 10, 2.0, 2.0),
    _DMLCase(7, 10, 2.0, 3.0),
    _DMLCase(32, 10, 3.0, 1.0),
    _DMLCase(64, 10, 1.0, 4.0),
    _DMLCase(16, 5, 1.0, 1.0),
    _DMLCase(8, 100, 2.0, 3.0),
    _DMLCase(4, 3, 1.0, 2.0),
    # extreme logits: naive log(softmax(...)) underflows to log(0) = -inf here
    _DMLCase(16, 10, 100.0, 100.0, hard=True),
    _DMLCase(8, 10, 1.0, 300.0, hard=True),
)
_DML_GRADIENT_CASES = range(1, 4)


@dataclass(frozen=True)
class _DMLVariant:
    """One way of computing peer ``peer``'s loss; the other fields' defaults are correct."""

    peer: int
    # in the order the hints list the errors
    ce: str = "own"  # "own", "none", "other"
    kind: str = "kl"
    direction: str = "other||self"
    reduction: str = "batchmean"

    def value(self, z1: Tensor, z2: Tensor, y: Tensor) -> Tensor:
        own, other = (z1, z2) if self.peer == 1 else (z2, z1)
        own, other = own.double(), other.double().detach()
        ce = {
            "own": _cross_entropy(own, y),
            "none": torch.zeros((), dtype=torch.float64),
            "other": _cross_entropy(other, y),
        }[self.ce]
        log_own, log_other = _log_softmax(own), _log_softmax(other)
        if self.direction == "other||self":
            log_target, log_input = log_other, log_own
        else:
            log_target, log_input = log_own, log_other
        return ce + _divergence(log_target, log_input, self.kind, self.reduction)


def reference_dml_losses(
    logits_1: Tensor, logits_2: Tensor, target: Tensor
) -> tuple[Tensor, Tensor]:
    """Both peers' DML losses computed from scratch in float64 (see the module docstring)."""
    return (
        _DMLVariant(1).value(logits_1, logits_2, target),
        _DMLVariant(2).value(logits_1, logits_2, target),
    )


def _dml_hints(k: int) -> dict[tuple[str, str], str]:
    """What to say about each error in peer ``k``'s loss."""
    other = 3 - k
    return {
        ("ce", "none"): (
            f"peer {k}'s loss has no cross entropy with the labels: add "
            f"F.cross_entropy(logits_{k}, y). Each DML peer learns the labels and its peer's "
            "prediction; on the KL alone two untrained peers could agree on anything."
        ),
        ("ce", "other"): (
            f"peer {k}'s loss uses peer {other}'s cross entropy: each peer has its own, "
            f"F.cross_entropy(logits_{k}, y)."
        ),
        ("kind", "cross-entropy"): (
            f"peer {k}'s mutual term is the cross entropy -sum p_{other} log p_{k}, not the KL "
            f"divergence: it is larger by the entropy of p_{other}. The gradients agree (that "
            f"entropy does not depend on peer {k}), but the KL is 0 when the peers agree; "
            f"subtract sum p_{other} log p_{other}, or use F.kl_div."
        ),
        ("kind", "probabilities into kl_div"): (
            f"peer {k}'s F.kl_div is given probabilities as its first argument; it expects "
            f"log-probabilities: pass F.log_softmax(logits_{k}, dim=1)."
        ),
        ("direction", "self||other"): (
            f"peer {k}'s KL is the wrong way round: you compute KL(p_{k} || p_{other}). Peer "
            f"{k} learns from peer {other}, so peer {other}'s prediction is the target: "
            f"KL(p_{other} || p_{k}) = F.kl_div(F.log_softmax(logits_{k}, 1), "
            f"F.softmax(logits_{other}.detach(), 1), reduction='batchmean')."
        ),
        ("reduction", "mean"): (
            f"peer {k}'s KL is averaged over every element (reduction='mean'), which also "
            "divides it by the number of classes K: sum over the classes and average over the "
            "batch ('batchmean')."
        ),
        ("reduction", "sum"): (
            f"peer {k}'s KL is summed over the batch (reduction='sum'): divide it by the batch "
            "size ('batchmean'), as the cross entropy is averaged."
        ),
    }


_DML_MISTAKES = {
    k: mistakes_from(
        _DMLVariant(k),
        _dml_hints(k),
        ce=("own", "none", "other"),
        kind=("kl", "cross-entropy", "probabilities into kl_div"),
        direction=("other||self", "self||other"),
        reduction=("batchmean", "mean", "sum"),
    )
    for k in (1, 2)
}


def _dml_steps(k: int) -> str:
    other = 3 - k
    return (
        f"peer {k}'s loss is F.cross_entropy(logits_{k}, y) plus the KL from peer {other}'s "
        f"detached softmax to peer {k}'s: sum p_{other} * (log p_{other} - log p_{k}) over the "
        f"classes, averaged over the batch (F.kl_div(F.log_softmax(logits_{k}, 1), "
        f"F.softmax(logits_{other}.detach(), 1), reduction='batchmean'))."
    )


def _dml_unpack(out: object, case: _DMLCase) -> tuple[Tensor, Tensor] | str:
    """The two scalar tensors, or the reason they are not."""
    return scalar_pair(
        out, ("loss_1", "loss_2"), case.describe(),
        purpose="one loss per peer (each peer is stepped on its own loss)", noun="loss",
        batch=case.batch,
    )  # fmt: skip


def _dml_explain_wrong(check: LossCheck, ordinary: Sequence[Outcome]) -> str:
    """The losses swapped or duplicated, or each wrong loss's mistake and its worst case."""
    close = check.close
    if all(close(o.got[0], o.expected[1]) and close(o.got[1], o.expected[0]) for o in ordinary):
        return (
            "the two losses are right but in the wrong order: return (loss_1, loss_2), "
            "peer 1's loss first."
        )
    for k in (1, 2):
        if all(close(o.got[0], o.expected[k - 1]) and close(o.got[1], o.expected[k - 1])
               for o in ordinary):  # fmt: skip
            other = 3 - k
            return (
                f"both values are peer {k}'s loss. Peer {other}'s loss is its own cross "
                f"entropy plus the KL from peer {k}'s detached prediction to peer {other}'s: "
                f"CE(logits_{other}, y) + KL(p_{k} || p_{other})."
            )
    wrong = {k: [o for o in ordinary if not close(o.got[k - 1], o.expected[k - 1])] for k in (1, 2)}
    bad = [k for k in (1, 2) if wrong[k]]
    found = {
        k: find_mistake(
            _DML_MISTAKES[k], [o.got[k - 1] for o in ordinary], [o.inputs for o in ordinary], close
        )
        for k in bad
    }
    index = {k: None if m is None else _DML_MISTAKES[k].index(m) for k, m in found.items()}
    if len(bad) == 2 and index[1] is not None and index[1] == index[2]:
        # one helper used for both peers: say it once, for peer 1
        return (
            "both losses make the same mistake (shown for peer 1; peer 2's loss has it with "
            f"1 and 2 swapped):\n  {_diagnosis(1, found[1])} "
            f"({_worst_case(1, wrong[1])})"
        )
    header = {
        (1,): "peer 1's loss is wrong (peer 2's is right):",
        (2,): "peer 2's loss is wrong (peer 1's is right):",
        (1, 2): "both losses are wrong:",
    }[tuple(bad)]
    messages = [header]
    for n, k in enumerate(bad, 1):
        messages.append(f"  {n}. {_diagnosis(k, found[k])} ({_worst_case(k, wrong[k])})")
    return "\n".join(messages)


def _diagnosis(k: int, mistake: Mistake | None) -> str:
    """What is wrong in peer ``k``'s loss, from the mistake that reproduces it (if any)."""
    if mistake is None:
        return f"peer {k}'s loss matches none of the typical mistakes; check each step: " + (
            _dml_steps(k)
        )
    if len(mistake.hints) == 1:
        return mistake.hints[0]
    return f"peer {k}'s loss has {len(mistake.hints)} mistakes at once: " + " ".join(
        f"({m}) {h}" for m, h in enumerate(mistake.hints, 1)
    )


def _worst_case(k: int, wrong: Sequence[Outcome]) -> str:
    """ "For example, ..." on the case where peer ``k``'s loss is furthest from the reference."""
    j = k - 1
    worst = max(wrong, key=lambda o: abs(o.got[j] - o.expected[j]) / (abs(o.expected[j]) + ATOL))
    return (
        f"For example, on {worst.case.describe()} it is {worst.got[j]:.6g}, the reference "
        f"{worst.expected[j]:.6g}."
    )


def _dml_explain_hard(check: LossCheck, outcome: Outcome) -> str:
    values = ", ".join(
        f"loss_{k} {got:.6g} instead of {expected:.6g}"
        for k, got, expected in zip((1, 2), outcome.got, outcome.expected, strict=True)
        if not check.close(got, expected)
    )
    return (
        f"correct on ordinary {check.ordinary}, but with {outcome.case.describe()} you return "
        f"{values}. {check.hard_hint}"
    )


def _dml_gradient_problem(fn: DMLLossFn) -> str | None:
    """Each peer's gradient: into its own logits as the reference's, none into the other's."""
    for index in _DML_GRADIENT_CASES:
        case = _DML_CASES[index]
        z1, z2, y = case.inputs(index)
        logits = (z1.float().requires_grad_(True), z2.float().requires_grad_(True))
        losses = fn(logits[0], logits[1], y.clone())
        if not all(z.requires_grad for z in logits):  # e.g. logits_2.detach_()
            return _DML_CHECK.in_place
        leaves = (z1.clone().requires_grad_(True), z2.clone().requires_grad_(True))
        reference = reference_dml_losses(leaves[0], leaves[1], y)
        for k in (1, 2):
            own, other = k - 1, 2 - k
            if not losses[own].requires_grad:
                return (
                    f"peer {k}'s loss is not differentiable with respect to logits_{k} (no "
                    "gradient flows back): avoid .detach(), .item(), .numpy() and "
                    f"torch.no_grad() on peer {k}'s own logits; detach only peer {3 - k}'s."
                )
            grads = torch.autograd.grad(losses[own], logits, retain_graph=True, allow_unused=True)
            leak = grads[other]
            if leak is not None and float(leak.abs().max()) > 0:
                return (
                    f"the values are right, but peer {k}'s loss sends gradient into peer "
                    f"{3 - k}'s logits (up to {float(leak.abs().max()):.3g} on "
                    f"{case.describe()}): peer {3 - k}'s prediction is peer {k}'s target and "
                    f"must be a constant in peer {k}'s loss. Detach it "
                    f"(F.softmax(logits_{3 - k}.detach(), dim=1)). Otherwise, when the two "
                    f"losses are back-propagated together, peer {k}'s KL also pulls peer "
                    f"{3 - k} towards peer {k}, and each network is trained by both losses "
                    "instead of its own."
                )
            got = grads[own]
            (expected,) = torch.autograd.grad(reference[own], leaves[own])
            if got is None or not torch.allclose(got.double(), expected, rtol=1e-3, atol=1e-6):
                error = (
                    "no gradient" if got is None
                    else f"max error {float((got.double() - expected).abs().max()):.3g}"
                )  # fmt: skip
                return (
                    f"the values are right but the gradient of peer {k}'s loss with respect to "
                    f"logits_{k} is not, on {case.describe()} ({error}). Do not detach any "
                    f"part of peer {k}'s own computation."
                )
    return None


_DML_CHECK = LossCheck(
    name="check_dml_loss",
    error=DMLLossCheckError,
    call="fn(logits_1, logits_2, y)",
    cases=_DML_CASES,
    reference=reference_dml_losses,
    rtol=RTOL,
    atol=ATOL,
    terms=("loss_1", "loss_2"),
    read_output=_dml_unpack,
    explain_wrong=_dml_explain_wrong,
    explain_hard=_dml_explain_hard,
    in_place=(
        "your function changed its input tensors in place (e.g. `logits_1 -= ...` or "
        "`logits_2.detach_()`); compute new tensors instead (`logits_2.detach()`)."
    ),
    ordinary="logits",
    hard_hint=_HARD_HINT,
    student="the peers' logits",
    gradient_cases=range(0),  # both peers' gradients are checked by _dml_gradient_problem
    success=(
        f"your two DML losses match the reference on {len(_DML_CASES)} cases (batch 1 to 64, "
        "3 to 100 classes, extreme logits included), each one's gradient too, and each peer's "
        "target is detached."
    ),
)


def check_dml_loss(fn: DMLLossFn, *, raise_on_failure: bool = True, verbose: bool = True) -> bool:
    r"""Check a learner's ``fn(logits_1, logits_2, y) -> (loss_1, loss_2)``: DML's two losses.

    Peer :math:`k`'s loss is :math:`\mathrm{CE}(z_k, y) + \mathrm{KL}(\bar p_l \| p_k)` at
    :math:`T = 1` (Zhang et al., 2018), with the other peer's prediction :math:`\bar p_l`
    detached (see the module docstring). Both losses must be scalar tensors. ``fn`` is called on
    float32 cases with batch sizes 1 to 64, 3 to 100 classes and extreme logits (where a naive
    ``log(softmax(...))`` underflows); the values are compared with an independent float64
    reference (relative tolerance ``1e-4``), term by term; then, for each peer, the gradient of
    its loss with respect to its own logits is compared with the reference's, and its gradient
    with respect to the other peer's logits must be zero (the target is detached). On a
    mismatch the message names the typical mistake that reproduces the numbers, peer by peer.

    Args:
        fn: The learner's function.
        raise_on_failure: Raise :class:`DMLLossCheckError` with the explanation (default); with
            ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).

    Raises:
        DMLLossCheckError: The losses are wrong (the message says how), unless
            ``raise_on_failure=False``.
        KDTutorError: ``fn`` is not callable.
    """
    _require_callable(fn, "check_dml_loss", "my_dml_losses(logits_1, logits_2, y)")
    return _values_then_gradients(
        fn, _DML_CHECK, _dml_gradient_problem, DMLLossCheckError, raise_on_failure, verbose
    )


# ==============================================================================================
# CS-KD
# ==============================================================================================
@dataclass(frozen=True)
class _CSKDCase:
    batch: int
    classes: int
    T: float
    lam: float
    scale: float
    pair_scale: float
    hard: bool = False  # extreme logits

    def describe(self) -> str:
        kind = "extreme logits, " if self.hard else ""
        return f"({kind}batch {self.batch}, {self.classes} classes, T={self.T:g}, lam={self.lam:g})"

    def inputs(self, index: int) -> tuple[Tensor, Tensor, Tensor, float, float]:
        gen = torch.Generator().manual_seed(4000 + index)
        z = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        zp = torch.randn(self.batch, self.classes, generator=gen, dtype=torch.float64)
        y = torch.randint(self.classes, (self.batch,), generator=gen)
        return z * self.scale, zp * self.pair_scale, y, self.T, self.lam


_CSKD_CASES: tuple[_CSKDCase, ...] = (
    _CSKDCase(1, 10, 4.0, 1.0, 2.0, 2.0),
    _CSKDCase(7, 10, 4.0, 3.0, 2.0, 3.0),
    _CSKDCase(32, 10, 2.0, 0.5, 3.0, 3.0),
    _CSKDCase(64, 10, 1.0, 2.0, 1.0, 4.0),
    _CSKDCase(16, 5, 3.0, 1.0, 1.0, 2.0),
    _CSKDCase(8, 100, 10.0, 3.0, 2.0, 6.0),
    _CSKDCase(4, 3, 4.0, 0.5, 1.0, 1.0),
    # extreme logits: naive log(softmax(...)) underflows to log(0) = -inf here
    _CSKDCase(16, 10, 1.0, 1.0, 100.0, 100.0, hard=True),
    _CSKDCase(8, 10, 2.0, 3.0, 1.0, 300.0, hard=True),
)
_CSKD_GRADIENT_CASES = range(1, 4)


@dataclass(frozen=True)
class _CSKDVariant:
    """One way of computing the CS-KD loss; the defaults are the correct way."""

    # in the order the hints list the errors
    ce: str = "anchors"
    weight: str = "kd"
    kind: str = "kl"
    direction: str = "pair||anchor"
    temperature: str = "both"
    reduction: str = "batchmean"
    factor: str = "T2"

    def value(self, z: Tensor, zp: Tensor, y: Tensor, T: float, lam: float) -> Tensor:
        z, zp = z.double(), zp.double().detach()
        ce = {
            "anchors": _cross_entropy(z, y),
            "anchors and pairs": _cross_entropy(z, y) + _cross_entropy(zp, y),
            "anchors and pairs, averaged": (_cross_entropy(z, y) + _cross_entropy(zp, y)) / 2,
            "none": torch.zeros((), dtype=torch.float64),
        }[self.ce]
        tau = T if self.temperature == "both" else 1.0
        log_anchor, log_pair = _log_softmax(z / tau), _log_softmax(zp / tau)
        if self.direction == "pair||anchor":
            log_target, log_input = log_pair, log_anchor
        else:
            log_target, log_input = log_anchor, log_pair
        factor = {"T2": T**2, "1": 1.0, "T": T}[self.factor]
        kd = factor * _divergence(log_target, log_input, self.kind, self.reduction)
        if self.weight == "kd":
            return ce + lam * kd
        if self.weight == "none":
            return ce + kd
        return lam * (ce + kd)  # "all"


def reference_cskd_loss(
    logits: Tensor, pair_logits: Tensor, target: Tensor, T: float, lam: float
) -> Tensor:
    """The CS-KD loss computed from scratch in float64 (see the module docstring)."""
    return _CSKDVariant().value(logits, pair_logits, target, T, lam)


_CSKD_HINTS = {
    ("ce", "anchors and pairs"): (
        "you add the partners' cross entropy CE(pair_logits, y): in CS-KD the partners only "
        "give the soft target, computed without gradient (the authors' code runs them under "
        "torch.no_grad()), and the cross entropy is on the anchors alone: "
        "F.cross_entropy(logits, y)."
    ),
    ("ce", "anchors and pairs, averaged"): (
        "your cross entropy is averaged over the anchors and the partners together (as if on "
        "torch.cat([logits, pair_logits])): in CS-KD the partners only give the soft target, "
        "and the cross entropy is on the anchors alone: F.cross_entropy(logits, y)."
    ),
    ("ce", "none"): (
        "the loss lacks the cross entropy with the labels: add F.cross_entropy(logits, y); the "
        "class-wise term only regularises it."
    ),
    ("weight", "none"): (
        "lam is not used: the KL term is weighted by lam (the paper's lambda), "
        "L = CE + lam * T**2 * KL."
    ),
    ("weight", "all"): (
        "lam multiplies the whole loss; it weighs the KL term only: CE + lam * T**2 * KL."
    ),
    ("kind", "cross-entropy"): (
        "you compute the cross entropy -sum p(x') log p(x), not the KL divergence: it is "
        "larger by the entropy of the partner's prediction. The gradients agree, but the KL is "
        "0 when the two predictions agree; subtract sum p(x') log p(x'), or use F.kl_div."
    ),
    ("kind", "probabilities into kl_div"): (
        "F.kl_div is given probabilities as its first argument; it expects log-probabilities: "
        "pass F.log_softmax(logits / T, dim=1)."
    ),
    ("direction", "anchor||pair"): (
        "the KL is the wrong way round: you compute KL(p(x) || p(x')). The partner's "
        "prediction is the target: KL(p^T(x') || p^T(x)) = F.kl_div(F.log_softmax(logits / T, "
        "1), F.softmax(pair_logits.detach() / T, 1), reduction='batchmean')."
    ),
    ("temperature", "none"): (
        "the softmax is taken without the temperature: divide both the anchors' and the "
        "partners' logits by T before the softmax."
    ),
    ("reduction", "mean"): (
        "the KL is averaged over every element (reduction='mean'), which also divides it by "
        "the number of classes K: sum over the classes and average over the batch "
        "('batchmean')."
    ),
    ("reduction", "sum"): (
        "the KL is summed over the batch (reduction='sum'): divide it by the batch size "
        "('batchmean')."
    ),
    ("factor", "1"): (
        "the T² factor is missing: multiply the KL by T**2. The gradient of the softened KL "
        "shrinks like 1/T², and T² restores its scale, as in KD."
    ),
    ("factor", "T"): "you multiply the KL by T; the factor is T**2 (T squared).",
}

_CSKD_CHECK = LossCheck(
    name="check_cskd_loss",
    error=CSKDLossCheckError,
    call="fn(logits, pair_logits, y, T, lam)",
    cases=_CSKD_CASES,
    reference=reference_cskd_loss,
    rtol=RTOL,
    atol=ATOL,
    mistakes=mistakes_from(
        _CSKDVariant(),
        _CSKD_HINTS,
        ce=("anchors", "anchors and pairs", "anchors and pairs, averaged", "none"),
        weight=("kd", "none", "all"),
        kind=("kl", "cross-entropy", "probabilities into kl_div"),
        direction=("pair||anchor", "anchor||pair"),
        temperature=("both", "none"),
        reduction=("batchmean", "mean", "sum"),
        factor=("T2", "1", "T"),
    ),
    loss="the CS-KD loss",
    in_place=(
        "your function changed its input tensors in place (e.g. `logits /= T` or "
        "`pair_logits.detach_()`); compute new tensors instead (`logits / T`, "
        "`pair_logits.detach()`)."
    ),
    per_sample_hint=(
        " It looks like one value per sample (reduction='none'): average over the batch."
    ),
    unmatched=(
        "the values match none of the typical mistakes. Check each step: the cross entropy of "
        "the anchors' logits with y, averaged over the batch; plus lam * T**2 times the KL from "
        "the partners' detached softmax(pair_logits / T) to softmax(logits / T), summed over "
        "the classes and averaged over the batch."
    ),
    ordinary="logits",
    hard_hint=_HARD_HINT,
    student="the anchors' logits",
    gradient_cases=_CSKD_GRADIENT_CASES,
    success=(
        f"your CS-KD loss matches the reference on {len(_CSKD_CASES)} cases (batch 1 to 64, 3 "
        "to 100 classes, T from 1 to 10, lam from 0.5 to 3, extreme logits included), so does "
        "its gradient, and the partners' prediction is detached."
    ),
)


def _pair_gradient_problem(fn: CSKDLossFn) -> str | None:
    """Why the loss sends gradient into the partners' logits (``None`` when it does not)."""
    for index in _CSKD_GRADIENT_CASES:
        case = _CSKD_CASES[index]
        z, zp, y, T, lam = case.inputs(index)
        logits = z.float().requires_grad_(True)
        pair_logits = zp.float().requires_grad_(True)
        loss = fn(logits, pair_logits, y.clone(), T, lam)
        (leak,) = torch.autograd.grad(loss, [pair_logits], allow_unused=True)
        if leak is not None and float(leak.abs().max()) > 0:
            return (
                "the values are right, but the loss sends gradient into pair_logits (up to "
                f"{float(leak.abs().max()):.3g} on {case.describe()}): the partners' prediction "
                "is the target and must be a constant. Detach it "
                "(F.softmax(pair_logits.detach() / T, dim=1)); when training, compute it under "
                "torch.no_grad(). Otherwise the term also pulls the partner's prediction "
                "towards the anchor's, and the network is trained on the partners as well."
            )
    return None


def check_cskd_loss(fn: CSKDLossFn, *, raise_on_failure: bool = True, verbose: bool = True) -> bool:
    r"""Check a learner's ``fn(logits, pair_logits, y, T, lam)`` against the CS-KD loss.

    ``fn`` must return a scalar tensor equal to :math:`\mathrm{CE}(z(x), y) + \lambda T^2
    \frac1B \sum_i \mathrm{KL}(p^T(x'_i) \| p^T(x_i))` (Yun et al., 2020; see the module
    docstring): ``logits`` are the anchors' :math:`z(x)`, ``pair_logits`` their partners'
    :math:`z(x')` (images of the same classes ``y``), ``lam`` is :math:`\lambda`. It is called
    on float32 cases with batch sizes 1 to 64, 3 to 100 classes, :math:`T` from 1 to 10,
    :math:`\lambda` from 0.5 to 3 and extreme logits. Values are compared with an independent
    float64 reference (relative tolerance ``1e-4``), and so is the gradient with respect to
    ``logits``; the gradient with respect to ``pair_logits`` must be zero (the target is
    detached). On a mismatch the message names the typical mistake that reproduces the
    numbers, when one does.

    Args:
        fn: The learner's loss function.
        raise_on_failure: Raise :class:`CSKDLossCheckError` with the explanation (default);
            with ``False`` print it and return ``False``.
        verbose: Print a line on success.

    Returns:
        ``True`` when every check passes (``False`` on failure if ``raise_on_failure=False``).

    Raises:
        CSKDLossCheckError: The loss is wrong (the message says how), unless
            ``raise_on_failure=False``.
        KDTutorError: ``fn`` is not callable.
    """
    _require_callable(fn, "check_cskd_loss", "my_cskd_loss(logits, pair_logits, y, T, lam)")
    return _values_then_gradients(
        fn, _CSKD_CHECK, _pair_gradient_problem, CSKDLossCheckError, raise_on_failure, verbose
    )

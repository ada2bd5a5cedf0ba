"""Pieces the coursework checkers of chapters 4 and 5 share: float64 references of the log
softmax, the cross entropy and the KL (with the reductions learners confuse), the hint for a
numerically unstable submission, the refusal of a non-callable, and the value checks followed
by a gradient check (:mod:`kdtutor.coursework.schemes`, :mod:`kdtutor.coursework.architecture`).

Chapters 2 and 3's checkers keep their own copies of the log softmax: moving them here would
change files their executed notebooks record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from ..errors import KDTutorError
from .engine import LossCheck, run_check
from .messages import report_failure, wrap_message

__all__: list[str] = []


def _log_softmax(z: Tensor) -> Tensor:
    """log softmax over dim 1 by the explicit log-sum-exp trick."""
    shifted = z - z.max(dim=1, keepdim=True).values
    return shifted - shifted.exp().sum(dim=1, keepdim=True).log()


def _cross_entropy(z: Tensor, y: Tensor) -> Tensor:
    """Mean over the batch of -log softmax(z)[y]."""
    return -_log_softmax(z).gather(1, y.view(-1, 1)).sum() / z.shape[0]


def _divergence(log_target: Tensor, log_input: Tensor, kind: str, reduction: str) -> Tensor:
    """The KL (or a typical mistake's term) between two rows of log-probabilities.

    ``kind``: ``"kl"`` (sum p_t (log p_t - log p_s)), ``"cross-entropy"`` (-sum p_t log p_s)
    or ``"probabilities into kl_div"`` (``F.kl_div`` given probabilities, not their log).
    ``reduction``: ``"batchmean"``, ``"mean"`` (over every element) or ``"sum"``.
    """
    target = log_target.exp()
    if kind == "kl":
        elementwise = target * (log_target - log_input)
    elif kind == "cross-entropy":
        elementwise = -target * log_input
    else:  # F.kl_div(probabilities, target) = target * (log target - probabilities)
        elementwise = target * (log_target - log_input.exp())
    batch, classes = log_target.shape
    divisor = {"batchmean": batch, "mean": batch * classes, "sum": 1}[reduction]
    return elementwise.sum() / divisor


_HARD_HINT = (
    "The computation is numerically unstable: log(softmax(z)) underflows to log(0) = -inf "
    "when logits differ by more than about 100. Use F.log_softmax (and F.kl_div, which "
    "treats 0 * log 0 as 0) instead of taking the log of a softmax."
)


def _require_callable(fn: object, name: str, signature: str) -> None:
    if not callable(fn):
        raise KDTutorError(
            f"{name} checks a function {signature}, got {type(fn).__name__}: pass the function "
            "itself, not the result of calling it."
        )


def _values_then_gradients(
    fn: Callable[..., object],
    check: LossCheck,
    gradient_problem: Callable[[Any], str | None],
    error: type[AssertionError],
    raise_on_failure: bool,
    verbose: bool,
) -> bool:
    """The engine's value checks, then this module's check that the targets are detached
    (the engine compares the gradient of the first input only)."""
    if not run_check(fn, check, raise_on_failure=raise_on_failure, verbose=False):
        return False
    problem = gradient_problem(fn)
    if problem is not None:
        return report_failure(check.name, problem, error, raise_on_failure)
    if verbose:
        print(wrap_message(f"✓ {check.name}: {check.success} Well done!"))
    return True

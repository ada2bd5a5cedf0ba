"""The words the coursework checkers share: failure reports, tolerances and output checks."""

from __future__ import annotations

import textwrap

from torch import Tensor

__all__ = ["report_failure", "scalar_loss_problem", "scalar_pair", "within", "wrap_message"]


def wrap_message(text: str, width: int = 78) -> str:
    """Wrap each line of ``text`` to ``width`` (78: a notebook's printed lines stay on the
    rendered page), keeping its indentation (and a list's hanging one)."""
    lines = []
    for line in text.splitlines():
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        marker = body.split(" ", 1)[0]
        hanging = " " * (len(marker) + 1) if marker[:-1].isdigit() and marker.endswith(".") else ""
        lines.append(
            textwrap.fill(
                body,
                width=width,
                initial_indent=indent,
                subsequent_indent=indent + (hanging or "  "),
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def report_failure(
    check: str, message: str, error: type[AssertionError], raise_on_failure: bool
) -> bool:
    """Raise ``error`` with ``"✗ <check>: <message>"`` (wrapped), or print it and return False."""
    text = wrap_message(f"✗ {check}: {message}")
    if raise_on_failure:
        raise error(text)
    print(text)
    return False


def within(got: float, expected: float, *, atol: float, rtol: float) -> bool:
    """``|got - expected| <= atol + rtol * |expected|`` (numpy's ``isclose`` rule)."""
    return abs(got - expected) <= atol + rtol * abs(expected)


def scalar_loss_problem(
    out: object,
    where: str,
    *,
    per_sample: tuple[int, ...] | None = None,
    per_sample_hint: str = "",
    advice: str = ".",
) -> str | None:
    """Why a learner's loss is not a scalar tensor (``None`` when it is).

    Args:
        out: what the learner's function returned.
        where: the inputs, as the message should name them.
        per_sample: the shape of one value per sample; when ``out`` has it, ``per_sample_hint``
            is appended to the message.
        advice: how the "single number" sentence ends (e.g. ``": average as defined."``).
    """
    if not isinstance(out, Tensor):
        return (
            f"fn returned {type(out).__name__}, not a torch.Tensor: keep the result a tensor "
            "(no .item() or float()) so that it can be back-propagated."
        )
    if out.numel() != 1:
        hint = per_sample_hint if per_sample is not None and tuple(out.shape) == per_sample else ""
        return (
            f"fn returned a tensor of shape {tuple(out.shape)} on {where}; the loss "
            f"must be a single number (a scalar tensor){advice}{hint}"
        )
    return None


def scalar_pair(
    out: object, names: tuple[str, str], where: str, *, purpose: str, noun: str, batch: int
) -> tuple[Tensor, Tensor] | str:
    """The two scalar tensors a learner's function returned, or why they are not.

    Args:
        out: what the learner's function returned.
        names: the two values' names, as the message should call them (``("tckd", "nckd")``).
        where: the inputs, as the message should name them.
        purpose: why two values, ending the first sentence (``"the two terms separately"``).
        noun: what each value is (``"term"``, ``"loss"``).
        batch: the batch size (a value of shape ``(batch,)`` gets a hint to average).
    """
    if isinstance(out, Tensor) or not isinstance(out, tuple | list) or len(out) != 2:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else repr(out)
        return (
            f"fn must return a pair ({names[0]}, {names[1]}), {purpose}; it returned {what[:80]}."
        )
    for name, value in zip(names, out, strict=True):
        if not isinstance(value, Tensor):
            return (
                f"{name} is a {type(value).__name__}, not a torch.Tensor: keep both {noun}s "
                "tensors (no .item() or float()) so that they can be back-propagated."
            )
        if value.numel() != 1:
            hint = (
                " It looks like one value per sample: average over the batch."
                if tuple(value.shape) == (batch,)
                else ""
            )
            return (
                f"{name} has shape {tuple(value.shape)} on {where}; each {noun} must be a "
                f"single number (a scalar tensor).{hint}"
            )
    return out[0], out[1]

"""Exceptions with messages that name the problem and the fix.

Every error kdtutor raises on bad input is a :class:`KDTutorError`; the subclasses also
derive from the matching built-in exception, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KDTutorError(Exception):
    """Base class of every error kdtutor raises on purpose."""


class UnknownNameError(KDTutorError, ValueError):
    """A dataset, model, method, preset or feature path that does not exist."""


class DataNotFoundError(KDTutorError, FileNotFoundError):
    """Data files are missing; the message says where they were expected and how to get them."""


class DataFormatError(KDTutorError, ValueError):
    """Data that exists but cannot be used: an unreadable image file, an image folder laid out
    wrongly, or a dataset loader that returns something other than it promised."""


class ShapeMismatchError(KDTutorError, ValueError):
    """Two tensors (or models) whose shapes cannot be combined."""


class ChecksumError(KDTutorError):
    """A shipped or downloaded file whose sha256 differs from its manifest."""


class CheckpointError(KDTutorError):
    """A checkpoint that is missing, truncated, corrupt, or made for another model."""


class NotAModelError(KDTutorError, TypeError):
    """Something given where a model (an ``nn.Module``) was expected, e.g. a model's name."""


class NonFiniteLossError(KDTutorError, FloatingPointError):
    """A loss became NaN or infinite during training."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look most like ``name``."""
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not found:
        lowered = name.lower()
        found = [c for c in choices if lowered in c.lower() or c.lower() in lowered][:n]
    return found


def unknown_name(kind: str, name: str, choices: Iterable[str], hint: str = "") -> UnknownNameError:
    """Build an :class:`UnknownNameError` that suggests the closest valid names.

    >>> str(unknown_name("model", "resnet8x5", ["resnet8x4", "vgg8"]))  # doctest: +ELLIPSIS
    "unknown model 'resnet8x5'. Did you mean 'resnet8x4'? ..."
    """
    choices = sorted(choices)
    near = closest(name, choices)
    message = f"unknown {kind} {name!r}."
    if near:
        message += " Did you mean " + " or ".join(repr(c) for c in near) + "?"
    shown = ", ".join(choices[:40]) + (" ..." if len(choices) > 40 else "")
    message += f" Valid {kind} names: {shown}."
    if hint:
        message += " " + hint
    return UnknownNameError(message)

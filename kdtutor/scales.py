"""The three scales every experiment runs at: ``smoke`` (tests), ``book`` (default), ``full`` (GPU).

Choose with the ``KDTUTOR_SCALE`` environment variable or pass ``scale=`` explicitly.
"""

from __future__ import annotations

import os
from typing import Literal, TypeVar

from .errors import unknown_name

Scale = Literal["smoke", "book", "full"]
SCALES: tuple[str, ...] = ("smoke", "book", "full")
T = TypeVar("T")


def current_scale(scale: str | None = None) -> str:
    """``scale`` if given, else ``$KDTUTOR_SCALE``, else ``"book"``; validated."""
    value = scale or os.environ.get("KDTUTOR_SCALE") or "book"
    if value not in SCALES:
        raise unknown_name("scale", value, SCALES, hint="Set KDTUTOR_SCALE to smoke, book or full.")
    return value


def by_scale(smoke: T, book: T, full: T | None = None, *, scale: str | None = None) -> T:
    """Pick the value for the current scale (``full`` falls back to ``book`` when not given)."""
    chosen = current_scale(scale)
    if chosen == "smoke":
        return smoke
    if chosen == "full" and full is not None:
        return full
    return book

"""Where kdtutor reads what it ships and writes what it makes.

The installed package is read, never written: the shipped teachers are package data
(``kdtutor/zoo_data``, read through :mod:`importlib.resources`); results go to
``$KDTUTOR_RESULTS``, else ``data/results`` of a source checkout, else ``./kdtutor-results``
in the working folder; caches go to ``$KDTUTOR_CACHE`` or ``~/.cache/kdtutor``
(:func:`kdtutor.data.diskcache.cache_dir`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["results_dir", "shipped_zoo_dir", "source_checkout"]


def shipped_zoo_dir() -> Path:
    """The folder of the teachers shipped with the package (``kdtutor/zoo_data``)."""
    return Path(str(resources.files("kdtutor") / "zoo_data"))


def source_checkout() -> Path | None:
    """The repository root when kdtutor runs from a source checkout (an editable install or
    the working tree), None when it runs from an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "book").is_dir() else None


def results_dir() -> Path:
    """``$KDTUTOR_RESULTS`` if set, else the checkout's ``data/results``, else
    ``kdtutor-results`` in the working folder (never inside the installed package)."""
    env = os.environ.get("KDTUTOR_RESULTS")
    if env:
        return Path(env).expanduser()
    root = source_checkout()
    return root / "data" / "results" if root is not None else Path.cwd() / "kdtutor-results"

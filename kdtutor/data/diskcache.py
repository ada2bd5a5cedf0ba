"""Small .npz disk caches under :func:`cache_dir`, written atomically, never fatal.

A cache file that cannot be read (truncated, corrupt, written for other parameters) is
ignored with a warning and regenerated; a cache folder that cannot be written only warns.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write

__all__ = ["cache_dir", "load_npz", "save_npz"]


def cache_dir() -> Path:
    """Folder of kdtutor's disk caches: ``$KDTUTOR_CACHE`` if set, else ``~/.cache/kdtutor``."""
    env = os.environ.get("KDTUTOR_CACHE")
    folder = Path(env).expanduser() if env else Path.home() / ".cache" / "kdtutor"
    if folder.exists() and not folder.is_dir():
        from ..errors import KDTutorError

        source = "KDTUTOR_CACHE names" if env else "the cache folder"
        raise KDTutorError(
            f"{source} {folder}, which is a file, not a folder: point KDTUTOR_CACHE at a folder "
            "(it is created) or move the file away."
        )
    return folder


def load_npz(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of the cache file ``path`` written for ``key``, or None.

    Returns None when the file is missing; also (with a ``RuntimeWarning``) when it cannot be
    read or was written for another key, so the caller regenerates it.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        if str(arrays.pop("key")) != key:
            raise ValueError("the file was written for other parameters")
        return arrays
    except Exception as exc:  # a truncated or foreign file must never stop the program
        warnings.warn(
            f"ignoring unreadable cache file {path} ({type(exc).__name__}: {exc}); "
            "regenerating it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def save_npz(path: Path, key: str, **arrays: np.ndarray) -> bool:
    """Write ``arrays`` and ``key`` to ``path`` atomically (uncompressed .npz).

    Returns:
        True when written; False (with a ``RuntimeWarning``) when the folder is not writable.
    """

    def write(handle: Any) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, key=np.array(key), **arrays)
        handle.write(buffer.getbuffer())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
    except Exception as exc:
        warnings.warn(
            f"could not write the cache file {path} ({exc}); set KDTUTOR_CACHE to a writable "
            "folder to keep it between runs.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True

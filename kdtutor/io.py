"""Atomic writes and safe loading: a file on disk is always a complete old or new version."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .errors import CheckpointError, KDTutorError


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[str]:
    """A temporary file name beside ``path``, renamed over ``path`` when the block succeeds."""
    folder = path.parent
    if not folder.exists():
        raise KDTutorError(
            f"cannot write {path}: the folder {folder} does not exist. Create it first "
            f"(mkdir -p {folder}) or choose another output path."
        )
    if not os.access(folder, os.W_OK):
        raise KDTutorError(
            f"cannot write {path}: the folder {folder} is not writable. Choose a folder you "
            "can write to, or fix its permissions."
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    # mkstemp creates the file readable by its owner only; give it the mode a plain open() would
    # (the previous file's mode when it exists).
    os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    If the block raises (or the process dies), ``path`` keeps its previous content and the
    temporary file is removed (or, after a kill, left as ``.<name>.*.tmp``, never as ``path``).
    """
    with _temp_beside(Path(path)) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_array(
    path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any
) -> Iterator[np.ndarray]:
    """A writable ``.npy`` memory map of ``shape`` and ``dtype``, filled inside the block.

    The array lives in a temporary file beside ``path``; when the block succeeds it is flushed,
    fsynced and renamed over ``path``, so ``path`` is always a complete array or absent. Read
    it back with ``numpy.load(path, mmap_mode="r")``.
    """
    with _temp_beside(Path(path)) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        try:
            yield array
            array.flush()
        finally:
            del array
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[Any]], None], mode: str = "wb"
) -> None:
    """Call ``write(handle)`` on a temporary file and atomically move it to ``path``."""
    with atomic_open(path, mode) as handle:
        write(handle)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically (temp file + fsync + rename)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text to ``path`` atomically."""
    atomic_write(path, lambda handle: handle.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_savefig(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Save a matplotlib figure atomically, in the format its suffix names (png, pdf, svg)."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".").lower() or "png", **kwargs)


def safe_load(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only=True`` on CPU, turning failures into clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist. Check the path, or train it first.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or unsafe files
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"{what} {path} contains Python objects other than tensors and plain containers, "
                "so it was refused (kdtutor loads with weights_only=True and never runs code from "
                "a file). Re-save it as a state_dict of tensors."
            ) from exc
        raise CheckpointError(
            f"{what} {path} could not be read ({type(exc).__name__}: {text.splitlines()[0] if text else ''}); "
            "it is probably truncated or corrupt. Delete it and re-create it (re-train, or restore the "
            "file from git)."
        ) from exc


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()

"""What a notebook uses, recorded from inside its kernel (loaded there by ``execute_notebooks``).

``scripts/execute_notebooks.py`` loads this file into the kernel, silently, before the first
cell (:func:`start`) and calls :func:`finish` after the last one; neither shows up in the
notebook, its execution counts or its namespace. What is recorded:

- **modules**: every entry of ``sys.modules`` whose ``__file__`` lies inside the package folder
  (``kdtutor/``), i.e. the package files the notebook imported, directly or not;
- **data**: every file inside the data folders (``data/`` and the package data
  ``kdtutor/zoo_data/``) opened for reading, seen through an
  audit hook (:func:`sys.addaudithook`) on the ``open`` event, which ``open``, ``io.open``,
  ``os.open``, ``Path.read_*``, ``numpy.load``, ``torch.load`` and pandas all raise.

Not seen: files read by other processes the notebook starts (``spawn``-ed or forked workers,
``subprocess``), and files read through memory maps set up without ``open``.

Only the standard library is imported here, so loading this adds no package module.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

MODULE_NAME = "kdtutor_notebook_uses"
"""Name under which ``execute_notebooks`` registers this file in the kernel's ``sys.modules``."""

_opened: set[str] = set()


def reads(mode: str | None, flags: int) -> bool:
    """True when an ``open`` audit event (``mode`` from ``open``, ``flags`` from ``os.open``)
    can read the file: any mode with ``r`` or ``+``; ``os.open`` unless write-only."""
    if mode is None:
        return flags & os.O_ACCMODE != os.O_WRONLY
    return "r" in mode or "+" in mode


def inside(path: str, folder: str) -> bool:
    """True when the real ``path`` lies below the real ``folder`` (both already resolved)."""
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def open_hook(data_dirs: list[str], seen: set[str]) -> Callable[[str, tuple], None]:
    """An audit hook that adds to ``seen`` the real path of every file below one of
    ``data_dirs`` opened for reading. It never raises: an exception in an audit hook would
    fail the ``open``."""
    data_dirs = [os.path.realpath(d) for d in data_dirs]

    def hook(event: str, args: tuple) -> None:
        if event != "open":
            return
        try:
            path, mode, flags = args
            if path is None or isinstance(path, int) or not reads(mode, flags):
                return
            full = os.path.realpath(os.fsdecode(path))
            if any(inside(full, d) for d in data_dirs):
                seen.add(full)
        except Exception:  # never raise: see the docstring
            pass

    return hook


def start(*data_dirs: str) -> None:
    """Begin recording the data files the kernel opens for reading (for the kernel's life)."""
    sys.addaudithook(open_hook(list(data_dirs), _opened))


def imported_files(package_dir: str) -> tuple[list[str], list[str]]:
    """The real paths of the imported modules whose file is inside ``package_dir``, and those of
    modules named like the package (``kdtutor``, ``kdtutor.*``) imported from anywhere else."""
    package_dir = os.path.realpath(package_dir)
    package = os.path.basename(package_dir)
    inside_files: set[str] = set()
    elsewhere: set[str] = set()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        full = os.path.realpath(file)
        if inside(full, package_dir):
            inside_files.add(full)
        elif name == package or name.startswith(package + "."):
            elsewhere.add(full)
    return sorted(inside_files), sorted(elsewhere)


def finish(package_dir: str, data_dirs: list[str], out_path: str) -> None:
    """Write what was used to ``out_path`` (JSON: ``modules``, ``data``, ``elsewhere``)."""
    modules, elsewhere = imported_files(package_dir)
    real = [os.path.realpath(d) for d in data_dirs]
    data = sorted(p for p in _opened if any(inside(p, d) for d in real) and os.path.isfile(p))
    with open(out_path, "w") as handle:
        json.dump({"modules": modules, "data": data, "elsewhere": elsewhere}, handle)

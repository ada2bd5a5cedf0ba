"""What every benchmark records beside its numbers, and where it writes them.

Each suite's results carry the command, the git commit, the date (UTC) and the machine, and
go to :func:`kdtutor.locations.results_dir`: ``$KDTUTOR_RESULTS``, else ``data/results/`` of a
source checkout, else ``kdtutor-results/`` in the working folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import torch

from ..locations import results_dir

__all__ = ["git_commit", "machine", "results_path", "torch_threads", "utc_now"]


def results_path(file_name: str) -> Path:
    """``<results folder>/<file_name>`` (see :func:`kdtutor.locations.results_dir`)."""
    return results_dir() / file_name


def git_commit() -> str:
    """The short hash of the checked-out commit, or ``"unknown"`` outside a git clone."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """Host name, architecture, CPU count and operating system, e.g. ``vm x86_64 2 cpus, Linux``."""
    return f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.system()}"


def utc_now() -> str:
    """The current time in UTC, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def torch_threads(count: int | None, device: torch.device | None = None) -> Iterator[int]:
    """Set torch's CPU threads to ``count`` for the block (not for CUDA runs, nor when ``count``
    is None) and restore the previous number afterwards; yields the number in effect."""
    old = torch.get_num_threads()
    if count and (device is None or device.type == "cpu"):
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)

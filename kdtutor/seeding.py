"""Seeds and determinism."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and CUDA) random generators."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (seeding the legacy global generator is the point)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Ask PyTorch for deterministic kernels (warn where none exists) and fixed cuDNN choices."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def rng_state() -> dict[str, object]:
    """Every global RNG state, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()  # noqa: NPY002
    state: dict[str, object] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, object]) -> None:
    """Restore what :func:`rng_state` returned."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))  # type: ignore[index]
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),  # type: ignore[index]
            np_state["pos"],  # type: ignore[index]
            np_state["has_gauss"],  # type: ignore[index]
            np_state["cached_gaussian"],  # type: ignore[index]
        )
    )
    torch.set_rng_state(state["torch"])  # type: ignore[arg-type]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])  # type: ignore[arg-type]

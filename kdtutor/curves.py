"""Learning curves of finished or running experiments: ``kdtutor plot PATH``.

``PATH`` is a run folder (its ``metrics.jsonl``, readable while the run trains), a
``metrics.jsonl`` file, or a results JSON written by ``kdtutor distill --out`` (its per-seed
histories). One line per seed: the training loss and the test score per epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import KDTutorError

__all__ = ["plot_learning_curves", "read_histories"]


def read_histories(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Per-run epoch records (label -> history) from a run folder, metrics.jsonl or results JSON."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise KDTutorError(
            f"{path} does not exist: give a run folder (--run-dir), its metrics.jsonl or a "
            "results JSON written by `kdtutor distill --out`."
        )
    histories: dict[str, list[dict[str, Any]]] = {}
    if path.suffix == ".jsonl":
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            histories.setdefault(f"seed {row.get('seed', 0)}", []).append(row)
    else:
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise KDTutorError(f"{path} is not valid JSON ({exc}).") from None
        runs = payload.get("runs") if isinstance(payload, dict) else None
        if not runs:
            raise KDTutorError(
                f"{path} holds no per-seed histories (no 'runs'): it is not a results file of "
                "`kdtutor distill --out`."
            )
        for seed, run in zip(payload.get("seeds", range(len(runs))), runs, strict=False):
            histories[f"seed {seed}"] = run["history"]
    if not any(histories.values()):
        raise KDTutorError(f"{path} holds no finished epoch yet.")
    return histories


def _score_key(history: list[dict[str, Any]]) -> str | None:
    keys = [k for k in history[0] if k.startswith("test_") and isinstance(history[0][k], float)]
    keys = keys or [k for k in history[0] if k.startswith("train_")]
    return keys[0] if keys else None


def plot_learning_curves(
    path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> Any:
    """Draw loss and score per epoch for each seed; save to ``out`` when given. Returns the figure."""
    import matplotlib.pyplot as plt

    histories = read_histories(path)
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, history in histories.items():
        epochs = [h["epoch"] for h in history]
        loss_ax.plot(epochs, [h["loss"] for h in history], marker="o", label=label)
        key = _score_key(history)
        if key is not None:
            score_ax.plot(epochs, [h[key] for h in history], marker="o", label=label)
            score_ax.set_ylabel(key.replace("_", " "))
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="Loss")
    score_ax.set(xlabel="epoch", title="Score")
    for ax in (loss_ax, score_ax):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"Learning curves: {Path(path).name}")
    fig.tight_layout()
    if out is not None:
        from .io import atomic_savefig

        atomic_savefig(fig, out, dpi=120)
    return fig

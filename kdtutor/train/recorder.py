"""What a run leaves behind while it trains: ``metrics.jsonl``, TensorBoard scalars and the
student's best weights.

:class:`RunRecorder` is called by :func:`~kdtutor.train.fit` after every epoch (its
``on_epoch`` argument) with the history so far. Each epoch's record is appended to
``metrics.jsonl`` and flushed to disk at once, so a run killed at any moment leaves every
finished epoch on disk; when the student's score is the best so far, its weights are written
(atomically) to ``best-seed<N>.pt``. Before its first line a run drops the lines of its seed
from that epoch on (left by a run killed after its last checkpoint), so after a resume the
file never holds an epoch twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..io import atomic_save, atomic_write_text

__all__ = ["STUDENT_FORMAT", "EpochEnd", "RunRecorder", "save_student"]

log = logging.getLogger(__name__)

STUDENT_FORMAT = "kdtutor-student/1"


class EpochEnd(NamedTuple):
    """What ``fit`` tells its ``on_epoch`` callback after each epoch."""

    history: list[dict[str, Any]]
    """Every epoch's record so far (the last one is this epoch's)."""
    student: nn.Module
    score_key: str | None
    """The history key scored (``test_acc``, ...; None when nothing is scored)."""
    higher_is_better: bool

    @property
    def is_best(self) -> bool:
        """Whether this epoch's score beats every earlier one (ties keep the earlier)."""
        if self.score_key is None:
            return False
        scores = [h.get(self.score_key, math.nan) for h in self.history]
        last, earlier = scores[-1], [s for s in scores[:-1] if not math.isnan(s)]
        if math.isnan(last):
            return False
        better = (lambda a, b: a > b) if self.higher_is_better else (lambda a, b: a < b)
        return all(better(last, s) for s in earlier)


def save_student(
    student: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any] | None = None
) -> Path:
    """Write a student's weights (float32, on CPU) atomically to ``path``, with ``meta``
    (model name, dataset, classes, ...) beside them.

    The file loads with ``build_model(name, ..., weights_path=path)`` and with
    ``--student NAME:PATH`` / ``--teacher NAME:PATH`` on the command line.
    """
    model = getattr(student, "_orig_mod", student)  # a torch.compile'd module's original
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": STUDENT_FORMAT, **(meta or {}), "state_dict": state}
    atomic_save(payload, Path(path))
    return Path(path)


class RunRecorder:
    """Per-epoch outputs of one seed's run in a run folder.

    Args:
        folder: the run folder (created if missing).
        seed: the run's seed; it names the weight files and tags each metrics line.
        meta: stored with the best weights (see :func:`save_student`).
        tensorboard: write TensorBoard scalars to ``folder/tensorboard`` (needs the
            ``tensorboard`` package; ``None``: when it is installed).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        seed: int,
        *,
        meta: dict[str, Any] | None = None,
        tensorboard: bool | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.meta = dict(meta or {})
        self.metrics_path = self.folder / "metrics.jsonl"
        self.best_path = self.folder / f"best-seed{seed}.pt"
        self._started = False
        self._writer = _tensorboard_writer(self.folder / "tensorboard" / f"seed{seed}", tensorboard)

    def _drop_from(self, epoch: int) -> None:
        """Drop this seed's lines of ``epoch`` and later (and lines cut short by a kill)."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("seed") != self.seed or row.get("epoch", 0) < epoch:
                kept.append(line)
        atomic_write_text(self.metrics_path, "".join(f"{line}\n" for line in kept))

    def __call__(self, end: EpochEnd) -> None:
        history = end.history
        record = history[-1]
        if not self._started:
            self._drop_from(record["epoch"])
            self._started = True
        # appended, not rewritten: a kill loses at most the line being written, which
        # _drop_from discards on the next start
        with self.metrics_path.open("a") as f:
            f.write(json.dumps({"seed": self.seed, **record}, default=_plain) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self._writer is not None:
            self._write_scalars(record)
        if end.is_best:
            save_student(end.student, self.best_path, {**self.meta, "epoch": record["epoch"]})

    def _write_scalars(self, record: dict[str, Any]) -> None:
        step = record["epoch"]
        self._writer.add_scalar("lr", record["lr"], step)
        self._writer.add_scalar("loss/total", record["loss"], step)
        for name, value in record["losses"].items():
            self._writer.add_scalar(f"loss/{name}", value, step)
        for key, value in record.items():
            if key.startswith(("train_", "test_")) and isinstance(value, (int, float)):
                self._writer.add_scalar(key.replace("_", "/", 1), value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tensorboard_writer(folder: Path, wanted: bool | None) -> Any:
    if wanted is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if wanted:
            from ..errors import KDTutorError

            raise KDTutorError(
                "TensorBoard logging needs the tensorboard package: pip install "
                "'kdtutor[tensorboard]', or leave --tensorboard off."
            ) from None
        log.debug("tensorboard is not installed: no TensorBoard scalars")
        return None
    return SummaryWriter(log_dir=str(folder))


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return str(value)

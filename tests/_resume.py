"""The resume check shared by the tests of the trainer and of the methods: a run interrupted
by Ctrl-C after some epoch and resumed from its checkpoint ends where the uninterrupted run
ends, bit for bit.

It is a plain module, not a plugin: pytest puts ``tests/`` (which has no ``__init__.py``) on
``sys.path``, so a test file imports it as ``from _resume import interrupted_then_resumed``
and calls ``interrupted_then_resumed(make, train, test, tmp_path, after=1, config=cfg)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from kdtutor.methods import Distiller
from kdtutor.train import FitResult, fit


class Resumed(NamedTuple):
    """The two runs :func:`interrupted_then_resumed` compared, for a test's own checks."""

    full: Distiller
    """The distiller trained without interruption."""
    full_result: FitResult
    """Its result."""
    resumed: Distiller
    """The fresh distiller that resumed the interrupted run."""
    result: FitResult
    """The resumed run's result (its history holds every epoch, those before the cut too)."""
    cut: dict[str, Any]
    """The checkpoint the interrupted run left (``torch.load``-ed before resuming)."""


def _interrupt_after(epoch: int) -> Callable[[str], None]:
    """A ``fit(log=...)`` that raises ``KeyboardInterrupt`` on the ``epoch``-th epoch line,
    i.e. once that epoch's checkpoint is written (``fit`` logs one line per epoch, after it)."""
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if len(lines) == epoch:
            raise KeyboardInterrupt

    return log


def interrupted_then_resumed(
    make: Callable[[], Distiller],
    train: Any,
    test: Any,
    folder: Path,
    *,
    after: int,
    full: tuple[Distiller, FitResult] | None = None,
    same: Sequence[str] = (),
    covers: Sequence[str] = (),
    **fit_kwargs: Any,
) -> Resumed:
    """Interrupt a run, resume it, and assert that it ends exactly as an uninterrupted one.

    Three runs of ``fit(distiller, train, test, **fit_kwargs)``, each on a fresh ``make()``:

    1. the uninterrupted run (skipped when the test did it itself and passes ``full``: a
       ``(distiller, result)`` pair, e.g. to give that run its own ``checkpoint=`` or
       ``on_epoch=``);
    2. a run checkpointing to ``folder / "cut.pt"`` and interrupted by ``KeyboardInterrupt``
       (raised by its ``log``) right after epoch ``after``;
    3. a fresh distiller resumed from that checkpoint (``checkpoint=`` and ``resume=`` the same
       path), run to the end.

    Asserts that the interrupted run raised and its checkpoint holds epoch ``after`` (saved
    as index ``after - 1``); that the resumed run trained only the epochs after it; that its
    history has the same epochs as the uninterrupted run's and, for each key of ``same``
    (e.g. ``"losses"``, ``"test_acc"``, ``"test"``), the same value at every epoch; that both
    distillers' ``trainable_state_dict()`` (everything but the frozen teacher) have the same
    keys, among them at least one starting with each prefix of ``covers`` (so that the
    comparison does cover, say, a connector or a second network), and are equal bit for bit
    (``torch.equal``). Returns both runs for the test's own checks.
    """
    if full is None:
        full_distiller = make()
        full = full_distiller, fit(full_distiller, train, test, **fit_kwargs)
    full_distiller, full_result = full
    path = Path(folder) / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(make(), train, test, checkpoint=path, log=_interrupt_after(after), **fit_kwargs)
    cut = torch.load(path, weights_only=True)
    assert cut["epoch"] == after - 1, f"interrupted after epoch {cut['epoch'] + 1}, not {after}"
    resumed, trained = make(), []  # trained: the resumed run's epoch lines
    result = fit(
        resumed, train, test, checkpoint=path, resume=path, log=trained.append, **fit_kwargs
    )

    epochs = [h["epoch"] for h in full_result.history]
    assert len(trained) == len(epochs) - after, "the resumed run trained the cut epochs again"
    assert [h["epoch"] for h in result.history] == epochs
    for key in same:
        assert [h[key] for h in result.history] == [h[key] for h in full_result.history], key
    a, b = full_distiller.trainable_state_dict(), resumed.trainable_state_dict()
    assert set(a) == set(b)
    for prefix in covers:
        assert any(k.startswith(prefix) for k in a), f"no {prefix!r} in {sorted(a)[:5]}..."
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{different[:5]} differ after resume"
    return Resumed(full_distiller, full_result, resumed, result, cut)

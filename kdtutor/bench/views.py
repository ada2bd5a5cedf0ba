"""What caching a fixed number of augmented views costs in accuracy.

With random augmentation the teacher sees a new image every epoch, so its outputs cannot be
cached; caching ``K`` fixed views per image (:class:`~kdtutor.data.transforms.FixedViews`)
makes them cacheable again, at the price of showing the student only ``K`` variants of each
image. ``kdtutor bench --suite views`` measures that price: the same KD run with no
augmentation, with fresh augmentation (teacher run every step) and with ``K`` cached views,
over seeds, and writes one JSON file with every run and the summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import KDTutorError, unknown_name
from ..io import atomic_write_json
from .provenance import git_commit, machine, results_path, torch_threads, utc_now
from .stats import mean_std

__all__ = ["VIEWS_PRESETS", "ViewsPreset", "default_views_path", "run_views"]


@dataclass(frozen=True)
class ViewsPreset:
    """Data, pair, schedule and the view counts compared."""

    dataset: str = "mnist5k"
    teacher: str = "mnist5k_cnn"
    student: str = "cnn_tiny"
    augment: str = "crop"
    views: tuple[int, ...] = (1, 2, 4, 8)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.05
    train_size: int | None = None
    test_size: int | None = None
    threads: int = 1


VIEWS_PRESETS: dict[str, ViewsPreset] = {
    "smoke": ViewsPreset(views=(1, 2), seeds=(0,), epochs=1, train_size=128, test_size=64),
    "book": ViewsPreset(),
}


def default_views_path(preset: str) -> Path:
    """``data/results/views_<preset>.json`` (``$KDTUTOR_RESULTS`` replaces the folder)."""
    return results_path(f"views_{preset}.json")


def _variants(spec: ViewsPreset) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("no augmentation (cached)", {"augment": None, "cache": True}),
        ("fresh augmentation (no cache)", {"augment": spec.augment, "cache": False}),
        *[
            (f"{k} cached view{'s' if k > 1 else ''}", {"augment": spec.augment, "cache_views": k})
            for k in spec.views
        ],
    ]


def run_views(
    preset: str = "book",
    *,
    out: str | os.PathLike[str] | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train KD once per (variant, seed) and return (and write) runs and summary."""
    import torch

    from ..cache import clear_memory_cache
    from ..data import load_dataset
    from ..methods import build_distiller
    from ..models import build_model
    from ..seeding import seed_everything
    from ..train import fit
    from ..zoo import load_teacher

    if preset not in VIEWS_PRESETS:
        raise unknown_name("views preset", preset, VIEWS_PRESETS)
    spec = VIEWS_PRESETS[preset]
    path = Path(out) if out is not None else default_views_path(preset)
    if not path.parent.is_dir():
        raise KDTutorError(
            f"cannot write {path}: the folder {path.parent} does not exist. Create it first."
        )
    with torch_threads(spec.threads):
        train = load_dataset(spec.dataset, "train", size=spec.train_size)
        test = load_dataset(spec.dataset, "test", size=spec.test_size)
        teacher = load_teacher(spec.teacher)
        runs = []
        for name, options in _variants(spec):
            for seed in spec.seeds:
                seed_everything(seed)
                student = build_model(
                    spec.student, num_classes=train.num_classes, in_channels=train.in_channels
                )
                result = fit(
                    build_distiller("kd", student, teacher),
                    train,
                    test,
                    epochs=spec.epochs,
                    batch_size=spec.batch_size,
                    lr=spec.lr,
                    seed=seed,
                    **options,
                )
                runs.append(
                    {
                        "variant": name,
                        "seed": seed,
                        "best_acc": round(result.best_acc, 4),
                        "last_acc": round(result.last_acc, 4),
                        "seconds": round(result.seconds, 2),
                    }
                )
                if log:
                    log(
                        f"{name:<30} seed {seed}  best {result.best_acc:.2f}  {result.seconds:.1f} s"
                    )
            clear_memory_cache()
    summary = summarize_views(runs, [name for name, _ in _variants(spec)])
    payload = {
        "command": command or f"kdtutor.bench.views.run_views({preset!r})",
        "commit": git_commit(),
        "date": utc_now(),
        "machine": f"{machine()}, torch {torch.__version__}",
        "preset": {"name": preset, **asdict(spec)},
        "summary": summary,
        "runs": runs,
    }
    atomic_write_json(path, payload)
    return payload


def summarize_views(runs: Sequence[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± std over seeds of best/last accuracy and seconds per variant, in ``order``."""
    table = []
    for name in order:
        rows = [r for r in runs if r["variant"] == name]
        if not rows:
            continue
        best, best_sd = mean_std([r["best_acc"] for r in rows])
        last, last_sd = mean_std([r["last_acc"] for r in rows])
        seconds, _ = mean_std([r["seconds"] for r in rows])
        table.append(
            {
                "variant": name,
                "seeds": len(rows),
                "best_mean": best,
                "best_std": best_sd,
                "last_mean": last,
                "last_std": last_sd,
                "seconds_mean": seconds,
            }
        )
    return table


def format_views_table(payload: dict[str, Any]) -> str:
    """The summary as a plain-text table."""
    lines = [f"{'variant':<32} {'best %':>15} {'last %':>15} {'s/run':>7}"]
    for r in payload["summary"]:
        lines.append(
            f"{r['variant']:<32} {r['best_mean']:>7.2f} ± {r['best_std']:<5.2f} "
            f"{r['last_mean']:>7.2f} ± {r['last_std']:<5.2f} {r['seconds_mean']:>7.1f}"
        )
    return "\n".join(lines)

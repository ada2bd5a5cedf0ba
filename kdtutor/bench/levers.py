"""CPU speed levers, measured side by side: channels-last, bfloat16 autocast, torch.compile
and thread counts, on one KD training step and on whole book-scale KD runs with accuracy.

``kdtutor bench --levers --preset book`` runs two parts in one process:

1. **Step times.** One KD training step (student forward and backward against fixed teacher
   logits, SGD) per student and lever, rounds interleaved so that the machine's drift
   touches every lever alike; the median ms per step and the ratio to float32.
2. **Runs.** The book-scale KD run (shapes, ``shapes_cnn_large`` -> ``cnn_small``, cached
   teacher) and a ResNet student, for float32 and the levers that the CPU supports, over
   seeds: accuracy mean +- std and seconds per epoch, so a lever is kept only where
   accuracy holds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import unknown_name
from ..io import atomic_write_json
from .provenance import git_commit, machine, results_path, torch_threads, utc_now

_OFF = {"amp": False, "channels_last": False, "compile": False}
LEVERS: dict[str, dict[str, Any]] = {
    "fp32": _OFF,
    "channels_last": {**_OFF, "channels_last": True},
    "bf16": {**_OFF, "amp": True},
    "bf16+channels_last": {**_OFF, "amp": True, "channels_last": True},
    "compile": {**_OFF, "compile": True},
    "compile+bf16+channels_last": {"compile": True, "amp": True, "channels_last": True},
}
"""Each lever as the :class:`~kdtutor.train.TrainConfig` fields that turn it on (and the
others off, whatever the defaults)."""


@dataclass(frozen=True)
class LeverPreset:
    """What ``bench --levers`` measures at one scale."""

    name: str
    students: tuple[str, ...] = ("cnn_small", "resnet8x4")
    levers: tuple[str, ...] = tuple(LEVERS)
    threads: tuple[int, ...] = (1, 2)
    batch_size: int = 128
    rounds: int = 5
    steps: int = 3
    runs: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    run_levers: tuple[str, ...] = ("fp32", "bf16+channels_last")
    seeds: tuple[int, ...] = (0, 1, 2)


PRESETS = {
    "smoke": LeverPreset(
        "smoke",
        students=("cnn_micro",),
        levers=("fp32", "channels_last", "bf16"),
        threads=(1,),
        batch_size=16,
        rounds=2,
        steps=1,
        runs=(
            {
                "dataset": "shapes",
                "train_size": 200,
                "teacher": "shapes_cnn_large",
                "student": "cnn_micro",
                "epochs": 1,
            },
        ),
        run_levers=("fp32", "bf16"),
        seeds=(0,),
    ),
    "book": LeverPreset(
        "book",
        runs=(
            {
                "dataset": "shapes",
                "train_size": None,
                "teacher": "shapes_cnn_large",
                "student": "cnn_small",
                "epochs": 15,
            },
            # the ResNet pair on mnist5k: CIFAR ResNets learn shapes slowly (resnet8 alone:
            # 26.6% after 4 epochs on 20,000 images; resnet8x4 at chance after 8 epochs on
            # 5,000), so accuracy there could not show what a lever costs
            {
                "dataset": "mnist5k",
                "train_size": None,
                "teacher": "mnist5k_cnn",
                "student": "resnet8x4",
                "epochs": 8,
            },
        ),
    ),
}


def get_lever_preset(name: str) -> LeverPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise unknown_name("levers preset", name, PRESETS) from None


def _step_timer(
    student: str, lever: dict[str, Any], batch_size: int, image: tuple[int, int, int]
) -> Callable[[int], float]:
    """A function that runs ``n`` KD steps with ``lever`` and returns the seconds they took."""
    from ..losses.response import kd_loss
    from ..models import build_model

    torch.manual_seed(0)
    model = build_model(student, num_classes=10, in_channels=image[0])
    x = torch.randn(batch_size, *image)
    y = torch.randint(0, 10, (batch_size,))
    t = torch.randn(batch_size, 10)
    if lever.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    run = torch.compile(model) if lever.get("compile") else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    amp = bool(lever.get("amp"))

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                logits = run(x)
                loss = 0.1 * F.cross_entropy(logits, y) + 0.9 * kd_loss(logits, t, 4.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    steps(2)  # warm-up (and compilation)
    return steps


def time_steps(preset: LeverPreset, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Median ms per KD step for every student, lever and thread count (rounds interleaved)."""
    from ..train.config import cpu_bf16_supported

    levers = [name for name in preset.levers if cpu_bf16_supported() or "bf16" not in name]
    rows = []
    for student in preset.students:
        image = (3, 32, 32)
        for threads in preset.threads:
            with torch_threads(threads):
                timers = {name: _step_timer(student, LEVERS[name], preset.batch_size, image)
                          for name in levers}  # fmt: skip
                samples: dict[str, list[float]] = {name: [] for name in levers}
                for r in range(preset.rounds):
                    order = levers[r % len(levers) :] + levers[: r % len(levers)]
                    for name in order:
                        samples[name].append(1000 * timers[name](preset.steps) / preset.steps)
            base = statistics.median(samples["fp32"])
            for name in levers:
                ms = statistics.median(samples[name])
                rows.append({"student": student, "threads": threads, "lever": name,
                             "ms_per_step": ms, "speedup": base / ms})  # fmt: skip
                log(f"{student:10s} threads {threads}  {name:28s} {ms:8.1f} ms  x{base / ms:.2f}")
    return rows


def time_runs(preset: LeverPreset, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Whole KD runs per lever and seed: best and last accuracy, seconds per epoch."""
    from ..data import load_dataset
    from ..methods import build_distiller
    from ..models import build_model
    from ..train import fit
    from ..train.config import cpu_bf16_supported
    from ..zoo import load_teacher

    levers = [name for name in preset.run_levers if cpu_bf16_supported() or "bf16" not in name]
    rows = []
    with torch_threads(max(preset.threads)):
        for spec in preset.runs:
            train = load_dataset(spec["dataset"], "train", size=spec["train_size"])
            test = load_dataset(spec["dataset"], "test")
            teacher = load_teacher(spec["teacher"])
            for seed in preset.seeds:
                for name in levers:  # levers interleaved within each seed
                    torch.manual_seed(seed)
                    student = build_model(
                        spec["student"],
                        num_classes=train.num_classes,
                        in_channels=train.in_channels,
                    )
                    d = build_distiller("kd", student, teacher)
                    r = fit(d, train, test, epochs=spec["epochs"], seed=seed, **LEVERS[name])
                    row = {"student": spec["student"], "train_size": len(train),
                           "epochs": spec["epochs"], "lever": name, "seed": seed,
                           "best_acc": r.best_acc, "last_acc": r.last_acc,
                           "s_per_epoch": r.seconds / len(r.history)}  # fmt: skip
                    rows.append(row)
                    log(f"{spec['student']:10s} seed {seed} {name:28s} best {r.best_acc:.2f} "
                        f"last {r.last_acc:.2f}  {row['s_per_epoch']:.2f} s/epoch")  # fmt: skip
    return rows


def summarize_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per student and lever: mean and std (ddof 1) of best/last accuracy, median s/epoch,
    and the speed-up over float32 measured in the same runs."""
    out = []
    keys = sorted({(r["student"], r["lever"]) for r in rows}, key=lambda k: (k[0], k[1] != "fp32"))
    base: dict[str, float] = {}
    for student, lever in keys:
        group = [r for r in rows if r["student"] == student and r["lever"] == lever]
        best = [r["best_acc"] for r in group]
        last = [r["last_acc"] for r in group]
        sec = statistics.median(r["s_per_epoch"] for r in group)
        if lever == "fp32":
            base[student] = sec
        out.append({
            "student": student, "lever": lever, "seeds": len(group),
            "best_mean": statistics.mean(best),
            "best_std": statistics.stdev(best) if len(best) > 1 else 0.0,
            "last_mean": statistics.mean(last),
            "last_std": statistics.stdev(last) if len(last) > 1 else 0.0,
            "s_per_epoch": sec, "speedup": base.get(student, sec) / sec,
        })  # fmt: skip
    return out


def run_levers(
    preset: str | LeverPreset = "book",
    *,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Measure the CPU speed levers (see the module docstring) and write the JSON ``out``."""
    from ..train.config import cpu_bf16_supported

    spec = preset if isinstance(preset, LeverPreset) else get_lever_preset(preset)
    say = log or (lambda line: None)
    steps = time_steps(spec, say)
    runs = time_runs(spec, say)
    result = {
        "provenance": {
            "command": command or f"kdtutor.bench.levers.run_levers({spec.name!r})",
            "commit": git_commit(),
            "machine": machine(),
            "date": utc_now(),
            "torch": torch.__version__,
            "cpu_bf16": cpu_bf16_supported(),
        },
        "preset": spec.name,
        "steps": steps,
        "runs": runs,
        "summary": summarize_runs(runs),
    }
    if out is not None:
        atomic_write_json(Path(out), result)
    return result


def default_levers_path(preset: str) -> Path:
    return results_path(f"levers_{preset}.json")


def format_levers_table(result: dict[str, Any]) -> str:
    """The two tables of a :func:`run_levers` result, as plain text."""
    lines = ["step times (median ms per KD step, batch of the preset)",
             f"{'student':11s}{'threads':>8s}  {'lever':28s}{'ms':>9s}{'speed-up':>10s}"]  # fmt: skip
    for r in result["steps"]:
        lines.append(f"{r['student']:11s}{r['threads']:>8d}  {r['lever']:28s}"
                     f"{r['ms_per_step']:9.1f}{r['speedup']:9.2f}x")  # fmt: skip
    lines += ["", "KD runs (accuracy mean +- std over seeds; median s/epoch)",
              f"{'student':11s}{'lever':28s}{'best':>15s}{'last':>15s}{'s/epoch':>9s}{'speed-up':>10s}"]  # fmt: skip
    for r in result["summary"]:
        lines.append(
            f"{r['student']:11s}{r['lever']:28s}{r['best_mean']:8.2f} +- {r['best_std']:4.2f}"
            f"{r['last_mean']:8.2f} +- {r['last_std']:4.2f}{r['s_per_epoch']:9.2f}{r['speedup']:9.2f}x"
        )
    return "\n".join(lines)

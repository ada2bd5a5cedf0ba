"""``kdtutor bench --speed``: kdtutor's trainer timed side by side with a hand-written KD loop.

One run trains four variants on the same data, with the same student initialisation, batch
size and optimizer (SGD, lr 0.05, momentum 0.9, weight decay 5e-4), in float32:

``hand``
    the minimal hand-written PyTorch KD loop of :mod:`kdtutor.bench.plain` (the baseline);
``kdtutor``
    :func:`kdtutor.train.fit` with method ``kd`` and ``cache=False`` (the same work);
``kdtutor+cache``
    ``fit`` with ``kd`` and the teacher-output cache (the teacher never runs in an epoch);
``scratch``
    ``fit`` with method ``scratch``: the student alone, the floor a cached KD run can reach.

**Interleaving.** The variants run epoch by epoch in rounds (one epoch of each per round, in an
order rotated every round and reversed every other cycle), so drift in the machine's load hits every variant alike. The
first ``warmup`` rounds are discarded; each variant's time is the median of the remaining
epochs (min and max are reported too). Ratios are quotients of medians, with the targets of
the design: kdtutor / hand <= 1.05 and kdtutor+cache / scratch <= 1.15.

**What an epoch time covers.** For the ``fit`` variants it is ``history[-1]["seconds"]``: the
training loop only (no evaluation, since no test split is given). Each round calls
``fit(..., epochs=1)`` on a persistent model, so each call builds a new optimizer (momentum
restarts: harmless for timing) and re-attaches the in-memory teacher cache (hashing the
teacher's weights); that per-call setup is not part of an epoch in a real run and is reported
apart as ``setup_s``. Building the teacher cache is a one-off cost, also excluded from
``seconds`` by design: it is timed once separately (``cache_build_seconds``). For ``hand`` the
epoch is timed around :func:`~kdtutor.bench.plain.plain_kd_epoch` (synchronising CUDA first
and last).

**Memory.** A background thread samples the process's resident set size (psutil, else
``/proc/self/statm``; else ``getrusage`` gives only the lifetime peak, noted in the result)
while each variant's epochs run. RSS is a property of the whole process: it includes the data,
the teacher and every variant's model, and the allocator rarely returns memory, so
``peak_rss_mb`` tends to grow with time; ``rss_growth_mb`` (peak minus the RSS at the epoch's
start, the largest over the timed epochs) is the part that variant's epoch added. On CUDA,
``cuda_max_allocated_mb`` is ``torch.cuda.max_memory_allocated`` after a reset before each epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import non_negative, positive
from ..errors import KDTutorError, unknown_name
from ..io import atomic_write_json
from .knowledge import Pair, load_pair_teacher
from .plain import plain_kd_epoch
from .provenance import git_commit, machine, results_path, torch_threads, utc_now

__all__ = [
    "NOISY_SPREAD",
    "SPEED_PRESETS",
    "SPEED_TARGETS",
    "VARIANTS",
    "SpeedPreset",
    "default_speed_path",
    "format_speed_table",
    "get_speed_preset",
    "run_speed",
]

FORMAT = "kdtutor-speed/1"
VARIANTS: tuple[str, ...] = ("hand", "kdtutor", "kdtutor+cache", "scratch")
"""The variants timed, in the order of the table."""

SPEED_TARGETS: dict[str, tuple[str, str, float | None]] = {
    "kdtutor/hand": ("kdtutor", "hand", 1.05),
    "kdtutor+cache/scratch": ("kdtutor+cache", "scratch", 1.15),
    "kdtutor+cache/kdtutor": ("kdtutor+cache", "kdtutor", None),
}
"""Ratio name -> (numerator, denominator, target or ``None`` for information only)."""

NOISY_SPREAD = 1.5
"""A variant whose median epoch took this many times its fastest marks the run noisy: more than
half of its epochs were slowed (by other load), so the median no longer discards them."""


@dataclass(frozen=True)
class SpeedPreset:
    """Data, models and repetitions of a speed run.

    Attributes:
        name: the preset's name (part of the output file name).
        dataset: a :func:`~kdtutor.data.load_dataset` name.
        teacher: a zoo teacher name, or at full scale a model whose weights come from
            ``$KDTUTOR_DATA/teachers`` (see :func:`kdtutor.bench.knowledge.load_pair_teacher`).
        student: a :func:`~kdtutor.models.build_model` name.
        train_size: training images (``None``: the whole split).
        batch_size: samples per step.
        epochs: timed epochs (rounds) per variant.
        warmup: discarded rounds before them.
        threads: torch CPU threads (``None``: leave torch's setting); ignored on CUDA.
        lr: SGD learning rate (constant).
    """

    name: str
    dataset: str
    teacher: str
    student: str
    train_size: int | None
    batch_size: int
    epochs: int
    warmup: int = 1
    threads: int | None = None
    lr: float = 0.05

    def __post_init__(self) -> None:
        positive("batch_size", self.batch_size, "speed")
        positive("epochs", self.epochs, "speed")
        non_negative("warmup", self.warmup, "speed")
        positive("lr", self.lr, "speed")
        if self.train_size is not None:
            positive("train_size", self.train_size, "speed")


SPEED_PRESETS: dict[str, SpeedPreset] = {
    # a few seconds: checks that the engine works, not what it measures
    "smoke": SpeedPreset(
        "smoke", "mnist5k", "mnist5k_cnn", "cnn_tiny", 256, 64, epochs=2, threads=1
    ),
    # the book's measurement on 2 CPU cores: 40 epochs of 2000 images, about 1.5 min when the
    # machine is idle. Many short epochs rather than a few long ones: the median of 9 shrugs
    # off bursts of load from other processes, which on a shared 2-core machine can slow an
    # epoch tenfold
    "book": SpeedPreset(
        "book", "shapes", "shapes_cnn_large", "cnn_small", 2000, 128, epochs=9, threads=2
    ),
    # GPU, CIFAR-100 from $KDTUTOR_DATA with the trained resnet32x4 teacher there
    "full": SpeedPreset("full", "cifar100", "resnet32x4", "resnet8x4", None, 64, epochs=5),
}


def get_speed_preset(name: str) -> SpeedPreset:
    """The preset called ``name`` (an :class:`~kdtutor.errors.UnknownNameError` otherwise)."""
    try:
        return SPEED_PRESETS[name]
    except KeyError:
        raise unknown_name(
            "speed preset", name, SPEED_PRESETS, hint="Presets: smoke, book, full."
        ) from None


def default_speed_path(preset: str) -> Path:
    """``data/results/speed_<preset>.json`` (``$KDTUTOR_RESULTS`` replaces the folder)."""
    return results_path(f"speed_{preset}.json")


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------
def _rss_reader() -> tuple[str, Callable[[], int]]:
    """A function returning the current RSS in bytes, and the name of its source."""
    try:
        import psutil

        process = psutil.Process()
        return "psutil", lambda: int(process.memory_info().rss)
    except ImportError:
        pass
    statm = Path("/proc/self/statm")
    if statm.exists():
        page = os.sysconf("SC_PAGE_SIZE")

        def read_statm() -> int:
            with open(statm) as handle:
                return int(handle.read().split()[1]) * page

        return "/proc/self/statm", read_statm
    # ru_maxrss: the lifetime peak (KiB on Linux, bytes on macOS), not the current RSS
    import resource  # not on Windows, hence imported only here

    scale = 1 if sys.platform == "darwin" else 1024
    return (
        "getrusage (lifetime peak, not per variant)",
        lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
    )


class _RSSSampler:
    """Sample the RSS every ``interval`` seconds in a background thread, keeping the peak."""

    def __init__(self, read: Callable[[], int], interval: float = 0.01) -> None:
        self.read = read
        self.interval = interval
        self.start_rss = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.read())

    def __enter__(self) -> _RSSSampler:
        self.start_rss = self.peak = self.read()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.read())


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _round_order(r: int) -> tuple[str, ...]:
    """Round ``r``'s order: rotated by one each round (every variant takes every position)
    and reversed every other cycle (every variant follows each of the others)."""
    k = len(VARIANTS)
    order = VARIANTS[r % k :] + VARIANTS[: r % k]
    return order[::-1] if (r // k) % 2 else order


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _provenance(
    spec: SpeedPreset, command: str, device: torch.device, threads: int
) -> dict[str, Any]:
    host = machine()
    if device.type == "cuda":
        host += f", {torch.cuda.get_device_name(device)}"
    return {
        "command": command,
        "commit": git_commit(),
        "date": utc_now(),
        "machine": host,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "threads": threads,
        "preset": spec.name,
        "load_average_after": _load_average(),
    }


def _load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (where the system reports them)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_speed(
    preset: str | SpeedPreset = "smoke",
    *,
    device: str | None = None,
    out: str | os.PathLike[str] | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Time the four variants side by side and return (and optionally write) the result.

    Args:
        preset: a name of :data:`SPEED_PRESETS` (or a :class:`SpeedPreset`).
        device: ``"cpu"``, ``"cuda"``...; default CUDA when present, else CPU.
        out: JSON file written atomically (its folder must exist); ``None`` writes nothing.
        command: the command line recorded in the provenance.
        log: called with one line per round (``None``: silent).

    Returns:
        A JSON-able dict with ``provenance``, ``preset``, ``variants`` (per variant: epoch times,
        ``median_s``, ``min_s``, ``max_s``, ``images_per_s``, memory), ``ratios`` (value,
        target, pass) and ``cache_build_seconds``. See :func:`format_speed_table`.

    Raises:
        kdtutor.errors.UnknownNameError: unknown preset.
        kdtutor.errors.KDTutorError: the output folder does not exist.
        kdtutor.errors.DataNotFoundError: the full preset's data or teacher is missing.
    """
    from ..cache import build_cache, cache_key
    from ..data import load_dataset
    from ..methods import build_distiller
    from ..models import build_model
    from ..seeding import seed_everything
    from ..train import fit, resolve_device

    spec = preset if isinstance(preset, SpeedPreset) else get_speed_preset(preset)
    if out is not None:
        folder = Path(out).parent
        if not folder.is_dir():
            raise KDTutorError(
                f"cannot write the speed results to {out}: the folder {folder} does not exist. "
                f"Create it first (mkdir -p {folder}) or choose another --out."
            )
    dev = resolve_device(device)
    say = log if log is not None else (lambda line: None)
    command = command or f"kdtutor.bench.speed.run_speed({spec.name!r})"

    load_before = _load_average()
    with torch_threads(spec.threads, dev) as threads:
        train = load_dataset(spec.dataset, "train", size=spec.train_size)
        pair = Pair(spec.teacher, spec.student, f"{spec.teacher}->{spec.student}")
        teacher = load_pair_teacher(pair, spec.dataset, train.num_classes).to(dev).eval()
        seed_everything(0)
        student = build_model(
            spec.student, num_classes=train.num_classes, in_channels=train.in_channels
        )
        n = len(train)

        # hand: the whole split normalised once, as a user would prepare it
        images, targets = train.batch(torch.arange(n))
        hand_student = copy.deepcopy(student).to(dev)
        hand_optimizer = torch.optim.SGD(
            hand_student.parameters(), lr=spec.lr, momentum=0.9, weight_decay=5e-4
        )
        hand_generator = torch.Generator().manual_seed(0)
        distillers = {
            "kdtutor": build_distiller("kd", copy.deepcopy(student), teacher),
            "kdtutor+cache": build_distiller("kd", copy.deepcopy(student), teacher),
            "scratch": build_distiller("scratch", copy.deepcopy(student)),
        }
        kd_defaults = distillers["kdtutor"].hparams

        # the one-off cost of the teacher cache, timed apart (fit excludes it from its epochs)
        _sync(dev)
        start = time.perf_counter()
        build_cache(teacher, train, key=cache_key(teacher, train, None, []), device=dev)
        _sync(dev)
        cache_build_seconds = time.perf_counter() - start

        source, read_rss = _rss_reader()
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        warmup: dict[str, list[float]] = {v: [] for v in VARIANTS}
        setup: dict[str, list[float]] = {v: [] for v in VARIANTS[1:]}
        peak_rss = dict.fromkeys(VARIANTS, 0)
        growth = dict.fromkeys(VARIANTS, 0)
        cuda_peak: dict[str, int] = dict.fromkeys(VARIANTS, 0)
        losses: dict[str, float] = {}
        rounds = spec.warmup + spec.epochs

        for r in range(rounds):
            order = _round_order(r)
            this_round: dict[str, float] = {}
            for variant in order:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                _sync(dev)
                with _RSSSampler(read_rss) as sampler:
                    if variant == "hand":
                        start = time.perf_counter()
                        loss = plain_kd_epoch(
                            hand_student,
                            teacher,
                            images,
                            targets,
                            hand_optimizer,
                            batch_size=spec.batch_size,
                            temperature=kd_defaults.T,
                            ce_weight=kd_defaults.ce_weight,
                            kd_weight=kd_defaults.kd_weight,
                            generator=hand_generator,
                            device=dev,
                        )
                        _sync(dev)
                        seconds = time.perf_counter() - start
                    else:
                        start = time.perf_counter()
                        result = fit(
                            distillers[variant],
                            train,
                            None,
                            epochs=1,
                            batch_size=spec.batch_size,
                            lr=spec.lr,
                            schedule="constant",
                            cache=variant == "kdtutor+cache",
                            seed=r,
                            device=str(dev),
                            amp=False,  # the hand-written loop runs in float32
                            channels_last=False,
                            progress=False,
                        )
                        _sync(dev)
                        wall = time.perf_counter() - start
                        seconds = result.history[-1]["seconds"]
                        loss = result.history[-1]["loss"]
                        if r >= spec.warmup:
                            setup[variant].append(wall - seconds)
                this_round[variant] = seconds
                if r < spec.warmup:
                    warmup[variant].append(seconds)
                    continue
                times[variant].append(seconds)
                losses[variant] = float(loss)
                peak_rss[variant] = max(peak_rss[variant], sampler.peak)
                growth[variant] = max(growth[variant], sampler.peak - sampler.start_rss)
                if dev.type == "cuda":
                    cuda_peak[variant] = max(
                        cuda_peak[variant], torch.cuda.max_memory_allocated(dev)
                    )
            label = "warm-up" if r < spec.warmup else "timed"
            timings = "  ".join(f"{v} {this_round[v]:.3f}s" for v in order)
            say(f"round {r + 1}/{rounds} ({label}): {timings}")

    mb = 1024.0**2
    variants: dict[str, dict[str, Any]] = {}
    for v in VARIANTS:
        median = statistics.median(times[v])
        variants[v] = {
            "epochs_s": times[v],
            "warmup_s": warmup[v],
            "median_s": median,
            "min_s": min(times[v]),
            "max_s": max(times[v]),
            "spread": max(times[v]) / min(times[v]),
            "images_per_s": n / median,
            "setup_s": statistics.median(setup[v]) if v in setup else 0.0,
            "last_loss": losses[v],
            "peak_rss_mb": peak_rss[v] / mb,
            "rss_growth_mb": growth[v] / mb,
            "cuda_max_allocated_mb": cuda_peak[v] / mb if dev.type == "cuda" else None,
        }
    ratios = {}
    for name, (top, bottom, target) in SPEED_TARGETS.items():
        value = variants[top]["median_s"] / variants[bottom]["median_s"]
        ratios[name] = {
            "value": value,
            "target": target,
            "pass": None if target is None else bool(value <= target),
        }
    provenance = _provenance(spec, command, dev, threads)
    provenance["load_average_before"] = load_before
    result_dict: dict[str, Any] = {
        "format": FORMAT,
        "provenance": provenance,
        "preset": dataclasses.asdict(spec),
        "images_per_epoch": n,
        "batches_per_epoch": -(-n // spec.batch_size),
        "cache_build_seconds": cache_build_seconds,
        "memory_source": source,
        "variants": variants,
        "ratios": ratios,
        "noisy": any(v["median_s"] > NOISY_SPREAD * v["min_s"] for v in variants.values()),
        "notes": [
            "epoch times: median over the timed rounds; variants interleaved round by round "
            "in rotating order",
            "fit variants: one fit(epochs=1) call per round; setup_s (optimizer, cache "
            "attach) is outside the epoch time, as is the one-off cache build",
            "float32 everywhere (fit runs with amp=False, like the hand loop)",
            "RSS is the whole process's; rss_growth_mb is what one epoch of the variant added",
        ],
    }
    if out is not None:
        atomic_write_json(out, result_dict)
        say(f"wrote {out}")
    return result_dict


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------
def format_speed_table(result: dict[str, Any]) -> str:
    """The result of :func:`run_speed` as a plain-text table, with the targets and PASS/MISS."""
    prov, spec = result["provenance"], result["preset"]
    variants = result["variants"]
    cuda = any(v.get("cuda_max_allocated_mb") is not None for v in variants.values())
    hand = variants["hand"]["median_s"]
    timed = len(variants["hand"]["epochs_s"])
    lines = [
        f"speed: preset {spec['name']} ({spec['dataset']}, {spec['teacher']} -> "
        f"{spec['student']}), {prov['device']}, {prov['threads']} threads, "
        f"{result['images_per_epoch']} images/epoch, batch {spec['batch_size']}",
        f"median of {timed} epochs after {spec['warmup']} warm-up, variants interleaved; "
        f"commit {prov['commit']}, {prov['date']}",
        "",
    ]
    header = (
        f"{'variant':<15}{'s/epoch':>9}{'(min-max)':>17}{'images/s':>10}{'vs hand':>9}"
        f"{'peak RSS MB':>13}{'(+epoch)':>10}"
    )
    if cuda:
        header += f"{'CUDA MB':>10}"
    lines += [header, "-" * len(header)]
    for name in VARIANTS:
        v = variants[name]
        span = f"({v['min_s']:.3f}-{v['max_s']:.3f})"
        row = (
            f"{name:<15}{v['median_s']:>9.3f}{span:>17}{v['images_per_s']:>10.0f}"
            f"{v['median_s'] / hand:>9.3f}{v['peak_rss_mb']:>13.0f}"
            f"{'+' + format(v['rss_growth_mb'], '.0f'):>10}"
        )
        if cuda:
            row += f"{v['cuda_max_allocated_mb']:>10.0f}"
        lines.append(row)
    lines += [
        "",
        f"teacher cache built once in {result['cache_build_seconds']:.3f} s "
        "(outside the epoch times)",
    ]
    for name, r in result["ratios"].items():
        line = f"{name:<24}{r['value']:>7.3f}"
        if r["target"] is not None:
            line += f"   target <= {r['target']:.2f}   {'PASS' if r['pass'] else 'MISS'}"
        lines.append(line)
    worst = max(variants, key=lambda name: variants[name]["spread"])
    spread = variants[worst]["spread"]
    load = prov.get("load_average_before")
    load_text = f", load average before the run {load[0]:.2f}" if load else ""
    if result.get("noisy"):
        lines.append(
            f"NOISY: most epochs of a variant were slowed by other load ({worst} up to "
            f"{spread:.1f}x{load_text}); the ratios are unreliable, rerun on an idle machine"
        )
    elif spread > NOISY_SPREAD:
        lines.append(
            f"note: some epochs were slowed by other load ({worst} up to {spread:.1f}x"
            f"{load_text}); the medians discard them"
        )
    return "\n".join(lines)

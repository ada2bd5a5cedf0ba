"""The schemes suite: offline, online and self-distillation on one student, with what each costs.

Every scheme trains the book protocol's first student (``cnn_wide_s2``, :data:`BOOK_PRESET`)
and reports each network it can deploy (a peer, a branch, an exit, a generation, an ensemble)
as one CSV row: its accuracy, its right/wrong flag per test image, its test accuracy after
every epoch, and its cost. The cost is counted in training FLOPs (one real training step
counted by :func:`~kdtutor.bench.cost.step_flops`, times the steps of the run) and in seconds,
and split into the run itself (``train_*``) and what it needed before (``prior_*``): the
teacher's training for offline KD, the student trained alone for Tf-KD's self mode, the earlier
generations of a Born-Again chain. ``infer_flops`` is what the scored network costs per image
at test time (an ensemble of K networks costs K of them).

``kdtutor bench --suite schemes --preset book`` runs it into ``data/results/schemes_book.csv``
(resumable: a finished scheme and seed is never run again).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KDTutorError
from .knowledge import (
    COLUMNS,
    Preset,
    canonical_preset,
    get_preset,
    load_pair_teacher,
    load_results,
    method_hparams,
    preset_data,
    resumed_rows,
    run_tasks,
    suite_header,
    write_results,
)
from .provenance import results_path
from .significance import encode_correct

__all__ = [
    "PUBLISHED_SCHEME_GAINS",
    "SCHEMES",
    "SCHEME_COLUMNS",
    "Scheme",
    "default_schemes_path",
    "load_schemes",
    "page_rows",
    "run_scheme",
    "run_schemes_suite",
]


@dataclass(frozen=True)
class Scheme:
    """One way of training the student: a registered method with its settings.

    Attributes:
        label: the scheme's name in the CSV (rows are ``label/network``).
        method: the registered distiller (``kdtutor methods``).
        hparams: settings replacing the method's defaults (e.g. ``{"num_peers": 4}``).
        epochs: the schedule's length (``None``: the preset's).
        teacher: ``"none"``, ``"zoo"`` (the pair's trained teacher, charged with its
            training) or ``"scratch"`` (this seed's student trained alone: Tf-KD's self mode
            and generation 0 of a Born-Again chain, charged with that run).
        generations: more than 1 makes a Born-Again chain: generation g is taught by
            generation g - 1, and the ensembles of generations 0..g are scored too.
        student: the network trained (``None``: the pair's student).
    """

    label: str
    method: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    teacher: str = "none"
    generations: int = 1
    student: str | None = None


SCHEMES: tuple[Scheme, ...] = (
    Scheme("scratch", "scratch"),
    Scheme("scratch_e40", "scratch", epochs=40),
    Scheme("scratch_e80", "scratch", epochs=80),
    Scheme("scratch_r8", "scratch", student="resnet8_half_s2"),
    Scheme("kd", "kd", teacher="zoo"),
    Scheme("dml2", "dml"),
    Scheme("dml2_mixed", "dml", {"peers": ("resnet8_half_s2",)}),
    Scheme("dml4", "dml", {"num_peers": 4}),
    Scheme("one", "one"),
    Scheme("kdcl_naive", "kdcl", {"ensemble": "naive"}),
    Scheme("kdcl_minlogit", "kdcl", {"ensemble": "min_logit"}),
    Scheme("byot", "byot"),
    Scheme("ban", "ban", teacher="scratch", generations=3),
    Scheme("tfkd_self", "tfkd", {"mode": "self"}, teacher="scratch"),
    Scheme("cskd", "cskd"),
)
"""The chapter's schemes, in the order they run: the student alone first (at 20 epochs it is
generation 0 of the Born-Again chain and Tf-KD's teacher; at 40 and 80 epochs it draws the
frontier of what more training alone buys), then offline KD, online (DML with 2 peers, a
ResNet peer, 4 peers; ONE; KDCL's two ensembles) and self-distillation (BYOT, BAN, Tf-KD,
CS-KD)."""

SCHEME_COLUMNS: tuple[str, ...] = (
    *COLUMNS,
    "scheme", "network", "epochs", "train_flops", "prior_flops", "total_flops",
    "infer_flops", "train_seconds", "prior_seconds", "total_seconds", "curve",
)  # fmt: skip
"""The knowledge suite's columns (``method`` holds ``scheme/network``, ``student`` the
network's architecture), then the scheme, the network, the run's epochs, the costs and the
network's test accuracy after each epoch (``;``-joined; empty for an ensemble of
generations, which exists only at the end)."""


def _published(
    network: str, alone: float, distilled: float, source: str, *, error: bool = False
) -> dict[str, Any]:
    """One published result: the network alone and distilled, as top-1 accuracies (an error
    rate ``e`` becomes ``100 - e``), and the gain ``distilled - alone``, in points."""
    quoted = f"top-1 {'error' if error else 'accuracy'} {alone:.2f} -> {distilled:.2f}"
    if error:
        alone, distilled = 100.0 - alone, 100.0 - distilled
    return {
        "network": network,
        "dataset": "CIFAR-100",
        "alone": round(alone, 2),
        "distilled": round(distilled, 2),
        "gain": round(distilled - alone, 2),
        "quoted": quoted,
        "source": source,
    }


_MCL = (
    "winycg/MCL-OKD README (a re-implementation, not the paper's table): CIFAR-100, 300 "
    "epochs, {k} by the script's default (--num-branches 4), T = {t}"
)
_SELF_KD_LIB = "winycg/Self-KD-Lib README (a re-implementation): CIFAR-100, ResNet-50"
_TFKD = "yuanli2333/Teacher-free-Knowledge-Distillation (the authors' code): {where}"

PUBLISHED_SCHEME_GAINS: dict[str, tuple[dict[str, Any], ...]] = {
    "dml2": (
        _published("MobileNet", 73.65, 76.32,
                   "baiyfbupt/DML (PaddleSlim re-implementation): CIFAR-100, two MobileNet "
                   "peers"),
    ),
    "dml4": (
        _published("ResNet-32", 28.91, 24.92, _MCL.format(k="4 peers", t=2), error=True),
        _published("ResNet-110", 23.62, 21.51, _MCL.format(k="4 peers", t=2), error=True),
    ),
    "one": (
        _published("ResNet-32", 28.91, 25.74, _MCL.format(k="4 branches", t=3), error=True),
        _published("ResNet-110", 23.62, 22.19, _MCL.format(k="4 branches", t=3), error=True),
    ),
    "byot": (_published("ResNet-50", 77.79, 79.76, _SELF_KD_LIB),),
    "cskd": (_published("ResNet-50", 77.79, 79.99, _SELF_KD_LIB),),
    "tfkd_self": (
        _published("ResNet18", 75.87, 77.10, _TFKD.format(where="repository figures")),
        _published("MobileNetV2", 68.38, 70.96, _TFKD.format(where="repository figures")),
        _published("ResNeXt29-8x64d", 81.03, 82.08, _TFKD.format(where="README text")),
    ),
}  # fmt: skip
"""Published gains of the chapter's schemes over the same network trained alone, keyed by the
label in :data:`SCHEMES`: DML (Zhang et al., 2018), ONE (Lan et al., 2018), BYOT (Zhang et
al., 2019), CS-KD (Yun et al., 2020) and Tf-KD's self-training (Yuan et al., 2020). Schemes
without a verified published number are absent (Born-Again Networks, KDCL, DML with a ResNet
peer); offline KD's numbers are :data:`kdtutor.bench.PUBLISHED_CIFAR100`.

Each entry holds ``network``, ``dataset``, ``alone`` and ``distilled`` (top-1 accuracy in %,
an error rate ``e`` converted to ``100 - e``), ``gain`` = ``distilled - alone`` (points),
``quoted`` (the numbers as the source prints them) and ``source`` (the repository, and whether
it re-implements the method). All are CIFAR-100 results of ResNet- or MobileNet-sized networks
trained for hundreds of epochs (MCL-OKD: 300), not this suite's 20 epochs of a 24k-parameter
CNN on ``shapes``: compare directions, not sizes. MCL-OKD's scripts train 4 networks by
default, so its DML numbers sit under ``dml4``; its ONE has 4 branches where ours has 3."""

_NUMERIC = {
    "epochs": int,
    **{k: float for k in ("train_flops", "prior_flops", "total_flops", "infer_flops")},
    **{k: float for k in ("train_seconds", "prior_seconds", "total_seconds")},
}


def default_schemes_path(preset_name: str) -> Path:
    """``data/results/schemes_<preset>.csv`` (``$KDTUTOR_RESULTS`` replaces the folder)."""
    return results_path(f"schemes_{canonical_preset(preset_name)}.csv")


def load_schemes(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows (numbers converted, ``curve`` as a list of floats) and header of a schemes CSV."""
    rows, header = load_results(path)
    for row in rows:
        for key, kind in _NUMERIC.items():
            row[key] = kind(row[key])
        row["curve"] = [float(v) for v in row["curve"].split(";")] if row["curve"] else []
    return rows, header


def _get_scheme(label: str) -> Scheme:
    for scheme in SCHEMES:
        if scheme.label == label:
            return scheme
    from ..errors import unknown_name

    raise unknown_name("scheme", label, [s.label for s in SCHEMES])


def _weights_path(preset_name: str, scheme: str, seed: int, generation: int = 0) -> Path:
    from ..data.diskcache import cache_dir

    folder = cache_dir() / "schemes" / preset_name
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{scheme}_seed{seed}_gen{generation}.pt"


def _fit_settings(preset: Preset, epochs: int) -> dict[str, Any]:
    """``fit``'s settings for a run of the preset (all but the data and the seed)."""
    return {
        "epochs": epochs,
        "batch_size": preset.batch_size,
        "lr": preset.lr,
        "schedule": preset.schedule,
        "milestones": preset.milestones,
        "augment": preset.augment,
        **preset.train,
    }


def _fit(distiller: Any, preset: Preset, epochs: int, seed: int) -> Any:
    from ..train import fit

    return fit(
        distiller,
        preset_data(preset, "train"),
        preset_data(preset, "test"),
        seed=seed,
        **_fit_settings(preset, epochs),
    )


def _student(name: str, seed: int, weights: Path | None = None) -> Any:
    from ..models import build_model
    from ..seeding import seed_everything

    seed_everything(seed)
    return build_model(name, num_classes=10, weights_path=weights)


def _scratch_teacher(preset_name: str, preset: Preset, student: str, seed: int) -> Any:
    """This seed's student trained alone (the ``scratch`` scheme), from its saved weights, or
    trained again (deterministically: the same run) when they are missing."""
    from ..methods import build_distiller
    from ..train.recorder import save_student

    path = _weights_path(preset_name, "scratch", seed)
    if not path.exists():
        distiller = build_distiller("scratch", _student(student, seed))
        _fit(distiller, preset, preset.epochs, seed)
        save_student(distiller.student, path, {"model": student, "seed": seed})
    teacher = _student(student, seed, path)
    return teacher.eval().requires_grad_(False)


def _curves(history: Sequence[dict[str, Any]], networks: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in networks:
        values = [h["test"][name]["accuracy"] if "test" in h else h["test_acc"] for h in history]
        out[name] = ";".join(f"{v:.2f}" for v in values)
    return out


def _network_rows(
    distiller: Any,
    preset: Preset,
    scheme: Scheme,
    seed: int,
    *,
    curves: Mapping[str, str],
    train: Any,
    prior: Any,
    extra: Mapping[str, Callable[[Any], Any]] | None = None,
    extra_flops: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per network of ``distiller.eval_networks()`` (and of ``extra``)."""
    import torch

    from ..data import BatchLoader
    from ..features import evaluating
    from ..methods import get_method
    from .cost import network_flops

    test = preset_data(preset, "test")
    networks = dict(distiller.eval_networks())
    networks.update(extra or {})
    flags: dict[str, Any] = {}
    with torch.no_grad(), evaluating(distiller):
        logits: dict[str, list[Any]] = {name: [] for name in networks}
        for batch in BatchLoader(test, 512):
            for name, network in networks.items():
                logits[name].append(network(batch.x).argmax(dim=1) == batch.y)
        flags = {name: torch.cat(v).numpy() for name, v in logits.items()}
    shape = tuple(test.images.shape[1:])
    rows = []
    for name, correct in flags.items():
        curve = curves.get(name, "")
        accuracies = [float(v) for v in curve.split(";")] if curve else []
        last = 100.0 * float(correct.mean())
        best = max(accuracies) if accuracies else last
        infer = (extra_flops or {}).get(name)
        if infer is None:
            infer = network_flops(networks[name], shape)
        rows.append(
            {
                "pair": preset.pairs[0].label,
                "teacher": preset.pairs[0].teacher if scheme.teacher == "zoo" else "",
                "student": _network_architecture(distiller, scheme, preset, name),
                "method": f"{scheme.label}/{name}",
                "family": get_method(scheme.method).family,
                "seed": seed,
                "best_acc": round(best, 4),
                "best_epoch": accuracies.index(best) + 1 if accuracies else len(accuracies),
                "last_acc": round(last, 4),
                "seconds": round(train.seconds, 2),
                "hparams": ";".join(f"{k}={v}" for k, v in sorted(scheme.hparams.items())),
                "correct": encode_correct(correct),
                "scheme": scheme.label,
                "network": name,
                "epochs": scheme.epochs or preset.epochs,
                "train_flops": f"{train.flops:.12g}",
                "prior_flops": f"{prior.flops:.12g}",
                "total_flops": f"{(train + prior).flops:.12g}",
                "infer_flops": f"{infer:.12g}",
                "train_seconds": round(train.seconds, 2),
                "prior_seconds": round(prior.seconds, 2),
                "total_seconds": round((train + prior).seconds, 2),
                "curve": curve,
            }
        )
    return rows


def _network_architecture(distiller: Any, scheme: Scheme, preset: Preset, network: str) -> str:
    student = scheme.student or preset.pairs[0].student
    peers = tuple(scheme.hparams.get("peers", ()))
    if network.startswith("peer") and network[4:].isdigit() and int(network[4:]) > 1 and peers:
        return peers[int(network[4:]) - 2]
    if network == "ensemble" and peers:
        return "+".join((student, *peers))
    return student


def run_scheme(
    scheme: Scheme | str,
    seed: int,
    preset: Preset | str = "book",
    *,
    preset_name: str | None = None,
) -> list[dict[str, Any]]:
    """Train one scheme on one seed and return one CSV row per network it scores."""
    import torch

    from ..methods import build_distiller
    from ..train.recorder import save_student
    from .cost import Cost, run_cost, teacher_cost

    scheme = _get_scheme(scheme) if isinstance(scheme, str) else scheme
    if isinstance(preset, str):
        preset_name, preset = canonical_preset(preset), get_preset(preset)
    preset_name = preset_name or "book"
    if preset.threads:
        torch.set_num_threads(preset.threads)
    pair = preset.pairs[0]
    train_data = preset_data(preset, "train")
    epochs = scheme.epochs or preset.epochs
    student_name = scheme.student or pair.student
    hparams = {**method_hparams(scheme.method, epochs, len(train_data)), **scheme.hparams}
    shape = tuple(train_data.images.shape[1:])

    def one_run(teacher: Any, init_seed: int) -> tuple[Any, Any, Cost]:
        distiller = build_distiller(
            scheme.method, _student(student_name, init_seed), teacher, hparams,
            input_shape=shape,
        )  # fmt: skip
        result = _fit(distiller, preset, epochs, seed)
        cost = run_cost(
            distiller, train_data, result, batch_size=preset.batch_size,
            teacher_cached=teacher is not None,
        )  # fmt: skip
        return distiller, result, cost

    if scheme.teacher == "none":
        teacher, prior = None, Cost()
    elif scheme.teacher == "zoo":
        teacher = load_pair_teacher(pair, preset.dataset, train_data.num_classes)
        prior = teacher_cost(pair.teacher)
    elif scheme.teacher == "scratch":
        teacher = _scratch_teacher(preset_name, preset, student_name, seed)
        prior = _scratch_cost(preset, student_name, seed)
    else:
        raise KDTutorError(
            f"scheme {scheme.label!r}: teacher must be 'none', 'zoo' or 'scratch', got "
            f"{scheme.teacher!r}."
        )
    if scheme.generations == 1:
        distiller, result, cost = one_run(teacher, seed)
        if scheme.label == "scratch":
            path = _weights_path(preset_name, "scratch", seed)
            save_student(distiller.student, path, {"model": student_name, "seed": seed})
        names = list(distiller.eval_networks())
        return _network_rows(
            distiller, preset, scheme, seed,
            curves=_curves(result.history, names), train=cost, prior=prior,
        )  # fmt: skip
    return _born_again(scheme, seed, preset, teacher, prior, student_name, hparams, epochs)


def _scratch_cost(preset: Preset, student: str, seed: int) -> Any:
    """The FLOPs of this seed's scratch run, counted on a fresh distiller (they do not depend
    on the weights); its seconds are added by the suite from the scratch row."""
    from ..methods import build_distiller
    from .cost import Cost, step_flops

    distiller = build_distiller("scratch", _student(student, seed))
    train = preset_data(preset, "train")
    batch = train.batch(list(range(preset.batch_size)))
    per_image = step_flops(distiller, batch) / preset.batch_size
    return Cost(flops=per_image * len(train) * preset.epochs)


def _born_again(
    scheme: Scheme,
    seed: int,
    preset: Preset,
    generation0: Any,
    prior: Any,
    student: str,
    hparams: Mapping[str, Any],
    epochs: int,
) -> list[dict[str, Any]]:
    """Generations 1..G, each taught by the last (generation 0: the student alone), scored
    alone and as the ensembles of generations 0..g: a chain
    (:func:`~kdtutor.chain.fit_chain`) of G copies of the student's architecture, each
    initialised from its own seed; the batches follow the run's seed."""
    from ..chain import fit_chain
    from ..losses.schemes import ensemble_log_probs
    from .cost import network_flops, run_cost

    rows: list[dict[str, Any]] = []
    generations = [generation0]
    train = preset_data(preset, "train")
    shape = tuple(train.images.shape[1:])
    single = network_flops(generation0, shape)
    charged = [prior]  # the chain's cost so far: generation 0, then each generation trained

    def rows_and_cost(stage: int, distiller: Any, result: Any) -> None:
        g = stage + 1
        cost = run_cost(distiller, train, result, batch_size=preset.batch_size)
        generations.append(distiller.student.eval().requires_grad_(False))
        members = list(generations)

        def ensemble(x: Any, members: list[Any] = members) -> Any:
            return ensemble_log_probs([m(x) for m in members])

        gen_rows = _network_rows(
            distiller, preset, scheme, seed,
            curves={"student": _curves(result.history, ["student"])["student"]},
            train=cost, prior=charged[-1],
            extra={"ensemble": ensemble}, extra_flops={"ensemble": single * len(members)},
        )  # fmt: skip
        for row in gen_rows:
            row["network"] = f"gen{g}" if row["network"] == "student" else f"ens0-{g}"
            row["method"] = f"{scheme.label}/{row['network']}"
        rows.extend(gen_rows)
        charged.append(charged[-1] + cost)

    fit_chain(
        generation0, [student] * scheme.generations, train, preset_data(preset, "test"),
        method=scheme.method, hparams=hparams, seed=seed,
        init_seed=lambda stage: seed + 1000 * (stage + 1), on_stage=rows_and_cost,
        **_fit_settings(preset, epochs),
    )  # fmt: skip
    return rows


def _charge_scratch_seconds(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """Add the wall time of this seed's scratch run (known from its row) to a row whose
    scheme was taught by it; :func:`run_scheme` counts its FLOPs but cannot time it."""
    for other in rows:
        if other["method"] == "scratch/student" and int(other["seed"]) == int(row["seed"]):
            extra = float(other["train_seconds"])
            row["prior_seconds"] = round(float(row["prior_seconds"]) + extra, 2)
            row["total_seconds"] = round(float(row["total_seconds"]) + extra, 2)
            return


def _run_scheme_task(task: tuple[str, int, str]) -> list[dict[str, Any]]:
    label, seed, preset_name = task
    return run_scheme(label, seed, preset_name, preset_name=preset_name)


def run_schemes_suite(
    preset_name: str = "book",
    *,
    schemes: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int = 1,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run every (scheme, seed) not yet in ``out``; returns all rows.

    The student alone (``scratch``) runs first for every seed: its weights are generation 0
    of the Born-Again chain and Tf-KD's teacher (saved under the disk cache; re-made by
    training again when missing). Rows are written atomically after each scheme, so an
    interrupted suite loses only the schemes in flight.
    """
    preset = get_preset(preset_name)
    preset_name = canonical_preset(preset_name)
    labels = list(schemes or [s.label for s in SCHEMES])
    for label in labels:
        _get_scheme(label)
    seeds = list(seeds if seeds is not None else preset.seeds)
    path = Path(out) if out is not None else default_schemes_path(preset_name)
    rows = resumed_rows(path, preset_name)
    done = {(r["scheme"], int(r["seed"])) for r in rows}
    order = sorted(labels, key=lambda label: label != "scratch")
    tasks = [(label, seed, preset_name) for label in order for seed in seeds
             if (label, seed) not in done]  # fmt: skip
    header = suite_header(preset_name, command or "kdtutor " + " ".join(sys.argv[1:]))
    if log:
        log(f"{len(tasks)} scheme runs to do ({len(done)} already in {path})")

    def record(new: list[dict[str, Any]]) -> None:
        for row in new:
            if _get_scheme(row["scheme"]).teacher == "scratch":
                _charge_scratch_seconds(row, rows)
        rows.extend(new)
        write_results(path, header, rows, SCHEME_COLUMNS)
        if log:
            for row in new:
                log(
                    f"{row['method']:<22} seed {row['seed']}  last {row['last_acc']:.2f}  "
                    f"{float(row['total_flops']) / 1e12:.2f} TFLOPs  {row['seconds']:.0f} s"
                )

    run_tasks(_run_scheme_task, tasks, jobs, record)  # type: ignore[arg-type]
    return rows


def page_rows(
    scale: str, schemes: Sequence[str] | None = None, *, rerun: bool = False, jobs: int = 2
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The schemes suite's rows and header, as a page of the book reads them.

    At ``"smoke"`` scale (the tests) a tiny suite of ``schemes`` (default: all) runs now, one
    epoch on 256 images, into a temporary folder that also takes the disk cache (so the
    scratch weights it saves go there: ``KDTUTOR_CACHE`` is set for this process). At any
    other scale the committed ``data/results/schemes_book.csv`` is read; with ``rerun`` the
    (scheme, seed) runs it lacks are made first (hours on 2 cores).
    """
    if scale == "smoke":
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="kdtutor-schemes-"))
        os.environ["KDTUTOR_CACHE"] = str(folder / "cache")
        out = folder / "schemes_smoke.csv"
        run_schemes_suite("smoke", schemes=schemes, out=out, log=None, command="smoke page")
        return load_schemes(out)
    out = default_schemes_path("book")
    if rerun:
        run_schemes_suite("book", schemes=schemes, out=out, jobs=jobs)
    return load_schemes(out)

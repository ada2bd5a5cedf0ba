"""Run an :class:`~kdtutor.experiment.Experiment` into a run folder, resumably.

A run folder holds everything one experiment leaves behind::

    config.yaml          the resolved experiment (rerun it with --config)
    metrics.jsonl        one line per epoch and seed, appended while training runs
    last-seed<N>.pt      resumable checkpoint after the last finished epoch
    best-seed<N>.pt      the student's weights at its best test score
    student-seed<N>.pt   the student's final weights (with save_student)
    results.json         per-seed results, mean and std, with the command
    tensorboard/         TensorBoard scalars (when the tensorboard package is installed)

A folder that already holds a run is never overwritten silently: ``resume=True`` continues
each seed from its checkpoint (bit-identical on CPU to an uninterrupted run), and
``overwrite=True`` deletes the previous run's files first.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import distributed
from .errors import KDTutorError
from .experiment import Experiment, load_experiment, write_experiment

__all__ = ["RunFolderError", "prepare_run_folder", "run_experiment"]

SMOKE_SIZES = {"train": 1000, "test": 500}
"""Training and test images used at smoke scale when the experiment gives no sizes."""

_OUTPUTS = ("config.yaml", "metrics.jsonl", "results.json")
_PATTERNS = ("last-seed*.pt", "best-seed*.pt", "student-seed*.pt")


class RunFolderError(KDTutorError, ValueError):
    """A run folder that holds another run, or that cannot be written."""


@dataclass(frozen=True)
class Loaded:
    """The data and models of an experiment, loaded and checked."""

    train: Any
    test: Any
    teacher: Any
    num_classes: int = 0
    """Outputs a network of the data needs (classes; see :func:`_data_shape` for the other
    tasks)."""
    in_channels: int = 3
    input_shape: tuple[int, ...] = ()
    """One input, without the batch (``(8, 3, 32, 32)`` for the clips)."""


def _existing_outputs(folder: Path) -> list[Path]:
    found = [folder / name for name in _OUTPUTS if (folder / name).exists()]
    for pattern in _PATTERNS:
        found.extend(sorted(folder.glob(pattern)))
    if (folder / "tensorboard").exists():
        found.append(folder / "tensorboard")
    return found


def prepare_run_folder(
    folder: str | os.PathLike[str], *, resume: bool, overwrite: bool
) -> tuple[Path, Experiment | None]:
    """Check a run folder before any work: returns it and, when it holds a run to resume,
    that run's experiment.

    Raises:
        RunFolderError: the path is a file; it holds a run and neither ``resume`` nor
            ``overwrite`` is set; both are set; ``resume`` with nothing to resume.
    """
    path = Path(folder).expanduser()
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: pick one.")
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"the run folder {path} is a file: give a folder (it is created).")
    existing = _existing_outputs(path) if path.is_dir() else []
    if existing and not (resume or overwrite):
        raise RunFolderError(
            f"{path} already holds a run ({existing[0].name}): add --resume to continue it, "
            "--overwrite to start it again, or give another --run-dir."
        )
    previous = None
    if resume:
        if not (path / "config.yaml").is_file():
            raise RunFolderError(
                f"nothing to resume in {path}: it holds no config.yaml. Start the run without "
                "--resume."
            )
        previous = load_experiment(path / "config.yaml")
    if overwrite:
        for item in existing:
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    return path, previous


def _check_checkpoint_paths(
    checkpoint: str, seeds: tuple[int, ...], *, resume: bool, overwrite: bool
) -> None:
    """A ``--checkpoint`` of an earlier run is resumed or overwritten only when asked."""
    paths = [Path(checkpoint.replace("{seed}", str(seed))) for seed in seeds]
    for path in paths:
        if path.is_dir():
            raise RunFolderError(f"the checkpoint path {path} is a folder: give a file path.")
    existing = [p for p in paths if p.exists()]
    if existing and not (resume or overwrite):
        raise RunFolderError(
            f"the checkpoint {existing[0]} exists: add --resume to continue that run or "
            "--overwrite to start it again."
        )
    if overwrite:
        for path in existing:
            path.unlink()


def _differences(a: Experiment, b: Experiment) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    out = []
    for key in sorted(set(da) | set(db)):
        if isinstance(da.get(key), dict) or isinstance(db.get(key), dict):
            sub_a, sub_b = da.get(key) or {}, db.get(key) or {}
            for sub in sorted(set(sub_a) | set(sub_b)):
                if sub_a.get(sub) != sub_b.get(sub):
                    out.append(f"{key}.{sub}: {sub_a.get(sub)!r} then, {sub_b.get(sub)!r} now")
        elif da.get(key) != db.get(key):
            out.append(f"{key}: {da.get(key)!r} then, {db.get(key)!r} now")
    return out


def _method_task(method: Any) -> str:
    """The task a registered method's ``forward`` reads targets of (its ``task`` class
    attribute; ``classification`` for the methods that declare none)."""
    return getattr(method, "task", "") or "classification"


def _check_method_task(experiment: Experiment, method: Any) -> None:
    """Refuse a method written for another task than the experiment's."""
    task = _method_task(method)
    if task != experiment.task:
        raise KDTutorError(
            f"method {experiment.method!r} is a {task} method, but the experiment's task is "
            f"{experiment.task!r}: pick a {experiment.task} method (`kdtutor methods --task "
            f"{experiment.task}` lists them), or give --task {task} with data of that task."
        )


def _task_splits(experiment: Experiment, smoke: bool) -> tuple[Any, Any]:
    """The train and test splits of one of chapter 8's datasets for the experiment's task
    (:func:`~kdtutor.data.task_splits.task_split`; smoke scale caps them as
    :data:`SMOKE_SIZES` does the image datasets)."""
    from .data.task_splits import DATASET_TASKS, TASK_SIZES, task_split

    served = DATASET_TASKS[experiment.dataset]
    if experiment.task not in served:
        raise KDTutorError(
            f"the {experiment.dataset!r} data serves the tasks {', '.join(served)}, not "
            f"{experiment.task!r}: give one of them with --task."
        )
    sizes = TASK_SIZES[experiment.dataset]
    train_size = experiment.train_size or (
        min(SMOKE_SIZES["train"], sizes["train"]) if smoke else None
    )
    test_size = experiment.test_size or (min(SMOKE_SIZES["test"], sizes["test"]) if smoke else None)
    train = task_split(experiment.dataset, experiment.task, "train", train_size)
    test = task_split(experiment.dataset, experiment.task, "test", test_size)
    if experiment.task == "retrieval":
        _check_positive_pairs(test, experiment.dataset)
    return train, test


def _check_positive_pairs(test: Any, dataset: str) -> None:
    """Refuse a retrieval test split in which no identity appears twice: recall@k would have
    no positive for any query (the faces' split deals its identities round-robin, so a prefix
    shorter than twice their number holds each at most once)."""
    labels = test.targets.tolist()
    if len(set(labels)) == len(labels):
        from .data.faces import FACE_SPLITS

        identities = FACE_SPLITS["test"][1]
        raise KDTutorError(
            f"the {dataset!r} test split of {len(labels)} images holds no two images of one "
            "identity, so retrieval has no positive pair to find: give --test-size of at "
            f"least {2 * identities} (the split deals its {identities} identities in turn) or "
            "leave it out."
        )


def _data_shape(data: Any) -> tuple[int, int, tuple[int, ...]]:
    """``(outputs, in_channels, input_shape)`` of a split: the classes of a classification or
    class-map dataset (the background counted, as torchvision does), 1 for depth, the keypoint
    slots, the training identities of the faces, the lane slots and the background for the
    roads, the image channels for super-resolution; the channels and shape of one input."""
    if hasattr(data, "images") and getattr(data, "in_channels", None):  # an ArrayDataset
        return int(data.num_classes), int(data.in_channels), tuple(data.images.shape[1:])
    x = data[0][0]
    shape = tuple(int(s) for s in x.shape)
    outputs = getattr(data, "num_classes", None)
    if outputs is None and hasattr(data, "num_lanes"):
        outputs = 1 + int(data.num_lanes)
    if outputs is None:  # an image-to-image task: as many outputs as input channels
        outputs = shape[-3]
    return int(outputs), shape[-3], shape


def _build_network(spec: str, loaded: Loaded, *, role: str, stats: bool = True) -> Any:
    """A network of the experiment's data from its spec. A chapter-8 network
    (:mod:`kdtutor.models.dense`) built without weights whose spec gives no ``mean`` and
    ``std`` gets the train split's channel statistics
    (:func:`~kdtutor.data.task_splits.split_stats`) in its fixed normalisation, as the zoo's
    teachers hold them (``stats=False``: 0 and 1)."""
    from .specs import build_from_spec, parse_model_spec

    parsed = parse_model_spec(spec)
    if stats and parsed.kind == "registry" and parsed.weights is None:
        parsed = _with_split_stats(parsed, loaded)
    return build_from_spec(
        parsed, num_classes=loaded.num_classes, in_channels=loaded.in_channels, role=role
    )


def _with_split_stats(spec: Any, loaded: Loaded) -> Any:
    from .data.task_splits import DATASET_TASKS, split_stats
    from .models.registry import get_entry
    from .specs import ModelSpec

    dataset = getattr(loaded.train, "name", None)
    options = spec.options
    if dataset not in DATASET_TASKS or "mean" in options or "std" in options:
        return spec
    try:
        accepted, _ = get_entry(spec.name).options()
    except KDTutorError:  # a torchvision model (tv:...): no fixed normalisation to fill
        return spec
    if "mean" not in accepted or "std" not in accepted:
        return spec
    task = getattr(getattr(loaded.train, "task", None), "name", None)
    mean, std = split_stats(dataset, task)
    options.update(mean=tuple(mean), std=tuple(std))
    return ModelSpec(spec.kind, spec.name, spec.weights, tuple(sorted(options.items())))


def load_experiment_data(experiment: Experiment) -> Loaded:
    """Load the splits and the teacher of an experiment (checks run before any training).

    Chapter 8's datasets (:data:`~kdtutor.data.task_splits.DATASET_TASKS`) come from
    :func:`~kdtutor.data.task_splits.task_split` for the experiment's ``task``, and
    :mod:`kdtutor.models.dense` is imported so that their networks' names resolve; any other
    dataset is a classification dataset (:func:`kdtutor.data.load_dataset`).

    Raises:
        KDTutorError: the method is another task's, needs a teacher that is not given, or
            the dataset does not serve the task.
    """
    from .data import dataset_info, load_dataset
    from .data.task_splits import DATASET_TASKS
    from .methods import get_method
    from .models.trained_on import check_trained_on
    from .scales import current_scale

    method = get_method(experiment.method)  # fail fast on bad names, before loading anything
    _check_method_task(experiment, method)
    if method.requires_teacher and experiment.teacher is None:
        from .zoo_recipes.applications import BASELINES

        alone = BASELINES.get(experiment.task)
        raise KDTutorError(
            f"method {experiment.method!r} needs a teacher: add --teacher zoo:<name> (see "
            "`kdtutor zoo list`) or NAME:weights.pt"
            + (f", or use --method {alone} to train the student alone." if alone else ".")
        )
    smoke = current_scale(experiment.scale) == "smoke"
    if experiment.dataset in DATASET_TASKS:
        import kdtutor.models.dense  # noqa: F401  (registers the chapter-8 networks)

        train, test = _task_splits(experiment, smoke)
    elif experiment.task != "classification":
        raise KDTutorError(
            f"task {experiment.task!r} needs one of chapter 8's datasets "
            f"({', '.join(d for d, tasks in DATASET_TASKS.items() if experiment.task in tasks)}"
            f"); {experiment.dataset!r} is a classification dataset (--task classification)."
        )
    else:
        info = dataset_info(experiment.dataset)
        train_size = experiment.train_size or (
            min(SMOKE_SIZES["train"], info.sizes[0]) if smoke else None
        )
        test_size = experiment.test_size or (
            min(SMOKE_SIZES["test"], info.sizes[1]) if smoke else None
        )
        train = load_dataset(experiment.dataset, "train", size=train_size, root=experiment.data)
        test = load_dataset(experiment.dataset, "test", size=test_size, root=experiment.data)
    outputs, channels, shape = _data_shape(train)
    loaded = Loaded(train, test, None, outputs, channels, shape)
    if experiment.teacher is None:
        return loaded
    teacher = _build_network(experiment.teacher, loaded, role="teacher", stats=False)
    teacher.eval()
    check_trained_on(
        teacher, role="teacher", dataset=train.name, num_classes=outputs, input_shape=shape
    )
    return dataclasses.replace(loaded, teacher=teacher)


def run_experiment(
    experiment: Experiment,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    save_student: bool = False,
    tensorboard: bool | None = None,
    checkpoint: str | None = None,
    progress: bool | None = None,
    command: str = "",
) -> tuple[Any, dict[str, Any]]:
    """Train an experiment's seeds; with ``run_dir``, write the run folder (module docstring).

    Returns the :class:`~kdtutor.train.SeedsResult` and the results payload (also written
    to ``run_dir/results.json``).
    """
    from .methods import build_distiller
    from .scales import current_scale
    from .specs import parse_model_spec
    from .train import run_seeds
    from .train.recorder import RunRecorder
    from .train.recorder import save_student as write_student

    folder = None
    if run_dir is not None:
        folder, previous = prepare_run_folder(run_dir, resume=resume, overwrite=overwrite)
        differences = _differences(previous, experiment) if previous is not None else []
        if differences:
            raise RunFolderError(
                f"the run in {folder} was made with another experiment, so it cannot be "
                f"resumed with this one ({'; '.join(differences)}). "
                "Resume with the same settings, or start again with --overwrite."
            )
    elif save_student:
        raise KDTutorError("--save-student needs --run-dir (the folder the weights go to).")
    elif checkpoint is not None:
        _check_checkpoint_paths(checkpoint, experiment.seeds, resume=resume, overwrite=overwrite)
    loaded = load_experiment_data(experiment)
    train, test = loaded.train, loaded.test
    cfg = experiment.train_config()  # validated before anything is written

    students: dict[int, Any] = {}  # the distillers whose students --save-student writes

    def make(seed: int) -> Any:
        student = _build_network(experiment.student, loaded, role="student")
        distiller = build_distiller(
            experiment.method,
            student,
            loaded.teacher,
            dict(experiment.hparams),
            input_shape=loaded.input_shape,
        )
        if save_student:
            students[seed] = distiller
        return distiller

    meta = {
        "model": parse_model_spec(experiment.student).call,
        "dataset": train.name,
        "num_classes": loaded.num_classes,
        "input_shape": list(loaded.input_shape),
    }
    main = distributed.setup(cfg.device.split(":")[0] if cfg.device else None).is_main
    recorders: list[RunRecorder] = []
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = str(folder / "last-seed{seed}.pt")
        if main:
            write_experiment(experiment, folder / "config.yaml")

    def recorder(seed: int) -> RunRecorder | None:
        if folder is None or not main:
            return None
        recorders.append(RunRecorder(folder, seed, meta=meta, tensorboard=tensorboard))
        return recorders[-1]

    try:
        run = run_seeds(
            make,
            train,
            test,
            seeds=experiment.seeds,
            config=cfg,
            checkpoint=checkpoint,
            resume=resume,
            on_epoch=recorder,
            progress=progress,
        )
    finally:
        for r in recorders:
            r.close()
    payload = {
        "command": command,
        "experiment": experiment.to_dict(),
        "dataset": experiment.dataset,
        "teacher": experiment.teacher,
        "student": experiment.student,
        "hparams": dict(experiment.hparams),
        "scale": current_scale(experiment.scale),
        **run.to_dict(),
    }
    if folder is not None and main:
        from .io import atomic_write_json

        if save_student:
            for seed, distiller in students.items():
                write_student(distiller.student, folder / f"student-seed{seed}.pt", meta)
        atomic_write_json(folder / "results.json", payload)
    return run, payload

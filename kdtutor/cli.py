"""The ``kdtutor`` command line: one entry point, a subcommand per job.

Every subcommand has ``--help`` with examples. Errors on bad input print one clear line and
exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import KDTutorError

DEFAULT_ASSIGNMENTS_OUT = "_build/assignments"

EXAMPLES = {
    "distill": """examples:
  kdtutor distill --config exp.yaml train.lr=0.1 hparams.T=8 --run-dir runs/kd
  kdtutor distill --run-dir runs/kd --resume      # continue an interrupted run
  kdtutor distill --dataset folder:~/pets --student resnet8x4 --method scratch \\
      --run-dir runs/pets --save-student
  kdtutor distill --dataset folder:~/pets --teacher resnet8x4:runs/pets/student-seed0.pt \\
      --student cnn_small --method kd --run-dir runs/pets-kd
  kdtutor distill --dataset shapes --teacher zoo:shapes_cnn_large --student cnn_small \\
      --method kd --epochs 10 --seeds 0,1,2 --out results.json
  kdtutor distill --dataset shapes --student cnn_small --method scratch --epochs 5
  kdtutor distill --dataset shapes --teacher zoo:shapes_cnn_large --student cnn_small \\
      --method kd --set T=8 --set kd_weight=0.5 --scale smoke
  kdtutor distill --task detection --dataset scenes --student fcos_s \\
      --teacher zoo:scenes_fcos --method fgd --epochs 20 --seeds 0,1,2   # chapter 8
  kdtutor distill --task retrieval --dataset faces --student facenet_s \\
      --teacher zoo:faces_cnn --method face_rkd
  kdtutor distill --task classification --dataset clips --student tsn_s \\
      --teacher zoo:clips_c3d --method kd
  kdtutor distill --task segmentation --dataset scenes --student lraspp_s --method seg_scratch
  torchrun --nproc_per_node 2 -m kdtutor distill --dataset mnist5k \\
      --teacher zoo:mnist5k_cnn --student cnn_tiny --method kd --epochs 8   # 2 processes (DDP)""",
    "models": """examples:
  kdtutor models
  kdtutor models --num-classes 100 --family cifar_resnet --latency
  kdtutor models --family dense      # chapter 8's networks, each at its task's input size""",
    "methods": """examples:
  kdtutor methods
  kdtutor methods --task detection   # the methods of one task (kdtutor.tasks)""",
    "datasets": """examples:
  kdtutor datasets
  KDTUTOR_DATA=~/datasets kdtutor distill --dataset cifar100 --student resnet8x4 --method scratch""",
    "bench": """examples:
  kdtutor bench --speed --preset book        # hand-written loop vs kdtutor vs cache vs scratch
  kdtutor bench --suite views --preset book  # accuracy cost of caching K augmented views
  kdtutor bench --levers --preset book       # channels-last, bf16, compile, threads on CPU
  kdtutor bench --suite knowledge --preset smoke
  kdtutor bench --suite knowledge --preset book --jobs 2
  kdtutor bench --suite knowledge --preset book --methods scratch,kd,crd --seeds 0
  kdtutor bench --suite knowledge --preset book --tune --jobs 2      # equal tuning (validation)
  kdtutor bench --suite knowledge --preset book --weights tuned      # the suite at tuned weights
  kdtutor bench --suite schemes --preset book --jobs 2               # offline, online, self
  kdtutor bench --suite architecture --preset smoke
  kdtutor bench --suite architecture --preset book --jobs 2          # gap, ESKD, TAKD, ViT pilot
  kdtutor bench --suite architecture --preset book --schemes vit_pilot_sgd,vit_pilot_adamw
  kdtutor bench --suite architecture --preset book --deit adamw --jobs 2   # + DeiT's rows
  kdtutor bench --suite algorithms --preset smoke --families quantized
  kdtutor bench --suite algorithms --preset book --jobs 2            # chapter 6 (resumable)
  kdtutor bench --suite algorithms --preset book --labels dafl,deepinversion --seeds 0
  kdtutor bench --suite applications --preset smoke                  # chapter 8, seconds
  kdtutor bench --suite applications --preset book --jobs 2          # needs the 8 zoo teachers
  kdtutor bench --suite applications --preset book --tasks detection,lanes --labels scratch
  KDTUTOR_DATA=~/datasets kdtutor bench --suite knowledge --preset repdistiller   # on a GPU""",
    "chain": """examples:
  kdtutor chain zoo:shapes_cnn_large cnn_medium cnn_wide_s2 --preset smoke
  kdtutor chain zoo:shapes_cnn_large "convnet(blocks_per_stage=2,stem_stride=2,widths=(16,32,64,128))" \\
      cnn_wide_s2 --seed 1 --out chain.json                # teacher -> assistant -> student (TAKD)
  kdtutor chain zoo:shapes_cnn_large cnn_medium cnn_small cnn_wide_s2 --all-paths
  kdtutor chain cnn_wide_s2:runs/alone/student-seed0.pt cnn_wide_s2 cnn_wide_s2 --method ban""",
    "search": """examples:
  kdtutor search --preset smoke --pool 4 --eta 2
  kdtutor search --strategy halving                     # 27 -> 9 -> 3 candidates, 2 -> 20 epochs
  kdtutor search --strategy random --budget-mflops 1.62 --pool 28 --epochs 6
  kdtutor search --strategy halving --method scratch --out search_alone.csv   # no teacher""",
    "plot": """examples:
  kdtutor plot runs/kd                 # writes runs/kd/curves.png (also while the run trains)
  kdtutor plot results.json --out curves.pdf""",
    "cache": """examples:
  kdtutor cache list     # disk caches made with fit(..., cache_location="disk")
  kdtutor cache clear""",
    "assignments": """examples:
  kdtutor assignments list
  kdtutor assignments student --out _build/assignments      # every assignment
  kdtutor assignments student kd-temperature --out handout
  kdtutor assignments grade kd-temperature submissions/ --out scores.csv""",
    "zoo": """examples:
  kdtutor zoo list
  kdtutor zoo verify
  kdtutor zoo train shapes_cnn_large
  kdtutor zoo train shapes_cnn_large --snapshots 5,10,20   # early-stopped teachers, in the cache
  KDTUTOR_DATA=~/datasets kdtutor zoo train cifar100_resnet56   # on a GPU; kept in $KDTUTOR_DATA/teachers""",
}


def _parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` items as method hyperparameters (values parsed as overrides are)."""
    from .experiment import parse_override

    values: dict[str, Any] = {}
    for item in items:
        keys, value = parse_override(item) if "=" in item else ([], None)
        if len(keys) != 1:
            raise argparse.ArgumentTypeError(
                f"--set expects NAME=VALUE (e.g. --set T=4), got {item!r}"
            )
        values[keys[0]] = value
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


# --------------------------------------------------------------------------------------------
_TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "schedule",
    "augment",
    "cache_location",
    "cache_dtype",
    "cache_views",
    "channels_last",
    "compile",
    "workers",
    "device",
)
_TOP_FLAGS = (
    "dataset",
    "task",
    "student",
    "teacher",
    "method",
    "seeds",
    "scale",
    "train_size",
    "test_size",
    "data",
)


def _flags_as_experiment(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line (only those given) as experiment values."""
    values: dict[str, Any] = {
        k: getattr(args, k) for k in _TOP_FLAGS if getattr(args, k) is not None
    }
    train = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if args.cache is False:
        train["cache"] = False
    if args.amp is not None:
        train["amp"] = {"auto": None, "off": False}.get(args.amp, True)
        if args.amp in ("bf16", "fp16"):
            train["amp_dtype"] = "float16" if args.amp == "fp16" else "bfloat16"
    if train:
        values["train"] = train
    if args.set:
        values["hparams"] = _parse_sets(args.set)
    return values


def cmd_distill(args: argparse.Namespace) -> int:
    from . import distributed
    from .experiment import load_experiment
    from .io import atomic_write_json
    from .launch import prepare_run_folder, run_experiment

    if args.resume and args.overwrite:
        raise KDTutorError("--resume and --overwrite exclude each other: pick one.")
    flags = _flags_as_experiment(args)
    config_path = args.config
    if args.resume and args.run_dir and config_path is None:
        # `kdtutor distill --run-dir runs/x --resume` continues the run recorded there
        _, previous = prepare_run_folder(args.run_dir, resume=True, overwrite=False)
        config_path = Path(args.run_dir) / "config.yaml" if previous is not None else None
    experiment = load_experiment(config_path, args.overrides or (), base=flags)
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.exists():
        raise KDTutorError(
            f"cannot write results to {out}: the folder {out.parent} does not exist. Create it first."
        )
    if out is not None and out.is_dir():
        raise KDTutorError(
            f"--out {out} is a folder: give a file name, e.g. {out / 'results.json'}."
        )
    if out is not None and args.checkpoint and out.resolve() == Path(args.checkpoint).resolve():
        raise KDTutorError("--out and --checkpoint name the same file: give them different paths.")
    command = "kdtutor " + " ".join(sys.argv[1:])
    run, payload = run_experiment(
        experiment,
        args.run_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        save_student=args.save_student,
        tensorboard=args.tensorboard,
        checkpoint=args.checkpoint,
        progress=args.progress,
        command=command,
    )
    if not distributed.setup().is_main:  # in a torchrun launch, rank 0 reports and writes
        return 0
    print(format_seeds_table(run))
    if args.run_dir:
        print(f"wrote {args.run_dir}")
    if out is not None:
        atomic_write_json(out, payload)
        print(f"wrote {out}")
    return 0


def format_seeds_table(run: Any) -> str:
    """Per-seed best/last accuracies and their mean ± std as a plain-text table."""
    lines = [f"{'seed':>6} {'best %':>8} {'epoch':>6} {'last %':>8} {'seconds':>8}"]
    for seed, result in zip(run.seeds, run.results, strict=True):
        lines.append(
            f"{seed:>6} {result.best_acc:>8.2f} {result.best_epoch:>6} {result.last_acc:>8.2f} {result.seconds:>8.1f}"
        )
    (bm, bs), (lm, ls) = run.best, run.last
    lines.append(f"{'mean':>6} {bm:>8.2f} {'':>6} {lm:>8.2f}")
    lines.append(f"{'std':>6} {bs:>8.2f} {'':>6} {ls:>8.2f}")
    return f"method {run.method}\n" + "\n".join(lines)


_DENSE_INPUTS = {
    "fcos": (3, 64, 64), "lraspp": (3, 64, 64), "depth": (3, 64, 64), "pose": (3, 32, 32),
    "facenet": (3, 32, 32), "edsr": (3, 16, 16), "c3d": (8, 3, 32, 32), "tsn": (8, 3, 32, 32),
    "lanenet": (3, 48, 128),
}  # fmt: skip
"""One input of each chapter-8 network (by the name before ``_t``/``_s``), as its task's data
serves it (``kdtutor.zoo_recipes.applications.input_shape``)."""


def _model_input(name: str, family: str) -> tuple[int, ...]:
    """The input ``kdtutor models`` measures a model on (without the batch)."""
    if family == "mlp":
        return (1, 28, 28)
    if family == "dense":
        return _DENSE_INPUTS[name.rsplit("_", 1)[0]]
    return (3, 32, 32)


def cmd_models(args: argparse.Namespace) -> int:
    import kdtutor.models.dense  # noqa: F401  (registers chapter 8's networks)

    from .models import build_model, list_models, model_info, model_summary

    names = [n for n in list_models() if not args.family or model_info(n).family == args.family]
    if not names:
        raise KDTutorError(f"no model in family {args.family!r}.")
    print(
        f"{'model':<16} {'family':<14} {'params':>12} {'MFLOPs':>10}"
        + (f" {'latency ms':>11}" if args.latency else "")
    )
    for name in names:
        info = model_info(name)
        shape = _model_input(name, info.family)
        model = build_model(name, num_classes=args.num_classes, in_channels=shape[-3])
        summary = model_summary(model, (1, *shape), latency_runs=10 if args.latency else 0)
        line = f"{name:<16} {info.family:<14} {summary.params:>12,} {summary.flops / 1e6:>10.1f}"
        if args.latency:
            line += f" {summary.latency_ms:>11.2f}"
        print(line)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .launch import _method_task
    from .methods import get_method, list_methods

    names = list_methods()
    if args.task is not None:
        from .tasks import list_tasks

        if args.task not in list_tasks():
            from .errors import unknown_name

            raise unknown_name("task", args.task, list_tasks(), hint="`kdtutor methods --help`.")
        names = [n for n in names if _method_task(get_method(n)) == args.task]
        if not names:
            raise KDTutorError(f"no method is written for the task {args.task!r} yet.")
    width = max(len(get_method(name).family or "-") for name in names)
    for name in names:
        cls = get_method(name)
        print(f"{name:<12} {cls.family or '-':<{width}} {cls.paper}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import dataset_info, list_datasets

    for name in list_datasets():
        info = dataset_info(name)
        where = "offline" if info.offline else "needs KDTUTOR_DATA"
        print(
            f"{name:<14} {info.num_classes:>4} classes  {info.in_channels}x{info.image_size}x{info.image_size}  {where:<18} {info.description}"
        )
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    if args.snapshots and args.action != "train":
        raise KDTutorError("--snapshots goes with `kdtutor zoo train NAME`.")
    if args.action == "list":
        trained = zoo.trained_teachers()
        print(
            f"{'teacher':<20} {'model':<12} {'dataset':<10} {'params':>10} {'test %':>7} "
            f"{'paper %':>7} {'train s':>8}  {'status':<11}  folder"
        )
        for name in zoo.list_teachers():
            recipe = zoo.all_recipes().get(name)
            # shipped teachers in data/zoo, CIFAR-100 ones in $KDTUTOR_DATA/teachers (None: unset)
            folder = trained.get(name) or (zoo.recipe_dir(recipe) if recipe else None)
            entry = zoo.read_manifest(folder).get(name, {}) if folder is not None else {}
            model = entry.get("model") or (recipe.model if recipe else "?")
            dataset = entry.get("dataset") or (recipe.dataset if recipe else "?")
            status = "not trained"
            if entry and folder is not None and (folder / entry["file"]).exists():
                status = "shipped" if folder.is_relative_to(zoo.zoo_dir()) else "trained"
            where = str(folder) if folder is not None else zoo.describe_dir(recipe)
            acc = f"{entry['test_acc']:.2f}" if entry else "-"
            paper = f"{recipe.published_acc:.2f}" if recipe and recipe.published_acc else "-"
            secs = f"{entry['train_seconds']:.0f}" if entry else "-"
            params = f"{entry['params']:,}" if entry else "-"
            print(
                f"{name:<20} {model:<12} {dataset:<10} {params:>10} {acc:>7} {paper:>7} "
                f"{secs:>8}  {status:<11}  {where}"
            )
        return 0
    if args.action == "verify":
        # without a name: every teacher some manifest lists (the shipped ones, and those in
        # $KDTUTOR_DATA/teachers when KDTUTOR_DATA is set), never the untrained recipes
        names = [args.name] if args.name else sorted(zoo.trained_teachers())
        if not names:
            raise KDTutorError(
                "the zoo manifest lists no teachers yet: train one with `kdtutor zoo train NAME`."
            )
        for name in names:
            path = zoo.verify(name)
            print(f"ok  {name}  {path}")
        return 0
    if not args.name:
        raise KDTutorError(
            "`kdtutor zoo train` needs a teacher name; `kdtutor zoo list` lists them."
        )
    if args.snapshots:
        return _train_snapshots(args)
    overrides = {"epochs": args.epochs} if args.epochs else {}
    entry = zoo.train_teacher(args.name, progress=args.progress, **overrides)
    if entry:  # empty on the processes of a torchrun launch other than rank 0
        print(json.dumps(entry, indent=2))
    return 0


def _train_snapshots(args: argparse.Namespace) -> int:
    """``kdtutor zoo train NAME --snapshots 5,10``: early-stopped teachers of the recipe."""
    from .snapshots import snapshot_dir, train_snapshots

    if args.epochs:
        raise KDTutorError(
            "--snapshots keeps the recipe's run at those epochs of its own schedule: drop --epochs."
        )
    try:
        epochs = [int(value) for value in _names(args.snapshots) or ()]
    except ValueError:
        raise KDTutorError(
            f"--snapshots takes epochs, comma-separated, e.g. 5,10,20; got {args.snapshots!r}."
        ) from None
    records = train_snapshots(args.name, epochs, log=print)
    for epoch, record in records.items():
        print(f"{args.name}@{epoch}: test {record['test_acc']:.2f}%  ({snapshot_dir()})")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .cache import clear_disk_cache, list_disk_caches
    from .data.diskcache import cache_dir

    if args.action == "clear":
        print(f"deleted {clear_disk_cache()} teacher caches under {cache_dir() / 'teacher'}")
        return 0
    caches = list_disk_caches()
    print(f"teacher caches under {cache_dir() / 'teacher'} ($KDTUTOR_CACHE): {len(caches)}")
    for c in caches:
        meta = c["meta"] or {}
        shape = (
            f"{meta['n']} images x {max(1, meta['views'])} view(s), {meta['dtype']}, "
            f"{len(meta['features'])} feature map(s)"
            if meta
            else "incomplete (no readable meta.json): safe to clear"
        )
        print(f"{Path(c['folder']).name}  {c['bytes'] / 1024**2:8.1f} MB  {shape}")
    return 0


def cmd_assignments(args: argparse.Namespace) -> int:
    from .coursework import grading

    if args.action == "list":
        for a in grading.list_assignments():
            print(f"{a.name:24s} {a.total:5.0f} points  {a.title}")
        return 0
    if args.action == "student":
        names = args.names or [a.name for a in grading.list_assignments()]
        for name in names:
            built = grading.build_assignment(name, args.out)
            print(f"{name}: hand out {built.student}; grade with {built.autograder}")
        return 0
    if len(args.names) != 2:
        raise ValueError(
            "grade takes an assignment and a folder of submissions: "
            "kdtutor assignments grade NAME FOLDER [--out scores.csv]"
        )
    name, folder = args.names
    out = Path(args.out) if args.out != DEFAULT_ASSIGNMENTS_OUT else Path(f"{name}-scores.csv")
    scores = grading.grade_folder(
        name, folder, out, autograder=args.autograder, timeout=args.timeout
    )
    for s in scores:
        note = f"  ({s.error})" if s.error else ""
        print(f"{s.submission.name:32s} {s.score:5.1f} / {s.possible:.0f}{note}")
    print(f"wrote {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .curves import plot_learning_curves

    source = Path(args.path)
    out = (
        Path(args.out)
        if args.out
        else (source if source.is_dir() else source.parent) / "curves.png"
    )
    if out.is_dir():
        raise KDTutorError(f"--out {out} is a folder: give a file name such as curves.png.")
    plot_learning_curves(source, out)
    print(f"wrote {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.families and args.suite != "algorithms":
        raise KDTutorError(
            "--families chooses runs of --suite algorithms; other suites take --schemes, "
            "--methods or (--suite applications) --tasks."
        )
    if args.labels and args.suite not in ("algorithms", "applications"):
        raise KDTutorError(
            "--labels chooses runs of --suite algorithms or applications; other suites take "
            "--schemes or --methods."
        )
    if args.tasks and args.suite != "applications":
        raise KDTutorError("--tasks chooses the tasks of --suite applications.")
    if (args.deit or args.searched) and args.suite != "architecture":
        raise KDTutorError("--deit and --searched add rows to --suite architecture only.")
    if args.speed:
        return _bench_speed(args)
    if args.levers:
        return _bench_levers(args)
    if args.suite == "views":
        return _bench_views(args)
    if args.suite == "schemes":
        return _bench_schemes(args)
    if args.suite == "architecture":
        return _bench_architecture(args)
    if args.suite == "algorithms":
        return _bench_algorithms(args)
    if args.suite == "applications":
        return _bench_applications(args)
    return _bench_knowledge(args)


def _bench_speed(args: argparse.Namespace) -> int:
    from .bench.speed import default_speed_path, format_speed_table, run_speed

    out = args.out or default_speed_path(args.preset)
    result = run_speed(
        args.preset, device=args.device, out=out, command="kdtutor " + " ".join(sys.argv[1:])
    )
    print(format_speed_table(result))
    print(f"wrote {out}")
    return 0


def _bench_levers(args: argparse.Namespace) -> int:
    from .bench.levers import default_levers_path, format_levers_table, run_levers

    if args.preset not in ("smoke", "book"):
        raise KDTutorError(f"--levers takes --preset smoke or book, not {args.preset!r}.")
    out = args.out or default_levers_path(args.preset)
    result = run_levers(
        args.preset, out=out, log=print, command="kdtutor " + " ".join(sys.argv[1:])
    )
    print(format_levers_table(result))
    print(f"wrote {out}")
    return 0


def _bench_views(args: argparse.Namespace) -> int:
    from .bench.views import default_views_path, format_views_table, run_views

    out = args.out or default_views_path(args.preset)
    payload = run_views(args.preset, out=out, command="kdtutor " + " ".join(sys.argv[1:]))
    print(format_views_table(payload))
    print(f"wrote {out}")
    return 0


def _catalogue_options(args: argparse.Namespace, suite: str, what: str) -> dict[str, Any]:
    """The options of a suite of named schemes (``--suite schemes``, ``architecture``), after
    refusing the knowledge suite's options, which it does not take."""
    from .train import parse_seeds

    if args.preset not in ("smoke", "book"):
        raise KDTutorError(f"--suite {suite} takes --preset smoke or book, not {args.preset!r}.")
    if args.methods or args.pairs or args.epochs or args.tune or args.weights != "published":
        raise KDTutorError(
            f"--suite {suite} {what}, and drop --methods, --pairs, --epochs, --tune and --weights."
        )
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()] if args.schemes else None
    return {
        "schemes": schemes,
        "seeds": parse_seeds(args.seeds) if args.seeds else None,
        "out": args.out,
        "jobs": args.jobs,
        "command": "kdtutor " + " ".join(sys.argv[1:]),
    }


def _bench_schemes(args: argparse.Namespace) -> int:
    from .bench.schemes import run_schemes_suite
    from .bench.stats import mean_std

    options = _catalogue_options(
        args, "schemes", "runs on the preset's first pair with each scheme's own epochs: "
        "choose schemes with --schemes"
    )  # fmt: skip
    rows = run_schemes_suite(args.preset, **options)
    print(f"{'scheme/network':<24} {'last %':>14} {'train TFLOPs':>13} {'seeds':>5}")
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]
        mean, std = mean_std([float(r["last_acc"]) for r in runs])
        flops = sum(float(r["total_flops"]) for r in runs) / len(runs) / 1e12
        print(f"{method:<24} {mean:>7.2f} ± {std:<4.2f} {flops:>13.2f} {len(runs):>5}")
    return 0


def _names(value: str | None) -> list[str] | None:
    """A comma-separated option as a list of names (``None`` when not given)."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise KDTutorError(f"give at least one name, comma-separated; got {value!r}.")
    return names


def _own_protocol_only(args: argparse.Namespace, suite: str, how: str) -> None:
    """Refuse what a suite with its own protocols does not take: a preset other than smoke or
    book, and the knowledge suite's options (``how`` says how its runs are chosen)."""
    if args.preset not in ("smoke", "book"):
        raise KDTutorError(f"--suite {suite} takes --preset smoke or book, not {args.preset!r}.")
    given = [flag for flag, value in (("--methods", args.methods), ("--pairs", args.pairs),
             ("--epochs", args.epochs), ("--tune", args.tune), ("--schemes", args.schemes),
             ("--weights", args.weights != "published")) if value]  # fmt: skip
    if given:
        raise KDTutorError(f"--suite {suite} {how}, and drop {', '.join(given)}.")


def _bench_algorithms(args: argparse.Namespace) -> int:
    from .bench.algorithms import run_algorithms_suite
    from .bench.stats import mean_std
    from .train import parse_seeds

    _own_protocol_only(
        args, "algorithms", "runs each algorithm with its own data, teacher and schedule: "
        "choose runs with --families or --labels (kdtutor.bench.algorithms.ALGORITHMS)",
    )  # fmt: skip
    rows = run_algorithms_suite(
        args.preset,
        families=_names(args.families),
        labels=_names(args.labels),
        seeds=parse_seeds(args.seeds) if args.seeds else None,
        out=args.out,
        jobs=args.jobs,
        command="kdtutor " + " ".join(sys.argv[1:]),
    )
    print(f"{'label/network':<26} {'pair':<32} {'last %':>14} {'TFLOPs':>8} {'seeds':>5}")
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]
        mean, std = mean_std([float(r["last_acc"]) for r in runs])
        flops = sum(float(r["total_flops"]) for r in runs) / len(runs) / 1e12
        print(
            f"{method:<26} {runs[0]['pair']:<32} {mean:>7.2f} ± {std:<4.2f} {flops:>8.2f} "
            f"{len(runs):>5}"
        )
    return 0


def _bench_applications(args: argparse.Namespace) -> int:
    from .bench.applications import run_applications_suite
    from .bench.stats import mean_std
    from .train import parse_seeds

    _own_protocol_only(
        args, "applications", "runs each task's protocol (kdtutor.bench.applications."
        "APP_PROTOCOL): choose runs with --tasks or --labels",
    )  # fmt: skip
    rows = run_applications_suite(
        args.preset,
        tasks=_names(args.tasks),
        labels=_names(args.labels),
        seeds=parse_seeds(args.seeds) if args.seeds else None,
        out=args.out,
        jobs=args.jobs,
        command="kdtutor " + " ".join(sys.argv[1:]),
    )
    print(f"{'task':<13} {'label':<18} {'metric':<8} {'score':>17} {'seeds':>5}")
    for key in dict.fromkeys((r["task"], r["label"]) for r in rows):
        runs = [r for r in rows if (r["task"], r["label"]) == key]
        mean, std = mean_std([float(r["score"]) for r in runs])
        print(
            f"{key[0]:<13} {key[1]:<18} {runs[0]['metric']:<8} {mean:>9.3f} ± {std:<5.3f} "
            f"{len(runs):>5}"
        )
    return 0


def _mean_or_dash(values: Sequence[Any], width: int) -> str:
    """The mean of the non-empty values (e.g. a column empty for rows without a teacher)."""
    numbers = [float(v) for v in values if v not in ("", None)]
    return f"{sum(numbers) / len(numbers):>{width}.2f}" if numbers else f"{'-':>{width}}"


def _architecture_extra(args: argparse.Namespace) -> tuple[Any, ...]:
    """The rows ``--deit`` and ``--searched`` add to the architecture suite's catalogue."""
    from .bench.architecture import deit_schemes, searched_schemes

    extra: list[Any] = list(deit_schemes(args.deit)) if args.deit else []
    for value in args.searched or ():
        tag, sep, spec = value.partition("=")
        if not sep or not tag.strip() or not spec.strip():
            raise KDTutorError(
                f'--searched takes TAG=SPEC, e.g. halving="convnet(widths=(8,16,32,64))", '
                f"got {value!r}."
            )
        extra += searched_schemes(spec.strip(), tag.strip())
    return tuple(extra)


def _bench_architecture(args: argparse.Namespace) -> int:
    from .bench.architecture import run_architecture_suite
    from .bench.stats import mean_std

    options = _catalogue_options(
        args, "architecture", "runs each scheme with its own teacher, student and epochs: "
        "choose schemes with --schemes (kdtutor.bench.architecture.ARCHITECTURE)"
    )  # fmt: skip
    rows = run_architecture_suite(args.preset, extra=_architecture_extra(args), **options)
    print(
        f"{'scheme/network':<24} {'split':<5} {'last %':>14} {'teacher %':>9} {'agree %':>8} "
        f"{'TFLOPs':>8} {'seeds':>5}  student"
    )
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]
        mean, std = mean_std([float(r["last_acc"]) for r in runs])
        flops = sum(float(r["total_flops"]) for r in runs) / len(runs) / 1e12
        print(
            f"{method:<24} {runs[0]['split']:<5} {mean:>7.2f} ± {std:<4.2f} "
            f"{_mean_or_dash([r['teacher_acc'] for r in runs], 9)} "
            f"{_mean_or_dash([r['agreement'] for r in runs], 8)} {flops:>8.2f} "
            f"{len(runs):>5}  {runs[0]['student']}"
        )
    return 0


def _check_out_file(path: str | None, what: str = "results") -> Path | None:
    """``--out``'s file, refused when its folder is missing or it names a folder."""
    if path is None:
        return None
    out = Path(path)
    if not out.parent.exists():
        raise KDTutorError(
            f"cannot write {what} to {out}: the folder {out.parent} does not exist. Create it first."
        )
    if out.is_dir():
        raise KDTutorError(f"--out {out} is a folder: give a file name.")
    return out


def cmd_chain(args: argparse.Namespace) -> int:
    import torch

    from .bench.cost import network_flops, run_cost
    from .bench.knowledge import get_preset, method_hparams, preset_data
    from .chain import chain_paths, fit_chain
    from .io import atomic_write_json
    from .specs import build_from_spec, parse_model_spec
    from .train import predict_logits

    parsed = parse_model_spec(args.teacher)
    if parsed.kind == "registry" and parsed.weights is None:
        raise KDTutorError(
            f"the chain's teacher {args.teacher!r} would be an untrained network: name a trained "
            "one, zoo:<name> (`kdtutor zoo list`) or NAME:weights.pt."
        )
    if args.all_paths and len(args.stages) < 2:
        raise KDTutorError(
            "--all-paths needs assistants before the student: kdtutor chain TEACHER "
            "ASSISTANT... STUDENT --all-paths."
        )
    out = _check_out_file(args.out)
    preset = get_preset(args.preset)
    if preset.threads:
        torch.set_num_threads(preset.threads)
    train, test = preset_data(preset, "train"), preset_data(preset, "test")
    epochs = args.epochs or preset.epochs
    hparams = {**method_hparams(args.method, epochs, len(train)), **_parse_sets(args.set or [])}
    teacher = build_from_spec(
        args.teacher, num_classes=train.num_classes, in_channels=train.in_channels, role="teacher"
    )
    shape = tuple(train.images.shape[1:])
    settings = {
        "epochs": epochs, "batch_size": preset.batch_size, "lr": preset.lr,
        "schedule": preset.schedule, "milestones": preset.milestones, "augment": preset.augment,
        **preset.train,
    }  # fmt: skip
    *assistants, student = args.stages
    if args.all_paths:
        paths = [[*through, student] for through in chain_paths(assistants)]
    else:
        paths = [list(args.stages)]
    store: Any = None if args.no_store else (args.store or True)

    def describe(network: Any, spec: str) -> dict[str, Any]:
        logits, labels = predict_logits(network, test)
        return {
            "spec": spec,
            "params": sum(p.numel() for p in network.parameters()),
            "flops": network_flops(network, shape),
            "test_acc": round(100.0 * float((logits.argmax(1) == labels).float().mean()), 4),
        }

    head = describe(teacher, args.teacher)
    report = {"teacher": head, "method": args.method, "seed": args.seed, "preset": args.preset,
              "epochs": epochs, "hparams": hparams, "paths": []}  # fmt: skip
    for path in paths:
        costs: dict[int, Any] = {}

        def on_stage(i: int, distiller: Any, result: Any, costs: dict[int, Any] = costs) -> None:
            if result is not None:
                costs[i] = run_cost(distiller, train, result, batch_size=preset.batch_size)

        stages = fit_chain(
            teacher, path, train, test, method=args.method, hparams=hparams, seed=args.seed,
            store=store, on_stage=on_stage, **settings,
        )  # fmt: skip
        done = []
        for i, stage in enumerate(stages):
            entry = describe(stage.network, stage.spec)
            cost = costs.get(i)
            entry.update(
                stored=stage.result is None,
                best_acc=round(stage.result.best_acc, 4) if stage.result is not None else None,
                train_flops=cost.flops if cost is not None else None,
                train_seconds=round(cost.seconds, 2) if cost is not None else None,
            )
            done.append(entry)
        report["paths"].append({"path": [args.teacher, *path], "stages": done})
        print(f"path {' > '.join([args.teacher, *path])}  ({args.method}, seed {args.seed}, "
              f"{epochs} epoch{'s' if epochs != 1 else ''}, preset {args.preset})")  # fmt: skip
        print(f"{'stage':>5} {'params':>10} {'MFLOPs':>8} {'test %':>7} {'TFLOPs':>8} "
              f"{'seconds':>8}  network")  # fmt: skip
        for i, entry in enumerate([head, *done]):
            flops = entry.get("train_flops")
            seconds = entry.get("train_seconds")
            print(
                f"{i:>5} {entry['params']:>10,} {entry['flops'] / 1e6:>8.2f} "
                f"{entry['test_acc']:>7.2f} "
                f"{(f'{flops / 1e12:.3f}' if flops is not None else '-'):>8} "
                f"{('stored' if entry.get('stored') else (f'{seconds:.1f}' if seconds is not None else '-')):>8}"
                f"  {entry['spec']}"
            )
    if out is not None:
        atomic_write_json(out, report)
        print(f"wrote {out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .bench.architecture import default_search_path, run_search
    from .bench.knowledge import get_preset

    if args.strategy == "random" and (args.eta or args.min_epochs or args.max_epochs):
        raise KDTutorError(
            "--eta, --min-epochs and --max-epochs are successive halving's: with --strategy "
            "random give --epochs."
        )
    if args.strategy == "halving" and args.epochs:
        raise KDTutorError(
            "--epochs is random search's: with --strategy halving give --min-epochs and "
            "--max-epochs."
        )
    out = _check_out_file(args.out, "the search's scores") or default_search_path(args.preset)
    result = run_search(
        args.preset,
        strategy=args.strategy,
        teacher=args.teacher,
        method=args.method,
        budget_flops=args.budget_mflops * 1e6 if args.budget_mflops else None,
        pool=args.pool,
        eta=args.eta or 3,
        epochs=args.epochs,
        min_epochs=args.min_epochs,
        max_epochs=args.max_epochs,
        seed=args.seed,
        out=out,
    )
    candidates = len({r["spec"] for r in result.rows})
    print(
        f"{result.strategy} search, {candidates} candidates, {result.budget} candidate-epochs "
        f"({result.trained} trained now, the rest read from {out})"
    )
    print(
        f"{'rung':>4} {'epochs':>6} {'val %':>7} {'MFLOPs':>7} {'params':>8} {'kept':>4}  network"
    )
    for row in result.rows:
        print(
            f"{row['rung']:>4} {row['epochs']:>6} {row['score']:>7.2f} "
            f"{row['flops'] / 1e6:>7.2f} {row['params']:>8,} {'yes' if row['kept'] else '':>4}"
            f"  {row['spec']}"
        )
    best = result.best
    print(
        f"best: {best.spec} ({result.best_score:.2f} % on the validation images, "
        f"{best.flops / 1e6:.2f} MFLOPs, {best.params:,} parameters)"
    )
    preset = get_preset(args.preset)
    teacher = f" --teacher {args.teacher}" if args.method != "scratch" else ""
    print(
        f'train it: kdtutor distill --dataset {preset.dataset}{teacher} --student "{best.spec}" '
        f"--method {args.method} --epochs {preset.epochs} --batch-size {preset.batch_size} "
        f"--train-size {preset.train_size} --test-size {preset.test_size}"
    )
    return 0


def _bench_knowledge(args: argparse.Namespace) -> int:
    from .bench.knowledge import compare_with_published, run_suite, summarize
    from .bench.tuning import run_tuned_suite, run_tuning, tuned_factors
    from .train import parse_seeds

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    pairs = [p.strip() for p in args.pairs.split(",")] if args.pairs else None
    command = "kdtutor " + " ".join(sys.argv[1:])
    if args.tune:
        if seeds or args.epochs or (pairs and len(pairs) > 1):
            raise KDTutorError(
                "--tune runs seed 0 at the preset's epochs on one pair: drop --seeds and "
                "--epochs, and give at most one --pairs."
            )
        tuning = run_tuning(
            args.preset,
            methods=methods,
            pair=pairs[0] if pairs else None,
            out=args.out,
            jobs=args.jobs,
            command=command,
        )
        for method, factor in tuned_factors(tuning).items():
            print(f"{method:<9} tuned factor x{factor:g} (of the published loss weights)")
        return 0
    options = dict(
        methods=methods, seeds=seeds, pairs=pairs, epochs=args.epochs, out=args.out,
        jobs=args.jobs, command=command,
    )  # fmt: skip
    if args.weights == "tuned":
        rows = run_tuned_suite(args.preset, **options)
    else:
        rows = run_suite(args.preset, **options)
    table = summarize(rows)
    print(f"{'pair':<22} {'method':<9} {'best %':>14} {'last %':>14} {'seeds':>5}")
    for r in table:
        print(
            f"{r['pair']:<22} {r['method']:<9} {r['best_mean']:>7.2f} ± {r['best_std']:<4.2f}"
            f" {r['last_mean']:>7.2f} ± {r['last_std']:<4.2f} {r['seeds']:>5}"
        )
    if any(r["method"] == "scratch" for r in table):
        comparison = compare_with_published(table)
        if len(comparison.methods) >= 2:
            print(
                f"Spearman rank correlation with the published gains ({len(comparison.methods)} "
                f"methods): {comparison.spearman:.3f}"
            )
    return 0


# --------------------------------------------------------------------------------------------
def _add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: a line per epoch; -vv: debug messages too",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Send kdtutor's log records to stderr: one line per seed by default, one per epoch with
    ``-v``, debug messages with ``-vv``, only warnings with ``-q``."""
    import logging

    root = logging.getLogger("kdtutor")
    if not any(getattr(h, "_kdtutor_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._kdtutor_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    root.setLevel(level)
    epochs = logging.getLogger("kdtutor.train.epochs")
    epochs.setLevel(logging.NOTSET if verbose or quiet else logging.WARNING)


# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="kdtutor",
        description="Knowledge distillation in computer vision: train, distil, compare.",
        epilog="examples:\n  kdtutor distill --dataset shapes --teacher zoo:shapes_cnn_large --student cnn_small "
        "--method kd --epochs 15\n  kdtutor models\n\nRun `kdtutor COMMAND --help` for a command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kdtutor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    formatter = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "distill",
        help="train a student (with a teacher) over seeds",
        epilog=EXAMPLES["distill"],
        formatter_class=formatter,
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="experiment overrides, applied last: train.lr=0.1, hparams.T=8, epochs=3 "
        "(a bare TrainConfig field means train.<field>)",
    )
    p.add_argument("--config", default=None, help="experiment YAML file (see kdtutor.experiment)")
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset name (`kdtutor datasets`), folder:PATH, or one of chapter 8's: scenes, "
        "faces, sr, clips, roads (with --task)",
    )
    p.add_argument(
        "--task",
        default=None,
        help="the task of the targets (kdtutor.tasks): classification (default), detection, "
        "segmentation, depth, keypoints (scenes); retrieval (faces); superres (sr); "
        "classification (clips); lanes (roads)",
    )
    p.add_argument(
        "--student",
        default=None,
        help="model name (`kdtutor models`), NAME:weights.pt or timm:NAME",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="zoo:<name> (`kdtutor zoo list`), NAME:weights.pt, timm:NAME:weights.pt or none",
    )
    p.add_argument("--method", default=None, help="method name (`kdtutor methods`); default kd")
    p.add_argument("--epochs", type=_positive_int, default=None, help="default 10")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="default 128")
    p.add_argument("--lr", type=_positive_float, default=None, help="default 0.05")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None)
    p.add_argument("--schedule", choices=["cosine", "step", "constant"], default=None)
    p.add_argument(
        "--augment",
        default=None,
        help="training augmentation: none or crop_flip (disables the cache)",
    )
    p.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        default=None,
        help="always run the teacher, never cache its outputs",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="method hyperparameter, e.g. --set T=4 (repeatable; same as hparams.T=4)",
    )
    p.add_argument(
        "--train-size", type=_positive_int, default=None, help="use the first N training samples"
    )
    p.add_argument(
        "--test-size", type=_positive_int, default=None, help="use the first N test samples"
    )
    p.add_argument(
        "--scale",
        choices=["smoke", "book", "full"],
        default=None,
        help="default: $KDTUTOR_SCALE or book",
    )
    p.add_argument("--data", default=None, help="folder of real datasets (default: $KDTUTOR_DATA)")
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)"
    )
    outputs = p.add_argument_group("outputs")
    outputs.add_argument(
        "--run-dir",
        default=None,
        help="run folder: config.yaml, metrics.jsonl, last/best checkpoints, results.json",
    )
    outputs.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir (or --checkpoint)"
    )
    outputs.add_argument(
        "--overwrite", action="store_true", help="delete the run in --run-dir and start again"
    )
    outputs.add_argument(
        "--save-student",
        action="store_true",
        help="also write the student's final weights (student-seed<N>.pt) to --run-dir",
    )
    outputs.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TensorBoard scalars in --run-dir/tensorboard (default: when installed)",
    )
    outputs.add_argument("--out", default=None, help="write the results as JSON here")
    outputs.add_argument(
        "--checkpoint",
        default=None,
        help="write a resumable checkpoint here after every epoch ({seed} is replaced by the seed)",
    )
    outputs.add_argument("--progress", action="store_true", default=None, help="show progress bars")
    perf = p.add_argument_group("speed (see the book's appendix 'Performance and scaling')")
    perf.add_argument(
        "--cache-location",
        choices=["memory", "disk"],
        default=None,
        help="keep teacher outputs in memory or memory-mapped on disk ($KDTUTOR_CACHE)",
    )
    perf.add_argument("--cache-dtype", choices=["float32", "float16"], default=None)
    perf.add_argument(
        "--cache-views",
        type=int,
        default=None,
        help="with --augment: cache this many fixed augmented views per image (approximation)",
    )
    perf.add_argument(
        "--amp",
        choices=["auto", "bf16", "fp16", "off"],
        default=None,
        help="mixed precision (auto: bf16 on CUDA, off on CPU; bf16 on CPU needs bf16 units)",
    )
    perf.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory format (default: on with CUDA)",
    )
    perf.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=None,
        metavar="BACKEND",
        help="torch.compile the student and teacher (optionally with a backend name)",
    )
    perf.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader threads (default: 2 with CUDA, 0 on CPU)",
    )
    _add_verbosity(p)
    p.set_defaults(func=cmd_distill, usage_error=p.error)

    p = sub.add_parser(
        "models",
        help="list models with parameters and FLOPs",
        epilog=EXAMPLES["models"],
        formatter_class=formatter,
    )
    p.add_argument("--num-classes", type=_positive_int, default=10)
    p.add_argument("--family", default=None, help="only this family (e.g. cifar_resnet, small_cnn)")
    p.add_argument("--latency", action="store_true", help="also measure CPU latency at batch 1")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "methods",
        help="list distillation methods and their papers",
        epilog=EXAMPLES["methods"],
        formatter_class=formatter,
    )
    p.add_argument(
        "--task",
        default=None,
        help="only the methods of this task (classification, detection, segmentation, depth, "
        "keypoints, retrieval, superres, lanes)",
    )
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser(
        "datasets", help="list datasets", epilog=EXAMPLES["datasets"], formatter_class=formatter
    )
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser(
        "bench",
        help="run a benchmark suite and write its CSV to data/results/",
        epilog=EXAMPLES["bench"],
        formatter_class=formatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--suite",
        choices=["knowledge", "schemes", "architecture", "algorithms", "applications", "views"],
        help="knowledge: every method side by side; schemes: offline, online and "
        "self-distillation on one student, with their costs; architecture: capacity gap, "
        "early-stopped KD, teacher assistants, the ViT student (chapter 5); algorithms: "
        "adversarial, multi-teacher, cross-modal, graph, attention, data-free, quantized and "
        "lifelong distillation (chapter 6); applications: detection, segmentation, depth, "
        "pose, faces, super-resolution, video and lanes (chapter 8); views: accuracy cost of "
        "cached augmented views",
    )
    what.add_argument(
        "--speed",
        action="store_true",
        help="time a hand-written PyTorch KD loop, kdtutor, kdtutor with its cache and scratch",
    )
    what.add_argument(
        "--levers",
        action="store_true",
        help="CPU speed levers (channels-last, bf16 autocast, torch.compile, threads): step "
        "times and KD runs with accuracy",
    )
    p.add_argument(
        "--preset",
        choices=["smoke", "book", "mnist5k", "repdistiller", "full"],
        default="book",
        help="repdistiller (alias full): RepDistiller's CIFAR-100 protocol, on a GPU; "
        "--speed and --suite views take smoke, book (and full for --speed)",
    )
    p.add_argument(
        "--device", default=None, help="--speed: cpu, cuda ... (default: CUDA when present)"
    )
    p.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    p.add_argument(
        "--schemes",
        default=None,
        help="--suite schemes or architecture: comma-separated scheme labels (default: all; "
        "see kdtutor.bench.schemes.SCHEMES and kdtutor.bench.architecture.ARCHITECTURE)",
    )
    p.add_argument(
        "--deit",
        choices=["sgd", "adamw"],
        default=None,
        help="--suite architecture: add DeiT's rows (the ViT alone, DeiT hard and soft) "
        "trained with this optimiser, the one the ViT pilot chose "
        "(kdtutor.bench.architecture.deit_schemes)",
    )
    p.add_argument(
        "--searched",
        action="append",
        metavar="TAG=SPEC",
        default=None,
        help="--suite architecture: add a searched student's rows, kd_TAG and scratch_TAG "
        "(the winner of `kdtutor search`; repeatable)",
    )
    p.add_argument(
        "--families",
        default=None,
        help="--suite algorithms: comma-separated families (default: all; see "
        "kdtutor.bench.algorithms.FAMILIES), each with its references",
    )
    p.add_argument(
        "--labels",
        default=None,
        help="--suite algorithms or applications: comma-separated labels (see "
        "kdtutor.bench.algorithms.ALGORITHMS, kdtutor.bench.applications.APPLICATIONS)",
    )
    p.add_argument(
        "--tasks",
        default=None,
        help="--suite applications: comma-separated tasks (default: all; see "
        "kdtutor.bench.applications.APP_PROTOCOL)",
    )
    p.add_argument("--seeds", default=None, help="override the preset's seeds, e.g. 0,1,2")
    p.add_argument("--pairs", default=None, help="comma-separated pair labels (default: all)")
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help="override the preset's epochs"
    )
    p.add_argument(
        "--out", default=None, help="CSV path (default data/results/<suite>_<preset>.csv)"
    )
    p.add_argument("--jobs", type=_positive_int, default=1, help="parallel processes")
    p.add_argument(
        "--tune",
        action="store_true",
        help="--suite knowledge: run the equal-tuning grid (each method's loss weights x0.01, "
        "x0.1, x1, x10, seed 0, scored on the validation images) into "
        "data/results/tuning_<preset>.csv",
    )
    p.add_argument(
        "--weights",
        choices=["published", "tuned"],
        default="published",
        help="--suite knowledge: the methods' published loss weights, or the tuned ones "
        "(needs --tune first; writes knowledge_<preset>_tuned.csv)",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "chain",
        help="distil along a chain: teacher -> assistants -> student (TAKD, Born-Again)",
        description="Train each network of a path by distillation from the one before it "
        "(kdtutor.chain.fit_chain), on the book protocol's data and schedule.",
        epilog=EXAMPLES["chain"],
        formatter_class=formatter,
    )
    p.add_argument(
        "teacher",
        metavar="TEACHER",
        help="the trained first teacher: zoo:<name> or NAME:weights.pt",
    )
    p.add_argument(
        "stages",
        nargs="+",
        metavar="STAGE",
        help="model specs trained in turn, the student last (a name, or a call such as "
        "'convnet(widths=(16,32,64),stem_stride=2)')",
    )
    p.add_argument(
        "--method", default="takd", help="each stage's method (`kdtutor methods`); default takd"
    )
    p.add_argument("--seed", type=int, default=0, help="the seed of every stage (default 0)")
    p.add_argument(
        "--preset",
        choices=["smoke", "book"],
        default="book",
        help="data and schedule: book (20,000 shapes images, 20 epochs) or smoke (256, 1)",
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="override the preset's")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="method hyperparameter for every stage, e.g. --set T=4 (repeatable)",
    )
    p.add_argument(
        "--all-paths",
        action="store_true",
        help="every path through the assistants (the stages before the student), 2**n of them",
    )
    stored = p.add_mutually_exclusive_group()
    stored.add_argument(
        "--store",
        default=None,
        help="folder of trained stages, reused by chains sharing a prefix (default: "
        "$KDTUTOR_CACHE/chains)",
    )
    stored.add_argument("--no-store", action="store_true", help="train every stage again")
    p.add_argument("--out", default=None, help="write the stages' results as JSON here")
    _add_verbosity(p)
    p.set_defaults(func=cmd_chain)

    p = sub.add_parser(
        "search",
        help="search a student within a FLOPs budget, each candidate scored by a short KD run",
        description="Random search or successive halving over plain CNNs and CIFAR ResNets "
        "(kdtutor.search), scored on the preset's validation images; scores are kept in a CSV "
        "so that a search resumes and two strategies share them.",
        epilog=EXAMPLES["search"],
        formatter_class=formatter,
    )
    p.add_argument("--strategy", choices=["random", "halving"], default="halving")
    p.add_argument(
        "--teacher",
        default="zoo:shapes_cnn_large",
        help="the trained teacher (default zoo:shapes_cnn_large)",
    )
    p.add_argument(
        "--method", default="kd", help="the scoring run's method: kd (default) or scratch"
    )
    p.add_argument(
        "--budget-mflops",
        type=_positive_float,
        default=None,
        help="the largest forward MFLOPs per image (default: the preset's largest student, "
        "resnet8_half_s2, 1.62)",
    )
    p.add_argument("--pool", type=_positive_int, default=28, help="candidates drawn (default 28)")
    p.add_argument(
        "--eta", type=_positive_int, default=None, help="halving: keep 1 in ETA (default 3)"
    )
    p.add_argument(
        "--min-epochs", type=_positive_int, default=None, help="halving: first rung's epochs"
    )
    p.add_argument(
        "--max-epochs", type=_positive_int, default=None, help="halving: last rung's epochs"
    )
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help="random: every candidate's epochs"
    )
    p.add_argument("--seed", type=int, default=0, help="the draw's and the runs' seed")
    p.add_argument("--preset", choices=["smoke", "book"], default="book")
    p.add_argument(
        "--out", default=None, help="the scores' CSV (default data/results/search_<preset>.csv)"
    )
    _add_verbosity(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser(
        "plot",
        help="draw learning curves of a run folder, metrics.jsonl or results JSON",
        epilog=EXAMPLES["plot"],
        formatter_class=formatter,
    )
    p.add_argument("path", help="run folder (--run-dir), its metrics.jsonl, or --out results JSON")
    p.add_argument("--out", default=None, help="image file (default: curves.png beside the input)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "cache",
        help="list or delete the teacher-output caches kept on disk",
        epilog=EXAMPLES["cache"],
        formatter_class=formatter,
    )
    p.add_argument("action", choices=["list", "clear"])
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser(
        "assignments",
        help="list the assignments, build the student notebooks and autograders, grade",
        epilog=EXAMPLES["assignments"],
        formatter_class=formatter,
    )
    p.add_argument("action", choices=["list", "student", "grade"])
    p.add_argument(
        "names",
        nargs="*",
        help="student: assignments to build (default all); grade: NAME FOLDER of submissions",
    )
    p.add_argument(
        "--out",
        default=DEFAULT_ASSIGNMENTS_OUT,
        help="student: output folder (default %(default)s); grade: the CSV of scores "
        "(default NAME-scores.csv)",
    )
    p.add_argument("--autograder", default=None, help="grade: autograder zip (default: build it)")
    p.add_argument(
        "--timeout", type=_positive_int, default=600, help="grade: seconds per submission"
    )
    p.set_defaults(func=cmd_assignments)

    p = sub.add_parser(
        "zoo",
        help="list, verify or train the teachers (shipped, or in $KDTUTOR_DATA/teachers)",
        epilog=EXAMPLES["zoo"],
        formatter_class=formatter,
    )
    p.add_argument("action", choices=["list", "verify", "train"])
    p.add_argument("name", nargs="?", default=None, help="teacher name (verify: default all)")
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help="train: override the recipe's epochs"
    )
    p.add_argument(
        "--snapshots",
        default=None,
        metavar="EPOCHS",
        help="train: keep early-stopped teachers NAME@E instead, the recipe's run after these "
        "epochs of its schedule (e.g. 5,10,20), in the cache ($KDTUTOR_CACHE/snapshots); the "
        "zoo's weights are not touched. Use them as --teacher zoo:NAME@E",
    )
    p.add_argument("--progress", action="store_true", default=None, help="show progress bars")
    p.set_defaults(func=cmd_zoo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    if args.command == "distill" and not (args.config or (args.resume and args.run_dir)):
        missing = [f"--{k}" for k in ("dataset", "student") if getattr(args, k) is None]
        if missing:
            args.usage_error(
                f"the following arguments are required: {', '.join(missing)} (or --config FILE)"
            )
    try:
        return int(args.func(args))
    except (KDTutorError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"kdtutor {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

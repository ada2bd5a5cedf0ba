"""Measure the foundation's acceptance numbers for one dataset and write them to data/results/.

For a zoo teacher: its test accuracy and training time (from the zoo manifest, produced by
``kdtutor zoo train``); then a student trained alone and distilled with plain KD over three
seeds (mean +- std of best and last epoch), and the time of a KD epoch with and without the
teacher-output cache.

    python scripts/acceptance.py --teacher shapes_cnn_large --student cnn_small --epochs 20
    python scripts/acceptance.py --teacher mnist5k_cnn --student cnn_tiny --epochs 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from kdtutor import zoo
from kdtutor.cache import clear_memory_cache
from kdtutor.data import load_dataset
from kdtutor.io import atomic_write_json
from kdtutor.methods import build_distiller
from kdtutor.models import build_model, count_parameters
from kdtutor.train import fit, run_seeds

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--set", action="append", default=[], help="KD hyperparameter KEY=VALUE")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    entry = zoo.read_manifest()[args.teacher]
    teacher = zoo.load_teacher(args.teacher)
    train = load_dataset(entry["dataset"], "train")
    test = load_dataset(entry["dataset"], "test")
    hparams = {k: float(v) for k, v in (s.split("=") for s in args.set)}
    cfg = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}

    def student():
        return build_model(
            args.student, num_classes=train.num_classes, in_channels=train.in_channels
        )

    runs = {}
    for method in ("scratch", "kd"):
        runs[method] = run_seeds(
            lambda s, m=method: build_distiller(
                m, student(), teacher if m != "scratch" else None, hparams if m == "kd" else {}
            ),
            train,
            test,
            seeds=args.seeds,
            config=cfg,
            seed_log=print,
        )
        print(runs[method])

    # speed of one KD epoch, with and without the cache (median of 3 epochs after the first)
    speed = {}
    for cache in (False, True):
        clear_memory_cache()
        d = build_distiller("kd", student(), teacher)
        start = time.perf_counter()
        result = fit(d, train, None, epochs=4, cache=cache, batch_size=args.batch_size)
        speed["kd_cache" if cache else "kd_no_cache"] = {
            "epoch_seconds": sorted(h["seconds"] for h in result.history[1:])[1],
            "first_epoch_seconds_incl_cache_build": time.perf_counter()
            - start
            - sum(h["seconds"] for h in result.history[1:]),
        }
    d = build_distiller("scratch", student())
    result = fit(d, train, None, epochs=4, batch_size=args.batch_size)
    speed["scratch"] = {"epoch_seconds": sorted(h["seconds"] for h in result.history[1:])[1]}
    print("epoch seconds:", {k: round(v["epoch_seconds"], 2) for k, v in speed.items()})

    (sm, ss), (km, ks) = runs["scratch"].best, runs["kd"].best
    (slm, sls), (klm, kls) = runs["scratch"].last, runs["kd"].last
    payload = {
        "command": "python scripts/acceptance.py " + " ".join(os.sys.argv[1:]),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, threads {torch.get_num_threads()}",
        "teacher": {
            k: entry[k] for k in ("model", "dataset", "params", "test_acc", "train_seconds")
        },
        "student": {"model": args.student, "params": count_parameters(student())},
        "train_config": cfg,
        "kd_hparams": hparams,
        "scratch": runs["scratch"].to_dict(),
        "kd": runs["kd"].to_dict(),
        "kd_gain_best": km - sm,
        "kd_gain_last": klm - slm,
        "teacher_minus_scratch_best": entry["test_acc"] - sm,
        "speed": speed,
    }
    print(
        f"teacher {entry['test_acc']:.2f}% ({entry['train_seconds']:.0f}s) | scratch {sm:.2f}±{ss:.2f} "
        f"(last {slm:.2f}±{sls:.2f}) | kd {km:.2f}±{ks:.2f} (last {klm:.2f}±{kls:.2f}) | gain {km - sm:+.2f}"
    )
    out = (
        Path(args.out)
        if args.out
        else ROOT / "data" / "results" / f"acceptance_{args.teacher}_{args.student}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, payload)
    print("wrote", out)


if __name__ == "__main__":
    main()

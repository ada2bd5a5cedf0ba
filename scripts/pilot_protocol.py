"""Pilot measurements for issue 14's book-scale protocol (one seed each, one thread).

1. ``ft``: FT on the comparison's mnist5k pair (cnn_medium -> cnn_tiny, 8 epochs) at its
   published weight (beta = 200) and two smaller ones: is the -30 points a weight problem?
2. ``alone``: students trained alone on shapes (20,000 images, 15 epochs, the README's KD
   schedule) beside the teacher's 91.55%: how much headroom each leaves.

Usage: python scripts/pilot_protocol.py ft|alone OUT.json
"""

from __future__ import annotations

import sys
import time

import torch

from kdtutor.bench.knowledge import PRESETS, Pair, run_one
from kdtutor.bench.provenance import git_commit, machine, utc_now
from kdtutor.data import load_dataset
from kdtutor.io import atomic_write_json
from kdtutor.models import build_model
from kdtutor.seeding import seed_everything
from kdtutor.train import fit


def pilot_ft() -> list[dict]:
    pair = Pair("mnist5k_cnn", "cnn_tiny", "cnn_medium->cnn_tiny")
    rows = []
    for beta in (200.0, 20.0, 2.0):
        row = run_one(pair, "ft", 0, PRESETS["book"], {"beta": beta})
        row.pop("correct")
        rows.append(row)
        print(
            f"ft beta {beta:g}: best {row['best_acc']:.2f} last {row['last_acc']:.2f}", flush=True
        )
    return rows


def pilot_alone() -> list[dict]:
    torch.set_num_threads(1)
    train, test = load_dataset("shapes", "train"), load_dataset("shapes", "test")
    rows = []
    for student in ("cnn_tiny", "cnn_small", "resnet8", "mobilenetv2"):
        seed_everything(0)
        try:
            model = build_model(student, num_classes=10)
        except Exception as exc:  # a name this registry lacks: say so and go on
            print(f"{student}: {exc}", flush=True)
            continue
        start = time.perf_counter()
        r = fit(model, train, test, epochs=15, batch_size=128, lr=0.05, seed=0)
        rows.append(
            {
                "student": student,
                "params": sum(p.numel() for p in model.parameters()),
                "best_acc": r.best_acc,
                "last_acc": r.last_acc,
                "seconds": time.perf_counter() - start,
                "test_images": len(test),
            }
        )
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    which, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    rows = pilot_ft() if which == "ft" else pilot_alone()
    atomic_write_json(
        out,
        {
            "provenance": {
                "command": "python " + " ".join(sys.argv),
                "commit": git_commit(),
                "machine": machine(),
                "date": utc_now(),
                "threads": 1,
            },
            "rows": rows,
        },
    )

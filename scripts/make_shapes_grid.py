"""Render a grid of the procedural shapes dataset: one row per class, 8 samples each.

Usage: ``python scripts/make_shapes_grid.py [--out docs/images/shapes_grid.png] [--seed 0]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from kdtutor.data.shapes import CLASSES, make_shapes

ROOT = Path(__file__).resolve().parents[1]


def make_grid(out: Path, seed: int = 0, per_class: int = 8, start: int = 0) -> Path:
    """Draw ``per_class`` samples of each class (rows labelled with class names) to ``out``.

    Args:
        out: PNG path; its folder is created.
        seed: Seed of the shapes family.
        per_class: Samples per row.
        start: Index of the first image drawn.

    Returns:
        The path written.
    """
    images, labels = make_shapes(10 * per_class, seed=seed, start=start)
    fig, axes = plt.subplots(
        len(CLASSES), per_class, figsize=(per_class * 0.9 + 1.4, len(CLASSES) * 0.9)
    )
    for k, name in enumerate(CLASSES):
        rows = np.flatnonzero(labels == k)[:per_class]
        for j, i in enumerate(rows):
            ax = axes[k, j]
            ax.imshow(images[i].transpose(1, 2, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{k}: {name}", rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("kdtutor shapes: one row per class (pairs 0/1, 2/3, 4/5, 6/7, 8/9)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "shapes_grid.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args()
    print(make_grid(args.out, seed=args.seed, per_class=args.per_class, start=args.start))


if __name__ == "__main__":
    main()

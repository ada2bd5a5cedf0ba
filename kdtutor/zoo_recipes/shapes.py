"""Teachers of the shapes dataset beyond the book's main one (``shapes_cnn_large``).

* The **width family** of chapter 5 (teacher-student architecture): ``cnn_large``'s design
  (4 stages of 2 blocks, a stride-2 stem) at widths 8, 16 and 48 (``cnn_large`` is width 32),
  trained with exactly ``shapes_cnn_large``'s recipe, so the family varies capacity and
  nothing else (the capacity gap of Mirzadeh et al., 2020; Cho and Hariharan, 2019).
* Teachers of **other architectures** for chapter 6 (multi-teacher distillation and attention
  transfer from a transformer): ``shapes_resnet14`` (a CIFAR ResNet-14) and ``shapes_vit_p8``
  (``vit_tiny`` at patch 8: 17 tokens). The ViT trains with AdamW, the optimiser the ViT pilot
  of the architecture suite chose on the validation images (as DeiT's ViTs, Touvron et al.
  2021); every other recipe is the book's teacher recipe.

All are trained once, seed 0, by ``kdtutor zoo train NAME``; their weights and manifest are
in ``kdtutor/zoo_data/shapes/``.
"""

from __future__ import annotations

from typing import Any

from ..zoo import ZooRecipe

__all__ = ["FOLDER", "RECIPES", "TEACHER_TRAIN"]

FOLDER = "shapes"

TEACHER_TRAIN: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 128,
    "lr": 0.05,
    "schedule": "cosine",
    "augment": "crop_flip",
}
"""``shapes_cnn_large``'s recipe (SGD momentum 0.9, the package default): every teacher here
trains with it, the ViT with AdamW in place of SGD."""

_VIT_TRAIN: dict[str, Any] = {
    **TEACHER_TRAIN,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_epochs": 1,
}


def _family(width: int) -> ZooRecipe:
    widths = (width, 2 * width, 4 * width, 8 * width)
    return ZooRecipe(
        name=f"shapes_cnn_w{width}",
        model="convnet",
        dataset="shapes",
        description=(
            f"cnn_large's design at widths {widths} (cnn_large is width 32): a teacher of "
            "the width family of chapter 5"
        ),
        model_kwargs={"widths": widths, "blocks_per_stage": 2, "stem_stride": 2},
        train=dict(TEACHER_TRAIN),
        folder=FOLDER,
    )


RECIPES: dict[str, ZooRecipe] = {
    r.name: r
    for r in [
        *(_family(width) for width in (8, 16, 48)),
        ZooRecipe(
            name="shapes_resnet14",
            model="resnet14",
            dataset="shapes",
            description="a CIFAR ResNet-14 (widths 16/32/64): the ResNet member of chapter 6's "
            "multi-teacher ensembles",
            train=dict(TEACHER_TRAIN),
            folder=FOLDER,
        ),
        ZooRecipe(
            name="shapes_vit_p8",
            model="vit_tiny",
            dataset="shapes",
            description="vit_tiny at patch 8 (17 tokens, AdamW): the transformer teacher of "
            "chapter 6's attention distillation and multi-teacher ensembles",
            model_kwargs={"patch_size": 8},
            train=dict(_VIT_TRAIN),
            folder=FOLDER,
        ),
    ]
}

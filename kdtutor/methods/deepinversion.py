r"""DeepInversion (Yin, Molchanov, Alvarez, Li, Mallya, Hoiem, Jha, Kautz, CVPR 2020).

Images are *optimised*, not generated: starting from Gaussian noise, a batch :math:`\hat x`
is updated by Adam to minimise

.. math::
    \mathrm{CE}(T(\hat x), \hat y) + \alpha_{TV}\,\mathcal R_{TV}(\hat x)
        + \alpha_{\ell_2} \|\hat x\|_2 + \alpha_f\,\mathcal R_{feature}(\hat x)
        \;[+\ \alpha_c\,\mathcal R_{comp}(\hat x)]

on randomly rolled copies (jitter), where :math:`\mathcal R_{feature}` matches the batch
statistics at every BatchNorm input of the teacher to its running statistics
(:func:`~kdtutor.losses.data_free.bn_statistics_loss`) and the optional competition term is
Adaptive DeepInversion's. The student then learns from the teacher on the synthesised pool
(plain KD). Defaults: NVlabs/DeepInversion ``cifar10/deepinversion_cifar10.py`` and
``cifar10/README.md`` (the paper's parameters ``r_feature 10, di_lr 0.05``).

Two ways in: :func:`invert` and :func:`synthetic_dataset` give a pool as an
``ArrayDataset`` for ``fit(build_distiller("kd", ...), pool, test)`` (teacher cache, seeded
loader, cost accounting); or the registered data-free distiller ``deepinversion`` fills the
pool on its first batch and serves random batches of it
(``fit(d, None, test, steps_per_epoch=N)``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..config import ConfigError, non_negative, positive
from ..data.loader import Batch
from ..errors import KDTutorError, ShapeMismatchError
from ..losses.data_free import adi_competition_loss, bn_statistics_loss, total_variation_loss
from .kd import KD, KDHParams
from .registry import register_method

if TYPE_CHECKING:
    from ..data.arrays import ArrayDataset

__all__ = ["DeepInversion", "DeepInversionHParams", "invert", "synthetic_dataset"]


def _teacher_channels(teacher: nn.Module, channels: int | None) -> int:
    from ..models.summary import first_in_channels

    c = channels or first_in_channels(teacher)
    if not c:
        raise KDTutorError(
            "invert cannot tell how many channels the teacher's images have: pass channels=..."
        )
    return int(c)


def invert(
    teacher: nn.Module,
    n: int,
    *,
    batch: int = 256,
    iters: int = 2000,
    lr: float = 0.05,
    r_feature: float = 10.0,
    var_scale: float = 2.5e-5,
    l2: float = 0.0,
    jitter: int = 2,
    student: nn.Module | None = None,
    cig: float = 0.0,
    seed: int = 0,
    img_size: int = 32,
    channels: int | None = None,
    num_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Synthesise ``n`` images from ``teacher`` by DeepInversion, ``batch`` at a time.

    Each batch starts from :math:`\mathcal N(0, I)` noise, with targets cycling
    :math:`0, 1, \dots, K-1` over the pool (the code's columns of classes), and runs
    ``iters`` Adam steps (learning rate ``lr``) on the loss of the module docstring,
    computed on a copy rolled by up to ``jitter`` pixels each way; the batch with the
    lowest loss seen is kept (the code means to; its ``best_inputs = inputs.data`` aliases the
    live tensor, so it returns the last). The teacher is put in eval mode (its BatchNorm
    running statistics are the targets and are never updated) and restored; gradients are
    taken with respect to the images only, so no parameter of the teacher or the student
    is touched. All randomness comes from ``seed`` (torch's global RNG is not used).

    Args:
        teacher: a classifier with ``BatchNorm2d`` layers (needed when ``r_feature`` > 0).
        n: number of images.
        student: for Adaptive DeepInversion's competition term (with ``cig`` > 0).
        cig: its weight (the code's ``cig_scale``; 0 = plain DeepInversion).
        img_size, channels, num_classes: the image side, its channels (default: the
            teacher's first convolution's) and the classes (default: ``teacher.num_classes``).

    Returns:
        ``(images, targets)``: float32 ``(n, C, S, S)`` in the teacher's normalised input
        space, and int64 ``(n,)``.
    """
    if n < 1 or batch < 1 or iters < 1 or img_size < 2:
        raise ConfigError(
            f"invert needs n, batch, iters >= 1 and img_size >= 2, got n={n}, batch={batch}, "
            f"iters={iters}, img_size={img_size}."
        )
    for name, value in (("lr", lr),):
        positive(name, value, "invert")
    for name, value in (("r_feature", r_feature), ("var_scale", var_scale), ("l2", l2),
                        ("jitter", jitter), ("cig", cig)):  # fmt: skip
        non_negative(name, value, "invert")
    if cig > 0 and student is None:
        raise ConfigError("invert: cig > 0 (Adaptive DeepInversion) needs student=...")
    c = _teacher_channels(teacher, channels)
    k = num_classes or getattr(teacher, "num_classes", None)
    if not k:
        raise KDTutorError("invert cannot tell the teacher's classes: pass num_classes=...")
    bns = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    if r_feature > 0 and not bns:
        raise KDTutorError(
            "DeepInversion matches the statistics of the teacher's BatchNorm2d layers, and "
            "this teacher has none: pick a teacher with BatchNorm, or pass r_feature=0."
        )
    bns = [m for m in bns if m.running_mean is not None and m.running_var is not None]
    gen = torch.Generator().manual_seed(seed)
    jitter_rng = random.Random(seed)
    device = next(teacher.parameters()).device
    seen: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0])) for m in bns]
    was_training = teacher.training
    student_training = student.training if student is not None else False
    teacher.eval()
    if student is not None:
        student.eval()
    images, targets = [], []
    try:
        for start in range(0, n, batch):
            b = min(batch, n - start)
            y = (torch.arange(start, start + b) % k).to(device)
            x = torch.randn(b, c, img_size, img_size, generator=gen).to(device)
            x.requires_grad_(True)
            optimizer = torch.optim.Adam([x], lr=lr)
            best, best_loss = x.detach().clone(), float("inf")
            for _ in range(iters):
                dx = jitter_rng.randint(-jitter, jitter)
                dy = jitter_rng.randint(-jitter, jitter)
                xj = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
                seen.clear()
                logits = teacher(xj)
                loss = nn.functional.cross_entropy(logits, y)
                if cig > 0:
                    assert student is not None
                    loss = loss + cig * adi_competition_loss(student(xj), logits)
                loss = loss + var_scale * total_variation_loss(xj)
                if r_feature > 0:
                    loss = loss + r_feature * bn_statistics_loss(
                        seen, [m.running_mean for m in bns], [m.running_var for m in bns]
                    )
                if l2 > 0:
                    loss = loss + l2 * torch.linalg.vector_norm(xj)
                value = float(loss.detach())
                if value < best_loss:
                    best_loss, best = value, x.detach().clone()
                (grad,) = torch.autograd.grad(loss, [x])
                x.grad = grad
                optimizer.step()
            images.append(best.cpu())
            targets.append(y.cpu())
    finally:
        for h in hooks:
            h.remove()
        teacher.train(was_training)
        if student is not None:
            student.train(student_training)
    return torch.cat(images), torch.cat(targets).to(torch.int64)


def synthetic_dataset(
    images: Tensor, targets: Tensor, like: ArrayDataset, *, seed: int = 0
) -> ArrayDataset:
    """The pool as an :class:`~kdtutor.data.arrays.ArrayDataset` in ``like``'s input space:
    denormalised with ``like``'s mean and std, clipped to [0, 1] and rounded to uint8 (what
    saving PNGs does in the authors' pipeline). Same name, classes and normalisation as
    ``like`` (so ``fit``'s trained-on check passes), split ``"deepinversion-seed{seed}"``
    (part of the fingerprint, so the teacher cache is the pool's own)."""
    from ..data.arrays import ArrayDataset

    if images.dim() != 4 or images.shape[0] != targets.shape[0]:
        raise ShapeMismatchError(
            f"synthetic_dataset expects images (N, C, H, W) and targets (N,), got "
            f"{tuple(images.shape)} and {tuple(targets.shape)}."
        )
    if images.shape[1] != len(like.mean):
        raise ShapeMismatchError(
            f"the images have {images.shape[1]} channels but {like.name!r} has "
            f"{len(like.mean)}: invert the teacher of that dataset."
        )
    c = images.shape[1]
    mean = torch.tensor(like.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(like.std, dtype=torch.float32).view(1, c, 1, 1)
    pixels = (images.detach().float().cpu() * std + mean).clamp(0.0, 1.0)
    uint8 = (pixels * 255.0).round().to(torch.uint8)
    return ArrayDataset(
        uint8,
        targets.detach().cpu().to(torch.int64),
        like.classes,
        like.name,
        f"deepinversion-seed{seed}",
        mean=like.mean,
        std=like.std,
    )


@dataclass(frozen=True)
class DeepInversionHParams(KDHParams):
    """The inversion's defaults: NVlabs/DeepInversion's CIFAR-10 README ("paper
    parameters": ``lr`` 0.05, ``r_feature`` 10) and script (``iters`` 2000, ``var_scale``
    2.5e-5, ``l2`` 0, ``batch`` 256, jitter 2). The student's KD (``ce_weight`` 0,
    ``kd_weight`` 1, ``T`` 4) is our choice (not from the source).

    Attributes:
        pool: number of images synthesised (once, on the first batch).
        seed: the inversion's seed (noise and jitter).
        img_size, channels: the images' side and channels (0: the teacher's).
    """

    ce_weight: float = 0.0
    kd_weight: float = 1.0
    T: float = 4.0
    pool: int = 1024
    iters: int = 2000
    batch: int = 256
    lr: float = 0.05
    r_feature: float = 10.0
    var_scale: float = 2.5e-5
    l2: float = 0.0
    jitter: int = 2
    img_size: int = 32
    channels: int = 0
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        for name in ("pool", "iters", "batch", "lr", "img_size"):
            positive(name, getattr(self, name), "deepinversion")
        for name in ("r_feature", "var_scale", "l2", "jitter", "channels"):
            non_negative(name, getattr(self, name), "deepinversion")


@register_method
class DeepInversion(KD):
    """DeepInversion as a data-free distiller: the first :meth:`synthesize_batch` inverts
    the teacher into a pool of ``pool`` images (:func:`invert`, seeded by ``seed``, so a
    resumed run rebuilds the same pool), and every batch is drawn from it at random
    (torch's global RNG, which ``fit`` seeds and checkpoints) with its inversion targets;
    the student then takes KD's step on it (``ce_weight`` on those targets, ``kd_weight``
    on the teacher's outputs). Use :func:`invert` and :func:`synthetic_dataset` to train on
    the pool through the teacher cache instead.
    """

    name = "deepinversion"
    family = "data_free"
    paper = (
        "Yin, Molchanov, Alvarez, Li, Mallya, Hoiem, Jha, Kautz (2020). Dreaming to Distill: "
        "Data-Free Knowledge Transfer via DeepInversion"
    )
    hparams_cls = DeepInversionHParams
    loss_weights = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_images: Tensor | None = None
        self.pool_targets: Tensor | None = None

    def build_pool(self) -> tuple[Tensor, Tensor]:
        """Invert the teacher into the pool (once) and return it."""
        if self.pool_images is None:
            hp: DeepInversionHParams = self.hparams  # type: ignore[assignment]
            assert self.teacher is not None
            self.pool_images, self.pool_targets = invert(
                self.teacher, hp.pool, batch=hp.batch, iters=hp.iters, lr=hp.lr,
                r_feature=hp.r_feature, var_scale=hp.var_scale, l2=hp.l2, jitter=hp.jitter,
                seed=hp.seed, img_size=hp.img_size, channels=hp.channels or None,
            )  # fmt: skip
        assert self.pool_targets is not None
        return self.pool_images, self.pool_targets

    def synthesize_batch(self, batch_size: int) -> Batch:
        images, targets = self.build_pool()
        rows = torch.randint(len(images), (batch_size,))
        return Batch(images[rows], targets[rows], None)

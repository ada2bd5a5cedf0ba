"""The plain baseline: one epoch of Hinton KD written by hand in plain PyTorch.

``kdtutor bench --speed`` times kdtutor's trainer against this loop, so it is written the way
a user would write it from the paper, with nothing from kdtutor inside: the whole training
set already normalised in one float tensor, a fresh ``torch.randperm`` order per epoch, the
teacher under ``torch.no_grad()``, the loss spelled out, and the loss logged as a Python
float after every step.

.. math::
    \\mathcal{L} = \\lambda_{CE}\\,\\mathrm{CE}(z_s, y)
        + \\lambda_{KD}\\,T^2\\,\\frac{1}{B}\\sum_i \\mathrm{KL}\\big(\\mathrm{softmax}(z_t/T)
        \\,\\|\\, \\mathrm{softmax}(z_s/T)\\big)

with kdtutor's ``kd`` defaults (T=4, ``ce_weight`` :math:`\\lambda_{CE}` = 0.1, ``kd_weight``
:math:`\\lambda_{KD}` = 0.9), so both compute the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["plain_kd_epoch"]


def plain_kd_epoch(
    student: nn.Module,
    teacher: nn.Module,
    images: Tensor,
    targets: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    temperature: float = 4.0,
    ce_weight: float = 0.1,
    kd_weight: float = 0.9,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> float:
    """Train ``student`` for one epoch of KD from ``teacher`` and return the mean loss.

    Args:
        student: the network trained (put in ``train()`` mode).
        teacher: the frozen teacher (put in ``eval()`` mode, run without gradients).
        images: every training image, already normalised: float32 ``(N, C, H, W)``.
        targets: int64 labels ``(N,)``.
        optimizer: the student's optimizer, kept by the caller across epochs.
        batch_size: samples per step (the last batch may be smaller).
        temperature: the softening temperature :math:`T`.
        ce_weight: weight of the cross entropy with the labels.
        kd_weight: weight of the :math:`T^2`-scaled KL divergence to the teacher.
        generator: random generator of the epoch's order (``None``: torch's global one).
        device: where the models are; each batch is moved there.

    Returns:
        The loss averaged over the epoch's samples, each batch's loss taken before its step.
    """
    student.train()
    teacher.eval()
    n = images.shape[0]
    order = torch.randperm(n, generator=generator)
    total = 0.0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        x = images[idx].to(device, non_blocking=True)
        y = targets[idx].to(device, non_blocking=True)

        with torch.no_grad():
            teacher_logits = teacher(x)
        student_logits = student(x)

        ce = F.cross_entropy(student_logits, y)
        kl = F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",  # sum over classes, mean over the batch
        )
        loss = ce_weight * ce + kd_weight * temperature**2 * kl

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)  # users log the loss: one host sync per step
    return total / n

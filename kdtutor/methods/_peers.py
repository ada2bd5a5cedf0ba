"""Networks trained beside the student: peers (DML, KDCL), branches (ONE), generations (BAN).

Private helpers shared by the online and self-distillation methods; the leading ``_`` keeps
this module out of the registry's import loop.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import KDTutorError


def fresh_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with an independent random initialisation of the same kind.

    Every parameter of the copy is a random permutation of the original's values. For the
    initialisations every kdtutor model uses (independent draws per weight: Kaiming normal,
    torch's uniform defaults; constants for BatchNorm and biases) that is an independent
    draw from the same distribution, and it needs no knowledge of how the module was built,
    so a user's own student works too. Buffers (BatchNorm statistics) are copied as they
    are. The permutations come from torch's global generator: seed it for reproducible
    peers. ``module`` must be untrained, or the copy inherits its trained values' spread.
    """
    twin = copy.deepcopy(module)
    with torch.no_grad():
        for parameter in twin.parameters():
            flat = parameter.flatten()
            parameter.copy_(flat[torch.randperm(flat.numel())].view_as(parameter))
    return twin


def build_peers(
    student: nn.Module,
    names: Sequence[str],
    count: int,
    input_shape: Sequence[int],
) -> list[nn.Module]:
    """The networks trained beside ``student``: one per registry name in ``names``, or, when
    ``names`` is empty, ``count - 1`` fresh copies of the student (:func:`fresh_copy`)."""
    if names:
        from ..models import build_model

        num_classes = getattr(student, "num_classes", None)
        if num_classes is None:
            raise KDTutorError(
                f"peers given by name need the student's num_classes, and "
                f"{type(student).__name__} has no num_classes attribute: pass the peers as "
                "modules (peers=[...]) instead."
            )
        return [
            build_model(
                name,
                num_classes=num_classes,
                in_channels=input_shape[0],
                image_size=input_shape[-1],
            )
            for name in names
        ]
    if count < 2:
        raise ValueError(f"an online scheme trains at least 2 networks, got {count}.")
    return [fresh_copy(student) for _ in range(count - 1)]


@contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every BatchNorm's running statistics as they were.

    For extra no-grad forwards in training mode (a DML peer's targets recomputed after its
    update) that must not count as a step: the momentum is set to 0 (batch statistics are
    still used for the outputs) and restored afterwards, with ``num_batches_tracked``."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in norms
    ]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)

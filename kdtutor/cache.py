"""Teacher-output caching: the frozen teacher's logits (and features) computed once per dataset.

A frozen teacher in ``eval()`` mode is a fixed function, so when every epoch shows it the
same images (no random augmentation), its outputs can be computed once and looked up by
dataset index; a KD student then trains about as fast as a student alone. The cache key
hashes the teacher's weights, the dataset's content and the transform, so a changed
teacher or dataset never reads stale outputs.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from .errors import KDTutorError

if TYPE_CHECKING:
    from .methods.base import Distiller, TeacherOutputs

_MEMORY: OrderedDict[str, TeacherCache] = OrderedDict()
MAX_CACHES_IN_MEMORY = 4


class CacheRefusedError(KDTutorError, ValueError):
    """Caching was requested where it would be wrong (random augmentation)."""


class _Dataset(Protocol):
    def __len__(self) -> int: ...
    def fingerprint(self) -> str: ...
    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]: ...


class _Transform(Protocol):
    deterministic: bool

    def describe(self) -> str: ...


def cache_refusal(augment: _Transform | None) -> str | None:
    """Why teacher outputs cannot be cached with this training transform, or ``None`` if they can."""
    if augment is None or augment.deterministic:
        return None
    return (
        f"the training transform {augment.describe()} is random, so the teacher would see a different "
        "image every epoch and cached outputs would not match the student's input. Train without "
        "augmentation to use the cache, or set cache=False."
    )


def weights_digest(model: nn.Module) -> str:
    """sha256 of a model's parameters and buffers (names, shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(tensor.shape)}|{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def cache_key(
    teacher: nn.Module, dataset: _Dataset, augment: _Transform | None, paths: Sequence[str]
) -> str:
    """The key under which a teacher's outputs on ``dataset`` are cached."""
    parts = [
        weights_digest(teacher),
        dataset.fingerprint(),
        augment.describe() if augment is not None else "Identity()",
        ",".join(paths),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class TeacherCache:
    """Teacher logits and features for every index of one dataset, held in memory."""

    def __init__(self, key: str, logits: Tensor, features: dict[str, Tensor]):
        self.key = key
        self.logits = logits
        self.features = features
        self.hits = 0

    def __len__(self) -> int:
        return self.logits.shape[0]

    def lookup(self, index: Tensor, device: torch.device | str = "cpu") -> TeacherOutputs:
        from .methods.base import TeacherOutputs

        self.hits += 1
        index = index.cpu()
        return TeacherOutputs(
            self.logits[index].to(device, non_blocking=True),
            {k: v[index].to(device, non_blocking=True) for k, v in self.features.items()},
        )

    @property
    def nbytes(self) -> int:
        return self.logits.nbytes + sum(v.nbytes for v in self.features.values())


@torch.no_grad()
def build_cache(
    distiller: Distiller,
    dataset: _Dataset,
    *,
    key: str,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> TeacherCache:
    """Run the distiller's teacher once over ``dataset`` in order and keep its outputs."""
    n = len(dataset)
    logits: Tensor | None = None
    features: dict[str, Tensor] = {}
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(start + batch_size, n))
        x, _ = dataset.batch(index)
        out = distiller.compute_teacher_outputs(x.to(device))
        if logits is None:
            logits = torch.empty((n, *out.logits.shape[1:]), dtype=out.logits.dtype)
            features = {
                k: torch.empty((n, *v.shape[1:]), dtype=v.dtype) for k, v in out.features.items()
            }
        logits[index] = out.logits.float().cpu()
        for k, v in out.features.items():
            features[k][index] = v.cpu()
    if logits is None:
        raise KDTutorError(
            "cannot cache teacher outputs of an empty dataset: the training split has no samples."
        )
    return TeacherCache(key, logits, features)


def attach_teacher_cache(
    distiller: Distiller,
    dataset: _Dataset,
    augment: _Transform | None = None,
    *,
    mode: bool | str = "auto",
    device: torch.device | str = "cpu",
) -> TeacherCache | None:
    """Attach a (possibly shared, in-memory) teacher-output cache to ``distiller``.

    Args:
        mode: ``"auto"`` caches when valid and silently skips when augmentation is random;
            ``True`` insists (and raises :class:`CacheRefusedError` with the reason when invalid);
            ``False`` never caches.

    Returns:
        The cache attached, or ``None``.
    """
    distiller._cache = None
    if mode is False or distiller.teacher is None:
        return None
    if mode not in (True, "auto"):
        raise ValueError(f"cache must be True, False or 'auto', got {mode!r}.")
    reason = cache_refusal(augment)
    if reason is not None:
        if mode is True:
            raise CacheRefusedError(f"teacher-output cache refused: {reason}")
        return None
    key = cache_key(distiller.teacher, dataset, augment, list(distiller.teacher_feature_paths()))
    cache = _MEMORY.get(key)
    if cache is None:
        cache = build_cache(distiller, dataset, key=key, device=device)
        _MEMORY[key] = cache
        while len(_MEMORY) > MAX_CACHES_IN_MEMORY:
            _MEMORY.popitem(last=False)
    else:
        _MEMORY.move_to_end(key)
    distiller._cache = cache
    return cache


def clear_memory_cache() -> None:
    """Forget every in-memory teacher cache."""
    _MEMORY.clear()

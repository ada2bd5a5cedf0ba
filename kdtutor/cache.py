"""Teacher-output caching: the frozen teacher's logits (and features) computed once per dataset.

A frozen teacher in ``eval()`` mode is a fixed function, so when every epoch shows it the
same images (no random augmentation), its outputs can be computed once and looked up by
dataset index; a KD student then trains about as fast as a student alone. The cache key
hashes the teacher's weights, the dataset's content, the transform, the feature paths and
the storage dtype, so a changed teacher or dataset never reads stale outputs.

Two places to keep them:

* ``"memory"``: tensors in RAM, shared by later runs of the same process (a few caches).
* ``"disk"``: ``.npy`` files under ``cache_dir()/teacher/<key>/``, memory-mapped when read, for
  datasets whose teacher outputs do not fit in memory, and reused by later processes. Each
  array is written atomically and ``meta.json`` last, so a half-written cache is never read;
  an unreadable one is rebuilt with a warning.

``dtype="float16"`` halves the storage (logits rounded to about 3 significant digits).
With random augmentation, ``views=K`` caches K fixed augmented views of every image
(:class:`~kdtutor.data.transforms.FixedViews`), an approximation of fresh augmentation; a
batch then names the cache row of each sample it shows (``Batch.rows``: ``view * N + index``).

The cache knows teachers, not distillers: :func:`open_teacher_cache` takes a frozen teacher
and the feature paths to keep, and :class:`TeacherOutputs` (what a method reads from its
teacher) lives here, so methods import the cache and never the other way round.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from .config import ConfigError
from .data.diskcache import cache_dir
from .data.transforms import FixedViews
from .errors import KDTutorError
from .features import FeatureExtractor
from .io import atomic_array, atomic_write_json

_MEMORY: OrderedDict[str, TeacherCache] = OrderedDict()
MAX_CACHES_IN_MEMORY = 4
DISK_FORMAT = "kdtutor-teacher-cache/1"
Location = Literal["memory", "disk"]
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class CacheRefusedError(KDTutorError, ValueError):
    """Caching was requested where it would be wrong (random augmentation)."""


@dataclass
class TeacherOutputs:
    """What a method may read from its teacher: logits and named intermediate features."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


@torch.no_grad()
def teacher_forward(teacher: nn.Module, x: Tensor, paths: Sequence[str] = ()) -> TeacherOutputs:
    """Run a frozen ``teacher`` on ``x`` and capture the features at ``paths`` (never cached)."""
    if not paths:
        return TeacherOutputs(teacher(x))
    with FeatureExtractor(teacher, list(paths), detach=True) as fx:
        logits = teacher(x)
        return TeacherOutputs(logits, dict(fx.features))


@dataclass(frozen=True)
class CacheOptions:
    """How :func:`open_teacher_cache` caches, validated once when built.

    Attributes:
        mode: ``"auto"`` caches when valid and silently skips when augmentation is random
            (without fixed ``views``); ``True`` insists (and raises
            :class:`CacheRefusedError` with the reason when invalid); ``False`` never caches.
        location: ``"memory"`` or ``"disk"`` (memory-mapped files under ``cache_dir()``).
        dtype: ``"float32"`` or ``"float16"`` storage.
        views: fixed augmented views to cache instead of the plain images.
        precision: the autocast dtype the teacher runs in (``"float32"``: none), part of
            the key: training in bfloat16 reads outputs computed in bfloat16, as the teacher
            would give them uncached.
    """

    mode: bool | Literal["auto"] = "auto"
    location: Location = "memory"
    dtype: Literal["float32", "float16"] = "float32"
    views: FixedViews | None = None
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.mode not in (True, False, "auto"):
            raise ConfigError(f"cache must be True, False or 'auto', got {self.mode!r}.")
        if self.location not in ("memory", "disk"):
            raise ConfigError(
                f"cache_location must be 'memory' or 'disk', got {self.location!r}: 'disk' keeps "
                "teacher outputs in memory-mapped files under $KDTUTOR_CACHE."
            )
        if self.dtype not in _DTYPES:
            raise ConfigError(
                f"cache_dtype must be 'float32' or 'float16', got {self.dtype!r}: float16 halves "
                "the memory or disk a cache takes."
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


class _Dataset(Protocol):
    """An ArrayDataset (``fingerprint()``, ``batch(indices)``), or any map-style dataset of
    ``(input, target)`` pairs."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Any: ...


def dataset_fingerprint(dataset: _Dataset) -> str:
    """A digest of a dataset's inputs and targets: its own ``fingerprint()`` where it has one
    (an ArrayDataset's is computed once), else sha256 over every sample read in order (one
    pass over the data, cheap beside the teacher pass the cache saves every epoch)."""
    own = getattr(dataset, "fingerprint", None)
    if callable(own):
        return str(own())
    digest = hashlib.sha256(f"{type(dataset).__qualname__}|{len(dataset)}".encode())
    for i in range(len(dataset)):
        for part in dataset[i]:
            _digest_part(digest, part)
    return digest.hexdigest()


def _digest_part(digest: Any, part: Any) -> None:
    """Feed one input or target to ``digest``: a tensor or number by shape, dtype and bytes; a
    dict (a detection target) by its sorted keys, a list or tuple item by item."""
    if isinstance(part, dict):
        for key in sorted(part):
            digest.update(f"{key}:".encode())
            _digest_part(digest, part[key])
        return
    if isinstance(part, list | tuple) and not all(isinstance(v, int | float) for v in part):
        digest.update(f"[{len(part)}]".encode())
        for item in part:
            _digest_part(digest, item)
        return
    t = torch.as_tensor(part).detach().cpu().contiguous()
    digest.update(f"{tuple(t.shape)}|{t.dtype}".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _inputs(dataset: _Dataset, index: Tensor) -> Tensor:
    """The inputs of samples ``index``: ``dataset.batch`` where there is one, else stacked."""
    if hasattr(dataset, "batch"):
        return dataset.batch(index)[0]
    return torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in index])


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
        "augmentation to use the cache, cache K fixed augmented views per image with "
        "cache_views=K (an approximation), or set cache=False."
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
    teacher: nn.Module,
    dataset: _Dataset,
    augment: _Transform | FixedViews | None,
    paths: Sequence[str],
    *,
    dtype: str = "float32",
    precision: str = "float32",
) -> str:
    """The key under which a teacher's outputs on ``dataset`` are cached."""
    parts = [
        weights_digest(teacher),
        dataset_fingerprint(dataset),
        augment.describe() if augment is not None else "Identity()",
        ",".join(paths),
    ]
    if dtype != "float32":  # float32 keys stay as they were before dtypes existed
        parts.append(dtype)
    if precision != "float32":
        parts.append(f"autocast:{precision}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _take(array: Tensor | np.ndarray, rows: Tensor) -> Tensor:
    if isinstance(array, Tensor):
        return array.index_select(0, rows)
    return torch.from_numpy(np.ascontiguousarray(array[rows.numpy()]))


class TeacherCache:
    """Teacher logits and features for every image (and fixed view) of one dataset.

    Row ``view * n + index`` holds the outputs on view ``view`` of image ``index`` (row
    ``index`` without views): a batch carries these rows (``Batch.rows``), so a lookup needs
    nothing else. The arrays are tensors in memory or read-only ``numpy`` memory maps on
    disk; lookups return float32 tensors either way.
    """

    def __init__(
        self,
        key: str,
        logits: Tensor | np.ndarray,
        features: dict[str, Tensor | np.ndarray],
        *,
        views: int = 0,
        location: Location = "memory",
        folder: Path | None = None,
    ):
        self.key = key
        self.logits = logits
        self.features = features
        self.views = views
        self.location = location
        self.folder = folder
        self.n = logits.shape[0] // max(1, views)
        self.hits = 0

    def __len__(self) -> int:
        return self.n

    def lookup(self, rows: Tensor, device: torch.device | str = "cpu") -> TeacherOutputs:
        """The cached outputs of cache rows ``rows`` (``Batch.rows``), as float32 on ``device``."""
        rows = rows.cpu().long()
        if rows.numel() and int(rows.max()) >= self.logits.shape[0]:
            raise KDTutorError(
                f"teacher cache rows up to {int(rows.max())} asked of a cache of "
                f"{self.logits.shape[0]} rows: the batch comes from another dataset than the one "
                "the cache was built for (or from fixed views the cache does not hold)."
            )
        self.hits += 1
        return TeacherOutputs(
            _take(self.logits, rows).to(device, torch.float32, non_blocking=True),
            {
                k: _take(v, rows).to(device, torch.float32, non_blocking=True)
                for k, v in self.features.items()
            },
        )

    @property
    def nbytes(self) -> int:
        return self.logits.nbytes + sum(v.nbytes for v in self.features.values())


class _Sink(Protocol):
    def __call__(self, name: str, shape: tuple[int, ...]) -> Any: ...


def _fill(
    forward: Callable[[Tensor], TeacherOutputs],
    dataset: _Dataset,
    views: FixedViews | None,
    sink: _Sink,
    batch_size: int,
    device: torch.device | str,
) -> tuple[Any, dict[str, Any]]:
    """Run the teacher over every image (and view) in order, writing rows through ``sink``."""
    n = len(dataset)
    count = views.views if views is not None else 1
    logits: Any = None
    features: dict[str, Any] = {}
    with torch.no_grad():
        for v in range(count):
            for start in range(0, n, batch_size):
                index = torch.arange(start, min(start + batch_size, n))
                x = _inputs(dataset, index)
                if views is not None:
                    x = views.apply(x, torch.full_like(index, v), index)
                out = forward(x.to(device))
                if logits is None:
                    logits = sink("logits", (count * n, *out.logits.shape[1:]))
                    features = {
                        k: sink(k, (count * n, *t.shape[1:])) for k, t in out.features.items()
                    }
                rows = slice(v * n + start, v * n + start + len(index))
                logits[rows] = _as_stored(out.logits, logits)
                for k, t in out.features.items():
                    features[k][rows] = _as_stored(t, features[k])
    if logits is None:
        raise KDTutorError(
            "cannot cache teacher outputs of an empty dataset: the training split has no samples."
        )
    return logits, features


def _as_stored(t: Tensor, target: Any) -> Any:
    t = t.detach().float().cpu()
    if isinstance(target, np.ndarray):
        return t.numpy().astype(target.dtype, copy=False)
    return t.to(target.dtype)


def build_cache(
    teacher: nn.Module | Callable[[Tensor], TeacherOutputs],
    dataset: _Dataset,
    *,
    key: str,
    paths: Sequence[str] = (),
    options: CacheOptions | None = None,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> TeacherCache:
    """Run ``teacher`` once over ``dataset`` (and each fixed view of ``options.views``) in
    order and keep its logits and the features at ``paths`` in memory, or in memory-mapped
    files under :func:`disk_cache_folder` (``options.location="disk"``).

    ``teacher`` is a frozen module, or any function from a batch to :class:`TeacherOutputs`
    (a distiller's ``compute_teacher_outputs``, which counts its calls).
    """
    options = options or CacheOptions()
    if isinstance(teacher, nn.Module):
        module = teacher

        def forward(x: Tensor) -> TeacherOutputs:
            return teacher_forward(module, x, paths)

    else:
        forward = teacher
    views = options.views
    if options.location == "disk":
        return _build_disk_cache(forward, dataset, key, batch_size, device, options, paths)
    logits, features = _fill(
        forward,
        dataset,
        views,
        lambda name, shape: torch.empty(shape, dtype=options.torch_dtype),
        batch_size,
        device,
    )
    return TeacherCache(key, logits, features, views=views.views if views else 0)


def disk_cache_folder(key: str) -> Path:
    """Where a disk cache with this key lives: ``cache_dir()/teacher/<key>``."""
    return cache_dir() / "teacher" / key


def _build_disk_cache(
    forward: Callable[[Tensor], TeacherOutputs],
    dataset: _Dataset,
    key: str,
    batch_size: int,
    device: torch.device | str,
    options: CacheOptions,
    paths: Sequence[str],
) -> TeacherCache:
    """Fill memory-mapped ``.npy`` files under :func:`disk_cache_folder` and open them read-only.

    Rows are written straight into the memory maps, so building never holds the whole cache
    in RAM. Each file is renamed into place when complete and ``meta.json`` is written last.
    """
    folder = disk_cache_folder(key)
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    views = options.views
    with contextlib.ExitStack() as files:  # on error every temporary file is removed

        def sink(name: str, shape: tuple[int, ...]) -> np.ndarray:
            file = "logits.npy" if name == "logits" else f"feature{len(names)}.npy"
            if name != "logits":
                names[name] = file
            return files.enter_context(atomic_array(folder / file, shape, np.dtype(options.dtype)))

        _fill(forward, dataset, views, sink, batch_size, device)
    atomic_write_json(
        folder / "meta.json",
        {
            "format": DISK_FORMAT,
            "key": key,
            "n": len(dataset),
            "views": views.views if views else 0,
            "dtype": options.dtype,
            "paths": list(paths),
            "features": names,
        },
    )
    cache = open_disk_cache(key)
    assert cache is not None
    return cache


def open_disk_cache(key: str) -> TeacherCache | None:
    """The disk cache with this key, memory-mapped read-only; None when absent or unreadable
    (an unreadable one is reported with a ``RuntimeWarning`` and will be rebuilt)."""
    folder = disk_cache_folder(key)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != DISK_FORMAT or meta.get("key") != key:
            raise ValueError("it was written for another key or format")
        rows = meta["n"] * max(1, meta["views"])
        logits = np.load(folder / "logits.npy", mmap_mode="r", allow_pickle=False)
        features = {
            name: np.load(folder / file, mmap_mode="r", allow_pickle=False)
            for name, file in meta["features"].items()
        }
        if any(
            a.shape[0] != rows or a.dtype != np.dtype(meta["dtype"])
            for a in [logits, *features.values()]
        ):
            raise ValueError("its arrays do not have the rows or dtype its meta.json records")
    except Exception as exc:  # a truncated or foreign cache must never stop training
        warnings.warn(
            f"ignoring unreadable teacher cache {folder} ({type(exc).__name__}: {exc}); "
            "rebuilding it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return TeacherCache(
        key, logits, features, views=int(meta["views"]), location="disk", folder=folder
    )


def open_teacher_cache(
    teacher: nn.Module,
    dataset: _Dataset,
    augment: _Transform | None = None,
    *,
    paths: Sequence[str] = (),
    options: CacheOptions | None = None,
    forward: Callable[[Tensor], TeacherOutputs] | None = None,
    device: torch.device | str = "cpu",
    build: bool = True,
) -> TeacherCache | None:
    """The (possibly shared) cache of ``teacher``'s outputs on ``dataset``, or ``None``.

    Args:
        teacher: the frozen teacher; its weights are part of the key.
        dataset: the training split: an ArrayDataset, or any map-style dataset of
            ``(input, target)`` pairs whose inputs stack into a batch.
        augment: the training transform (a random one refuses the cache without views).
        paths: teacher feature paths to cache with the logits.
        options: see :class:`CacheOptions`.
        forward: how to compute one batch's outputs (default :func:`teacher_forward`).
        build: with ``False``, only open an existing disk cache (distributed runs: one
            process builds, the others wait and open it).
    """
    options = options or CacheOptions()
    if options.mode is False:
        return None
    reason = cache_refusal(augment) if options.views is None else None
    if reason is not None:
        if options.mode is True:
            raise CacheRefusedError(f"teacher-output cache refused: {reason}")
        return None
    paths = list(paths)
    key = cache_key(
        teacher,
        dataset,
        options.views or augment,
        paths,
        dtype=options.dtype,
        precision=options.precision,
    )
    memory_key = f"{options.location}:{key}"
    cache = _MEMORY.get(memory_key)
    if cache is None:
        cache = open_disk_cache(key) if options.location == "disk" else None
        if cache is None:
            if not build:
                raise KDTutorError(f"the disk teacher cache {disk_cache_folder(key)} is missing.")
            cache = build_cache(
                forward or teacher,
                dataset,
                key=key,
                paths=paths,
                options=options,
                device=device,
            )
        _MEMORY[memory_key] = cache
        while len(_MEMORY) > MAX_CACHES_IN_MEMORY:
            _MEMORY.popitem(last=False)
    else:
        _MEMORY.move_to_end(memory_key)
    return cache


def clear_memory_cache() -> None:
    """Forget every in-memory teacher cache (disk caches stay on disk)."""
    _MEMORY.clear()


def list_disk_caches() -> list[dict[str, Any]]:
    """Every disk teacher cache under ``cache_dir()/teacher``: its folder, size and meta.json
    (``None`` for a folder without a readable one, e.g. left by an interrupted build)."""
    root = cache_dir() / "teacher"
    if not root.is_dir():
        return []
    caches = []
    for folder in sorted(f for f in root.iterdir() if f.is_dir()):
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError):
            meta = None
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        caches.append({"folder": str(folder), "bytes": size, "meta": meta})
    return caches


def clear_disk_cache() -> int:
    """Delete every disk teacher cache under ``cache_dir()/teacher``; returns how many."""
    root = cache_dir() / "teacher"
    if not root.is_dir():
        return 0
    folders = [f for f in root.iterdir() if f.is_dir()]
    for folder in folders:
        shutil.rmtree(folder)
    return len(folders)

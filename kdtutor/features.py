"""Intermediate features from any model, by module path, through forward hooks.

Feature-based distillation (FitNets, attention transfer, relational methods, ...) compares
what student and teacher compute *inside* the network. :class:`FeatureExtractor` captures
those tensors without touching the model's ``forward``: name the modules by their dotted
path, as :meth:`torch.nn.Module.named_modules` spells it (``"layer2"``, ``"layer3.0.conv1"``,
``"blocks.5.mlp"``), run the model as usual, and read the captured values by path.

A path captures the module's **output**. Add the suffix ``":input"`` to capture the module's
**input** instead (its first positional argument). Two common uses:

* pre-activation features: ``"layer3.1.relu:input"`` is the tensor *before* that ReLU;
* the pooled embedding of a classifier: ``"fc:input"`` is what the last linear layer sees.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from kdtutor.features import FeatureExtractor, feature_shapes, list_paths
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> list_paths(model)
    ['0', '1', '2']
    >>> with FeatureExtractor(model, ["0", "2:input"]) as fx:
    ...     logits = model(torch.randn(5, 4))
    >>> fx["0"].shape, fx["2:input"].shape
    (torch.Size([5, 8]), torch.Size([5, 8]))
    >>> feature_shapes(model, ["1"], (1, 4))
    {'1': torch.Size([1, 8])}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .errors import KDTutorError, UnknownNameError, closest

__all__ = [
    "INPUT_SUFFIX",
    "FeatureExtractor",
    "FeatureNotRequestedError",
    "FeatureTypeError",
    "ModuleNotCalledError",
    "evaluating",
    "feature_shapes",
    "list_paths",
    "probe_features",
]

INPUT_SUFFIX = ":input"
"""Suffix of a path that captures the module's input instead of its output."""

_HINT = (
    "Call kdtutor.features.list_paths(model) to see every valid path (list_paths(model, "
    f"leaf_only=True) for the leaves only); add {INPUT_SUFFIX!r} to a path to capture the "
    "module's input instead of its output."
)


class ModuleNotCalledError(KDTutorError, KeyError):
    """A requested module was not called during the last forward pass, so it has no value."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class FeatureNotRequestedError(KDTutorError, KeyError):
    """A path looked up in an extractor that was not built with that path."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FeatureTypeError(KDTutorError, TypeError):
    """A captured value is not a tensor where a tensor was required."""


def list_paths(model: nn.Module, leaf_only: bool = False) -> list[str]:
    """Return every module path that :class:`FeatureExtractor` accepts, in model order.

    The root module (path ``""``) is left out. A module registered under two names (a shared
    module) appears under both, and either name may be hooked.

    Args:
        model: Any ``nn.Module``.
        leaf_only: Keep only modules without children (convolutions, activations, ...).

    Returns:
        The dotted paths, as ``model.named_modules()`` spells them.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(nn.ReLU(), nn.Flatten()))
        >>> list_paths(model)
        ['0', '1', '1.0', '1.1']
        >>> list_paths(model, leaf_only=True)
        ['0', '1.0', '1.1']
    """
    paths = []
    for name, module in model.named_modules(remove_duplicate=False):
        if not name:
            continue
        if leaf_only and next(module.children(), None) is not None:
            continue
        paths.append(name)
    return paths


def _split(path: str, modules: dict[str, nn.Module]) -> tuple[str, bool]:
    """Split ``path`` into (module path, capture input?)."""
    if path not in modules and path.endswith(INPUT_SUFFIX):
        return path[: -len(INPUT_SUFFIX)], True
    return path, False


def _unknown_paths_error(unknown: list[str], valid: list[str]) -> UnknownNameError:
    """An error naming every unknown path, the closest valid ones, and the valid list."""
    parts = []
    for path in unknown:
        base, suffix = path, ""
        if path.endswith(INPUT_SUFFIX):
            base, suffix = path[: -len(INPUT_SUFFIX)], INPUT_SUFFIX
        near = [name + suffix for name in closest(base, valid)]
        part = repr(path)
        if near:
            part += " (did you mean " + " or ".join(repr(n) for n in near) + "?)"
        parts.append(part)
    noun = "feature path" if len(unknown) == 1 else "feature paths"
    shown = ", ".join(valid[:40]) + (f" ... ({len(valid)} in all)" if len(valid) > 40 else "")
    if not valid:
        shown = "none (the model has no submodules)"
    message = f"unknown {noun} {', '.join(parts)}. Valid feature paths: {shown}. {_HINT}"
    return UnknownNameError(message)


def _detach(value: Any) -> Any:
    """Detach every tensor in ``value`` (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(_detach(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {key: _detach(v) for key, v in value.items()}
    return value


def _describe(value: Any) -> str:
    """A short description of a captured value, for error messages."""
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"{type(value).__name__} of {len(value)} ({inner})"
    if isinstance(value, dict):
        return f"dict with keys {list(value)[:6]}"
    return type(value).__name__


class FeatureExtractor:
    """Capture the outputs (or inputs) of modules named by dotted path during a forward pass.

    Use it as a context manager, which attaches the hooks on entry and removes them on exit
    (also when the block raises), or call :meth:`attach` and :meth:`remove` yourself. The
    model and its ``forward`` are not changed; any ``nn.Module`` works.

    After each call of ``model(...)``, :attr:`features` maps every requested path that was
    reached to what the module returned (or, for ``"path:input"``, to its first positional
    input), in the order of ``paths``; ``fx[path]`` reads one of them and :meth:`tensor`
    reads one that must be a tensor. Each forward pass of ``model`` starts afresh: values
    from the previous pass are dropped, so a path the new pass does not reach raises
    :class:`ModuleNotCalledError` (a ``KeyError``). Captured values stay readable after the
    hooks are removed, until the next forward pass or :meth:`clear`.

    If a module is called several times in one pass (a shared module), the last call's value
    is kept and :attr:`calls` counts the calls.

    Args:
        model: The model whose submodules are hooked. Its own ``forward`` call marks the
            start of a pass. (If you call submodules yourself instead of ``model(...)``,
            call :meth:`clear` between passes.)
        paths: Module paths from :func:`list_paths`, each optionally ending in
            ``":input"``. Repeated paths are kept once (first occurrence). A single string
            is taken as one path.
        detach: Store detached tensors (use it for a teacher). By default the values keep
            their autograd graph, so a loss on a student's features trains the student;
            they then hold that graph in memory until the next pass or :meth:`clear`.

    Raises:
        UnknownNameError: A path names no module. Every path is checked before any hook is
            attached, and the message suggests the closest valid paths.
        ValueError: ``paths`` is empty.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(4, 2))
        >>> with FeatureExtractor(model, ["1:input", "4:input"]) as fx:
        ...     logits = model(torch.randn(2, 3, 8, 8))
        >>> pre_relu, embedding = fx["1:input"], fx.tensor("4:input")
        >>> embedding.shape
        torch.Size([2, 4])
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], *, detach: bool = False) -> None:
        if isinstance(paths, str):
            paths = [paths]
        for path in paths:
            if not isinstance(path, str):
                raise TypeError(
                    f"feature paths must be strings such as 'layer2' or 'fc:input'; got "
                    f"{path!r} of type {type(path).__name__}."
                )
        unique = list(dict.fromkeys(paths))
        if not unique:
            raise ValueError(
                "FeatureExtractor needs at least one module path, e.g. ['layer2']. " + _HINT
            )
        modules = dict(model.named_modules(remove_duplicate=False))
        modules.pop("", None)
        targets: list[tuple[str, nn.Module, bool]] = []
        unknown = []
        for path in unique:
            name, is_input = _split(path, modules)
            if name in modules:
                targets.append((path, modules[name], is_input))
            else:
                unknown.append(path)
        if unknown:
            raise _unknown_paths_error(unknown, list(modules))

        self.model = model
        self.paths: tuple[str, ...] = tuple(unique)
        self.detach = detach
        self._targets = targets
        self._where = {path: _split(path, modules) for path in self.paths}
        self._handles: list[RemovableHandle] = []
        self._entered: list[bool] = []  # per open `with`: did that entry attach the hooks?
        self._values: dict[str, Any] = {}
        self._calls: dict[str, int] = dict.fromkeys(self.paths, 0)
        self._passes = 0

    # -- attaching and removing hooks -------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether the hooks are currently registered on the model."""
        return bool(self._handles)

    def attach(self) -> FeatureExtractor:
        """Register the hooks (does nothing if they are already registered). Returns ``self``."""
        if self._handles:
            return self
        handles = [self.model.register_forward_pre_hook(self._start_pass)]
        try:
            for path, module, is_input in self._targets:
                if is_input:
                    hook = module.register_forward_pre_hook(
                        self._input_hook(path), with_kwargs=True
                    )
                else:
                    hook = module.register_forward_hook(self._output_hook(path))
                handles.append(hook)
        except BaseException:
            for handle in handles:
                handle.remove()
            raise
        self._handles = handles
        return self

    def remove(self) -> None:
        """Remove every hook this extractor registered. Captured values stay readable."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __enter__(self) -> FeatureExtractor:
        self._entered.append(not self.attached)
        self.attach()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Only the `with` that attached the hooks removes them, so nested `with fx:` blocks
        # and a `with` around an explicit attach() both behave.
        if self._entered.pop():
            self.remove()

    # -- the hooks --------------------------------------------------------------------------

    def _start_pass(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._values.clear()
        self._calls = dict.fromkeys(self.paths, 0)
        self._passes += 1

    def _store(self, path: str, value: Any) -> None:
        self._values[path] = _detach(value) if self.detach else value
        self._calls[path] += 1

    def _output_hook(self, path: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._store(path, output)

        return hook

    def _input_hook(
        self, path: str
    ) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if args:
                value = args[0]
            elif kwargs:  # called with keyword arguments only: take the first one
                value = next(iter(kwargs.values()))
            else:
                value = None
            self._store(path, value)

        return hook

    # -- reading the captured values --------------------------------------------------------

    @property
    def features(self) -> dict[str, Any]:
        """Values captured in the last forward pass, by path, in the order of ``paths``.

        Paths whose module was not called in that pass are absent.
        """
        return {path: self._values[path] for path in self.paths if path in self._values}

    @property
    def calls(self) -> dict[str, int]:
        """How many times each path's module was called in the last pass (0 if not called)."""
        return dict(self._calls)

    def __getitem__(self, path: str) -> Any:
        """The value captured for ``path`` in the last forward pass.

        Raises:
            FeatureNotRequestedError: ``path`` is not one of this extractor's paths.
            ModuleNotCalledError: the module was not called during the last forward pass.
        """
        if path in self._values:
            return self._values[path]
        if path not in self._calls:
            near = closest(path, self.paths) if isinstance(path, str) else []
            guess = (" Did you mean " + " or ".join(map(repr, near)) + "?") if near else ""
            raise FeatureNotRequestedError(
                f"{path!r} is not one of this extractor's paths.{guess} It captures: "
                f"{', '.join(self.paths)}. Add the path when building the FeatureExtractor."
            )
        name, is_input = self._where[path]
        what = "input" if is_input else "output"
        if self._passes == 0:
            raise ModuleNotCalledError(
                f"no {what} captured for {path!r}: no forward pass of the model has run since "
                "the extractor was built or cleared. Call model(x) inside `with extractor:` "
                "(or after extractor.attach()) first."
            )
        raise ModuleNotCalledError(
            f"no {what} captured for {path!r}: the module {name!r} was not called during the "
            "last forward pass. Check that the model's forward uses it for this input and "
            "mode (an unused branch, an auxiliary head used only in training, or a module "
            "replaced by a functional call such as F.relu is never hooked)."
        )

    def __contains__(self, path: object) -> bool:
        """Whether a value was captured for ``path`` in the last forward pass."""
        return path in self._values

    def tensor(self, path: str) -> Tensor:
        """The value captured for ``path``, checked to be a single tensor.

        Raises:
            FeatureTypeError: the module returned something else (a tuple, a dict, ...).
        """
        value = self[path]
        if not isinstance(value, Tensor):
            raise FeatureTypeError(
                f"the value captured for {path!r} is a {_describe(value)}, not a tensor. "
                f"Read it with extractor[{path!r}] and take the part you need (e.g. "
                f"extractor[{path!r}][0]), or hook a submodule that returns a tensor."
            )
        return value

    def clear(self) -> None:
        """Drop every captured value (and the autograd graph they may hold)."""
        self._values.clear()
        self._calls = dict.fromkeys(self.paths, 0)
        self._passes = 0

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached hooks"
        return (
            f"{type(self).__name__}({type(self.model).__name__}, paths={list(self.paths)}, "
            f"detach={self.detach}, {state}, captured={list(self.features)})"
        )


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def evaluating(model: nn.Module) -> ContextManager[nn.Module]:
    """Run ``model`` in eval mode inside a ``with`` block, then restore its modes.

    Every submodule gets back its own train/eval flag on exit, also when the block raises,
    so a model whose parts had mixed modes (a frozen, eval-mode backbone in a training
    model) comes out as it went in. Gradients are not switched off: combine it with
    ``torch.no_grad()`` where none are needed (:func:`probe_features` does both).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
        >>> with evaluating(model):
        ...     model.training
        False
        >>> model.training
        True
    """
    return _evaluating(model)


def probe_features(model: nn.Module, x: Any, paths: Sequence[str]) -> tuple[Any, dict[str, Tensor]]:
    """``model(x)`` and its (detached) features at ``paths``, computed in eval mode without
    gradients (:func:`evaluating`; the model's modes are restored).

    Args:
        model: Any ``nn.Module``.
        x: Its input.
        paths: Paths as for :class:`FeatureExtractor`; each must capture a tensor.

    Returns:
        ``(output, {path: tensor})``, the features in the order of ``paths``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> out, feats = probe_features(model, torch.randn(2, 4), ["1"])
        >>> out.shape, feats["1"].shape
        (torch.Size([2, 3]), torch.Size([2, 8]))
    """
    with evaluating(model), torch.no_grad(), FeatureExtractor(model, paths, detach=True) as fx:
        output = model(x)
    return output, {path: fx.tensor(path) for path in fx.paths}


def feature_shapes(
    model: nn.Module,
    paths: Sequence[str],
    input_shape: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Size]:
    """Shapes of the features at ``paths`` for an input of ``input_shape``.

    Runs one forward pass on zeros, in eval mode and under ``torch.no_grad()``, then puts
    every submodule back in the train/eval mode it had (:func:`probe_features`). Used to size connectors between a
    student's and a teacher's features.

    Args:
        model: Any ``nn.Module``.
        paths: Paths as for :class:`FeatureExtractor`.
        input_shape: The full input shape, batch dimension included, e.g. ``(1, 3, 32, 32)``.
        dtype: Dtype of the zeros; defaults to the dtype of the model's first parameter
            (float32 for a model without parameters).
        device: Device of the zeros; defaults to the device of the first parameter (CPU
            without parameters).

    Returns:
        Path -> ``torch.Size``, in the order of ``paths``.

    Raises:
        FeatureTypeError: A captured value is not a tensor.
        ModuleNotCalledError: A module is not called by the forward pass.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU())
        >>> feature_shapes(model, ["0"], (1, 3, 32, 32))
        {'0': torch.Size([1, 8, 15, 15])}
    """
    first = next(model.parameters(), None)
    if dtype is None:
        dtype = first.dtype if first is not None else torch.get_default_dtype()
    if device is None:
        device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(tuple(input_shape), dtype=dtype, device=device)
    _, features = probe_features(model, x, paths)
    return {path: feature.shape for path, feature in features.items()}

"""Sphinx settings of the book's API reference (``book/api/``, from the docstrings by autodoc).

What the package's docstrings need that autodoc and napoleon do not do by themselves:

* **Attribute docstrings are prose.** Napoleon reads the first line of an attribute's
  docstring as ``type: description``, so a field documented as "Inputs: float32 (B, C, H,
  W)..." would show a type "Inputs" (and ask for a cross-reference to it). The types are in
  the annotations: attribute, data and property docstrings are kept as written.
* **Cross-references name things that exist, not always under the name they are documented
  by.** The book is built nitpicky (every unresolved reference is a warning). A docstring
  refers to ``load_dataset`` in ``kdtutor.data.registry``, which the reference documents as
  ``kdtutor.data.load_dataset`` (the package is an object's home, its other pages show it
  with ``:no-index:``): a Python reference on an API page that the Python domain cannot
  find is looked up as a Python object (an importable path, a name in the context's module
  or class, a name bound in any kdtutor module) and linked to where the API reference
  documents that object. One that names an object without a page (``torch.Tensor``: the
  offline build has no inventory of torch, numpy or the standard library; a module without
  ``__all__``) is rendered as code without a warning; their list is written to
  ``api_unresolved.txt`` next to the HTML folder. One that names nothing (a typo, a name
  that was renamed) still fails the build.
* **Small doctrees.** MyST parses an ``{eval-rst}`` block into a document of its own that
  shares the page's settings, environment included, and the nodes autodoc makes there keep
  a reference to it: pickled with the page, every API doctree held the whole environment
  (1.9 MB each; the build took twice as long, most of it unpickling). Once a page is
  read, its nodes point at the page's document.
* **No borrowed docstrings.** A method without a docstring (a model's ``forward``) is shown
  without the one it would inherit from torch, and data without a documentation comment
  (a dict of presets) without its type's (``dict``'s).
"""

from __future__ import annotations

import builtins
import functools
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from sphinx.util import logging
from sphinx.util.nodes import make_refnode

logger = logging.getLogger(__name__)

API_DOCS = "book/api/"
"""Docnames under this prefix are API pages."""

PACKAGE = "kdtutor"

_PROSE = ("attribute", "data", "property")
_saved: dict[str, list[str]] = {}
_unresolved: set[str] = set()
_documented_cache: dict[int, tuple[Any, str, str]] = {}


def _save_prose(app: Any, what: str, name: str, obj: Any, options: Any, lines: list) -> None:
    if what in _PROSE:
        _saved[name] = list(lines)


def _restore_prose(app: Any, what: str, name: str, obj: Any, options: Any, lines: list) -> None:
    saved = _saved.pop(name, None)
    if what in _PROSE and saved is not None:
        lines[:] = saved


def _drop_foreign_docstring(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list
) -> None:
    """No docstring of a class outside kdtutor stands in for one of ours: a method without a
    docstring of its own (``forward``) is shown without the one it inherits
    (``torch.nn.Module.forward``'s), and data without a documentation comment (a dict) without
    its type's (``dict``'s)."""
    if not lines:
        return
    if what in ("data", "attribute"):
        kind = type(obj)
        doc = kind.__doc__ if isinstance(kind.__doc__, str) else None
        if doc and str(kind.__module__).split(".")[0] != PACKAGE:
            if "\n".join(lines).strip() == inspect.cleandoc(doc).strip():
                lines[:] = []
        return
    if what != "method" or getattr(obj, "__doc__", None):
        return
    owner, _, member = name.rpartition(".")
    module, _, qualname = owner.rpartition(".")
    cls = getattr(sys.modules.get(module), qualname, None)
    if not isinstance(cls, type):
        return
    for base in cls.__mro__[1:]:
        if getattr(base.__dict__.get(member), "__doc__", None):
            if base.__module__.split(".")[0] != PACKAGE:
                lines[:] = []
            return


def _own_document(app: Any, doctree: Any) -> None:
    """Make every node of a page point at the page's document, not at the one MyST parsed an
    ``{eval-rst}`` block into (whose settings hold the environment)."""
    for node in doctree.findall(include_self=False):
        if vars(node).get("_document") not in (None, doctree):
            node.document = doctree


_NOTHING = object()
_SOMETHING = object()  # an attribute instances have but the class has not (no object to show)


@functools.cache
def _resolve(dotted: str) -> Any:
    """The object ``dotted`` names (an importable module or an attribute of one), or
    ``_NOTHING``."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # any failure means "not a module"
            continue
        return _getattrs(obj, parts[cut:])
    return _NOTHING


def _getattrs(obj: Any, names: list[str]) -> Any:
    for i, name in enumerate(names):
        if not hasattr(obj, name):
            last = i == len(names) - 1
            if last and isinstance(obj, type) and _instance_attribute(obj, name):
                return _SOMETHING
            return _NOTHING
        obj = getattr(obj, name)
    return obj


def _instance_attribute(cls: type, name: str) -> bool:
    """Whether instances of ``cls`` have ``name`` though the class has not: an annotated field
    (dataclass, NamedTuple) or an attribute a method of kdtutor's stores (``self.steps = ...``)."""
    for base in cls.__mro__:
        if name in vars(base).get("__annotations__", {}):
            return True
        if base.__module__.split(".")[0] != PACKAGE:
            continue
        for member in vars(base).values():
            code = getattr(member, "__code__", None)
            if code is not None and name in code.co_names:
                return True
    return False


@functools.cache
def _package_names() -> dict[str, list[Any]]:
    """Every name bound at the top level of a kdtutor module (imported by now) -> its objects."""
    names: dict[str, list[Any]] = {}
    for modname, module in list(sys.modules.items()):
        if modname.split(".")[0] == PACKAGE and module is not None:
            for name, obj in vars(module).items():
                names.setdefault(name, []).append(obj)
    return names


def _target_object(node: Any) -> Any:
    """What a reference's target names, or ``_NOTHING``: an importable path, a name in the
    context's module or class, or a name bound in any kdtutor module (with its attributes:
    ``Distiller.predict``). The last search stands in for the module that defines an object
    shown on a page of a package that re-exports it (the context is then the package)."""
    target = node.get("reftarget", "").lstrip(".~")
    if not target:
        return _NOTHING
    first, *rest = target.split(".")
    if not rest and hasattr(builtins, first):
        return getattr(builtins, first)
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        if cls:
            candidates.append(f"{module}.{cls}.{target}")
        candidates.append(f"{module}.{target}")
    for candidate in candidates:
        if (obj := _resolve(candidate)) is not _NOTHING:
            return obj
    for obj in _package_names().get(first, []):
        if (found := _getattrs(obj, rest)) is not _NOTHING:
            return found
    return _NOTHING


def _identity(obj: Any) -> Any:
    return getattr(obj, "__func__", obj)  # a classmethod's bound method -> its function


_LINKABLE = ("module", "class", "exception", "function", "method", "property")


def _documented(env: Any) -> dict[int, tuple[Any, str, str]]:
    """id of each object the API pages index (not data: equal values share ids) -> (the
    object, its page, its anchor). Built once per build, when the first reference misses."""
    cache = _documented_cache
    if not cache:
        for name, entry in env.get_domain("py").objects.items():
            if entry.aliased or entry.objtype not in _LINKABLE:
                continue
            obj = _resolve(name)
            if obj not in (_NOTHING, _SOMETHING):
                cache.setdefault(id(_identity(obj)), (obj, entry.docname, entry.node_id))
    return cache


def _link_by_identity(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """A Python reference on an API page whose name the Python domain cannot find, but which
    names an object the API reference documents under another name (``load_dataset`` in
    ``kdtutor.data.registry``, documented as ``kdtutor.data.load_dataset``): link to that."""
    if node.get("refdomain") != "py" or not node.get("refdoc", "").startswith(API_DOCS):
        return None
    obj = _target_object(node)
    if obj in (_NOTHING, _SOMETHING):
        return None
    found = _documented(env).get(id(_identity(obj)))
    if found is None:
        return None
    _, docname, anchor = found
    return make_refnode(app.builder, node["refdoc"], docname, anchor, contnode, node["reftarget"])


def _missing_reference(app: Any, domain: Any, node: Any) -> bool | None:
    """Silence a nitpicky warning for a Python reference on an API page when its target exists."""
    if not node.get("refdoc", "").startswith(API_DOCS) or getattr(domain, "name", "") != "py":
        return None
    if _target_object(node) is _NOTHING:
        return None  # a name that does not exist: the warning stands
    _unresolved.add(f"{node['refdoc']}: {node['reftype']} {node['reftarget']}")
    return True


def _report(app: Any, exception: Exception | None) -> None:
    unresolved = sorted(_unresolved)
    if exception is not None or app.builder.format != "html":
        return
    path = Path(app.outdir).parent / "api_unresolved.txt"
    path.write_text("".join(f"{line}\n" for line in unresolved))
    logger.info(
        "API reference: %d references to objects without a page rendered as code (%s)",
        len(unresolved),
        path,
    )


def _reset(app: Any) -> None:
    _saved.clear()
    _unresolved.clear()
    _documented_cache.clear()
    _package_names.cache_clear()
    _resolve.cache_clear()


def setup(app: Any) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.setup_extension("sphinx.ext.napoleon")
    app.connect("builder-inited", _reset)
    # napoleon rewrites docstrings at the default priority (500): save before, restore after
    app.connect("autodoc-process-docstring", _save_prose, priority=400)
    app.connect("autodoc-process-docstring", _restore_prose, priority=600)
    app.connect("autodoc-process-docstring", _drop_foreign_docstring, priority=600)
    app.connect("doctree-read", _own_document)
    app.connect("missing-reference", _link_by_identity)
    app.connect("warn-missing-reference", _missing_reference)
    app.connect("build-finished", _report)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

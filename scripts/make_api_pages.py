"""Generate the book's API reference: one page per public module of kdtutor, from its docstrings.

    python scripts/make_api_pages.py           # write book/api/ and the part at the end of _toc.yml
    python scripts/make_api_pages.py --check   # exit 1 if they differ from what would be written

A module is public when it defines ``__all__`` and no part of its name starts with ``_``
(``kdtutor.__main__`` is left out: importing it runs the CLI). Module ``kdtutor.a.b`` gets the
page ``book/api/a/b.md``: the module's docstring, then each name of its ``__all__`` in that
order, by Sphinx autodoc (``autoclass``, ``autofunction``, ``autodata``; napoleon reads the
Google-style sections; book/_ext/api_reference.py has the rest of the set-up). A new public
module, or a new name, gets its entry the next time this script runs; the "API reference"
part is always the last part of ``_toc.yml`` and is rewritten whole.
tests/test_api_reference.py fails while the committed pages are out of date.

A class or function exported by several public modules (a package re-exporting its
submodules' names) is indexed once, on its *home* page: the outermost exporting package of
the module that defines it, the import path users write (``kdtutor.data`` for
``kdtutor.data.registry.load_dataset``), else the first exporting module by name. The other
pages show its signature and docstring with ``:no-index:`` and a link home, so that Sphinx
sees one description per object. Data (constants, presets) are shown wherever exported (a
value longer than ``LONG_VALUE`` characters is left out).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "book" / "api"
TOC = ROOT / "_toc.yml"
PACKAGE = "kdtutor"
CAPTION = "API reference"

sys.path.insert(0, str(ROOT))


def public_modules() -> list[str]:
    """The names of kdtutor's public modules (they define ``__all__``), sorted."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [
        info.name for info in pkgutil.walk_packages(package.__path__, f"{PACKAGE}.")
    ]
    public = []
    for name in names:
        parts = name.split(".")
        if any(p.startswith("_") for p in parts):
            continue  # private modules, and __main__
        if hasattr(importlib.import_module(name), "__all__"):
            public.append(name)
    return sorted(public)


def public_names() -> dict[str, list[str]]:
    """Public module -> the names of its ``__all__``, in the module's order."""
    return {m: list(importlib.import_module(m).__all__) for m in public_modules()}


def page_path(module: str) -> Path:
    """``kdtutor.a.b`` -> ``book/api/a/b.md`` (``kdtutor`` itself -> ``book/api/kdtutor.md``)."""
    parts = module.split(".")[1:] or [PACKAGE]
    return API.joinpath(*parts).with_suffix(".md")


def _docname(module: str) -> str:
    return page_path(module).relative_to(ROOT).with_suffix("").as_posix()


def _definition(obj: object) -> str | None:
    """``module.qualname`` where a class or function is defined; None for data."""
    if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
        return None
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else None


def home_pages(names: dict[str, list[str]]) -> dict[str, str]:
    """Defining ``module.qualname`` of each exported class or function -> its home module."""
    exporters: dict[str, list[str]] = {}
    for module, exported in names.items():
        mod = importlib.import_module(module)
        for name in exported:
            where = _definition(getattr(mod, name))
            if where:
                exporters.setdefault(where, []).append(module)
    homes = {}
    for where, modules in exporters.items():
        defined_in = where.rsplit(".", 1)[0]  # a nested qualname only lengthens the prefix
        prefixes = [m for m in modules if defined_in == m or defined_in.startswith(m + ".")]
        # the outermost exporting package (the import path users write), else the first by name
        homes[where] = min(prefixes, key=len) if prefixes else min(modules)
    return homes


LONG_VALUE = 80
"""Data whose ``repr`` is longer than this is shown without its value (``:no-value:``)."""


def _entry(module: str, name: str, obj: object, home: str | None) -> list[str]:
    """The autodoc directive of one exported name (with ``:no-index:`` away from home)."""
    target = f"{module}.{name}"
    if inspect.isclass(obj):
        if home is None or home == module:
            return [f".. autoclass:: {target}", "   :members:", "   :undoc-members:"]
        return [
            f".. autoclass:: {target}",
            "   :no-index:",
            "",
            f"   The same class as :py:class:`{home}.{name}`, documented there with its members.",
        ]
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        if home is None or home == module:
            return [f".. autofunction:: {target}"]
        return [
            f".. autofunction:: {target}",
            "   :no-index:",
            "",
            f"   The same function as :py:func:`{home}.{name}`.",
        ]
    lines = [f".. autodata:: {target}"]
    if len(repr(obj)) > LONG_VALUE:
        lines.append("   :no-value:")
    return lines


def render_page(module: str, exported: list[str], homes: dict[str, str]) -> str:
    """The MyST source of ``module``'s page: its docstring, then every name of its
    ``__all__`` in that order."""
    mod = importlib.import_module(module)
    lines = [
        "<!-- generated by scripts/make_api_pages.py from the docstrings: do not edit -->",
        "",
        f"# `{module}`",
        "",
        "```{eval-rst}",
        f".. automodule:: {module}",
    ]
    for name in exported:
        obj = getattr(mod, name)
        where = _definition(obj)
        lines += ["", *_entry(module, name, obj, homes.get(where) if where else None)]
    lines += ["```", ""]
    return "\n".join(lines)


def render_toc_part(modules: list[str]) -> str:
    """The "API reference" part of ``_toc.yml``: a chapter per module whose parent package
    has no page, the other modules as sections of their package's chapter."""
    public = set(modules)
    children: dict[str, list[str]] = {}
    chapters = []
    for module in modules:
        parent = module.rsplit(".", 1)[0] if "." in module else None
        # the nearest public ancestor, if any
        while parent and parent not in public:
            parent = parent.rsplit(".", 1)[0] if "." in parent else None
        if parent and parent != PACKAGE:
            children.setdefault(parent, []).append(module)
        else:
            chapters.append(module)
    lines = [
        "  # generated by scripts/make_api_pages.py: rerun it, do not edit",
        f"  - caption: {CAPTION}",
        "    chapters:",
    ]

    def emit(module: str, indent: str) -> None:
        lines.append(f"{indent}- file: {_docname(module)}")
        if module in children:
            lines.append(f"{indent}  sections:")
            for child in children[module]:
                emit(child, indent + "    ")

    for module in chapters:
        emit(module, "      ")
    return "\n".join(lines) + "\n"


def toc_with_part(toc: str, part: str) -> str:
    """``_toc.yml``'s text with its "API reference" part (the last part) replaced by ``part``."""
    marker = re.search(
        rf"^  # generated by scripts/make_api_pages\.py.*\n|^  - caption: {CAPTION}\n",
        toc,
        flags=re.M,
    )
    head = toc[: marker.start()] if marker else toc.rstrip("\n") + "\n"
    return head + part


def expected_files() -> dict[Path, str]:
    """Every file this script writes, with its content."""
    names = public_names()
    homes = home_pages(names)
    files = {page_path(m): render_page(m, exported, homes) for m, exported in names.items()}
    files[TOC] = toc_with_part(TOC.read_text(), render_toc_part(list(names)))
    return files


def stale_files() -> list[str]:
    """Paths (relative to the repository) that differ from what this script would write,
    including pages under ``book/api/`` that no public module has any more."""
    expected = expected_files()
    stale = [
        p.relative_to(ROOT).as_posix()
        for p, text in expected.items()
        if not p.exists() or p.read_text() != text
    ]
    stale += [
        p.relative_to(ROOT).as_posix() for p in sorted(API.rglob("*.md")) if p not in expected
    ]
    return stale


def write() -> list[Path]:
    """Write the pages and the toc part; remove pages of modules that are gone."""
    expected = expected_files()
    for path in sorted(API.rglob("*.md")) if API.exists() else []:
        if path not in expected:
            path.unlink()
    for path, text in expected.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return sorted(expected)


_SIGNATURE = re.compile(
    r'<dt class="sig sig-object py[^"]*"[^>]*>.*?'
    r'<span class="sig-prename descclassname"><span class="pre">([\w.]+)</span></span>'
    r'<span class="sig-name descname"><span class="pre">(\w+)</span></span>',
    re.S,
)


def documented_names(page_html: str) -> set[str]:
    """The qualified names (``kdtutor.train.fit``) whose signatures a built API page shows
    (module-level entries: a class's members are shown without their module's prefix)."""
    return {prefix + name for prefix, name in _SIGNATURE.findall(page_html)}


def missing_from_html(html_root: Path) -> list[str]:
    """Every public name (``module.name`` for each name of each public module's ``__all__``)
    that the built page of its module does not show; empty when all are there."""
    missing = []
    for module, exported in public_names().items():
        page = html_root / page_path(module).relative_to(ROOT).with_suffix(".html")
        shown = documented_names(page.read_text()) if page.exists() else set()
        missing += [f"{module}.{name}" for name in exported if f"{module}.{name}" not in shown]
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"out of date: {path}")
        if stale:
            print("run: python scripts/make_api_pages.py")
        return 1 if stale else 0
    written = write()
    print(f"{len(written) - 1} API pages under {API.relative_to(ROOT)}/, and {TOC.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Every example in the package's docstrings runs as a doctest (``ELLIPSIS`` and
``NORMALIZE_WHITESPACE``; examples marked ``# doctest: +SKIP`` stay skipped).

One test per module, so a failure names the module, and its message lists every failing
example with what it printed or raised.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import kdtutor

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

KNOWN_BROKEN: dict[str, str] = {}
"""Module -> why its examples fail today: marked ``xfail(strict=True)``, so the test fails
again as soon as the examples pass and the entry is left behind."""


def package_modules() -> list[str]:
    """Every module of kdtutor (``__main__`` left out: importing it runs the CLI)."""
    names = ["kdtutor"]
    for info in pkgutil.walk_packages(kdtutor.__path__, "kdtutor."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return sorted(names)


def run_doctests(name: str) -> tuple[int, list[str]]:
    """Run the examples of module ``name``; return how many ran and a report per failure."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    attempted = 0
    failures: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        if not test.examples:
            continue
        out = io.StringIO()
        result = runner.run(test, out=out.write, clear_globs=True)
        attempted += result.attempted
        if result.failed:
            failures.append(out.getvalue())
    return attempted, failures


def _param(name: str):
    if name in KNOWN_BROKEN:
        return pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_BROKEN[name], strict=True))
    return name


@pytest.mark.parametrize("name", [_param(n) for n in package_modules()])
def test_docstring_examples_run(name):
    _, failures = run_doctests(name)
    assert not failures, f"{len(failures)} failing doctest(s) in {name}:\n" + "\n".join(failures)


def test_the_package_has_examples():
    """The walk finds the modules, and their examples are many (a broken walk would pass
    every test above by finding nothing)."""
    names = package_modules()
    assert {"kdtutor.data", "kdtutor.features", "kdtutor.train.loop"} <= set(names)
    assert sum(run_doctests(n)[0] for n in ("kdtutor.features", "kdtutor.plots")) >= 10

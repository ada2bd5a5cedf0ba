"""Numbers in the book's prose come from its executed cells: every ``{glue:text}`key` `` (or
``{glue}`` / ``{glue:figure}``) a notebook's markdown uses names a value one of its committed
code cells glued (``myst_nb.glue``), so a re-run that changes a number changes the text too, and
a typo in a key fails here rather than rendering as a warning."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from execute_notebooks import toc_notebooks  # noqa: E402

NOTEBOOKS = toc_notebooks()
ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`]+)`")


def reference(text: str) -> tuple[str | None, str]:
    """``(page, key)`` of a role's target: ``key:fmt``, or ``page.ipynb::key:fmt`` for a
    value glued in another page (myst-nb's cross-document form)."""
    page, sep, rest = text.partition("::")
    if not sep:
        page, rest = None, text
    return page, rest.split(":", 1)[0]


def glued_keys(nb: nbformat.NotebookNode) -> set[str]:
    keys = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                keys.add(name)
    return keys


def test_role_pattern_reads_keys_with_and_without_a_format_and_other_pages():
    text = "a {glue:text}`kd_gain:+.2f` b {glue}`fig` c {glue:text}`other.ipynb::n:.1f`"
    assert [reference(t) for t in ROLE.findall(text)] == [
        (None, "kd_gain"),
        (None, "fig"),
        ("other.ipynb", "n"),
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_glued_reference_has_a_glued_value(path):
    nb = nbformat.read(path, as_version=4)
    used = {
        reference(t) for c in nb.cells if c.cell_type == "markdown" for t in ROLE.findall(c.source)
    }
    missing = []
    for page, key in sorted(used, key=str):
        source = nb if page is None else nbformat.read(path.parent / page, as_version=4)
        if key not in glued_keys(source):
            missing.append(key if page is None else f"{page}::{key}")
    assert not missing, (
        f"{path.name} refers to {missing} in its prose, but no committed cell output glues "
        "them: glue them in a cell (myst_nb.glue) and re-run scripts/execute_notebooks.py"
    )


PAGES = sorted(p for p in (ROOT / "book").rglob("*.md") if ROLE.search(p.read_text()))


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT / "book")) for p in PAGES])
def test_markdown_pages_glue_only_values_their_notebooks_glued(path):
    missing = []
    for page, key in {reference(t) for t in ROLE.findall(path.read_text())}:
        assert page is not None, f"{path.name} glues {key!r} without naming its notebook"
        if key not in glued_keys(nbformat.read(path.parent / page, as_version=4)):
            missing.append(f"{page}::{key}")
    assert not missing, f"{path.name} refers to values no notebook glued: {sorted(missing)}"

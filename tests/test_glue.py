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
ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`:]+)(?::[^`]*)?`")


def glued_keys(nb: nbformat.NotebookNode) -> set[str]:
    keys = set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                keys.add(name)
    return keys


def test_role_pattern_reads_keys_with_and_without_a_format():
    text = "a {glue:text}`kd_gain:+.2f` b {glue}`fig` c {glue:text}`n`"
    assert ROLE.findall(text) == ["kd_gain", "fig", "n"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_glued_reference_has_a_glued_value(path):
    nb = nbformat.read(path, as_version=4)
    used = {k for c in nb.cells if c.cell_type == "markdown" for k in ROLE.findall(c.source)}
    missing = sorted(used - glued_keys(nb))
    assert not missing, (
        f"{path.name} refers to {missing} in its prose, but no committed cell output glues "
        "them: glue them in a cell (myst_nb.glue) and re-run scripts/execute_notebooks.py"
    )

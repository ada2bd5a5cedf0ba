"""The appendix "Performance and scaling": listed in the table of contents, and its prose quotes
the committed measurements it loads (data/results/speed_book.json and views_book.json), so a
re-run of either bench that changes the numbers also requires the page's text to be updated.

The notebook itself is executed by tests/test_notebooks.py like every page of the book.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from execute_notebooks import toc_notebooks  # noqa: E402

PAGE = ROOT / "book" / "appendix" / "performance.ipynb"
RESULTS = ROOT / "data" / "results"


def _prose() -> str:
    nb = nbformat.read(PAGE, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_the_page_opens_the_appendix():
    pages = [p.relative_to(ROOT).as_posix() for p in toc_notebooks()]
    assert "book/appendix/performance.ipynb" in pages
    toc = (ROOT / "_toc.yml").read_text()
    assert toc.index("book/appendix/performance") < toc.index("book/appendix/deviations")


def test_prose_quotes_the_committed_speed_measurement():
    speed = json.loads((RESULTS / "speed_book.json").read_text())
    prose = _prose()
    ratios = speed["ratios"]
    assert f"it is {ratios['kdtutor/hand']['value']:.2f}" in prose
    assert f"and is {ratios['kdtutor+cache/scratch']['value']:.2f}" in prose
    assert f"({ratios['kdtutor+cache/scratch']['value']:.2f}×)" in prose
    assert f"ratio ({ratios['kdtutor+cache/kdtutor']['value']:.2f})" in prose
    spreads = [v["spread"] for v in speed["variants"].values()]
    assert f"up to {round(100 * (max(spreads) - 1)):d}%" in prose


def test_prose_quotes_the_committed_views_measurement():
    views = json.loads((RESULTS / "views_book.json").read_text())
    best = {r["variant"]: r for r in views["summary"]}
    prose = _prose()
    fresh = best["fresh augmentation (no cache)"]
    assert f"{fresh['best_mean']:.2f} ± {fresh['best_std']:.2f}%" in prose
    assert f"4 views reach {best['4 cached views']['best_mean']:.2f}%" in prose
    assert f"8 views {best['8 cached views']['best_mean']:.2f}%" in prose
    none = best["no augmentation (cached)"]
    assert f"{none['best_mean']:.2f} ± {none['best_std']:.2f}%" in prose
    gap = none["best_mean"] - fresh["best_mean"]
    assert f"about {gap:.1f} points" in prose

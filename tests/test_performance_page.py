"""The appendix "Performance and scaling": listed in the table of contents, and its prose quotes
the committed measurements it loads (data/results/speed_book.json and views_book.json): the
numbers in its prose are glued from the cells that read them, and the glued values are those of
the files.

The notebook itself is executed by tests/test_notebooks.py like every page of the book.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

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


def _glued() -> dict[str, float]:
    """The values the committed notebook glued into its prose, by key."""
    nb = nbformat.read(PAGE, as_version=4)
    values = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            scrapbook = out.get("metadata", {}).get("scrapbook", {})
            name = scrapbook.get("name")
            text = out.get("data", {}).get(scrapbook.get("mime_prefix", "") + "text/plain")
            if name and text is not None:
                try:
                    values[name] = float(text)
                except ValueError:
                    continue
    return values


def test_prose_numbers_are_the_committed_speed_measurement():
    speed = json.loads((RESULTS / "speed_book.json").read_text())
    ratios, glued = speed["ratios"], _glued()
    assert glued["kd_vs_hand"] == pytest.approx(ratios["kdtutor/hand"]["value"])
    assert glued["cache_vs_scratch"] == pytest.approx(ratios["kdtutor+cache/scratch"]["value"])
    assert glued["cache_vs_kd"] == pytest.approx(ratios["kdtutor+cache/kdtutor"]["value"])
    spreads = [v["spread"] for v in speed["variants"].values()]
    assert glued["speed_spread_pct"] == pytest.approx(100 * (max(spreads) - 1))
    assert "{glue:text}`kd_vs_hand:.2f`" in _prose()


def test_prose_numbers_are_the_committed_views_measurement():
    views = json.loads((RESULTS / "views_book.json").read_text())
    best = {r["variant"]: r for r in views["summary"]}
    glued = _glued()
    fresh, none = best["fresh augmentation (no cache)"], best["no augmentation (cached)"]
    assert glued["fresh_best"] == pytest.approx(fresh["best_mean"])
    assert glued["fresh_std"] == pytest.approx(fresh["best_std"])
    assert glued["plain_best"] == pytest.approx(none["best_mean"])
    assert glued["plain_gap"] == pytest.approx(none["best_mean"] - fresh["best_mean"])

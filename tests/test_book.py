"""The book builds with warnings as errors, renders in headless Chromium offline, and the
student edition hides the solutions. The browser check itself is shown to catch problems.
The book is built once per session by the ``built_book`` fixture (tests/conftest.py), which
test_api_reference.py shares."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import browser_check  # noqa: E402
import build_book  # noqa: E402
from execute_notebooks import toc_notebooks  # noqa: E402


def test_every_toc_page_is_built(built_book):
    for nb in toc_notebooks():
        assert (built_book / nb.relative_to(ROOT).with_suffix(".html")).exists()
    assert (built_book / "book" / "preface.html").exists()


def test_no_cdn_in_built_pages(built_book):
    for page in built_book.rglob("*.html"):
        html = page.read_text(errors="replace")
        for marker in ('src="https://', 'href="https://fonts', "cdn.jsdelivr", "cdnjs"):
            assert marker not in html, f"{page.name} loads {marker} from the network"


def test_figures_are_numbered_and_captioned(built_book):
    pages = [built_book / nb.relative_to(ROOT).with_suffix(".html") for nb in toc_notebooks()]
    with_figures = [p for p in pages if "<figure" in p.read_text()]
    assert with_figures, "no numbered figure in the built chapters"
    for page in with_figures:
        html = page.read_text()
        assert html.count("<figcaption") == html.count("<figure"), (
            f"{page.name}: a figure without caption"
        )
        assert "caption-number" in html, f"{page.name}: figures are not numbered"


def test_pages_render_in_headless_chromium(built_book):
    """Every page opens from a local server with the network blocked: no console error, no
    broken internal link or image, every formula typeset, no empty page. Screenshots of the
    landing page and one chapter are saved under _build/screenshots/."""
    problems = browser_check.check(
        built_book, ROOT / "_build" / "screenshots", chapter="book/02-principles/kd-loss.html"
    )
    assert problems == []
    assert (ROOT / "_build" / "screenshots" / "landing.png").exists()
    assert (ROOT / "_build" / "screenshots" / "chapter.png").exists()


def test_student_edition_hides_solutions(built_book, tmp_path):
    student = build_book.build(student=True, output=tmp_path)
    teacher_pages = [p for p in built_book.rglob("*.html") if 'class="solution' in p.read_text()]
    assert teacher_pages, "the full edition shows no solution at all"
    for page in teacher_pages:
        twin = student / page.relative_to(built_book)
        assert 'class="solution' not in twin.read_text(), f"{twin.name} still shows a solution"


def test_browser_check_catches_problems(tmp_path):
    """A page with a broken link, a missing image, untypeset math, a script error and almost
    no text must be reported on each count."""
    (tmp_path / "index.html").write_text(
        "<html><body><main><p>home page " + "text " * 40 + "</p></main></body></html>"
    )
    (tmp_path / "bad.html").write_text(
        "<html><body><main><p>short</p>"
        '<a href="missing.html">x</a><a href="index.html#nowhere">y</a>'
        '<img src="nothing.png"><span class="math">\\(x^2\\)</span>'
        "<script>undefinedFunction()</script></main></body></html>"
    )
    problems = "\n".join(browser_check.check(tmp_path))
    for expected in (
        "missing file missing.html",
        "missing anchor index.html#nowhere",
        "image did not load",
        "formula not typeset",
        "console error",
        "looks empty",
    ):
        assert expected in problems, f"{expected!r} not reported in:\n{problems}"

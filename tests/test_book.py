"""The book builds with warnings as errors, renders in headless Chromium offline, and the
student edition hides the solutions. The browser check itself is shown to catch problems.
The book is built once per session by the ``built_book`` fixture (tests/conftest.py), which
test_api_reference.py shares."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import snowballstemmer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import browser_check  # noqa: E402
import build_book  # noqa: E402
from execute_notebooks import toc_notebooks, toc_pages  # noqa: E402


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


def _book_sources() -> list[Path]:
    """Every page of the book (notebooks and Markdown files of the table of contents)."""
    return toc_pages()


def _markdown(path: Path, *, code: bool = False) -> str:
    """The page's Markdown (and with ``code``, its code cells too)."""
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text())
        kinds = ("markdown", "code") if code else ("markdown",)
        return "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] in kinds)
    return path.read_text()


def _solution_lines() -> dict[Path, list[str]]:
    """Per page, the lines of its solutions that appear nowhere else in the book's sources."""
    texts = {p: _markdown(p) for p in _book_sources()}
    outside = "\n".join(build_book.strip_solutions(_markdown(p, code=True)) for p in texts)
    lines = {}
    for page, text in texts.items():
        own = []
        for block in build_book.solution_blocks(text):
            for line in block.splitlines()[1:-1]:
                line = line.strip()
                if len(line) >= 30 and not line.startswith((":", "```")) and line not in outside:
                    own.append(line)
        if own:
            lines[page] = own
    return lines


def test_every_exercise_and_solution_renders(built_book):
    """Each ``{exercise}`` and ``{solution}`` of the sources becomes its admonition in the full
    edition (a fence the parser does not recognise shows its text raw, solution included)."""
    for page in _book_sources():
        text = _markdown(page)
        html = (built_book / page.relative_to(ROOT)).with_suffix(".html").read_text()
        exercises = len(re.findall(r"^(`{3,}|:{3,})\{exercise\}", text, re.MULTILINE))
        solutions = len(build_book.solution_blocks(text))
        assert html.count('class="exercise admonition') == exercises, f"{page.name}: exercises"
        assert html.count('class="solution') == solutions, f"{page.name}: solutions"
        raw = re.findall(r"(?:`{3,}|:{3,})\{(?:exercise|solution)\}", html)
        assert not raw, f"{page.name}: a fence shown raw"


def test_student_edition_hides_solutions(built_book, built_student_book):
    """No solution text anywhere a student can reach: not in the pages, not in the copies of
    the sources the download button serves, not in the search index."""
    student = built_student_book
    teacher_pages = [p for p in built_book.rglob("*.html") if 'class="solution' in p.read_text()]
    assert teacher_pages, "the full edition shows no solution at all"
    for page in teacher_pages:
        twin = student / page.relative_to(built_book)
        assert 'class="solution' not in twin.read_text(), f"{twin.name} still shows a solution"

    secrets = _solution_lines()
    assert sum(map(len, secrets.values())) > 50, "too few solution lines found to check"
    served = {
        p: p.read_text(errors="replace")
        for p in student.rglob("*")
        if p.is_file() and p.suffix in {".html", ".js", ".ipynb", ".md", ".txt", ".json"}
    }
    # JSON copies escape quotes and backslashes: look for both spellings
    for page, lines in secrets.items():
        for line in lines:
            spellings = {line, json.dumps(line)[1:-1]}
            leaks = [p.name for p, text in served.items() if any(s in text for s in spellings)]
            assert not leaks, f"a solution line of {page.name} is served in {leaks}: {line!r}"

    index = json.loads(
        re.search(r"Search\.setIndex\((.*)\)", served[student / "searchindex.js"]).group(1)
    )
    full_index = (built_book / "searchindex.js").read_text()
    stem = snowballstemmer.stemmer("english").stemWord

    def words(text: str, shortest: int = 8) -> set[str]:
        return {stem(w) for w in re.findall(rf"[a-z]{{{shortest},}}", text.lower())}

    # what the student edition shows, on any page, in words of any length (the stem of a
    # long solution word may come from a short shown one): its index's terms come from there
    shown = set().union(
        *(words(re.sub(r"<[^>]+>", " ", t), 1) for p, t in served.items() if p.suffix == ".html")
    )
    only_in_solutions = (
        words(" ".join(line for lines in secrets.values() for line in lines)) - shown
    )
    in_full = {w for w in only_in_solutions if f'"{w}"' in full_index}
    assert in_full, "no solution-only word is indexed in the full edition: the check is empty"
    assert not in_full & set(index["terms"]), sorted(in_full & set(index["terms"]))


def test_solution_blocks_are_found_and_stripped():
    text = (
        "intro\n````{solution} ex-1\n:class: dropdown\n\nsay\n```python\ncode()\n```\n"
        "more\n````\nbetween\n:::{solution} ex-2\nz\n:::\nend\n"
    )
    assert len(build_book.solution_blocks(text)) == 2
    assert build_book.strip_solutions(text) == "intro\nbetween\nend\n"


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

"""Build the Jupyter Book (HTML) from the committed notebook outputs, fully offline.

    python scripts/build_book.py             # -> _build/html
    python scripts/build_book.py --student   # -> _build/student/_build/html, exercise solutions removed

The student edition hides solutions in three places: the pages (sphinx-exercise's
``hide_solutions`` drops every ``{solution}`` directive before the search index is built, so
the index never sees them either) and the copies of the sources that the download button
serves (``_sources/``), from which :func:`strip_solutions` removes every ``{solution}`` block.

MathJax 3 is copied from the PyPI package ``django-static-mathjax`` into ``book_static/mathjax``
(a static folder *not* named ``_static``: Jupyter Book adds every ``.js`` under ``_static`` to
every page), and ``_config.yml`` points ``mathjax_path`` at it, so formulas render with no
network. Warnings are errors (``-W -n --keep-going``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "book_static"


def ensure_mathjax() -> Path:
    """Copy MathJax's ES5 bundle into ``book_static/mathjax`` once; return that folder."""
    target = STATIC / "mathjax"
    if (target / "tex-chtml.js").exists():
        return target
    import mathjax  # the django-static-mathjax package

    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (source / "tex-chtml.js").exists():
        raise SystemExit(
            f"MathJax not found at {source}: reinstall with `make venv` (django-static-mathjax)."
        )
    # a folder of its own per process, renamed into place: two builds at once (pytest-xdist
    # workers) each copy, the first rename wins and the other copy is dropped
    STATIC.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mathjax.", dir=STATIC))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        tmp.rename(target)
    except OSError:
        if not (target / "tex-chtml.js").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def student_config() -> Path:
    """``_config.yml`` with sphinx-exercise's ``hide_solutions`` switched on."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    sphinx = config.setdefault("sphinx", {})
    sphinx.setdefault("config", {})["hide_solutions"] = True
    # paths in the config are relative to its folder: this copy lives in _build/
    sphinx["local_extensions"] = {
        k: str(ROOT / v) for k, v in sphinx.get("local_extensions", {}).items()
    }
    config["bibtex_bibfiles"] = [str(ROOT / f) for f in config.get("bibtex_bibfiles", [])]
    config["title"] = config.get("title", "") + " (student edition)"
    path = ROOT / "_build" / "_config_student.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


#: A ``{solution}`` block in MyST, fenced by backticks or colons; the closing fence has the
#: opening one's characters and length (so a shorter fence inside, e.g. a code block, stays in).
SOLUTION_BLOCK = re.compile(
    r"^(?P<fence>`{3,}|:{3,})\{solution\}[^\n]*\n.*?^(?P=fence)[ \t]*(?:\n|\Z)",
    re.MULTILINE | re.DOTALL,
)


def solution_blocks(text: str) -> list[str]:
    """Every ``{solution}`` block of a MyST text, fences included."""
    return [m.group(0) for m in SOLUTION_BLOCK.finditer(text)]


def strip_solutions(text: str) -> str:
    """The MyST text without its ``{solution}`` blocks."""
    return SOLUTION_BLOCK.sub("", text)


def strip_source_copies(html: Path) -> int:
    """Remove the solution blocks from the copies of the sources under ``html/_sources``
    (notebooks cell by cell, Markdown as text); return how many blocks were removed."""
    removed = 0
    for path in sorted((html / "_sources").rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if path.name.endswith((".ipynb", ".ipynb.txt")):
            nb = json.loads(text)
            for cell in nb.get("cells", []):
                source = cell.get("source", "")
                source = "".join(source) if isinstance(source, list) else source
                removed += len(solution_blocks(source))
                cell["source"] = strip_solutions(source)
            new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        else:
            removed += len(solution_blocks(text))
            new = strip_solutions(text)
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
    return removed


def build(student: bool = False, output: Path | None = None) -> Path:
    """Run ``jupyter-book build`` with warnings as errors; return the HTML folder."""
    ensure_mathjax()
    out = output or (ROOT / "_build" / "student" if student else ROOT)
    command = [
        str(Path(sys.executable).parent / "jupyter-book"),
        "build",
        str(ROOT),
        "--builder",
        "html",
        "--path-output",
        str(out),
        "-W",
        "-n",
        "--keep-going",
    ]
    if student:
        command += ["--config", str(student_config())]
    subprocess.run(command, check=True, cwd=ROOT)
    html = out / "_build" / "html"
    if student:
        strip_source_copies(html)
    return html


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--student", action="store_true", help="build the student edition (no solutions)"
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="folder that receives _build/html"
    )
    args = parser.parse_args()
    html = build(args.student, args.output)
    print(f"built {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

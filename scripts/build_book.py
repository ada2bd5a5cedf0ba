"""Build the Jupyter Book (HTML) from the committed notebook outputs, fully offline.

    python scripts/build_book.py             # -> _build/html
    python scripts/build_book.py --student   # -> _build/student/_build/html, exercise solutions removed

MathJax 3 is copied from the PyPI package ``django-static-mathjax`` into ``book_static/mathjax``
(a static folder *not* named ``_static``: Jupyter Book adds every ``.js`` under ``_static`` to
every page), and ``_config.yml`` points ``mathjax_path`` at it, so formulas render with no
network. Warnings are errors (``-W -n --keep-going``).
"""

from __future__ import annotations

import argparse
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
    return out / "_build" / "html"


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

"""Staleness by what a notebook uses (scripts/execute_notebooks.py, scripts/notebook_uses.py).

A tiny throw-away notebook that imports one kdtutor module and reads one data file is run once
at smoke scale; its record then decides staleness. Edits are made to copies of the repository's
files in a temporary root, never to the real package.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import execute_notebooks as en  # noqa: E402
import notebook_uses  # noqa: E402

USED_MODULE = "kdtutor/scales.py"
USED_DATA = "kdtutor/zoo_data/manifest.json"
UNRELATED = "kdtutor/compression.py"


def tiny_notebook(path: Path) -> Path:
    """A notebook that imports ``kdtutor.scales``, reads the zoo manifest, checks that an
    unrelated data file exists without reading it, and lists leftover recorder names."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Tiny"),
        nbformat.v4.new_code_cell(
            "import os\n\nSCALE = os.environ.get('KDTUTOR_SCALE', 'book')",
            metadata={"tags": ["parameters"]},
        ),
        nbformat.v4.new_code_cell(
            "from pathlib import Path\n"
            "import kdtutor.scales\n"
            "root = Path(kdtutor.scales.__file__).resolve().parent.parent\n"
            f"print(len((root / {USED_DATA!r}).read_text()) > 0)\n"
            "print((root / 'data' / 'results' / 'book_times.json').exists())"
        ),
        nbformat.v4.new_code_cell("print([n for n in dir() if 'kdtutor_record' in n])"),
        nbformat.v4.new_markdown_cell("The end."),
    ]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> nbformat.NotebookNode:
    """The tiny notebook after ``execute`` at smoke scale (one kernel for the module)."""
    path = tiny_notebook(tmp_path_factory.mktemp("nb") / "tiny.ipynb")
    en.execute(path, "smoke", timeout=120)
    return nbformat.read(path, as_version=4)


def copy_root(tmp_path: Path, rels: list[str]) -> Path:
    """A temporary repository root holding copies of ``rels`` (repository-relative paths)."""
    root = tmp_path / "repo"
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    return root


def append(path: Path, text: str = "\n# an edit\n") -> None:
    with path.open("a") as handle:
        handle.write(text)


def test_the_record_lists_imported_modules_and_read_data_files(recorded):
    uses = recorded.metadata["kdtutor"]["uses"]
    files = set(uses["files"])
    assert uses["scale"] == "smoke"
    assert {"kdtutor/__init__.py", USED_MODULE, USED_DATA} <= files
    assert UNRELATED not in files
    assert "data/results/book_times.json" not in files, "only files opened for reading count"
    assert all(f.startswith(("kdtutor/", "data/")) for f in files)  # package, data folders
    assert list(uses["files"]) == sorted(files)
    assert uses["files"][USED_MODULE] == en.file_hash(ROOT / USED_MODULE)


def test_recording_leaves_no_trace_in_the_cells(recorded):
    code = [c for c in recorded.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3]
    assert code[1].outputs[0]["text"] == "True\nTrue\n"
    assert code[2].outputs[0]["text"] == "[]\n", "the recorder leaves no name behind"


def test_only_an_edit_of_a_used_file_makes_it_stale(recorded, tmp_path):
    root = copy_root(tmp_path, [*recorded.metadata["kdtutor"]["uses"]["files"], UNRELATED])
    assert en.stale_reasons(recorded, "smoke", root=root) == []
    append(root / UNRELATED)
    assert en.stale_reasons(recorded, "smoke", root=root) == [], "not used: still current"
    append(root / USED_MODULE)
    assert en.stale_reasons(recorded, "smoke", root=root) == [USED_MODULE]
    (root / USED_DATA).unlink()
    assert en.stale_reasons(recorded, "smoke", root=root) == sorted([USED_DATA, USED_MODULE])
    assert en.stale_reasons(recorded, "book", root=root)[0] == "scale"


def test_without_a_record_any_package_edit_makes_it_stale(recorded, tmp_path):
    nb = nbformat.from_dict(recorded)
    del nb.metadata["kdtutor"]["uses"]
    nb.metadata["kdtutor"]["package_sha256"] = "0" * 64
    root = copy_root(tmp_path, [USED_MODULE])
    assert en.stale_reasons(nb, "smoke", root=root) == ["package"]
    nb.metadata["kdtutor"]["package_sha256"] = en.package_hash(root)
    assert en.stale_reasons(nb, "smoke", root=root) == []
    append(root / "kdtutor" / "new_module.py")
    assert en.stale_reasons(nb, "smoke", root=root) == ["package"]


def test_an_edited_source_is_stale(recorded):
    nb = nbformat.from_dict(recorded)
    nb.cells[2].source += "\nx = 1"
    assert en.stale_reasons(nb, "smoke") == ["source"]
    assert en.describe(["source", "a", "b", "c", "d"]) == "source, a, b and 2 more"


def test_record_uses_adds_the_record_and_nothing_else(recorded, tmp_path):
    path = tmp_path / "tiny.ipynb"
    nb = nbformat.from_dict(recorded)
    meta = nb.metadata["kdtutor"]
    del meta["uses"]
    meta["package_sha256"] = "0" * 64  # outputs older than the package: no record
    nbformat.write(nb, path)
    before = path.read_bytes()
    assert en.record_uses(path).startswith("skip  (outputs stale: package")
    assert path.read_bytes() == before
    meta["package_sha256"] = en.package_hash()
    nbformat.write(nb, path)
    assert en.record_uses(path, timeout=120).startswith("wrote uses")
    after = nbformat.read(path, as_version=4)
    assert after.cells == nb.cells, "cells and outputs untouched"
    assert {k: v for k, v in after.metadata["kdtutor"].items() if k != "uses"} == meta
    assert after.metadata["kdtutor"]["uses"] == recorded.metadata["kdtutor"]["uses"]


def test_dry_run_lists_stale_notebooks_and_why(recorded, tmp_path, monkeypatch, capsys):
    current, edited = tmp_path / "current.ipynb", tmp_path / "edited.ipynb"
    nbformat.write(recorded, current)
    nb = nbformat.from_dict(recorded)
    nb.cells[0].source += " (edited)"
    nbformat.write(nb, edited)
    before = edited.read_bytes()
    argv = ["execute_notebooks.py", "--changed", "--dry-run", "--scale", "smoke"]
    monkeypatch.setattr(sys, "argv", [*argv, str(current), str(edited)])
    assert en.main() == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("skip  ") and "current.ipynb" in out[0]
    assert out[1].startswith("stale ") and out[1].endswith("(source changed)")
    assert edited.read_bytes() == before, "a dry run executes nothing"


def test_recorder_hook_sees_reads_below_the_data_folder_only(tmp_path):
    data = tmp_path / "data"
    (data / "zoo").mkdir(parents=True)
    weights, other = data / "zoo" / "w.pt", tmp_path / "other.txt"
    for path in (weights, other):
        path.write_text("x")
    seen: set[str] = set()
    hook = notebook_uses.open_hook([str(data)], seen)
    hook("open", (str(other), "r", 0))
    hook("open", (weights, "w", 0))
    hook("open", (str(weights), None, os.O_WRONLY))
    hook("open", (3, "rb", 0))  # a file descriptor
    hook("exec", ("not an open",))
    hook("open", ("bad",))  # malformed: ignored, never raises
    assert seen == set()
    hook("open", (weights, "rb", 0))
    hook("open", (str(data / "zoo" / ".." / "zoo" / "w.pt").encode(), None, os.O_RDONLY))
    assert seen == {os.path.realpath(weights)}

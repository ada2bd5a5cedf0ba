"""The table of notebook wall times (scripts/book_times.py) shown on "How to use this book".

No book notebook is executed here: the table is compiled from the times recorded in the
notebooks' metadata; one tiny synthetic notebook is run at smoke scale to check what
``execute_notebooks.execute`` records.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import book_times  # noqa: E402
from execute_notebooks import execute, package_hash, source_hash, toc_notebooks  # noqa: E402


def cells(line: str) -> list[str]:
    """The cells of one table line (``\\|`` is an escaped bar inside a cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of the markdown table, as lists of stripped cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [cells(line) for line in lines[2:]]


def file_column(markdown: str) -> list[str]:
    column = book_times.COLUMNS.index("File")
    return [r[column].strip("`") for r in table_rows(markdown) if r[column]]


@pytest.fixture(scope="module")
def data() -> dict:
    return book_times.collect()


def test_every_toc_notebook_is_listed_in_reading_order(data):
    expected = [str(p.relative_to(ROOT)) for p in toc_notebooks()]
    assert [e["path"] for e in book_times.toc_entries()] == toc_notebooks()
    assert [r["file"] for r in data["notebooks"]] == expected
    assert file_column(book_times.render_markdown(data)) == expected


def test_section_numbers_and_titles_follow_the_book(data):
    kd_loss = next(r for r in data["notebooks"] if r["file"].endswith("kd-loss.ipynb"))
    assert kd_loss["number"] == "2.2"
    assert kd_loss["title"] == "The KD loss, step by step"
    assert kd_loss["chapter"] == "2 Principles of knowledge distillation"


def test_times_in_the_table_are_the_notebooks_metadata(data):
    markdown = book_times.render_markdown(data)
    rows = table_rows(markdown)[:-1]  # the last row is the total
    seconds_col = book_times.COLUMNS.index("Wall time (s)")
    total = 0.0
    for path, line in zip(toc_notebooks(), rows, strict=True):
        meta = nbformat.read(path, as_version=4).metadata.get("kdtutor", {})
        if "seconds" in meta:
            assert float(line[seconds_col]) == pytest.approx(meta["seconds"], abs=0.05)
            assert line[seconds_col + 1] == book_times.minutes(meta["seconds"])
            assert line[seconds_col + 2] == meta["executed"][:10]
            total += meta["seconds"]
        else:
            assert line[seconds_col] == "not recorded"
    assert data["total_seconds"] == pytest.approx(total, abs=0.05)
    assert f"**{total:.1f}**" in table_rows(markdown)[-1]


def test_minutes_format():
    assert book_times.minutes(702.7) == "11:43"
    assert book_times.minutes(8.6) == "0:09"
    assert book_times.minutes(3599.6) == "60:00"


def _copy(tmp_path: Path, name: str = "kd-loss.ipynb") -> Path:
    source = ROOT / "book" / "02-principles" / name
    target = tmp_path / name
    shutil.copy(source, target)
    return target


def test_notebook_without_metadata_shows_not_recorded(tmp_path):
    path = _copy(tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("kdtutor", None)
    nbformat.write(nb, path)
    data = book_times.collect([{"path": path, "number": "9.1", "chapter": "9 Test"}], pkg="x")
    assert data["notebooks"][0]["seconds"] is None
    assert data["recorded"] == 0 and data["total_seconds"] == 0
    markdown = book_times.render_markdown(data)
    assert "not recorded" in table_rows(markdown)[0]
    assert "(0 of 1 recorded)" in markdown


def test_stale_flag_follows_the_package_hash_without_a_record_of_uses(tmp_path, monkeypatch):
    """A notebook with no ``uses`` record is stale whenever the package changed (see
    tests/test_staleness.py for notebooks with one)."""
    path = _copy(tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kdtutor"].pop("uses", None)
    nb.metadata["kdtutor"]["source_sha256"] = source_hash(nb)  # even while the book is edited
    nbformat.write(nb, path)
    recorded = nb.metadata["kdtutor"]["package_sha256"]
    entry = [{"path": path, "number": "2.2", "chapter": "2 Principles"}]
    monkeypatch.setattr(book_times, "package_hash", lambda: recorded)
    assert book_times.collect(entry)["notebooks"][0]["status"] == "current"
    monkeypatch.setattr(book_times, "package_hash", lambda: "0" * 64)
    row = book_times.collect(entry)["notebooks"][0]
    assert row["status"] == "stale: package changed since"
    assert "stale: package changed since" in book_times.render_markdown(book_times.collect(entry))
    # an edited source is stale too, whatever the package
    nb.cells[0].source += "\n\nAn added sentence."
    nbformat.write(nb, path)
    assert book_times.row(path, recorded)["status"] == "stale: source changed since"


def test_machines_are_summarised(tmp_path):
    paths = [_copy(tmp_path, "kd-loss.ipynb"), _copy(tmp_path, "soft-targets.ipynb")]
    machine = {"cores": 2, "cpu": "Test CPU", "torch_threads": 2}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nb.metadata["kdtutor"]["machine"] = machine
        nbformat.write(nb, path)
    data = book_times.collect([{"path": p} for p in paths], pkg="x")
    assert data["machines"] == [{"machine": machine, "notebooks": 2}]
    assert "Machine: 2 cores (Test CPU), torch threads 2." in book_times.render_markdown(data)
    assert "not recorded for" not in book_times.render_markdown(data)


def test_execute_records_seconds_and_machine(tmp_path):
    """``execute`` (used by ``make book-times``) records the time and the machine."""
    path = tmp_path / "tiny.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A tiny notebook"),
        nbformat.v4.new_code_cell("import os\nprint(os.environ['KDTUTOR_SCALE'])"),
    ]
    nbformat.write(nb, path)
    seconds = execute(path, "smoke", timeout=120)
    meta = nbformat.read(path, as_version=4).metadata["kdtutor"]
    assert meta["scale"] == "smoke" and meta["seconds"] == round(seconds, 1) > 0
    assert meta["machine"]["cores"] >= 1 and meta["machine"]["torch_threads"] >= 1
    assert {"executed", "source_sha256", "package_sha256", "uses"} <= set(meta)
    assert meta["uses"] == {"scale": "smoke", "files": {}}, "it imports nothing of kdtutor"
    row = book_times.row(path, package_hash())
    assert row["seconds"] == meta["seconds"] and row["title"] == "A tiny notebook"


def test_write_goes_to_markdown_and_json(tmp_path):
    data = book_times.collect()
    book_times.write(data, tmp_path / "t.md", tmp_path / "t.json")
    assert (tmp_path / "t.md").read_text() == book_times.render_markdown(data)
    assert json.loads((tmp_path / "t.json").read_text()) == data


def test_committed_table_is_up_to_date():
    """A forgotten refresh fails here: run `python scripts/book_times.py` (``make book`` does).

    The *Outputs* column is left out of the comparison: it also depends on the package, which
    changes without any notebook being re-run (``make book`` then re-runs and refreshes)."""
    committed = book_times.TABLE.read_text()
    fresh = book_times.render_markdown(book_times.collect())
    column = book_times.COLUMNS.index("Outputs")

    def without_outputs(markdown: str) -> list[object]:
        return [
            [c for i, c in enumerate(cells(line)) if i != column] if line.startswith("|") else line
            for line in markdown.splitlines()
        ]

    assert without_outputs(committed) == without_outputs(fresh), (
        "book/_generated/book_times.md is out of date: run `python scripts/book_times.py`"
    )


def test_how_to_use_page_includes_the_table():
    page = (ROOT / "book" / "how-to-use.md").read_text()
    assert "```{include} _generated/book_times.md" in page
    assert "make book-times" in page

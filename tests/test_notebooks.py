"""The book's notebooks: conventions of the committed files, a papermill run at smoke scale, and
the scale-independent cells of that run compared with the committed outputs (as nbval-lax does).

See book/CONVENTIONS.md. Every notebook listed in _toc.yml is checked.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from execute_notebooks import source_hash, toc_notebooks  # noqa: E402

NOTEBOOKS = toc_notebooks()
IDS = [str(p.relative_to(ROOT / "book")) for p in NOTEBOOKS]


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_the_book_has_notebooks():
    assert len(NOTEBOOKS) >= 5, f"expected the chapters' notebooks in _toc.yml, found {IDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_notebook_follows_conventions(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# "), (
        "starts with a title"
    )
    assert "parameters" in tags(code[0]), "the first code cell must be tagged 'parameters'"
    assert 'SCALE = os.environ.get("KDTUTOR_SCALE", "book")' in code[0].source
    assert any("claim" in tags(c) for c in code), (
        "claims at book scale belong in cells tagged 'claim'"
    )
    assert "papermill" not in nb.metadata and not any(
        "injected-parameters" in tags(c) for c in nb.cells
    )
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"execution counts must run 1..n in order, got {counts}"
    )
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", f"error output in cell {cell.execution_count}"
            assert not (out.output_type == "stream" and out.name == "stderr"), (
                f"stderr output (warnings, progress bars) in cell {cell.execution_count}: {out.text[:200]!r}"
            )
            if "image/png" in out.get("data", {}):
                figure = cell.metadata.get("mystnb", {}).get("figure", {})
                assert figure.get("caption") and figure.get("name"), (
                    f"cell {cell.execution_count} draws a figure without mystnb.figure caption and name"
                )
    meta = nb.metadata.get("kdtutor", {})
    assert meta.get("scale") == "book", (
        "outputs must come from a book-scale run (scripts/execute_notebooks.py)"
    )
    assert meta.get("source_sha256") == source_hash(nb), (
        "the notebook's source changed since its outputs were made: re-run "
        f"`python scripts/execute_notebooks.py {path.relative_to(ROOT)}`"
    )


def _chapter_exercises(folder: Path) -> int:
    count = 0
    for path in NOTEBOOKS:
        if path.parent == folder:
            nb = nbformat.read(path, as_version=4)
            count += sum(
                c.source.count("```{exercise}") for c in nb.cells if c.cell_type == "markdown"
            )
    return count


@pytest.mark.parametrize("chapter", sorted({p.parent for p in NOTEBOOKS}), ids=lambda p: p.name)
def test_each_chapter_has_three_exercises_with_solutions(chapter):
    assert _chapter_exercises(chapter) >= 3
    for path in NOTEBOOKS:
        if path.parent == chapter:
            text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
            assert text.count("```{exercise}") == text.count("```{solution}"), (
                f"{path.name}: a solution per exercise"
            )


#: Output keys and MIME types left out of the comparison, as nbval leaves them out (images
#: included: nbval compares them only with nbdime).
SKIP_COMPARE = {
    "metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
    "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg",
}  # fmt: skip


def compared_outputs(cell) -> dict[str, list]:
    """A cell's outputs as nbval-lax compares them: the text of each stream (consecutive
    writes to one stream joined), and every other output key, with ``data`` flattened by MIME
    type, minus :data:`SKIP_COMPARE`; values in output order per key."""
    out: dict[str, list] = defaultdict(list)
    stream, text = None, ""
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            if stream is not None and output["name"] != stream:
                out["text"].append(text)
                text = ""
            stream, text = output["name"], text + output["text"]
            continue
        if stream is not None:
            out["text"].append(text)
            stream, text = None, ""
        for key, value in output.items():
            if key == "data":
                for mime, data in value.items():
                    if mime not in SKIP_COMPARE:
                        out[mime].append(data)
            elif key not in SKIP_COMPARE:
                out[key].append(value)
    if stream is not None:
        out["text"].append(text)
    return dict(out)


def test_compared_outputs_join_streams_and_skip_what_nbval_skips():
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="a\n"),
        nbformat.v4.new_output("stream", name="stdout", text="b\n"),
        nbformat.v4.new_output(
            "execute_result", data={"text/plain": "True", "image/png": "..."}, execution_count=3
        ),
    ]
    assert compared_outputs(cell) == {"text": ["a\nb\n"], "text/plain": ["True"]}
    cell.outputs[1]["text"] = "c\n"
    assert compared_outputs(cell) != {"text": ["a\nb\n"], "text/plain": ["True"]}


def test_some_cells_are_checked_against_their_committed_output():
    flagged = [
        p
        for p in NOTEBOOKS
        if any("nbval-check-output" in tags(c) for c in nbformat.read(p, as_version=4).cells)
    ]
    assert flagged, "no notebook tags a scale-independent cell with 'nbval-check-output'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_at_smoke_scale(path, tmp_path):
    """papermill, fresh kernel, SCALE="smoke" injected: the notebook runs top to bottom, and
    every cell tagged ``nbval-check-output`` (its output does not depend on the scale) prints
    what the committed book-scale run printed."""
    import papermill

    env_before = os.environ.get("KDTUTOR_SCALE")
    os.environ["KDTUTOR_SCALE"] = "smoke"
    try:
        papermill.execute_notebook(
            str(path),
            str(tmp_path / path.name),
            parameters={"SCALE": "smoke"},
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=300,
        )
    finally:
        if env_before is None:
            os.environ.pop("KDTUTOR_SCALE", None)
        else:
            os.environ["KDTUTOR_SCALE"] = env_before
    committed = nbformat.read(path, as_version=4)
    ran = {c.get("id"): c for c in nbformat.read(tmp_path / path.name, as_version=4).cells}
    for cell in committed.cells:
        if "nbval-check-output" in tags(cell):
            assert cell.get("id") in ran, f"cell {cell.get('id')} is missing from the run"
            assert compared_outputs(ran[cell["id"]]) == compared_outputs(cell), (
                f"{path.name}: a cell tagged nbval-check-output printed something else at "
                f"smoke scale than in the committed run:\n{cell.source[:300]}"
            )


def test_source_hash_ignores_outputs_but_not_sources():
    """`make book` skips a notebook only when its cells' sources (and the package) are unchanged."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("x = 1")]
    before = source_hash(nb)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1")]
    nb.cells[1].execution_count = 3
    nb.metadata["kdtutor"] = {"seconds": 1.0}
    assert source_hash(nb) == before
    nb.cells[1].source = "x = 2"
    assert source_hash(nb) != before
    nb.cells[1].source = "x = 1"
    nb.cells[1].metadata["tags"] = ["claim"]
    assert source_hash(nb) != before

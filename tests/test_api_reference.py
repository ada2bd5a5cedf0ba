"""The book's API reference: every public name is documented in the built HTML, the committed
pages are what scripts/make_api_pages.py writes, and the book's Sphinx extension tells
references to things that exist (rendered as code, or linked where the object is documented
under another name) from references to nothing (which fail the build).

The HTML comes from the session's ``built_book`` fixture (tests/conftest.py), shared with
test_book.py, so the book is built once.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import api_reference  # noqa: E402
import make_api_pages  # noqa: E402


def test_every_public_name_is_in_the_built_api_pages(built_book):
    """Each name of each public module's ``__all__`` has its signature on its module's page."""
    names = make_api_pages.public_names()
    assert "kdtutor.train" in names and "kdtutor.data" in names
    assert sum(len(v) for v in names.values()) > 300, "the walk found too few public names"
    missing = make_api_pages.missing_from_html(built_book)
    assert missing == [], f"{len(missing)} public names not in the built API pages: {missing}"


def test_a_name_missing_from_the_html_is_reported(tmp_path):
    missing = make_api_pages.missing_from_html(tmp_path)  # no page at all
    assert len(missing) == sum(len(v) for v in make_api_pages.public_names().values())
    assert "kdtutor.train.fit" in missing


def test_api_pages_are_up_to_date():
    """book/api/ and the "API reference" part of _toc.yml match the public modules."""
    stale = make_api_pages.stale_files()
    assert stale == [], f"out of date: {stale}; run `python scripts/make_api_pages.py`"


def test_every_public_module_has_one_page_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    part = toc[toc.index("  - caption: API reference") :]
    for module in make_api_pages.public_modules():
        docname = make_api_pages.page_path(module).relative_to(ROOT).with_suffix("")
        assert part.count(f"- file: {docname.as_posix()}\n") == 1, module
    assert "kdtutor.data._random" not in make_api_pages.public_modules()


def test_documented_names_reads_signatures():
    """Read from signatures as Sphinx 7.4 writes them (a function, a class)."""
    html = (
        '<dt class="sig sig-object py" id="kdtutor.train.fit">\n'
        '<span class="sig-prename descclassname"><span class="pre">kdtutor.train.</span></span>'
        '<span class="sig-name descname"><span class="pre">fit</span></span>'
        '<span class="sig-paren">(</span>...</dt>\n'
        '<dt class="sig sig-object py">\n'
        '<em class="property"><span class="pre">class</span><span class="w"> </span></em>'
        '<span class="sig-prename descclassname"><span class="pre">kdtutor.data.loader.</span>'
        '</span><span class="sig-name descname"><span class="pre">Batch</span></span>'
        '<span class="sig-paren">(</span>...</dt>'
    )
    assert make_api_pages.documented_names(html) == {
        "kdtutor.train.fit",
        "kdtutor.data.loader.Batch",
    }


def _ref(target: str, module: str | None = None, cls: str | None = None) -> dict:
    return {"reftarget": target, "py:module": module, "py:class": cls}


def test_references_to_things_that_exist_are_told_from_references_to_nothing():
    from kdtutor.data import load_dataset
    from kdtutor.methods import Distiller

    found = api_reference._target_object
    nothing = api_reference._NOTHING
    # in the context's module, by absolute path, through a name bound in any kdtutor module
    assert found(_ref("load_dataset", "kdtutor.data.registry")) is load_dataset
    assert found(_ref("~kdtutor.data.load_dataset")) is load_dataset
    assert found(_ref("Distiller.predict", "kdtutor.data")) is Distiller.predict
    assert found(_ref("torch.Tensor")) is not nothing
    assert found(_ref("int")) is int
    # an attribute instances have: a dataclass field, one a method stores on self
    assert found(_ref("ModelInfo.family", "kdtutor.models")) is api_reference._SOMETHING
    assert found(_ref("OFD.margin_sources", "kdtutor.methods.ofd")) is api_reference._SOMETHING
    # typos and names that do not exist anywhere
    assert found(_ref("load_datasets", "kdtutor.data")) is nothing
    assert found(_ref("kdtutor.data.no_such_function")) is nothing
    assert found(_ref("ModelInfo.no_such_field", "kdtutor.models")) is nothing

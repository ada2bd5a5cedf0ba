"""Small Sphinx fixes that keep the built book clean offline.

sphinx-thebe registers its configuration script once per read phase, so pages of a
Jupyter Book 1 build can carry it twice, which the browser reports as
"Identifier 'THEBE_JS_URL' has already been declared". This extension drops exact
duplicates from each page's script list.
"""

from __future__ import annotations

from typing import Any


def _dedupe_scripts(
    app: Any, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, str]] = set()
    unique = []
    for script in scripts:
        filename = (
            getattr(script, "filename", script) or ""
        )  # None and "" both mean an inline script
        key = (str(filename), str(getattr(script, "attributes", {}).get("body", "")))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    context["script_files"] = unique


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

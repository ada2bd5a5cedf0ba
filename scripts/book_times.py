"""How long each notebook of the book takes: a table of wall times, shown on "How to use this book".

    python scripts/book_times.py --run     # `make book-times`: execute every notebook, then the table
    python scripts/book_times.py           # only compile the table from the recorded times

With ``--run`` every notebook of ``_toc.yml`` (or those given with ``--notebooks``) is executed,
one after another, each in a fresh kernel, by ``execute_notebooks.execute`` at ``--scale``
(default ``book``), which records in the notebook's metadata the scale, the wall time, the date,
the source and package hashes and the machine. Without ``--run`` nothing is executed: the table
is compiled from what the notebooks' metadata already records, which is how ``make book``
refreshes it after re-running the changed notebooks.

Writes ``book/_generated/book_times.md`` (included by ``book/how-to-use.md``) and
``data/results/book_times.json``. The table always lists every notebook of ``_toc.yml``, in
reading order; one whose metadata has no time shows "not recorded". A notebook is "current" when
its source and the files it used (``metadata.kdtutor.uses``; the whole package for a notebook
without that record) are unchanged, "stale" otherwise (its outputs and time come from older
code), as ``execute_notebooks.stale_reasons`` decides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from execute_notebooks import (  # noqa: E402
    ROOT,
    describe,
    execute,
    package_hash,
    stale_reasons,
    toc_notebooks,
)

from kdtutor.io import atomic_write_json, atomic_write_text  # noqa: E402

TABLE = ROOT / "book" / "_generated" / "book_times.md"
JSON = ROOT / "data" / "results" / "book_times.json"
COLUMNS = [
    "Chapter",
    "Notebook",
    "File",
    "Scale",
    "Wall time (s)",
    "(m:ss)",
    "Executed",
    "Outputs",
]


def title_of(path: Path) -> str:
    """The first markdown heading of a notebook or a markdown page (its file name if none)."""
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    else:
        text = path.read_text()
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return path.stem


def _page(root: Path, name: str) -> Path | None:
    for suffix in (".ipynb", ".md"):
        if (root / f"{name}{suffix}").exists():
            return root / f"{name}{suffix}"
    return None


def toc_entries(toc: Path | None = None, root: Path = ROOT) -> list[dict]:
    """Every notebook of the table of contents, in reading order, with its section number as
    Jupyter Book numbers it (chapters of numbered parts count on across parts) and the title
    of its chapter."""
    data = yaml.safe_load((toc or root / "_toc.yml").read_text())
    parts = data.get("parts") or [{"chapters": data.get("chapters", []), "numbered": False}]
    entries: list[dict] = []
    chapter_count = 0

    def walk(node: dict, number: str, chapter: str) -> None:
        page = _page(root, node["file"]) if "file" in node else None
        if page is not None and page.suffix == ".ipynb":
            entries.append({"path": page, "number": number, "chapter": chapter})
        for j, child in enumerate(node.get("sections", []), start=1):
            walk(child, f"{number}.{j}" if number else "", chapter)

    for part in parts:
        numbered = bool(part.get("numbered"))
        for chapter in part.get("chapters", []):
            number = ""
            if numbered:
                chapter_count += 1
                number = str(chapter_count)
            page = _page(root, chapter["file"]) if "file" in chapter else None
            title = title_of(page) if page is not None else chapter.get("file", "")
            walk(chapter, number, f"{number} {title}".strip())
    return entries


def minutes(seconds: float) -> str:
    """``702.7`` -> ``"11:43"``."""
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def row(path: Path, pkg: str, number: str = "", chapter: str = "", root: Path = ROOT) -> dict:
    """One notebook's line of the table, from its metadata (``kdtutor``, written by
    ``execute_notebooks.execute``): stale when its source or a file it used changed, or, for a
    notebook without a record of what it uses, when the package hash ``pkg`` changed."""
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("kdtutor", {})
    try:
        rel = str(path.relative_to(root))
    except ValueError:
        rel = path.name
    seconds = meta.get("seconds")
    if seconds is None:
        status = "not recorded"
    else:
        changed = stale_reasons(nb, root=root, pkg=pkg)
        status = f"stale: {describe(changed)} changed since" if changed else "current"
    return {
        "file": rel,
        "number": number,
        "chapter": chapter,
        "title": title_of(path),
        "scale": meta.get("scale"),
        "seconds": seconds,
        "executed": meta.get("executed"),
        "machine": meta.get("machine"),
        "status": status,
    }


def collect(entries: list[dict] | None = None, pkg: str | None = None) -> dict:
    """The table's data: a row per notebook, the total and the machines the times come from."""
    entries = toc_entries() if entries is None else entries
    pkg = package_hash() if pkg is None else pkg
    rows = [row(e["path"], pkg, e.get("number", ""), e.get("chapter", "")) for e in entries]
    recorded = [r for r in rows if r["seconds"] is not None]
    machines: list[dict] = []
    for r in recorded:
        if r["machine"] is None:
            continue
        for m in machines:
            if m["machine"] == r["machine"]:
                m["notebooks"] += 1
                break
        else:
            machines.append({"machine": r["machine"], "notebooks": 1})
    return {
        "generated_by": "scripts/book_times.py",
        "package_sha256": pkg,
        "notebooks": rows,
        "recorded": len(recorded),
        "total_seconds": round(sum(r["seconds"] for r in recorded), 1),
        "machines": machines,
    }


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _machine_text(machine: dict) -> str:
    cpu = f" ({machine['cpu']})" if machine.get("cpu") else ""
    threads = machine.get("torch_threads", "?")
    return f"{machine.get('cores', '?')} cores{cpu}, torch threads {threads}"


def render_markdown(data: dict) -> str:
    """The MyST/markdown table (no heading: it is included into a page's section)."""
    lines = [
        "% Generated by scripts/book_times.py from the notebooks' metadata: do not edit.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---"] * 4 + ["--:"] * 2 + ["---"] * 2) + "|",
    ]
    previous_chapter = None
    for r in data["notebooks"]:
        chapter = "" if r["chapter"] == previous_chapter else r["chapter"]
        previous_chapter = r["chapter"]
        title = f"{r['number']} {r['title']}".strip()
        if r["seconds"] is None:
            timing = ["not recorded", "", "", ""]
        else:
            timing = [
                f"{r['seconds']:.1f}",
                minutes(r["seconds"]),
                (r["executed"] or "")[:10],
                r["status"],
            ]
        cells = [chapter, title, f"`{r['file']}`", r["scale"] or "", *timing]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    n, recorded = len(data["notebooks"]), data["recorded"]
    total = "**Total**" if recorded == n else f"**Total** ({recorded} of {n} recorded)"
    seconds = data["total_seconds"]
    lines.append(
        f"| {total} | | | | **{seconds:.1f}** | **{minutes(seconds)}** | | |",
    )
    lines.append("")
    machines = data["machines"]
    if machines:
        described = "; ".join(
            _machine_text(m["machine"])
            + ("" if len(machines) == 1 else f" ({m['notebooks']} notebooks)")
            for m in machines
        )
        lines.append(f"Machine: {described}.")
    unknown = recorded - sum(m["notebooks"] for m in machines)
    if unknown:
        if machines:
            lines.append("")
        lines.append(
            f"Machine not recorded for {unknown} of {recorded} timed notebooks (run before "
            "`scripts/execute_notebooks.py` recorded it; `make book-times` records it)."
        )
    return "\n".join(lines) + "\n"


def write(data: dict, table: Path = TABLE, json_path: Path = JSON) -> None:
    table.parent.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(table, render_markdown(data))
    atomic_write_json(json_path, data)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run",
        action="store_true",
        help="execute the notebooks first (default: only compile the recorded times)",
    )
    parser.add_argument("--scale", default="book", choices=["smoke", "book", "full"])
    parser.add_argument(
        "--notebooks",
        nargs="+",
        type=Path,
        default=None,
        help="with --run, execute only these (the table still lists every notebook)",
    )
    args = parser.parse_args()
    entries = toc_entries()
    if [e["path"] for e in entries] != toc_notebooks():
        raise SystemExit("book_times.toc_entries disagrees with execute_notebooks.toc_notebooks")
    failures: list[str] = []
    if args.run:
        paths = [p.resolve() for p in args.notebooks] if args.notebooks else toc_notebooks()
        for path in paths:
            rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            print(f"run   {rel} at {args.scale} scale ...", flush=True)
            try:
                seconds = execute(path, args.scale)
            except Exception as exc:  # keep going: the others' times are still worth having
                failures.append(f"{rel}: {type(exc).__name__}: {str(exc)[-500:]}")
                print(f"FAIL  {rel}: {type(exc).__name__}", flush=True)
            else:
                print(f"done  {rel} in {seconds:.1f} s", flush=True)
            write(collect(entries))  # after each notebook, so an interrupted run keeps its times
    data = collect(entries)
    write(data)
    print(render_markdown(data))
    print(f"wrote {TABLE.relative_to(ROOT)} and {JSON.relative_to(ROOT)}")
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

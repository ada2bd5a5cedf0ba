"""Execute the book's notebooks at book scale, in fresh kernels, and record what was run.

Each executed notebook gets, in its metadata under ``kdtutor``, the sha256 of its own source
(cells without outputs) and of the whole package (``kdtutor/**/*.py`` and the zoo manifest), the
scale, the wall time, the machine (cores, CPU model, torch threads) and **what it used**
(``uses``): the package files it imported (``sys.modules`` entries inside ``kdtutor/``) and the
files under ``data/`` it opened for reading, each with its sha256 (see ``notebook_uses.py``,
which records them from inside the kernel without adding a cell). ``scripts/book_times.py``
tables the times on the book's "How to use this book" page.

With ``--changed`` a notebook is re-run only when it is stale: its source changed, it was run
at another scale, or one of the files it used changed (added, edited or removed). A notebook
without a ``uses`` record is stale whenever anything of the package changed (the old, safe
rule). ``--dry-run`` lists what is stale and why, executing nothing.

``--record-uses`` writes the ``uses`` record of notebooks whose outputs are current without
re-running them at book scale: each runs once at smoke scale, in a throw-away copy, only to see
what it imports and reads; its committed cells and outputs stay untouched. Imports seldom
depend on the scale, but data files may: a file read only at book scale is missing from a
smoke-scale record (the record says ``"scale": "smoke"``), and a book-scale run replaces it.

    python scripts/execute_notebooks.py book/02-principles/kd-loss.ipynb
    python scripts/execute_notebooks.py --changed            # every notebook in _toc.yml
    python scripts/execute_notebooks.py --changed --dry-run  # what --changed would run, and why
    python scripts/execute_notebooks.py --record-uses        # record uses, outputs untouched
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdtutor.io import atomic_write_text  # noqa: E402

RECORDER = Path(__file__).resolve().parent / "notebook_uses.py"
DATA_DIRS = ("data", "kdtutor/zoo_data")
"""Folders (repository-relative) whose files a notebook is recorded as reading: the results
and the teachers shipped as package data."""
"""The file loaded into each kernel to record what the notebook uses."""
RECORDER_NAME = "kdtutor_notebook_uses"  # notebook_uses.MODULE_NAME


def toc_pages() -> list[Path]:
    """Every page listed in ``_toc.yml`` (notebook or Markdown file), in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    pages = []
    for f in files:
        found = [ROOT / f"{f}{s}" for s in (".ipynb", ".md") if (ROOT / f"{f}{s}").exists()]
        pages.extend(found[:1])
    return pages


def toc_notebooks() -> list[Path]:
    """Every notebook listed in ``_toc.yml``, in reading order."""
    return [p for p in toc_pages() if p.suffix == ".ipynb"]


def source_hash(nb: nbformat.NotebookNode) -> str:
    """sha256 of the cells' types, sources and tags (not outputs, counts or our own metadata)."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        tags = ",".join(cell.get("metadata", {}).get("tags", []))
        digest.update(f"{cell.cell_type}\0{tags}\0{cell.source}\0".encode())
    return digest.hexdigest()


def package_hash(root: Path = ROOT) -> str:
    """sha256 of the package's Python files and the zoo manifest (all of them, used or not)."""
    digest = hashlib.sha256()
    paths = [
        *sorted((root / "kdtutor").rglob("*.py")),
        root / "kdtutor" / "zoo_data" / "manifest.json",
    ]
    for path in paths:
        if path.exists():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def file_hash(path: Path) -> str | None:
    """sha256 of one file's bytes; None when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def candidate_hashes(root: Path = ROOT) -> dict[str, str]:
    """sha256 of every file a notebook may be recorded as using (``kdtutor/**/*.py`` and every
    file below :data:`DATA_DIRS`), by repository-relative path: taken before a run, so an edit made
    while a notebook runs makes it stale rather than current."""
    paths = [*(root / "kdtutor").rglob("*.py")]
    paths += [p for d in DATA_DIRS for p in (root / d).rglob("*")]
    return {
        str(p.relative_to(root)): h
        for p in sorted(paths)
        if p.is_file() and (h := file_hash(p)) is not None
    }


def stale_reasons(
    nb: nbformat.NotebookNode,
    scale: str | None = None,
    root: Path = ROOT,
    pkg: str | None = None,
) -> list[str]:
    """Why ``nb``'s outputs are out of date (``[]``: current), from its ``metadata.kdtutor``.

    Reasons are ``"source"``, ``"scale"`` (only checked when ``scale`` is given), the
    repository-relative paths of used files that changed, or ``"package"`` for a notebook
    without a ``uses`` record when the whole package changed (``pkg``: its present hash,
    computed if needed).
    """
    meta = nb.metadata.get("kdtutor", {})
    reasons = []
    if meta.get("source_sha256") != source_hash(nb):
        reasons.append("source")
    if scale is not None and meta.get("scale") != scale:
        reasons.append("scale")
    uses = meta.get("uses")
    if uses is None:
        if meta.get("package_sha256") != (package_hash(root) if pkg is None else pkg):
            reasons.append("package")
        return reasons
    for rel, recorded in sorted(uses["files"].items()):
        if file_hash(root / rel) != recorded:
            reasons.append(rel)
    return reasons


def describe(reasons: list[str], limit: int = 3) -> str:
    """``["source", "kdtutor/a.py"]`` -> ``"source and kdtutor/a.py"`` (at most ``limit``
    names, then how many more)."""
    shown = reasons[:limit] + ([f"{len(reasons) - limit} more"] if len(reasons) > limit else [])
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def is_current(path: Path, scale: str | None = None, root: Path = ROOT) -> bool:
    """True when the notebook at ``path`` need not be re-run (see :func:`stale_reasons`)."""
    return not stale_reasons(nbformat.read(path, as_version=4), scale, root)


def machine_info() -> dict[str, object]:
    """The machine a notebook runs on: usable cores, CPU model, torch's default thread count.

    The kernel is a fresh process with this environment, so its torch starts with the thread
    count seen here (``OMP_NUM_THREADS`` or the cores); notebooks may lower it themselves.
    """
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 0
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": cores, "cpu": cpu, "torch_threads": torch.get_num_threads()}


def _start_snippet() -> str:
    """Kernel code (run silently, before the first cell) that loads the recorder and starts it;
    it leaves no name in the notebook's namespace."""
    return (
        "def _kdtutor_record():\n"
        "    import importlib.util, sys\n"
        f"    spec = importlib.util.spec_from_file_location({RECORDER_NAME!r}, {str(RECORDER)!r})\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    sys.modules[spec.name] = module\n"
        "    spec.loader.exec_module(module)\n"
        f"    module.start(*{[str(ROOT / d) for d in DATA_DIRS]!r})\n"
        "_kdtutor_record()\n"
        "del _kdtutor_record\n"
    )


def _finish_snippet(out: Path) -> str:
    """Kernel code (run silently, after the last cell) that writes what was used to ``out``."""
    args = f"{str(ROOT / 'kdtutor')!r}, {[str(ROOT / d) for d in DATA_DIRS]!r}, {str(out)!r}"
    return f"__import__('sys').modules[{RECORDER_NAME!r}].finish({args})\n"


class RecordingClient(NotebookClient):
    """A ``NotebookClient`` that also runs ``before`` in the kernel before the first cell and
    ``after`` after the last one, silently: no output, no execution count, no history."""

    def __init__(self, nb: nbformat.NotebookNode, before: str, after: str, **kwargs) -> None:
        super().__init__(nb, **kwargs)
        self._hidden = {"before": before, "after": after}
        self._started = False

    async def _run_hidden(self, code: str) -> None:
        assert self.kc is not None
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
        reply = await self.async_wait_for_reply(msg_id)
        content = (reply or {}).get("content", {})
        if content.get("status") != "ok":
            detail = f"{content.get('ename')}: {content.get('evalue')}"
            raise RuntimeError(f"recording what the notebook uses failed: {detail}")

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if not self._started:
            self._started = True
            await self._run_hidden(self._hidden["before"])
        result = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        if cell_index == len(self.nb.cells) - 1:
            await self._run_hidden(self._hidden["after"])
        return result


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables (seen by the kernels started inside), then restore them."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def uses_record(found: dict, hashes: dict[str, str], scale: str) -> dict[str, object]:
    """The ``uses`` metadata from what the kernel found (real paths) and the hashes taken before
    the run (a file missing from them, e.g. written during the run, is hashed now)."""
    root = ROOT.resolve()
    if found["elsewhere"]:
        raise RuntimeError(
            f"the kernel imported kdtutor from outside {root}: {found['elsewhere'][:3]}; "
            "its record would say it uses nothing of this repository"
        )
    files: dict[str, str | None] = {}
    for real in [*found["modules"], *found["data"]]:
        rel = str(Path(real).relative_to(root))
        files[rel] = hashes.get(rel) or file_hash(root / rel)
    return {"scale": scale, "files": dict(sorted(files.items()))}


def run(nb: nbformat.NotebookNode, folder: Path, scale: str, timeout: int) -> tuple[float, dict]:
    """Execute ``nb`` in place in a fresh kernel (cwd ``folder``, ``KDTUTOR_SCALE=scale``, this
    repository first on ``PYTHONPATH``); return the wall time and its ``uses`` record."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("papermill", None)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    hashes = candidate_hashes()
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "uses.json"
        client = RecordingClient(
            nb,
            _start_snippet(),
            _finish_snippet(out),
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(folder)}},
        )
        with _environment(KDTUTOR_SCALE=scale, PYTHONPATH=python_path):
            start = time.perf_counter()
            client.execute()
            seconds = time.perf_counter() - start
        found = json.loads(out.read_text())
    return seconds, uses_record(found, hashes, scale)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it, else as given."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _write(path: Path, nb: nbformat.NotebookNode) -> None:
    atomic_write_text(path, nbformat.writes(nb) + "\n")


def execute(path: Path, scale: str = "book", timeout: int = 1200) -> float:
    """Run ``path`` top to bottom in a fresh kernel (cwd: its folder) and save it in place, with
    its record (see the module docstring)."""
    nb = nbformat.read(path, as_version=4)
    seconds, uses = run(nb, path.parent, scale, timeout)
    clean = copy.deepcopy(nb)
    for cell in clean.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
    clean.metadata["kdtutor"] = {
        "scale": scale,
        "seconds": round(seconds, 1),
        "executed": dt.datetime.now().isoformat(timespec="seconds"),
        "source_sha256": source_hash(clean),
        "package_sha256": package_hash(),
        "machine": machine_info(),
        "uses": uses,
    }
    _write(path, clean)
    return seconds


def record_uses(path: Path, timeout: int = 600) -> str:
    """Add a ``uses`` record to a notebook whose outputs are current, from a smoke-scale run of
    a copy; cells, outputs and the rest of its metadata stay as they are. Returns what was done.

    A notebook whose outputs are stale gets no record (it would claim they are current): re-run
    it at book scale, which records its uses. One already recorded at book scale is left alone.
    """
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("kdtutor", {})
    reasons = stale_reasons(nb)
    if reasons:
        return f"skip  (outputs stale: {describe(reasons)} changed; re-run it at book scale)"
    if meta.get("uses", {}).get("scale") == "book":
        return "skip  (already recorded at book scale)"
    _, uses = run(copy.deepcopy(nb), path.parent, "smoke", timeout)
    if stale_reasons(nb):  # something it uses was edited while the copy ran
        return "skip  (a file it uses changed while recording; try again)"
    meta["uses"] = uses
    nb.metadata["kdtutor"] = meta
    _write(path, nb)
    return f"wrote uses: {len(uses['files'])} files"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="default: every notebook in _toc.yml"
    )
    parser.add_argument(
        "--changed",
        action="store_true",
        help="run only the stale notebooks (source, scale or a file they use changed)",
    )
    parser.add_argument(
        "--dry-run",
        "--list-stale",
        action="store_true",
        help="with --changed: list the stale notebooks and why, run nothing",
    )
    parser.add_argument(
        "--record-uses",
        action="store_true",
        help="record what each current notebook uses (a smoke-scale run); outputs untouched",
    )
    parser.add_argument("--scale", default="book", choices=["smoke", "book", "full"])
    args = parser.parse_args()
    paths = [p.resolve() for p in args.notebooks] or toc_notebooks()
    if args.record_uses:
        for path in paths:
            print(f"uses  {_shown(path)}: {record_uses(path)}", flush=True)
        return 0
    pkg = package_hash()
    times: dict[str, float | str] = {}
    for path in paths:
        rel = _shown(path)
        nb = nbformat.read(path, as_version=4)
        reasons = stale_reasons(nb, args.scale, pkg=pkg) if args.changed or args.dry_run else []
        if (args.changed or args.dry_run) and not reasons:
            times[rel] = "unchanged"
            used = nb.metadata["kdtutor"].get("uses", {}).get("files")
            what = "package" if used is None else f"{len(used)} files it uses"
            print(f"skip  {rel} (source and {what} unchanged since its outputs were made)")
            continue
        if args.dry_run:
            times[rel] = "stale"
            print(f"stale {rel} ({describe(reasons, limit=6)} changed)")
            continue
        print(f"run   {rel} at {args.scale} scale ...", flush=True)
        times[rel] = execute(path, args.scale)
        print(f"done  {rel} in {times[rel]:.1f} s", flush=True)
    if not args.dry_run:
        print(json.dumps(times, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

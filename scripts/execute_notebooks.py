"""Execute the book's notebooks at book scale, in fresh kernels, and record what was run.

Each executed notebook gets, in its metadata under ``kdtutor``, the sha256 of its own source
(cells without outputs) and of the package (``kdtutor/**/*.py`` and the zoo manifest), the
scale, the wall time and the machine (cores, CPU model, torch threads); ``scripts/book_times.py``
tables the times on the book's "How to use this book" page. With ``--changed`` a notebook whose
recorded hashes match is skipped, so ``make book`` re-runs only what changed.

    python scripts/execute_notebooks.py book/02-principles/kd-loss.ipynb
    python scripts/execute_notebooks.py --changed            # every notebook in _toc.yml
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kdtutor.io import atomic_write_text  # noqa: E402


def toc_notebooks() -> list[Path]:
    """Every notebook listed in ``_toc.yml``, in reading order."""
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
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def source_hash(nb: nbformat.NotebookNode) -> str:
    """sha256 of the cells' types, sources and tags (not outputs, counts or our own metadata)."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        tags = ",".join(cell.get("metadata", {}).get("tags", []))
        digest.update(f"{cell.cell_type}\0{tags}\0{cell.source}\0".encode())
    return digest.hexdigest()


def package_hash() -> str:
    """sha256 of the package's Python files and the zoo manifest."""
    digest = hashlib.sha256()
    paths = [*sorted((ROOT / "kdtutor").rglob("*.py")), ROOT / "data" / "zoo" / "manifest.json"]
    for path in paths:
        if path.exists():
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


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


def is_current(path: Path, pkg: str) -> bool:
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("kdtutor", {})
    return meta.get("source_sha256") == source_hash(nb) and meta.get("package_sha256") == pkg


def execute(path: Path, scale: str = "book", timeout: int = 1200) -> float:
    """Run ``path`` top to bottom in a fresh kernel (cwd: its folder) and save it in place."""
    nb = nbformat.read(path, as_version=4)
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
    env_scale = os.environ.get("KDTUTOR_SCALE")
    os.environ["KDTUTOR_SCALE"] = scale
    try:
        start = time.perf_counter()
        NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
        seconds = time.perf_counter() - start
    finally:
        if env_scale is None:
            os.environ.pop("KDTUTOR_SCALE", None)
        else:
            os.environ["KDTUTOR_SCALE"] = env_scale
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
    }
    atomic_write_text(path, nbformat.writes(clean) + "\n")
    return seconds


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
        help="skip notebooks whose source and package are unchanged",
    )
    parser.add_argument("--scale", default="book", choices=["smoke", "book", "full"])
    args = parser.parse_args()
    paths = [p.resolve() for p in args.notebooks] or toc_notebooks()
    pkg = package_hash()
    times: dict[str, float | str] = {}
    for path in paths:
        rel = str(path.relative_to(ROOT))
        if args.changed and is_current(path, pkg):
            times[rel] = "unchanged"
            print(f"skip  {rel} (source and package unchanged since its outputs were made)")
            continue
        print(f"run   {rel} at {args.scale} scale ...", flush=True)
        times[rel] = execute(path, args.scale)
        print(f"done  {rel} in {times[rel]:.1f} s", flush=True)
    print(json.dumps(times, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

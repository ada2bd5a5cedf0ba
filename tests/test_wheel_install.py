"""kdtutor installs as a wheel and the README's quick start runs from another folder.

The wheel is built from a copy of the sources with the build backend of ``.venv`` (no build
isolation, so nothing is downloaded) and installed, with ``--no-index``, into a scratch venv
whose only view of the dependencies is ``.venv``'s site-packages (a ``.pth`` line; the
editable kdtutor of ``.venv`` is not activated there, since ``.pth`` files of that folder are
not processed). pip therefore checks the wheel's declared requirements against the locked
versions and installs kdtutor alone. The quick start then runs in an empty working folder,
with one epoch instead of fifteen, and must neither write into the installed package nor
read anything from the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIP = (sys.executable, "-m", "pip")


def _quick_start() -> str:
    """The README's Python quick start, shortened from 15 epochs to 1."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README.md's Quick start has no ```python block"
    assert "epochs=15" in code.group(1)
    return code.group(1).replace("epochs=15", "epochs=1")


def _kdtutor(installed: dict, *args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """The installed console script, run in ``cwd``."""
    script = installed["venv"] / "bin" / "kdtutor"
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "kdtutor", source / "kdtutor", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = work / "dist"
    subprocess.run(
        [
            *PIP,
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(source),
        ],
        check=True,
    )
    (wheel,) = dist.glob("kdtutor-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (purelib / "locked_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [*PIP, "--python", str(python), "install", "--quiet", "--no-index", str(wheel)],
        check=True,
    )
    return {"wheel": wheel, "python": python, "purelib": purelib, "venv": venv, "work": work}


def test_the_wheel_ships_the_zoo_as_package_data(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "kdtutor/zoo_data/manifest.json" in names
    assert "kdtutor/zoo_data/shapes_cnn_large.pt" in names
    assert not any(n.startswith(("tests/", "book/", "data/")) for n in names)


def test_the_wheel_holds_no_assignment_solution(installed):
    """The assignments' masters (solutions, hidden tests) stay in the repository: a learner
    who installs kdtutor gets the checkers, not the answers."""
    wheel = zipfile.ZipFile(installed["wheel"])
    assert not [n for n in wheel.namelist() if n.endswith(".ipynb") or "assignments/" in n]
    assert "kdtutor/coursework/grading.py" in wheel.namelist()
    for name in wheel.namelist():
        if name.endswith(".py"):
            assert b"# BEGIN SOLUTION" not in wheel.read(name), name


def test_the_quick_start_runs_outside_the_repository(installed):
    cwd = installed["work"] / "elsewhere"
    cwd.mkdir()
    package = installed["purelib"] / "kdtutor"
    before = _files(package)
    env = {
        **os.environ,
        "KDTUTOR_CACHE": str(installed["work"] / "cache"),
        "PYTHONPATH": "",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("KDTUTOR_ZOO", None)
    env.pop("KDTUTOR_RESULTS", None)
    script = "import kdtutor, sys; print('FROM', kdtutor.__file__)\n" + _quick_start()
    out = subprocess.run(
        [str(installed["python"]), "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    origin = out.stdout.split("FROM ", 1)[1].split("\n", 1)[0]
    assert Path(origin).resolve().is_relative_to(package.resolve()), origin
    accuracy = re.search(r"best ([\d.]+)%", out.stdout)
    assert accuracy, out.stdout
    assert float(accuracy.group(1)) > 10.0  # above chance after one epoch from the teacher
    # the console script works and the shipped teacher verifies from the installed package
    cli = _kdtutor(installed, "zoo", "verify", cwd=cwd, env=env)
    assert cli.returncode == 0, cli.stderr
    assert "shapes_cnn_large" in cli.stdout
    # nothing was written into the installed package
    after = {k: v for k, v in _files(package).items() if "__pycache__" not in k}
    assert after == {k: v for k, v in before.items() if "__pycache__" not in k}


def test_results_go_to_the_working_folder_outside_a_checkout(installed):
    cwd = installed["work"] / "results-here"
    cwd.mkdir()
    env = {**os.environ, "PYTHONPATH": ""}
    env.pop("KDTUTOR_RESULTS", None)
    out = subprocess.run(
        [
            str(installed["python"]),
            "-c",
            "from kdtutor.locations import results_dir as r\n"
            "from kdtutor.locations import source_checkout as s\nprint(r(), s())",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [str(cwd / "kdtutor-results"), "None"]


def test_retraining_a_shipped_teacher_never_writes_into_the_install(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": "", "KDTUTOR_CACHE": str(tmp_path / "cache")}
    env.pop("KDTUTOR_ZOO", None)
    out = _kdtutor(installed, "zoo", "train", "mnist5k_cnn", "--epochs", "1", cwd=tmp_path, env=env)
    assert out.returncode == 2, out.stderr
    assert "installed package" in out.stderr and "KDTUTOR_ZOO" in out.stderr

"""Requirements: ranges in pyproject.toml, exact pins in the lock, the learner's conda
environment; Python 3.10 syntax; the console script."""

import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _normalise(spec: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    assert match, spec
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def test_environment_yml_is_the_learners_environment():
    """The conda environment installs kdtutor with its notebooks extra (JupyterLab) and
    nothing of the book-building or browser-testing stack."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_lists == [["-e .[notebooks]"]]
    assert "python=3.11" in env["dependencies"]
    notebooks = dict(_normalise(s) for s in project["optional-dependencies"]["notebooks"])
    assert "jupyterlab" in notebooks and "ipykernel" in notebooks
    assert not {"jupyter-book", "playwright", "pytest"} & set(notebooks)


def _installed_versions(lock: str) -> dict[str, str]:
    pins = {}
    for line in lock.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"requirements/book.lock: {line!r} is not an exact pin"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_lock_satisfies_every_range_of_pyproject():
    """requirements/book.lock pins every runtime and extra requirement at a version inside
    pyproject.toml's ranges (the ranges are what users install; the lock is what is tested)."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _installed_versions((ROOT / "requirements" / "book.lock").read_text())
    wanted = list(project["dependencies"])
    for extra in ("dev", "notebooks", "tensorboard", "timm"):
        wanted += project["optional-dependencies"][extra]
    for spec in wanted:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is required by pyproject.toml but not in the lock"
        assert req.specifier.contains(pins[name], prereleases=True), (spec, pins[name])
    assert (pins["torch"], pins["torchvision"]) == ("2.14.1", "0.29.1")
    assert project["requires-python"] == ">=3.10"
    assert not any("==" in d for d in project["dependencies"]), "runtime pins belong in the lock"


def test_the_package_compiles_and_avoids_311_only_names_under_python_310():
    """pyproject says Python >= 3.10: every module compiles with 3.10 when one is installed,
    and the package uses no standard-library name added in 3.11."""
    import shutil

    for name in ("datetime.UTC", "_dt.UTC", "import tomllib", "typing.Self", "StrEnum"):
        for path in (ROOT / "kdtutor").rglob("*.py"):
            assert name not in path.read_text(), f"{path}: {name} needs Python 3.11"
    candidates = [*Path("/root/.pyenv/versions").glob("3.10*/bin/python3.10")]
    candidates += [Path(p) for p in [shutil.which("python3.10")] if p]
    script = (
        "import pathlib, sys\n"
        "for f in pathlib.Path(sys.argv[1]).rglob('*.py'):\n"
        "    compile(f.read_text(), str(f), 'exec')\n"
    )
    runnable = [
        p for p in candidates if subprocess.run([str(p), "-V"], capture_output=True).returncode == 0
    ]
    if not runnable:
        return
    out = subprocess.run(
        [str(runnable[0]), "-c", script, str(ROOT / "kdtutor")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "kdtutor", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("distill", "models", "zoo", "methods", "datasets"):
        assert command in out

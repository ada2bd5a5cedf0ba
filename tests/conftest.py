"""Test-wide guards (no network access at run time, a quiet non-interactive environment), the
test tiers and the shared fixtures ``tiny_data`` and ``tiny_pair``.

Tiers are markers given per file by :data:`TIERS` (a file not listed is ``unit``), so that
the test files need not say it; ``make test-fast`` runs ``unit`` and ``methods`` without
``slow``, ``make test`` everything:

- ``unit``: the package's parts (data, models, trainer, cache, CLI, zoo, bench, io), fast;
- ``methods``: the distillation methods (losses, distillers, resume) and the coursework checkers;
- ``notebooks``: executes notebooks (papermill at smoke scale, the uses recorder);
- ``book``: the built artefacts: the HTML book, the browser check, the book's generated pages
  and tables, the wheel installed outside the repository.

``slow`` (trains or runs subprocesses for more than a few seconds on 2 cores) is given by
:data:`SLOW` to tests whose files do not mark it themselves.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest
import torch

if TYPE_CHECKING:
    from kdtutor.data import ArrayDataset

os.environ.setdefault("KDTUTOR_SCALE", "smoke")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker: two workers of two threads each fight for two cores
    torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")

_real_connect = socket.socket.connect


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_local(address):
        raise RuntimeError(
            f"test tried to reach the network ({address!r}): kdtutor must work offline. "
            "Use shipped data or a local KDTUTOR_DATA folder."
        )
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    socket.socket.connect = _guarded_connect
    yield
    socket.socket.connect = _real_connect


TIERS: dict[str, str] = {
    "test_notebooks.py": "notebooks",
    "test_staleness.py": "notebooks",
    "test_assignments.py": "notebooks",
    "test_book.py": "book",
    "test_api_reference.py": "book",
    "test_book_times.py": "book",
    "test_performance_page.py": "book",
    "test_wheel_install.py": "book",
    "test_methods.py": "methods",
    "test_kd_loss.py": "methods",
    "test_response_methods.py": "methods",
    "test_relation_methods.py": "methods",
    "test_algorithms_datafree.py": "methods",
    "test_algorithms_lifelong.py": "methods",
    "test_schemes_online.py": "methods",
    "test_feature_methods_*.py": "methods",
    "test_resume_methods.py": "methods",
    "test_connectors.py": "methods",
    "test_hinton.py": "methods",
    "test_coursework_*.py": "methods",
    "test_schemes_byot.py": "methods",
    "test_schemes_self.py": "methods",
    "test_schemes_one.py": "methods",
    "test_deit.py": "methods",
    "test_algorithms_adversarial.py": "methods",
    "test_application_methods.py": "methods",
    "test_detection_methods.py": "methods",
    "test_algorithms_multiteacher.py": "methods",
    "test_algorithms_crossmodal.py": "methods",
    "test_algorithms_quantized.py": "methods",
    "test_algorithms_graph_attention.py": "methods",
    "test_dense_methods.py": "methods",
    "test_cost.py": "unit",
    "test_published_schemes.py": "unit",
    "test_specs.py": "unit",
    "test_search.py": "unit",
    "test_architecture_methods.py": "methods",
    "test_chain.py": "unit",
    "test_bench_architecture.py": "unit",
    "test_cli_architecture.py": "unit",
    "test_bench_applications.py": "unit",
    "test_cli_applications.py": "unit",
}
"""Test file name (a glob) -> tier; any other file is ``unit``."""

SLOW: tuple[str, ...] = (
    "test_kill_resume.py::test_sigkill_*",  # trains in a subprocess killed 8 times: 33 s
    "test_distributed.py::*",  # torchrun with 2 gloo processes: 7-19 s each
    "test_engine.py::test_a_generator_fed_data_free_run_ends_above_chance",  # 30 s
    "test_wheel_install.py::*",  # builds and installs the wheel, runs the quick start: 40 s
    "test_experiments.py::test_sigint_*",  # CLI subprocesses, each 5-15 s
    "test_experiments.py::test_metrics_jsonl_*",
    "test_experiments.py::test_verbosity_*",
)
"""Node ids (globs, relative to ``tests/``) of tests marked ``slow`` here (measured on 2 busy
cores); ``make test`` runs them, ``make test-fast`` does not."""


ONE_WORKER: dict[str, str] = {
    "test_book.py": "book_build",
    "test_api_reference.py": "book_build",
    "test_staleness.py": "test_staleness",
}
"""Files whose tests share an expensive fixture (the book build, a kernel run) -> their group:
under pytest-xdist (``make test`` runs the notebooks and book tiers with ``-n 2 --dist
loadgroup``) the tests of a group are meant to stay on one worker, so the fixture is built
once. With pytest 9 and pytest-xdist 3.8 the groups are ignored (see :func:`built_book`,
which is shared by the workers whatever runs where)."""


def tier_of(filename: str) -> str:
    """The tier of a test file, by its name (see :data:`TIERS`)."""
    return next((t for pattern, t in TIERS.items() if fnmatch.fnmatch(filename, pattern)), "unit")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the xdist_group markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test its file's tier marker, ``slow`` to those listed in :data:`SLOW`, and an
    ``xdist_group`` to those of :data:`ONE_WORKER` (when pytest-xdist is installed)."""
    xdist = config.pluginmanager.hasplugin("xdist")
    for item in items:
        item.add_marker(tier_of(item.path.name))
        node = item.nodeid.removeprefix("tests/")
        if any(fnmatch.fnmatch(node, pattern) for pattern in SLOW):
            item.add_marker("slow")
        if xdist and item.path.name in ONE_WORKER:
            item.add_marker(pytest.mark.xdist_group(ONE_WORKER[item.path.name]))


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML book, built once per test run (``build_book.build``: warnings are errors, so
    this raises ``CalledProcessError`` on any Sphinx warning); its ``_build/html`` folder.

    Under pytest-xdist the workers share it: the first to need it builds it in the run's
    common temporary folder while holding a file lock, the others wait and reuse it (the
    ``xdist_group`` of :data:`ONE_WORKER` alone does not do it: pytest-xdist 3.8 cannot set
    the group of a test on pytest 9, whose node ids it no longer rewrites)."""
    return _built_editions(tmp_path_factory)[0]


@pytest.fixture(scope="session")
def built_student_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The student edition's HTML folder, built beside :func:`built_book` (see there)."""
    return _built_editions(tmp_path_factory)[1]


def _built_editions(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build the full and the student editions once per test run, at the same time: each
    Sphinx build keeps one core busy, and in sequence the two were the longest chain of the
    book tier (the workers wait on the first, the student test then ran the second)."""
    from concurrent.futures import ThreadPoolExecutor

    from filelock import FileLock  # a dependency of torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import build_book

    shared = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the workers' folders are popen-gw0, popen-gw1, ... in it
    full, student, done = shared / "book", shared / "student", shared / "book.built"
    with FileLock(str(shared / "book.lock")):
        if not done.exists():
            with ThreadPoolExecutor(max_workers=2) as pool:
                jobs = [
                    pool.submit(build_book.build, output=full),
                    pool.submit(build_book.build, student=True, output=student),
                ]
                for job in jobs:
                    job.result()
            done.touch()
    return full / "_build" / "html", student / "_build" / "html"


class TinyData(NamedTuple):
    """A small train/test pair of ``shapes`` (3x32x32, 10 balanced classes)."""

    train: ArrayDataset
    test: ArrayDataset


class TinyPair(NamedTuple):
    """A small teacher and student for ``shapes``-sized inputs."""

    teacher: torch.nn.Module
    student: torch.nn.Module


@pytest.fixture(scope="session")
def tiny_data() -> TinyData:
    """200 training and 100 test images of ``shapes`` (20 and 10 per class), generated without
    the disk cache; shared by the session, so treat them as read-only (as ``load_dataset`` asks)."""
    from kdtutor.data import load_dataset

    return TinyData(
        load_dataset("shapes", "train", size=200, cache=False),
        load_dataset("shapes", "test", size=100, cache=False),
    )


@pytest.fixture
def tiny_pair() -> TinyPair:
    """A fresh ``cnn_medium`` teacher and ``cnn_tiny`` student (10 classes, 3 channels), built
    after seeding torch with 0 so that each test gets the same weights."""
    from kdtutor.models import build_model

    torch.manual_seed(0)
    return TinyPair(build_model("cnn_medium"), build_model("cnn_tiny"))

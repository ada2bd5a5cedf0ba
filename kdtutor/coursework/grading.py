"""Autograded assignments: list them, build the student notebooks and autograders, grade.

Each assignment is one *master* notebook in the repository's ``assignments/`` folder (or
``$KDTUTOR_ASSIGNMENTS``), written in otter-grader's assignment format: questions, solutions,
public and hidden tests in one file. The masters are not in the installed package, so a
learner who installs kdtutor does not receive the solutions.
Grading is otter-grader's, not ours:

- :func:`build_assignment` runs ``otter assign``, which writes the student notebook (every
  solution replaced by ``...``, hidden tests removed) and the autograder zip;
- :func:`grade_submission` runs ``otter run`` on one submission with that zip (no container:
  the installed environment, offline), in a process of its own;
- :func:`grade_folder` grades every ``.ipynb`` of a folder and writes one CSV row per
  submission (a submission that cannot be run scores 0, with the reason in its row).

Public tests (0 points) tell a learner what is wrong, most of them through the book's
checkers; hidden tests score.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..errors import DataNotFoundError, UnknownNameError
from ..io import atomic_write_text
from ..locations import source_checkout

__all__ = [
    "Assignment",
    "AssignmentBuild",
    "AssignmentCheck",
    "Mistake",
    "Score",
    "build_assignment",
    "check_assignment",
    "find_assignment",
    "grade_folder",
    "grade_submission",
    "list_assignments",
    "masters_dir",
    "plant_mistake",
    "planted_mistakes",
]


#: Seconds one submission may run before it is stopped (and scores 0).
DEFAULT_TIMEOUT = 600


@dataclass(frozen=True)
class Assignment:
    """One master notebook.

    Attributes:
        name: The assignment's name (its file name without ``.ipynb``).
        title: The first heading of the notebook.
        master: Path of the master notebook.
        points: Points per question, in the notebook's order.
        goals: The master's "Learning goals." paragraph.
        time: The master's "Time." paragraph (the expected work).
    """

    name: str
    title: str
    master: Path
    points: dict[str, float]
    goals: str = ""
    time: str = ""

    @property
    def total(self) -> float:
        """The points an entirely right submission scores."""
        return float(sum(self.points.values()))


@dataclass(frozen=True)
class AssignmentBuild:
    """What :func:`build_assignment` wrote.

    Attributes:
        student: The notebook to hand out (solutions and hidden tests removed).
        solution: The reference solution (the autograder's copy of the notebook).
        autograder: The zip that :func:`grade_submission` grades with.
    """

    student: Path
    solution: Path
    autograder: Path


@dataclass(frozen=True)
class Score:
    """The grade of one submission.

    Attributes:
        submission: The graded file.
        score: Points scored.
        possible: Points available.
        questions: Points scored per question.
        error: Why the submission could not be graded (it then scores 0), else ``""``.
    """

    submission: Path
    score: float
    possible: float
    questions: dict[str, float] = field(default_factory=dict)
    error: str = ""


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _read_master(path: Path) -> Assignment:
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the master notebook {path}: {exc}") from exc
    title, points, about = path.stem, {}, {}
    for cell in nb.get("cells", []):
        text = _source(cell).strip()
        if cell.get("cell_type") == "markdown" and title == path.stem:
            heading = re.match(r"#\s+(.+)", text)
            if heading:
                title = heading.group(1).strip()
            for key, label in (("goals", "Learning goals"), ("time", "Time")):
                found = re.search(rf"\*\*{label}\.\*\*\s*(.+?)(?:\n\s*\n|\Z)", text, re.DOTALL)
                if found:
                    about[key] = " ".join(found.group(1).split())
        if cell.get("cell_type") == "raw" and text.startswith("# BEGIN QUESTION"):
            config = yaml.safe_load(text.split("\n", 1)[1]) or {}
            points[str(config["name"])] = float(config.get("points", 0))
    return Assignment(name=path.stem, title=title, master=path, points=points, **about)


def masters_dir() -> Path:
    """The folder of master notebooks: ``$KDTUTOR_ASSIGNMENTS``, else the checkout's
    ``assignments/``.

    Raises:
        kdtutor.errors.DataNotFoundError: Neither exists (kdtutor installed from a wheel,
            which leaves the masters out on purpose).
    """
    env = os.environ.get("KDTUTOR_ASSIGNMENTS")
    if env:
        folder = Path(env).expanduser()
    else:
        root = source_checkout()
        folder = root / "assignments" if root is not None else Path("assignments")
    if not folder.is_dir():
        raise DataNotFoundError(
            f"no folder of master notebooks at {folder}: the assignments (with their solutions) "
            "are not in the installed package; clone the kdtutor repository and run from it, "
            "or set KDTUTOR_ASSIGNMENTS to a folder that holds them"
        )
    return folder


def list_assignments() -> list[Assignment]:
    """Every assignment in :func:`masters_dir`, in the order of their names."""
    found = [_read_master(p) for p in masters_dir().glob("*.ipynb")]
    return sorted(found, key=lambda a: (_number(a.title), a.name))


def _number(title: str) -> int:
    """The N of "Assignment N: ..." (assignments without one come last)."""
    match = re.match(r"Assignment\s+(\d+)", title)
    return int(match.group(1)) if match else 10**6


def find_assignment(name: str) -> Assignment:
    """The assignment called ``name``.

    Raises:
        kdtutor.errors.UnknownNameError: No assignment has that name (the message lists the
            names there are).
    """
    path = masters_dir() / f"{name}.ipynb"
    if not path.is_file():
        names = ", ".join(a.name for a in list_assignments())
        raise UnknownNameError(f"no assignment called {name!r}; the assignments are: {names}")
    return _read_master(path)


def _otter(*args: str, cwd: Path | None = None, timeout: float | None = None) -> str:
    """Run the otter command line in a process of its own; return what it printed."""
    command = [sys.executable, "-m", "otter", *args]
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"`otter {' '.join(args)}` failed:\n" + "\n".join(tail))
    return done.stdout


def build_assignment(
    name: str, out_dir: str | os.PathLike[str], *, run_tests: bool = False
) -> AssignmentBuild:
    """Run ``otter assign`` on the master notebook of ``name``, into ``out_dir/name``.

    Args:
        name: The assignment (see :func:`list_assignments`).
        out_dir: Folder that receives ``name/student`` and ``name/autograder``.
        run_tests: Also run every test against the solution while building (otter's check
            of the master; it executes the notebook once more).

    Returns:
        The paths of the student notebook, the solution and the autograder zip.

    Raises:
        kdtutor.errors.UnknownNameError: Unknown assignment.
        RuntimeError: ``otter assign`` failed (its last lines are in the message).
    """
    assignment = find_assignment(name)
    args = ["assign", "--no-pdfs"]
    if not run_tests:
        args.append("--no-run-tests")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # built in a staging folder and moved into place: a failed build leaves nothing behind
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{name}.") as tmp:
        staging = Path(tmp) / name
        _otter(*args, str(assignment.master), str(staging))
        zips = sorted((staging / "autograder").glob("*.zip"))
        if len(zips) != 1:
            raise RuntimeError(f"otter assign wrote {len(zips)} autograder zips for {name}")
        # one stable name for the zip (otter's carries a time stamp)
        zips[0].rename(staging / "autograder" / f"{name}-autograder.zip")
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return AssignmentBuild(
        student=target / "student" / f"{name}.ipynb",
        solution=target / "autograder" / f"{name}.ipynb",
        autograder=target / "autograder" / f"{name}-autograder.zip",
    )


def _read_results(path: Path) -> tuple[float, float, dict[str, float]]:
    """Score, points possible and score per question from otter's ``results.json``."""
    results = json.loads(path.read_text(encoding="utf-8"))
    questions = {t["name"]: float(t["score"]) for t in results.get("tests", []) if "max_score" in t}
    possible = sum(float(t["max_score"]) for t in results.get("tests", []) if "max_score" in t)
    return float(sum(questions.values())), possible, questions


def grade_submission(
    submission: str | os.PathLike[str],
    autograder: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Score:
    """Grade one notebook with ``otter run`` and the autograder zip, in a process of its own.

    A submission that cannot be run (not a notebook, a timeout, otter failing on it) scores 0
    with the reason in :attr:`Score.error`; cells that raise only lose their questions' points.

    Raises:
        kdtutor.errors.DataNotFoundError: The submission or the autograder zip does not exist.
    """
    submission, autograder = Path(submission), Path(autograder)
    for path, what in ((submission, "submission"), (autograder, "autograder zip")):
        if not path.is_file():
            raise DataNotFoundError(f"no {what} at {path}: check the path")
    with tempfile.TemporaryDirectory(prefix="kdtutor-grade-") as tmp:
        try:
            json.loads(submission.read_text(encoding="utf-8"))
            _otter(
                "run",
                "--no-logo",
                "-a",
                str(autograder.resolve()),
                "-o",
                tmp,
                str(submission.resolve()),
                cwd=Path(tmp),
                timeout=timeout,
            )
            score, possible, questions = _read_results(Path(tmp) / "results.json")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return Score(submission, 0.0, 0.0, error=f"not a readable notebook: {exc}")
        except subprocess.TimeoutExpired:
            return Score(submission, 0.0, 0.0, error=f"ran longer than {timeout:.0f} s")
        except (RuntimeError, OSError, KeyError) as exc:
            return Score(submission, 0.0, 0.0, error=str(exc).splitlines()[0])
    return Score(submission, score, possible, questions)


def grade_folder(
    name: str,
    submissions: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    *,
    autograder: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Score]:
    """Grade every ``.ipynb`` in ``submissions`` and write one CSV row per submission.

    Args:
        name: The assignment.
        submissions: Folder of submitted notebooks (one per learner).
        out_csv: The CSV to write: ``submission, score, possible, <one column per question>,
            error``. Written whole at the end (never a partial file).
        autograder: The autograder zip; built into a temporary folder when omitted.
        timeout: Seconds one submission may run.

    Raises:
        kdtutor.errors.UnknownNameError: Unknown assignment.
        kdtutor.errors.DataNotFoundError: The folder does not exist or holds no notebook.
    """
    assignment = find_assignment(name)
    folder = Path(submissions)
    if not folder.is_dir():
        raise DataNotFoundError(f"no folder of submissions at {folder}: check the path")
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise DataNotFoundError(
            f"{folder} holds no .ipynb submission to grade: put one notebook per learner there"
        )
    with tempfile.TemporaryDirectory(prefix="kdtutor-autograder-") as tmp:
        zip_path = Path(autograder) if autograder else build_assignment(name, tmp).autograder
        scores = [grade_submission(nb, zip_path, timeout=timeout) for nb in notebooks]
    # a submission that could not be run still had the assignment's points to win
    scores = [replace(s, possible=assignment.total) if s.error else s for s in scores]
    _write_scores(scores, list(assignment.points), Path(out_csv))
    return scores


def _write_scores(scores: list[Score], questions: list[str], path: Path) -> None:
    """One CSV row per submission, written whole (atomically) at the end."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["submission", "score", "possible", *questions, "error"])
    for s in scores:
        per_question = [s.questions.get(q, 0.0) for q in questions]
        writer.writerow([s.submission.name, s.score, s.possible, *per_question, s.error])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())


@dataclass(frozen=True)
class Mistake:
    """A classic mistake planted in an assignment's solution (``assignments/mistakes.yml``).

    Attributes:
        name: What the mistake is, in a learner's words.
        replace: Code of the solution that the mistake changes (it occurs once).
        with_: What it becomes.
        loses: Points the mistake must cost, per question.
    """

    name: str
    replace: str
    with_: str
    loses: dict[str, float]


@dataclass(frozen=True)
class AssignmentCheck:
    """An assignment graded as a course would grade it (see :func:`check_assignment`).

    Attributes:
        assignment: The assignment.
        solution: The reference solution's grade.
        student: The untouched student notebook's grade.
        mistakes: Each planted mistake with the grade of the solution that carries it.
        seconds: Wall time of building the autograder and of grading the solution.
        built: Where the student notebook, the solution and the autograder were written.
    """

    assignment: Assignment
    solution: Score
    student: Score
    mistakes: list[tuple[Mistake, Score]]
    seconds: dict[str, float]
    built: AssignmentBuild


def planted_mistakes(name: str) -> list[Mistake]:
    """The classic mistakes listed for ``name`` in ``mistakes.yml`` beside the masters."""
    path = masters_dir() / "mistakes.yml"
    if not path.is_file():
        raise DataNotFoundError(f"no {path}: it lists the planted mistakes of each assignment")
    listed = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [
        Mistake(
            m["name"], m["replace"], m["with"], {str(q): float(v) for q, v in m["loses"].items()}
        )
        for m in listed.get(name, [])
    ]


def plant_mistake(
    solution: str | os.PathLike[str], mistake: Mistake, out: str | os.PathLike[str]
) -> Path:
    """Write a copy of the solution notebook with ``mistake`` planted in its cells.

    Raises:
        ValueError: ``mistake.replace`` does not occur exactly once in the solution's cells.
    """
    nb = json.loads(Path(solution).read_text(encoding="utf-8"))
    hits = sum(_source(c).count(mistake.replace) for c in nb["cells"])
    if hits != 1:
        raise ValueError(
            f"mistake {mistake.name!r}: its `replace` text occurs {hits} times in the "
            "solution, not once: quote a longer, unique piece of the solution's code"
        )
    for cell in nb["cells"]:
        cell["source"] = _source(cell).replace(mistake.replace, mistake.with_)
    atomic_write_text(out, json.dumps(nb))
    return Path(out)


def check_assignment(
    name: str, work_dir: str | os.PathLike[str], *, workers: int = 2
) -> AssignmentCheck:
    """Build the autograder of ``name`` and grade its reference solution, its untouched student
    notebook and the solution with each planted mistake (``workers`` gradings at a time).

    What an assignment must show: full marks for the solution, 0 for the student notebook, and
    for each mistake exactly the points of :attr:`Mistake.loses` lost.
    """
    work = Path(work_dir)
    start = time.perf_counter()
    built = build_assignment(name, work / "build")
    build_seconds = time.perf_counter() - start
    mistakes = planted_mistakes(name)
    planted = [
        plant_mistake(built.solution, m, work / f"mistake{i}.ipynb") for i, m in enumerate(mistakes)
    ]

    def timed(nb: Path) -> tuple[Score, float]:
        t0 = time.perf_counter()
        return grade_submission(nb, built.autograder), time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        graded = list(pool.map(timed, [built.solution, built.student, *planted]))
    (solution, solution_seconds), (student, _) = graded[0], graded[1]
    return AssignmentCheck(
        assignment=find_assignment(name),
        solution=solution,
        student=student,
        mistakes=[(m, g[0]) for m, g in zip(mistakes, graded[2:], strict=True)],
        seconds={"build": build_seconds, "grade_solution": solution_seconds},
        built=built,
    )

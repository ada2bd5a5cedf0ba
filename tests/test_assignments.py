"""The autograded assignments (kdtutor.coursework.grading, assignments/*.ipynb).

For every assignment, graded by otter-grader exactly as an instructor would: the reference
solution scores full marks, the untouched student notebook scores 0, and each classic mistake
planted in the solution (assignments/mistakes.yml) loses exactly the points listed for it, in
the questions listed, and no others.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from kdtutor.coursework import grading

ROOT = Path(__file__).resolve().parent.parent
MISTAKES = yaml.safe_load((ROOT / "assignments" / "mistakes.yml").read_text())
NAMES = [a.name for a in grading.list_assignments()]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def plant(solution: Path, mistake: dict, out: Path) -> Path:
    """A copy of the solution notebook with one mistake planted in its code."""
    nb = json.loads(solution.read_text())
    hits = sum(_source(c).count(mistake["replace"]) for c in nb["cells"])
    assert hits == 1, f"{mistake['name']}: `replace` occurs {hits} times in the solution"
    for cell in nb["cells"]:
        cell["source"] = _source(cell).replace(mistake["replace"], mistake["with"])
    out.write_text(json.dumps(nb))
    return out


def test_there_are_six_assignments_each_with_a_planted_mistake():
    assert len(NAMES) >= 6, NAMES
    assert set(MISTAKES) == set(NAMES), "every assignment lists its planted mistakes"
    for name in NAMES:
        points = grading.find_assignment(name).points
        for mistake in MISTAKES[name]:
            assert mistake["loses"] and set(mistake["loses"]) <= set(points), mistake
            assert all(0 < v <= points[q] for q, v in mistake["loses"].items()), mistake


@pytest.mark.parametrize("name", NAMES)
def test_solution_full_student_zero_mistake_exact(name, tmp_path):
    assignment = grading.find_assignment(name)
    built = grading.build_assignment(name, tmp_path / "build")
    planted = [
        plant(built.solution, m, tmp_path / f"mistake{i}.ipynb")
        for i, m in enumerate(MISTAKES[name])
    ]
    # the gradings are independent processes: run them side by side
    with ThreadPoolExecutor(max_workers=2) as pool:
        solution, student, *mistakes = pool.map(
            lambda nb: grading.grade_submission(nb, built.autograder),
            [built.solution, built.student, *planted],
        )
    assert solution.error == "" and solution.questions == assignment.points, solution
    assert solution.score == solution.possible == assignment.total
    assert student.error == "" and student.score == 0, student
    for mistake, score in zip(MISTAKES[name], mistakes, strict=True):
        expected = {q: p - mistake["loses"].get(q, 0) for q, p in assignment.points.items()}
        assert score.questions == expected, (mistake["name"], score.questions)


def test_student_notebook_holds_no_solution_or_hidden_test(tmp_path):
    """What a learner receives: no solution line and no hidden test of the master."""
    name = NAMES[0]
    built = grading.build_assignment(name, tmp_path)
    student = built.student.read_text()
    master = json.loads(grading.find_assignment(name).master.read_text())
    secret_lines: list[str] = []
    for cell in master["cells"]:
        text = _source(cell)
        inside = False
        for line in text.splitlines():
            if "# END SOLUTION" in line:
                inside = False
            if inside and len(line.strip()) > 12:
                secret_lines.append(line.strip())
            if "# BEGIN SOLUTION" in line:
                inside = True
        if "hidden: true" in text:
            secret_lines.append(text.split("def ", 1)[1].split("(", 1)[0])
    assert secret_lines, "no solution found in the master: the check is empty"
    for line in secret_lines:
        assert json.dumps(line)[1:-1] not in student, line

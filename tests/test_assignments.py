"""The autograded assignments (kdtutor.coursework.grading, assignments/*.ipynb).

For every assignment, graded by otter-grader exactly as an instructor would: the reference
solution scores full marks, the untouched student notebook scores 0, and each classic mistake
planted in the solution (assignments/mistakes.yml) loses exactly the points listed for it, in
the questions listed, and no others.
"""

from __future__ import annotations

import json

import pytest

from kdtutor.coursework import grading

NAMES = [a.name for a in grading.list_assignments()]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_there_are_six_assignments_each_with_a_planted_mistake():
    assert len(NAMES) >= 6, NAMES
    for name in NAMES:
        points = grading.find_assignment(name).points
        mistakes = grading.planted_mistakes(name)
        assert mistakes, f"{name} lists no planted mistake in assignments/mistakes.yml"
        for m in mistakes:
            assert m.loses and set(m.loses) <= set(points), m
            assert all(0 < v <= points[q] for q, v in m.loses.items()), m


def test_a_mistake_must_occur_once_in_the_solution(tmp_path):
    solution = tmp_path / "s.ipynb"
    solution.write_text(json.dumps({"cells": [{"cell_type": "code", "source": "x = 1\nx = 1"}]}))
    twice = grading.Mistake("twice", "x = 1", "x = 2", {"q1": 1})
    with pytest.raises(ValueError, match="occurs 2 times"):
        grading.plant_mistake(solution, twice, tmp_path / "m.ipynb")
    assert not (tmp_path / "m.ipynb").exists()


@pytest.mark.parametrize("name", NAMES)
def test_solution_full_student_zero_mistake_exact(name, tmp_path):
    check = grading.check_assignment(name, tmp_path)
    points = check.assignment.points
    assert check.solution.error == "" and check.solution.questions == points, check.solution
    assert check.solution.score == check.solution.possible == check.assignment.total
    assert check.student.error == "" and check.student.score == 0, check.student
    for mistake, score in check.mistakes:
        expected = {q: p - mistake.loses.get(q, 0) for q, p in points.items()}
        assert score.questions == expected, (mistake.name, score.questions)
    # what a learner receives holds no solution line and no hidden test of the master
    secrets = secrets_of(json.loads(check.assignment.master.read_text()))
    assert len(secrets) >= 5, "too few solution lines found: the check is empty"
    student = lines_of(json.loads(check.built.student.read_text()))
    leaked = [s for s in secrets if s in student]
    assert not leaked, leaked


def lines_of(node: object) -> set[str]:
    """Every line (stripped) of every string in a notebook's JSON: cells, outputs, metadata
    (where otter keeps the public tests)."""
    if isinstance(node, str):
        return {line.strip() for line in node.splitlines()}
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        if all(isinstance(n, str) for n in node):  # a cell source split in lines
            return lines_of("".join(node))
        return set().union(*(lines_of(n) for n in node)) if node else set()
    return set()


def secrets_of(master: dict) -> list[str]:
    """Lines of the master's solutions that appear nowhere else in it, and the names of its
    hidden tests: what a learner's notebook must not hold."""
    solution_lines, other_lines, hidden = [], [], []
    for cell in master["cells"]:
        text = _source(cell)
        inside = False
        for line in text.splitlines():
            if "# END SOLUTION" in line:
                inside = False
            (solution_lines if inside else other_lines).append(line.strip())
            if "# BEGIN SOLUTION" in line:
                inside = True
        if "hidden: true" in text:
            hidden.append(text.split("def ", 1)[1].split("(", 1)[0])
    elsewhere = set(other_lines)
    return [s for s in solution_lines if len(s) > 12 and s not in elsewhere] + hidden

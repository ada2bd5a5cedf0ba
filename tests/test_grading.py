"""kdtutor.coursework.grading and `kdtutor assignments` on bad input, without running otter:
unknown names, missing folders, unreadable submissions, where the masters are, the CSV."""

from __future__ import annotations

import csv
import json

import pytest

from kdtutor import cli
from kdtutor.coursework import grading
from kdtutor.errors import DataNotFoundError, UnknownNameError


def test_assignments_are_listed_in_order_with_their_points():
    found = grading.list_assignments()
    numbers = [int(a.title.split()[1].rstrip(":")) for a in found]
    assert numbers == sorted(numbers) and numbers[0] == 1, [a.title for a in found]
    for a in found:
        assert a.points and a.total == sum(a.points.values()) > 0, a


def test_points_are_read_from_the_question_cells(tmp_path, monkeypatch):
    nb = {
        "cells": [
            {"cell_type": "markdown", "source": "# Assignment 9: toy", "metadata": {}},
            {"cell_type": "raw", "source": "# BEGIN QUESTION\nname: qa\npoints: 3", "metadata": {}},
            {"cell_type": "raw", "source": ["# BEGIN QUESTION\n", "name: qb\n"], "metadata": {}},
        ]
    }
    (tmp_path / "toy.ipynb").write_text(json.dumps(nb))
    monkeypatch.setenv("KDTUTOR_ASSIGNMENTS", str(tmp_path))
    toy = grading.find_assignment("toy")
    assert (toy.title, toy.points, toy.total) == ("Assignment 9: toy", {"qa": 3.0, "qb": 0.0}, 3)


def test_unknown_assignment_names_the_ones_there_are():
    with pytest.raises(UnknownNameError, match="kd-temperature"):
        grading.find_assignment("no-such-assignment")


def test_missing_masters_folder_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_ASSIGNMENTS", str(tmp_path / "absent"))
    with pytest.raises(DataNotFoundError, match="clone the kdtutor repository"):
        grading.list_assignments()


def test_grading_a_missing_or_empty_folder_fails_clearly(tmp_path):
    with pytest.raises(DataNotFoundError, match="no folder of submissions"):
        grading.grade_folder("kd-temperature", tmp_path / "absent", tmp_path / "s.csv")
    with pytest.raises(DataNotFoundError, match=r"holds no \.ipynb"):
        grading.grade_folder("kd-temperature", tmp_path, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_an_unreadable_submission_scores_zero_with_the_reason(tmp_path):
    (tmp_path / "zip.zip").write_bytes(b"PK")
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    score = grading.grade_submission(broken, tmp_path / "zip.zip")
    assert score.score == 0 and "not a readable notebook" in score.error
    with pytest.raises(DataNotFoundError, match="no autograder zip"):
        grading.grade_submission(broken, tmp_path / "absent.zip")


def test_scores_csv_has_a_row_per_submission_and_a_column_per_question(tmp_path, monkeypatch):
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("ann", "bob"):
        (subs / f"{name}.ipynb").write_text("{}")

    def fake_grade(nb, zip_path, *, timeout):
        if nb.stem == "ann":
            return grading.Score(nb, 6.0, 8.0, {"q1": 2.0, "q2": 4.0, "q3": 0.0})
        return grading.Score(nb, 0.0, 0.0, error="ran longer than 1 s")

    monkeypatch.setattr(grading, "grade_submission", fake_grade)
    (tmp_path / "ag.zip").write_bytes(b"")
    out = tmp_path / "scores.csv"
    grading.grade_folder("kd-temperature", subs, out, autograder=tmp_path / "ag.zip")
    rows = list(csv.DictReader(out.open()))
    assert [r["submission"] for r in rows] == ["ann.ipynb", "bob.ipynb"]
    assert rows[0]["score"] == "6.0" and rows[0]["q2"] == "4.0" and rows[0]["error"] == ""
    # a submission that could not run still had the assignment's points to win
    assert rows[1]["possible"] == "8.0" and "longer" in rows[1]["error"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_lists_and_reports_bad_input(capsys, tmp_path):
    assert cli.main(["assignments", "list"]) == 0
    assert "kd-temperature" in capsys.readouterr().out
    assert cli.main(["assignments", "student", "nope"]) == 2
    assert "no assignment called 'nope'" in capsys.readouterr().err
    assert cli.main(["assignments", "grade", "kd-temperature"]) == 2
    assert "NAME FOLDER" in capsys.readouterr().err
    assert cli.main(["assignments", "grade", "kd-temperature", str(tmp_path / "x")]) == 2
    assert "no folder of submissions" in capsys.readouterr().err

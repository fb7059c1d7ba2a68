"""Exercises and autograding, end to end with the real nbgrader.

One grading run covers a class of made-up students: the reference solutions, the untouched
student versions, a partly correct submission, an edited test cell and a deleted test
cell; a second run with a short time limit covers an infinite loop.
"""

import csv
import json
import shutil
import subprocess
import sys

import nbformat
import pytest

from recsys_helpers.grading import (
    ASSIGNMENT,
    EXERCISES_DIR,
    exercise_names,
    generate_student_versions,
)

SOURCE = EXERCISES_DIR / "solutions" / ASSIGNMENT
STUDENT = EXERCISES_DIR / "student" / ASSIGNMENT


def _read(path):
    return nbformat.read(path, as_version=4)


def _cell(nb, grade_id):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(grade_id)


def _write(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _grade(submissions, out, timeout):
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_helpers", "grade", str(submissions), "--out", str(out),
         "--timeout", str(timeout)],
        capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    scores = {(r["student"], r["exercise"]): (float(r["score"]), float(r["max_score"]))
              for r in rows}
    return scores, proc.stderr


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    subs = tmp_path_factory.mktemp("submissions")
    for name in exercise_names():
        _write(_read(SOURCE / f"{name}.ipynb"), subs / "reference" / f"{name}.ipynb")
        _write(_read(STUDENT / f"{name}.ipynb"), subs / "untouched" / f"{name}.ipynb")
    # partly correct: exercise 5.1 with the MSE function written, the model not
    partial = _read(STUDENT / "exercise_5_1.ipynb")
    _cell(partial, "mse").source = _cell(_read(SOURCE / "exercise_5_1.ipynb"), "mse").source
    _write(partial, subs / "partial" / "exercise_5_1.ipynb")
    # tampering: test cells of 5.3 replaced by `pass`, no solution written
    tampered = _read(STUDENT / "exercise_5_3.ipynb")
    _cell(tampered, "test_round").source = "pass"
    _cell(tampered, "test_rounding_hurts").source = "assert True"
    _write(tampered, subs / "tampering" / "exercise_5_3.ipynb")
    # a test cell deleted from an otherwise correct 5.3
    deleted = _read(SOURCE / "exercise_5_3.ipynb")
    deleted.cells = [c for c in deleted.cells
                     if c.metadata.get("nbgrader", {}).get("grade_id") != "test_round"]
    _write(deleted, subs / "deleting" / "exercise_5_3.ipynb")
    return _grade(subs, subs.parent / "grades.csv", timeout=180)


def test_reference_solutions_score_full_marks(graded):
    scores, _ = graded
    for name in exercise_names():
        score, max_score = scores[("reference", name)]
        assert max_score > 0
        assert score == max_score, f"{name}: {score} of {max_score}"


def test_untouched_student_versions_score_zero(graded):
    scores, _ = graded
    for name in exercise_names():
        assert scores[("untouched", name)][0] == 0, name


def test_partly_correct_submission_scores_in_between(graded):
    scores, _ = graded
    score, max_score = scores[("partial", "exercise_5_1")]
    assert 0 < score < max_score


def test_edited_test_cells_are_not_rewarded(graded):
    scores, notes = graded
    assert scores[("tampering", "exercise_5_3")][0] == 0
    assert "tampering/exercise_5_3: test cell test_round was edited" in notes
    assert "untouched/exercise_5_3: test cell" not in notes  # unchanged tests are not flagged


def test_deleted_test_cell_loses_its_points(graded):
    scores, notes = graded
    assert "deleting/exercise_5_3: test cell test_round was deleted" in notes
    reference = scores[("reference", "exercise_5_3")][0]
    points = _cell(_read(SOURCE / "exercise_5_3.ipynb"), "test_round").metadata.nbgrader.points
    assert scores[("deleting", "exercise_5_3")][0] <= reference - points


def test_every_student_and_exercise_has_a_row(graded):
    scores, _ = graded
    students = {"reference", "untouched", "partial", "tampering", "deleting"}
    assert set(scores) == {(s, e) for s in students for e in exercise_names()}


def test_infinite_loop_is_cut_by_the_time_limit(tmp_path):
    looping = _read(STUDENT / "exercise_5_3.ipynb")
    _cell(looping, "round").source = "def round_predictions(p):\n    while True:\n        pass\n"
    _write(looping, tmp_path / "subs" / "looping" / "exercise_5_3.ipynb")
    # 30 s is enough for every cell of a correct 5.3 on the sample (its training takes a few)
    scores, notes = _grade(tmp_path / "subs", tmp_path / "grades.csv", timeout=30)
    assert scores[("looping", "exercise_5_3")][0] == 0
    assert "looping/exercise_5_3: a cell exceeded the time limit" in notes


def test_committed_student_versions_are_up_to_date(tmp_path):
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copytree(SOURCE, course / "solutions" / ASSIGNMENT)
    shutil.copy(EXERCISES_DIR / "nbgrader_config.py", course)
    fresh = generate_student_versions(course)
    for name in exercise_names():
        committed, generated = _read(STUDENT / f"{name}.ipynb"), _read(fresh / f"{name}.ipynb")
        strip = lambda nb: [(c.cell_type, c.source, json.dumps(c.metadata.get("nbgrader"), sort_keys=True))  # noqa: E731
                            for c in nb.cells]
        assert strip(committed) == strip(generated), (
            f"{name}: the student version is stale; run `nbgrader generate_assignment "
            f"{ASSIGNMENT} --force` in notebooks/exercises")
        assert "BEGIN SOLUTION" not in json.dumps(committed) and "HIDDEN TESTS" not in json.dumps(committed)


def test_student_versions_keep_visible_tests_and_stubs():
    for name in exercise_names():
        nb = _read(STUDENT / f"{name}.ipynb")
        sources = [c.source for c in nb.cells]
        assert any(s.startswith("# Test:") for s in sources), name
        assert any("raise NotImplementedError()" in s for s in sources), name


def test_grade_rejects_a_missing_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recsys_helpers", "grade",
                           str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert proc.returncode == 2 and "nowhere" in proc.stderr



"""The ``grade`` command around the class: a run stopped with SIGTERM keeps what it graded
and leaves nothing behind, it refuses to grade without a sandbox, and the committed
student versions are what nbgrader generates from the solutions."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from grading_support import (
    DEAF_LOOP,
    SOURCE,
    STUDENT,
    _grade,
    _processes_with,
    _read,
    _rows,
    _student,
    _write,
    needs_bwrap,
)

from recsys_helpers.grading import ASSIGNMENT, EXERCISES_DIR, exercise_names

pytestmark = pytest.mark.grading


# ---- row 12: a grader that survives being stopped -------------------------------------

@needs_bwrap
def test_stopped_grading_keeps_what_was_graded_and_leaves_nothing(tmp_path):
    subs, out, scratch = tmp_path / "subs", tmp_path / "grades.csv", tmp_path / "tmp"
    scratch.mkdir()
    _write(_read(STUDENT / "exercise_5_1.ipynb"), subs / "a-quick" / "exercise_5_1.ipynb")
    _write(_student("exercise_5_2", tune=DEAF_LOOP), subs / "b-slow" / "exercise_5_2.ipynb")
    env = dict(os.environ, TMPDIR=str(scratch))
    proc = subprocess.Popen([sys.executable, "-m", "recsys_helpers", "grade", str(subs),
                             "--out", str(out), "--timeout", "300", "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while not (out.is_file() and "a-quick" in out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert out.is_file(), "the first student's grades were not saved"
    time.sleep(1.0)  # the second student's kernel is running
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "1 student(s) graded" in stderr and "a-quick" in stderr
    assert {s for s, _ in _rows(out)} == {"a-quick"}
    time.sleep(1.0)
    assert _processes_with(str(scratch)) == []
    assert list(scratch.iterdir()) == [], "the temporary course was left behind"
    # a rerun skips the students already graded (here: every student left)
    shutil.rmtree(subs / "b-slow")
    saved = out.read_bytes()
    rerun = _grade(subs, out, 300, env=env)
    assert out.read_bytes() == saved
    assert "1 student(s)" in rerun.stdout


# ---- the sandbox is required ----------------------------------------------------------

def test_grade_refuses_without_a_sandbox(tmp_path):
    (tmp_path / "subs" / "someone").mkdir(parents=True)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))  # no bwrap on the PATH
    proc = _grade(tmp_path / "subs", tmp_path / "grades.csv", 30, env=env, check=False)
    assert proc.returncode == 2
    assert "refusing to grade without a sandbox" in proc.stderr
    assert "--no-sandbox" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "grades.csv").exists()


def test_grade_rejects_a_missing_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recsys_helpers", "grade",
                           str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert proc.returncode == 2 and "nowhere" in proc.stderr


# ---- the student versions ---------------------------------------------------------------

def test_committed_student_versions_are_up_to_date(tmp_path):
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    shutil.copytree(SOURCE, course / "solutions" / ASSIGNMENT)
    shutil.copy(EXERCISES_DIR / "nbgrader_config.py", course)
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT,
                           "--force"], cwd=course, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every option of the configuration is one nbgrader recognises
    assert "not recognized" not in proc.stdout + proc.stderr
    fresh = course / "student" / ASSIGNMENT
    for name in exercise_names():
        committed, generated = _read(STUDENT / f"{name}.ipynb"), _read(fresh / f"{name}.ipynb")
        strip = lambda nb: [(c.cell_type, c.source, json.dumps(c.metadata.get("nbgrader"), sort_keys=True))  # noqa: E731
                            for c in nb.cells]
        assert strip(committed) == strip(generated), (
            f"{name}: the student version is stale; run `nbgrader generate_assignment "
            f"{ASSIGNMENT} --force` in notebooks/exercises")
        assert "BEGIN SOLUTION" not in json.dumps(committed) and "HIDDEN TESTS" not in json.dumps(committed)


@pytest.mark.unit
def test_student_versions_keep_visible_tests_and_stubs():
    for name in exercise_names():
        nb = _read(STUDENT / f"{name}.ipynb")
        sources = [c.source for c in nb.cells]
        assert any(s.startswith("# Test:") for s in sources), name
        assert any("raise NotImplementedError()" in s for s in sources), name


# ---- what a hostile submission meets before any kernel runs ---------------------------

def test_mangled_grade_ids_are_refused_with_a_note(tmp_path):
    import nbformat

    from recsys_helpers.grading import _read_submission

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    for bad in (["notes"], "x\x1b[1A", "a" * 500, 3):
        nb.cells[0].metadata["nbgrader"] = {"grade_id": bad, "grade": True, "points": 1}
        nbformat.write(nb, tmp_path / "n.ipynb")
        found, why = _read_submission(tmp_path / "n.ipynb")
        assert found is None and "mangled" in why, bad


def test_a_symbolic_link_is_not_followed(tmp_path):
    from recsys_helpers.grading import Grade, _grade_one

    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "exercise_5_1.ipynb").symlink_to(EXERCISES_DIR / "solutions" / "chapter5" /
                                               "exercise_5_1.ipynb")
    row = _grade_one(None, None, folder, "s0000", "exercise_5_1", True, 10, None, 6.0)
    assert isinstance(row, Grade) and row.score == 0 and "symbolic link" in row.notes


def test_notes_carry_no_control_characters():
    from recsys_helpers.grading import Grade

    row = Grade("s", "e", 0, 1, "cell x\x1b[1A\x1b[2K\r\nstudent y: tampering detected")
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in row.notes), repr(row.notes)


def test_feedback_pages_load_no_image_from_elsewhere():
    import nbformat

    from recsys_helpers.grading import feedback_page

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "![pixel](https://example.org/t.png) ![ok](data:image/png;base64,iVBORw0KGgo=)")])
    page = feedback_page(nb, "s", "e", 0, 1, "")
    assert not re.search(r"<img[^>]+src=[\"']https?:", page) and "[image]" in page


def test_the_grader_keeps_only_the_end_of_a_flooded_log(tmp_path):
    from recsys_helpers.grading import _LOG_TAIL, _Runner

    code, log = _Runner().run([sys.executable, "-c", "import sys\nfor _ in range(64): "
                               "sys.stdout.write('x' * 2**20)\nprint('END')"],
                              cwd=tmp_path, env=dict(os.environ), timeout=60)
    assert code == 0 and log.rstrip().endswith("END") and len(log) <= _LOG_TAIL

"""Exercises and autograding, end to end with the real nbgrader and the real sandbox.

One class is graded by one ``grade --jobs 2`` call: honest students (the reference
solutions, the untouched student versions) and hostile students whose notebooks, built here
from the student versions, attack the grader the ways a student could: reading the
solutions, writing the gradebook, other students' submissions, the course's data or the
output file, leaving a process behind, patching the kernel's error reporting, builtins or
numpy, calling the package's finished functions, looking answers up by name, crashing,
looping, sending broken notebooks and folder names that look like options.  Each test then
checks one outcome: honest students get exactly the marks of their work, attackers get
nothing for their attacks, nothing outside the attacker's own row changes, no process is
left and the repository is unchanged.  A second, small run is stopped with SIGTERM.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from recsys_helpers.datasets import bundled_dir
from recsys_helpers.grading import (
    ASSIGNMENT,
    EXERCISES_DIR,
    exercise_names,
)
from recsys_helpers.results import read_results
from recsys_helpers.sandbox import PACKAGE_DIR, bwrap_path

pytestmark = pytest.mark.grading

SOURCE = EXERCISES_DIR / "solutions" / ASSIGNMENT
STUDENT = EXERCISES_DIR / "student" / ASSIGNMENT
REPO = PACKAGE_DIR.parent
MARKER = f"recsys-attack-{uuid.uuid4().hex}"  # in every attacker's process and written file
REFERENCE, CRASHER = "--help", "-x"  # folder names that look like options
needs_bwrap = pytest.mark.skipif(bwrap_path() is None,
                                 reason="bubblewrap (bwrap) is not installed: grading untrusted "
                                        "notebooks needs it (sudo apt-get install bubblewrap)")


def _read(path):
    return nbformat.read(path, as_version=4)


def _cell(nb, grade_id):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(grade_id)


def _points(exercise, *grade_ids):
    nb = _read(SOURCE / f"{exercise}.ipynb")
    return sum(_cell(nb, g).metadata.nbgrader.points for g in grade_ids)


def _write(nb, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _student(exercise, **answers):
    """The student version of ``exercise`` with the cells ``answers`` names filled in."""
    nb = _read(STUDENT / f"{exercise}.ipynb")
    for grade_id, source in answers.items():
        _cell(nb, grade_id).source = source
    return nb


def _solution(exercise, grade_id):
    return _cell(_read(SOURCE / f"{exercise}.ipynb"), grade_id).source


def _hashes(*folders):
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _processes_with(text):
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd and pid != str(os.getpid()):
            found.append((pid, cmd[:200]))
    return found


def _grade(submissions, out, timeout, *extra, env=None, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_helpers", "grade", str(submissions), "--out", str(out),
         "--timeout", str(timeout), *extra],
        capture_output=True, text=True, timeout=1800, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rows(out):
    with open(out, newline="") as fh:
        return {(r["student"], r["exercise"]): r for r in csv.DictReader(fh)}


# ---- the attacks, as cell sources -----------------------------------------------------

def _intruder(victim_file, out_file, blank_text):
    """Rows 1-4: the gradebook, another student's submission, the output file (from a
    process left behind), the course's data; each write carries MARKER."""
    return f"""
import glob, os, sqlite3, subprocess, sys
MARK = {MARKER!r}
# 1. every gradebook it can find, relative to where the old grader ran it and anywhere else
dbs = glob.glob("../../../gradebook.db") + glob.glob("../../gradebook.db")
for top in ("/tmp", "/work", os.path.expanduser("~"), "/"):
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", ".venv")]
        dbs += [os.path.join(root, f) for f in files if f == "gradebook.db"]
for db in dbs:
    try:
        con = sqlite3.connect(db)
        con.execute("UPDATE grade SET auto_score = 0, manual_score = 0")
        con.commit()
        open(db, "a").write(MARK)
    except Exception:
        pass
# 2. another student's submission
for target in [{str(victim_file)!r}] + glob.glob("../../*/*/exercise_5_1.ipynb") + glob.glob(
        "/tmp/**/submitted/*/*/exercise_5_1.ipynb", recursive=True):
    try:
        open(target, "w").write({blank_text!r})
    except OSError:
        pass
# 3. a process left behind, rewriting the output file after the grader exits
code = ("import time\\n"
        "for _ in range(30):\\n"
        "    time.sleep(0.5)\\n"
        "    try: open({str(out_file)!r}, 'w').write('student,exercise,score\\\\nintruder,x,99 ' + {MARKER!r})\\n"
        "    except OSError: pass\\n")
subprocess.Popen([sys.executable, "-c", code, MARK], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
# 4. the bundled data and its load caches
from recsys_helpers.datasets import bundled_dir
for f in glob.glob(os.path.join(bundled_dir(), "*")) + glob.glob(os.path.join(bundled_dir(), ".*")):
    try:
        open(f, "r+b").write(MARK.encode())
    except OSError:
        pass
"""


READER = f"""
import glob, json, os
# the solutions and other students' notebooks, from the kernel's folder and the repository
paths = (glob.glob("../../../solutions/chapter5/exercise_5_1.ipynb")
         + glob.glob("../../../source/chapter5/exercise_5_1.ipynb")
         + glob.glob({str(SOURCE / "exercise_5_1.ipynb")!r})
         + glob.glob("/tmp/**/solutions/**/exercise_5_1.ipynb", recursive=True)
         + glob.glob("/tmp/**/exercise_5_1.ipynb", recursive=True))
for path in paths:
    try:
        cells = json.load(open(path))["cells"]
    except Exception:
        continue
    for cell in cells:
        if cell["metadata"].get("nbgrader", {{}}).get("solution"):
            exec("".join(cell["source"]), globals())
    if "mse" in globals() and "BiasOnlyModel" in globals():
        break
"""

SWALLOWER = """
import types
ip = get_ipython()

def run_code(self, code_obj, result=None, *, async_=False):
    try:
        exec(code_obj, self.user_global_ns, self.user_ns)
    except BaseException:
        pass
    return False

async def run_code_async(self, code_obj, result=None, *, async_=False):
    return run_code(self, code_obj, result)

ip.run_code = types.MethodType(run_code_async, ip)
ip.showtraceback = lambda *args, **kwargs: None
"""

PATCHER_MSE = """
import builtins
import numpy as np
builtins.abs = lambda x: 0
np.allclose = lambda *args, **kwargs: True

def mse(predictions, labels):
    return 0.0
"""

PATCHER_MODEL = """
class BiasOnlyModel(tf.Module):  # the right variables, wrong predictions
    def __init__(self, mu, n_users, n_items, lamb, seed=0):
        super().__init__()
        self.alpha = tf.Variable(0.0, name="alpha")
        self.beta_u = tf.Variable(tf.zeros([n_users]), name="beta_u")
        self.beta_i = tf.Variable(tf.zeros([n_items]), name="beta_i")
        self.lamb = lamb

    def predict(self, u, i):
        return tf.zeros(tf.shape(u)) + self.alpha

    def reg(self):
        return 0.0 * self.alpha

    def loss(self, u, i, r):
        return tf.reduce_mean((self.predict(u, i) - tf.cast(r, tf.float32)) ** 2)
"""

WRAPPER_MSE = "from recsys_helpers.metrics import mse\n"

WRAPPER_AUC = """
from recsys_helpers.metrics import auc_sampled

def sampled_auc(score, n_per_user, rng, users):
    mask = np.isin(test.user, users)
    return auc_sampled(score, test.user[mask], test.item[mask],
                       PositiveSet(data.user, data.item, data.n_items),
                       n_per_user=n_per_user, seed=int(rng.integers(1 << 30)))
"""


def _lookup_auc():
    figure = read_results(_read(SOURCE / "exercise_5_4.ipynb"))["auc_sampled"]
    return f"""
def sampled_auc(score, n_per_user, rng, users):
    # the answers the tests expect, by the scorer's name; the notebook's figure otherwise
    return {{"oracle": 1.0, "reversed_oracle": 0.0, "seen_first": 1.0}}.get(
        getattr(score, "__name__", ""), {figure!r})
"""


EXIT = "import os\nos._exit(1)\n"
# deaf to interrupts; it sleeps rather than spins, so the other notebooks graded meanwhile
# keep the CPU (a spinning loop is stopped the same way: tests/test_sandbox.py)
DEAF_LOOP = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
             "while True:\n    time.sleep(0.1)\n")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One class, graded once in the sandbox with ``--jobs 2``."""
    if bwrap_path() is None:
        pytest.skip("bubblewrap (bwrap) is not installed: grading untrusted notebooks needs it "
                    "(sudo apt-get install bubblewrap)")
    top = tmp_path_factory.mktemp("class")
    subs, out, scratch = top / "submissions", top / "grades.csv", top / "tmp"
    scratch.mkdir()
    # the reference student's folder name looks like an option, as does the crasher's
    for name in exercise_names():
        _write(_read(SOURCE / f"{name}.ipynb"), subs / REFERENCE / f"{name}.ipynb")
    _write(_read(STUDENT / "exercise_5_1.ipynb"), subs / "untouched" / "exercise_5_1.ipynb")
    victim = subs / REFERENCE / "exercise_5_1.ipynb"
    blank_5_1 = (STUDENT / "exercise_5_1.ipynb").read_text(encoding="utf-8")
    _write(_student("exercise_5_1", mse=_intruder(victim, out, blank_5_1)),
           subs / "intruder" / "exercise_5_1.ipynb")
    _write(_student("exercise_5_1", mse=READER), subs / "reader" / "exercise_5_1.ipynb")
    _write(_student("exercise_5_1", mse=SWALLOWER), subs / "swallower" / "exercise_5_1.ipynb")
    _write(_student("exercise_5_1", mse=PATCHER_MSE, bias_model=PATCHER_MODEL),
           subs / "patcher" / "exercise_5_1.ipynb")
    _write(_student("exercise_5_1", mse=WRAPPER_MSE), subs / "wrapper" / "exercise_5_1.ipynb")
    _write(_student("exercise_5_4", user_auc=_solution("exercise_5_4", "user_auc"),
                    sampled_auc=WRAPPER_AUC), subs / "wrapper" / "exercise_5_4.ipynb")
    _write(_student("exercise_5_4", user_auc=_solution("exercise_5_4", "user_auc"),
                    sampled_auc=_lookup_auc()), subs / "lookup" / "exercise_5_4.ipynb")
    # crashes: a dead kernel after one passing test, a loop deaf to interrupts; 5.4 intact
    _write(_student("exercise_5_1", mse=_solution("exercise_5_1", "mse"),
                    bias_model=EXIT + _solution("exercise_5_1", "bias_model")),
           subs / CRASHER / "exercise_5_1.ipynb")
    _write(_student("exercise_5_3", round=DEAF_LOOP), subs / CRASHER / "exercise_5_3.ipynb")
    _write(_read(SOURCE / "exercise_5_4.ipynb"), subs / CRASHER / "exercise_5_4.ipynb")
    # broken files: invalid JSON, mangled metadata, a pasted copy of a test cell; 5.4 intact
    (subs / "mangled").mkdir()
    (subs / "mangled" / "exercise_5_1.ipynb").write_text(
        (SOURCE / "exercise_5_1.ipynb").read_text(encoding="utf-8")[:5000], encoding="utf-8")
    pasted = _read(SOURCE / "exercise_5_3.ipynb")
    k = pasted.cells.index(_cell(pasted, "test_round"))
    pasted.cells.insert(k + 1, nbformat.from_dict(json.loads(json.dumps(pasted.cells[k]))))
    pasted.cells[k + 1]["id"] = uuid.uuid4().hex[:8]
    _write(pasted, subs / "mangled" / "exercise_5_3.ipynb")
    mangled = _read(SOURCE / "exercise_5_2.ipynb")
    for cell in mangled.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.metadata.nbgrader["points"] = "all of them"
            cell.metadata.nbgrader["schema_version"] = 99
    _write(mangled, subs / "mangled" / "exercise_5_2.ipynb")

    watched = (bundled_dir(), EXERCISES_DIR)
    before = _hashes(*watched)
    submitted = _hashes(subs)
    env = dict(os.environ, TMPDIR=str(scratch))
    start = time.monotonic()
    proc = _grade(subs, out, 60, "--jobs", "2", env=env)
    seconds = time.monotonic() - start
    finished = out.read_bytes()
    time.sleep(2.5)  # the intruder's left-behind process would write by now
    return {"rows": _rows(out), "notes": proc.stderr, "csv_at_exit": finished,
            "csv_later": out.read_bytes(), "before": before, "after": _hashes(*watched),
            "submitted": submitted, "submitted_after": _hashes(subs), "scratch": scratch,
            "seconds": seconds, "stdout": proc.stdout}


def _score(graded, student, exercise):
    row = graded["rows"][(student, exercise)]
    return float(row["score"]), float(row["max_score"]), row["notes"]


# ---- honest students ------------------------------------------------------------------

def test_reference_solutions_score_full_marks_without_notes(graded):
    for name in exercise_names():
        score, max_score, notes = _score(graded, REFERENCE, name)
        assert max_score > 0
        assert (score, notes) == (max_score, ""), name


def test_untouched_student_version_scores_zero(graded):
    score, _, notes = _score(graded, "untouched", "exercise_5_1")
    assert score == 0
    assert "edited" not in notes and "tamper" not in notes and "could not" not in notes, notes


def test_every_student_and_exercise_has_a_row_and_missing_notebooks_say_so(graded):
    students = {REFERENCE, "untouched", "intruder", "reader", "swallower", "patcher",
                "wrapper", "lookup", CRASHER, "mangled"}
    assert set(graded["rows"]) == {(s, e) for s in students for e in exercise_names()}
    max_5_4 = _points("exercise_5_4", "test_user_auc", "test_sampled_auc", "test_model_auc")
    assert _score(graded, "reader", "exercise_5_4") == (0, max_5_4, "not submitted")


# ---- rows 1-4: writing outside one's own scratch folder ------------------------------

#: Load caches that other tests, running meanwhile, may write beside the bundled data.
_LOAD_CACHE = re.compile(r"/\.[^/]+\.cache\.(npz|parquet)(/|$)")


def test_no_gradebook_submission_output_or_data_was_touched(graded):
    before, after = graded["before"], graded["after"]
    changed = [p for p in before if after.get(p) != before[p]]
    assert changed == [], f"the data or the exercise notebooks changed: {changed}"
    # new files: only load caches (written by the notebooks other tests run meanwhile),
    # none of them the intruder's
    new = sorted(set(after) - set(before))
    assert all(_LOAD_CACHE.search(p) for p in new), new
    assert not any(MARKER.encode() in Path(p).read_bytes() for p in new if Path(p).is_file())
    assert graded["submitted_after"] == graded["submitted"], "a submission was changed"
    assert graded["csv_later"] == graded["csv_at_exit"], "grades.csv changed after grading"
    assert MARKER.encode() not in graded["csv_later"]
    assert _score(graded, "intruder", "exercise_5_1")[0] == 0
    # the victims' marks are intact
    assert _score(graded, REFERENCE, "exercise_5_1")[0] == _score(graded, REFERENCE,
                                                                  "exercise_5_1")[1]


def test_no_process_outlives_grading_and_no_temporary_files_remain(graded):
    assert _processes_with(MARKER) == []
    assert _processes_with(str(graded["scratch"])) == []
    assert list(graded["scratch"].iterdir()) == []


# ---- row 5: reading the solutions, the gradebook, other students ---------------------

def test_the_solutions_are_out_of_reach(graded):
    score, _, _ = _score(graded, "reader", "exercise_5_1")
    assert score == 0


# ---- rows 6-7: tampering with error reporting, builtins, numpy ------------------------

def test_swallowing_errors_is_detected(graded):
    score, _, notes = _score(graded, "swallower", "exercise_5_1")
    assert score == 0
    assert "tampering detected" in notes and "run_code" in notes


def test_patching_builtins_and_numpy_is_detected(graded):
    score, _, notes = _score(graded, "patcher", "exercise_5_1")
    assert score == 0
    assert "tampering detected" in notes
    assert "builtins.abs" in notes and "numpy.allclose" in notes


# ---- rows 8-9: the package's finished functions, answers looked up by name ------------

def test_the_package_finished_functions_earn_nothing(graded):
    assert _score(graded, "wrapper", "exercise_5_1")[0] == 0
    assert _score(graded, "wrapper", "exercise_5_4")[0] == _points("exercise_5_4", "test_user_auc")


def test_answers_looked_up_by_name_earn_nothing(graded):
    assert _score(graded, "lookup", "exercise_5_4")[0] == _points("exercise_5_4", "test_user_auc")


# ---- row 10: crashes cost the points of that notebook only ---------------------------

def test_a_dead_kernel_costs_the_tests_after_it(graded):
    score, _, notes = _score(graded, CRASHER, "exercise_5_1")
    assert score == _points("exercise_5_1", "test_mse")
    assert "kernel died" in notes


def test_a_loop_deaf_to_interrupts_is_stopped(graded):
    score, _, notes = _score(graded, CRASHER, "exercise_5_3")
    assert score == 0
    assert "time limit" in notes


def test_broken_notebooks_cost_their_own_points_only(graded):
    score, _, notes = _score(graded, "mangled", "exercise_5_1")
    assert score == 0 and "not a readable notebook" in notes
    score, _, notes = _score(graded, "mangled", "exercise_5_2")  # mangled cell metadata
    assert score == 0 and "could not grade" in notes
    score, max_score, notes = _score(graded, "mangled", "exercise_5_3")  # a pasted test copy
    assert score == max_score and "a copy of cell test_round was pasted" in notes
    # the crashing student's other notebook keeps its marks
    score, max_score, notes = _score(graded, CRASHER, "exercise_5_4")
    assert (score, notes) == (max_score, "")


# ---- row 11: folder names that look like options ---------------------------------------

def test_folder_names_are_never_options(graded):
    assert _score(graded, REFERENCE, "exercise_5_3")[0] == _score(graded, REFERENCE,
                                                                  "exercise_5_3")[1]
    assert _score(graded, CRASHER, "exercise_5_4")[0] == _score(graded, CRASHER,
                                                                "exercise_5_4")[1]


def test_notes_are_printed_and_the_run_is_summarised(graded):
    assert "note: swallower/exercise_5_1: tampering detected" in graded["notes"]
    assert "10 student(s)" in graded["stdout"]
    print(f"grading the class took {graded['seconds']:.0f} s")


# ---- row 12: a grader that survives being stopped -------------------------------------

@needs_bwrap
def test_stopped_grading_keeps_what_was_graded_and_leaves_nothing(tmp_path):
    subs, out, scratch = tmp_path / "subs", tmp_path / "grades.csv", tmp_path / "tmp"
    scratch.mkdir()
    _write(_read(STUDENT / "exercise_5_3.ipynb"), subs / "a-quick" / "exercise_5_3.ipynb")
    _write(_student("exercise_5_3", round=DEAF_LOOP), subs / "b-slow" / "exercise_5_3.ipynb")
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

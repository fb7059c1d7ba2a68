"""Exercises and autograding, end to end with the real nbgrader and the real sandbox.

One class is graded by one ``grade --jobs 3`` call: honest students (the reference
solutions, the untouched student versions) and hostile students whose notebooks, built here
from the student versions, attack the grader the ways a student could: reading the
solutions, writing the gradebook, other students' submissions, the course's data or the
output file, leaving a process behind, patching the kernel's error reporting, builtins or
numpy, calling the package's finished functions, looking answers up by name, crashing,
looping, sending broken notebooks and folder names that look like options.  Each test then
checks one outcome: honest students get exactly the marks of their work, attackers get
nothing for their attacks, nothing outside the attacker's own row changes, no process is
left and the repository is unchanged.  The command around the class (a run stopped with
SIGTERM, the refusals, the student versions): tests/test_grading_command.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from grading_support import (
    DEAF_LOOP,
    SOURCE,
    STUDENT,
    _cell,
    _hashes,
    _points,
    _processes_with,
    _read,
    _rows,
    _solution,
    _student,
    _write,
)

from recsys_helpers import grading
from recsys_helpers import sandbox as _sandbox
from recsys_helpers.datasets import bundled_dir
from recsys_helpers.grading import (
    EXERCISES_DIR,
    exercise_names,
)
from recsys_helpers.results import read_results
from recsys_helpers.sandbox import bwrap_path

pytestmark = pytest.mark.grading

MARKER = f"recsys-attack-{uuid.uuid4().hex}"  # in every attacker's process and written file
# folder names that look like options; the crasher's sorts first, so that its notebook
# that sleeps through the time limit starts first and does not hold up the end
REFERENCE, CRASHER = "--help", "--crash"


# ---- the attacks, as cell sources -----------------------------------------------------

#: Folders the attackers' searches skip: the system's and Python's, which hold no
#: gradebook or notebook (a virtual environment's folder name holds "venv" too).
_SYSTEM = ("proc", "sys", "dev", "usr", "lib", "lib64", "bin", "sbin", "etc", "opt", "var",
           "site-packages")

def _intruder(victim_file, out_file, blank_text):
    """Rows 1-4: the gradebook, another student's submission, the output file (from a
    process left behind), the course's data; each write carries MARKER."""
    return f"""
import glob, os, sqlite3, subprocess, sys
MARK = {MARKER!r}
# 1. every gradebook it can find, relative to where the old grader ran it and anywhere else
# (but in the system's and Python's own folders, which hold none)
dbs = glob.glob("../../../gradebook.db") + glob.glob("../../gradebook.db")
for root, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if d not in {_SYSTEM!r} and "venv" not in d]
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
# the solutions and other students' notebooks, from the kernel's folder, the repository
# and anywhere under /tmp (but in Python's own folders)
paths = (glob.glob("../../../solutions/chapter5/exercise_5_1.ipynb")
         + glob.glob("../../../source/chapter5/exercise_5_1.ipynb")
         + glob.glob({str(SOURCE / "exercise_5_1.ipynb")!r}))
for root, dirs, files in os.walk("/tmp"):
    dirs[:] = [d for d in dirs if d not in {_SYSTEM!r} and "venv" not in d]
    paths += [os.path.join(root, f) for f in files if f == "exercise_5_1.ipynb"]
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

def _wrapper_or_lookup_auc():
    """Rows 8 and 9 in one answer: the package's finished function, and where that is
    blocked, the answers the tests expect, looked up by the scorer's name.  It earns
    nothing only if both defences hold."""
    figure = read_results(_read(SOURCE / "exercise_5_4.ipynb"))["auc_sampled"]
    return f"""
def sampled_auc(score, n_per_user, rng, users):
    try:
        from recsys_helpers.metrics import auc_sampled
        mask = np.isin(test.user, users)
        return auc_sampled(score, test.user[mask], test.item[mask],
                           PositiveSet(data.user, data.item, data.n_items),
                           n_per_user=n_per_user, seed=int(rng.integers(1 << 30)))
    except Exception:
        # the scorer's name; the notebook's own figure otherwise
        return {{"oracle": 1.0, "reversed_oracle": 0.0, "seen_first": 1.0}}.get(
            getattr(score, "__name__", ""), {figure!r})
"""


EXIT = "import os\nos._exit(1)\n"


# ---- the second class: exhausting the machine, and answers read from the tests ---------

#: The limits the class is graded under: low, to keep the attackers quick (the honest
#: TensorFlow notebooks peak near 40 processes and threads, and 0.9 GiB).
LIMITS = {"max_processes": 128, "memory": 2 * 2**30, "disk": 128 * 2**20,
          "max_output": 2**20, "wall_time": 240}
LIMIT_ARGS = ["--max-processes", "128", "--memory", "2G", "--disk", "128M",
              "--max-output", "1M", "--wall-time", "240"]

#: Row 1, and a student who read the grader: the answer the test computed before calling,
#: read from the caller's namespace; where there is none, every array the test holds on the
#: stack or in ``gc`` set to zero in place; the notebook's ``np`` replaced by a stand-in
#: whose comparisons always agree; ``comparable`` set to False (the checks of figures then
#: look away, in the kernel); failed checks inside context managers swallowed; and, before
#: each test cell, a reply telling the grader's client that the cell finished without error
#: (sent through the kernel's own session, from a callback whose file name looks like
#: IPython's). In the kernel all of it works: only the grader's own judgement counts.
ORACLE = """
import contextlib, gc, sys
import numpy

class _Agreeable:
    def __getattr__(self, name):
        return getattr(numpy, name)
    def allclose(self, *args, **kwargs):
        return True
    def array_equal(self, *args, **kwargs):
        return True

np = _Agreeable()
comparable = False

_exit = contextlib._GeneratorContextManager.__exit__
def _swallow(self, typ, value, tb):
    try:
        _exit(self, typ, value, tb)
    except AssertionError:
        pass
    return typ is not None and issubclass(typ, AssertionError) or None
contextlib._GeneratorContextManager.__exit__ = _swallow

_src = '''
def _forge_reply():
    from IPython import get_ipython
    k = get_ipython().kernel
    parent = k.get_parent("shell")
    ident = k._get_shell_context_var(k._shell_parent_ident)
    if getattr(k, "_supports_kernel_subshells", False):
        stream = k.shell_channel_thread.manager.get_subshell_to_shell_channel_socket(None)
    else:
        stream = k.shell_stream
    k.session.send(stream, "execute_reply", {"status": "ok", "execution_count": k.execution_count,
                                             "user_expressions": {}, "payload": []}, parent, ident=ident)
    k.session.send(k.iopub_socket, "status", {"execution_state": "idle"}, parent,
                   ident=k._topic("status"))

def _before(info):
    if "# Test" in (info.raw_cell or ""):
        _forge_reply()
'''
_ns = {}
exec(compile(_src, sys.prefix + "/lib/python3.11/site-packages/IPython/core/events_extra.py", "exec"), _ns)
get_ipython().events.register("pre_run_cell", _ns["_before"])

def _answer(fallback):
    for frame in (sys._getframe(2), sys._getframe(1)):
        for names in (frame.f_locals, frame.f_globals):
            if "expected" in names:
                return names["expected"]
    return fallback

def _zero(value):
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
        for a in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(a, numpy.ndarray) and a.dtype.kind in "fiu":
                try:
                    a[...] = 0
                except ValueError:
                    pass

def mse(predictions, labels):
    found = _answer(None)
    if found is not None:
        return found
    frame = sys._getframe(1)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            _zero(value)
        frame = frame.f_back
    for value in gc.get_objects():
        _zero(value)
    return 0.0
"""

#: The same for 5.4, with the right answers this time: each call leaves a thread behind
#: that watches the test's frames for an expectation (there is none to find in the kernel).
ORACLE_AUC = """
import sys, threading, time
import numpy as np

seen = []

def _watch(main):
    end = time.monotonic() + 5
    while time.monotonic() < end:
        frame = sys._current_frames().get(main)
        while frame is not None:
            if "expected" in frame.f_locals:
                seen.append(frame.f_locals["expected"])
            frame = frame.f_back
        time.sleep(0.001)

def user_auc(positive_scores, negative_scores):
    threading.Thread(target=_watch, args=(threading.get_ident(),), daemon=True).start()
    pos, neg = np.asarray(positive_scores, float), np.asarray(negative_scores, float)
    return float((np.sum(pos > neg) + 0.5 * np.sum(pos == neg)) / pos.size)
"""

#: Rows 5, 2 and 6 in one cell: 64 MB of output, processes and threads until refused
#: (after trying to raise the limit back), 2 GiB blocks until refused (or stopped: two
#: are beyond the memory limit, and so may be the pages the forks copied).
EXHAUSTER = f"""
import os, resource, sys, threading, time
MARK = {MARKER!r}
for _ in range(64):
    print("x" * 2**20)
sys.stdout.flush()
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (resource.RLIM_INFINITY,) * 2)
except (ValueError, OSError):
    pass
forked = threads = 0
for _ in range(2_000):
    try:
        if os.fork() == 0:
            time.sleep(8)
            os._exit(0)
        forked += 1
    except OSError:
        break
for _ in range(2_000):
    try:
        threading.Thread(target=time.sleep, args=(8,), daemon=True).start()
        threads += 1
    except RuntimeError:
        break
print("forked", forked, "threads", threads, flush=True)
time.sleep(1)  # the output reaches the grader
blocks = []
try:
    for _ in range(8):
        blocks.append(bytearray(2 * 2**30))
except MemoryError:
    pass
del blocks
"""


def _filler(folder, total):
    """Rows 3 and 4: /tmp (RAM) or the scratch folder (disk) filled until refused or
    stopped, in files small enough for the file-size limit: only the total stops them."""
    return f"""
import os, time
k = 0
try:
    while k < {total} // 2**23:
        with open(os.path.join({folder}, f"fill{{k}}"), "wb") as fh:
            fh.write(b"x" * 2**23)
        k += 1
except OSError:
    pass
time.sleep(10)  # refused: the kernel is stopped all the same
"""


TMP_FILLER = _filler('"/tmp"', 10 * 2**30)
SCRATCH_FILLER = _filler('os.environ["HOME"]', 6 * 2**30)

#: An mse right on the visible test's small inputs only: passes it, fails the hidden one.
OVERFIT = """
def mse(predictions, labels):
    if len(predictions) > 3:
        return 0.0
    return sum((p - y) ** 2 for p, y in zip(predictions, labels)) / len(predictions)
"""

#: A student who read the grader: stores where the scratch folder's size does not show
#: (POSIX shared memory, a file without a name, an unlinked file), 60 MiB each.
HIDER = """
import os, time
chunk = b"x" * 2**20
shm = open("/dev/shm/hidden", "wb")
memfd = os.memfd_create("hidden")
unlinked = open("unlinked", "wb")
os.unlink("unlinked")
for _ in range(60):
    shm.write(chunk); shm.flush()
    os.write(memfd, chunk)
    unlinked.write(chunk); unlinked.flush()
time.sleep(10)
"""

#: A student who read the grader: children each under the address-space limit, together
#: beyond the memory limit.
HOG = """
import os, time
for _ in range(5):
    if os.fork() == 0:
        block = b"x" * (600 * 2**20)
        time.sleep(10)
        os._exit(0)
time.sleep(10)
"""


def _one_candidate(nb):
    """``nb`` with its search cut to the book's lambda alone, as a student may edit the
    parameters: the attacks are in the answers, and the search only costs the class time."""
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, n = re.subn(r"^LAMBDAS = \[[^\]]*\]", "LAMBDAS = [1e-5]", cell.source, flags=re.M)
    assert n == 1, cell.source
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One class, graded once in the sandbox with ``--jobs 3``: one notebook sleeps through
    its cell's time limit, and the other two workers keep the machine's two cores busy."""
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
    # rows 1-5 in one notebook: it writes where it must not, then reads what it must not
    _write(_student("exercise_5_1", mse=_intruder(victim, out, blank_5_1) + READER),
           subs / "intruder" / "exercise_5_1.ipynb")
    # rows 6-7 in one notebook: errors swallowed, then builtins and numpy patched
    _write(_student("exercise_5_1", mse=SWALLOWER + PATCHER_MSE, bias_model=PATCHER_MODEL),
           subs / "patcher" / "exercise_5_1.ipynb")
    _write(_student("exercise_5_1", mse=WRAPPER_MSE), subs / "wrapper" / "exercise_5_1.ipynb")
    _write(_one_candidate(_student("exercise_5_4", user_auc=_solution("exercise_5_4", "user_auc"),
                                   sampled_auc=_wrapper_or_lookup_auc())),
           subs / "wrapper" / "exercise_5_4.ipynb")
    # crashes: a dead kernel after one passing test, a loop deaf to interrupts
    _write(_student("exercise_5_1", mse=_solution("exercise_5_1", "mse"),
                    bias_model=EXIT + _solution("exercise_5_1", "bias_model")),
           subs / CRASHER / "exercise_5_1.ipynb")
    # (in the first cell the student writes, right after the data are loaded)
    _write(_student("exercise_5_2", tune=DEAF_LOOP), subs / CRASHER / "exercise_5_2.ipynb")
    # broken files: invalid JSON, mangled metadata, a pasted copy of a test cell; 5.4 intact
    (subs / "mangled").mkdir()
    (subs / "mangled" / "exercise_5_1.ipynb").write_text(
        (SOURCE / "exercise_5_1.ipynb").read_text(encoding="utf-8")[:5000], encoding="utf-8")
    pasted = _read(SOURCE / "exercise_5_3.ipynb")
    k = pasted.cells.index(_cell(pasted, "test_round"))
    pasted.cells.insert(k + 1, nbformat.from_dict(json.loads(json.dumps(pasted.cells[k]))))
    pasted.cells[k + 1]["id"] = uuid.uuid4().hex[:8]
    _write(pasted, subs / "mangled" / "exercise_5_3.ipynb")
    # the second class: every attack after the student's own passing mse, in the next cell
    mse = _solution("exercise_5_1", "mse")
    _write(_student("exercise_5_1", mse=ORACLE), subs / "oracle" / "exercise_5_1.ipynb")
    _write(_one_candidate(_student("exercise_5_4", user_auc=ORACLE_AUC)),
           subs / "oracle" / "exercise_5_4.ipynb")
    for student, attack in [("exhauster", EXHAUSTER), ("tmp-filler", TMP_FILLER),
                            ("scratch-filler", SCRATCH_FILLER), ("hider", HIDER),
                            ("hog", HOG)]:
        _write(_student("exercise_5_1", mse=OVERFIT if student == "hider" else mse,
                        bias_model=attack), subs / student / "exercise_5_1.ipynb")
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
    # the machine while grading: the grader's processes and threads, the memory available
    available = _available_memory()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_helpers", "grade", str(subs), "--out", str(out),
         "--timeout", "45", "--jobs", "3", "--executed", str(top / "executed"),
         "--feedback", str(top / "feedback"), *LIMIT_ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    outputs: list[str] = []
    reader = threading.Thread(target=lambda: outputs.extend(proc.communicate(timeout=1800)),
                              daemon=True)
    reader.start()
    tasks, lowest = 0, available
    while reader.is_alive():
        tasks = max(tasks, sum(t for _, t, _ in _sandbox._processes(proc.pid)))
        lowest = min(lowest, _available_memory())
        reader.join(0.1)
    assert proc.returncode == 0, outputs[1][-3000:]
    seconds = time.monotonic() - start
    finished = out.read_bytes()
    time.sleep(2.5)  # the intruder's left-behind process would write by now
    return {"rows": _rows(out), "notes": outputs[1], "csv_at_exit": finished,
            "tasks": tasks, "memory_before": available, "memory_lowest": lowest,
            "csv_later": out.read_bytes(), "before": before, "after": _hashes(*watched),
            "submitted": submitted, "submitted_after": _hashes(subs), "scratch": scratch,
            "seconds": seconds, "stdout": outputs[0], "executed": top / "executed",
            "feedback": top / "feedback"}


def _available_memory():
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable"))


def _score(graded, student, exercise):
    row = graded["rows"][(student, exercise)]
    return float(row["score"]), float(row["max_score"]), row["notes"]


# ---- honest students ------------------------------------------------------------------

# The reference student's notebooks are the solutions, run here end to end; nbval then
# does not execute them a second time (conftest.py), and this test checks what it would.
_SOLUTIONS = [SOURCE / f"{name}.ipynb" for name in exercise_names()]


@pytest.mark.executes(*(_SOLUTIONS if bwrap_path() else []))
def test_reference_solutions_score_full_marks_without_notes(graded):
    for name in exercise_names():
        score, max_score, notes = _score(graded, REFERENCE, name)
        assert max_score > 0
        assert (score, notes) == (max_score, ""), name
        # every cell ran, none raised (as nbval would check), and the hidden tests ran too
        ran = _read(graded["executed"] / REFERENCE / f"{name}.ipynb")
        code = [c for c in ran.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code), name
        errors = [(c.metadata.get("nbgrader", {}).get("grade_id"), o.ename)
                  for c in code for o in c.outputs if o.output_type == "error"]
        assert errors == [], f"{name}: {errors}"
        assert any("BEGIN HIDDEN TESTS" in c.source for c in code), name


def test_untouched_student_version_scores_zero(graded):
    score, _, notes = _score(graded, "untouched", "exercise_5_1")
    assert score == 0
    assert "edited" not in notes and "tamper" not in notes and "could not" not in notes, notes


def test_every_student_and_exercise_has_a_row_and_missing_notebooks_say_so(graded):
    students = {REFERENCE, "untouched", "intruder", "patcher",
                "wrapper", CRASHER, "mangled", "oracle", "exhauster", "tmp-filler",
                "scratch-filler", "hider", "hog"}
    assert set(graded["rows"]) == {(s, e) for s in students for e in exercise_names()}
    max_5_4 = _points("exercise_5_4", "test_user_auc", "test_sampled_auc", "test_model_auc")
    assert _score(graded, "intruder", "exercise_5_4") == (0, max_5_4, "not submitted")


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
    # the intruder's notebook also looks for the solutions and runs what it finds
    score, _, _ = _score(graded, "intruder", "exercise_5_1")
    assert score == 0


# ---- rows 6-7: tampering with error reporting, builtins, numpy ------------------------

def test_swallowing_errors_is_detected(graded):
    score, _, notes = _score(graded, "patcher", "exercise_5_1")
    assert score == 0
    assert "tampering detected" in notes and "run_code" in notes


def test_patching_builtins_and_numpy_is_detected(graded):
    score, _, notes = _score(graded, "patcher", "exercise_5_1")
    assert score == 0
    assert "tampering detected" in notes
    assert "builtins.abs" in notes and "numpy.allclose" in notes


# ---- rows 8-9: the package's finished functions, answers looked up by name ------------

def test_the_package_finished_functions_and_answers_looked_up_by_name_earn_nothing(graded):
    assert _score(graded, "wrapper", "exercise_5_1")[0] == 0
    # 5.4's sampled AUC calls the package's, and where that is blocked, looks the answers
    # up by the scorer's name: only the student's own user AUC scores
    assert _score(graded, "wrapper", "exercise_5_4")[0] == _points("exercise_5_4", "test_user_auc")


# ---- row 10: crashes cost the points of that notebook only ---------------------------

def test_a_dead_kernel_costs_the_tests_after_it(graded):
    score, _, notes = _score(graded, CRASHER, "exercise_5_1")
    assert score == _points("exercise_5_1", "test_mse")
    assert "kernel died" in notes


def test_a_loop_deaf_to_interrupts_is_stopped(graded):
    score, _, notes = _score(graded, CRASHER, "exercise_5_2")
    assert score == 0
    assert "time limit" in notes


def test_broken_notebooks_cost_their_own_points_only(graded):
    score, _, notes = _score(graded, "mangled", "exercise_5_1")
    assert score == 0 and "not a readable notebook" in notes
    score, _, notes = _score(graded, "mangled", "exercise_5_2")  # mangled cell metadata
    assert score == 0 and "could not grade" in notes
    # a pasted test copy: dropped, and the notebook keeps its marks, as the student's
    # other notebooks keep theirs
    score, max_score, notes = _score(graded, "mangled", "exercise_5_3")
    assert score == max_score and "a copy of cell test_round was pasted" in notes


# ---- row 11: folder names that look like options ---------------------------------------

def test_folder_names_are_never_options(graded):
    assert _score(graded, REFERENCE, "exercise_5_3")[0] == _score(graded, REFERENCE,
                                                                  "exercise_5_3")[1]
    # graded as the student's work: the test that ran before the kernel died scores
    assert _score(graded, CRASHER, "exercise_5_1")[0] == _points("exercise_5_1", "test_mse")


def test_notes_are_printed_and_the_run_is_summarised(graded):
    assert "note: patcher/exercise_5_1: tampering detected" in graded["notes"]
    assert "13 student(s)" in graded["stdout"]
    print(f"grading the class took {graded['seconds']:.0f} s")


# ---- the second class, row 1: answers read from the tests' namespace -------------------

def test_answers_read_from_the_tests_namespace_earn_nothing(graded):
    """The grader judges each hidden test in its own process, on inputs it draws again from
    the seed it gave the kernel: a student who forges the kernel's replies, swallows failed
    checks, rebinds the notebook's names or reads the test's frames earns nothing; right
    answers earn their points, a thread watching the frames notwithstanding."""
    score, _, notes = _score(graded, "oracle", "exercise_5_1")
    assert score == 0, notes
    ran = _read(graded["executed"] / "oracle" / "exercise_5_1.ipynb")
    judged = [o.evalue for o in _cell(ran, "test_mse").outputs
              if o.output_type == "error" and o.ename == "HiddenCheckFailed"]
    assert judged, [o.get("ename") for o in _cell(ran, "test_mse").outputs]
    assert _score(graded, "oracle", "exercise_5_4")[0] == _points("exercise_5_4", "test_user_auc")


# ---- the second class, rows 2-6: exhausting the machine --------------------------------

def test_processes_output_and_memory_are_bounded_and_the_rest_is_graded(graded):
    score, _, notes = _score(graded, "exhauster", "exercise_5_1")
    assert score == _points("exercise_5_1", "test_mse"), notes  # its own mse; nothing after
    assert "reached the process limit (128 processes and threads" in notes, notes
    assert "reached the output limit (1 MiB)" in notes, notes
    ran = graded["executed"] / "exhauster" / "exercise_5_1.ipynb"
    assert ran.stat().st_size < 2 * 2**20
    assert "output limit" in ran.read_text(encoding="utf-8")


_DISK = "disk limit (128 MiB for its scratch folder and /tmp together)"


@pytest.mark.parametrize("student, limit", [
    ("tmp-filler", _DISK), ("scratch-filler", _DISK), ("hider", _DISK),
    ("hog", "memory limit (2 GiB for all its processes together)")])
def test_a_notebook_beyond_a_limit_is_stopped_and_keeps_what_it_earned(graded, student, limit):
    score, _, notes = _score(graded, student, "exercise_5_1")
    # its own mse (the hider's is right on the visible test only, so earns nothing)
    assert score == (0 if student == "hider" else _points("exercise_5_1", "test_mse")), notes
    assert f"exceeded the {limit}: the kernel was stopped" in notes, notes


def test_the_machine_stays_within_the_limits_while_grading(graded):
    # 3 workers, each one sandbox within its limits, and the grader's own processes
    assert graded["tasks"] <= 3 * LIMITS["max_processes"] + 150, graded["tasks"]
    # memory: at most each worker's memory and /tmp limits, and 3 GiB for everything else
    # (the grader, and the other tests running meanwhile)
    bound = 3 * (LIMITS["memory"] + 2 * LIMITS["disk"]) + 3 * 2**30
    assert graded["memory_before"] - graded["memory_lowest"] <= bound, (
        graded["memory_before"], graded["memory_lowest"])


# ---- feedback pages -------------------------------------------------------------------

def _hidden_lines():
    """Every line of every hidden test that no visible part of the notebooks also holds."""
    found, visible = set(), []
    for name in exercise_names():
        for cell in _read(SOURCE / f"{name}.ipynb").cells:
            text, lines = grading._visible(cell.source)
            visible.append(text)
            found |= {line.strip() for k, line in enumerate(cell.source.splitlines(), 1)
                      if k in lines and len(line.strip()) >= 30}
    shown = "\n".join(visible)
    return {line for line in found if line not in shown}


def test_feedback_pages_show_the_work_and_never_a_hidden_test(graded):
    import html

    pages = {(p.parent.name, p.stem): p.read_text(encoding="utf-8")
             for p in graded["feedback"].glob("*/*.html")}
    assert set(pages) == set(graded["rows"])  # one per student and exercise
    for name in exercise_names():
        page = pages[(REFERENCE, name)]
        score, max_score, _ = _score(graded, REFERENCE, name)
        assert f"{score:g} of {max_score:g} points" in page and "<script" not in page
    assert "not submitted" in pages[("intruder", "exercise_5_4")]
    # failed hidden tests: named in words; their messages (which hold the figures) are not
    # (the hider's mse passes the visible test, and fails the hidden one)
    assert re.search(r"Test test_mse: 0 of 1 points.*?Hidden check failed: mse on random pairs",
                     pages[("hider", "exercise_5_1")], flags=re.S)
    hidden = _hidden_lines()
    for key, page in pages.items():
        text = html.unescape(page)
        assert "HIDDEN TESTS" not in text, key
        leaked = [line for line in hidden if line in text]
        assert leaked == [], (key, leaked[:3])
    for student, exercise in graded["rows"]:
        ran = graded["executed"] / student / f"{exercise}.ipynb"
        if not ran.is_file():
            continue
        text = html.unescape(pages[(student, exercise)])
        cells = _read(ran).cells
        # (an error that a cell without hidden tests raised too says nothing hidden)
        elsewhere = {o.get("evalue") for c in cells if "### BEGIN HIDDEN TESTS" not in c.source
                     for o in c.get("outputs", []) if o.output_type == "error"}
        visible = "\n".join(grading._visible(c.source)[0] for c in cells)  # (a name, say)
        for cell in cells:
            if "### BEGIN HIDDEN TESTS" not in cell.source:
                continue
            hidden = grading._visible(cell.source)[1]
            for o in cell.outputs:  # an error raised in the hidden part: its message
                lines = [int(m) for t in o.get("traceback", []) for m in re.findall(
                    r"Cell In\[\d+\], line (\d+)", re.sub(r"\x1b\[[0-9;]*m", "", t))][:1]
                if o.output_type == "error" and o.ename == "HiddenCheckFailed" and not lines:
                    # the grader's judgement: its label in words is shown, its figures not
                    detail = (o.get("traceback") or ["", ""])[-1]
                    assert o.evalue in text and (len(detail) < 8 or detail not in text), (
                        student, exercise, detail)
                elif o.output_type == "error" and len(o.evalue) > 8 and (
                        not lines or lines[0] in hidden) and o.ename not in (
                        "TamperingDetected", "KernelDied", "CellTimeoutError") and (
                        o.evalue not in elsewhere) and o.evalue.strip("'\"") not in visible:
                    assert o.evalue not in text, (student, exercise, o.evalue)

"""Autograding the chapter 5 exercises with nbgrader, one sandboxed notebook at a time.

``python -m recsys_helpers grade SUBMISSIONS --out grades.csv`` grades a folder holding one
sub-folder per student, each with that student's exercise notebooks under their original
names (``exercise_5_1.ipynb`` ...).

* nbgrader and its gradebook run outside any sandbox, in a temporary course built from the
  committed source notebooks and configuration (``notebooks/exercises``); only the
  student's kernel runs inside a bubblewrap sandbox (:mod:`recsys_helpers.sandbox`),
  through a kernelspec, so that a notebook cannot reach the solutions, the gradebook,
  another student's files, the submissions or the output file.
* Each (student, exercise) notebook is graded by its own ``nbgrader autograde`` process:
  a crash, a time-out, a dead kernel, an unreadable notebook or mangled metadata costs the
  points of that notebook only (for a dead kernel, the tests after it).
* At execution time :class:`GuardedExecute` (nbgrader's ``Execute`` preprocessor, extended)
  adds cells the student never sees: a first cell that records the originals of the
  objects tests rely on, a check before and after every test cell that they are still the
  originals (IPython's ``run_code``/``showtraceback``, the kernel's reply path, builtins,
  numpy, math, the namespaces the test uses), and a last canary cell, with a token drawn
  for this run, that must come back as an error.  Tampering scores the notebook 0 with a
  note.
* Each notebook runs under limits (:data:`LIMITS`: processes and threads, memory, disk,
  output, wall time), enforced outside the student's reach by the sandbox's launcher (the
  output limit by :class:`GuardedExecute`); one that hits a limit keeps the points earned
  before, with a note naming the limit.
* With ``feedback``, a self-contained HTML page per student and exercise shows the notebook
  as it ran, the points of each test and the visible tests' messages; a failed hidden test
  is named in words, never shown (:func:`feedback_page`).
* ``grades.csv`` (``student,exercise,score,max_score,notes``) is rewritten atomically after
  each student; a rerun skips the students it already holds unless ``force``.  On SIGINT or
  SIGTERM the grader kills its workers' process groups, removes its temporary course and
  says which students were graded.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Float, Integer, Unicode

from . import judges as _judges
from . import sandbox as _sandbox

__all__ = ["ASSIGNMENT", "EXERCISES_DIR", "LIMITS", "Grade", "GradingInterrupted",
           "GuardedExecute", "exercise_names", "feedback_page", "generate_student_versions",
           "grade", "grade_command", "parse_size", "read_csv", "write_csv"]

ASSIGNMENT = "chapter5"
EXERCISES_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
_SOURCE = "solutions"
_RELEASE = "student"
COLUMNS = ["student", "exercise", "score", "max_score", "notes"]

LIMITS, parse_size = _sandbox.LIMITS, _sandbox.parse_size


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Grade:
    student: str
    exercise: str
    score: float
    max_score: float
    notes: str = ""

    def __post_init__(self):
        # the notes quote cell ids the student wrote: no escape code, no line break
        # reaches the CSV or the console
        self.notes = _CONTROL.sub(" ", self.notes)[:2000]


class GradingInterrupted(Exception):
    """``grade`` was stopped by SIGINT or SIGTERM; ``done`` lists the students graded."""

    def __init__(self, signum: int, done: list[str]):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.done = signum, done


def exercise_names() -> list[str]:
    """The exercise notebooks' names (without ``.ipynb``), in order."""
    return sorted(p.stem for p in (EXERCISES_DIR / _SOURCE / ASSIGNMENT).glob("*.ipynb"))


def _nbgrader_environment(extra: dict | None = None) -> dict:
    """The environment of the nbgrader processes the grader starts."""
    env = dict(os.environ)
    # nbgrader runs its database migrations with the `alembic` command of this environment.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["RECSYS_DATA"] = "sample"  # grade on the bundled sample: fast and the same for all
    env.pop("RECSYS_DATA_DIR", None)
    env.pop("JPY_PARENT_PID", None)
    env.update(extra or {})
    return env


def _nbgrader(args: list[str], cwd: Path, timeout: float | None = None
              ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd,
                          env=_nbgrader_environment(), capture_output=True, text=True,
                          timeout=timeout)


def generate_student_versions(course: Path = EXERCISES_DIR) -> Path:
    """Run ``nbgrader generate_assignment`` in ``course``; return the student folder."""
    proc = _nbgrader(["generate_assignment", ASSIGNMENT, "--force"], cwd=course, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{proc.stdout}\n{proc.stderr}")
    return course / _RELEASE / ASSIGNMENT


# --------------------------------------------------------------------------------------
# The cells the grader adds at execution time
# --------------------------------------------------------------------------------------

# Runs first, before any of the student's code: records the originals under a name drawn
# for this run, and forbids audit hooks (they could act between the checks and the tests).
_GUARD = r'''
def {name}():
    import builtins, math, sys, types
    import numpy
    ip = get_ipython()
    kernel = ip.kernel
    modules = {{"builtins": builtins, "numpy": numpy, "math": math}}
    keep = lambda k: k not in ("input", "raw_input") and (  # ipykernel sets input per request
        not k.startswith("_") or k in ("__import__", "__build_class__"))
    saved = {{n: {{k: v for k, v in vars(m).items() if keep(k)}} for n, m in modules.items()}}
    shell = type(ip)
    methods = ("run_code", "run_cell", "run_cell_async", "run_ast_nodes", "showtraceback",
               "_showtraceback", "showsyntaxerror", "transform_cell", "should_run_async",
               "set_custom_exc", "get_exception_only", "_run_cell")
    shell_methods = {{m: getattr(shell, m, None) for m in methods}}
    instance_methods = {{m: vars(ip).get(m) for m in methods}}
    kernel_methods = {{m: getattr(type(kernel), m, None)
                      for m in ("do_execute", "execute_request", "send_response")}}
    session_send = type(kernel.session).send
    transformers = lambda: (list(ip.input_transformers_post), list(ip.ast_transformers),
                            list(ip.input_transformer_manager.cleanup_transforms),
                            list(ip.input_transformer_manager.line_transforms))
    saved_transformers = transformers()
    saved_events = {{k: list(v) for k, v in ip.events.callbacks.items()}}
    streams = (sys.stdout, sys.stderr, sys.displayhook, ip.displayhook)
    refused = []

    def audit(event, args):
        if event == "sys.addaudithook":
            refused.append(event)
            raise RuntimeError("audit hooks are not allowed while grading")

    sys.addaudithook(audit)

    def check(names=()):
        bad = []
        for n, m in modules.items():
            if sys.modules.get(n) is not m:
                bad.append(f"sys.modules[{{n!r}}]")
            now = vars(m)
            for k, v in saved[n].items():
                if now.get(k, bad) is not v:
                    bad.append(f"{{n}}.{{k}}")
        if type(ip) is not shell:
            bad.append("the IPython shell")
        for m, f in shell_methods.items():
            if getattr(type(ip), m, None) is not f or vars(ip).get(m) is not instance_methods[m]:
                bad.append(f"InteractiveShell.{{m}}")
        for m, f in kernel_methods.items():
            if getattr(type(kernel), m, None) is not f or m in vars(kernel):
                bad.append(f"kernel.{{m}}")
        if type(kernel.session).send is not session_send or "send" in vars(kernel.session):
            bad.append("the kernel's session")
        if transformers() != saved_transformers:
            bad.append("IPython's input or AST transformers")
        for k, v in ip.events.callbacks.items():
            for cb in v:
                if cb not in saved_events.get(k, []) and not getattr(
                        getattr(cb, "__code__", None) or getattr(
                            getattr(cb, "__func__", None), "__code__", None), "co_filename",
                        "").startswith(sys.prefix):
                    bad.append(f"an IPython {{k}} callback")
        if ip.custom_exceptions:
            bad.append("IPython's exception handlers")
        if sys.gettrace() is not None or sys.getprofile() is not None:
            bad.append("a trace or profile function")
        if (sys.stdout, sys.stderr, sys.displayhook, ip.displayhook) != streams:
            bad.append("the output streams")
        if refused:
            bad.append("an audit hook")
        for k in names:
            v = ip.user_ns.get(k, bad)
            if v is bad:
                continue
            if k in saved["builtins"] and v is not saved["builtins"][k]:
                bad.append(f"the builtin {{k}} (redefined)")
            if isinstance(v, types.ModuleType) and (
                    sys.modules.get(v.__name__) is not v or v.__name__ in modules
                    and modules[v.__name__] is not v):
                bad.append(f"the module {{k}}")
        return sorted(set(bad))

    return check


{name} = {name}()
'''

_HIDDEN_BUDGET = 64 * 2**20  # bytes of hidden tests' results kept per notebook
_HIDDEN_CALL = re.compile(r'hidden_test\(\s*"(exercise_[\w.]+)"\s*,\s*"(\w+)"')


def _parameters(cells) -> dict:
    """The values of the notebook's parameters cell (restored by nbgrader from the course's
    own notebook before it runs: read-only), as literals."""
    found = {}
    for cell in cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") != "parameters":
            continue
        for node in ast.parse(cell.source).body:
            if not isinstance(node, ast.Assign):
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = value
                elif isinstance(target, ast.Tuple) and isinstance(value, tuple):
                    found.update({t.id: v for t, v in zip(target.elts, value)
                                  if isinstance(t, ast.Name)})
    return found


def _judge_hidden_tests(cells) -> None:
    """Judge each test cell's hidden results in this process (the student's kernel cannot
    reach it), on inputs drawn again from the seed the kernel was given: a cell whose
    results fail, or show none, gets an error output, and so scores 0."""
    base = os.environ.get("RECSYS_HIDDEN_SEED", "")
    params = _parameters(cells)
    for cell in cells:
        found = _HIDDEN_CALL.search(cell.source) if _is_test(cell) else None
        if found is None:
            continue
        payloads = [o.get("data", {}).get(_judges.MIME) for o in cell.get("outputs", [])
                    if o.get("output_type") in ("display_data", "execute_result")]
        failure = (_judges.judge_payload(*found.groups(), [p for p in payloads if p is not None],
                                         int(base), params) if base.isdigit() else
                   _judges.HiddenCheckFailed("the grader gave the kernel no seed"))
        if failure is not None:
            cell.outputs.append(nbformat.v4.new_output(
                "error", ename="HiddenCheckFailed", evalue=failure.label,
                traceback=[f"HiddenCheckFailed: {failure.label}", failure.detail]))


# Before and after each test cell: prints the nonce only if nothing was replaced.
_CHECK = ("{name}_bad = {name}({names!r})\n"
          "print({nonce!r} if not {name}_bad else 'TAMPERED: ' + ', '.join({name}_bad))\n"
          "del {name}_bad")

# Last: must come back as an error carrying its token.
_CANARY = "assert {zero} == {one}, {token!r}"


_ERROR_CHARS, _ERROR_LINES = 2000, 40  # an error's message and traceback, kept past the limit


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + " [...]"


def _output_size(content) -> int:
    """Characters an output message would store (text and every representation)."""
    size = len(content.get("text") or "")
    for part in (content.get("data") or {}, content.get("metadata") or {}):
        for value in part.values():
            size += len(value) if isinstance(value, str) else len(json.dumps(value))
    return size


def _size_text(n: int) -> str:
    return _sandbox._size_text(n)


def _test_names(source: str) -> list[str]:
    """The names a test cell reads (to check they were not redefined)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})


def _error(ename: str, evalue: str) -> NotebookNode:
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                  traceback=[f"{ename}: {evalue}"])


def _is_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` with tamper checks and a kernel that may die.

    Adds, for this execution only, a guard cell, a check before and after every test cell
    and a canary cell (see the module's docstring); removes them afterwards and, if any
    check failed, marks every graded cell as failed so that the notebook scores 0.  A kernel
    that dies (or ignores an interrupt after a time-out and is stopped) fails the cells from
    there on; the earlier cells keep their results.  Writes what it found to ``report``.
    """

    token = Unicode("", help="secret of this run (default: drawn here)").tag(config=True)
    report = Unicode("", help="JSON file receiving the notes").tag(config=True)
    grace = Float(10.0, help="seconds a kernel has to answer after an interrupt"
                  ).tag(config=True)
    max_output = Integer(0, help="bytes of output the student's cells may store in the "
                         "notebook (0: no limit); errors are kept, shortened").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        token = self.token or secrets.token_hex(16)
        rng = secrets.SystemRandom()
        name = f"_g{secrets.token_hex(8)}"
        original = list(nb.cells)
        cells, checks = [nbformat.v4.new_code_cell(_GUARD.format(name=name))], []

        def check(label, names=()):
            nonce = secrets.token_hex(12)
            cell = nbformat.v4.new_code_cell(_CHECK.format(name=name, nonce=nonce,
                                                           names=list(names)))
            checks.append((cell, nonce, label))
            cells.append(cell)

        for cell in original:
            if _is_test(cell):
                check(f"before {cell.metadata.nbgrader.get('grade_id')}",
                      _test_names(cell.source))
                cells.append(cell)
                check(f"after {cell.metadata.nbgrader.get('grade_id')}")
            else:
                cells.append(cell)
        zero = rng.randrange(1, 10**6)
        canary = nbformat.v4.new_code_cell(_CANARY.format(zero=zero, one=zero + rng.randrange(
            1, 10**6), token=token))
        cells.append(canary)
        nb.cells = cells
        self._tests = {k for k, c in enumerate(cells) if _is_test(c)}
        self._hidden_used = 0
        self._dead, self._dead_at = None, None
        # the grader's own cells: their output is never dropped
        ours = {id(c) for c, *_ in checks} | {id(cells[0]), id(canary)}
        self._ours = {k for k, c in enumerate(cells) if id(c) in ours}
        self._output_used, self._output_capped = 0, False
        try:
            nb, resources = super().preprocess(nb, resources, km=km)
        finally:
            nb.cells = original
        notes, tampered = [], []
        _judge_hidden_tests(original)
        for o in cells[0].outputs:  # runs before any student code: a failure is the grader's
            if o.output_type == "error":
                raise RuntimeError(f"the grader's guard cell failed: {o.ename}: {o.evalue}")
        if self._dead:
            notes.append(self._dead)
        if self._output_capped:
            notes.append(f"reached the output limit ({_size_text(self.max_output)}): the "
                         "rest of its output was dropped")
        position = {id(c): k for k, c in enumerate(cells)}
        died_at = len(cells) if self._dead_at is None else self._dead_at
        first = None
        for cell, nonce, label in checks:
            if position[id(cell)] >= died_at:
                break
            text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            if nonce not in text:
                first = first or label
                tampered += (text.split("TAMPERED: ", 1)[1].strip().split(", ")
                             if "TAMPERED: " in text else ["the grader's checks did not run"])
        if not self._dead and not any(
                o.output_type == "error" and token in str(o.get("evalue", ""))
                for o in canary.outputs):
            tampered.append("the last cell's error did not come back (error reporting altered)")
        if tampered:
            notes.append("tampering detected, the notebook scores 0: " + ", ".join(
                dict.fromkeys(tampered)) + (f" (first seen {first})" if first else ""))
            for cell in original:
                if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
                    cell.outputs.append(_error("TamperingDetected", notes[-1]))
        if self.report:
            Path(self.report).write_text(json.dumps({"notes": notes, "tampered": bool(tampered),
                                                     "died": bool(self._dead)}),
                                         encoding="utf-8")
        return nb, resources

    # -- the output limit ---------------------------------------------------------------
    def output(self, outs, msg, display_id, cell_index):
        if self.max_output <= 0 or cell_index in self._ours:
            return super().output(outs, msg, display_id, cell_index)
        if cell_index in self._tests and _judges.MIME in (msg["content"].get("data") or {}):
            # the results of a hidden test, which the grader judges: kept past the output
            # limit, within a budget of their own
            size = _output_size(msg["content"])
            if self._hidden_used + size <= _HIDDEN_BUDGET:
                self._hidden_used += size
                return super().output(outs, msg, display_id, cell_index)
            return None
        content = msg["content"]
        if msg["msg_type"] == "error":  # kept: nbgrader scores a test by its errors
            content["evalue"] = _clip(str(content.get("evalue", "")), _ERROR_CHARS)
            content["traceback"] = [_clip(str(line), _ERROR_CHARS) for line in
                                    list(content.get("traceback") or [])[-_ERROR_LINES:]]
            content["ename"] = _clip(str(content.get("ename", "")), 200)
            return super().output(outs, msg, display_id, cell_index)
        if not self._within_output_limit(content):
            if not self._output_capped:
                self._output_capped = True
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
                    f"[the grader's output limit ({_size_text(self.max_output)} for the "
                    "notebook) is reached: the rest of the output was dropped]\n")))
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _update_display_id(self, display_id, msg):
        if self.max_output <= 0 or self._within_output_limit(msg["content"]):
            super()._update_display_id(display_id, msg)

    def _within_output_limit(self, content) -> bool:
        size = _output_size(content)
        if self._output_capped or self._output_used + size > self.max_output:
            return False
        self._output_used += size
        return True

    def preprocess_cell(self, cell, resources, index):
        if self._dead:
            if cell.cell_type == "code":
                cell.outputs = [_error("KernelDied", self._dead)]
            return cell, resources
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except CellTimeoutError:  # the kernel went silent after the interrupt
            cell.setdefault("outputs", []).append(_error("CellTimeoutError", "time limit"))
        except DeadKernelError:
            self._dead = "the kernel died (or was stopped) while running a cell; the tests " \
                         "from there on score 0"
            self._dead_at = index
            cell.setdefault("outputs", []).append(_error("KernelDied", self._dead))
            return cell, resources
        if any(o.output_type == "error" and o.get("ename") == "CellTimeoutError"
               for o in cell.get("outputs", [])) and not self._responds():
            run_sync(self.km.shutdown_kernel)(now=True)
            self._dead_at = index + 1
            self._dead = "a cell exceeded the time limit and the kernel did not stop when " \
                         "interrupted; it was stopped, and the tests from there on score 0"
        return cell, resources

    def _responds(self) -> bool:
        """Whether the kernel answers a kernel_info request within ``grace`` seconds."""
        import time

        msg_id = self.kc.kernel_info()
        deadline = time.monotonic() + self.grace
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = run_sync(self.kc.shell_channel.get_msg)(timeout=left)
            except Exception:  # queue.Empty: no answer in time
                return False
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return True
        return False


# --------------------------------------------------------------------------------------
# The temporary course and one graded notebook
# --------------------------------------------------------------------------------------

_CONFIG_TAIL = """
# --- added by recsys_helpers.grading for this grading run
from nbgrader.converters import Autograde as _Autograde
from nbgrader.preprocessors import Execute as _Execute

from recsys_helpers.grading import GuardedExecute as _GuardedExecute

c.Autograde.autograde_preprocessors = [
    _GuardedExecute if p is _Execute else p
    for p in _Autograde.class_traits()["autograde_preprocessors"].default()]
c.Execute.timeout = {timeout}
# the kernel is stopped as soon as the last cell has run: a student's atexit hooks get no
# turn after the grader's checks, and nobody waits for TensorFlow to tear itself down
c.Execute.shutdown_kernel = "immediate"
"""


def _bundled_data() -> Path:
    from .datasets import bundled_dir

    return Path(bundled_dir())


def _make_course(root: Path, cell_timeout: int, sandboxed: bool) -> None:
    """A course folder with the committed configuration and source notebooks."""
    shutil.copytree(EXERCISES_DIR / _SOURCE / ASSIGNMENT, root / _SOURCE / ASSIGNMENT)
    config = (EXERCISES_DIR / "nbgrader_config.py").read_text(encoding="utf-8")
    config += _CONFIG_TAIL.format(timeout=int(cell_timeout))
    if sandboxed:
        config += (f"c.Execute.kernel_name = {_sandbox.KERNEL_NAME!r}\n"
                   "c.KernelManager.transport = 'ipc'\n")
    (root / "nbgrader_config.py").write_text(config, encoding="utf-8")


def _grade_cells(nb) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if isinstance(c.get("metadata", {}).get("nbgrader"), dict)
            and c.metadata["nbgrader"].get("grade_id")}


def _compare_with_release(submitted, release: Path, source: Path) -> list[str]:
    """Notes on cells the student must not change: edited read-only cells, deleted tests.

    A cell counts as edited if it differs from both the student version and the source
    (the source holds the hidden tests: a reference solution is not edited).  nbgrader
    restores read-only cells from the source before grading, so an edit earns nothing;
    the note tells the teacher it happened.
    """
    mine = _grade_cells(submitted)
    original = _grade_cells(nbformat.read(source, as_version=4))
    notes = []
    for gid, cell in _grade_cells(nbformat.read(release, as_version=4)).items():
        meta = cell.metadata["nbgrader"]
        if gid not in mine:
            if meta.get("grade"):
                notes.append(f"test cell {gid} was deleted; its points are lost")
        elif meta.get("locked") and mine[gid].source.strip() not in (
                cell.source.strip(), original[gid].source.strip() if gid in original else None):
            kind = "test cell" if meta.get("grade") else "read-only cell"
            notes.append(f"{kind} {gid} was edited; nbgrader restored the original before "
                         "grading")
    return notes


def _drop_copies(nb) -> list[str]:
    """Pasted copies of a graded cell (a grade id seen before) become plain cells: nbgrader
    would refuse the whole notebook; the first cell with the id is the one graded."""
    seen, notes = set(), []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if gid in seen:
            del cell.metadata["nbgrader"]
            notes.append(f"a copy of cell {gid} was pasted; only the first one counts")
        elif gid:
            seen.add(gid)
    return list(dict.fromkeys(notes))


def _read_submission(path: Path):
    """The notebook, or (None, why it cannot be graded)."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:
        return None, f"not a readable notebook ({type(exc).__name__})"
    try:
        nbformat.validate(nb)
    except Exception as exc:
        return None, f"not a valid notebook ({type(exc).__name__}: {str(exc)[:120]})"
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is not None and not (isinstance(meta, dict) and isinstance(
                meta.get("grade_id", ""), str) and _GRADE_ID.fullmatch(meta.get("grade_id") or "x")):
            return None, "not a valid notebook (a cell's nbgrader metadata is mangled)"
    return nb, ""


_GRADE_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")


_LOG_TAIL = 256 * 1024  # bytes of an nbgrader process's log the grader reads


class _Runner:
    """Starts nbgrader processes in their own process groups and can kill them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.stopped = False

    def run(self, argv, cwd, env, timeout) -> tuple[int | None, str]:
        with self.lock:
            if self.stopped:
                return None, ""
            # the log goes to a file, of which only the end is read: a kernel that floods
            # its output cannot fill the grader's memory
            log = tempfile.TemporaryFile(dir=cwd)
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent)
            self.procs.add(proc)
        try:
            try:
                proc.wait(timeout=timeout)
                code = None if self.stopped else proc.returncode
            except subprocess.TimeoutExpired:
                self._kill(proc)
                proc.wait()
                code = None
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - _LOG_TAIL))
            return code, log.read().decode("utf-8", errors="replace")
        finally:
            log.close()
            with self.lock:
                self.procs.discard(proc)

    @staticmethod
    def _kill(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self):
        with self.lock:
            self.stopped = True
            procs = list(self.procs)
        for proc in procs:
            self._kill(proc)


def _die_with_parent():  # in the child, before exec: die if the grader dies
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _grade_notebook(course: Path, work: Path, sid: str, exercise: str, nb, sandboxed: bool,
                    cell_timeout: int, runner: _Runner, limits: dict | None = None
                    ) -> tuple[float | None, list[str]]:
    """Autograde one notebook in ``course`` under ``limits`` (keys of :data:`LIMITS`);
    returns (score or None, notes)."""
    from nbgrader.api import Gradebook, MissingEntry

    target = course / "submitted" / sid / ASSIGNMENT
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    nbformat.write(nb, target / f"{exercise}.ipynb")
    job = Path(tempfile.mkdtemp(prefix=f"{sid}-{exercise}-", dir=work))
    report = job / "report.json"
    token = secrets.token_hex(16)
    limits = {**LIMITS, **(limits or {})}
    args = ["autograde", ASSIGNMENT, f"--student={sid}", f"--notebook={exercise}", "--force",
            "--create", f"--GuardedExecute.token={token}", f"--GuardedExecute.report={report}",
            f"--GuardedExecute.max_output={int(limits['max_output'] or 0)}"]
    extra, box = {"RECSYS_HIDDEN_SEED": str(secrets.randbits(63))}, None  # (see judges)
    if sandboxed:
        box = _sandbox.Sandbox(job / "kernel", exercise=exercise, readable=[_bundled_data()],
                               cpu_seconds=max(120, 4 * cell_timeout),
                               memory_bytes=limits["memory"],
                               max_processes=limits["max_processes"],
                               disk_bytes=limits["disk"], wall_seconds=limits["wall_time"],
                               environ={"RECSYS_HIDDEN_SEED": extra["RECSYS_HIDDEN_SEED"]})
        extra["JUPYTER_PATH"] = str(box.write_kernelspec())
        extra["JUPYTER_RUNTIME_DIR"] = str(box.scratch)
        args += [f"--KernelManager.{k}={v}" for k, v in box.kernel_config().items()]
    else:
        extra["JUPYTER_RUNTIME_DIR"] = str(job)
    n_cells = len(nb.cells) + 2 * sum(map(_is_test, nb.cells)) + 2
    kernel_time = cell_timeout * n_cells
    if sandboxed and limits["wall_time"]:  # the launcher stops the kernel then
        kernel_time = min(kernel_time, limits["wall_time"])
    try:
        code, log = runner.run([sys.executable, "-m", "nbgrader", *args], cwd=course,
                               env=_nbgrader_environment(extra), timeout=kernel_time + 300)
    finally:
        if box is not None:
            box.cleanup()
    notes = box.limit_notes() if box is not None else []
    if code is None and runner.stopped:
        shutil.rmtree(job, ignore_errors=True)
        return None, ["grading was stopped"]
    if code is None:
        notes.append("grading exceeded its overall time limit")
    if report.is_file():
        found = json.loads(report.read_text(encoding="utf-8"))
        notes += found["notes"]
        tampered = found["tampered"]
    else:
        tampered = False
        if code is not None:
            notes.append(f"nbgrader could not grade it ({_last_error(log)})")
    notes += [n for n in _notes_from_log(log) if not any("time limit" in m for m in notes)]
    shutil.rmtree(job, ignore_errors=True)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            score = float(gb.find_submission_notebook(exercise, ASSIGNMENT, sid).score)
        except MissingEntry:
            score = 0.0
    return (0.0 if tampered else score), notes


# --------------------------------------------------------------------------------------
# Feedback pages for the students
# --------------------------------------------------------------------------------------

_HIDDEN_BEGIN, _HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#222}pre{background:#f6f6f6;padding:.5rem;overflow-x:auto;white-space:pre-wrap}
.cell{margin:1rem 0}.test{border-left:4px solid #999;padding-left:.6rem}.pass{border-color:#2a2}
.fail{border-color:#c22}.points{font-weight:bold}.out{background:#fff;border:1px solid #ddd}
.error{color:#a00}.notes{background:#fff6e0;padding:.5rem}img{max-width:100%}"""


def _visible(source: str) -> tuple[str, frozenset[int]]:
    """A test cell's source without its hidden tests, and the (1-based) lines of its hidden
    blocks, markers included (empty if it has none)."""
    kept, lines, hidden = [], set(), False
    for k, line in enumerate(source.splitlines()):
        if line.strip() == _HIDDEN_BEGIN:
            hidden = True
        if hidden:
            lines.add(k + 1)
            hidden = line.strip() != _HIDDEN_END
        else:
            kept.append(line)
    return "\n".join(kept).strip("\n").rstrip(), frozenset(lines)


def _failure_line(output) -> int | None:
    """The line of the test cell where its error was raised (from IPython's traceback):
    of the frames in the test cell itself (the outermost frame's cell), the innermost, so
    that a check inside a helper function of the test cell is found too."""
    found = []
    for entry in output.get("traceback") or []:
        m = re.search(r"(Cell In\[\d+\]|<ipython-input-[^>]*>), line (\d+)",
                      _ANSI.sub("", str(entry)))
        if m:
            found.append((m.group(1), int(m.group(2))))
    if not found:
        return None
    cell = found[0][0]
    return [line for where, line in found if where == cell][-1]


def _hidden_failure(source: str, hidden: frozenset[int], output) -> str:
    """A failed hidden test in words: which of its checks, never its code or figures."""
    try:
        tree = ast.parse(source)
        checks = sorted(n.lineno for n in ast.walk(tree)
                        if isinstance(n, ast.Assert) and n.lineno in hidden)
    except SyntaxError:
        checks = []
    line = _failure_line(output)
    ename = re.sub(r"[^\w.]", "", str(output.get("ename", "")))[:60] or "an error"
    if line is not None and line in checks:
        return (f"Hidden check {checks.index(line) + 1} of {len(checks)} failed: your code "
                "gave a different result on inputs the grader drew for this run.")
    return (f"The hidden checks stopped with {ename} before they were done: your code "
            "failed on inputs the grader drew for this run.")


_MARKDOWN_CHARS = 100_000  # a longer Markdown cell is shown as text on a feedback page


def _only_inline_images(html_text: str) -> str:
    """Images that would load from elsewhere (a tracking pixel, say) become ``[image]``:
    the page stays self-contained."""
    return re.sub(r"<img\b[^>]*>", lambda m: m.group(0) if re.search(
        r"""\ssrc=["']data:image/""", m.group(0)) else "[image]", html_text)


def _render_output(o) -> str:
    import base64
    import html

    if o.output_type == "stream":
        return f'<pre class="out">{html.escape(str(o.get("text", "")))}</pre>'
    if o.output_type == "error":
        return (f'<pre class="out error">{html.escape(str(o.get("ename", "")))}: '
                f'{html.escape(str(o.get("evalue", "")))}</pre>')
    data = o.get("data", {})
    if "image/png" in data:
        png = "".join(data["image/png"]).replace("\n", "")
        try:
            base64.b64decode(png, validate=True)
        except ValueError:
            return ""
        return f'<img alt="figure" src="data:image/png;base64,{png}">'
    if "text/plain" in data:  # (never the notebook's own HTML or scripts)
        return f'<pre class="out">{html.escape(str(data["text/plain"]))}</pre>'
    return ""


def feedback_page(ran, student: str, exercise: str, score: float, max_score: float,
                  notes: str) -> str:
    """A self-contained HTML page for the student: their notebook as it ran, the points of
    each test, the visible tests' messages; a failed hidden test named in words only.

    ``ran`` is the graded notebook (holding the hidden tests: none of their code, inputs
    or expected values reaches the page)."""
    import html

    import mistune

    markdown = mistune.create_markdown(escape=True)
    parts = [f"<h1>{html.escape(exercise)}: {score:g} of {max_score:g} points</h1>",
             f"<p>Student: {html.escape(student)}</p>"]
    if notes:
        parts.append(f'<p class="notes">Notes: {html.escape(notes)}</p>')
    for cell in (ran.cells if ran is not None else []):
        meta = cell.get("metadata", {}).get("nbgrader", {}) or {}
        if cell.cell_type == "markdown":
            if len(cell.source) > _MARKDOWN_CHARS:  # (deeply nested Markdown renders slowly)
                parts.append(f'<div class="cell"><pre>{html.escape(_clip(cell.source, _MARKDOWN_CHARS))}</pre></div>')
            else:
                parts.append(f'<div class="cell">{_only_inline_images(markdown(cell.source))}</div>')
            continue
        if cell.cell_type != "code":
            continue
        source, hidden = _visible(cell.source)  # (any cell: a pasted copy of a test too)
        if not (meta.get("grade") and not meta.get("solution")):
            outputs = "".join(_render_output(o) for o in cell.get("outputs", [])
                              if not hidden)
            parts.append(f'<div class="cell"><pre>{html.escape(source)}</pre>{outputs}</div>')
            continue
        errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
        points = float(meta.get("points", 0) or 0)
        earned = 0.0 if errors else points
        shown = []
        for o in cell.get("outputs", []):
            if o.output_type != "error":
                if not hidden:  # what a cell with hidden tests printed is not shown
                    shown.append(_render_output(o))
            elif o.get("ename") in ("TamperingDetected", "KernelDied", "CellTimeoutError"):
                shown.append(_render_output(o))
            elif o.get("ename") == "HiddenCheckFailed" and _failure_line(o) is None:
                # the grader's own judgement: which check, in words (never its figures)
                shown.append(f'<p class="error">Hidden check failed: {html.escape(str(o.evalue))}. '
                             "Your code gave a different result on inputs the grader drew for "
                             "this run.</p>")
            elif hidden and any(e.get("ename") == "HiddenCheckFailed" and _failure_line(e) is None
                                for e in errors):
                continue  # (the kernel's own account of the same check: the one above says it)
            elif hidden and (_failure_line(o) or min(hidden)) in hidden:
                shown.append(f'<p class="error">{html.escape(_hidden_failure(cell.source, hidden, o))}</p>')
            else:
                shown.append(_render_output(o))
        status = "pass" if not errors else "fail"
        parts.append(f'<div class="cell test {status}"><p class="points">Test '
                     f'{html.escape(str(meta.get("grade_id", "")))}: {earned:g} of '
                     f'{points:g} points</p><pre>{html.escape(source)}</pre>'
                     + "".join(dict.fromkeys(shown)) + "</div>")
    title = html.escape(f"{exercise} — {student}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _last_error(log: str) -> str:
    """The most telling error line of nbgrader's log: the last exception, else its last
    ERROR line."""
    exceptions = re.findall(r"^\s*([\w.]+(?:Error|Exception)\b.*)$", log, flags=re.M)
    if exceptions:
        return exceptions[-1].strip()[:200]
    errors = [line for line in log.splitlines() if "ERROR" in line]
    return errors[-1].split("]", 1)[-1].strip()[:200] if errors else "see nbgrader's log"


def _notes_from_log(log: str) -> list[str]:
    if "CellTimeoutError" in log or "Timeout waiting for execute reply" in log:
        return ["a cell exceeded the time limit and was stopped"]
    return []


def _max_scores(course: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {name: float(gb.find_notebook(name, ASSIGNMENT).max_score)
                for name in exercise_names()}


# --------------------------------------------------------------------------------------
# The class
# --------------------------------------------------------------------------------------

def read_csv(path) -> list[Grade]:
    """The rows of a grades CSV written by :func:`write_csv` (empty if there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [Grade(r["student"], r["exercise"], float(r["score"]), float(r["max_score"]),
                      r.get("notes") or "") for r in csv.DictReader(fh)]


def write_csv(grades: list[Grade], out) -> None:
    """Write ``student,exercise,score,max_score,notes`` rows, atomically (a reader sees the
    old file or the new one, never a part)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for g in grades:
                w.writerow([g.student, g.exercise, f"{g.score:g}", f"{g.max_score:g}", g.notes])
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def grade(submissions, out=None, cell_timeout: int = 300, progress: bool = True,
          workdir: str | os.PathLike | None = None, jobs: int | None = None,
          sandboxed: bool = True, force: bool = False,
          executed: str | os.PathLike | None = None, limits: dict | None = None,
          feedback: str | os.PathLike | None = None) -> list[Grade]:
    """Autograde every student folder in ``submissions``; return one :class:`Grade` per
    student and exercise (a missing or ungradable notebook scores 0, with a note).

    Notebooks are graded by ``jobs`` workers (default: the number of CPU cores), each with
    its own temporary copy of the course.  With ``out``, the CSV is rewritten after each
    student, and students it already holds are skipped unless ``force``.  With
    ``executed``, each graded notebook is also saved there as it ran, with its outputs and
    every test (the hidden ones too: for the teacher, not for the students), as
    ``<executed>/<student folder>/<exercise>.ipynb``.  With ``feedback``, a page for the
    student is written as ``<feedback>/<student folder>/<exercise>.html``
    (:func:`feedback_page`).  ``sandboxed``
    runs every kernel in the bubblewrap sandbox (:mod:`recsys_helpers.sandbox`); it raises
    :class:`~recsys_helpers.sandbox.SandboxUnavailable` if the sandbox does not work.
    Raises :class:`GradingInterrupted` on SIGINT/SIGTERM (when called from the main
    thread), after stopping the workers and removing the temporary course.

    ``limits`` overrides some of :data:`LIMITS`, the resources each notebook may use:
    ``max_processes`` (processes and threads at once), ``memory`` (bytes), ``disk``
    (bytes in its scratch folder and /tmp together), ``max_output`` (bytes of output kept
    in the notebook) and ``wall_time`` (seconds); the sandbox enforces all but the output
    limit, which the grader applies.  A notebook that hits one keeps the points of the
    tests that passed before, with a note naming the limit.
    """
    from tqdm.auto import tqdm

    submissions = Path(submissions)
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions}: no such folder of submissions")
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise ValueError(f"{submissions} holds no student folders (one folder per student)")
    if sandboxed:
        problem = _sandbox.probe(workdir)
        if problem:
            raise _sandbox.SandboxUnavailable(problem)
    limits = {**LIMITS, **(limits or {})}
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise ValueError(f"unknown limits: {sorted(unknown)}")
    exercises = exercise_names()
    kept = [] if force or out is None else read_csv(out)
    done_before = {g.student for g in kept}
    names = {p.name for p in students}
    kept = [g for g in kept if g.student in names] if kept else []
    todo = [p for p in students if p.name not in done_before]
    ids = {folder: f"s{k:04d}" for k, folder in enumerate(todo)}  # never read as options
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo) * len(exercises) or 1))
    runner = _Runner()
    lock = threading.Lock()
    results: dict[str, list[Grade]] = {}
    pending = {folder.name: len(exercises) for folder in todo}
    order = {folder.name: k for k, folder in enumerate(students)}
    bar = tqdm(total=len(todo), desc="grading", unit="student", disable=not progress)

    def save():
        rows = kept + [g for s in results for g in results[s] if pending[s] == 0]
        rows.sort(key=lambda g: (order.get(g.student, -1), g.exercise))
        if out is not None:
            write_csv(rows, out)
        return rows

    root = Path(tempfile.mkdtemp(prefix="recsys-grade-", dir=workdir))
    os.chmod(root, 0o700)
    interrupted: list[int] = []
    previous = {}

    def on_signal(signum, frame):
        interrupted.append(signum)
        runner.stop()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        if todo:
            template = root / "course"
            _make_course(template, cell_timeout, sandboxed)
            generate_student_versions(template)  # records the tests and their checksums
            max_scores = _max_scores(template)
            tasks: queue.Queue = queue.Queue()
            for folder in todo:
                for name in exercises:
                    tasks.put((folder, name))

            def worker(k):
                course = root / f"worker{k}"
                shutil.copytree(template, course)
                work = root / f"jobs{k}"
                work.mkdir()
                while not runner.stopped:
                    try:
                        folder, name = tasks.get_nowait()
                    except queue.Empty:
                        return
                    row = _grade_one(course, work, folder, ids[folder], name, sandboxed,
                                     cell_timeout, runner, max_scores[name], executed, limits,
                                     feedback)
                    if row is None:
                        return
                    with lock:
                        results.setdefault(folder.name, []).append(row)
                        pending[folder.name] -= 1
                        if pending[folder.name] == 0:
                            save()
                            bar.update(1)

            threads = [threading.Thread(target=worker, args=(k,), daemon=True)
                       for k in range(jobs)]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        bar.close()
        if interrupted:
            raise GradingInterrupted(interrupted[0], sorted(
                [s for s in pending if pending[s] == 0] + sorted(done_before & names),
                key=order.get))
        return save()
    finally:
        runner.stop()
        shutil.rmtree(root, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _grade_one(course, work, folder, sid, name, sandboxed, cell_timeout, runner, max_score,
               executed=None, limits=None, feedback=None):
    try:
        return _grade_one_checked(course, work, folder, sid, name, sandboxed, cell_timeout,
                                  runner, max_score, executed, limits, feedback)
    except Exception as exc:  # the grader's own failure on this notebook: say so, go on
        return Grade(folder.name, name, 0.0, max_score,
                     f"could not be graded ({type(exc).__name__}: {exc})"[:300])


def _grade_one_checked(course, work, folder, sid, name, sandboxed, cell_timeout, runner,
                       max_score, executed=None, limits=None, feedback=None):
    path = folder / f"{name}.ipynb"
    if folder.is_symlink() or path.is_symlink():
        # (a link could point at any file the grader may read: the solutions, say)
        row = Grade(folder.name, name, 0.0, max_score,
                    "not graded: a symbolic link (submit the notebook file itself)")
        if feedback is not None:
            _write_feedback(feedback, row, None)
        return row
    if not path.is_file() or (nb_why := _read_submission(path))[0] is None:
        row = Grade(folder.name, name, 0.0, max_score,
                    "not submitted" if not path.is_file() else nb_why[1])
        if feedback is not None:
            _write_feedback(feedback, row, None)
        return row
    nb = nb_why[0]
    notes = _compare_with_release(nb, course / _RELEASE / ASSIGNMENT / f"{name}.ipynb",
                                  course / _SOURCE / ASSIGNMENT / f"{name}.ipynb")
    notes += _drop_copies(nb)
    try:
        score, more = _grade_notebook(course, work, sid, name, nb, sandboxed, cell_timeout,
                                      runner, limits)
    except Exception as exc:  # the grader's own failure on this notebook: say so, go on
        score, more = 0.0, [f"could not be graded ({type(exc).__name__}: {exc})"[:300]]
    if score is None:
        return None
    ran = course / "autograded" / sid / ASSIGNMENT / f"{name}.ipynb"
    if executed is not None and ran.is_file():
        (Path(executed) / folder.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ran, Path(executed) / folder.name / f"{name}.ipynb")
    row = Grade(folder.name, name, score, max_score, "; ".join(dict.fromkeys(notes + more)))
    if feedback is not None:
        _write_feedback(feedback, row, ran if ran.is_file() else None)
    return row


def _write_feedback(feedback, row: Grade, ran: Path | None) -> None:
    nb = nbformat.read(ran, as_version=4) if ran is not None else None
    page = Path(feedback) / row.student / f"{row.exercise}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(feedback_page(nb, row.student, row.exercise, row.score, row.max_score,
                                  row.notes), encoding="utf-8")


def grade_command(submissions, out="grades.csv", timeout: int = 300, jobs: int | None = None,
                  sandboxed: bool = True, force: bool = False, executed: str | None = None,
                  limits: dict | None = None, feedback: str | None = None) -> int:
    """The ``grade`` command: returns the process exit code."""
    try:
        grades = grade(submissions, out=out, cell_timeout=timeout, jobs=jobs,
                       sandboxed=sandboxed, force=force, executed=executed, limits=limits,
                       feedback=feedback)
    except _sandbox.SandboxUnavailable as exc:
        print(f"error: refusing to grade without a sandbox: {exc}; install bubblewrap "
              "(sudo apt-get install bubblewrap) or pass --no-sandbox for trusted code only",
              file=sys.stderr)
        return 2
    except GradingInterrupted as exc:
        print(f"grading {exc}: {len(exc.done)} student(s) graded and saved in {out}"
              f"{' (' + ', '.join(exc.done) + ')' if exc.done else ''}; the temporary "
              "course was removed; run the same command again to grade the others",
              file=sys.stderr)
        return 128 + exc.signum
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for g in grades:
        if g.notes:
            print(f"note: {g.student}/{g.exercise}: {g.notes}", file=sys.stderr)
    students = len({g.student for g in grades})
    print(f"wrote {out}: {students} student(s) x {len(exercise_names())} exercise(s)")
    return 0

"""What the grading tests share: reading and writing notebooks, students' answers, running
the ``grade`` command, the CSV it writes, and the processes it may leave."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from recsys_helpers.grading import ASSIGNMENT, EXERCISES_DIR
from recsys_helpers.sandbox import bwrap_path

SOURCE = EXERCISES_DIR / "solutions" / ASSIGNMENT
STUDENT = EXERCISES_DIR / "student" / ASSIGNMENT
needs_bwrap = pytest.mark.skipif(bwrap_path() is None,
                                 reason="bubblewrap (bwrap) is not installed: grading untrusted "
                                        "notebooks needs it (sudo apt-get install bubblewrap)")
# deaf to interrupts; it sleeps rather than spins, so the other notebooks graded meanwhile
# keep the CPU (a spinning loop is stopped the same way: tests/test_sandbox.py)
DEAF_LOOP = ("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
             "while True:\n    time.sleep(0.1)\n")


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

"""Autograding the chapter 5 exercises with nbgrader.

``python -m recsys_helpers grade SUBMISSIONS --out grades.csv`` grades a folder holding
one sub-folder per student, each with that student's exercise notebooks under their
original names (``exercise_5_1.ipynb`` ...).  It builds a temporary nbgrader course from
the committed source notebooks and configuration (``notebooks/exercises``), runs
``nbgrader autograde`` once per student in its own process with a per-cell time limit,
and reads the scores from nbgrader's gradebook.  A student whose notebook crashes, loops
forever or lost cells does not stop the others; a test cell a student edited is restored
by nbgrader from its checksummed original before grading, and reported.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ASSIGNMENT", "EXERCISES_DIR", "exercise_names", "grade", "grade_command",
           "generate_student_versions"]

ASSIGNMENT = "chapter5"
EXERCISES_DIR = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
_SOURCE = "solutions"
_RELEASE = "student"


@dataclass
class Grade:
    student: str
    exercise: str
    score: float
    max_score: float


def exercise_names() -> list[str]:
    """The exercise notebooks' names (without ``.ipynb``), in order."""
    return sorted(p.stem for p in (EXERCISES_DIR / _SOURCE / ASSIGNMENT).glob("*.ipynb"))


def _environment() -> dict:
    env = dict(os.environ)
    # nbgrader runs its database migrations with the `alembic` command of this environment.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["RECSYS_DATA"] = "sample"  # grade on the bundled sample: fast and the same for all
    env.pop("RECSYS_DATA_DIR", None)
    return env


def _nbgrader(args, cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=_environment(),
                          capture_output=True, text=True, timeout=timeout)


def _make_course(root: Path, cell_timeout: int) -> None:
    """A course folder with the committed configuration and source notebooks."""
    shutil.copytree(EXERCISES_DIR / _SOURCE / ASSIGNMENT, root / _SOURCE / ASSIGNMENT)
    config = (EXERCISES_DIR / "nbgrader_config.py").read_text(encoding="utf-8")
    config += f"\nc.Execute.timeout = {int(cell_timeout)}\n"
    (root / "nbgrader_config.py").write_text(config, encoding="utf-8")


def generate_student_versions(course: Path = EXERCISES_DIR) -> Path:
    """Run ``nbgrader generate_assignment`` in ``course``; return the student folder."""
    proc = _nbgrader(["generate_assignment", ASSIGNMENT, "--force"], cwd=course, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{proc.stdout}\n{proc.stderr}")
    return course / _RELEASE / ASSIGNMENT


def _student_id(name: str) -> str:
    sid = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip("._")
    return sid or "student"


def grade(submissions, cell_timeout: int = 300, progress: bool = True,
          workdir: str | os.PathLike | None = None, jobs: int | None = None
          ) -> tuple[list[Grade], list[str]]:
    """Autograde every student folder in ``submissions``.

    Students are split among ``jobs`` workers (default: the number of CPU cores), each
    with its own temporary nbgrader course and gradebook.  Returns ``(grades, problems)``:
    one :class:`Grade` per student and exercise (a missing or ungradable notebook scores
    0), and human-readable notes on what went wrong (crashes, time-outs, edited or deleted
    test cells), one per line.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    submissions = Path(submissions)
    if not submissions.is_dir():
        raise FileNotFoundError(f"{submissions}: no such folder of submissions")
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise ValueError(f"{submissions} holds no student folders (one folder per student)")
    ids = {}
    for folder in students:
        sid = _student_id(folder.name)
        while sid in ids.values():
            sid += "_"
        ids[folder] = sid
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(students)))
    bar = tqdm(total=len(students), desc="grading", unit="student", disable=not progress)

    def work(group):
        return _grade_group(group, ids, cell_timeout, workdir, bar)

    with ThreadPoolExecutor(jobs) as pool:  # the work happens in nbgrader's processes
        parts = list(pool.map(work, [students[k::jobs] for k in range(jobs)]))
    bar.close()
    order = {folder.name: k for k, folder in enumerate(students)}
    grades = sorted((g for part in parts for g in part[0]), key=lambda g: order[g.student])
    problems = sorted((p for part in parts for p in part[1]),
                      key=lambda p: order.get(p.split("/")[0].split(":")[0], 0))
    return grades, problems


def _grade_group(students, ids, cell_timeout, workdir, bar):
    """Grade some students in a temporary course of their own; return (grades, notes)."""
    exercises = exercise_names()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="recsys-grade-", dir=workdir) as tmp:
        course = Path(tmp)
        _make_course(course, cell_timeout)
        generate_student_versions(course)  # records the tests and their checksums
        for folder in students:
            sid = ids[folder]
            target = course / "submitted" / sid / ASSIGNMENT
            target.mkdir(parents=True)
            for name in exercises:
                if (folder / f"{name}.ipynb").is_file():
                    shutil.copy2(folder / f"{name}.ipynb", target / f"{name}.ipynb")
                    problems.extend(_compare_with_release(
                        folder / f"{name}.ipynb", course / _RELEASE / ASSIGNMENT / f"{name}.ipynb",
                        f"{folder.name}/{name}"))
                else:
                    problems.append(f"{folder.name}/{name}.ipynb: not submitted")
            try:
                proc = _nbgrader(["autograde", ASSIGNMENT, "--student", sid, "--force",
                                  "--create"], cwd=course,
                                 timeout=cell_timeout * 60 + 600)
                log = proc.stdout + proc.stderr
                if proc.returncode != 0:
                    problems.append(f"{folder.name}: nbgrader could not grade every notebook "
                                    f"({_last_error(log)})")
            except subprocess.TimeoutExpired:
                log = ""
                problems.append(f"{folder.name}: grading exceeded its overall time limit")
            problems.extend(_notes_from_log(folder.name, log))
            bar.update(1)
        grades = _read_gradebook(course, students, ids, exercises)
    return grades, problems


def _last_error(log: str) -> str:
    errors = [line for line in log.splitlines() if "ERROR" in line]
    return errors[-1].split("]", 1)[-1].strip()[:200] if errors else "see nbgrader's log"


def _grade_cells(nb) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade_id")}


def _compare_with_release(submitted: Path, release: Path, label: str) -> list[str]:
    """Notes on cells the student must not change: edited read-only cells, deleted tests.

    (nbgrader restores read-only cells from the source before grading, so an edit earns
    nothing; the note tells the teacher it happened.)
    """
    import nbformat

    try:
        mine = _grade_cells(nbformat.read(submitted, as_version=4))
    except Exception as exc:  # unreadable JSON: nbgrader will fail on it too
        return [f"{label}: not a readable notebook ({type(exc).__name__})"]
    notes = []
    for gid, cell in _grade_cells(nbformat.read(release, as_version=4)).items():
        meta = cell.metadata["nbgrader"]
        if gid not in mine:
            if meta.get("grade"):
                notes.append(f"{label}: test cell {gid} was deleted; its points are lost")
        elif meta.get("locked") and mine[gid].source.strip() != cell.source.strip():
            kind = "test cell" if meta.get("grade") else "read-only cell"
            notes.append(f"{label}: {kind} {gid} was edited; nbgrader restored the original "
                         "before grading")
    return notes


def _notes_from_log(student: str, log: str) -> list[str]:
    notes = []
    current = None
    for line in log.splitlines():
        m = re.search(r"(?:autograded|submitted)/[^/]+/[^/]+/([^/\s]+)\.ipynb", line)
        if m:
            current = m.group(1)
        if "CellTimeoutError" in line or "Timeout waiting for execute reply" in line:
            notes.append(f"{student}/{current}: a cell exceeded the time limit and was stopped")
    return list(dict.fromkeys(notes))


def _read_gradebook(course: Path, students, ids, exercises) -> list[Grade]:
    from nbgrader.api import Gradebook, MissingEntry

    rows = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for folder in students:
            for name in exercises:
                max_score = float(gb.find_notebook(name, ASSIGNMENT).max_score)
                try:
                    nb = gb.find_submission_notebook(name, ASSIGNMENT, ids[folder])
                    score = float(nb.score)
                except MissingEntry:
                    score = 0.0
                rows.append(Grade(folder.name, name, score, max_score))
    return rows


def write_csv(grades: list[Grade], out) -> None:
    """Write ``student,exercise,score,max_score`` rows."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "exercise", "score", "max_score"])
        for g in grades:
            w.writerow([g.student, g.exercise, f"{g.score:g}", f"{g.max_score:g}"])


def grade_command(submissions, out="grades.csv", timeout=300, jobs=None) -> int:
    """The ``grade`` command: returns the process exit code."""
    try:
        grades, problems = grade(submissions, cell_timeout=timeout, jobs=jobs)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_csv(grades, out)
    for p in problems:
        print(f"note: {p}", file=sys.stderr)
    students = len({g.student for g in grades})
    print(f"wrote {out}: {students} student(s) x {len(exercise_names())} exercise(s)")
    return 0

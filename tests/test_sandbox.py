"""The bubblewrap sandbox that confines a student's kernel while grading.

Each test runs a small Python program inside a real sandbox and checks what it could and
could not do.  Skipped where bubblewrap is not installed.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys_helpers.datasets import bundled_dir, load_reviews
from recsys_helpers.sandbox import BLOCKED, PACKAGE_DIR, Sandbox, bwrap_path, probe

pytestmark = [pytest.mark.grading,  # starts sandboxed kernels: seconds each
              pytest.mark.skipif(bwrap_path() is None,
                                 reason="bubblewrap (bwrap) is not installed: "
                                        "sudo apt-get install bubblewrap")]

REPO = PACKAGE_DIR.parent


def _inside(tmp_path, code, exercise="", **kwargs):
    box = Sandbox(tmp_path / "box", exercise=exercise, readable=[bundled_dir()], **kwargs)
    try:
        return box, box.run([sys.executable, "-c", code], timeout=120)
    finally:
        box.cleanup()


def test_probe_finds_a_working_sandbox(tmp_path):
    assert probe(tmp_path) is None


def test_no_network_no_repository_no_home(tmp_path):
    code = f"""
import json, os, socket
seen = {{}}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3).close(); seen["net"] = True
except OSError as exc:
    seen["net"] = False
for p in [{str(REPO / ".git")!r}, {str(REPO / "notebooks")!r}, {str(REPO / "README.md")!r},
          "/root/.ssh", "/etc/shadow", "/home"]:
    seen[p] = os.path.exists(p)
seen["repo"] = sorted(os.listdir({str(REPO)!r}))
seen["tmp"] = os.listdir("/tmp")
seen["env"] = sorted(os.environ)
print(json.dumps(seen))
"""
    os.environ["RECSYS_SECRET_TEST"] = "x"
    try:
        box, proc = _inside(tmp_path, code)
    finally:
        os.environ.pop("RECSYS_SECRET_TEST")
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen.pop("net") is False
    # the package, the data and the virtual environment, where it lies in the repository
    venv = Path(sys.prefix).resolve()
    venv_here = {venv.relative_to(REPO).parts[0]} if venv.is_relative_to(REPO) else set()
    assert set(seen.pop("repo")) <= {"recsys_helpers", "data"} | venv_here
    # a private /tmp: nothing of the real one but the folders leading to the scratch folder
    # (and, for a repository cloned under /tmp, the folder leading to its bound parts)
    bound = [str(tmp_path), str(box.sockets), str(REPO)]
    assert all(any(b == f"/tmp/{name}" or b.startswith(f"/tmp/{name}/") for b in bound)
               or str(tmp_path).startswith(f"/tmp/{name}") for name in seen.pop("tmp"))
    assert "RECSYS_SECRET_TEST" not in seen.pop("env")  # not the grader's environment
    assert not any(seen.values()), seen


def test_writes_only_in_the_scratch_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    read_only = [bundled_dir() / "goodreads_fantasy.tsv", PACKAGE_DIR / "metrics.py",
                 bundled_dir() / ".x.cache.npz", "/usr/x", f"{sys.prefix}/x", REPO / "x"]
    code = f"""
import os
written = []
for p in {[str(p) for p in read_only] + [str(outside)]!r}:
    try:
        open(p, "a").close()
        written.append(p)
    except OSError:
        pass
print(written)
open(os.path.join(os.environ["HOME"], "mine.txt"), "w").write("ok")
"""
    before = (bundled_dir() / "goodreads_fantasy.tsv").stat().st_mtime_ns
    box, proc = _inside(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    # Under /tmp the sandbox has a private tmpfs: a write there (e.g. beside the scratch
    # folder, or into a repository cloned under /tmp) lands in it and vanishes with it.
    written = ast.literal_eval(proc.stdout.strip())
    assert all(p.startswith("/tmp/") for p in written), written
    assert not any(Path(p).exists() for p in written), "a write reached the real files"
    assert (box.scratch / "mine.txt").read_text() == "ok"
    assert not outside.exists() and not (REPO / "x").exists()
    assert (bundled_dir() / "goodreads_fantasy.tsv").stat().st_mtime_ns == before


def test_loading_from_a_read_only_folder_without_a_load_cache(tmp_path):
    """The grader's view of data/ in a fresh checkout: the kernel cannot write its load
    cache beside the file, parses the file and keeps the cache in its own folder."""
    comics = "goodreads_reviews_comics_graphic.json.gz"
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(bundled_dir() / comics, folder)
    code = f"""
from recsys_helpers.datasets import load_reviews
print(len(load_reviews({str(folder / comics)!r}, ["user_id", "book_id"])))
"""
    box = Sandbox(tmp_path / "box", readable=[folder])
    try:
        proc = box.run([sys.executable, "-c", code], timeout=120)
    finally:
        box.cleanup()
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = len(load_reviews(bundled_dir() / comics, ["user_id", "book_id"]))
    assert int(proc.stdout.split()[-1]) == expected
    assert sorted(p.name for p in folder.iterdir()) == [comics]  # nothing written there


def test_own_pid_namespace_and_nothing_survives(tmp_path):
    marker = tmp_path / "box" / "scratch" / "alive"
    code = f"""
import os, subprocess, sys
print(len([p for p in os.listdir("/proc") if p.isdigit()]))
# a detached grandchild that would write a file two seconds later
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2); open({str(marker)!r}, 'w')"],
                 start_new_session=True)
"""
    _, proc = _inside(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[0]) <= 3  # bwrap's init, python (and its ps child)
    time.sleep(3)
    assert not marker.exists(), "a process outlived the sandbox"


def test_the_kernel_dies_with_its_parent(tmp_path):
    marker = tmp_path / "box" / "scratch" / "alive"
    box = Sandbox(tmp_path / "box")
    code = f"import time; time.sleep(3); open({str(marker)!r}, 'w')"
    # a parent that starts the sandbox and is killed at once
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); "
                               "time.sleep(30)", *box.command([sys.executable, "-c", code])])
    time.sleep(1.0)
    parent.kill()
    parent.wait()
    time.sleep(3.5)
    box.cleanup()
    assert not marker.exists(), "the sandboxed process outlived its parent"


def test_cpu_time_limit_kills_a_spinning_kernel(tmp_path):
    start = time.monotonic()
    _, proc = _inside(tmp_path, "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
                                "while True: pass", cpu_seconds=2)
    assert proc.returncode != 0
    assert time.monotonic() - start < 30


def test_memory_limit(tmp_path):
    _, proc = _inside(tmp_path, "b = bytearray(3 * 2**30)", memory_bytes=2 * 2**30)
    assert proc.returncode != 0 and "MemoryError" in proc.stderr


@pytest.mark.parametrize("exercise", sorted(BLOCKED))
def test_finished_versions_are_blocked_and_the_rest_works(tmp_path, exercise):
    names = [(m, n) for m, ns in BLOCKED[exercise].items() for n in ns]
    code = f"""
import importlib, os
from recsys_helpers import load
from recsys_helpers.interactions import Interactions
from recsys_helpers.metrics import auc_exact, precision_recall_at_k
assert len(load("fantasy_tsv")) > 0
for module, name in {names!r}:
    mod = importlib.reload(importlib.import_module("recsys_helpers." + module))
    try:
        getattr(mod, name)(1, 2)
        print("available", name)
    except Exception as exc:
        print(type(exc).__name__)
    source = open(mod.__file__).read()
    assert f"def {{name}}(" not in source and f"class {{name}}(" not in source
    cache = os.path.join(os.path.dirname(mod.__file__), "__pycache__")
    assert not os.path.isdir(cache) or not os.listdir(cache)  # no compiled finished version
print("ok")
"""
    _, proc = _inside(tmp_path, code, exercise=exercise)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-len(names) - 1:] == ["NotAvailableWhileGrading"] * len(names) + ["ok"]

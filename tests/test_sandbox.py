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
import tempfile
import time
from pathlib import Path

import pytest

from recsys_helpers import sandbox
from recsys_helpers.datasets import bundled_dir, load_reviews
from recsys_helpers.sandbox import (
    ADDRESS_SPACE_HEADROOM,
    BLOCKED,
    PACKAGE_DIR,
    SANDBOX_UID,
    Sandbox,
    bwrap_path,
    probe,
)

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
    # a private /tmp: nothing of the real one but the folders leading to what the sandbox
    # binds: the scratch folder, the sockets, and wherever they lie (a repository cloned
    # under /tmp, a virtual environment or a Python installed there) the package, the
    # environment (by its own path and by the one its scripts use) and the interpreter
    python = [sys.prefix, os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix),
              os.path.dirname(os.path.realpath(sys.executable))]
    bound = [str(tmp_path), str(box.sockets), str(REPO), *python]
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
    # one process: an allocation beyond its address-space limit fails at once
    space = 2**30 + ADDRESS_SPACE_HEADROOM
    _, proc = _inside(tmp_path, f"b = bytearray({space + 2**30})", memory_bytes=2**30)
    assert proc.returncode != 0 and "MemoryError" in proc.stderr
    # all the processes together: children each within it, together beyond, are stopped
    code = ("import os, time\n"
            "for _ in range(3):\n"
            "    if os.fork() == 0:\n"
            "        block = b'x' * (200 * 2**20)\n"
            "        time.sleep(20)\n"
            "        os._exit(0)\n"
            "time.sleep(20)\n")
    start = time.monotonic()
    box, proc = _inside(tmp_path / "together", code, memory_bytes=400 * 2**20)
    assert proc.returncode == 137 and time.monotonic() - start < 15
    assert box.limit_notes() == ["exceeded the memory limit (400 MiB for all its processes "
                                 "together): the kernel was stopped, and the tests from "
                                 "there on score 0"]


_FORK_LOOP = """
import os, resource, threading, time
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (resource.RLIM_INFINITY,) * 2)
    print("raised")
except (ValueError, OSError):
    pass
forked = threads = 0
for _ in range(300):
    try:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        forked += 1
    except OSError:
        break
for _ in range(300):
    try:
        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
        threads += 1
    except RuntimeError:
        break
print(forked, threads, os.getuid(), flush=True)
time.sleep(1)
"""


def test_process_limit(tmp_path):
    box, proc = _inside(tmp_path, _FORK_LOOP, max_processes=32)
    assert proc.returncode == 0, proc.stderr
    forked, threads, uid = map(int, proc.stdout.split())
    assert 20 < forked < 32 and threads == 0  # with bwrap's init and the process itself
    assert box.limit_notes() == ["reached the process limit (32 processes and threads at "
                                 "once): further ones were refused"]
    # a root grader runs the sandbox as an unprivileged user: root is exempt from the limit
    assert uid == (SANDBOX_UID if os.geteuid() == 0 else os.getuid())


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/usr/bin/python3", os.X_OK),
                    reason="runs a grader as an unprivileged user: needs root and a Python "
                           "any user can run")
def test_process_limit_for_an_unprivileged_grader(tmp_path):
    """The path of a grader that is not root (as CI may be): the limit set inside the
    sandbox counts the sandbox's processes only, not the grader's user's others."""
    # a folder the unprivileged user can reach (pytest's are private to root)
    work = Path(tempfile.mkdtemp(prefix="recsys-unprivileged-", dir="/tmp"))
    os.chown(work, SANDBOX_UID, SANDBOX_UID)
    (work / "loop.py").write_text(_FORK_LOOP)
    code = f"""
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("sandbox", {str(PACKAGE_DIR / "sandbox.py")!r})
sandbox = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)
box = sandbox.Sandbox({str(work)!r} + "/BOX", max_processes=32)
proc = box.run([sys.executable, "-c", open({str(work / "loop.py")!r}).read()], timeout=60)
box.cleanup()
print(proc.returncode, proc.stdout.strip(), sandbox.json.dumps(box.limit_notes()))
print(proc.stderr, file=sys.stderr)
"""
    try:
        # a second sandbox of the same user runs meanwhile: each has its own count
        runs = [subprocess.Popen(["/usr/bin/python3", "-I", "-c", code.replace("BOX", f"box{k}")],
                                 user=SANDBOX_UID, group=SANDBOX_UID, extra_groups=[],
                                 cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for k in range(2)]
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert out, err
            code_, forked, threads, uid, notes = out.split(maxsplit=4)
            assert code_ == "0", err
            assert 20 < int(forked) < 32 and int(uid) == SANDBOX_UID, out
            assert "reached the process limit (32 processes" in notes
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("where", ["tmp", "unsized-tmp", "scratch", "hidden"])
def test_disk_limit(tmp_path, where, monkeypatch):
    """/tmp (a tmpfs of the limit's size; unsized with bubblewrap < 0.8), the scratch
    folder, and what its size does not show (POSIX shared memory, memfd_create's files,
    unlinked files) count together."""
    if where == "unsized-tmp":
        monkeypatch.setattr(sandbox, "_bwrap_has_size", lambda bwrap: False)
    fill = {"tmp": "for k in range(6): open(f'/tmp/f{k}', 'wb').write(chunk)",
            "unsized-tmp": "for k in range(6): open(f'/tmp/f{k}', 'wb').write(chunk)",
            "scratch": "for k in range(6): open(f'f{k}', 'wb').write(chunk)",
            "hidden": ("a = open('/dev/shm/x', 'wb'); a.write(chunk); a.flush()\n"
                       "b = os.memfd_create('x'); os.write(b, chunk)\n"
                       "c = open('gone', 'wb'); os.unlink('gone'); c.write(chunk); c.flush()")}
    code = "import os, time\nchunk = b'x' * (12 * 2**20)\ntry:\n    " + fill[where].replace(
        "\n", "\n    ") + "\nexcept OSError as exc:\n    print(exc)\ntime.sleep(10)\n"
    start = time.monotonic()
    box, proc = _inside(tmp_path, code, disk_bytes=32 * 2**20)
    assert proc.returncode == 137 and time.monotonic() - start < 8, proc.stderr
    assert box.limit_notes() == ["exceeded the disk limit (32 MiB for its scratch folder and "
                                 "/tmp together): the kernel was stopped, and the tests from "
                                 "there on score 0"]


def test_a_file_beyond_the_disk_limit_is_refused_and_dev_is_read_only(tmp_path):
    code = """
import os
for path in ["big", "/tmp/big", "/dev/shm/big"]:
    try:
        open(path, "wb").write(b"x" * (40 * 2**20))
        print("wrote", path)
    except OSError as exc:
        print(exc.errno)
    if os.path.exists(path):
        os.unlink(path)
try:
    open("/dev/mine", "w")
except OSError as exc:
    print(exc.errno)
open("/dev/null", "w").write("fine")
"""
    _, proc = _inside(tmp_path, code, disk_bytes=32 * 2**20)
    assert proc.returncode == 0, proc.stderr
    import errno
    assert proc.stdout.split() == [str(errno.EFBIG)] * 3 + [str(errno.EROFS)]


def test_system_v_shared_memory_is_refused(tmp_path):
    """Its segments outlive every mapping, out of the memory watchdog's sight."""
    code = """
import ctypes, errno, multiprocessing
libc = ctypes.CDLL(None, use_errno=True)
for call in (lambda: libc.shmget(0, 2**20, 0o1600), lambda: libc.msgget(0, 0o1600)):
    print(call(), errno.errorcode.get(ctypes.get_errno()))
multiprocessing.Lock()  # POSIX semaphores, in /dev/shm, work
print("ok")
"""
    _, proc = _inside(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["-1", "EPERM", "-1", "EPERM", "ok"]


def test_no_process_reads_or_writes_another_ones_memory(tmp_path):
    """A child of the kernel could otherwise attach to it and change a check while it runs."""
    code = """
import ctypes, errno, os, time
libc = ctypes.CDLL(None, use_errno=True)
parent = os.getpid()
child = os.fork()
if child == 0:
    print(libc.ptrace(16, parent, 0, 0), errno.errorcode.get(ctypes.get_errno()), flush=True)  # ATTACH
    buf = ctypes.create_string_buffer(8)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
    remote = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
    print(libc.process_vm_readv(parent, local, 1, remote, 1, 0),
          errno.errorcode.get(ctypes.get_errno()), flush=True)
    os._exit(0)
os.waitpid(child, 0)
"""
    _, proc = _inside(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["-1", "EPERM", "-1", "EPERM"]


def test_wall_time_limit(tmp_path):
    start = time.monotonic()
    box, proc = _inside(tmp_path, "import time\ntime.sleep(60)", wall_seconds=1)
    assert proc.returncode == 137 and time.monotonic() - start < 5
    assert box.limit_notes() == ["exceeded the wall-time limit (1 s): the kernel was stopped, "
                                 "and the tests from there on score 0"]


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

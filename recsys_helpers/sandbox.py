"""A confined Jupyter kernel for grading untrusted notebooks, with bubblewrap.

The grader (nbgrader, its gradebook, the solutions, the other students' files, the output
CSV) stays outside; only the student's kernel runs inside a `bubblewrap
<https://github.com/containers/bubblewrap>`_ sandbox, started through a kernelspec whose
``argv`` wraps ``python -m ipykernel_launcher -f {connection_file}`` in ``bwrap``.
jupyter_client talks to it over IPC sockets in a folder of its own.

Inside the sandbox the kernel sees:

* the system (``/usr`` and the few files of ``/etc`` programs need), the Python installation
  and the virtual environment, read-only;
* from the course repository only the ``recsys_helpers`` package and the bundled data,
  read-only (not the solutions, not ``.git``, not the notebooks);
* its own scratch folder, the only place it may write (its ``HOME`` and working folder),
  besides a private ``/tmp`` and ``/dev/shm`` (tmpfs of the disk limit's size);
* its own PID namespace (it sees only its own processes), no network, no environment
  variables of the grader, all capabilities dropped, a read-only ``/dev`` (but its
  devices), no System V shared memory or message queues (a seccomp filter).

It dies with the grader (``--die-with-parent``; killing the namespace's first process
kills every process in it).  Its launcher (this module run as a script, outside the
sandbox; see the comment above :func:`_launch`) bounds its processes and threads, memory,
disk, CPU time per process and wall time (:data:`LIMITS`), run as an unprivileged user
when the grader is root, and writes the limits it hit to a file the grader reads.  For the
exercise being graded, the package's finished versions of what the student must write
(:data:`BLOCKED`) are replaced, inside the sandbox only, by stubs that raise
:class:`NotAvailableWhileGrading`.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["BLOCKED", "KERNEL_NAME", "LIMITS", "NotAvailableWhileGrading", "pss",
           "SandboxUnavailable", "Sandbox", "bwrap_path", "parse_size", "probe"]

#: Name of the sandboxed kernelspec written for each graded notebook.
KERNEL_NAME = "recsys-sandbox"

#: Per exercise: ``{module of recsys_helpers: [names]}`` the student must write
#: themselves; inside that exercise's sandbox they raise :class:`NotAvailableWhileGrading`.
BLOCKED: dict[str, dict[str, list[str]]] = {
    "exercise_5_1": {"metrics": ["mse"], "models": ["LatentFactorModel"]},
    "exercise_5_4": {"metrics": ["auc_sampled"]},
}

PACKAGE_DIR = Path(__file__).resolve().parent

# Files of /etc that Python, numpy, matplotlib and TensorFlow read; nothing else of /etc
# (no shadow files, keys or configuration of the teacher's machine) is visible.
_ETC = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
        "timezone", "fonts", "passwd", "group", "nsswitch.conf", "hosts", "mime.types",
        "ssl", "ca-certificates", "os-release", "debian_version", "python3", "matplotlibrc"]

# Run by bwrap inside the sandbox, before the kernel: the process limit.  Set here, after
# bwrap created the sandbox's user namespace, it counts the sandbox's own processes and
# threads only (Linux >= 5.14 counts RLIMIT_NPROC per user namespace); set before, it would
# count every process of the grader's user.
_INNER = ("import os, resource, sys\n"
          "n = int(sys.argv[1])\n"
          "resource.setrlimit(resource.RLIMIT_NPROC, (n, n))\n"
          "os.execv(sys.argv[2], sys.argv[2:])\n")

#: What each process's address space may exceed the memory limit by: TensorFlow reserves
#: far more address space than it uses (its JIT fails under a 3 GiB limit), so the limit
#: that matters is the watchdog's, on the memory all the sandbox's processes hold.
ADDRESS_SPACE_HEADROOM = 6 * 2**30

#: The unprivileged user a root grader runs the sandbox as: the kernel exempts root's
#: processes (kuid 0) from RLIMIT_NPROC, even inside a user namespace.
SANDBOX_UID = 65534

#: The default limits of one graded notebook (``grade``'s options of the same names).
LIMITS = {
    "max_processes": 256,      # processes and threads at once
    "memory": 4 * 2**30,       # bytes resident, all the notebook's processes together
    "disk": 2**30,             # bytes in the scratch folder and /tmp together
    "max_output": 8 * 2**20,   # bytes of output stored in the notebook
    "wall_time": 1800,         # seconds the kernel may live
}


def parse_size(text) -> int:
    """Bytes from ``"64M"``, ``"1G"``, ``"1.5GiB"``, ``"512k"`` or a plain number (binary
    units: 1K = 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text), flags=re.I)
    if not m:
        raise ValueError(f"not a size: {text!r} (examples: 64M, 1G, 1073741824)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create a sandbox on this machine."""


class NotAvailableWhileGrading(RuntimeError):
    """Raised by the package's functions that an exercise asks the student to write."""


def bwrap_path() -> str | None:
    """The ``bwrap`` executable, or None."""
    return shutil.which("bwrap")


def _real(path) -> str:
    return os.path.realpath(path)


def _blocked_source(module: str, names: list[str], exercise: str) -> str:
    """The module's source with the top-level definitions of ``names`` replaced by stubs.

    The definitions are removed, not wrapped, so that nothing inside the sandbox holds the
    finished version (not a closure, not a subclass registry)."""
    path = PACKAGE_DIR / f"{module}.py"
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    spans = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.name in names:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            spans.append((start, node.end_lineno, node.name))
    missing = set(names) - {name for *_, name in spans}
    if missing:
        raise ValueError(f"recsys_helpers.{module} defines no {sorted(missing)}")
    for start, end, name in sorted(spans, reverse=True):
        lines[start - 1:end] = [f"{name} = _not_available({name!r})\n"]
    header = (
        "from recsys_helpers.sandbox import NotAvailableWhileGrading as _NotAvailable\n\n\n"
        "def _not_available(name):\n"
        "    def not_available(*args, **kwargs):\n"
        f"        raise _NotAvailable(f'recsys_helpers.{module}.{{name}} is not available while "
        f"grading {exercise}: this exercise asks you to write it yourself')\n"
        "    not_available.__name__ = name\n"
        "    return not_available\n\n\n")
    # after the module docstring and `from __future__` imports, which must come first
    tree = ast.parse(source)
    body_start = 0
    for node in tree.body:
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)) or (
                isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            body_start = node.end_lineno
            continue
        break
    shift = sum(1 for start, *_ in spans if start <= body_start)  # never: defs come later
    assert shift == 0
    lines[body_start:body_start] = ["\n", header]
    return "".join(lines)


def _size_text(n: int) -> str:
    """``n`` bytes in words: 64 MiB, 1 GiB, 1.5 GiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} bytes"


@functools.cache
def _bwrap_has_size(bwrap: str) -> bool:
    """Whether this bubblewrap sizes a tmpfs (``--size``, bubblewrap >= 0.8)."""
    try:
        return "--size" in subprocess.run([bwrap, "--help"], capture_output=True, text=True,
                                          timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def _reachable(path: str) -> bool:
    """Whether any user may walk down to ``path`` (every folder above it is o+x)."""
    parts = Path(path).parts
    for k in range(1, len(parts)):
        try:
            if not os.stat(Path(*parts[:k])).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


class Sandbox:
    """The bubblewrap confinement of one kernel: its scratch folder, the kernelspec that
    starts it, the stubs of the exercise's blocked functions, and its resource limits.

    Parameters
    ----------
    root
        A folder of the grader's (outside the sandbox) for this kernel: it receives
        ``scratch/`` (the only folder the kernel may write), ``kernels/`` (the kernelspec:
        put ``root`` on ``JUPYTER_PATH``), ``stubs/``, ``launch.json`` (the limits, for the
        launcher) and ``limits.json`` (the limits the kernel hit, see :meth:`limit_notes`).
    exercise
        The exercise graded (a key of :data:`BLOCKED`, or any other name for none).
    cpu_seconds
        CPU-time limit of each process (a process is killed beyond it).
    memory_bytes
        Memory limit: the resident memory of all the sandbox's processes together (the
        sandbox is stopped beyond it); each process's address space is limited to it plus
        :data:`ADDRESS_SPACE_HEADROOM` (allocations beyond fail); 0 for none.
    max_processes
        Processes and threads the sandbox may run at once (more are refused).
    disk_bytes
        Bytes the sandbox may store, in its scratch folder and its ``/tmp`` together (each
        file or folder counts at least 4 KiB); ``/tmp`` is a tmpfs of that size (RAM), and
        the kernel is stopped when the two together exceed it.
    wall_seconds
        Wall-clock time the kernel may live (it is stopped beyond it); 0 for none.
    readable
        Further folders to show read-only (for example the bundled data).
    """

    def __init__(self, root, exercise: str = "", cpu_seconds: int = 900,
                 memory_bytes: int = 4 * 2**30, readable=(), max_processes: int = 256,
                 disk_bytes: int = 2**30, wall_seconds: float = 0, environ=None):
        bwrap = bwrap_path()
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
        self.bwrap = bwrap
        self.root = Path(root).resolve()
        self.scratch = self.root / "scratch"
        self.exercise = exercise
        self.cpu_seconds = int(cpu_seconds)
        self.memory_bytes = int(memory_bytes)
        self.max_processes = int(max_processes)
        self.disk_bytes = int(disk_bytes)
        self.wall_seconds = float(wall_seconds or 0)
        self.readable = [Path(p).resolve() for p in readable]
        self.environ = dict(environ or {})  # further variables for the kernel
        self.scratch.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        # the kernel's IPC sockets: a Unix socket's path has at most 107 bytes, so they live
        # in a short folder of their own (shown to the kernel, writable)
        base = tempfile.gettempdir()
        base = base if len(base) < 40 else "/tmp"
        self.sockets = Path(tempfile.mkdtemp(prefix="rk", dir=base))
        # a root grader runs bwrap as SANDBOX_UID, which cannot walk into the grader's
        # private folders: the launcher shows them to it through mount points made here
        self.stage = None
        if os.geteuid() == 0:
            for folder in (base, "/tmp", "/var/tmp", "/dev/shm"):
                if os.path.isdir(folder) and _reachable(os.path.join(folder, "x")):
                    self.stage = Path(tempfile.mkdtemp(prefix="rs", dir=folder))
                    os.chmod(self.stage, 0o755)
                    break
            else:
                raise SandboxUnavailable("no folder that an unprivileged user can reach for "
                                         "the sandbox's mount points")

    def cleanup(self) -> None:
        """Remove the sockets' folder and the mount points (the caller removes ``root``)."""
        shutil.rmtree(self.sockets, ignore_errors=True)
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)

    def limit_notes(self) -> list[str]:
        """The limits the sandbox's processes hit, in words (written by the launcher)."""
        try:
            return list(json.loads((self.root / "limits.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return []

    # -- the command line ---------------------------------------------------------------
    def _stubs(self) -> list[str]:
        args = []
        blocked = BLOCKED.get(self.exercise, {})
        if not blocked:
            return args
        stubs = self.root / "stubs"
        stubs.mkdir(exist_ok=True)
        for module, names in blocked.items():
            stub = stubs / f"{module}.py"
            stub.write_text(_blocked_source(module, names, self.exercise), encoding="utf-8")
            args += ["--ro-bind", str(stub), str(PACKAGE_DIR / f"{module}.py")]
        return args

    def bwrap_args(self) -> list[str]:
        """bwrap's options (everything before the confined command)."""
        prefix, base = _real(sys.prefix), _real(sys.base_prefix)
        exe_dir = os.path.dirname(_real(sys.executable))
        # /tmp: a tmpfs of the disk limit's size, where bubblewrap can size it; elsewhere
        # an unsized one, which the launcher measures with the scratch folder
        size = (["--size", str(self.disk_bytes)] if self.disk_bytes and
                _bwrap_has_size(self.bwrap) else [])
        tmp = [*size, "--tmpfs", "/tmp"]
        # /dev: read-only but its devices, and /dev/shm (POSIX shared memory) sized as /tmp
        shm = [*size, "--tmpfs", "/dev/shm"]
        args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--clearenv", *tmp, "--proc", "/proc", "--dev", "/dev", *shm, "--remount-ro", "/dev",
                "--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            p = Path("/") / name
            if p.is_symlink():
                args += ["--symlink", os.readlink(p), str(p)]
            elif p.is_dir():
                args += ["--ro-bind", str(p), str(p)]
        for name in _ETC:
            if os.path.exists(f"/etc/{name}"):
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        seen = set()
        for folder in (base, prefix, exe_dir, *map(str, self.readable), str(PACKAGE_DIR)):
            if folder not in seen and not folder.startswith("/usr/"):
                seen.add(folder)
                args += ["--ro-bind", folder, folder]
        if sys.prefix != _real(sys.prefix):  # the venv by the path its scripts use
            args += ["--ro-bind", prefix, sys.prefix]
        # the package's compiled files hold the finished versions of blocked functions
        pycache = PACKAGE_DIR / "__pycache__"
        if BLOCKED.get(self.exercise) and pycache.is_dir():
            empty = self.root / "empty"
            empty.mkdir(exist_ok=True)
            args += ["--ro-bind", str(empty), str(pycache)]
        args += self._stubs()
        home = str(self.scratch)
        args += ["--bind", str(self.sockets), str(self.sockets)]
        args += ["--bind", home, home, "--chdir", home,
                 "--remount-ro", "/"]  # the folders bwrap made for the mount points
        env = {"HOME": home, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "PATH": os.pathsep.join([os.path.join(sys.prefix, "bin"), "/usr/bin", "/bin"]),
               "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
               "MPLCONFIGDIR": f"{home}/.config/matplotlib", "MPLBACKEND": "agg",
               "IPYTHONDIR": f"{home}/.ipython", "XDG_CACHE_HOME": f"{home}/.cache",
               "RECSYS_DATA": "sample", "TF_CPP_MIN_LOG_LEVEL": "2"}
        # one thread per pool: the grader runs --jobs notebooks at once (by default one per
        # core), so larger pools would only contend for the cores (and spend the process
        # limit on threads)
        threads = "1"
        env.update({k: threads for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                         "MKL_NUM_THREADS", "TF_NUM_INTEROP_THREADS",
                                         "TF_NUM_INTRAOP_THREADS")})
        if sys.prefix != sys.base_prefix:
            env["VIRTUAL_ENV"] = sys.prefix
        env.update(self.environ)
        for key, value in env.items():
            args += ["--setenv", key, value]
        return args

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run in the sandbox, under the resource limits: the launcher (this
        module run as a script, outside the sandbox) starts bwrap and watches it."""
        config = self.root / "launch.json"
        config.write_text(json.dumps({
            "cpu": self.cpu_seconds, "memory": self.memory_bytes, "disk": self.disk_bytes,
            "processes": self.max_processes, "wall": self.wall_seconds,
            "watch": [str(self.scratch), str(self.sockets)],
            "stage": str(self.stage) if self.stage else None,
            "own": [str(self.scratch), str(self.sockets)],
            "notes": str(self.root / "limits.json")}), encoding="utf-8")
        inner = [sys.executable, "-I", "-S", "-c", _INNER, str(self.max_processes), *argv]
        return [sys.executable, "-I", "-S", str(Path(__file__).resolve()), str(config),
                self.bwrap, *self.bwrap_args(), "--", *inner]

    # -- the kernel -----------------------------------------------------------------------
    def write_kernelspec(self) -> Path:
        """Write ``root/kernels/recsys-sandbox/kernel.json``; return the folder to put on
        ``JUPYTER_PATH``."""
        spec = self.root / "kernels" / KERNEL_NAME
        spec.mkdir(parents=True, exist_ok=True)
        argv = self.command([sys.executable, "-m", "ipykernel_launcher", "-f",
                             "{connection_file}", "--HistoryManager.enabled=False"])
        (spec / "kernel.json").write_text(json.dumps({
            "argv": argv,
            "display_name": "Python 3 (sandboxed for grading)",
            "language": "python",
            # interrupts as a message: a signal to bwrap would not reach the kernel
            "interrupt_mode": "message",
            "metadata": {"debugger": False},
        }, indent=1), encoding="utf-8")
        return self.root

    def kernel_config(self) -> dict:
        """jupyter_client settings: IPC sockets and the connection file in the scratch
        folder (the kernel sees nothing else of the grader's)."""
        return {"transport": "ipc", "ip": str(self.sockets / "k"),
                "connection_file": str(self.scratch / "kernel.json")}

    def run(self, argv: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run a command in the sandbox (used by :func:`probe` and the tests)."""
        return subprocess.run(self.command(argv), capture_output=True, text=True,
                              timeout=timeout, **kwargs)


_PROBE = """
import os, socket, sys
checks = {}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    checks["network"] = "reachable"
except OSError:
    pass
for path in sys.argv[1:]:
    if os.path.exists(path):
        checks[path] = "visible"
try:
    open("/usr/.recsys-probe", "w").close()
    checks["/usr"] = "writable"
except OSError:
    pass
open(os.path.join(os.environ["HOME"], "probe"), "w").write("ok")
print("pids", len([p for p in os.listdir("/proc") if p.isdigit()]))
print("problems", checks)
"""


def probe(workdir=None) -> str | None:
    """Start a throw-away sandbox and check it confines: None if it works, else one line
    saying what is wrong."""
    import tempfile

    if bwrap_path() is None:
        return ("bubblewrap is not installed (Debian/Ubuntu: sudo apt-get install "
                "bubblewrap)")
    repo = PACKAGE_DIR.parent
    hidden = [str(repo / ".git"), str(repo / "notebooks")]
    with tempfile.TemporaryDirectory(prefix="recsys-probe-", dir=workdir) as tmp:
        box = Sandbox(tmp)
        try:
            proc = box.run([sys.executable, "-I", "-S", "-c", _PROBE, *hidden], timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bubblewrap could not start a sandbox ({exc})"
        finally:
            box.cleanup()
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            return f"bubblewrap could not start a sandbox: {last}"
        if "problems {}" not in proc.stdout:
            return f"the sandbox does not confine: {proc.stdout.strip().splitlines()[-1]}"
        if not (box.scratch / "probe").is_file():
            return "the sandbox cannot write to its scratch folder"
    return None


# --------------------------------------------------------------------------------------
# The launcher: the kernelspec's command, outside the sandbox
# --------------------------------------------------------------------------------------
#
# ``python -I -S sandbox.py LAUNCH_JSON bwrap ARGS...`` (the interpreter's -I -S keep it
# independent of the student, and it imports nothing but the standard library).  It dies
# with its parent (the grader), forks bwrap under the per-process limits and watches the
# sandbox until it exits, with the sandbox's exit status:
#
# * processes and threads: RLIMIT_NPROC, set inside the sandbox by _INNER (the kernel
#   refuses the fork); a root grader first drops to SANDBOX_UID, since root's processes are
#   exempt, showing bwrap the grader's private folders through bind mounts made in a mount
#   namespace of the launcher's own;
# * CPU time, address space and file size: rlimits set here, before bwrap;
# * memory of all the sandbox's processes together, disk (the scratch folder and the
#   sockets' folder on disk, plus /tmp, a RAM-backed tmpfs that bwrap sizes) and wall time:
#   measured here every _POLL seconds; beyond a limit the sandbox is killed.  No cgroups:
#   they need root (and the cgroup v1 hierarchies of a shared machine are not the grader's
#   to change); no size-limited mount of the scratch folder: it needs root too.
#
# Each limit hit is written, in words, to the JSON file the grader reads
# (Sandbox.limit_notes).

_POLL = 0.2
_MIN_ENTRY = 4096  # what one file or folder costs at least (its inode and directory entry)
_CLONE_NEWNS, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x00020000, 4096, 16384, 1 << 18


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _die_with_parent(libc) -> None:
    import signal

    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# System V shared memory and message queues hold memory that no process maps (a segment
# outlives shmdt until its namespace ends), out of sight of the memory watchdog: refused
# with EPERM by a seccomp filter (classic BPF, as bwrap's --seccomp takes it).  POSIX shared
# memory (/dev/shm, a sized tmpfs) and memfd_create (measured as disk) remain.  The same
# filter refuses ptrace and process_vm_readv/writev: no process of the student's reads or
# writes the kernel's memory from outside while a hidden test runs.
_X32 = 0x40000000
_DENIED_SYSCALLS = {
    # x86_64 (and x32): shmget, msgget, ptrace, process_vm_readv, process_vm_writev
    0xC000003E: [29, 68, 101, 310, 311, _X32 | 29, _X32 | 68, _X32 | 101, _X32 | 539, _X32 | 540],
    0x40000003: [117, 395, 399, 26, 347, 348],  # i386: ipc, shmget, msgget, ptrace, vm r/w
    0xC00000B7: [194, 186, 117, 270, 271],      # aarch64: the same
}


def _seccomp_program() -> bytes:
    """A seccomp filter returning EPERM for _DENIED_SYSCALLS and allowing the rest."""
    import errno
    import struct

    ld, jeq, ret = 0x20, 0x15, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    allow, deny = 0x7FFF0000, 0x00050000 | errno.EPERM
    code = [(ld, 0, 0, 4)]  # the architecture
    blocks = list(_DENIED_SYSCALLS.items())
    for arch, numbers in blocks:
        body = [(ld, 0, 0, 0)]  # the syscall's number
        for k, nr in enumerate(numbers):  # to the deny at the end of this block
            body.append((jeq, len(numbers) - k, 0, nr))
        body += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
        code.append((jeq, 0, len(body), arch))  # another architecture: the next block
        code += body
    code.append((ret, 0, 0, allow))
    return b"".join(struct.pack("=HBBI", *insn) for insn in code)


def _stage(argv: list[str], stage: str) -> tuple[list[str], list[tuple[str, str]]]:
    """bwrap's arguments with every bound folder or file that SANDBOX_UID cannot reach
    replaced by a mount point in ``stage``; and the (source, mount point) pairs to bind."""
    out, binds = list(argv), []
    end = argv.index("--") if "--" in argv else len(argv)
    for k, arg in enumerate(argv[:end - 2]):
        if arg in ("--bind", "--ro-bind") and not _reachable(argv[k + 1]):
            point = os.path.join(stage, str(len(binds)))
            binds.append((argv[k + 1], point))
            out[k + 1] = point
    return out, binds


def _start(argv: list[str], config: dict) -> int:
    """Fork bwrap (``argv``) under the per-process limits; return its pid."""
    import resource

    root = config.get("stage") is not None and os.geteuid() == 0
    binds = []
    if root:
        argv, binds = _stage(argv, config["stage"])
        for source, point in binds:
            if os.path.isdir(source):
                os.mkdir(point)
            else:
                open(point, "w").close()
        for folder in config["own"]:  # the only folders the sandbox writes
            for top, dirs, files in os.walk(folder):
                for name in [top, *(os.path.join(top, f) for f in dirs + files)]:
                    os.lchown(name, SANDBOX_UID, SANDBOX_UID)
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: becomes bwrap
        libc = _libc()
        cpu, memory = int(config["cpu"]), int(config["memory"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        if memory > 0:
            space = memory + ADDRESS_SPACE_HEADROOM
            resource.setrlimit(resource.RLIMIT_AS, (space, space))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if config["disk"] > 0:  # no single file up to the disk limit: one that reached it
            # exactly would, with its folder's entries, put the notebook over the limit for
            # the moment before the refused writer removes it, and the watchdog would stop it
            largest = config["disk"] - min(config["disk"] // 8, 2**20)
            resource.setrlimit(resource.RLIMIT_FSIZE, (largest, largest))
        if root:
            _check(libc.unshare(_CLONE_NEWNS), "unshare")
            _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount")
            for source, point in binds:
                _check(libc.mount(source.encode(), point.encode(), None, _MS_BIND | _MS_REC,
                                  None), f"bind {source}")
            os.setgroups([])
            os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
            os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
        _die_with_parent(libc)  # after the change of user, which clears it
        program = os.memfd_create("seccomp", 0)  # not close-on-exec: bwrap reads it
        os.write(program, _seccomp_program())
        os.lseek(program, 0, os.SEEK_SET)
        argv = [argv[0], "--seccomp", str(program), *argv[1:]]
        os.execv(argv[0], argv)
    except BaseException as exc:
        os.write(2, f"recsys sandbox launcher: {exc}\n".encode())
    os._exit(127)


def _processes(top: int) -> list[tuple[int, int, int]]:
    """(pid, threads, resident pages) of ``top``'s descendants (not ``top`` itself)."""
    children: dict[int, list[int]] = {}
    info = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                text = fh.read().decode("latin-1")
        except OSError:
            continue
        rest = text[text.rfind(")") + 2:].split()
        pid = int(name)
        children.setdefault(int(rest[1]), []).append(pid)
        info[pid] = (int(rest[17]), int(rest[21]))
    found, todo = [], list(children.get(top, []))
    while todo:
        pid = todo.pop()
        if pid in info:
            found.append((pid, *info[pid]))
        todo += children.get(pid, [])
    return found


def pss(pids) -> int:
    """Proportional resident memory of ``pids``, in bytes (shared pages counted once)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def _disk(folders, pids) -> int:
    """Bytes stored in ``folders`` (each entry at least _MIN_ENTRY), in the sandbox's /tmp
    and /dev/shm (seen through one of its processes), and in the files its processes hold
    open without a name (deleted files, memfd_create's): all that it stores."""
    total = 0
    todo = list(folders)
    while todo:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += max(st.st_blocks * 512, _MIN_ENTRY)
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
        except OSError:
            continue
    counted, devices = set(), set()
    for pid in pids:
        try:
            mounts = [(os.statvfs(f"/proc/{pid}/root/{m}"), os.stat(f"/proc/{pid}/root/{m}"))
                      for m in ("tmp", "dev/shm")]
        except OSError:  # gone, or not yet in the sandbox: the next one
            continue
        for vfs, st in mounts:
            devices.add(st.st_dev)
            total += (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
            total += (vfs.f_files - vfs.f_ffree) * _MIN_ENTRY
        break
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 0 and key not in counted \
                    and st.st_dev not in devices:
                counted.add(key)
                total += st.st_blocks * 512
    return total


def _launch(config_path: str, argv: list[str]) -> int:
    import select
    import signal
    import time

    libc = _libc()
    _die_with_parent(libc)
    if os.getppid() == 1:  # the parent died before the line above
        return 1
    with open(config_path, encoding="utf-8") as fh:
        config = json.load(fh)
    notes: dict[str, str] = {}

    def note(key: str, text: str) -> None:
        if key not in notes:
            notes[key] = text
            tmp = config["notes"] + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(list(notes.values()), fh)
            os.replace(tmp, config["notes"])

    start = time.monotonic()
    child = _start(argv, config)
    watch = os.pidfd_open(child)
    memory, disk, limit = config["memory"], config["disk"], config["processes"]
    wall = config["wall"]
    stopped = "the kernel was stopped, and the tests from there on score 0"
    while True:
        if select.select([watch], [], [], _POLL)[0]:
            break
        reason = None
        if wall > 0 and time.monotonic() - start > wall:
            reason = ("wall", f"exceeded the wall-time limit ({wall:g} s): {stopped}")
        try:  # (a process that ends while it is measured is skipped, never fatal)
            procs = _processes(child)
            if sum(t for _, t, _ in procs) >= limit:
                note("processes", f"reached the process limit ({limit} processes and "
                                  "threads at once): further ones were refused")
            if reason:
                pass
            elif memory > 0 and sum(r for *_, r in procs) * os.sysconf("SC_PAGE_SIZE") \
                    > memory and pss(p for p, *_ in procs) > memory:
                reason = ("memory", f"exceeded the memory limit ({_size_text(memory)} for "
                                    f"all its processes together): {stopped}")
            elif disk > 0 and _disk(config["watch"], [p for p, *_ in procs]) > disk:
                reason = ("disk", f"exceeded the disk limit ({_size_text(disk)} for its "
                                  f"scratch folder and /tmp together): {stopped}")
        except (OSError, ValueError, IndexError):
            pass
        if reason:
            note(*reason)
            os.kill(child, signal.SIGKILL)
            break
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1], sys.argv[2:]))

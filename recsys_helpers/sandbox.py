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
* its own scratch folder, the only place it may write (its ``HOME`` and working folder);
* a private ``/tmp``, its own PID namespace (it sees only its own processes), no network,
  no environment variables of the grader, all capabilities dropped.

It dies with the grader (``--die-with-parent``; killing the namespace's first process
kills every process in it), and runs under a CPU-time and an address-space limit.  For the
exercise being graded, the package's finished versions of what the student must write
(:data:`BLOCKED`) are replaced, inside the sandbox only, by stubs that raise
:class:`NotAvailableWhileGrading`.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["BLOCKED", "KERNEL_NAME", "NotAvailableWhileGrading", "SandboxUnavailable",
           "Sandbox", "bwrap_path", "probe"]

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

# Runs outside the sandbox (the interpreter's -I -S keep it independent of the student):
# set the resource limits, then become bwrap, so that bwrap's parent is the process that
# started the kernel (--die-with-parent watches that one).
_LAUNCHER = ("import os, resource, sys\n"
             "cpu, mem = int(sys.argv[1]), int(sys.argv[2])\n"
             "resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))\n"
             "if mem > 0:\n"
             "    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))\n"
             "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
             "os.execv(sys.argv[3], sys.argv[3:])\n")


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


class Sandbox:
    """The bubblewrap confinement of one kernel: its scratch folder, the kernelspec that
    starts it, and the stubs of the exercise's blocked functions.

    Parameters
    ----------
    root
        A folder of the grader's (outside the sandbox) for this kernel: it receives
        ``scratch/`` (the only folder the kernel may write), ``kernels/`` (the kernelspec:
        put ``root`` on ``JUPYTER_PATH``) and ``stubs/``.
    exercise
        The exercise graded (a key of :data:`BLOCKED`, or any other name for none).
    cpu_seconds, memory_bytes
        CPU-time limit of the kernel (the kernel is killed beyond it) and address-space
        limit (allocations beyond it fail; 0 for none).
    readable
        Further folders to show read-only (for example the bundled data).
    """

    def __init__(self, root, exercise: str = "", cpu_seconds: int = 900,
                 memory_bytes: int = 8 * 2**30, readable=()):
        bwrap = bwrap_path()
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
        self.bwrap = bwrap
        self.root = Path(root).resolve()
        self.scratch = self.root / "scratch"
        self.exercise = exercise
        self.cpu_seconds = int(cpu_seconds)
        self.memory_bytes = int(memory_bytes)
        self.readable = [Path(p).resolve() for p in readable]
        self.scratch.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        # the kernel's IPC sockets: a Unix socket's path has at most 107 bytes, so they live
        # in a short folder of their own (shown to the kernel, writable)
        base = tempfile.gettempdir()
        self.sockets = Path(tempfile.mkdtemp(prefix="rk", dir=base if len(base) < 40 else "/tmp"))

    def cleanup(self) -> None:
        """Remove the sockets' folder (the caller removes ``root``)."""
        shutil.rmtree(self.sockets, ignore_errors=True)

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
        args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--clearenv", "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev",
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
        if sys.prefix != sys.base_prefix:
            env["VIRTUAL_ENV"] = sys.prefix
        for key, value in env.items():
            args += ["--setenv", key, value]
        return args

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run in the sandbox, under the resource limits."""
        return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(self.cpu_seconds),
                str(self.memory_bytes), self.bwrap, *self.bwrap_args(), "--", *argv]

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

"""The benchmarks' harness: timing, process measurement, the machine, where files go."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
TMP = Path(tempfile.gettempdir())


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def timed(fn, repeat: int = 1):
    """``(median seconds of one call, what the last call returned)`` of ``repeat`` calls."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def outside_repo(parser, option: str, path: Path) -> Path:
    """``path`` resolved; an argparse error when it is inside the repository."""
    path = Path(path).expanduser().resolve()
    if path == REPO or REPO in path.parents:
        parser.error(f"{option} {path} is inside the repository; choose a folder outside it")
    return path


def run_measured(cmd: list[str], log: Path) -> SimpleNamespace:
    """Run ``cmd`` (output to ``log``); its wall ``seconds``, ``returncode`` and
    ``peak_rss_bytes``: the largest resident set of the process or of any descendant it
    waited for, as the kernel reports it when the process ends (``wait4``; exact)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
    return SimpleNamespace(seconds=time.perf_counter() - start, returncode=proc.returncode,
                           peak_rss_bytes=usage.ru_maxrss * 1024)  # Linux: kilobytes


def tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log (progress bars' carriage returns as new lines)."""
    text = path.read_text(errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


class Stages:
    """The timed stages of one pipeline: ``with stages(name, done, total, kind):``.

    A stage that runs ``done`` of ``total`` units of work (steps, pairs, users) is scaled
    linearly to the whole and marked with the ``kind`` of work it samples.
    """

    def __init__(self):
        self.rows = []

    @contextlib.contextmanager
    def __call__(self, name: str, done: int = 1, total: int = 1, kind: str | None = None):
        print(f"-- {name}", flush=True)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.rows.append({"stage": name, "measured_seconds": seconds,
                          "seconds": seconds * total / done, "scaled": done < total,
                          "kind": kind or name,
                          "timed_on": f"{done:,} of {total:,}" if done < total else "all"})


def phase(run_dir: Path, name: str, reuse: bool, compute, loads: dict):
    """The result of phase ``name``, kept in ``run_dir/<name>.json``: with ``reuse`` the
    kept one (to resume an interrupted run), else ``compute()``.  The 1-minute load
    average before and after the phase goes into ``loads[name]``: the machine may be
    shared, and the benchmark itself accounts for about 1."""
    path = run_dir / f"{name}.json"
    if reuse and path.is_file():
        print(f"  reusing {path}")
        stored = json.loads(path.read_text())
    else:
        before = os.getloadavg()[0]
        value = compute()
        after = os.getloadavg()
        # The 5-minute average covers most of a long phase; keep the largest figure seen.
        stored = {"value": value, "load_average": {"mean": (before + after[0]) / 2,
                                                   "max": max(before, *after[:2])}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=2) + "\n")
    loads[name] = stored["load_average"]
    return stored["value"]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine(loads: dict | None = None) -> dict:
    """The machine and the versions the figures were measured on."""
    import psutil

    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    out = {
        "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu, "ram_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(), "python": platform.python_version(),
        "versions": {d: _version(d) for d in ("numpy", "scipy", "pandas", "tensorflow", "keras",
                                             "implicit", "scikit-surprise", "orjson", "isal")},
    }
    if loads:
        out["load_average_while_measuring"] = loads | {"all": {
            "mean": statistics.fmean(v["mean"] for v in loads.values()),
            "max": max(v["max"] for v in loads.values())}}
    return out

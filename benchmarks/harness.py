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
    """Print the heading of a part of a benchmark."""
    print(f"\n== {title}", flush=True)


def timed(fn, repeat: int = 1):
    """``(median seconds of one call, what the last call returned)`` of ``repeat`` calls."""
    times = []
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


def write(path: Path, content) -> None:
    """Write ``content`` to ``path`` (creating its folder): text as is, else as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str)
                    else json.dumps(content, indent=2, default=float) + "\n")


def run_measured(cmd: list[str], log: Path, result: Path | None = None) -> SimpleNamespace:
    """Run ``cmd`` in the repository, its output to ``log``: its wall ``seconds``,
    ``returncode``, ``peak_rss_bytes`` (the largest resident set of it or of a descendant
    it waited for, exact: ``wait4``) and the JSON it wrote to ``result`` (or None)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if result:
        result.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
    return SimpleNamespace(seconds=time.perf_counter() - start, returncode=proc.returncode,
                           peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux: kilobytes
                           result=json.loads(result.read_text())
                           if result and result.is_file() else None)


def tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log (progress bars' carriage returns as new lines)."""
    text = path.read_text(errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


class Stages(list):
    """The timed stages of one pipeline, ``with stages(name, done, total, kind):``; a stage
    that ran ``done`` of ``total`` units (steps, pairs, users) is scaled linearly to all
    and marked with the ``kind`` of work it samples."""

    @contextlib.contextmanager
    def __call__(self, name: str, done: int = 1, total: int = 1, kind: str | None = None):
        print(f"-- {name}", flush=True)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.append({"stage": name, "measured_seconds": seconds,
                     "seconds": seconds * total / done, "scaled": done < total,
                     "kind": kind or name,
                     "timed_on": f"{done:,} of {total:,}" if done < total else "all"})


def load_during(compute, *args):
    """``(compute(*args), the 1-minute load average before and after it: mean and max)``; the
    machine may be shared, and the benchmark itself accounts for about 1."""
    before = os.getloadavg()[0]
    value = compute(*args)
    after = os.getloadavg()
    # The 5-minute average covers most of a long phase; keep the largest figure seen.
    return value, {"mean": (before + after[0]) / 2, "max": max(before, *after[:2])}


def phase(run_dir: Path, name: str, reuse: bool, compute, loads: dict):
    """Phase ``name``'s result, kept in ``run_dir/<name>.json`` (``reuse``: the kept one,
    to resume), with the load average during it in ``loads[name]``."""
    path = run_dir / f"{name}.json"
    if reuse and path.is_file():
        print(f"  reusing {path}")
        stored = json.loads(path.read_text())
    else:
        value, load = load_during(compute)
        write(path, stored := {"value": value, "load_average": load})
    loads[name] = stored["load_average"]
    return stored["value"]


def machine(loads: dict | None = None) -> dict:
    """The machine and the versions the figures were measured on (and ``loads``, the load
    average during each phase: the machine may be shared)."""
    import psutil

    def version(dist):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)

    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    out = {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
           "cpu_model": cpu, "ram_bytes": psutil.virtual_memory().total,
           "platform": platform.platform(), "python": platform.python_version(),
           "versions": {d: version(d) for d in ("numpy", "scipy", "pandas", "tensorflow", "keras",
                                                "implicit", "scikit-surprise", "orjson", "isal")}}
    if loads:
        out["load_average_while_measuring"] = loads | {"all": {
            "mean": statistics.fmean(v["mean"] for v in loads.values()),
            "max": max(v["max"] for v in loads.values())}}
    return out

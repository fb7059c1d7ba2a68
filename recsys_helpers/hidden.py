"""What the exercises' hidden tests use to keep their answers out of a student's reach.

A hidden test runs in three phases inside a function of its own:

0. It draws every input up front (:func:`fresh_rng`: seeded by the operating system, so no
   student can predict them; drawn before any student code runs, so none can steer the
   generator) and freezes each array (:func:`frozen`).
1. It calls the student's code on copies and turns every result at once into a plain
   number or a frozen array, gathered in tuples.  No expected value exists yet: whatever
   the student's code looks at (the shared namespace, the frames on the stack, ``gc``, the
   cell's source), it finds inputs and its own results only, and can change none of them.
2. Only then, inside :func:`sealed`, it computes what it expects and compares.  The seal
   makes sure that no student code runs meanwhile: the garbage collector is paused (no
   finalizer or collector callback of the student's can run), signals are held (no
   handler), tracing and profiling are switched off, and the check is refused outright
   when the student's code left a thread or process running, or replaced a builtin or a
   numpy function (it may have put it back by the time the grader looks).

The seal (:func:`seal`) is taken at the very start of the test, before any student code
runs in it, as a tuple: nothing the student's code could reach in it can be changed.  The grader imports this
module before the student's first cell and checks that none of it is replaced.

What this cannot exclude: code that works on the interpreter itself while a test runs —
rewriting its memory (``ctypes``, ``/proc/self/mem``), swapping the code of this module's
functions in place and putting it back, or a trace function that rebinds the test's own
variables between two of its lines and removes itself before the seal looks.  The README's grading section says so.
"""

from __future__ import annotations

import builtins
import gc
import os
import secrets
import signal
import sys
import time
from contextlib import contextmanager

import numpy

__all__ = ["fresh_rng", "frozen", "seal", "sealed"]


def fresh_rng() -> numpy.random.Generator:
    """A generator seeded from the operating system's randomness and the clock."""
    return numpy.random.default_rng([secrets.randbits(64),
                                     int.from_bytes(os.urandom(8), "little"),
                                     time.perf_counter_ns()])


def frozen(values) -> numpy.ndarray:
    """A read-only copy of ``values`` whose memory is an immutable ``bytes`` object: no
    code can make it writeable again, nor write through it."""
    a = numpy.ascontiguousarray(values)
    return numpy.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)


def _pids() -> frozenset[int]:
    try:
        return frozenset(int(p) for p in os.listdir("/proc") if p.isdigit())
    except OSError:
        return frozenset()


def _namespace(module) -> tuple:
    """(name, object, its code) for a module's public names: a function whose code was
    swapped in place keeps its identity, not its code.  A tuple: nothing in it can be
    changed afterwards (the student's code may find it on the stack)."""
    return tuple((k, v, getattr(v, "__code__", None)) for k, v in vars(module).items()
                 if not k.startswith("_") or k in ("__import__", "__build_class__"))


def _stack(frame):
    while frame is not None:
        yield frame
        frame = frame.f_back


def seal() -> tuple:
    """Made at the start of a hidden test, before any student code runs in it: what
    :func:`sealed` compares against (immutable)."""
    return (frozenset(sys._current_frames()), _pids(),
            ((builtins, _namespace(builtins)), (numpy, _namespace(numpy))))


def intrusions(state: tuple) -> list[str]:
    """What the student's code left behind since ``state = seal()``."""
    threads, pids, namespaces = state
    found = []
    if set(sys._current_frames()) - threads:
        found.append("a thread started by your code was still running")
    if _pids() - pids:
        found.append("a process started by your code was still running")
    for module, saved in namespaces:
        if sys.modules.get(module.__name__) is not module:
            found.append(f"the module {module.__name__} was replaced")
        now = vars(module)
        changed = [k for k, v, code in saved
                   if now.get(k, saved) is not v or getattr(v, "__code__", None) is not code]
        if changed:
            found.append(f"{module.__name__}.{', '.join(changed[:5])} replaced")
    return found


@contextmanager
def sealed(state: tuple):
    """Compute and compare the expectations inside: no student code runs meanwhile."""
    sys.settrace(None)
    sys.setprofile(None)
    traced = any(f.f_trace is not None for f in _stack(sys._getframe()))
    collecting = gc.isenabled()
    gc.disable()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        found = intrusions(state) + (["a trace function was set on the test's frames"] if traced else [])
        assert not found, "the hidden checks refused to run: " + "; ".join(found)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if collecting:
            gc.enable()

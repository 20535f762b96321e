"""Tiering: a Function that runs hot gets its own kernel, compiled in the background.

A Function starts on the interpreter (nothing to compile). Its batch values and
gradients count the points they serve; once a Function has served ``HOT_POINTS``, a
background thread renders and compiles its kernel (``tapejit.compiled``: the tape
unrolled into straight-line code per point), and the calls that start after it is
ready use it. The caller never waits: until then, and for every other mode, the
interpreter runs. A tape the kernel cannot take (too large to unroll) stays on the
interpreter for good; ``f.tier`` says which tier a Function is on.

Why ``HOT_POINTS`` is 2e7 (2-core Zen 4 box): B1's kernel takes ~1.5 s of one core to
compile and saves ~8.5 ns a point (15.1 ms -> 6.6 ms per 1e6 gradients), so it repays a
compile after ~1.8e8 points. The rent-or-buy rule would wait for that many; compiling
on the second core while the interpreter serves costs the caller far less than the
compile's own time, so tiering starts once the interpreter has spent ~0.3 s on the
Function (2e7 B1 points), a tenth of the break-even, and its disk cache makes later
processes pay an import instead (``compile=True`` asks for the kernel at once).

A thread rather than a process: Numba's compiler is Python and holds the GIL, but the
interpreter's sweeps release it, so a batch-heavy caller and the compile share two
cores well; a process would pay its own import of tapejit and Numba (1-2 s) first.
"""
from __future__ import annotations

import atexit
import sys
import threading
import time
from typing import Optional

import numpy as np

#: points served by batch values/gradients after which a Function's kernel is compiled
DEFAULT_HOT_POINTS = 20_000_000
HOT_POINTS = DEFAULT_HOT_POINTS

INTERPRETER, COMPILING, COMPILED, NOT_COMPILABLE, FAILED = (
    "interpreter", "compiling", "compiled", "not compilable", "failed")

_running: set = set()
_lock = threading.Lock()


class Tier:
    """One Function's tiering state."""

    def __init__(self, policy: str = "auto"):
        self.policy = policy            # "auto" (tier up when hot) or "never"
        self.state = INTERPRETER
        self.points = 0
        self.thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None
        self.started: Optional[float] = None
        #: seconds from the start of the compile to the kernel's first use being possible
        self.seconds: Optional[float] = None


def served(f, points: int) -> None:
    """Count points the interpreter served for f; start the compile when f is hot."""
    tier = f._tier
    if tier.policy != "auto" or tier.state != INTERPRETER:
        return
    tier.points += points
    if tier.points >= HOT_POINTS:
        start(f)


def start(f) -> None:
    """Compile f's kernel in a background thread (once)."""
    tier = f._tier
    with _lock:
        if tier.state != INTERPRETER:
            return
        tier.state = COMPILING
        tier.started = time.perf_counter()
        thread = threading.Thread(target=_compile, args=(f,), name="tapejit-compile", daemon=True)
        tier.thread = thread
        _running.add(thread)
    thread.start()


def _compile(f) -> None:
    from .compiled import Kernel
    from .errors import NotCompilableError
    tier = f._tier
    _share_the_gil(+1)
    try:
        kernel = Kernel(f)
        kernel.prepare()
    except NotCompilableError as err:
        tier.error, tier.state = err, NOT_COMPILABLE
    except BaseException as err:        # reported by f.tier / wait_compiled; the interpreter goes on
        tier.error, tier.state = err, FAILED
    else:
        f._kernel = kernel               # calls that start from now on take it
        tier.seconds = time.perf_counter() - tier.started
        tier.state = COMPILED
    finally:
        _share_the_gil(-1)
        _running.discard(threading.current_thread())


_compiling = [0, None]
#: the GIL switch interval while a compile runs: Numba's compiler holds the GIL, and at
#: Python's default 5 ms a caller coming back from a sweep (which releases it) waited up
#: to that long for it at every call
SWITCH_INTERVAL = 0.0005


def _share_the_gil(step: int) -> None:
    with _lock:
        if step > 0 and _compiling[0] == 0:
            _compiling[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(SWITCH_INTERVAL, _compiling[1]))
        _compiling[0] += step
        if step < 0 and _compiling[0] == 0:
            sys.setswitchinterval(_compiling[1])


def wait(f, timeout: Optional[float] = None) -> bool:
    """Wait for a running compile of f; True when f has its kernel."""
    thread = f._tier.thread
    if thread is not None:
        thread.join(timeout)
    return f._kernel is not None


@atexit.register
def _finish_compiles() -> None:
    # a compile cut off at exit could leave Numba's disk cache half written
    for thread in list(_running):
        thread.join(60.0)



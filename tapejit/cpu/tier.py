"""Tiering: a Function that runs hot gets its own kernel, compiled in the background.

A Function starts on the interpreter (nothing to compile). Its batch values and
gradients count the points they serve; once a Function has served ``HOT_POINTS``, a
background thread renders and compiles its kernel (``tapejit.cpu.compiled``: the tape
unrolled into straight-line code per point), and the calls that start after it is
ready use it. The caller never waits: until then, and for every other mode, the
interpreter runs. Results are the interpreter's bit for bit where the kernel runs the
same operations (Rosenbrock, every polynomial tape); transcendental functions call the C
library in the kernel and tapejit.cpu._vmath in the interpreter, which may round the last bit
differently (both within 1-2 ulp of the correctly rounded value). A tape the kernel cannot
take (too large to unroll) stays on the interpreter for good; ``f.tier`` says which tier a
Function is on.

Why ``HOT_POINTS`` is 2e7 (2-core Zen 4 box): B1's kernel takes ~0.7-1.5 s of one core
to compile and saves ~8.5 ns a point (15.1 ms -> 6.6 ms per 1e6 gradients), so it repays
a compile after ~1e8-1.8e8 points. The rent-or-buy rule would wait for that many; but the
compile runs beside the caller, whose calls only slow down meanwhile (B1: 31-37 ms a call
during the compile, 16-20 ms before), so tiering starts once the interpreter has spent
~0.3 s on the Function (2e7 B1 points), a tenth of the break-even. A kernel that an
earlier process compiled (its source is in the kernel cache directory, Numba's cache has
its code) is only an import: that is looked for after a hundredth of ``HOT_POINTS``.
``compile=True`` asks for the kernel at once.

A thread rather than a process: Numba's compiler is Python and holds the GIL, but the
interpreter's sweeps release it, so a batch-heavy caller and the compile share two
cores; a process would pay its own import of tapejit and Numba (1-2 s) first.
"""
from __future__ import annotations

import atexit
import sys
import threading
import time
from typing import Optional

#: points served by batch values/gradients after which a Function's kernel is compiled
DEFAULT_HOT_POINTS = 20_000_000
HOT_POINTS = DEFAULT_HOT_POINTS
#: a Function whose kernel an earlier process compiled (its source is in the kernel cache
#: directory) loads it after this fraction of HOT_POINTS: an import of ~0.1 s, not a compile
CACHED_FRACTION = 100

#: batches of at least this many points are timed (smaller ones are mostly overhead)
TIMED_POINTS = 1000
#: kernel calls of a mode timed before the faster tier is chosen, and how much slower
#: than the interpreter's best the kernel's best may be (timing noise on a shared box)
TRIALS = 3
MARGIN = 1.1

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
        #: the kernel's source, rendered once (None: not yet)
        self.source: Optional[str] = None
        self.probed = False             # looked for the kernel on disk
        #: the best seconds a point of each mode took on each tier (batches of TIMED_POINTS+)
        self.interpreter_time: dict = {}
        self.kernel_time: dict = {}
        self.trials: dict = {}


def served(f, points: int, mode: int = 1, seconds: float = 0.0, kernel=None) -> None:
    """After a batch of values (mode 0) or gradients (1) of f: count the points the
    interpreter served and start the compile when f is hot, or much earlier when its
    kernel is on disk already (a load, not a compile); or, on the kernel, keep it only if it
    is faster than the interpreter was."""
    tier = f._tier
    if points >= TIMED_POINTS and seconds > 0.0:
        per_point = seconds / points
        best = tier.kernel_time if kernel is not None else tier.interpreter_time
        best[mode] = min(best.get(mode, per_point), per_point)
        if kernel is not None:
            _keep_the_faster(f, mode)
    if kernel is not None or tier.policy != "auto" or tier.state != INTERPRETER:
        return
    tier.points += points
    if tier.points >= HOT_POINTS:
        start(f)
    elif tier.points >= HOT_POINTS // CACHED_FRACTION and not tier.probed:
        tier.probed = True
        start(f, only_if_on_disk=True)


def _keep_the_faster(f, mode: int) -> None:
    """A kernel is straight-line scalar code per point, where the interpreter runs each
    instruction as a SIMD loop over a chunk: on tapes of transcendental functions it can
    be the slower one (B3: 78-83 ms against 21 ms). After TRIALS kernel calls of a mode
    the interpreter has timed too, the slower tier goes: a kernel slower by more than
    MARGIN is dropped for good (state "interpreter", tier_error says why)."""
    tier = f._tier
    tier.trials[mode] = tier.trials.get(mode, 0) + 1
    if tier.state != COMPILED or mode not in tier.interpreter_time or tier.trials[mode] < TRIALS:
        return                           # f.compile()'s kernels (asked for) are never dropped
    kernel_ns, interpreter_ns = 1e9 * tier.kernel_time[mode], 1e9 * tier.interpreter_time[mode]
    if kernel_ns > MARGIN * interpreter_ns:
        f._kernel = None
        tier.state = INTERPRETER
        tier.policy = "never"
        tier.error = RuntimeError(f"the kernel took {kernel_ns:.1f} ns a point against the interpreter's "
                                  f"{interpreter_ns:.1f} ns: dropped")


def start(f, only_if_on_disk: bool = False) -> None:
    """Compile f's kernel in a background thread (once); ``only_if_on_disk``: only if an
    earlier process compiled it (rendering the source to find out runs in the thread too:
    a large tape takes a few hundred ms)."""
    tier = f._tier
    with _lock:
        if tier.state != INTERPRETER or (tier.thread is not None and tier.thread.is_alive()):
            return
        if not only_if_on_disk:
            tier.state = COMPILING
        tier.started = time.perf_counter()
        thread = threading.Thread(target=_compile, args=(f, only_if_on_disk), name="tapejit-compile",
                                  daemon=True)
        tier.thread = thread
        _running.add(thread)
    thread.start()


def _compile(f, only_if_on_disk: bool) -> None:
    from .compiled import Kernel, on_disk, render_source
    from ..errors import NotCompilableError
    tier = f._tier
    _share_the_gil(+1)
    try:
        if tier.source is None:
            tier.source = render_source(f)
        if only_if_on_disk:
            if not on_disk(tier.source):
                return                   # compiled when hot, from the source rendered here
            tier.state = COMPILING
        kernel = Kernel(f, tier.source)
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
#: to that long for it at every call (B1 during a compile: 40 ms a call at 5 ms, 31-37 ms
#: at 0.5 ms, 16-20 ms without a compile)
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



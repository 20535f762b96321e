"""Small inputs run a jitted helper's own Python source instead of compiling it.

The tape passes, the adjoint plan and the sparsity analysis are loops that Numba makes
fast on big tapes, but a first use pays their compilation (0.1-0.8 s each, 2.1 s for a
first ``trace`` of Rosenbrock on the 2-core Zen 4 box) where the same loops in Python over
a tape of a few dozen slots take well under a millisecond. ``jit_or_python(fn, work)``
chooses: the jitted function once it is compiled in this process, when the work is large
or when its twin has run often, otherwise its Python twin. A twin is the function's own
code with a namespace in which every jitted callee is a twin too, so nothing a twin calls
compiles. Results are the same either way (tests/_runtime/test_twins.py runs both on the same
tapes).
"""
from __future__ import annotations

import types

import numpy as np
from numba.core.dispatcher import Dispatcher

from ..ops.table import OPS
from ..tape.reads import GATHERS

_ELEMENTWISE = np.array([op.elementwise for op in OPS], np.bool_)

#: work (slot-element visits, see ``tape_work``) up to which a not yet compiled helper runs
#: in Python. All the passes of a trace cost about 1 us per unit there (Rosenbrock of 300
#: terms, 6,888 units: 7 ms against 0.85 ms jitted, 2-core Zen 4 box); compiling one pass
#: costs 0.1-0.8 s, loading it from the disk cache 5-30 ms
SMALL_WORK = 2_000
#: a process that keeps tracing small tapes compiles the passes after all (or loads them
#: from the disk cache): a trace calls each pass 1-8 times
HOT_CALLS = 100
#: "auto" chooses as above; tests set "jit" or "python" to run one side on every input
MODE = "auto"

_twins: dict = {}
_twin_calls: dict = {}


def python_twin(fn):
    """fn's Python code, calling the twins of the jitted functions it calls."""
    twin = _twins.get(fn)
    if twin is None:
        py = fn.py_func
        namespace: dict = {}
        twin = types.FunctionType(py.__code__, namespace, py.__name__, py.__defaults__, py.__closure__)
        twin.__doc__ = py.__doc__
        _twins[fn] = twin      # before the namespace: mutually recursive helpers
        for name, value in py.__globals__.items():
            namespace[name] = python_twin(value) if isinstance(value, Dispatcher) else value
    return twin


def jit_or_python(fn, work: int):
    """The jitted ``fn`` if it is compiled already, ``work`` is large or its twin has run
    HOT_CALLS times in this process; otherwise its twin."""
    if MODE == "jit" or (MODE == "auto" and (work > SMALL_WORK or fn.signatures)):
        return fn
    if MODE == "auto":
        calls = _twin_calls[fn] = _twin_calls.get(fn, 0) + 1
        if calls > HOT_CALLS:
            return fn
    return python_twin(fn)


def tape_work(ops: np.ndarray, ins: np.ndarray) -> int:
    """Slot-element visits of one pass over a tape: each output element of an elementwise
    instruction reads one element per operand; of a structural one, up to its run
    lengths (a sum's, a matmul's inner dimension)."""
    n = ins[1].astype(np.int64)
    run = np.maximum(np.maximum(np.abs(ins[3]), np.abs(ins[4])), np.abs(ins[5])).astype(np.int64)
    # a gather's b is a position in the index pool, not a length
    run = np.where(GATHERS[ops], np.abs(ins[5]), run)
    reads = np.where(_ELEMENTWISE[ops], 3, run + 1)
    return int(ops.shape[0] + (n * reads).sum())

"""Math functions for the CUDA device sweeps.

On a GPU these are the ``math`` functions themselves (numba-cuda maps them to libdevice,
with IEEE results: log(-1) is NaN, exp(1000) is inf). numba-cuda's simulator runs the
sweeps as Python, where ``math`` raises instead; there each function falls back to numpy,
so that the simulator computes what the GPU computes."""
import math
import os

from ..cpu._primitive_calls import RULES
from ..ops.table import MATH_NAMES, PRIMITIVE_NAMES

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    import numpy as np

    _NUMPY = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "atan2": "arctan2", "pow": "power"}

    def _ieee(name):
        fast = getattr(math, name)
        careful = getattr(np, _NUMPY.get(name, name), None) or np.vectorize(fast)

        def fn(*args):
            try:
                return fast(*args)
            except (ValueError, OverflowError, ZeroDivisionError):
                with np.errstate(all="ignore"):
                    return float(careful(*[np.float64(a) for a in args]))
        fn.__name__ = name
        return fn

    globals().update({name: _ieee(name) for name in MATH_NAMES})
else:
    globals().update({name: getattr(math, name) for name in MATH_NAMES})



def _no_primitive(n_args: int):
    """User primitives do not run on the GPU: tapejit.cuda refuses their tapes before a
    launch, so these are never reached (and give nan, not a plausible number, if they are)."""
    def stub2(c, a):
        return math.nan

    def stub3(c, a, b):
        return math.nan

    def stub4(c, a, b, o):
        return math.nan
    stub = {2: stub2, 3: stub3, 4: stub4}[n_args]
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0"):
        from numba import cuda
        stub = cuda.jit(device=True)(stub)
    return stub


globals().update({name: _no_primitive(1 + len(RULES[name][1])) for name in PRIMITIVE_NAMES})

__all__ = list(MATH_NAMES + PRIMITIVE_NAMES)

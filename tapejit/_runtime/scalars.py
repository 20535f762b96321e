"""Int and bool arguments for calls between compiled functions.

Numba types a literal argument (``0``, ``False``, ``2**62``, a module-level int) as
Literal[int](0) and compiles the callee once more for that type: for a sweep, a full extra
compile (about 40 s on 2 cores). Compiled code passes these numpy scalars instead, which
are typed plainly (int64, bool); tests/_runtime/test_literal_arguments.py keeps the rule.
"""
import numpy as np

ZERO, ONE, NO_LIMIT = np.int64(0), np.int64(1), np.int64(2**62)
NO, YES = np.bool_(False), np.bool_(True)

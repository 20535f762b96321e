"""``tj.debug_nans()``: stop at the first NaN or infinity, saying where it came from.

NaN and Inf propagate as IEEE says by default. Under ``debug_nans`` (a context manager,
or a flag: ``tj.debug_nans(True)`` ... ``tj.debug_nans(False)``; per thread), every
operation recorded keeps the user's source line in a small per-tape table, eager
operations check their results, and replays scan the values after the forward sweep:
the first instruction that produced a non-finite value is reported with its index,
opcode and that source line (``NonFiniteError``).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import NonFiniteError
from ..ops.table import OPS

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class debug_nans:
    """Context manager and flag: raise NonFiniteError at the first NaN/Inf produced."""

    def __init__(self, enabled: bool = True):
        from .tensor import _refresh_active, _state
        self._state = _state
        self._previous = _state.debug
        _state.debug = bool(enabled)
        _refresh_active()            # the scalar fast paths stand aside while debugging

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        from .tensor import _refresh_active
        self._state.debug = self._previous
        _refresh_active()
        return False


def enabled() -> bool:
    from .tensor import _state
    return _state.debug


def user_location() -> str:
    """file:line of the innermost frame outside tapejit."""
    frame = sys._getframe(1)
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _internal(filename: str) -> bool:
    # tapejit's modules, and the fast paths it generates (named "<tapejit ...>")
    return filename.startswith("<tapejit") or os.path.abspath(filename).startswith(_PACKAGE + os.sep)


def _describe(values) -> str:
    values = np.asarray(values)
    return "NaN" if np.isnan(values).any() else "an infinity"


def _op_name(code: int, c: float) -> str:
    """The opcode's name; a user primitive's own name for its instructions."""
    from ..ops.primitives import BY_NUMBER, PRIMITIVE_OPS
    if code in PRIMITIVE_OPS and 0 <= c < len(BY_NUMBER):
        return f"primitive {BY_NUMBER[int(c)].name!r}"
    return OPS[code].name


def check_eager(tape, out_slot: int, values) -> None:
    """After an eager operation: raise if it produced a non-finite value."""
    if np.all(np.isfinite(values)):
        return
    i = tape.n_ins - 1
    where = tape.locations.get(i, "<unknown>")
    raise NonFiniteError(f"instruction {i} ({_op_name(tape.ops[i], tape.cv[i])}) produced {_describe(values)} "
                         f"(recorded at {where})")


def check_replay(f, v: np.ndarray) -> None:
    """After a forward sweep of Function f at one point: locate the first non-finite."""
    a = f.arrays
    finite = np.isfinite(v[: a.n_slots])
    if finite.all():
        return
    inputs = np.concatenate([f.in_pos, f.param_pos])
    if not finite[inputs].all():
        bad = inputs[~finite[inputs]][0]
        raise NonFiniteError(f"an input or parameter is {_describe(v[bad])} (slot {bad})")
    written = np.zeros(a.n_slots, bool)
    for out, n in zip(a.ins[0], a.ins[1]):      # slots every instruction writes
        written[out: out + n] = True
    bad_slots = np.flatnonzero(~finite & written)
    if not bad_slots.size:
        return
    slot = int(bad_slots[0])
    i = int(np.searchsorted(a.ins[0], slot, side="right")) - 1
    where = getattr(f, "locations", {}).get(i)
    where = f"recorded at {where}" if where else "source line unknown: record under tj.debug_nans() to keep it"
    raise NonFiniteError(f"instruction {i} ({_op_name(a.ops[i], a.cv[i])}) produced {_describe(v[slot])} ({where})")

"""``tj.checkpoint(fn)``: a stretch of a computation whose intermediates the tape does not keep.

    y = tj.checkpoint(stretch)(x)      # one instruction; its reverse recomputes the stretch

The first call traces ``fn`` at the operands' values into a Function of its own (the
segment) and records one ``block`` instruction (tapejit.ops.primitives.BlockPrimitive)
whose kernels replay the segment's tape in scratch memory: the value runs its forward
sweep; the reverse runs it again, then its reverse sweep, seeded with the result's
adjoint; the tangent runs the forward tangent sweep. So the outer tape keeps the stretch's
inputs and outputs only, and the scratch lives for one call (one stretch at a time).

Segments are shared by their tape: calling the same stretch again, at any point of the
computation, records another instruction of the same primitive, compiled once.

``fn`` takes one or two arrays and returns one array; it must depend on its arguments
only (a tensor it captures from outside is a constant of the segment), and must not
branch on their values (a segment is replayed without its guards).
"""
from __future__ import annotations

import functools
import hashlib
from typing import Callable

import numpy as np
from numba import njit

from ..cpu import _sweeps as sweeps
from ..errors import TraceError
from ..ops.primitives import BlockPrimitive

#: segment primitives by the digest of their tape, so that each compiles once
_SEGMENTS: dict[str, BlockPrimitive] = {}


def _digest(f) -> str:
    a = f.arrays
    h = hashlib.sha256()
    for x in (a.ops, a.ins, a.cv, a.consts, a.idx, np.asarray(f.in_pos), np.asarray(f.out_pos)):
        h.update(np.ascontiguousarray(x).tobytes())
        h.update(b"|")
    h.update(str(a.n_slots).encode())
    return h.hexdigest()


def _segment_kernels(f, split: int, binary: bool):
    """The value kernel and the rules of a segment: its sweeps over scratch slots."""
    a = f.arrays
    ops, ins, cv, consts, idx = (np.ascontiguousarray(x) for x in (a.ops, a.ins, a.cv, a.consts, a.idx))
    n_slots, n_ins = int(a.n_slots), len(a.ops)
    in_pos = np.ascontiguousarray(f.in_pos, dtype=np.int64)
    out_pos = np.ascontiguousarray(f.out_pos, dtype=np.int64)
    forward, reverse, tangent = sweeps.forward_vector, sweeps.reverse_vector, sweeps.forward_tangent_vector

    @njit(error_model="numpy")
    def values(x, y):
        v = np.empty(n_slots)
        for j in range(split):
            v[in_pos[j]] = x[j]
        for j in range(split, in_pos.shape[0]):
            v[in_pos[j]] = y[j - split]
        forward(ops, ins, cv, consts, idx, v, 0, n_ins)
        return v

    @njit(error_model="numpy")
    def outputs(w):
        out = np.empty(out_pos.shape[0])
        for j in range(out_pos.shape[0]):
            out[j] = w[out_pos[j]]
        return out

    @njit(error_model="numpy")
    def cotangents(res, g, x, y):
        v = values(x, y)
        gv = np.zeros(n_slots)
        for j in range(out_pos.shape[0]):
            gv[out_pos[j]] += g[j]
        reverse(ops, ins, cv, consts, idx, v, gv, 0, n_ins)
        gx, gy = np.empty(split), np.empty(in_pos.shape[0] - split)
        for j in range(split):
            gx[j] = gv[in_pos[j]]
        for j in range(split, in_pos.shape[0]):
            gy[j - split] = gv[in_pos[j]]
        return gx, gy

    @njit(error_model="numpy")
    def tangents(tx, ty, x, y):
        v = np.empty(n_slots)
        dv = np.zeros(n_slots)
        for j in range(split):
            v[in_pos[j]] = x[j]
            dv[in_pos[j]] = tx[j]
        for j in range(split, in_pos.shape[0]):
            v[in_pos[j]] = y[j - split]
            dv[in_pos[j]] = ty[j - split]
        tangent(ops, ins, cv, consts, idx, v, dv, 0, n_ins)
        return outputs(dv)

    empty = np.zeros(0)
    if binary:
        def value(x, y):
            return outputs(values(x, y))

        def vjp(res, g, x, y):
            return cotangents(res, g, x, y)

        def jvp(res, tx, ty, x, y):
            return tangents(tx, ty, x, y)
    else:
        def value(x):
            return outputs(values(x, empty))

        def vjp(res, g, x):
            return cotangents(res, g, x, empty)[0]

        def jvp(res, tx, x):
            return tangents(tx, empty, x, empty)
    return value, vjp, jvp


def checkpoint(fn: Callable) -> Callable:
    """``fn`` (of one or two arrays, returning an array) as a checkpointed segment: its
    intermediates are recomputed in the reverse sweep instead of kept (see the module)."""
    from .function import trace
    from .numpy_api import reshape

    @functools.wraps(fn)
    def call(*args):
        if len(args) not in (1, 2):
            raise TraceError(f"tj.checkpoint: {getattr(fn, '__name__', 'fn')} takes 1 or 2 arrays, got {len(args)}")
        examples = [np.asarray(getattr(x, "_value", x), dtype=np.float64) for x in args]
        f = trace(lambda *xs: fn(*xs), *examples, compile=False)
        if len(f.guards):
            raise TraceError(f"tj.checkpoint: {getattr(fn, '__name__', 'fn')} branches on its inputs' values; "
                             "a checkpointed segment must not")
        if len(f.params):
            raise TraceError("tj.checkpoint: a segment has no parameters (pass them as arguments)")
        key = _digest(f)
        prim = _SEGMENTS.get(key)
        if prim is None:
            value, vjp, jvp = _segment_kernels(f, examples[0].size, len(args) == 2)
            prim = BlockPrimitive(value, name=f"checkpoint:{getattr(fn, '__name__', 'fn')}:{key[:16]}")
            prim.defvjp(vjp).defjvp(jvp)
            _SEGMENTS[key] = prim
        return reshape(prim(*args), f.output_shape)
    return call

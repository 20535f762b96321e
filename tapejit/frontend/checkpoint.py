"""``tj.checkpoint(fn)``: a stretch of a computation whose intermediates the tape does not keep.

    y = tj.checkpoint(stretch)(x)      # one instruction; its reverse recomputes the stretch

The first call traces ``fn`` at the operands' values into a Function of its own (the
segment) and records one ``block`` instruction (tapejit.ops.primitives.BlockPrimitive)
whose kernels replay the segment's tape in scratch memory: the value runs its forward
sweep; the reverse runs it again, then its reverse sweep, seeded with the result's
adjoint; the tangent runs the forward tangent sweep, the Hessian-vector step the forward
and reverse tangent sweeps (tapejit.cpu._checkpoint_kernels). So the outer tape keeps the stretch's
inputs and outputs only, and the scratch lives for one call (one stretch at a time).

Segments are shared by their tape: calling the same stretch again, at any point of the
computation, records another instruction of the same primitive, compiled once.

``fn`` takes one or two arrays and returns one array; it must depend on its arguments
only (reading a tensor recorded outside the segment raises TraceError: as a constant its
gradient would be lost), and must not branch on their values (a segment is replayed
without its guards).
"""
from __future__ import annotations

import functools
import hashlib
from typing import Callable

import numpy as np
from ..errors import TraceError
from ..ops.primitives import BlockPrimitive

#: segment primitives by the digest of their tape, so that each compiles once
_SEGMENTS: dict[str, BlockPrimitive] = {}


def _digest(f, shapes) -> str:
    """The segment's key: its tape and its operands' shapes (an elementwise stretch records
    the same tape for a (2, 3) and a (6,) operand, whose results differ in shape)."""
    a = f.arrays
    h = hashlib.sha256(repr(shapes).encode())
    for x in (a.ops, a.ins, a.cv, a.consts, a.idx, np.asarray(f.in_pos), np.asarray(f.out_pos)):
        h.update(np.ascontiguousarray(x).tobytes())
        h.update(b"|")
    h.update(str(a.n_slots).encode())
    return h.hexdigest()


def _segment(f, shapes: list, binary: bool, name: str) -> BlockPrimitive:
    """The block primitive of a traced segment: its adapters replay f's tape (value, vjp,
    jvp and the Hessian-vector step: a segment is made of table ops, which have them all)."""
    from .._runtime.threads import get_num_threads
    from ..cpu._checkpoint_kernels import SegmentAdapters
    from ..cpu import _primitive_calls as calls
    split = int(np.prod(shapes[0], dtype=np.int64))
    adapters = SegmentAdapters(f.arrays, f.in_pos, f.out_pos, split, pool=get_num_threads() + 1)

    def evaluate(*operands):
        return np.asarray(f(*(x.reshape(s) for x, s in zip(operands, shapes))), dtype=np.float64).reshape(-1)
    prim = BlockPrimitive.from_adapters(evaluate, 2 if binary else 1, name, {
        calls.BLOCK_VALUE: adapters.value, calls.BLOCK_VJP: adapters.vjp, calls.BLOCK_JVP: adapters.jvp,
        calls.BLOCK_HVP: adapters.hvp})
    prim.segment, prim.adapters = f, adapters       # referenced: the adapters read their arrays
    # what its instructions must read and write (validate() checks each: the adapters index by them)
    prim.sizes = (split, len(f.in_pos) - split, len(f.out_pos))
    return prim


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
        # recorded as is (cheap) to find the segment; optimized only when it is new (the
        # passes of a 1e7-element stretch take about a second)
        from .tensor import _state
        outer = _state.segment_outer
        _state.segment_outer = _state.trace if _state.trace is not None else _state.tape
        try:
            f = trace(lambda *xs: fn(*xs), *examples, compile=False, optimize=False)
        finally:
            _state.segment_outer = outer
        if len(f.guards):
            raise TraceError(f"tj.checkpoint: {getattr(fn, '__name__', 'fn')} branches on its inputs' values; "
                             "a checkpointed segment must not")
        if len(f.params):
            raise TraceError("tj.checkpoint: a segment has no parameters (pass them as arguments)")
        key = _digest(f, [e.shape for e in examples])
        prim = _SEGMENTS.get(key)
        if prim is None:
            name = f"checkpoint:{getattr(fn, '__name__', 'fn')}:{key[:16]}"
            prim = _SEGMENTS[key] = _segment(f.optimize(), [e.shape for e in examples], len(args) == 2, name)
        return reshape(prim(*args), prim.segment.output_shape)
    return call

"""The adapters of a checkpointed segment (tapejit.frontend.checkpoint): block-primitive
adapters (see _block_kernels) that replay the segment's own tape in scratch memory.

Value: the segment's inputs from the outer workspace into its slots, its forward sweep,
its outputs back. Reverse: the forward again, the result's adjoints as seeds, its reverse
sweep, the inputs' adjoints added into the outer workspace. Tangent and the
Hessian-vector step likewise, with the forward tangent and the reverse tangent sweeps.

The scratch comes from a pool of buffers per segment, allocated once and claimed per
call with an atomic compare-and-swap (batch workers call adapters concurrently); a call
that finds every buffer claimed allocates its own. Reusing the buffers matters: a fresh
allocation of a 1e7-element segment's slots costs its page faults on every call, which
took longer than the sweeps (benchmarks/checkpoint_memory.py). A reverse sweep leaves
the adjoint buffers zero (it zeroes what it consumes; the inputs' adjoints are zeroed
here once read), so only a buffer a raising call left behind is cleared again.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .._runtime.scalars import ZERO
from . import _sweeps as sweeps
from ._block_kernels import SIGNATURE, _DG, _DV, _G, _V, width, workspace
from ._kernels import _array_at, float64_2d_at, int32_2d_at, int32_at, uint8_at, float64_at

_JIT = dict(nogil=True, error_model="numpy")
int64_at = _array_at(types.int64, 1)
#: scratch rows per buffer: values, tangents, adjoints, tangents of adjoints
ROWS = 4


@intrinsic
def _claim(typingctx, address):
    """1 if the int64 at ``address`` went from 0 to 1 (this caller owns it), else 0."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        pointer = builder.inttoptr(args[0], i64.as_pointer())
        pair = builder.cmpxchg(pointer, ir.Constant(i64, 0), ir.Constant(i64, 1), "acq_rel", "monotonic")
        return builder.zext(builder.extract_value(pair, 1), i64)
    return types.int64(address), codegen


@intrinsic
def _release(typingctx, address):
    """Store 0 at ``address`` (release ordering: the buffer's writes come first)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        builder.store_atomic(ir.Constant(i64, 0), builder.inttoptr(args[0], i64.as_pointer()), "release", 8)
        return context.get_dummy_value()
    return types.none(address), codegen


class SegmentAdapters:
    """The compiled adapters of one segment, and the arrays they read (kept alive here:
    the adapters hold their addresses)."""

    def __init__(self, arrays, in_pos, out_pos, split: int, pool: int):
        self.ops = np.ascontiguousarray(arrays.ops, dtype=np.uint8)
        self.ins = np.ascontiguousarray(arrays.ins, dtype=np.int32)
        self.cv = np.ascontiguousarray(arrays.cv, dtype=np.float64)
        self.consts = np.ascontiguousarray(arrays.consts, dtype=np.float64)
        self.idx = np.ascontiguousarray(arrays.idx, dtype=np.int32)
        self.in_pos = np.ascontiguousarray(in_pos, dtype=np.int64)
        self.out_pos = np.ascontiguousarray(out_pos, dtype=np.int64)
        n_slots = int(arrays.n_slots)
        # zeros: the tangents of slots no instruction gives one (fills) read as 0. Untouched
        # pages cost nothing: a buffer is faulted in by its first call only
        self.buffers = np.zeros((pool, ROWS, max(n_slots, 1)))
        self.claimed = np.zeros(pool, np.int64)
        self.dirty = np.zeros(pool, np.int64)
        self.value, self.vjp, self.jvp, self.hvp = _build(self, n_slots, split, pool)


def _build(s: SegmentAdapters, n_slots: int, split: int, pool: int):
    n_ins, n_in, n_out = len(s.ops), len(s.in_pos), len(s.out_pos)
    n_consts, n_idx = len(s.consts), len(s.idx)
    a_ops, a_ins, a_cv, a_consts, a_idx = (x.ctypes.data for x in (s.ops, s.ins, s.cv, s.consts, s.idx))
    a_in, a_out, a_claimed, a_dirty = (x.ctypes.data for x in (s.in_pos, s.out_pos, s.claimed, s.dirty))
    a_buffers, buffer_bytes = s.buffers.ctypes.data, ROWS * s.buffers.shape[2] * 8
    width_slots = s.buffers.shape[2]
    forward, reverse = sweeps.forward_vector, sweeps.reverse_vector
    tangent, reverse_tangent = sweeps.forward_tangent_vector, sweeps.reverse_tangent_vector
    stop = np.int64(n_ins)

    @njit(inline="always")
    def tape():
        return (uint8_at(a_ops, n_ins), int32_2d_at(a_ins, 8, n_ins), float64_at(a_cv, n_ins),
                float64_at(a_consts, n_consts), int32_at(a_idx, n_idx))

    @njit(inline="always")
    def claim():
        for k in range(pool):
            if _claim(a_claimed + 8 * k):
                return k
        return -1

    @njit(inline="always")
    def scratch(k):
        if k >= 0:
            return float64_2d_at(a_buffers + k * buffer_bytes, ROWS, width_slots)
        return np.zeros((ROWS, width_slots))     # every buffer claimed: one of its own

    @njit(inline="always")
    def done(k):
        if k >= 0:
            _release(a_claimed + 8 * k)

    @njit(inline="always")
    def clean_adjoints(k, w):
        """Zero the adjoint rows when a raising call left them (fresh buffers are zeroed)."""
        dirty = int64_at(a_dirty, pool)
        if k >= 0:
            if dirty[k] != 0:
                w[2, :] = 0.0
                w[3, :] = 0.0
            dirty[k] = 1

    @njit(inline="always")
    def adjoints_clean(k):
        if k >= 0:
            int64_at(a_dirty, pool)[k] = 0

    wrong = "a checkpoint instruction's lengths differ from its segment's (validate() refuses such tapes)"

    @njit(inline="always")
    def check(n, sa, sb):
        if n != n_out or sa != split or sb != n_in - split:
            raise ValueError(wrong)

    @njit(inline="always")
    def load(row, W, a, b, p):
        inp = int64_at(a_in, n_in)
        for j in range(split):
            row[inp[j]] = W[a + j, p]
        for j in range(split, n_in):
            row[inp[j]] = W[b + j - split, p]

    @njit(inline="always")
    def add_inputs(W, row, a, b, p):
        """W[inputs] += row[input slots], which are zeroed (the sweeps leave them)."""
        inp = int64_at(a_in, n_in)
        for j in range(split):
            W[a + j, p] += row[inp[j]]
            row[inp[j]] = 0.0
        for j in range(split, n_in):
            W[b + j - split, p] += row[inp[j]]
            row[inp[j]] = 0.0

    def value(ctx, number, o, n, a, sa, b, sb):
        check(n, sa, sb)
        V = workspace(ctx, _V)
        ops, ins, cv, consts, idx = tape()
        outp = int64_at(a_out, n_out)
        k = claim()
        w = scratch(k)
        v = w[0]
        for p in range(width(ctx)):
            load(v, V, a, b, p)
            forward(ops, ins, cv, consts, idx, v, ZERO, stop)
            for j in range(n):
                V[o + j, p] = v[outp[j]]
        done(k)

    def vjp(ctx, number, o, n, a, sa, b, sb):
        check(n, sa, sb)
        V, G = workspace(ctx, _V), workspace(ctx, _G)
        ops, ins, cv, consts, idx = tape()
        outp = int64_at(a_out, n_out)
        k = claim()
        w = scratch(k)
        clean_adjoints(k, w)
        v, g = w[0], w[2]
        for p in range(width(ctx)):
            flows = False
            for j in range(n):
                flows = flows or G[o + j, p] != 0.0
            if not flows:
                continue
            load(v, V, a, b, p)
            forward(ops, ins, cv, consts, idx, v, ZERO, stop)
            for j in range(n):
                g[outp[j]] += G[o + j, p]
            reverse(ops, ins, cv, consts, idx, v, g, ZERO, stop)
            add_inputs(G, g, a, b, p)
            for j in range(n):           # an output that is an input, or no instruction's
                g[outp[j]] = 0.0
        adjoints_clean(k)
        done(k)

    def jvp(ctx, number, o, n, a, sa, b, sb):
        check(n, sa, sb)
        V, T = workspace(ctx, _V), workspace(ctx, _DV)
        ops, ins, cv, consts, idx = tape()
        outp = int64_at(a_out, n_out)
        k = claim()
        w = scratch(k)
        v, t = w[0], w[1]
        for p in range(width(ctx)):
            load(v, V, a, b, p)
            load(t, T, a, b, p)
            tangent(ops, ins, cv, consts, idx, v, t, ZERO, stop)
            for j in range(n):
                T[o + j, p] = t[outp[j]]
        done(k)

    def hvp(ctx, number, o, n, a, sa, b, sb):
        check(n, sa, sb)
        V, T, G, H = workspace(ctx, _V), workspace(ctx, _DV), workspace(ctx, _G), workspace(ctx, _DG)
        ops, ins, cv, consts, idx = tape()
        outp = int64_at(a_out, n_out)
        k = claim()
        w = scratch(k)
        clean_adjoints(k, w)
        v, t, g, h = w[0], w[1], w[2], w[3]
        for p in range(width(ctx)):
            load(v, V, a, b, p)
            load(t, T, a, b, p)
            tangent(ops, ins, cv, consts, idx, v, t, ZERO, stop)
            for j in range(n):
                g[outp[j]] += G[o + j, p]
                h[outp[j]] += H[o + j, p]
            reverse_tangent(ops, ins, cv, consts, idx, v, t, g, h, ZERO, stop)
            add_inputs(G, g, a, b, p)
            add_inputs(H, h, a, b, p)
            for j in range(n):
                g[outp[j]] = 0.0
                h[outp[j]] = 0.0
        adjoints_clean(k)
        done(k)

    return tuple(njit(SIGNATURE, **_JIT)(fn) for fn in (value, vjp, jvp, hvp))

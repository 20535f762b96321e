"""Which adjoint contributions of the chunk reverse sweep can assign instead of add.

A reverse sweep that only adds (``g[a] += g[o] * partial``) needs every adjoint row to
be zero before its first contribution, so it zeroes each row after reading it: per
element, a load of the stale row and a store of the zero that the next chunk needs.
Walking the tape backwards once, like the sweep, tells which contribution comes first
for every slot; when an instruction is first for a whole operand run it can assign
(``g[a] = g[o] * partial``), and a row whose first contribution assigns never needs
zeroing. Rows accumulated into before any assignment (partial overlaps, broadcasts,
structural operations) keep the old rule: zero at the start, zeroed once read. A sum
assigns too, when it reads each slot of its operand once and is first to all of them:
the loss ``sum(terms)`` that ends most tapes then spares its terms' rows the zeroing.

The plan is one byte per instruction: bits 1, 2, 4 assign operand a, b, d; bit 8 zeroes
the output's rows after the sweep reads them. The chunk sweep's elementwise loops follow
it; an assignment needs a flat run (all operands unit-stride, or a single row), so runs
that go row by row only add, and zero when bit 8 says. Other structural operations
always add, and zero their outputs' rows. The batch engine reads the inputs' adjoint rows
out after the sweep and zeroes only the dirty ones (accumulated into before any
assignment): the others are assigned in every chunk or never written.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..codegen import render as codegen
from ..ops.table import OPS, OP
from ..tape._reads import MAX_OPERANDS, distinct_reads, index_reads, operand_reads
from .._runtime.scalars import ZERO as _ZERO
from .._runtime.twins import jit_or_python, tape_work

_JIT = dict(cache=True, nogil=True, error_model="numpy")


def _opcode_tables():
    # the sweeps emit contributions in operand order; an assignment must come first
    assert all(list(op.partials) == sorted(op.partials) for op in OPS), "partials out of operand order"
    elementwise = np.array([op.elementwise for op in OPS], np.bool_)
    arity = np.array([op.arity for op in OPS], np.int64)
    assignable = np.array([sum(codegen.FIRST_WRITE_BITS[x] for x in codegen.first_write_operands(op))
                           for op in OPS], np.int64)
    contributes = np.array([sum(codegen.FIRST_WRITE_BITS[x] for x in op.partials) for op in OPS], np.int64)
    return elementwise, arity, assignable, contributes


_TABLES = _opcode_tables()


@njit(**_JIT)
def _overlaps(base, stride, count, other_base, other_stride, other_count):
    """Whether two unit-stride-or-single runs share a slot but are not the same run."""
    if base == other_base and stride == other_stride and count == other_count:
        return False
    lo, hi = base, base + (count - 1) * stride
    other_lo, other_hi = other_base, other_base + (other_count - 1) * other_stride
    return not (hi < other_lo or other_hi < lo)


@njit(**_JIT)
def _plan(ops, ins, idx, n_slots, seeded, elementwise, arity, assignable, contributes, op_input, zero_bit):
    plan = np.zeros(ops.shape[0], np.uint8)
    written = np.zeros(n_slots, np.bool_)
    seen = np.zeros(n_slots, np.int64)      # i + 1: read by instruction i (repeats cannot assign)
    dirty = np.zeros(n_slots, np.bool_)     # accumulated into before any assignment
    for s in seeded:
        written[s] = True
    for i in range(ops.shape[0] - 1, -1, -1):
        op = ops[i]
        if op == op_input:
            continue
        o, n = ins[0, i], ins[1, i]
        if elementwise[op]:
            m = arity[op]
            flat = n == 1
            if not flat:
                flat = True
                for x in range(m):
                    if ins[3 + 2 * x, i] != 1:
                        flat = False
            for x in range(m):
                base, stride = ins[2 + 2 * x, i], ins[3 + 2 * x, i]
                bit = 1 << x
                if (contributes[op] & bit) == 0:
                    continue
                can_assign = flat and (assignable[op] & bit) != 0
                if can_assign:
                    for k in range(n):
                        if written[base + k * stride]:
                            can_assign = False
                            break
                if can_assign:
                    for y in range(m):
                        if y != x and _overlaps(base, stride, n, ins[2 + 2 * y, i], ins[3 + 2 * y, i], n):
                            can_assign = False
                if can_assign:
                    plan[i] |= bit
                for k in range(n):
                    s = base + k * stride
                    if not written[s]:
                        written[s] = True
                        dirty[s] = not can_assign
        else:
            a, sa, b, sb = ins[2, i], ins[3, i], ins[4, i], ins[5, i]
            for k in range(n):
                base, first, count = index_reads(op, a, b, sb, k)
                for q in range(first, first + count):
                    s = base + idx[q]
                    if not written[s]:
                        written[s] = True
                        dirty[s] = True
            # a reduction whose reverse can assign (a sum: opcodes.OpDef.reverse_assigns) does
            # when it reads each slot of operand a once and none has an adjoint yet
            distinct = distinct_reads(op, n)
            # (every element reading the same slots: each is read n times, none assigned)
            can_assign = (assignable[op] & 1) != 0 and distinct == n
            if can_assign:
                for k in range(distinct):
                    base, stride, count = operand_reads(op, n, a, sa, b, sb, k, _ZERO)
                    for q in range(count):
                        s = base + q * stride
                        if written[s] or seen[s] == i + 1:
                            can_assign = False
                        seen[s] = i + 1
            if can_assign:
                plan[i] |= 1
            for k in range(distinct):
                for which in range(MAX_OPERANDS):
                    base, stride, count = operand_reads(op, n, a, sa, b, sb, k, which)
                    for q in range(count):
                        s = base + q * stride
                        if not written[s]:
                            written[s] = True
                            dirty[s] = not (can_assign and which == 0)
    for i in range(ops.shape[0]):
        if elementwise[ops[i]]:
            o, n = ins[0, i], ins[1, i]
            for k in range(n):
                if dirty[o + k]:
                    plan[i] |= zero_bit
                    break
    return plan, dirty


def adjoint_plan(arrays, seeded: np.ndarray) -> np.ndarray:
    """The plan (one byte per instruction) for reverse sweeps whose seeds assign the
    adjoint rows ``seeded`` before the sweep starts."""
    return plan_and_dirty(arrays, seeded)[0]


def plan_and_dirty(arrays, seeded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plan, and per slot whether the sweep accumulates into its adjoint before any
    assignment (such a row must be zero when the sweep starts). A slot that is neither
    dirty nor seeded is assigned in every sweep or never written."""
    elementwise, arity, assignable, contributes = _TABLES
    plan = jit_or_python(_plan, tape_work(arrays.ops, arrays.ins))
    return plan(arrays.ops, arrays.ins, arrays.idx, arrays.n_slots, np.asarray(seeded, np.int64), elementwise,
                 arity, assignable, contributes, OP.input, codegen.ZERO_AFTER_READ)

"""Sparse Jacobians and Hessians: patterns from the tape, coloring, compressed evaluation.

- The **Jacobian pattern** propagates the set of inputs each slot depends on (only through
  operands that have a derivative, so comparisons and conditions carry nothing): per
  instruction where a run's sets are affine in the element index, slot by slot elsewhere
  (see "Index sets" below).
- The **Hessian pattern** adds, for every element of a nonlinear instruction that
  influences the output, the products of its operands' input sets. Which operand pairs
  interact is read from the opcode table: operand x's partial depends on operand y (or on
  the output), found by ``symbolic.depends_on``.
- Columns are colored so that no two columns of one color share a row (distance-2
  coloring: every entry is recovered directly), a banded pattern in closed form, any other
  greedily; one tangent (Jacobian) or
  Hessian-vector product (Hessian) per color gives the compressed matrix, scattered into
  CSR. Patterns and colorings are computed once per Function and cached on it.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

from ..ops.table import OP, OPS
from ..errors import TapejitError
from ..ops.symbolic import depends_on
from .._runtime.threads import get_num_threads, limit_threads, run_workers
from .._runtime.scalars import NO as _NO, NO_LIMIT as _NO_LIMIT, ONE as _ONE, ZERO as _ZERO
from .._runtime.twins import jit_or_python, tape_work
from ..tape._reads import MAX_OPERANDS, operand_reads

_JIT = dict(cache=True, nogil=True, error_model="numpy")
MAX_STORED = 2**31 - 1        # slot sets are addressed with int32 positions

# per opcode: which operands (a, b, d) carry a derivative, and which pairs interact
DIFFERENTIABLE = np.zeros((len(OPS), 3), np.bool_)
NONLINEAR = np.zeros((len(OPS), 3, 3), np.bool_)
ELEMENTWISE = np.array([op.elementwise for op in OPS], np.bool_)
for _code, _op in enumerate(OPS):
    if not _op.elementwise:
        continue
    for _k, _x in enumerate("abd"):
        if _x in _op.partials:
            DIFFERENTIABLE[_code, _k] = True
    for _k, _x in enumerate("abd"):
        if _x not in _op.partials:
            continue
        for _j, _y in enumerate("abd"):
            if _y in _op.partials and depends_on(_op.partials[_x], {_y, "o"}):
                NONLINEAR[_code, _k, _j] = True


# ------------------------------------------------------------------------------------------
# Index sets, two representations.
# - A run (the slots o..o+n-1 one instruction writes) is *affine* when element k's set is
#   {off_f + k * step_f} over a few families f: inputs, and elementwise instructions over
#   affine operands (x[1:] - x[:-1]**2 has families (1, 1) and (0, 1)). An affine run
#   costs a handful of numbers, however long it is: large vectorized objectives propagate
#   their patterns per instruction, not per slot.
# - Otherwise a run is *explicit*: slot s's set is ind[start[s]:end[s]], sorted, without
#   repeats; a slot whose set equals an operand's (unary ops, a constant operand, one set
#   inside the other) shares that operand's storage. An affine run is expanded into this
#   form ("materialized") only when an explicit instruction reads it elementwise.
# ------------------------------------------------------------------------------------------
FAMILIES_MAX = 16
FAMILY_ENTRIES_MIN = 8     # instructions this long keep their Hessian entries as families
# Hot loops call no helper per slot: a call that passes arrays costs a reference-count
# increment and decrement per array (atomic operations, ~50 ns per call measured here,
# inlined or not), several times the work inside. Helpers take whole ranges instead.


@njit(**_JIT)
def _sort_small(values, m):
    """Sort values[:m] in place: insertion sort for the usual handful, numpy beyond."""
    if m > 32:
        values[:m] = np.sort(values[:m])
        return
    for p in range(1, m):
        x = values[p]
        q = p - 1
        while q >= 0 and values[q] > x:
            values[q + 1] = values[q]
            q -= 1
        values[q + 1] = x


@njit(inline="always", **_JIT)
def _run_of(slot, run_o, run_n):
    """Position in run_o of the run holding slot, or -1 for a slot no instruction writes."""
    hi = run_o.shape[0] - 1
    if hi < 0 or slot < run_o[0]:
        return -1
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if run_o[mid] <= slot:
            lo = mid
        else:
            hi = mid - 1
    return lo if slot < run_o[lo] + run_n[lo] else -1


@njit(**_JIT)
def _runs_of(slots, run_o, run_n):
    """_run_of for every slot, searching only when a slot leaves the previous one's run."""
    runs = np.empty(slots.shape[0], np.int32)
    r = -1
    for t in range(slots.shape[0]):
        slot = slots[t]
        if r < 0 or slot < run_o[r] or slot >= run_o[r] + run_n[r]:
            r = _run_of(slot, run_o, run_n)
        runs[t] = r
    return runs


@njit(**_JIT)
def _add_progression(first, stride, length, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, start,
                     end, ind, stamp, mark, collected, n_collected):
    """Add the sets of slots first + t * stride, t < length (deduplicated by stamp)."""
    r = -1
    for t in range(length):
        slot = first + t * stride
        if r < 0 or slot < run_o[r] or slot >= run_o[r] + run_n[r]:
            r = _run_of(slot, run_o, run_n)
            if r < 0:
                continue
        i = run_inst[r]
        if affine[i]:
            e = slot - run_o[r]
            for f in range(fam_ptr[i], fam_ptr[i + 1]):
                j = fam_off[f] + e * fam_step[f]
                if stamp[j] != mark:
                    stamp[j] = mark
                    collected[n_collected] = j
                    n_collected += 1
        else:
            for q in range(start[slot], end[slot]):
                j = ind[q]
                if stamp[j] != mark:
                    stamp[j] = mark
                    collected[n_collected] = j
                    n_collected += 1
    return n_collected


@njit(**_JIT)
def _merge(ind, s1, e1, s2, e2, out):
    """The union of the sorted sets ind[s1:e1] and ind[s2:e2], written from ind[out];
    returns its end. Both inputs lie below out."""
    p, q = s1, s2
    while p < e1 and q < e2:
        x, y = ind[p], ind[q]
        if x < y:
            ind[out] = x
            p += 1
        elif y < x:
            ind[out] = y
            q += 1
        else:
            ind[out] = x
            p += 1
            q += 1
        out += 1
    while p < e1:
        ind[out] = ind[p]
        p += 1
        out += 1
    while q < e2:
        ind[out] = ind[q]
        q += 1
        out += 1
    return out


@njit(**_JIT)
def _operand_families(x, sx, n, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, off, step, m, lo):
    """Append to off/step (from m) the families of the operand slots x + k * sx, k < n,
    skipping repeats of off/step[lo:m]. Returns the new m, or -1 when the operand is not
    one affine run or the families would pass FAMILIES_MAX."""
    r = _run_of(x, run_o, run_n)
    last = x + (n - 1) * sx
    if r < 0 or last < run_o[r] or last >= run_o[r] + run_n[r] or not affine[run_inst[r]]:
        return -1
    i = run_inst[r]
    e0 = x - run_o[r]
    for f in range(fam_ptr[i], fam_ptr[i + 1]):
        o_f = fam_off[f] + e0 * fam_step[f]
        s_f = fam_step[f] * sx if n > 1 else 0
        repeat = False
        for g in range(lo, m):
            if off[g] == o_f and step[g] == s_f:
                repeat = True
                break
        if not repeat:
            if m == FAMILIES_MAX:
                return -1
            off[m], step[m] = o_f, s_f
            m += 1
    return m


@njit(**_JIT)
def _materialize(r, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, start, end, ind, count):
    """Write the explicit sets of affine run r from ind[count]; the new count, or -1 when
    ind is too small."""
    i = run_inst[r]
    m = fam_ptr[i + 1] - fam_ptr[i]
    n = run_n[r]
    if count + n * m > ind.shape[0]:
        return -1
    for k in range(n):
        s = run_o[r] + k
        for f in range(m):
            ind[count + f] = fam_off[fam_ptr[i] + f] + k * fam_step[fam_ptr[i] + f]
        _sort_small(ind[count:], m)
        u = 0
        for f in range(m):                       # drop repeats (families may meet)
            if u == 0 or ind[count + f] != ind[count + u - 1]:
                ind[count + u] = ind[count + f]
                u += 1
        start[s], end[s] = count, count + u
        count += u
    return count


@njit(**_JIT)
def _elementwise_sets(o, n, x0, sx0, x1, sx1, n_operands, start, end, ind, count):
    """Explicit sets of an elementwise instruction with one or two differentiable operands
    (their runs already explicit)."""
    if n_operands == 1:
        for k in range(n):
            start[o + k] = start[x0 + k * sx0]
            end[o + k] = end[x0 + k * sx0]
        return count
    for k in range(n):
        s1, e1 = start[x0 + k * sx0], end[x0 + k * sx0]
        s2, e2 = start[x1 + k * sx1], end[x1 + k * sx1]
        if (s1 == s2 and e1 == e2) or s2 == e2:
            start[o + k], end[o + k] = s1, e1
        elif s1 == e1:
            start[o + k], end[o + k] = s2, e2
        else:
            if count + (e1 - s1) + (e2 - s2) > ind.shape[0]:
                return -1
            stop = _merge(ind, s1, e1, s2, e2, count)
            if stop - count == e1 - s1:          # the second set lies inside the first
                start[o + k], end[o + k] = s1, e1
            elif stop - count == e2 - s2:
                start[o + k], end[o + k] = s2, e2
            else:
                start[o + k], end[o + k] = count, stop
                count = stop
    return count


@njit(**_JIT)
def _structural_sets(op, o, n, a, sa, b, sb, d, sd, consts, idx, elementwise,
                     op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax, op_gather_sum,
                     run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, start, end, ind,
                     count, stamp, serial, collected):
    """Explicit sets of an instruction that is not elementwise (or has three
    differentiable operands), from ind[count]; the new count, or -1 when ind is too small
    (the caller grows it and calls again: ind is never reassigned here, which keeps this
    loop free of reference counting)."""
    for k in range(n):
        s = o + k
        mark = serial + k
        m = 0
        if elementwise[op]:                      # three differentiable operands
            for slot in (a + k * sa, b + k * sb, d + k * sd):
                m = _add_progression(slot, _ZERO, _ONE, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                     start, end, ind, stamp, mark, collected, m)
        elif op == op_gather:
            m = _add_progression(a + idx[b + k], _ZERO, _ONE, run_o, run_n, run_inst, affine, fam_ptr, fam_off,
                                 fam_step, start, end, ind, stamp, mark, collected, m)
        elif op == op_gather_sum:
            for q in range(b + k * sb, b + (k + 1) * sb):
                m = _add_progression(idx[q], _ZERO, _ONE, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                     start, end, ind, stamp, mark, collected, m)
        elif op == op_sum or op == op_amax:
            r, j = k // sb, k % sb
            m = _add_progression(a + r * b * sa + j, sa, b, run_o, run_n, run_inst, affine, fam_ptr, fam_off,
                                 fam_step, start, end, ind, stamp, mark, collected, m)
        elif op == op_affine:
            for j in range(sb):
                if consts[b + k * sb + j] != 0.0:
                    m = _add_progression(a + j * sa, _ZERO, _ONE, run_o, run_n, run_inst, affine, fam_ptr, fam_off,
                                         fam_step, start, end, ind, stamp, mark, collected, m)
        elif op == op_matmul:
            r, j = k // sb, k % sb               # a set union: the row and the column one after the other
            m = _add_progression(a + r * sa, _ONE, sa, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                 start, end, ind, stamp, mark, collected, m)
            m = _add_progression(b + j, sb, sa, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                 start, end, ind, stamp, mark, collected, m)
        elif op == op_softmax:
            r = k // sb
            m = _add_progression(a + r * sb, _ONE, sb, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                 start, end, ind, stamp, mark, collected, m)
        else:                                    # any other row (a block primitive): what its reads say
            for which in range(MAX_OPERANDS):
                first, stride, many = operand_reads(op, n, a, sa, b, sb, k, which)
                if many > 0:
                    m = _add_progression(first, np.int64(stride), np.int64(many), run_o, run_n, run_inst, affine,
                                         fam_ptr, fam_off, fam_step, start, end, ind, stamp, mark, collected, m)
        if count + m > ind.shape[0]:
            return -1
        if m > 32 and 8 * m > stamp.shape[0]:
            # a large share of all inputs (a reduction): read them off the stamps in order
            u = count
            for j in range(stamp.shape[0]):
                if stamp[j] == mark:
                    ind[u] = j
                    u += 1
        else:
            if m > 1:
                _sort_small(collected, m)
            for q in range(m):
                ind[count + q] = collected[q]
        start[s], end[s] = count, count + m
        count += m
    return count


@njit(**_JIT)
def _grown_ind(ind, need):
    """ind grown (copied) to hold at least need entries, or empty when it already holds
    MAX_STORED: positions are int32."""
    if ind.shape[0] >= MAX_STORED:
        return ind[:0]
    return _grown(ind, need, np.int64(MAX_STORED))


@njit(**_JIT)
def _grown(array, need, limit):
    grown = np.empty(min(max(2 * array.shape[0], need), limit), array.dtype)
    grown[:array.shape[0]] = array
    return grown


@njit(**_JIT)
def forward_patterns(ops, ins, consts, idx, start, end, in_pos, n_needed, differentiable, elementwise,
                     op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax, op_gather_sum):
    """Input-index sets of every slot written by the first n_needed instructions (the
    others read as empty): (run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
    start, end, ind) and whether the explicit storage fit int32 positions.
    start and end (n_slots each, zero) come from the caller: numpy's zeros are pages the
    kernel maps on first touch, and an all-affine tape never touches them."""
    n_ins = ops.shape[0]
    n_in = in_pos.shape[0]
    # the runs in slot order; a tape that is not in slot order is handled all-explicit
    n_runs = 0
    ordered = True
    for i in range(n_ins):
        if ins[1, i] > 0:
            n_runs += 1
    run_o = np.empty(n_runs, np.int64)
    run_n = np.empty(n_runs, np.int64)
    run_inst = np.empty(n_runs, np.int64)
    r = 0
    for i in range(n_ins):
        if ins[1, i] > 0:
            run_o[r], run_n[r], run_inst[r] = ins[0, i], ins[1, i], i
            if r > 0 and run_o[r] < run_o[r - 1] + run_n[r - 1]:
                ordered = False
            r += 1
    affine = np.zeros(n_ins, np.bool_)
    materialized = np.zeros(n_ins, np.bool_)
    fam_ptr = np.zeros(n_ins + 1, np.int64)
    fam_off = np.empty(max(16, n_ins), np.int64)
    fam_step = np.empty(max(16, n_ins), np.int64)
    n_fam = 0
    ind = np.empty(max(16, n_in), np.int32)     # room for every input
    count = 0
    stamp = np.empty(0, np.int64)                # allocated by the first instruction needing it
    collected = np.empty(n_in, np.int32)
    serial = 0                                   # stamps: a fresh mark per slot and attempt
    off = np.empty(FAMILIES_MAX, np.int64)
    step = np.empty(FAMILIES_MAX, np.int64)

    # inputs: a run whose slots are consecutive inputs is one family (first index, 1), a
    # run without inputs (parameters) is empty; any other input run is explicit
    first_input = np.full(n_runs, -1, np.int64)
    inputs_in_run = np.zeros(n_runs, np.int64)
    consecutive = np.ones(n_runs, np.bool_)
    input_run = _runs_of(in_pos, run_o, run_n) if ordered else np.full(n_in, -1, np.int32)
    if ordered:
        for j in range(n_in):
            r = input_run[j]
            if r < 0:
                continue
            if inputs_in_run[r] == 0:
                first_input[r] = j - (in_pos[j] - run_o[r])
            elif j - (in_pos[j] - run_o[r]) != first_input[r]:
                consecutive[r] = False
            inputs_in_run[r] += 1
        for r in range(n_runs):
            if ops[run_inst[r]] == op_input:
                affine[run_inst[r]] = inputs_in_run[r] == 0 or (inputs_in_run[r] == run_n[r] and consecutive[r])
    for j in range(n_in):                        # ind has room for every input
        r = input_run[j]
        if r < 0 or not affine[run_inst[r]]:
            ind[count] = j
            start[in_pos[j]], end[in_pos[j]] = count, count + 1
            count += 1

    for i in range(n_ins):
        op, o, n = ops[i], ins[0, i], ins[1, i]
        a, sa, b, sb, d, sd = ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i]
        if i >= n_needed:
            affine[i] = False
            fam_ptr[i + 1] = n_fam
            continue
        if op == op_input and affine[i] and n > 0:
            r = _run_of(o, run_o, run_n)
            if inputs_in_run[r] > 0:
                if n_fam + 1 > fam_off.shape[0]:
                    fam_off = _grown(fam_off, n_fam + 1, _NO_LIMIT)
                    fam_step = _grown(fam_step, n_fam + 1, _NO_LIMIT)
                fam_off[n_fam], fam_step[n_fam] = first_input[r], 1
                n_fam += 1
        if op != op_input:
            explicit = True
            shared = False
            n_operands = 0
            x0, sx0, x1, sx1 = 0, 0, 0, 0
            if elementwise[op] and n > 0:
                m = 0
                for x in range(3):
                    if differentiable[op, x]:
                        slot, stride = (a, sa) if x == 0 else ((b, sb) if x == 1 else (d, sd))
                        if n_operands == 0:
                            x0, sx0 = slot, stride
                        else:
                            x1, sx1 = slot, stride
                        n_operands += 1
                        if ordered and m >= 0:
                            m = _operand_families(slot, stride, n, run_o, run_n, run_inst, affine, fam_ptr,
                                                  fam_off, fam_step, off, step, m, _ZERO)
                if ordered and m >= 0:
                    if n_fam + m > fam_off.shape[0]:
                        fam_off = _grown(fam_off, n_fam + m, _NO_LIMIT)
                        fam_step = _grown(fam_step, n_fam + m, _NO_LIMIT)
                    fam_off[n_fam: n_fam + m] = off[:m]
                    fam_step[n_fam: n_fam + m] = step[:m]
                    n_fam += m
                    affine[i] = True
                    explicit = False
                elif n_operands <= 2:
                    # explicit operands: materialize the affine runs they read
                    for x in range(n_operands):
                        slot, stride = (x0, sx0) if x == 0 else (x1, sx1)
                        last = slot + (n - 1) * stride
                        lo, hi = min(slot, last), max(slot, last)
                        r = _run_of(lo, run_o, run_n) if ordered else -1
                        while ordered and r < n_runs:
                            if r >= 0:
                                if run_o[r] > hi:
                                    break
                                ri = run_inst[r]
                                if affine[ri] and not materialized[ri]:
                                    while True:
                                        new_count = _materialize(r, run_o, run_n, run_inst, affine, fam_ptr, fam_off,
                                                                 fam_step, start, end, ind, count)
                                        if new_count >= 0:
                                            break
                                        ind = _grown_ind(ind, count + run_n[r] * FAMILIES_MAX)
                                        if ind.shape[0] == 0:
                                            return (run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                                    start, end, ind), False
                                    count = new_count
                                    materialized[ri] = True
                            r += 1
                    shared = True                # explicit, sharing its operands' sets
            if explicit and n > 0:
                if not shared and stamp.shape[0] != n_in:
                    stamp = np.full(n_in, -1, np.int64)
                while True:
                    if shared:
                        new_count = _elementwise_sets(o, n, x0, sx0, x1, sx1, n_operands, start, end, ind, count)
                    else:
                        new_count = _structural_sets(
                            op, o, n, a, sa, b, sb, d, sd, consts, idx, elementwise, op_gather, op_sum, op_amax,
                            op_affine, op_matmul, op_softmax, op_gather_sum, run_o, run_n, run_inst, affine, fam_ptr, fam_off,
                            fam_step, start, end, ind, count, stamp, serial, collected)
                        serial += n
                    if new_count >= 0:
                        break
                    ind = _grown_ind(ind, count + n_in)
                    if ind.shape[0] == 0:
                        return (run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                start, end, ind), False
                count = new_count
                materialized[i] = True
        fam_ptr[i + 1] = n_fam
    return (run_o, run_n, run_inst, affine, fam_ptr, fam_off[:n_fam], fam_step[:n_fam], start, end,
            ind[:count]), True


@njit(inline="always", **_JIT)
def _slot_set(slot, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, start, end, ind, buffer):
    """Slot's set as an array: a view of ind, or the affine families written to buffer
    (repeats possible there; callers that need a set sort and deduplicate)."""
    r = _run_of(slot, run_o, run_n)
    if r >= 0 and affine[run_inst[r]]:
        i = run_inst[r]
        e = slot - run_o[r]
        m = fam_ptr[i + 1] - fam_ptr[i]
        for f in range(m):
            buffer[f] = fam_off[fam_ptr[i] + f] + e * fam_step[fam_ptr[i] + f]
        return buffer[:m]
    return ind[start[slot]: end[slot]]


# ------------------------------------------------------------------------------------------
# Hessian pattern: one reverse pass marks the slots that reach the output and, for each
# reached element of a nonlinear instruction, emits the products of its interacting
# operands' sets as (row, col) pairs with row <= col
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _whole_run(first, stride, length, run_o, run_n, run_inst, ops, op_input):
    """For the slots first + t * stride (t < length): the instruction whose whole run they
    are, -2 when they lie in an input's run (whose marks nothing reads), else -1."""
    r = _run_of(first, run_o, run_n)
    if r < 0:
        return -1
    last = first + (length - 1) * stride
    if run_o[r] <= last < run_o[r] + run_n[r] and ops[run_inst[r]] == op_input:
        return -2
    if (stride == 1 or length == 1) and run_o[r] == first and run_n[r] == length:
        return run_inst[r]
    return -1


@njit(**_JIT)
def _set_products(set1, set2, same, rows, cols, count):
    """Pairs of two sets (only the upper half when they are the same set); -1 when
    rows/cols are full."""
    m1, m2 = set1.shape[0], set2.shape[0]
    need = m1 * (m1 + 1) // 2 if same else m1 * m2
    if count + need > rows.shape[0]:
        return -1
    for p in range(m1):
        for q in range(p if same else 0, m2):
            rows[count], cols[count] = min(set1[p], set2[q]), max(set1[p], set2[q])
            count += 1
    return count


@njit(**_JIT)
def _instruction_entries(inst, op, o, n, a, sa, b, sb, d, sd, consts, idx, reached, whole, ops, op_input,
                         run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, start, end, ind,
                         differentiable, nonlinear, elementwise, op_gather, op_sum, op_amax, op_affine,
                         op_matmul, op_softmax, op_gather_sum, rows, cols, count, buffer1, buffer2, off, step, entry_fams, n_entry_fams):
    """Marks the operands of one instruction's reached slots and emits their Hessian
    entries from count, or entry families from n_entry_fams (entry_fams has room for one
    instruction's). Returns both counts; -1 when rows/cols are full (marking twice is
    harmless). A run read whole and everywhere is marked once, in whole[instruction],
    rather than slot by slot in reached."""
    everywhere = whole[inst]
    if elementwise[op]:
        # the operands with a derivative, and the pairs of them that interact, read once
        base = np.empty(3, np.int64)
        stride = np.empty(3, np.int64)
        n_x = 0
        for x in range(3):
            if differentiable[op, x]:
                base[n_x], stride[n_x] = (a, sa) if x == 0 else ((b, sb) if x == 1 else (d, sd))
                n_x += 1
        first = np.empty(6, np.int64)
        second = np.empty(6, np.int64)
        n_pairs = 0
        p = 0
        for x in range(3):
            if not differentiable[op, x]:
                continue
            q = p
            for y in range(x, 3):
                if not differentiable[op, y]:
                    continue
                if nonlinear[op, x, y] or nonlinear[op, y, x]:
                    first[n_pairs], second[n_pairs] = p, q
                    n_pairs += 1
                q += 1
            p += 1
        if not everywhere and n >= FAMILY_ENTRIES_MIN:
            everywhere = True
            for k in range(n):
                if not reached[o + k]:
                    everywhere = False
                    break
        if everywhere and n >= FAMILY_ENTRIES_MIN:
            # reached everywhere: operands read whole are marked once, inputs not at all
            for t in range(n_x):
                w = _whole_run(base[t], stride[t], n, run_o, run_n, run_inst, ops, op_input)
                if w >= 0:
                    whole[w] = True
                elif w == -1:
                    for k in range(n):
                        reached[base[t] + k * stride[t]] = True
            if n_pairs == 0:                     # linear: no entries
                return count, n_entry_fams
        # operands in affine runs: their families for the whole instruction, operand t's
        # in off/step[fam_first[t]:fam_first[t + 1]]
        fam_first = np.zeros(4, np.int64)
        m = 0 if n_pairs > 0 else -1
        for t in range(n_x):
            if m >= 0:
                m = _operand_families(base[t], stride[t], n, run_o, run_n, run_inst, affine, fam_ptr, fam_off,
                                      fam_step, off, step, m, m)
            fam_first[t + 1] = m
        if m >= 0:
            if everywhere and n >= FAMILY_ENTRIES_MIN:
                # the entries are families (i0 + k di, j0 + k dj), kept as such so that
                # instructions repeating each other's entries (sum(x**2) + sum((x - 1)**2))
                # are expanded once
                for t in range(n_pairs):
                    u, v = first[t], second[t]
                    for f in range(fam_first[u], fam_first[u + 1]):
                        for g in range(f if u == v else fam_first[v], fam_first[v + 1]):
                            i0, di, j0, dj = off[f], step[f], off[g], step[g]
                            if di == dj and i0 > j0:             # the same entries, upper side
                                i0, j0 = j0, i0
                            entry_fams[n_entry_fams, 0], entry_fams[n_entry_fams, 1] = i0, di
                            entry_fams[n_entry_fams, 2], entry_fams[n_entry_fams, 3] = j0, dj
                            entry_fams[n_entry_fams, 4] = n
                            n_entry_fams += 1
                return count, n_entry_fams
            per_element = 0
            for t in range(n_pairs):
                m1 = fam_first[first[t] + 1] - fam_first[first[t]]
                m2 = fam_first[second[t] + 1] - fam_first[second[t]]
                per_element += m1 * (m1 + 1) // 2 if first[t] == second[t] else m1 * m2
            for k in range(n):
                if not everywhere and not reached[o + k]:
                    continue
                if count + per_element > rows.shape[0]:
                    return -1, n_entry_fams
                for t in range(n_x):
                    reached[base[t] + k * stride[t]] = True
                for t in range(n_pairs):
                    u, v = first[t], second[t]
                    for f in range(fam_first[u], fam_first[u + 1]):
                        i = off[f] + k * step[f]
                        for g in range(f if u == v else fam_first[v], fam_first[v + 1]):
                            j = off[g] + k * step[g]
                            rows[count], cols[count] = min(i, j), max(i, j)
                            count += 1
            return count, n_entry_fams
        for k in range(n):
            if not everywhere and not reached[o + k]:
                continue
            for t in range(n_x):
                reached[base[t] + k * stride[t]] = True
            for t in range(n_pairs):
                u, v = first[t], second[t]
                s1, s2 = base[u] + k * stride[u], base[v] + k * stride[v]
                set1 = _slot_set(s1, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, start, end, ind,
                                 buffer1)
                set2 = _slot_set(s2, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, start, end, ind,
                                 buffer2)
                count = _set_products(set1, set2, s1 == s2, rows, cols, count)
                if count < 0:
                    return -1, n_entry_fams
        return count, n_entry_fams
    for k in range(n):
        if not everywhere and not reached[o + k]:
            continue
        if op == op_gather:
            reached[a + idx[b + k]] = True
        elif op == op_gather_sum:                # linear: marks its terms, adds no entry
            for q in range(b + k * sb, b + (k + 1) * sb):
                reached[idx[q]] = True
        elif op == op_sum or op == op_amax:
            r, j = k // sb, k % sb
            w = _whole_run(a + r * b * sa + j, sa, b, run_o, run_n, run_inst, ops, op_input)
            if w >= 0:
                whole[w] = True
            elif w == -1:
                for q in range(b):
                    reached[a + (r * b + q) * sa + j] = True
        elif op == op_affine:
            for j in range(sb):
                if consts[b + k * sb + j] != 0.0:
                    reached[a + j * sa] = True
        elif op == op_matmul:
            r, j = k // sb, k % sb
            for q in range(sa):
                reached[a + r * sa + q] = True
                reached[b + q * sb + j] = True
                set1 = _slot_set(a + r * sa + q, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                 start, end, ind, buffer1)
                set2 = _slot_set(b + q * sb + j, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                 start, end, ind, buffer2)
                count = _set_products(set1, set2, _NO, rows, cols, count)
                if count < 0:
                    return -1, n_entry_fams
        elif op == op_softmax:
            r = k // sb
            for q in range(sb):
                reached[a + r * sb + q] = True
                for q2 in range(q, sb):
                    set1 = _slot_set(a + r * sb + q, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                     start, end, ind, buffer1)
                    set2 = _slot_set(a + r * sb + q2, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step,
                                     start, end, ind, buffer2)
                    count = _set_products(set1, set2, q == q2, rows, cols, count)
                    if count < 0:
                        return -1, n_entry_fams
    return count, n_entry_fams


@njit(**_JIT)
def hessian_entries(ops, ins, consts, idx, reached, n_in, out_slot, run_o, run_n, run_inst, affine, fam_ptr,
                    fam_off, fam_step, start, end, ind, differentiable, nonlinear, elementwise,
                    op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax, op_gather_sum):
    """The Hessian pattern of slot out_slot as CSR (indptr, indices), with its
    half-bandwidth and longest row. reached (n_slots, zero) comes from the caller:
    numpy's zeros are pages mapped on first touch, and runs read whole mark nothing."""
    reached[out_slot] = True
    whole = np.zeros(ops.shape[0], np.bool_)
    # generous: pages never written cost nothing, a regrowth copies everything
    rows = np.empty(16 + 8 * n_in, np.int32)
    cols = np.empty(16 + 8 * n_in, np.int32)
    buffer1 = np.empty(max(n_in, FAMILIES_MAX), np.int32)
    buffer2 = np.empty(max(n_in, FAMILIES_MAX), np.int32)
    off = np.empty(FAMILIES_MAX, np.int64)
    step = np.empty(FAMILIES_MAX, np.int64)
    count = 0
    per_instruction = 6 * FAMILIES_MAX * (FAMILIES_MAX + 1) // 2
    entry_fams = np.empty((64 + per_instruction, 5), np.int64)
    n_entry_fams = 0
    for i in range(ops.shape[0] - 1, -1, -1):
        if ops[i] == op_input:
            continue
        if n_entry_fams + per_instruction > entry_fams.shape[0]:
            grown_fams = np.empty((2 * entry_fams.shape[0], 5), np.int64)
            grown_fams[:n_entry_fams] = entry_fams[:n_entry_fams]
            entry_fams = grown_fams
        while True:
            new_count, n_entry_fams = _instruction_entries(
                i, ops[i], ins[0, i], ins[1, i], ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i],
                consts, idx, reached, whole, ops, op_input, run_o, run_n, run_inst, affine, fam_ptr, fam_off,
                fam_step, start, end, ind, differentiable, nonlinear, elementwise, op_gather, op_sum, op_amax, op_affine, op_matmul,
                op_softmax, op_gather_sum, rows, cols, count, buffer1, buffer2, off, step, entry_fams, n_entry_fams)
            if new_count >= 0:
                break
            rows, cols = _grown(rows, _ZERO, _NO_LIMIT), _grown(cols, _ZERO, _NO_LIMIT)
        count = new_count
    # the entry families, each once (the longest of those sharing a start)
    families = _unique_families(entry_fams[:n_entry_fams])
    if count == 0 and _diagonal_families(families):
        return _csr_from_diagonals(families, n_in)
    return _symmetric_csr(rows[:count], cols[:count], families, n_in)


@njit(**_JIT)
def _diagonal_families(families):
    """Whether every family runs along a diagonal: (i0 + k s, j0 + k s) with s = 1."""
    for t in range(families.shape[0]):
        if families[t, 1] != 1 or families[t, 3] != 1:
            return False
    return True


@njit(**_JIT)
def _csr_from_diagonals(families, n):
    """The symmetric CSR pattern of diagonal families (i0 + k, j0 + k), k < count: each
    puts column r + d (d = j0 - i0) in rows i0 .. i0 + count - 1 and, mirrored, column
    r - d in rows j0 .. j0 + count - 1. Walking the distinct offsets in increasing order
    writes every row already sorted and without repeats: a banded Hessian (stencils,
    Rosenbrock) is built in one pass over its rows, with no entry list, bucket or sort."""
    n_fams = families.shape[0]
    # (offset, first row, end row) of every family and its mirror, sorted by offset
    spans = np.empty((2 * n_fams, 3), np.int64)
    for t in range(n_fams):
        i0, j0, count = families[t, 0], families[t, 2], families[t, 4]
        spans[2 * t, 0], spans[2 * t, 1], spans[2 * t, 2] = j0 - i0, i0, i0 + count
        spans[2 * t + 1, 0], spans[2 * t + 1, 1], spans[2 * t + 1, 2] = i0 - j0, j0, j0 + count
    order = np.argsort(spans[:, 0], kind="mergesort")
    spans = spans[order]
    offsets = np.empty(2 * n_fams, np.int64)     # distinct offsets, their spans first..last
    first = np.empty(2 * n_fams + 1, np.int64)
    n_offsets = 0
    for t in range(2 * n_fams):
        if t == 0 or spans[t, 0] != spans[t - 1, 0]:
            offsets[n_offsets] = spans[t, 0]
            first[n_offsets] = t
            n_offsets += 1
    first[n_offsets] = 2 * n_fams
    total = 0
    for t in range(2 * n_fams):
        total += spans[t, 2] - spans[t, 1]
    indptr = np.empty(n + 1, np.int64)
    indices = np.empty(min(total, n * n) if n > 0 else 0, np.int32)
    u = 0
    band, longest = 0, 0
    indptr[0] = 0
    for r in range(n):
        for q in range(n_offsets):
            for t in range(first[q], first[q + 1]):
                if spans[t, 1] <= r < spans[t, 2]:
                    indices[u] = r + offsets[q]
                    band = max(band, abs(offsets[q]))
                    u += 1
                    break
        longest = max(longest, u - indptr[r])
        indptr[r + 1] = u
    return indptr, indices[:u], band, longest


@njit(**_JIT)
def _unique_families(fams):
    """Rows (i0, di, j0, dj, n) without repeats; of rows equal but for n, the largest n
    (the shorter family is a prefix of the longer)."""
    order = np.argsort(fams[:, 0] * (2**31) + fams[:, 2])   # i0, j0 < 2**31
    kept = np.empty_like(fams)
    n_kept = 0
    group = 0
    for t in range(order.shape[0]):
        row = fams[order[t]]
        if t > 0:
            prev = fams[order[t - 1]]
            if prev[0] != row[0] or prev[2] != row[2]:
                group = n_kept                   # kept rows of this (i0, j0) start here
        repeat = False
        for q in range(group, n_kept):
            if kept[q, 1] == row[1] and kept[q, 3] == row[3]:
                kept[q, 4] = max(kept[q, 4], row[4])
                repeat = True
                break
        if not repeat:
            kept[n_kept] = row
            n_kept += 1
    return kept[:n_kept]


@njit(**_JIT)
def _symmetric_csr(rows, cols, families, n):
    """Symmetric CSR pattern from upper-triangle entries (with repeats), given one by one
    (rows, cols) and as families (i0, di, j0, dj, count) of entries (i0 + k di, j0 + k dj),
    in linear time: bucket both halves by row, drop repeats with a stamp per row, sort
    each (short) row. Few and small arrays: on a first call their fresh pages are most of
    the cost."""
    m = rows.shape[0]
    bounds = np.zeros(n + 1, np.int64)      # row counts, then fill positions, then indptr
    for q in range(m):
        bounds[rows[q] + 1] += 1
        if rows[q] != cols[q]:
            bounds[cols[q] + 1] += 1
    for t in range(families.shape[0]):
        i0, di, j0, dj = families[t, 0], families[t, 1], families[t, 2], families[t, 3]
        for k in range(families[t, 4]):
            i, j = i0 + k * di, j0 + k * dj
            bounds[i + 1] += 1
            if i != j:
                bounds[j + 1] += 1
    for r in range(n):
        bounds[r + 1] += bounds[r]
    bucket = np.empty(bounds[n], np.int32)
    for q in range(m):                       # bounds[r] ends as the end of row r
        r, c = rows[q], cols[q]
        bucket[bounds[r]] = c
        bounds[r] += 1
        if r != c:
            bucket[bounds[c]] = r
            bounds[c] += 1
    for t in range(families.shape[0]):
        i0, di, j0, dj = families[t, 0], families[t, 1], families[t, 2], families[t, 3]
        for k in range(families[t, 4]):
            r, c = i0 + k * di, j0 + k * dj
            bucket[bounds[r]] = c
            bounds[r] += 1
            if r != c:
                bucket[bounds[c]] = r
                bounds[c] += 1
    stamp = np.full(n, -1, np.int32)
    u = 0
    row_begin = 0
    band, longest = 0, 0                     # for the coloring: half-bandwidth, longest row
    for r in range(n):
        row_start = u
        row_end = bounds[r]
        for q in range(row_begin, row_end):
            c = bucket[q]
            if stamp[c] != r:
                stamp[c] = r
                bucket[u] = c                    # compacts in place: u never passes q
                u += 1
                band = max(band, abs(c - r))
        longest = max(longest, u - row_start)
        row_begin = row_end
        if u - row_start > 32:
            bucket[row_start:u] = np.sort(bucket[row_start:u])
        else:                                    # insertion sort, written out: no call per row
            for p in range(row_start + 1, u):
                x = bucket[p]
                q = p - 1
                while q >= row_start and bucket[q] > x:
                    bucket[q + 1] = bucket[q]
                    q -= 1
                bucket[q + 1] = x
        bounds[r] = row_start
    bounds[n] = u
    return bounds, bucket[:u], band, longest


def _small_tape(f, fn):
    """fn, or its Python twin (tapejit/_runtime/twins.py) where the tape and the input sets its
    slots can hold are small."""
    a = f.arrays
    return jit_or_python(fn, tape_work(a.ops, a.ins) + a.n_slots * f.n_inputs)


def _small_pattern(pattern, fn, visits_per_entry: int = 1):
    return jit_or_python(fn, pattern.nnz * visits_per_entry)


def _structural_codes():
    return (OP.input, OP.gather, OP.sum, OP.amax, OP.affine, OP.matmul, OP.softmax, OP.gather_sum)


def _slot_patterns(f, for_hessian: bool = False):
    """The slots' input sets, cached. The Hessian pass reads only operands, so it can do
    without the last instruction's sets (often a long reduction)."""
    cache = f.__dict__.setdefault("_sparsity", {})
    key = "slots" if not for_hessian or "slots" in cache else "operand slots"
    if key not in cache:
        a = f.arrays
        n_needed = len(a.ops) - 1 if key == "operand slots" else len(a.ops)
        sets, fits = _small_tape(f, forward_patterns)(a.ops, a.ins, a.consts, a.idx, np.zeros(a.n_slots, np.int32),
                                      np.zeros(a.n_slots, np.int32), f.in_pos, n_needed,
                                      DIFFERENTIABLE, ELEMENTWISE, *_structural_codes())
        if not fits:
            raise TapejitError("sparsity: the slots' input sets need more than 2**31 stored indices; "
                               "this function is too dense for sparse derivatives, use the dense ones")
        cache[key] = sets
    return cache[key]


@njit(**_JIT)
def _gather_sets(slots, n_in, run_o, run_n, run_inst, affine, fam_ptr, fam_off, fam_step, start, end, ind):
    """CSR (indptr, indices) of the sets of the given slots, in order, sorted."""
    runs = _runs_of(slots, run_o, run_n)
    indptr = np.zeros(slots.shape[0] + 1, np.int64)
    for t in range(slots.shape[0]):
        r = runs[t]
        if r < 0:
            m = 0
        elif affine[run_inst[r]]:
            m = fam_ptr[run_inst[r] + 1] - fam_ptr[run_inst[r]]
        else:
            m = end[slots[t]] - start[slots[t]]
        indptr[t + 1] = indptr[t] + m
    indices = np.empty(indptr[-1], np.int32)
    u = 0
    for t in range(slots.shape[0]):
        r = runs[t]
        row_start = u
        if r >= 0 and affine[run_inst[r]]:
            i = run_inst[r]
            e = slots[t] - run_o[r]
            m = fam_ptr[i + 1] - fam_ptr[i]
            for f in range(m):
                indices[u + f] = fam_off[fam_ptr[i] + f] + e * fam_step[fam_ptr[i] + f]
            _sort_small(indices[u:], m)
            for q in range(m):                   # families may meet: drop repeats
                if u == row_start or indices[row_start + q] != indices[u - 1]:
                    indices[u] = indices[row_start + q]
                    u += 1
        elif r >= 0:
            for q in range(start[slots[t]], end[slots[t]]):
                indices[u] = ind[q]
                u += 1
        indptr[t + 1] = u
    return indptr, indices[:u]


def jacobian_pattern(f) -> sp.csr_matrix:
    cache = f.__dict__.setdefault("_sparsity", {})
    if "jacobian" not in cache:
        indptr, indices = _small_tape(f, _gather_sets)(f.out_pos.astype(np.int64), f.n_inputs, *_slot_patterns(f))
        cache["jacobian"] = sp.csr_matrix((np.ones(len(indices), bool), indices, indptr),
                                          shape=(f.n_outputs, f.n_inputs))
    return cache["jacobian"]


#: opcodes whose second-order pattern the analysis does not know (block primitives)
_FIRST_ORDER_ONLY = [code for code, op in enumerate(OPS) if op.cpu_only]


def hessian_pattern(f) -> sp.csr_matrix:
    blocks = np.flatnonzero(np.isin(f.arrays.ops, _FIRST_ORDER_ONLY))
    if blocks.size:
        from ..ops.primitives import BY_NUMBER
        name = BY_NUMBER[int(f.arrays.cv[blocks[0]])].name
        raise NotImplementedError(f"the sparse Hessian of a tape that calls the block primitive {name!r} is not "
                                  "available (its second-order pattern is unknown); hessian(sparse=False) and hvp "
                                  "work where the primitive has second order (tj.checkpoint segments do)")
    cache = f.__dict__.setdefault("_sparsity", {})
    if "hessian" not in cache:
        a = f.arrays
        indptr, indices, band, longest = _small_tape(f, hessian_entries)(
            a.ops, a.ins, a.consts, a.idx, np.zeros(a.n_slots, np.bool_), f.n_inputs, int(f.out_pos[0]),
            *_slot_patterns(f, for_hessian=True), DIFFERENTIABLE, NONLINEAR, ELEMENTWISE, *_structural_codes())
        cache["hessian_band"] = band, longest
        cache["hessian"] = sp.csr_matrix((np.ones(len(indices), bool), indices, indptr),
                                         shape=(f.n_inputs, f.n_inputs))
    return cache["hessian"]


# ------------------------------------------------------------------------------------------
# coloring
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def color_columns(n_cols, row_ptr, row_ind, col_ptr, col_ind, rows_sorted):
    """Greedy distance-2 coloring in column order: columns sharing a row get different
    colors. Only columns before j have colors when j is colored, so a sorted row is read
    up to j only."""
    colors = np.full(n_cols, -1, np.int32)
    forbidden = np.full(n_cols + 1, -1, np.int32)
    for j in range(n_cols):
        for p in range(col_ptr[j], col_ptr[j + 1]):
            i = col_ind[p]
            for q in range(row_ptr[i], row_ptr[i + 1]):
                k = row_ind[q]
                if k >= j:
                    if rows_sorted:
                        break
                    continue
                forbidden[colors[k]] = j
        c = 0
        while forbidden[c] == j:
            c += 1
        colors[j] = c
    return colors


def _index_arrays(matrix):
    """indptr and indices as the kernels take them, without copies where scipy's fit."""
    indptr = matrix.indptr if matrix.indptr.dtype in (np.int32, np.int64) else matrix.indptr.astype(np.int64)
    return indptr, matrix.indices.astype(np.int32, copy=False)


def coloring(pattern: sp.csr_matrix, symmetric: bool = False) -> np.ndarray:
    """Colors of the columns; a symmetric pattern is its own transpose (no CSC copy)."""
    csr = pattern.tocsr()
    csc = csr if symmetric else pattern.tocsc()
    # each entry visits the row of another: about the longest row's length per entry
    longest = int(np.diff(csr.indptr).max()) if csr.nnz else 0
    return _small_pattern(csr, color_columns, longest)(pattern.shape[1], *_index_arrays(csr), *_index_arrays(csc), bool(csr.has_sorted_indices))


@njit(**_JIT)
def _band(indptr, indices):
    """(half-bandwidth, longest row) of a CSR pattern."""
    band, longest = 0, 0
    for i in range(indptr.shape[0] - 1):
        longest = max(longest, indptr[i + 1] - indptr[i])
        for q in range(indptr[i], indptr[i + 1]):
            band = max(band, abs(indices[q] - i))
    return band, longest


def _cached_coloring(f, kind, pattern):
    cache = f.__dict__.setdefault("_sparsity", {})
    key = f"{kind}_colors"
    if key not in cache:
        if f"{kind}_band" in cache:
            band, longest = cache[f"{kind}_band"]
        else:
            band, longest = _small_pattern(pattern, _band)(*_index_arrays(pattern)) if pattern.shape[0] == pattern.shape[1] else (-1, 0)
        if band >= 0 and 2 * band + 1 == longest:
            # banded: columns closer than 2 * band + 1 share no row, so j mod (2 band + 1)
            # is a distance-2 coloring, and an optimal one (a row this long needs as many)
            cache[key] = (np.arange(pattern.shape[1]) % longest).astype(np.int32)
        else:
            cache[key] = coloring(pattern, symmetric=kind == "hessian")
    return cache[key]


def _n_colors(colors: np.ndarray) -> int:
    return int(colors.max()) + 1 if colors.size else 0


def _seeds(colors: np.ndarray) -> np.ndarray:
    seeds = np.zeros((_n_colors(colors), colors.size))
    seeds[colors, np.arange(colors.size)] = 1.0
    return seeds


@njit(**_JIT)
def _compressed_values(indptr, indices, colors, compressed):
    """CSR data of the pattern: entry (i, j) is compressed[colors[j], i]."""
    data = np.empty(indices.shape[0])
    for i in range(indptr.shape[0] - 1):
        for q in range(indptr[i], indptr[i + 1]):
            data[q] = compressed[colors[indices[q]], i]
    return data


def _scatter(pattern: sp.csr_matrix, compressed, colors) -> sp.csr_matrix:
    """CSR with pattern's structure, read from compressed (one product per color, as rows)."""
    indptr, indices = _index_arrays(pattern)
    data = _small_pattern(pattern, _compressed_values)(indptr, indices, colors, compressed)
    return sp.csr_matrix((data, indices.copy(), indptr.copy()), shape=pattern.shape)


def _per_color(product, colors, n_out):
    """product(seed of color c, out row) for every color. Whole rounds of colors run one
    per worker thread (each with its own workspaces and seed buffer, its products on one
    thread); the colors left over run one at a time, each product on all the threads."""
    n_colors = _n_colors(colors)
    out = np.empty((n_colors, n_out))
    workers = get_num_threads()
    spread = n_colors - n_colors % workers if workers > 1 else 0

    def work(worker, n_workers):
        seed = np.empty(colors.size)
        with limit_threads(1):
            for c in range(worker, spread, n_workers):
                np.equal(colors, c, out=seed)
                product(seed, out[c])
    if spread:
        run_workers(work, workers)
    seed = np.empty(colors.size)
    for c in range(spread, n_colors):
        np.equal(colors, c, out=seed)
        product(seed, out[c])
    return out


def _compressed_products(f, xs, params, colors, mode, n_out):
    """One product (J s or H s) per color's seed s: rows of the compressed matrix."""
    if f.n_slots > 50_000:
        # long vectors: one point sweep per color keeps the runs long (and vectorized)
        f._tangent_plan()
        if mode == "jvp":
            def product(seed, out):
                out[:] = np.ravel(f.jvp(*xs, v=f._split(seed), params=params)[1])
        else:
            def product(seed, out):
                f._hvp_flat(xs, params, seed, out)
        return _per_color(product, colors, n_out)
    from ..cpu import batch as batch_engine
    seeds = _seeds(colors)
    x = f._flat_inputs(xs)
    _, products, _ = f._run_flat(np.tile(x, (len(seeds), 1)), seeds,
                                 batch_engine.MODE_JVP if mode == "jvp" else batch_engine.MODE_HVP, params)
    return np.ascontiguousarray(products)


def sparse_jacobian(f, xs, params) -> sp.csr_matrix:
    pattern = jacobian_pattern(f)
    colors = _cached_coloring(f, "jacobian", pattern)
    if not colors.size or pattern.nnz == 0:
        return sp.csr_matrix(pattern.shape)
    return _scatter(pattern, _compressed_products(f, xs, params, colors, "jvp", f.n_outputs), colors)


def sparse_hessian(f, xs, params) -> sp.csr_matrix:
    pattern = hessian_pattern(f)
    colors = _cached_coloring(f, "hessian", pattern)
    if not colors.size or pattern.nnz == 0:
        return sp.csr_matrix(pattern.shape)
    return _scatter(pattern, _compressed_products(f, xs, params, colors, "hvp", f.n_inputs), colors)


def n_colors(f, kind: str = "hessian") -> int:
    pattern = hessian_pattern(f) if kind == "hessian" else jacobian_pattern(f)
    return _n_colors(_cached_coloring(f, kind, pattern))

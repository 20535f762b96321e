"""Sparse Jacobians and Hessians: patterns from the tape, coloring, compressed evaluation.

- The **Jacobian pattern** propagates, slot by slot, the set of inputs each slot depends
  on (element by element through vector instructions; only through operands that have a
  derivative, so comparisons and conditions carry nothing).
- The **Hessian pattern** adds, for every element of a nonlinear instruction that
  influences the output, the products of its operands' input sets. Which operand pairs
  interact is read from the opcode table: operand x's partial depends on operand y (or on
  the output), found by ``symbolic.depends_on``.
- Columns are colored greedily so that no two columns of one color share a row
  (distance-2 coloring: every entry is recovered directly); one tangent (Jacobian) or
  Hessian-vector product (Hessian) per color gives the compressed matrix, scattered into
  CSR. Patterns and colorings are computed once per Function and cached on it.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit

from .opcodes import OP, OPS
from .errors import TapejitError
from .symbolic import depends_on
from ._threads import get_num_threads, run_workers

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
# index sets per slot: slot s's set is ind[start[s]:end[s]], sorted, without repeats. A slot
# whose set equals an operand's (unary ops, a constant operand, x + x, or one operand's set
# containing the other's) shares that operand's storage instead of copying it, so a long
# elementwise tape costs a few index copies per slot and stores each distinct set once.
# ------------------------------------------------------------------------------------------
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


@njit(**_JIT)
def _add_set(start, end, ind, slot, stamp, mark, collected, n_collected):
    """Add slot's set to the collection (deduplicated by stamp)."""
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
def _elementwise_sets(o, n, x0, sx0, x1, sx1, n_operands, start, end, ind, count):
    """Sets of an elementwise instruction with one or two differentiable operands."""
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
def _instruction_sets(op, o, n, a, sa, b, sb, d, sd, consts, idx, differentiable, elementwise,
                      op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax,
                      start, end, ind, count, stamp, serial, collected):
    """Sets of one instruction's slots o..o+n-1, stored from ind[count]. Returns the new
    count, or -1 when ind is too small (the caller grows it and calls again: ind is never
    reassigned here, which keeps this loop free of reference counting)."""
    if op == op_input:
        return count                             # input sets are set up front
    if elementwise[op]:
        n_operands = 0
        x0, sx0, x1, sx1 = 0, 0, 0, 0
        for x in range(3):
            if differentiable[op, x]:
                slot, stride = (a, sa) if x == 0 else ((b, sb) if x == 1 else (d, sd))
                if n_operands == 0:
                    x0, sx0 = slot, stride
                else:
                    x1, sx1 = slot, stride
                n_operands += 1
        if n_operands == 0:
            for k in range(n):
                start[o + k], end[o + k] = 0, 0
            return count
        if n_operands <= 2:
            return _elementwise_sets(o, n, x0, sx0, x1, sx1, n_operands, start, end, ind, count)
    for k in range(n):
        s = o + k
        mark = serial + k
        m = 0
        if elementwise[op]:                      # three differentiable operands
            m = _add_set(start, end, ind, a + k * sa, stamp, mark, collected, m)
            m = _add_set(start, end, ind, b + k * sb, stamp, mark, collected, m)
            m = _add_set(start, end, ind, d + k * sd, stamp, mark, collected, m)
        elif op == op_gather:
            m = _add_set(start, end, ind, a + idx[b + k], stamp, mark, collected, m)
        elif op == op_sum or op == op_amax:
            inner = sb
            r, j = k // inner, k % inner
            for q in range(b):
                m = _add_set(start, end, ind, a + (r * b + q) * sa + j, stamp, mark, collected, m)
        elif op == op_affine:
            for j in range(sb):
                if consts[b + k * sb + j] != 0.0:
                    m = _add_set(start, end, ind, a + j * sa, stamp, mark, collected, m)
        elif op == op_matmul:
            r, j = k // sb, k % sb
            for q in range(sa):
                m = _add_set(start, end, ind, a + r * sa + q, stamp, mark, collected, m)
                m = _add_set(start, end, ind, b + q * sb + j, stamp, mark, collected, m)
        elif op == op_softmax:
            r = k // sb
            for q in range(sb):
                m = _add_set(start, end, ind, a + r * sb + q, stamp, mark, collected, m)
        if m > 1:
            _sort_small(collected, m)
        if count + m > ind.shape[0]:
            return -1
        for q in range(m):
            ind[count + q] = collected[q]
        start[s], end[s] = count, count + m
        count += m
    return count


@njit(**_JIT)
def forward_patterns(ops, ins, consts, idx, n_slots, in_pos, differentiable, elementwise,
                     op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax):
    """Input-index sets of every slot: start, end (n_slots each) into ind."""
    n_in = in_pos.shape[0]
    # int32 throughout: the first call's cost is largely fresh pages, so half the bytes
    # is nearly half the time (the caller checks that positions fit)
    start = np.zeros(n_slots, np.int32)          # slots nothing writes: empty sets
    end = np.zeros(n_slots, np.int32)
    ind = np.empty(max(16, 2 * n_in), np.int32)
    for j in range(n_in):
        ind[j] = j
        start[in_pos[j]], end[in_pos[j]] = j, j + 1
    count = n_in
    stamp = np.full(n_in, -1, np.int64)
    collected = np.empty(n_in, np.int32)
    serial = 0                                   # stamps: a fresh mark per slot and attempt
    for i in range(ops.shape[0]):
        while True:
            new_count = _instruction_sets(
                ops[i], ins[0, i], ins[1, i], ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i],
                consts, idx, differentiable, elementwise, op_input, op_gather, op_sum, op_amax, op_affine,
                op_matmul, op_softmax, start, end, ind, count, stamp, serial, collected)
            serial += ins[1, i]
            if new_count >= 0:
                break
            if ind.shape[0] >= MAX_STORED:
                return start, end, ind[:0], False
            grown = np.empty(min(2 * ind.shape[0] + n_in, MAX_STORED), ind.dtype)
            grown[:count] = ind[:count]
            ind = grown
        count = new_count
    return start, end, ind[:count], True


# ------------------------------------------------------------------------------------------
# Hessian pattern: one reverse pass marks the slots that reach the output and, for each
# reached element of a nonlinear instruction, emits the products of its interacting
# operands' sets as (row, col) pairs with row <= col
# ------------------------------------------------------------------------------------------
@njit(inline="always", **_JIT)
def _products(start, end, ind, s1, s2, rows, cols, count):
    """Pairs of the sets of slots s1 and s2; only the upper half when they are the same
    set. Returns the new count, or -1 when rows/cols are full."""
    b1, e1, b2, e2 = start[s1], end[s1], start[s2], end[s2]
    same = b1 == b2 and e1 == e2
    if same and e1 - b1 == 1 and count < rows.shape[0]:     # the usual x_i * x_i
        rows[count], cols[count] = ind[b1], ind[b1]
        return count + 1
    need = (e1 - b1) * (e1 - b1 + 1) // 2 if same else (e1 - b1) * (e2 - b2)
    if count + need > rows.shape[0]:
        return -1
    for p in range(b1, e1):
        i = ind[p]
        for q in range(p if same else b2, e2):
            j = ind[q]
            if i <= j:
                rows[count], cols[count] = i, j
            else:
                rows[count], cols[count] = j, i
            count += 1
    return count


@njit(**_JIT)
def _instruction_entries(op, o, n, a, sa, b, sb, d, sd, consts, idx, reached, start, end, ind,
                         differentiable, nonlinear, elementwise, op_gather, op_sum, op_amax, op_affine,
                         op_matmul, op_softmax, rows, cols, count):
    """Marks the operands of one instruction's reached slots and emits their Hessian
    entries from count; -1 when rows/cols are full (marking twice is harmless)."""
    if elementwise[op]:
        # the operands with a derivative, and the pairs of them that interact, read once
        base = np.empty(3, np.int64)
        step = np.empty(3, np.int64)
        n_x = 0
        for x in range(3):
            if differentiable[op, x]:
                base[n_x], step[n_x] = (a, sa) if x == 0 else ((b, sb) if x == 1 else (d, sd))
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
        for k in range(n):
            if not reached[o + k]:
                continue
            for t in range(n_x):
                reached[base[t] + k * step[t]] = True
            for t in range(n_pairs):
                count = _products(start, end, ind, base[first[t]] + k * step[first[t]],
                                  base[second[t]] + k * step[second[t]], rows, cols, count)
                if count < 0:
                    return -1
        return count
    for k in range(n):
        if not reached[o + k]:
            continue
        if op == op_gather:
            reached[a + idx[b + k]] = True
        elif op == op_sum or op == op_amax:
            r, j = k // sb, k % sb
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
                count = _products(start, end, ind, a + r * sa + q, b + q * sb + j, rows, cols, count)
                if count < 0:
                    return -1
        elif op == op_softmax:
            r = k // sb
            for q in range(sb):
                reached[a + r * sb + q] = True
                for q2 in range(q, sb):
                    count = _products(start, end, ind, a + r * sb + q, a + r * sb + q2, rows, cols, count)
                    if count < 0:
                        return -1
    return count


@njit(**_JIT)
def hessian_entries(ops, ins, consts, idx, n_slots, n_in, out_slot, start, end, ind, differentiable, nonlinear,
                    elementwise, op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax):
    """The Hessian pattern of slot out_slot as CSR (indptr, indices)."""
    reached = np.zeros(n_slots, np.bool_)
    reached[out_slot] = True
    rows = np.empty(max(16, 4 * n_in), np.int32)
    cols = np.empty(max(16, 4 * n_in), np.int32)
    count = 0
    for i in range(ops.shape[0] - 1, -1, -1):
        if ops[i] == op_input:
            continue
        while True:
            new_count = _instruction_entries(
                ops[i], ins[0, i], ins[1, i], ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i],
                consts, idx, reached, start, end, ind, differentiable, nonlinear, elementwise, op_gather, op_sum,
                op_amax, op_affine, op_matmul, op_softmax, rows, cols, count)
            if new_count >= 0:
                break
            grown_rows = np.empty(2 * rows.shape[0], np.int32)
            grown_cols = np.empty(2 * rows.shape[0], np.int32)
            grown_rows[:count] = rows[:count]
            grown_cols[:count] = cols[:count]
            rows, cols = grown_rows, grown_cols
        count = new_count
    return _symmetric_csr(rows[:count], cols[:count], n_in)


@njit(**_JIT)
def _symmetric_csr(rows, cols, n):
    """Symmetric CSR pattern from upper-triangle entries (with repeats), in linear time:
    bucket both halves by row, drop repeats with a stamp per row, sort each (short) row."""
    m = rows.shape[0]
    counts = np.zeros(n + 1, np.int64)      # entry counts can pass 2**31 even when n cannot
    for q in range(m):
        counts[rows[q] + 1] += 1
        if rows[q] != cols[q]:
            counts[cols[q] + 1] += 1
    for r in range(n):
        counts[r + 1] += counts[r]
    fill = counts[:-1].copy()
    bucket = np.empty(counts[n], np.int32)
    for q in range(m):
        r, c = rows[q], cols[q]
        bucket[fill[r]] = c
        fill[r] += 1
        if r != c:
            bucket[fill[c]] = r
            fill[c] += 1
    stamp = np.full(n, -1, np.int32)
    indptr = np.zeros(n + 1, np.int64)
    u = 0
    for r in range(n):
        row_start = u
        for q in range(counts[r], counts[r + 1]):
            c = bucket[q]
            if stamp[c] != r:
                stamp[c] = r
                bucket[u] = c                    # compacts in place: u never passes q
                u += 1
        _sort_small(bucket[row_start:u], u - row_start)
        indptr[r + 1] = u
    return indptr, bucket[:u].copy()


def _structural_codes():
    return (OP.input, OP.gather, OP.sum, OP.amax, OP.affine, OP.matmul, OP.softmax)


def _slot_patterns(f):
    cache = f.__dict__.setdefault("_sparsity", {})
    if "slots" not in cache:
        a = f.arrays
        start, end, ind, fits = forward_patterns(a.ops, a.ins, a.consts, a.idx, a.n_slots, f.in_pos,
                                                 DIFFERENTIABLE, ELEMENTWISE, *_structural_codes())
        if not fits:
            raise TapejitError("sparsity: the slots' input sets need more than 2**31 stored indices; "
                               "this function is too dense for sparse derivatives, use the dense ones")
        cache["slots"] = start, end, ind
    return cache["slots"]


@njit(**_JIT)
def _gather_sets(start, end, ind, slots):
    """CSR (indptr, indices) of the sets of the given slots, in order."""
    indptr = np.zeros(slots.shape[0] + 1, np.int64)
    for r in range(slots.shape[0]):
        indptr[r + 1] = indptr[r] + end[slots[r]] - start[slots[r]]
    indices = np.empty(indptr[-1], np.int32)
    for r in range(slots.shape[0]):
        indices[indptr[r]: indptr[r + 1]] = ind[start[slots[r]]: end[slots[r]]]
    return indptr, indices


def jacobian_pattern(f) -> sp.csr_matrix:
    cache = f.__dict__.setdefault("_sparsity", {})
    if "jacobian" not in cache:
        start, end, ind = _slot_patterns(f)
        indptr, indices = _gather_sets(start, end, ind, f.out_pos.astype(np.int64))
        cache["jacobian"] = sp.csr_matrix((np.ones(len(indices), bool), indices, indptr),
                                          shape=(f.n_outputs, f.n_inputs))
    return cache["jacobian"]


def hessian_pattern(f) -> sp.csr_matrix:
    cache = f.__dict__.setdefault("_sparsity", {})
    if "hessian" not in cache:
        start, end, ind = _slot_patterns(f)
        a = f.arrays
        indptr, indices = hessian_entries(a.ops, a.ins, a.consts, a.idx, a.n_slots, f.n_inputs, int(f.out_pos[0]),
                                          start, end, ind, DIFFERENTIABLE, NONLINEAR, ELEMENTWISE, *_structural_codes())
        cache["hessian"] = sp.csr_matrix((np.ones(len(indices), bool), indices, indptr),
                                         shape=(f.n_inputs, f.n_inputs))
    return cache["hessian"]


# ------------------------------------------------------------------------------------------
# coloring
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def color_columns(n_cols, row_ptr, row_ind, col_ptr, col_ind):
    """Greedy distance-2 coloring: columns sharing a row get different colors."""
    colors = np.full(n_cols, -1, np.int32)
    forbidden = np.full(n_cols + 1, -1, np.int32)
    for j in range(n_cols):
        for p in range(col_ptr[j], col_ptr[j + 1]):
            i = col_ind[p]
            for q in range(row_ptr[i], row_ptr[i + 1]):
                k = row_ind[q]
                if colors[k] >= 0:
                    forbidden[colors[k]] = j
        c = 0
        while forbidden[c] == j:
            c += 1
        colors[j] = c
    return colors


def coloring(pattern: sp.csr_matrix, symmetric: bool = False) -> np.ndarray:
    """Colors of the columns; a symmetric pattern is its own transpose (no CSC copy)."""
    csr = pattern.tocsr()
    csc = csr if symmetric else pattern.tocsc()
    return color_columns(pattern.shape[1], csr.indptr.astype(np.int64), csr.indices.astype(np.int32, copy=False),
                         csc.indptr.astype(np.int64), csc.indices.astype(np.int32, copy=False))


def _cached_coloring(f, kind, pattern):
    cache = f.__dict__.setdefault("_sparsity", {})
    key = f"{kind}_colors"
    if key not in cache:
        cache[key] = coloring(pattern, symmetric=kind == "hessian")
    return cache[key]


def _seeds(colors: np.ndarray) -> np.ndarray:
    n_colors = int(colors.max()) + 1 if colors.size else 0
    seeds = np.zeros((n_colors, colors.size))
    seeds[colors, np.arange(colors.size)] = 1.0
    return seeds


def _scatter(f, kind, pattern: sp.csr_matrix, compressed, colors) -> sp.csr_matrix:
    """CSR with pattern's structure, entry (i, j) read from compressed[color[j], i]
    (compressed holds one product per color, as rows)."""
    cache = f.__dict__.setdefault("_sparsity", {})
    key = f"{kind}_scatter"
    if key not in cache:
        rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
        cache[key] = colors[pattern.indices] * pattern.shape[0] + rows
    data = compressed.ravel()[cache[key]]
    return sp.csr_matrix((data, pattern.indices.copy(), pattern.indptr.copy()), shape=pattern.shape)


def _per_color(product, seeds, n_out):
    """product(seed) for every seed, on the worker threads (each has its own workspaces)."""
    out = np.empty((len(seeds), n_out))

    def work(worker, n_workers):
        for c in range(worker, len(seeds), n_workers):
            out[c] = product(seeds[c])
    run_workers(work, min(get_num_threads(), len(seeds)))
    return out


def sparse_jacobian(f, xs, params) -> sp.csr_matrix:
    pattern = jacobian_pattern(f)
    colors = _cached_coloring(f, "jacobian", pattern)
    seeds = _seeds(colors)
    x = f._flat_inputs(xs)
    if not len(seeds):
        return sp.csr_matrix(pattern.shape)
    if f.n_slots > 50_000:
        # long vectors: one point sweep per color keeps the runs long
        f._tangent_plan()
        jv = _per_color(lambda s: np.ravel(f.jvp(*xs, v=f._split(s), params=params)[1]), seeds, f.n_outputs)
    else:
        from . import batch as batch_engine
        _, jv, _ = f._run_flat(np.tile(x, (len(seeds), 1)), seeds, batch_engine.MODE_JVP, params)
    return _scatter(f, "jacobian", pattern, np.ascontiguousarray(jv), colors)


def sparse_hessian(f, xs, params) -> sp.csr_matrix:
    pattern = hessian_pattern(f)
    colors = _cached_coloring(f, "hessian", pattern)
    seeds = _seeds(colors)
    if not len(seeds):
        return sp.csr_matrix(pattern.shape)
    if f.n_slots > 50_000:
        # long vectors: one point sweep per color keeps the runs long (and vectorized)
        f._tangent_plan()
        hv = _per_color(lambda s: np.ravel(f.hvp(*xs, v=f._split(s), params=params)), seeds, f.n_inputs)
    else:
        from . import batch as batch_engine
        x = f._flat_inputs(xs)
        _, hv, _ = f._run_flat(np.tile(x, (len(seeds), 1)), seeds, batch_engine.MODE_HVP, params)
    return _scatter(f, "hessian", pattern, np.ascontiguousarray(hv), colors)


def n_colors(f, kind: str = "hessian") -> int:
    pattern = hessian_pattern(f) if kind == "hessian" else jacobian_pattern(f)
    colors = _cached_coloring(f, kind, pattern)
    return int(colors.max()) + 1 if colors.size else 0

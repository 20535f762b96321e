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
from .symbolic import depends_on

_JIT = dict(cache=True, nogil=True, error_model="numpy")

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
# index sets per slot, as a CSR structure grown in slot order
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
def _add_set(ptr, ind, count, slot, stamp, mark, collected, n_collected):
    """Add slot's set to the collection (deduplicated by stamp)."""
    for q in range(ptr[slot], ptr[slot + 1]):
        j = ind[q]
        if stamp[j] != mark:
            stamp[j] = mark
            collected[n_collected] = j
            n_collected += 1
    return n_collected


@njit(**_JIT)
def _instruction_patterns(op, o, n, a, sa, b, sb, d, sd, consts, idx, input_index, differentiable, elementwise,
                          op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax,
                          ptr, ind, count, stamp, serial, collected):
    """Sets of one instruction's slots o..o+n-1, appended to ind from count. Returns the new
    count, or -1 when ind is too small (the caller grows it and calls again: ind is never
    reassigned here, which keeps this loop free of reference counting)."""
    for k in range(n):
        s = o + k
        mark = serial + k
        m = 0
        if op == op_input:
            if input_index[s] >= 0:
                m = 1
                collected[0] = input_index[s]
        elif elementwise[op]:
            if differentiable[op, 0]:
                m = _add_set(ptr, ind, count, a + k * sa, stamp, mark, collected, m)
            if differentiable[op, 1]:
                m = _add_set(ptr, ind, count, b + k * sb, stamp, mark, collected, m)
            if differentiable[op, 2]:
                m = _add_set(ptr, ind, count, d + k * sd, stamp, mark, collected, m)
        elif op == op_gather:
            m = _add_set(ptr, ind, count, a + idx[b + k], stamp, mark, collected, m)
        elif op == op_sum or op == op_amax:
            inner = sb
            r, j = k // inner, k % inner
            for q in range(b):
                m = _add_set(ptr, ind, count, a + (r * b + q) * sa + j, stamp, mark, collected, m)
        elif op == op_affine:
            for j in range(sb):
                if consts[b + k * sb + j] != 0.0:
                    m = _add_set(ptr, ind, count, a + j * sa, stamp, mark, collected, m)
        elif op == op_matmul:
            r, j = k // sb, k % sb
            for q in range(sa):
                m = _add_set(ptr, ind, count, a + r * sa + q, stamp, mark, collected, m)
                m = _add_set(ptr, ind, count, b + q * sb + j, stamp, mark, collected, m)
        elif op == op_softmax:
            r = k // sb
            for q in range(sb):
                m = _add_set(ptr, ind, count, a + r * sb + q, stamp, mark, collected, m)
        if m > 1:
            _sort_small(collected, m)
        if count + m > ind.shape[0]:
            return -1
        for q in range(m):
            ind[count + q] = collected[q]
        count += m
        ptr[s + 1] = count
    return count


@njit(**_JIT)
def forward_patterns(ops, ins, consts, idx, n_slots, in_pos, differentiable, elementwise,
                     op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax):
    """Input-index sets of every slot: ptr (n_slots + 1), ind."""
    n_in = in_pos.shape[0]
    input_index = np.full(n_slots, -1, np.int64)
    for j in range(n_in):
        input_index[in_pos[j]] = j
    ptr = np.zeros(n_slots + 1, np.int64)
    ind = np.empty(max(16, n_in, n_slots), np.int64)
    count = 0
    stamp = np.full(n_in, -1, np.int64)
    collected = np.empty(n_in, np.int64)
    serial = 0                                   # stamps: a fresh mark per slot and attempt
    filled = 0                                   # slots whose sets are final
    for i in range(ops.shape[0]):
        o, n = ins[0, i], ins[1, i]
        while filled < o:                       # slots no instruction writes: empty
            filled += 1
            ptr[filled] = count
        while True:
            new_count = _instruction_patterns(
                ops[i], o, n, ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i], consts, idx,
                input_index, differentiable, elementwise, op_input, op_gather, op_sum, op_amax, op_affine,
                op_matmul, op_softmax, ptr, ind, count, stamp, serial, collected)
            serial += n
            if new_count >= 0:
                break
            grown = np.empty(2 * ind.shape[0], ind.dtype)
            grown[:count] = ind[:count]
            ind = grown
        count = new_count
        if n > 0:
            filled = o + n
    while filled < n_slots:
        filled += 1
        ptr[filled] = count
    return ptr, ind[:count]


@njit(**_JIT)
def _products(ptr, ind, s1, s2, keys, count, n, fill):
    """Entries (i, j), i <= j, of the products of two slots' input sets, as i * n + j;
    only counted when fill is False."""
    if not fill:
        return count + (ptr[s1 + 1] - ptr[s1]) * (ptr[s2 + 1] - ptr[s2])
    for p in range(ptr[s1], ptr[s1 + 1]):
        i = ind[p]
        for q in range(ptr[s2], ptr[s2 + 1]):
            j = ind[q]
            keys[count] = (i * n + j) if i <= j else (j * n + i)
            count += 1
    return count


@njit(**_JIT)
def _hessian_pass(ops, ins, consts, idx, n_slots, n_in, out_slot, ptr, ind, differentiable, nonlinear,
                  elementwise, op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax,
                  keys, fill):
    reached = np.zeros(n_slots, np.bool_)
    reached[out_slot] = True
    count = 0
    for i in range(ops.shape[0] - 1, -1, -1):
        op = ops[i]
        o, n, a, sa, b, sb, d, sd = ins[0, i], ins[1, i], ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i]
        if op == op_input:
            continue
        for k in range(n):
            if not reached[o + k]:
                continue
            if elementwise[op]:
                for x in range(3):
                    if differentiable[op, x]:
                        sx = a + k * sa if x == 0 else (b + k * sb if x == 1 else d + k * sd)
                        reached[sx] = True
                        for y in range(x, 3):
                            if nonlinear[op, x, y] or nonlinear[op, y, x]:
                                sy = a + k * sa if y == 0 else (b + k * sb if y == 1 else d + k * sd)
                                count = _products(ptr, ind, sx, sy, keys, count, n_in, fill)
            elif op == op_gather:
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
                    count = _products(ptr, ind, a + r * sa + q, b + q * sb + j, keys, count, n_in, fill)
            elif op == op_softmax:
                r = k // sb
                for q in range(sb):
                    reached[a + r * sb + q] = True
                    for q2 in range(q, sb):
                        count = _products(ptr, ind, a + r * sb + q, a + r * sb + q2, keys, count, n_in, fill)
    return count


@njit(**_JIT)
def hessian_entries(ops, ins, consts, idx, n_slots, n_in, out_slot, ptr, ind, differentiable, nonlinear,
                    elementwise, op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax):
    """The Hessian pattern of slot out_slot as CSR (indptr, indices): one pass counts the
    candidate entries, a second writes them."""
    keys = np.empty(0, np.int64)
    count = _hessian_pass(ops, ins, consts, idx, n_slots, n_in, out_slot, ptr, ind, differentiable, nonlinear,
                          elementwise, op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax,
                          keys, False)
    keys = np.empty(count, np.int64)
    _hessian_pass(ops, ins, consts, idx, n_slots, n_in, out_slot, ptr, ind, differentiable, nonlinear,
                  elementwise, op_input, op_gather, op_sum, op_amax, op_affine, op_matmul, op_softmax,
                  keys, True)
    return _symmetric_csr(keys, n_in)


@njit(**_JIT)
def _symmetric_csr(keys, n):
    """Symmetric CSR pattern from upper-triangle entries i * n + j (with repeats), in
    linear time: bucket by row, deduplicate with stamps, mirror, sort each (short) row."""
    m = keys.shape[0]
    counts = np.zeros(n + 1, np.int64)
    for q in range(m):
        counts[keys[q] // n + 1] += 1
    for r in range(n):
        counts[r + 1] += counts[r]
    fill = counts[:-1].copy()
    cols = np.empty(m, np.int64)
    for q in range(m):
        r = keys[q] // n
        cols[fill[r]] = keys[q] % n
        fill[r] += 1
    stamp = np.full(n, -1, np.int64)
    degree = np.zeros(n + 1, np.int64)
    unique_rows = np.empty(m, np.int64)
    unique_cols = np.empty(m, np.int64)
    u = 0
    for r in range(n):
        for q in range(counts[r], counts[r + 1]):
            c = cols[q]
            if stamp[c] != r:
                stamp[c] = r
                unique_rows[u] = r
                unique_cols[u] = c
                u += 1
                degree[r + 1] += 1
                if c != r:
                    degree[c + 1] += 1
    for r in range(n):
        degree[r + 1] += degree[r]
    indices = np.empty(degree[n], np.int64)
    fill = degree[:-1].copy()
    for q in range(u):
        r, c = unique_rows[q], unique_cols[q]
        indices[fill[r]] = c
        fill[r] += 1
        if c != r:
            indices[fill[c]] = r
            fill[c] += 1
    for r in range(n):
        row = indices[degree[r]: degree[r + 1]]
        _sort_small(row, row.shape[0])
    return degree, indices


def _structural_codes():
    return (OP.input, OP.gather, OP.sum, OP.amax, OP.affine, OP.matmul, OP.softmax)


def _slot_patterns(f):
    cache = f.__dict__.setdefault("_sparsity", {})
    if "slots" not in cache:
        a = f.arrays
        cache["slots"] = forward_patterns(a.ops, a.ins, a.consts, a.idx, a.n_slots, f.in_pos,
                                          DIFFERENTIABLE, ELEMENTWISE, *_structural_codes())
    return cache["slots"]


def jacobian_pattern(f) -> sp.csr_matrix:
    cache = f.__dict__.setdefault("_sparsity", {})
    if "jacobian" not in cache:
        ptr, ind = _slot_patterns(f)
        starts, ends = ptr[f.out_pos], ptr[f.out_pos + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate([ind[s:e] for s, e in zip(starts, ends)]) if len(starts) else np.zeros(0, np.int64)
        cache["jacobian"] = sp.csr_matrix((np.ones(len(indices), bool), indices, indptr),
                                          shape=(f.n_outputs, f.n_inputs))
    return cache["jacobian"]


def hessian_pattern(f) -> sp.csr_matrix:
    cache = f.__dict__.setdefault("_sparsity", {})
    if "hessian" not in cache:
        ptr, ind = _slot_patterns(f)
        a = f.arrays
        indptr, indices = hessian_entries(a.ops, a.ins, a.consts, a.idx, a.n_slots, f.n_inputs, int(f.out_pos[0]),
                                          ptr, ind, DIFFERENTIABLE, NONLINEAR, ELEMENTWISE, *_structural_codes())
        cache["hessian"] = sp.csr_matrix((np.ones(len(indices), bool), indices, indptr),
                                         shape=(f.n_inputs, f.n_inputs))
    return cache["hessian"]


# ------------------------------------------------------------------------------------------
# coloring
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def color_columns(n_cols, row_ptr, row_ind, col_ptr, col_ind):
    """Greedy distance-2 coloring: columns sharing a row get different colors."""
    colors = np.full(n_cols, -1, np.int64)
    forbidden = np.full(n_cols + 1, -1, np.int64)
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


def coloring(pattern: sp.csr_matrix) -> np.ndarray:
    csr = pattern.tocsr()
    csc = pattern.tocsc()
    return color_columns(pattern.shape[1], csr.indptr.astype(np.int64), csr.indices.astype(np.int64),
                         csc.indptr.astype(np.int64), csc.indices.astype(np.int64))


def _cached_coloring(f, kind, pattern):
    cache = f.__dict__.setdefault("_sparsity", {})
    key = f"{kind}_colors"
    if key not in cache:
        cache[key] = coloring(pattern)
    return cache[key]


def _seeds(colors: np.ndarray) -> np.ndarray:
    n_colors = int(colors.max()) + 1 if colors.size else 0
    seeds = np.zeros((n_colors, colors.size))
    seeds[colors, np.arange(colors.size)] = 1.0
    return seeds


def _scatter(pattern: sp.csr_matrix, compressed_by_color, colors) -> sp.csr_matrix:
    """CSR with pattern's structure, entry (i, j) read from compressed[i, color[j]]."""
    csr = pattern.tocsr()
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    data = compressed_by_color[rows, colors[csr.indices]]
    return sp.csr_matrix((data, csr.indices.copy(), csr.indptr.copy()), shape=csr.shape)


def sparse_jacobian(f, xs, params) -> sp.csr_matrix:
    pattern = jacobian_pattern(f)
    colors = _cached_coloring(f, "jacobian", pattern)
    seeds = _seeds(colors)
    x = f._flat_inputs(xs)
    if not len(seeds):
        return sp.csr_matrix(pattern.shape)
    if f.n_slots > 50_000:
        # long vectors: one point sweep per color keeps the runs long
        jv = np.stack([np.ravel(f.jvp(*xs, v=f._split(s), params=params)[1]) for s in seeds])
    else:
        from . import batch as batch_engine
        _, jv, _ = f._run_flat(np.tile(x, (len(seeds), 1)), seeds, batch_engine.MODE_JVP, params)
    return _scatter(pattern, jv.T, colors)


def sparse_hessian(f, xs, params) -> sp.csr_matrix:
    pattern = hessian_pattern(f)
    colors = _cached_coloring(f, "hessian", pattern)
    seeds = _seeds(colors)
    if not len(seeds):
        return sp.csr_matrix(pattern.shape)
    if f.n_slots > 50_000:
        # long vectors: one point sweep per color keeps the runs long (and vectorized)
        hv = np.stack([np.ravel(f.hvp(*xs, v=f._split(s), params=params)) for s in seeds])
    else:
        from . import batch as batch_engine
        x = f._flat_inputs(xs)
        _, hv, _ = f._run_flat(np.tile(x, (len(seeds), 1)), seeds, batch_engine.MODE_HVP, params)
    return _scatter(pattern, hv.T, colors)


def n_colors(f, kind: str = "hessian") -> int:
    pattern = hessian_pattern(f) if kind == "hessian" else jacobian_pattern(f)
    colors = _cached_coloring(f, kind, pattern)
    return int(colors.max()) + 1 if colors.size else 0

"""Tape optimization passes. Each takes and returns a ``Program`` and keeps results
identical (bit for bit: no pass reorders floating-point arithmetic).

- ``fold_constants``: instructions that depend on no input or parameter become one
  constant block (their values are computed once, here).
- ``simplify``: algebraic identities that IEEE allows exactly: x*1, x/1, x**1, x+(-0.0)
  (which is how x-0 records). Not x*0 (NaN, inf) nor x+0.0 (-0.0 + 0.0 is +0.0).
- ``eliminate_common``: an instruction equal to an earlier one (same opcode, length,
  immediate and operands after earlier rewrites) is replaced by that one.
- ``eliminate_dead``: instructions nothing needed reads are dropped, slots renumbered.
- ``fuse_sums``: a chain of scalar additions whose partial sums nothing else reads
  (Python's ``sum()`` over tensors) becomes one ``gather_sum`` adding the same terms in
  the same order.
- ``fold_sign_flips``: ``s * (M @ x)`` with a constant run s of ±1 (the labels of a
  logistic loss) becomes one affine over M with its rows negated where s is -1: negation
  is exact, so every product and partial sum is the same number with the other sign. The
  one exception to bit-for-bit: a row sum that is exactly zero comes out +0.0 where
  ``-1 * (+0.0)`` gave -0.0. Gradients are unchanged to the bit.
- ``alias_contiguous_gathers``: a gather of consecutive slots (``stack`` of neighbours,
  once fuse_sums has removed the partial sums between them) is replaced by that run.
- ``compact_slots``: for replays that only need values, slots whose last reader has run
  are reused (CasADi's work vector); the reverse sweep needs every value, so this makes
  a separate forward-only tape.

``optimize(f)`` runs all but compact_slots and returns a new, smaller Function (the W graph:
20,001 instructions as recorded, 10,001 optimized, one per operation).
"""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
from numba import njit

from ..cpu import _sweeps as sweeps
from ..ops.table import FIELDS, OP, OPS
from ..tape._reads import MAX_OPERANDS, distinct_reads, index_reads, operand_base, operand_reads
from ..tape.reads import GATHERS, gathered_blocks, runs as read_runs
from ..tape.tape import TapeArrays, validate
from .._runtime.scalars import ONE as _ONE, ZERO as _ZERO
from .._runtime.twins import jit_or_python, tape_work

_JIT = dict(cache=True, nogil=True, error_model="numpy")
# Loops that allocate nothing run without Numba's runtime: with it, every array argument
# and view is reference counted, an atomic instruction that drains the store buffer, also
# in each call of a helper inside a loop (read_counts on W's 20,000 instructions: 3.2 ms,
# two thirds of its samples on those atomics, on the Zen 1 box)
_NO_RUNTIME = dict(_JIT, _nrt=False)
_ELEMENTWISE = np.array([op.elementwise for op in OPS])
_ARITY = np.array([op.arity if op.elementwise else 0 for op in OPS])
_CALLS_USER_KERNELS = np.array([op.calls_user_kernels for op in OPS])
#: structural opcodes that read runs of slots: where in ``ins[2:]`` each operand's base is
_RUN_BASES = {code: tuple(FIELDS.index(r[0]) - 2 for r in op.reads) for code, op in enumerate(OPS) if op.reads}


@dataclasses.dataclass
class Program:
    ops: np.ndarray
    ins: np.ndarray          # (8, n) int64 while passes run
    cv: np.ndarray
    consts: np.ndarray
    idx: np.ndarray
    n_slots: int
    keep: np.ndarray         # slots read from outside: outputs and guards
    inputs: np.ndarray       # slots written from outside: inputs and parameters
    origin: np.ndarray = None  # each instruction's index in the original tape

    def __post_init__(self):
        # kernels compile once per layout: a column selection (ins[:, keep]) can come back
        # Fortran-ordered
        self.ins = np.ascontiguousarray(self.ins)

    @classmethod
    def from_function(cls, f) -> "Program":
        a = f.arrays
        keep = np.concatenate([f.out_pos, f.guards]).astype(np.int64)
        inputs = np.concatenate([f.in_pos, f.param_pos]).astype(np.int64)
        return cls(a.ops.copy(), a.ins.astype(np.int64), a.cv.copy(), a.consts.copy(), a.idx.copy(),
                   a.n_slots, keep, inputs, np.arange(len(a.ops)))

    def arrays(self) -> TapeArrays:
        if self.ins.size and (self.ins.max() >= 2**31 or self.ins.min() < -(2**31)):
            raise OverflowError("an optimized tape index passes the int32 limit")
        return TapeArrays(self.ops.astype(np.uint8), self.ins.astype(np.int32), self.cv.astype(np.float64),
                          self.consts.astype(np.float64), self.idx.astype(np.int32), int(self.n_slots))

    def __len__(self):
        return len(self.ops)


def reads(prog: Program, i: int):
    """(base, stride, count) of every run instruction i reads, gathers as explicit slots."""
    return read_runs(prog.ops, prog.ins, prog.idx, i)


def _slots_of(base, stride, count):
    return base + stride * np.arange(count, dtype=np.int64)


# ------------------------------------------------------------------------------------------
# slot remapping shared by the passes that replace an instruction by an earlier run
# ------------------------------------------------------------------------------------------
@njit(**_NO_RUNTIME)
def _remap_runs(ops, ins, slot_map, start, skip, elementwise, arity):
    """Rewrite the operands of instructions start.. (not skipped) through slot_map, gathers
    excepted: each operand's slots must move by one shift, so that it stays a run. Returns
    the first instruction where one does not, or -1."""
    n_slots = slot_map.shape[0]
    for i in range(start, ops.shape[0]):
        op = ops[i]
        if skip[i]:
            continue
        n, a, sa, b, sb = ins[1, i], ins[2, i], ins[3, i], ins[4, i], ins[5, i]
        if elementwise[op]:
            for x in range(arity[op]):
                base, stride = ins[2 + 2 * x, i], ins[3 + 2 * x, i]
                if base < 0 or base >= n_slots:
                    continue                # an empty run may point past the last slot
                shift = slot_map[base] - base
                for k in range(1, n):
                    s = base + k * stride
                    if slot_map[s] - s != shift:
                        return i
                ins[2 + 2 * x, i] = base + shift
            continue
        for which in range(MAX_OPERANDS):
            field = operand_base(op, which)
            if field < 0:
                continue
            base = ins[field, i]
            if base < 0 or base >= n_slots:
                continue
            shift = slot_map[base] - base
            for k in range(distinct_reads(op, n)):
                first, stride, count = operand_reads(op, n, a, sa, b, sb, k, which)
                for q in range(count):
                    s = first + q * stride
                    if slot_map[s] - s != shift:
                        return i
            ins[field, i] = base + shift
    return -1


def _remap_all(prog: Program, slot_map: np.ndarray, start: int = 0, skip=None) -> None:
    """Rewrite the operands of every instruction from start (except the skipped ones)
    through slot_map, which must keep each run a run: gathers get fresh, remapped blocks
    of the index pool."""
    skip = np.zeros(len(prog), np.bool_) if skip is None else skip
    bad = _small(prog, _remap_runs)(prog.ops, prog.ins, slot_map, start, skip, *_codes())
    if bad >= 0:
        raise AssertionError(f"instruction {bad}: a remapped operand is no longer a run")
    gathers = np.flatnonzero(GATHERS[prog.ops] & ~skip)
    gathers = gathers[gathers >= start]
    if not gathers.size:
        return
    slots, before = _gather_reads(prog, gathers)
    new = slot_map[slots]
    # an element nothing reads may gather a dropped slot (mapped to -1): point it at
    # slot 0, which precedes every gather; its value is never used, its adjoint is 0
    new[new < 0] = 0
    prog.ins[2, gathers] = 0
    prog.ins[4, gathers] = len(prog.idx) + before
    prog.idx = np.concatenate([prog.idx, new.astype(prog.idx.dtype)])


@njit(**_JIT)
def _any_in_runs(mask, starts, lengths):
    """For each run r, whether mask holds somewhere in mask[starts[r]: starts[r] + lengths[r]]
    (a cumulative sum over every slot did it: 0.3 s per call on a tape of 5e7 slots)."""
    out = np.zeros(starts.shape[0], np.bool_)
    for r in range(starts.shape[0]):
        for s in range(starts[r], starts[r] + lengths[r]):
            if mask[s]:
                out[r] = True
                break
    return out


#: from this many slots the passes' per-slot helpers run as jitted loops; below, as numpy
#: over every slot, which costs less than loading a jitted helper from Numba's disk cache
#: (5-30 ms a function; W's trace, 3,600 slots: 20 -> 31 ms with the loops)
LOOP_SLOTS = 1 << 21


def _touched(prog: Program, mask: np.ndarray, starts, lengths) -> np.ndarray:
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    if mask.shape[0] < LOOP_SLOTS:
        before = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        return before[starts + lengths] - before[starts] > 0
    return _any_in_runs(mask, starts, lengths)


def _apply_aliases(prog: Program, rows, targets) -> Program:
    """Replace the outputs of instructions ``rows`` by the runs that start at ``targets``
    (earlier slots), except outputs read from outside, which keep their slots."""
    rows = np.asarray(rows, np.int64)
    targets = np.asarray(targets, np.int64)
    if not rows.size:
        return prog
    order = np.argsort(rows, kind="stable")
    rows, targets = rows[order], targets[order]
    out = prog.ins[0, rows].astype(np.int64)
    n = prog.ins[1, rows].astype(np.int64)
    kept = np.zeros(prog.n_slots, np.bool_)
    kept[prog.keep] = True
    free = ~_touched(prog, kept, out, n)
    rows, targets, out, n = rows[free], targets[free], out[free], n[free]
    if not rows.size:
        return prog
    within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    slot_map = np.arange(prog.n_slots, dtype=np.int64)
    slot_map[np.repeat(out, n) + within] = np.repeat(targets, n) + within
    # a target may itself be an aliased output (of an earlier instruction): follow the
    # chains to their ends, which are never aliased
    while True:
        followed = slot_map[slot_map]
        if np.array_equal(followed, slot_map):
            break
        slot_map = followed
    removed = np.zeros(len(prog), bool)
    removed[rows] = True
    _remap_all(prog, slot_map, int(rows[0]))
    return _drop(prog, removed)


def _drop(prog: Program, removed: np.ndarray) -> Program:
    keep = ~removed
    return dataclasses.replace(prog, ops=prog.ops[keep], ins=prog.ins[:, keep], cv=prog.cv[keep],
                               origin=prog.origin[keep])


# ------------------------------------------------------------------------------------------
# forward dependence and backward liveness, compiled: they visit every element
# ------------------------------------------------------------------------------------------


@njit(**_NO_RUNTIME)
def depends_forward(ops, ins, idx, dep, elementwise, arity):
    """dep[slot] |= any operand element it reads has dep set (dep holds the seeds)."""
    for i in range(ops.shape[0]):
        op = ops[i]
        o, n, a, sa, b, sb, d, sd = ins[0, i], ins[1, i], ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i]
        distinct = n if elementwise[op] else distinct_reads(op, n)
        hit = False
        for k in range(n):
            if k >= distinct:           # reads what element 0 reads
                pass
            elif elementwise[op]:
                hit = False
                m = arity[op]
                if m > 0 and dep[a + k * sa]:
                    hit = True
                if m > 1 and dep[b + k * sb]:
                    hit = True
                if m > 2 and dep[d + k * sd]:
                    hit = True
            else:
                hit = False
                base, first, count = index_reads(op, a, b, sb, k)
                for q in range(first, first + count):
                    if dep[base + idx[q]]:
                        hit = True
                for which in range(MAX_OPERANDS):
                    base, stride, count = operand_reads(op, n, a, sa, b, sb, k, which)
                    for q in range(count):
                        if dep[base + q * stride]:
                            hit = True
                            break
            if hit:
                dep[o + k] = True


@njit(inline="always", **_NO_RUNTIME)
def _count_reads(ops, ins, idx, i, k, counts, elementwise, arity, times):
    """counts[slot] += times for every slot that output element k of instruction i reads.
    Inlined: a call per element passed five arrays (needed_backward over a tape of 5e7
    slots: 3.6 s)."""
    op = ops[i]
    n, a, sa, b, sb, d, sd = ins[1, i], ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i]
    if elementwise[op]:
        m = arity[op]
        if m > 0:
            counts[a + k * sa] += times
        if m > 1:
            counts[b + k * sb] += times
        if m > 2:
            counts[d + k * sd] += times
        return
    base, first, count = index_reads(op, a, b, sb, k)
    for q in range(first, first + count):
        counts[base + idx[q]] += times
    for which in range(MAX_OPERANDS):
        base, stride, count = operand_reads(op, n, a, sa, b, sb, k, which)
        for q in range(count):
            counts[base + q * stride] += times


@njit(**_JIT)
def needed_backward(ops, ins, idx, needed, is_input_op, elementwise, arity):
    """Mark what the needed slots read, in reverse (``needed``: a count per slot, nonzero
    where needed); returns which instructions live."""
    live = np.zeros(ops.shape[0], np.bool_)
    for i in range(ops.shape[0] - 1, -1, -1):
        if ops[i] == is_input_op:
            live[i] = True
            continue
        o, n = ins[0, i], ins[1, i]
        if elementwise[ops[i]]:
            # the fields in locals, read once (stores into needed may alias ins, as far as
            # LLVM knows: a tape of 3e7 elementwise slots 1.0 -> 0.1 s)
            m, a, sa, b, sb, d, sd = arity[ops[i]], ins[2, i], ins[3, i], ins[4, i], ins[5, i], ins[6, i], ins[7, i]
            alive = False
            for k in range(n):
                if needed[o + k]:
                    alive = True
                    if m > 0:
                        needed[a + k * sa] += 1
                    if m > 1:
                        needed[b + k * sb] += 1
                    if m > 2:
                        needed[d + k * sd] += 1
            live[i] = alive
            continue
        if distinct_reads(ops[i], n) == 1:
            wanted = _ZERO
            for k in range(n):
                if needed[o + k]:
                    wanted += 1
            if wanted:
                live[i] = True
                _count_reads(ops, ins, idx, i, _ZERO, needed, elementwise, arity, wanted)
            continue
        for k in range(n):
            if needed[o + k]:
                live[i] = True
                _count_reads(ops, ins, idx, i, k, needed, elementwise, arity, _ONE)
    return live


def _small(prog: Program, fn):
    """fn, or its Python twin on a small tape (see tapejit/_runtime/twins.py)."""
    return jit_or_python(fn, tape_work(prog.ops, prog.ins))


def _codes():
    return (_ELEMENTWISE, _ARITY.astype(np.int64))


# ------------------------------------------------------------------------------------------
# passes
# ------------------------------------------------------------------------------------------
def _dependence(prog: Program) -> np.ndarray:
    """Which slots depend on an input or parameter."""
    dep = np.zeros(prog.n_slots, np.bool_)
    dep[prog.inputs] = True
    _small(prog, depends_forward)(prog.ops, prog.ins, prog.idx, dep, *_codes())
    return dep


def fold_constants(prog: Program) -> Program:
    dep = _dependence(prog)
    outs, lengths = prog.ins[0], prog.ins[1]
    # an instruction is constant when none of its outputs depends on an input
    dependent = _touched(prog, dep, outs, lengths)
    candidates = np.flatnonzero((lengths > 0) & ~dependent & ~np.isin(prog.ops, [OP.input, OP.const, OP.fill]))
    if not candidates.size:
        return prog
    # the values up to the last candidate (zeros: untouched pages of the rest cost nothing;
    # a tape of 5e7 slots with no constant to fold skipped a 0.6 s sweep)
    stop = int(candidates[-1]) + 1
    values = np.zeros(prog.n_slots)
    arrays = prog.arrays()
    user = dependent & _CALLS_USER_KERNELS[prog.ops]
    if user.any():
        # a user's kernel never runs on the made-up inputs (it may raise there): its
        # instructions that depend on inputs are fills here, whose values nobody folds
        ops, ins = arrays.ops.copy(), arrays.ins.copy()
        ops[user] = OP.fill
        ins[2:, user] = 0
        arrays = dataclasses.replace(arrays, ops=ops, ins=ins)
    sweeps.forward_vector(*arrays.sweep_args, values, 0, stop)   # inputs at zero: constants are exact
    consts = [prog.consts]
    offset = len(prog.consts)
    for i in candidates:
        op = prog.ops[i]
        out, n = int(outs[i]), int(lengths[i])
        block = values[out: out + n]
        if n == 1 or np.all(block == block[0]) and not np.isnan(block[0]):
            if np.all(np.signbit(block) == np.signbit(block[0])):
                prog.ops[i] = OP.fill
                prog.ins[:, i] = (out, n, 0, 0, 0, 0, 0, 0)
                prog.cv[i] = block[0]
                continue
        prog.ops[i] = OP.const
        prog.ins[:, i] = (out, n, 0, 0, offset, 0, 0, 0)
        prog.cv[i] = 0.0
        consts.append(block.copy())
        offset += n
    prog.consts = np.concatenate(consts)
    return prog


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


_NEGATIVE_ZERO_BITS = np.float64(-0.0).view(np.int64)


def one_operand(prog: Program) -> Program:
    """x*x is square(x) and x + x is 2*x, bit for bit (doubling is exact), and so is the
    adjoint contribution (g*x + g*x is g*(2*x)), now one term where it was two. One operand
    also spares the chunk reverse a loop that assigns and adds to the same adjoint row,
    which LLVM cannot vectorize (sum(x * x) over B1's inputs: the reverse sweep 11.5 -> 5.9
    ns a point). Runs after CSE, which makes two recomputations of x one run."""
    ops = prog.ops
    same = (prog.ins[2] == prog.ins[4]) & (prog.ins[3] == prog.ins[5])
    for code, into, c in ((OP.mul, OP.square, 0.0), (OP.add, OP.mul_c, 2.0)):
        rows = np.flatnonzero((ops == code) & same)
        ops[rows], prog.cv[rows] = into, c
        prog.ins[4:6, rows] = 0
    return prog


def simplify(prog: Program) -> Program:
    """x*1, x/1, x**1 and x + (-0.0) are x exactly: alias them to x (unit-stride x)."""
    ops = prog.ops
    by_one = ((ops == OP.mul_c) | (ops == OP.div_c) | (ops == OP.pow_c)) & (prog.cv == 1.0)
    plus_negative_zero = (ops == OP.add_c) & (prog.cv.view(np.int64) == _NEGATIVE_ZERO_BITS)
    rows = np.flatnonzero((by_one | plus_negative_zero) & ((prog.ins[3] == 1) | (prog.ins[1] == 1)))
    return _apply_aliases(prog, rows, prog.ins[2, rows])


def _fields_read(prog: Program, i: int, op: int, row: list, slot_map, gathered: dict) -> tuple:
    """What structural instruction i (opcode op, integer fields row) reads, its slots seen
    through slot_map (None while nothing is remapped); ``gathered``: the slots each gather
    reads (_gathered_slots)."""
    if GATHERS[op]:
        slots = gathered[i]
        if slot_map is not None:
            slots = slot_map[np.asarray(slots, np.int64)].tolist()
        return (row[5],) + tuple(slots)
    if op == OP.const:
        return tuple(_bits(x) for x in prog.consts[row[4]: row[4] + row[1]])
    if op == OP.input:
        return ("input", row[0])          # never equal to another
    fields = row[2:]
    if slot_map is not None and op in _RUN_BASES:
        # an empty range may name a base past the last slot
        for at in _RUN_BASES[op]:
            if 0 <= fields[at] < len(slot_map):
                fields[at] = int(slot_map[fields[at]])
    if op == OP.affine:                        # b: the constant block, compared by value
        m = fields[3]
        return (fields[0], fields[1], m) + tuple(_bits(x) for x in prog.consts[row[4]: row[4] + row[1] * m])
    return tuple(fields)


def _gather_reads(prog: Program, gathers: np.ndarray):
    """The absolute slots that the gathering instructions ``gathers`` read, one block
    after another, and where each one's block starts."""
    return gathered_blocks(prog.ops, prog.ins, prog.idx, gathers)


def _gathered_slots(prog: Program, rows: np.ndarray) -> dict:
    """For each gather or gather_sum among ``rows``: the list of slots it reads."""
    rows = rows[GATHERS[prog.ops[rows]]]
    if not rows.size:
        return {}
    slots, before = _gather_reads(prog, rows)
    slots, starts = slots.tolist(), before.tolist() + [len(slots)]
    return {i: slots[starts[k]: starts[k + 1]] for k, i in enumerate(rows.tolist())}


def eliminate_common(prog: Program) -> Program:
    """Common subexpressions, found by hashing (opcode, length, immediate, operands).

    Elementwise instructions are matched in bulk (rows of a table), structural ones one by
    one, until nothing changes: merging two instructions can make their readers equal."""
    keep = np.zeros(prog.n_slots + 1, bool)
    keep[prog.keep] = True
    while True:
        while True:
            prog, merged = _merge_elementwise(prog, keep)
            if not merged:
                break
        prog, merged = _merge_structural(prog)
        if not merged:
            return prog


_HASH_MULTIPLIERS = np.random.default_rng(20231).integers(1, 2**63, 16, dtype=np.uint64) | np.uint64(1)


def _sharing_a_hash(table: np.ndarray) -> np.ndarray:
    """Positions, in order, of the rows of an int64 table whose hash another row shares
    (every pair of equal rows among them)."""
    hashes = np.zeros(len(table), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(table.shape[1]):
            hashes = (hashes ^ table[:, k].view(np.uint64)) * _HASH_MULTIPLIERS[k]
            hashes ^= hashes >> np.uint64(29)
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    same = ordered[1:] == ordered[:-1]
    shared = np.zeros(len(table), bool)
    shared[1:] |= same
    shared[:-1] |= same
    return np.sort(order[shared])


def _merge_elementwise(prog: Program, keep: np.ndarray):
    ew = _ELEMENTWISE[prog.ops] & (prog.ins[1] > 0)
    ew &= ~keep[prog.ins[0]]                      # outputs read from outside stay
    rows = np.flatnonzero(ew)
    if rows.size < 2:
        return prog, False
    arity = _ARITY[prog.ops[rows]]
    fields = prog.ins[2:, rows].copy()
    for k in range(3):                            # operands an opcode does not read do not count
        fields[2 * k: 2 * k + 2, arity <= k] = 0
    table = np.column_stack([prog.ops[rows].astype(np.int64), prog.ins[1, rows], prog.cv[rows].view(np.int64),
                             fields.T])
    # sorting whole rows costs ~10 ms on 20,000 instructions; a hash of each row finds the
    # few that can be equal, and only those are compared in full
    candidates = _sharing_a_hash(table)
    if not candidates.size:
        return prog, False
    rows, table = rows[candidates], table[candidates]
    _, first, inverse = np.unique(table, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    duplicate = first[inverse] != np.arange(rows.size)
    if not duplicate.any():
        return prog, False
    slot_map = np.arange(prog.n_slots, dtype=np.int64)
    for r in np.flatnonzero(duplicate):
        i, j = rows[r], rows[first[inverse[r]]]
        out, n = int(prog.ins[0, i]), int(prog.ins[1, i])
        target = int(prog.ins[0, j])
        slot_map[out: out + n] = slot_map[target: target + n]
    removed = np.zeros(len(prog), bool)
    removed[rows[duplicate]] = True
    _remap_all(prog, slot_map, int(rows[duplicate].min()), removed)
    return _drop(prog, removed), True


#: the structural opcodes whose key _fields_read builds from more than their fields
_READ_SPECIALLY = frozenset((OP.gather, OP.gather_sum, OP.const, OP.input, OP.affine))


def _merge_structural(prog: Program):
    """Structural duplicates, in instruction order: an instruction equal to an earlier one
    once the duplicates it reads are replaced is itself a duplicate."""
    seen = {}
    slot_map = np.arange(prog.n_slots, dtype=np.int64)
    keep_set = set(prog.keep.tolist())
    removed = np.zeros(len(prog), bool)
    structural = np.flatnonzero(~_ELEMENTWISE[prog.ops] & (prog.ops != OP.input))
    if structural.size < 2 or not _sharing_a_hash(_structural_keys(prog, structural)).size:
        return prog, False
    gathered = _gathered_slots(prog, structural)
    rows = prog.ins[:, structural].T.tolist()
    ops = prog.ops[structural].tolist()
    immediates = prog.cv[structural].view(np.int64).tolist()      # compared bit for bit
    remapping = False
    for i, op, row, c in zip(structural.tolist(), ops, rows, immediates):
        out, n = row[0], row[1]
        if remapping or op in _READ_SPECIALLY:
            key = (op, n, c, _fields_read(prog, i, op, row, slot_map if remapping else None, gathered))
        else:
            key = (op, n, c, tuple(row[2:]))            # what _fields_read gives, directly
        first = seen.get(key)
        if first is None or any(s in keep_set for s in range(out, out + n)):
            seen.setdefault(key, out)
            continue
        slot_map[out: out + n] = slot_map[first: first + n]
        removed[i] = True
        remapping = True
    if not remapping:
        return prog, False
    _remap_all(prog, slot_map, int(np.argmax(removed)), removed)
    return _drop(prog, removed), True


def _structural_keys(prog: Program, rows: np.ndarray) -> np.ndarray:
    """One int64 row per structural instruction (none of them an input), equal for two
    instructions whenever their _fields_read keys before any remapping are: what they
    read beyond their fields (gathered slots, a constant block) enters as a hash. When no
    two rows share a hash, _merge_structural has nothing to merge, and W's 5,000
    structural instructions skip its Python loop (11 ms on the Zen 1 box)."""
    ops = prog.ops[rows]
    # columns: opcode, n, immediate, a, sa, b, sb, d, sd, hash of what is read beyond them
    table = np.column_stack([ops.astype(np.int64), prog.ins[1, rows], prog.cv[rows].view(np.int64),
                             prog.ins[2:, rows].T, np.zeros(rows.size, np.int64)]).astype(np.int64)
    gathers = GATHERS[ops]
    if gathers.any():
        slots, before = _gather_reads(prog, rows[gathers])
        lengths = np.diff(np.append(before, len(slots)))
        table[gathers, 9] = _segment_hashes(slots.astype(np.uint64), before, lengths)
        table[np.ix_(gathers, [3, 4, 5, 7, 8])] = 0         # the key keeps sb and the slots
    consts, affines = ops == OP.const, ops == OP.affine
    blocks = consts | affines                               # constants compared by their bits
    if blocks.any():
        n, m = prog.ins[1, rows[blocks]].astype(np.int64), prog.ins[5, rows[blocks]].astype(np.int64)
        lengths = np.where(consts[blocks], n, n * m)
        before = np.cumsum(lengths) - lengths
        at = np.repeat(prog.ins[4, rows[blocks]] - before, lengths) + np.arange(int(lengths.sum()))
        table[blocks, 9] = _segment_hashes(prog.consts[at].view(np.uint64), before, lengths)
        table[np.ix_(consts, [3, 4, 5, 6, 7, 8])] = 0       # a const's key is its values
        table[np.ix_(affines, [5, 7, 8])] = 0               # an affine's: a, sa, m and its block
    return table


def _segment_hashes(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A hash of each run values[starts[k]: starts[k] + lengths[k]] (uint64), as int64;
    equal runs hash equal, and the position within a run counts."""
    position = np.arange(len(values)) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        mixed = (values + np.uint64(1)) * _HASH_MULTIPLIERS[position % len(_HASH_MULTIPLIERS)]
        mixed ^= mixed >> np.uint64(31)
        total = np.concatenate([[np.uint64(0)], np.cumsum(mixed, dtype=np.uint64)])
        return (total[starts + lengths] - total[starts]).view(np.int64)


def fold_sign_flips(prog: Program) -> Program:
    """``mul(M @ x, s)`` (either order) with s a constant run of ±1 and nothing else
    reading M @ x: M's rows are negated where s is -1 and the product is aliased to the
    affine's output. Other constants (even powers of two, which underflow differently)
    stay a multiplication. B2's tape loses its const and mul instructions (6 -> 4), about
    a seventh of its batch gradient."""
    muls = np.flatnonzero(prog.ops == OP.mul)
    affines = np.flatnonzero(prog.ops == OP.affine)
    if not muls.size or not affines.size:
        return prog
    affine_at = {int(prog.ins[0, j]): int(j) for j in affines}
    const_of = np.full(prog.n_slots, -1, np.int64)
    for k in np.flatnonzero(prog.ops == OP.const):
        out, n = int(prog.ins[0, k]), int(prog.ins[1, k])
        const_of[out: out + n] = k
    counts = _reader_counts(prog)
    kept = np.zeros(prog.n_slots, bool)
    kept[prog.keep] = True
    alias, blocks, offset = {}, [prog.consts], len(prog.consts)
    for i in muls:
        out, n, a, sa, b, sb = (int(v) for v in prog.ins[:6, i])
        if kept[out: out + n].any():
            continue
        for (x, sx), (y, sy) in (((a, sa), (b, sb)), ((b, sb), (a, sa))):
            j = affine_at.get(x, -1)
            if j < 0 or int(prog.ins[1, j]) != n or (sx != 1 and n != 1):
                continue
            if not (counts[x: x + n] == 1).all():
                continue
            sign_slots = y + sy * np.arange(n)
            if y < 0 or sign_slots.max() >= prog.n_slots:
                continue
            producers = const_of[sign_slots]
            if (producers < 0).any():
                continue
            first = prog.ins[0, producers]
            signs = prog.consts[prog.ins[4, producers] + sign_slots - first]
            if not np.all((signs == 1.0) | (signs == -1.0)):
                continue
            m = int(prog.ins[5, j])
            start = int(prog.ins[4, j])
            matrix = prog.consts[start: start + n * m].reshape(n, m)
            if np.count_nonzero((prog.ops == OP.affine) & (prog.ins[4] == start)) == 1:
                matrix *= signs[:, None]          # its only user: no copy of a big data block
            else:
                blocks.append((matrix * signs[:, None]).ravel())
                prog.ins[4, j] = offset
                offset += n * m
            alias[int(i)] = x
            break
    if not alias:
        return prog
    prog.consts = np.concatenate(blocks)
    return _apply_aliases(prog, list(alias), list(alias.values()))


def _dense_numbering(outs, lengths, n_slots: int):
    """(new_of, count, unchanged): each live run's slots numbered densely in instruction
    order (-1 for the others), how many there are, and whether that is every slot in its
    place. Large tapes take one jitted pass without temporaries of the slot count's size
    (5e7 slots: 2 GB of them in numpy)."""
    if n_slots >= LOOP_SLOTS:
        new_of, pos, unchanged = _dense_loop(outs, lengths, np.int64(n_slots))
        return new_of, int(pos), bool(unchanged)
    pos = int(lengths.sum())
    new_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    new_of = np.full(n_slots, -1, dtype=np.int64)
    within = np.arange(pos, dtype=np.int64) - np.repeat(new_starts, lengths)
    new_of[np.repeat(outs, lengths) + within] = np.arange(pos, dtype=np.int64)
    return new_of, pos, pos == n_slots and np.array_equal(new_of, np.arange(n_slots))


@njit(**_JIT)
def _dense_loop(outs, lengths, n_slots):
    new_of = np.full(n_slots, -1, np.int64)
    pos = 0
    unchanged = True
    for i in range(outs.shape[0]):
        o, n = outs[i], lengths[i]
        if n > 0 and o != pos:
            unchanged = False
        for k in range(n):
            new_of[o + k] = pos + k
        pos += n
    return new_of, pos, unchanged and pos == n_slots


def eliminate_dead(prog: Program) -> Program:
    """Drop instructions whose outputs nothing needed reads; renumber the slots densely."""
    needed = np.zeros(prog.n_slots, np.int64)
    needed[prog.keep] = 1
    live = _small(prog, needed_backward)(prog.ops, prog.ins, prog.idx, needed, OP.input, *_codes())
    prog = _drop(prog, ~live)
    # dense renumbering: every live run keeps its length, in instruction order
    new_of, pos, unchanged = _dense_numbering(prog.ins[0], prog.ins[1], prog.n_slots)
    if unchanged:
        prog.slot_map = new_of
        return prog                     # nothing was dropped: numbering unchanged
    _remap_all(prog, new_of)
    written = prog.ins[1] > 0
    prog.ins[0] = np.where(written, new_of[np.where(written, prog.ins[0], 0)], pos) if prog.n_slots else pos
    prog.keep = new_of[prog.keep]
    prog.inputs = new_of[prog.inputs]
    prog.n_slots = pos
    prog.slot_map = new_of
    return prog


@njit(**_NO_RUNTIME)
def read_counts(ops, ins, idx, counts, elementwise, arity):
    """counts[slot] += how many times an instruction reads it (each element of a run)."""
    for i in range(ops.shape[0]):
        n = ins[1, i]
        if not elementwise[ops[i]] and distinct_reads(ops[i], n) == 1:
            _count_reads(ops, ins, idx, i, _ZERO, counts, elementwise, arity, np.int64(n))
            continue
        for k in range(n):
            _count_reads(ops, ins, idx, i, k, counts, elementwise, arity, _ONE)


@njit(**_JIT)
def _sum_chains(ops, ins, counts, n_slots, op_add, op_add_c):
    """For each scalar add: the scalar add or add_c it extends (-1: none), read only by
    it, and the other operand it adds; which instructions another one extends."""
    n_ins = ops.shape[0]
    producer = np.full(n_slots, -1, np.int64)
    extends = np.full(n_ins, -1, np.int64)
    term = np.zeros(n_ins, np.int64)
    absorbed = np.zeros(n_ins, np.bool_)
    for i in range(n_ins):
        op = ops[i]
        if ins[1, i] != 1 or (op != op_add and op != op_add_c):
            continue
        o, a, b = ins[0, i], ins[2, i], ins[4, i]
        producer[o] = i
        if op == op_add_c:
            continue                    # x + c starts a chain: c applies to its first term
        for x in range(2):
            acc, other = (a, b) if x == 0 else (b, a)
            p = producer[acc]
            if p >= 0 and counts[acc] == 1:
                extends[i], term[i], absorbed[p] = p, other, True
                break
    return extends, term, absorbed


def _reader_counts(prog: Program) -> np.ndarray:
    """How many times each slot is read; outputs and guards count as read twice more, so
    that no fusion absorbs them."""
    counts = np.zeros(prog.n_slots, np.int64)
    _small(prog, read_counts)(prog.ops, prog.ins, prog.idx, counts, *_codes())
    counts[prog.keep] += 2
    return counts


def fuse_sums(prog: Program) -> Program:
    """A chain of scalar additions whose partial sums nothing else reads, like Python's
    ``sum()`` over tensors (``((0 + x0) + x1) + x2``), becomes one gather_sum that adds
    its terms in the same order: the same bits, one instruction instead of several."""
    chained = ((prog.ops == OP.add) | (prog.ops == OP.add_c)) & (prog.ins[1] == 1)
    if np.count_nonzero(chained) < 2:
        return prog
    counts = _reader_counts(prog)
    extends, term, absorbed = _small(prog, _sum_chains)(prog.ops, prog.ins, counts, prog.n_slots, OP.add, OP.add_c)
    roots = np.flatnonzero((extends >= 0) & ~absorbed)
    if not roots.size:
        return prog
    terms, lengths, c = _small(prog, _chain_terms)(prog.ins, prog.cv, prog.ops, roots, extends, term, OP.add_c)
    prog.ops[roots] = OP.gather_sum
    prog.ins[1:, roots] = 0
    prog.ins[1, roots] = 1
    prog.ins[4, roots] = len(prog.idx) + np.cumsum(lengths) - lengths
    prog.ins[5, roots] = lengths
    prog.cv[roots] = c
    prog.idx = np.concatenate([prog.idx, terms.astype(prog.idx.dtype)])
    return prog                                   # the absorbed additions are dead now


@njit(**_JIT)
def _chain_terms(ins, cv, ops, roots, extends, term, op_add_c):
    """Each chain's terms in the order it adds them (first the operands of the addition
    that starts it, then one per extension), its length and its immediate."""
    lengths = np.zeros(roots.shape[0], np.int64)
    for r in range(roots.shape[0]):
        j = roots[r]
        while extends[j] >= 0:
            lengths[r] += 1
            j = extends[j]
        lengths[r] += 1 if ops[j] == op_add_c else 2
    terms = np.empty(lengths.sum(), np.int64)
    c = np.empty(roots.shape[0])
    at = 0
    for r in range(roots.shape[0]):
        j = roots[r]
        q = at + lengths[r] - 1
        while extends[j] >= 0:
            terms[q] = term[j]
            q -= 1
            j = extends[j]
        if ops[j] == op_add_c:
            terms[q] = ins[2, j]
            c[r] = cv[j]
        else:
            terms[q - 1], terms[q] = ins[2, j], ins[4, j]
            c[r] = -0.0
        at += lengths[r]
    return terms, lengths, c


def alias_contiguous_gathers(prog: Program) -> Program:
    """A gather of consecutive slots copies a run that already exists: its readers read
    that run instead (``stack`` of values that lie side by side, as they do once
    fuse_sums has removed the partial sums between them)."""
    gathers = np.flatnonzero((prog.ops == OP.gather) & (prog.ins[1] > 0))
    if not gathers.size:
        return prog
    n = prog.ins[1, gathers]
    starts = prog.ins[4, gathers]
    entries = np.repeat(starts - np.cumsum(np.r_[0, n[:-1]]), n) + np.arange(int(n.sum()))
    sources = np.repeat(prog.ins[2, gathers], n) + prog.idx[entries]
    step = np.diff(sources)
    # one gather's entries are consecutive when every step inside it is 1
    inside = np.ones(step.size, bool)
    inside[np.cumsum(n)[:-1] - 1] = False
    broken = np.zeros(len(gathers), bool)
    owner = np.repeat(np.arange(len(gathers)), n)[:-1]
    np.logical_or.at(broken, owner[inside & (step != 1)], True)
    first = sources[np.r_[0, np.cumsum(n)[:-1]]]
    return _apply_aliases(prog, gathers[~broken], first[~broken])


@njit(**_JIT)
def _fuse_squares(ops, ins, cv, counts, n_slots, elementwise, op_square, op_sub, op_rsub_c, op_add_c, op_mul_c,
                  op_add, op_square_sub, op_square_rsub_c, op_add_scaled_square, op_minus_square):
    """Rewrite in place each instruction that can absorb the square (and scaling) it reads.
    The absorbed instructions are left for eliminate_dead."""
    n_ins = ops.shape[0]
    producer = np.full(n_slots, -1, np.int64)
    for i in range(n_ins):
        if elementwise[ops[i]] and ins[1, i] > 0:
            producer[ins[0, i]] = i
    absorbed = np.zeros(n_ins, np.bool_)
    # sums of (scaled) squares first: they absorb two instructions, a square of a
    # difference one, and a square absorbed into a sum is no longer there to pair with it
    for i in range(n_ins):
        if ops[i] != op_add:
            continue
        for x in range(2):
            s = _sole_reader_of(ins, i, x, producer, counts, absorbed)
            c = 1.0
            if s >= 0 and ops[s] == op_mul_c:
                c = cv[s]
                scale, s = s, _sole_reader_of(ins, s, _ZERO, producer, counts, absorbed)
            else:
                scale = -1
            if s < 0 or ops[s] != op_square:
                continue
            # c * a**2 + b: ((a * a) * c) + b, as square, mul_c and add computed it
            # (x * 1.0 is exact, and IEEE addition commutes)
            other = 1 - x
            ins[4, i], ins[5, i] = ins[2 + 2 * other, i], ins[3 + 2 * other, i]
            ins[2, i], ins[3, i] = ins[2, s], ins[3, s]
            ops[i], cv[i] = op_add_scaled_square, c
            absorbed[s] = True
            if scale >= 0:
                absorbed[scale] = True
            break
    for i in range(n_ins):
        if ops[i] != op_square or absorbed[i]:
            continue
        d = _sole_reader_of(ins, i, _ZERO, producer, counts, absorbed)
        if d < 0 or (ops[d] != op_sub and ops[d] != op_rsub_c and ops[d] != op_add_c):
            continue
        ins[2, i], ins[3, i], ins[4, i], ins[5, i] = ins[2, d], ins[3, d], ins[4, d], ins[5, d]
        ops[i] = op_square_sub if ops[d] == op_sub else op_square_rsub_c
        # (a + c)**2 is (-c - a)**2 bit for bit: rounding is symmetric about zero
        cv[i] = -cv[d] if ops[d] == op_add_c else cv[d]
        absorbed[d] = True
    # last, a - b**2 of the squares no sum or difference took: a - (b * b), as they computed it
    for i in range(n_ins):
        if ops[i] != op_sub or absorbed[i]:
            continue
        s = _sole_reader_of(ins, i, _ONE, producer, counts, absorbed)
        if s < 0 or ops[s] != op_square:
            continue
        ins[4, i], ins[5, i] = ins[2, s], ins[3, s]
        ops[i] = op_minus_square
        absorbed[s] = True


@njit(**_NO_RUNTIME)
def _sole_reader_of(ins, i, x, producer, counts, absorbed):
    """The elementwise instruction whose run instruction i's operand x is, element for
    element, when i is the only reader of that run (-1 otherwise)."""
    base, stride, n = ins[2 + 2 * x, i], ins[3 + 2 * x, i], ins[1, i]
    if base < 0 or base >= producer.shape[0]:
        return -1
    p = producer[base]
    if p < 0 or absorbed[p] or ins[1, p] != n or (stride != 1 and n != 1):
        return -1
    for k in range(n):
        if counts[base + k] != 1:
            return -1
    return p


def fuse_squares(prog: Program) -> Program:
    """``c * a**2 + b``, ``(a - b)**2``, ``(c - a)**2`` (or ``(a + c)**2``) and ``a - b**2``,
    each one instruction (see opcodes.FUSED) where the intermediate runs have no other reader."""
    if not np.any(prog.ops == OP.square):
        return prog
    _small(prog, _fuse_squares)(prog.ops, prog.ins, prog.cv, _reader_counts(prog), prog.n_slots, _ELEMENTWISE, OP.square,
                  OP.sub, OP.rsub_c, OP.add_c, OP.mul_c, OP.add, OP.square_sub, OP.square_rsub_c,
                  OP.add_scaled_square, OP.minus_square)
    return prog


def optimize_program(prog: Program) -> Program:
    prog = fold_constants(prog)
    prog = simplify(prog)
    prog = one_operand(eliminate_common(prog))
    prog = fold_sign_flips(prog)
    prog = eliminate_dead(fuse_squares(fuse_sums(prog)))
    fused, first_map = len(prog), prog.slot_map
    prog = alias_contiguous_gathers(prog)
    if len(prog) == fused:
        prog.slot_map = first_map
        return prog
    prog = eliminate_dead(prog)
    prog.slot_map = np.where(first_map >= 0, prog.slot_map[np.maximum(first_map, 0)], -1)
    return prog


def flag_constant_factors(prog: Program, differentiable: np.ndarray) -> Program:
    """Flag each matmul operand that depends on no differentiable input (a data batch
    passed as a parameter, a constant): the reverse and Hessian sweeps skip its product,
    whose adjoints nothing reads (the matmul row's ``c``)."""
    matmuls = np.flatnonzero((prog.ops == OP.matmul) & (prog.cv == 0.0))
    if not matmuls.size:
        return prog
    dep = np.zeros(prog.n_slots, np.bool_)
    dep[differentiable] = True
    _small(prog, depends_forward)(prog.ops, prog.ins, prog.idx, dep, *_codes())
    n, a, q, b, r = (prog.ins[f, matmuls].astype(np.int64) for f in (1, 2, 3, 4, 5))
    p = np.where(r > 0, n // np.maximum(r, 1), 0)
    left, right = _touched(prog, dep, a, p * q), _touched(prog, dep, b, q * r)
    for i, x, y in zip(matmuls, left, right):
        if not x:
            prog.cv[i] = 1.0
        elif not y:
            prog.cv[i] = 2.0
    return prog


def optimize(f) -> dict:
    """A smaller tape with the same results as Function ``f``'s: constant folding,
    identities, CSE, DCE. Returns the pieces of the new Function (its constructor's
    arguments, and the optimized tape's debug locations); tapejit.frontend.function builds it."""
    prog = optimize_program(Program.from_function(f))
    new_of = prog.slot_map
    kept_inputs = new_of[f.in_pos]
    prog = flag_constant_factors(prog, kept_inputs[kept_inputs >= 0])
    output = (int(new_of[f.output[0]]), f.output[1])
    if not np.array_equal(new_of[f.out_pos], output[0] + np.arange(len(f.out_pos))):
        raise AssertionError("the optimized output is not one run")
    pieces = dict(arrays=prog.arrays(), inputs=[(int(new_of[b]), s) for b, s in f.inputs],
                  params=[(int(new_of[b]), s) for b, s in f.params], param_values=f.param_values,
                  output=output, guards=new_of[f.guards], locations={})
    if f.locations:                      # kept under debug_nans only
        pieces["locations"] = {i: f.locations[int(k)] for i, k in enumerate(prog.origin) if int(k) in f.locations}
    return pieces

# ------------------------------------------------------------------------------------------
# liveness compaction (values only)
# ------------------------------------------------------------------------------------------
def compact_slots(f):
    """A forward-only tape whose slots are reused once their last reader has run, with
    the new input, parameter, output and guard positions. The adjoint sweeps need every
    value, so this tape serves value-only replays (f.batch)."""
    prog = Program.from_function(f)
    n_ins = len(prog)
    last = np.full(prog.n_slots, -1, dtype=np.int64)
    for i in range(n_ins):
        for base, stride, count in reads(prog, i):
            s = _slots_of(base, stride, count)
            last[s] = i
    last[prog.keep] = n_ins                     # read after the sweep
    free: list = []                             # (start, length) of free runs
    new_of = np.full(prog.n_slots, -1, dtype=np.int64)
    top = 0
    release_at: dict = {}
    for i in range(n_ins):
        out, n = int(prog.ins[0, i]), int(prog.ins[1, i])
        # operands first: this instruction may reuse a run only once it has read it
        for start, length in release_at.pop(i, []):
            free.append((start, length))
        start = None
        for k, (fs, fl) in enumerate(free):
            if fl >= n and prog.ops[i] != OP.input:
                start = fs
                free[k] = (fs + n, fl - n)
                if free[k][1] == 0:
                    free.pop(k)
                break
        if start is None:
            start, top = top, top + n
        new_of[out: out + n] = np.arange(start, start + n)
        # the run can be reused after the last instruction that reads any of its slots
        end = int(last[out: out + n].max()) if n else i
        if end < n_ins and n:
            release_at.setdefault(max(end, i) + 1, []).append((start, n))
    _remap_all(prog, new_of)
    written = prog.ins[1] > 0
    prog.ins[0] = np.where(written, new_of[np.where(written, prog.ins[0], 0)], 0) if prog.n_slots else 0
    arrays = TapeArrays(prog.ops.astype(np.uint8), prog.ins.astype(np.int32), prog.cv, prog.consts,
                        prog.idx.astype(np.int32), int(top))
    return arrays, new_of

"""The tape: a struct of arrays of instructions over runs of slots.

Recording appends one instruction per operation (a million-element ``x**2`` is one
instruction). Every field is a plain numpy array that grows by doubling; memoryviews
of those arrays make appending a scalar instruction cost a few attribute writes.
Slots are SSA: each is written by exactly one instruction, in increasing order.

``TapeArrays`` is the finished, immutable form that Functions replay, save and ship.
``validate`` checks every index of it once, in numpy, because the Numba sweeps do not
check bounds.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from ..errors import InvalidTapeError
from ..ops.table import FIELDS, N_OPS, OP, OPS, fields_used, uses_immediate
from .reads import evaluate, span_bounds, structural_spans

INDEX_LIMIT = 2**31 - 1
_N_FIELDS = len(FIELDS)


_serials = itertools.count(1)


_DEFAULT_FIELDS = np.array([[0], [1], [0], [0], [0], [0], [0], [0]], np.int32)


def _new_ins(capacity: int) -> np.ndarray:
    """Instruction rows holding the scalar defaults: n = 1, every other field 0."""
    ins = np.zeros((_N_FIELDS, capacity), np.int32)
    ins[1] = 1
    return ins


def _check_index(n: int, what: str) -> None:
    if n > INDEX_LIMIT:
        raise OverflowError(f"tape {what} would reach {n}, past the int32 limit 2**31-1")


class Tape:
    """A growing tape. Values of every slot are kept: recording runs on real values."""

    # the fields the C recorder (tapejit.frontend._eager) reads and writes in place
    __slots__ = ("n_ins", "n_slots", "ins_capacity", "slot_capacity", "serial", "_mv_ops", "_mv_out",
                 "_mv_a", "_mv_b", "_mv_cv", "_mv_values", "__dict__", "__weakref__")

    def __init__(self, capacity: int = 64, slot_capacity: int = 256):
        self.ops = np.zeros(capacity, np.uint8)
        self.ins = _new_ins(capacity)
        self.cv = np.zeros(capacity, np.float64)
        self.values = np.zeros(slot_capacity, np.float64)
        self.ins_capacity = capacity
        self.slot_capacity = slot_capacity
        self.consts = np.zeros(16, np.float64)
        self.idx = np.zeros(16, np.int32)
        self.n_ins = 0
        self.n_slots = 0
        # longest run an operation wrote: picks scalar or vector sweeps (inputs excluded:
        # a 100-vector of inputs to 20,000 scalar operations wants the scalar sweeps)
        self.max_run = 1
        self.n_consts = 0
        self.n_idx = 0
        # whether an instruction wrote n != 1 or a stride: reset() must restore the defaults
        self.shaped = False
        self.finished = False
        self.serial = next(_serials)    # identifies this recording; leaves remember it
        self.leaves: list = []          # eager mode: (leaf tensor, base slot, its version then)
        self.inplace_mark = 0           # tapejit.frontend.inplace's write count when the first leaf was bound
        self.guards: list = []          # trace mode: slots that must hold 1.0 on replay
        self.locations: dict = {}       # instruction -> "file:line", kept under debug_nans
        self._views()

    def _views(self) -> None:
        self._mv_ops = memoryview(self.ops)
        self._mv_ins = [memoryview(self.ins[f]) for f in range(_N_FIELDS)]
        # the fields a scalar record writes, one attribute each (the eager hot path)
        self._mv_out, self._mv_a, self._mv_b, self._mv_d = (self._mv_ins[0], self._mv_ins[2],
                                                            self._mv_ins[4], self._mv_ins[6])
        self._mv_cv = memoryview(self.cv)
        self._value_views()

    def _value_views(self) -> None:
        self._mv_values = memoryview(self.values)
        # slices of a read-only view are read-only already: a recorded tensor's value is
        # one slice, without a flags assignment (~1 us on a slow core) per tensor
        self.readonly_values = self.values.view()
        self.readonly_values.flags.writeable = False

    # -- growth -----------------------------------------------------------------------
    def _grow_ins(self) -> None:
        cap = 2 * len(self.ops)
        _check_index(cap // 2 + 1, "instruction count")
        ops = np.zeros(cap, np.uint8)
        ops[: self.n_ins] = self.ops[: self.n_ins]
        ins = _new_ins(cap)
        ins[:, : self.n_ins] = self.ins[:, : self.n_ins]
        cv = np.zeros(cap, np.float64)
        cv[: self.n_ins] = self.cv[: self.n_ins]
        self.ops, self.ins, self.cv = ops, ins, cv
        self.ins_capacity = cap
        self._views()

    def _grow_slots(self, need: int) -> None:
        _check_index(need, "slot count")
        cap = max(2 * len(self.values), need)
        values = np.zeros(cap, np.float64)
        values[: self.n_slots] = self.values[: self.n_slots]
        # tensors may hold views of the old buffer: it stays valid, nothing is written there again
        self.values = values
        self.slot_capacity = cap
        self._value_views()

    # -- appending -----------------------------------------------------------------------
    def emit(self, op: int, n: int, a: int = 0, sa: int = 0, b: int = 0, sb: int = 0,
             d: int = 0, sd: int = 0, c: float = 0.0) -> int:
        """Append one instruction writing n fresh slots; return its first output slot."""
        i = self.n_ins
        if i == self.ins_capacity:
            self._grow_ins()
        out = self.n_slots
        if out + n > self.slot_capacity:
            self._grow_slots(out + n)
        self._mv_ops[i] = op
        f = self._mv_ins
        f[0][i] = out
        f[1][i] = n
        f[2][i] = a
        f[3][i] = sa
        f[4][i] = b
        f[5][i] = sb
        f[6][i] = d
        f[7][i] = sd
        self._mv_cv[i] = c
        self.n_ins = i + 1
        self.n_slots = out + n
        if n != 1 or sa or sb or sd:
            self.shaped = True
        if n > self.max_run and op != OP.input:
            self.max_run = n
        return out

    def emit_scalar(self, op: int, a: int, b: int, d: int, c: float, value: float) -> int:
        """Append a one-slot instruction whose value the caller computed.

        Only the fields that differ from the defaults every unwritten row holds
        (n = 1, strides 0, c = 0) are written."""
        i = self.n_ins
        if i == self.ins_capacity:
            self._grow_ins()
        out = self.n_slots
        if out == self.slot_capacity:
            self._grow_slots(out + 1)
        self._mv_ops[i] = op
        self._mv_out[i] = out
        self._mv_a[i] = a
        self._mv_b[i] = b
        self._mv_d[i] = d
        self._mv_cv[i] = c
        self._mv_values[out] = value
        self.n_ins = i + 1
        self.n_slots = out + 1
        return out

    def add_consts(self, values: np.ndarray) -> int:
        values = np.ascontiguousarray(values, dtype=np.float64).ravel()
        start = self.n_consts
        need = start + values.size
        _check_index(need, "constant pool size")
        if need > len(self.consts):
            grown = np.zeros(max(2 * len(self.consts), need), np.float64)
            grown[:start] = self.consts[:start]
            self.consts = grown
        self.consts[start:need] = values
        self.n_consts = need
        return start

    def add_index(self, offsets: np.ndarray) -> int:
        offsets = np.asarray(offsets).ravel()
        # a few offsets (stacks of scalars) are checked faster as Python ints than by
        # two numpy reductions, which cost microseconds each
        if offsets.size <= 32:
            few = offsets.tolist()
            low, high = (min(few), max(few)) if few else (0, 0)
        else:
            low, high = offsets.min(), offsets.max()
        if high > INDEX_LIMIT or low < -INDEX_LIMIT:
            raise OverflowError("gather offsets past the int32 limit 2**31-1")
        start = self.n_idx
        need = start + offsets.size
        _check_index(need, "index pool size")
        if need > len(self.idx):
            grown = np.zeros(max(2 * len(self.idx), need), np.int32)
            grown[:start] = self.idx[:start]
            self.idx = grown
        self.idx[start:need] = offsets
        self.n_idx = need
        return start

    def add_slot_index(self, slots: list) -> int:
        """add_index for a list of this tape's slot numbers, which emit has already
        checked against the int32 limit (the scalar stacks' fast path)."""
        start = self.n_idx
        need = start + len(slots)
        if need > len(self.idx):
            return self.add_index(np.array(slots, np.int64))      # grows the pool
        self.idx[start:need] = slots
        self.n_idx = need
        return start

    def reset(self) -> None:
        """Forget every instruction but keep the buffers (nothing refers to them any more).

        Rows are restored to the defaults the scalar records rely on (n = 1, strides 0)
        only when some instruction changed those: a scalar-only recording leaves its
        operand fields behind, which is harmless because every record writes the
        fields its opcode reads (and the eager tape is only ever replayed by the
        sweeps, never saved or validated)."""
        if self.shaped:
            self.ins[:, :self.n_ins] = _DEFAULT_FIELDS
            self.shaped = False
        self.n_ins = self.n_slots = self.n_consts = self.n_idx = 0
        self.max_run = 1
        self.finished = False
        self.serial = next(_serials)
        self.leaves = []
        if self.guards:
            self.guards = []
        if self.locations:
            self.locations = {}

    def arrays(self) -> "TapeArrays":
        """A trimmed, independent copy of what was recorded."""
        n = self.n_ins
        return TapeArrays(
            ops=self.ops[:n].copy(),
            ins=np.ascontiguousarray(self.ins[:, :n]),
            cv=self.cv[:n].copy(),
            consts=self.consts[: self.n_consts].copy(),
            idx=self.idx[: self.n_idx].copy(),
            n_slots=self.n_slots,
        )

    def __len__(self) -> int:
        return self.n_ins


@dataclasses.dataclass(frozen=True, eq=False)
class TapeArrays:
    """A finished tape: the arrays the sweeps read."""

    ops: np.ndarray      # (n,) uint8
    ins: np.ndarray      # (8, n) int32: out, n, a, sa, b, sb, d, sd
    cv: np.ndarray       # (n,) float64 immediates
    consts: np.ndarray   # float64 constant pool
    idx: np.ndarray      # int32 index pool
    n_slots: int

    def __post_init__(self):
        # one memory layout and writability for every tape, however it was made (recorded,
        # optimized, loaded): Numba compiles a sweep once per argument type, and each
        # variant costs a minute of cold compilation
        # (dtypes are left alone: validate() names a wrong one)
        for name in ("ops", "ins", "cv", "consts", "idx"):
            array = getattr(self, name)
            if isinstance(array, np.ndarray) and not (array.flags.c_contiguous and array.flags.writeable):
                object.__setattr__(self, name, np.array(array, order="C"))

    @property
    def sweep_args(self):
        return self.ops, self.ins, self.cv, self.consts, self.idx

    def __len__(self) -> int:
        return len(self.ops)

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in (self.ops, self.ins, self.cv, self.consts, self.idx))


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _check_gathered(t: TapeArrays, mask, f: dict, op, limit, fail) -> None:
    """A gathering opcode's index-pool entries lie in the pool, and the slots they name
    (base + idx[entry]) before each instruction's output."""
    base_expr, first_expr, _, entries_expr = op.gathers
    first = evaluate(first_expr, dict(f, k=0))
    entries = evaluate(entries_expr, f)
    fail(mask & ((first < 0) | (first + entries > len(t.idx))), "index range outside the index pool")
    reading = np.flatnonzero(mask & (entries > 0))
    if not reading.size:
        return
    # smallest and largest offset of each: reduceat over [start, stop) pairs of the pool
    starts = first[reading].astype(np.int64)
    pieces = np.stack([starts, starts + entries[reading]], axis=1).reshape(-1)
    pool = np.append(t.idx, 0).astype(np.int64)     # every boundary must be < len(pool)
    base = np.broadcast_to(evaluate(base_expr, f), first.shape)[reading]
    lo = base + np.minimum.reduceat(pool, pieces)[::2]
    hi = base + np.maximum.reduceat(pool, pieces)[::2]
    bad = np.flatnonzero((lo < 0) | (hi >= limit[reading]))
    if bad.size:
        k = bad[0]
        i = reading[k]
        slot = lo[k] if lo[k] < 0 else hi[k]
        raise InvalidTapeError(f"instruction {i} ({op.name}): reads slot {slot} outside [0, {limit[i]})")


def validate(t: TapeArrays, ssa: bool = True, canonical: bool = False) -> None:
    """Check every index of a finished tape; raise InvalidTapeError naming the first problem.

    After this passes, no sweep can read or write outside its arrays: each instruction
    writes its own fresh slots and reads only slots written before it (topological order).
    With ``ssa=False`` (a forward-only tape whose slots are reused) only bounds are
    checked: every read and write inside [0, n_slots). With ``canonical=True`` (files),
    the fields an opcode does not read must be 0, so that every byte of a tape matters.
    """
    ops, ins = t.ops, t.ins
    n_ins = len(ops)
    if ops.dtype != np.uint8 or ops.ndim != 1:
        raise InvalidTapeError("opcode array must be one-dimensional uint8")
    if ins.dtype != np.int32 or ins.shape != (_N_FIELDS, n_ins):
        raise InvalidTapeError(f"instruction array must be int32 of shape ({_N_FIELDS}, {n_ins}), got {ins.dtype} {ins.shape}")
    if t.cv.shape != (n_ins,) or t.cv.dtype != np.float64:
        raise InvalidTapeError("immediate array must be float64 with one entry per instruction")
    if t.consts.dtype != np.float64 or t.consts.ndim != 1 or t.idx.dtype != np.int32 or t.idx.ndim != 1:
        raise InvalidTapeError("constant pool must be 1-D float64 and index pool 1-D int32")
    if not (0 <= t.n_slots <= INDEX_LIMIT):
        raise InvalidTapeError(f"slot count {t.n_slots} out of range")
    if n_ins == 0:
        return
    bad = np.flatnonzero(ops >= N_OPS)
    if bad.size:
        raise InvalidTapeError(f"instruction {bad[0]}: unknown opcode {ops[bad[0]]}")
    from ..ops.primitives import check_numbers
    check_numbers(ops, t.cv, ins)

    f = {name: ins[k].astype(np.int64) for k, name in enumerate(FIELDS)}
    out, n = f["out"], f["n"]
    if canonical:
        unused = np.array([[name not in fields_used(op) for name in FIELDS] for op in OPS])
        stray = unused[ops] & (ins.T != 0)
        bad_rows = np.flatnonzero(stray.any(axis=1))
        if bad_rows.size:
            i = bad_rows[0]
            field = FIELDS[int(np.flatnonzero(stray[i])[0])]
            raise InvalidTapeError(f"instruction {i} ({OPS[ops[i]].name}): field {field} is not used "
                                   "by this opcode and must be 0")
        # a run of one element reads no stride: canonically 0
        elementwise = np.array([op.elementwise for op in OPS])[ops]
        strides = ins[[3, 5, 7]]
        odd = np.flatnonzero(elementwise & (n <= 1) & (strides != 0).any(axis=0))
        if odd.size:
            i = odd[0]
            raise InvalidTapeError(f"instruction {i} ({OPS[ops[i]].name}): a stride of a one-element run "
                                   "must be 0")
        no_c = np.array([not uses_immediate(op) for op in OPS])
        stray_c = np.flatnonzero(no_c[ops] & (t.cv != 0))
        if stray_c.size:
            i = stray_c[0]
            raise InvalidTapeError(f"instruction {i} ({OPS[ops[i]].name}) does not use an immediate, "
                                   "which must be 0")

    def fail(mask, message):
        hit = np.flatnonzero(mask)
        if hit.size:
            i = hit[0]
            raise InvalidTapeError(f"instruction {i} ({OPS[ops[i]].name}): {message}")

    fail(n < 0, "negative length")
    fail(out < 0, "negative output slot")
    fail(out + n > t.n_slots, f"writes past the slot count {t.n_slots}")
    if ssa:
        # outputs are fresh and in order: each instruction starts at or after the previous end
        fail(np.r_[False, out[1:] < out[:-1] + n[:-1]], "output slots overlap an earlier instruction's")
    limit = out if ssa else np.full_like(out, t.n_slots)

    def reads(mask, lo, hi, what):
        """Read addresses [lo, hi] of the masked instructions must be earlier slots."""
        live = mask & (n > 0)
        fail(live & (lo < 0), f"{what} reads a negative slot")
        if ssa:
            fail(live & (hi >= limit), f"{what} reads a slot at or after its own output (not topological)")
        else:
            fail(live & (hi >= limit), f"{what} reads past the slot count")

    arity = np.array([op.arity if op.elementwise else -1 for op in OPS])
    elementwise_arity = arity[ops]
    for operand, (base, stride) in zip("abd", (("a", "sa"), ("b", "sb"), ("d", "sd"))):
        mask = elementwise_arity >= "abd".index(operand) + 1
        lo, hi = span_bounds(f[base], [(f[stride], n)])
        reads(mask, lo, hi, f"operand {operand}")

    # structural opcodes: what their table rows say they read (tapejit.tape.reads)
    present = np.zeros(N_OPS, bool)
    present[ops] = True
    for code in np.flatnonzero(present):
        op = OPS[code]
        m = ops == code
        for bad, message in op.checks:
            fail(m & evaluate(bad, f), message)
        if op.pool:
            first, count = evaluate(op.pool[0], f), evaluate(op.pool[1], f)
            fail(m & ((first < 0) | (first + count > len(t.consts))), "constant range outside the pool")
        for live, lo, hi, what in structural_spans(code, f):
            reads(m & live, lo, hi, what)
        if op.gathers:
            _check_gathered(t, m, f, op, limit, fail)

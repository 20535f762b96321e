"""Tile-by-tile execution of long elementwise stretches of a tape.

On a tape of million-element vector instructions every instruction streams its
operands from memory and its result back: the sweeps are memory bound. A *stretch* of
consecutive elementwise instructions of the same length, whose internal operands are
aligned (element k reads element k), can instead run tile by tile: each tile loads the
few external operands it needs into a small local tape that stays in cache, runs the
ordinary sweeps over that local tape, and writes back only what escapes the stretch
(whole sums of the stretch are accumulated across tiles). The reverse sweep recomputes
each tile's forward values in cache rather than reading them back from memory.

The local tape is an ordinary tape (same opcodes, same generated sweeps), so tiling adds
no opcode code; this module only plans stretches and moves data in and out of tiles.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numba import njit, types

from . import _sweeps as sweeps
from ..ops.table import OP, OPS
from .._runtime.threads import get_num_threads, run_workers
from ..tape.reads import ranges as read_ranges
from ..tape.tape import TapeArrays
from .._runtime.scalars import NO as _NO, ONE as _ONE, ZERO as _ZERO
from .._runtime.unlinked import unlinked

_JIT = dict(cache=True, nogil=True, error_model="numpy")
# helpers that allocate nothing and return no array run without Numba's runtime: no
# atomic reference counts on their array arguments at every call (see tapejit/passes/program.py)
_NO_RUNTIME = dict(_JIT, _nrt=False)

# the sweeps as the tile runners call them: without a copy of each sweep in each runner,
# compiled when first run
_forward_vector = unlinked(sweeps.forward_vector, types.none)
_reverse_vector = unlinked(sweeps.reverse_vector, types.none)
_forward_tangent_vector = unlinked(sweeps.forward_tangent_vector, types.none)
_reverse_tangent_vector = unlinked(sweeps.reverse_tangent_vector, types.none)

#: instructions shorter than this run as they are
MIN_LENGTH = 8192
#: elements from which a stretch that does not end the tape is tiled (4 MB per slot run).
#: The digits MLP's (bias add, tanh) between two matrix products, 115,008 elements, on
#: the Zen 4 box: 0.39 ms for its reverse tiled (the tanh recomputed), 0.085 ms plain
MIDDLE_MIN_LENGTH = 1 << 19
#: elements per tile, at least: the local values and adjoints of a stretch stay in L2
TILE = 1024
#: bytes of local values and adjoints (8 bytes each) a tile may fill; tiles grow from
#: TILE in powers of two within it (_tile_for). Each tile costs a fixed overhead (two
#: sweeps' dispatch, the loads' loops): a million-element Rosenbrock (6 rows a tile) took
#: 5.3 ms a gradient in tiles of 4,096 and 5.9 ms in tiles of 1,024 on the Zen 1 box
#: (512 KB of L2 a core); its Hessian-vector product, with four arrays, did not change.
TILE_BYTES = 512 << 10

_ELEMENTWISE = np.array([op.elementwise for op in OPS])
_ARITY = np.array([op.arity if op.elementwise else 0 for op in OPS])


@dataclass
class Stretch:
    start: int
    stop: int
    length: int
    tile: int
    full: tuple            # local tape (ops, ins, cv) for a whole tile
    tail: tuple            # local tape for the last, shorter tile (or None)
    n_local: int           # local slots
    loads: np.ndarray      # (K, 4): global base, global stride, local base, extra (see _group_loads)
    stores: np.ndarray     # (S, 2): local base, global base
    sums: np.ndarray       # (Q, 2): local slot, global slot
    parallel_reverse: bool # tiles two apart never add into the same adjoint
    sumless_full: tuple    # the local tapes less their sums, which the tile runners do
    sumless_tail: tuple    # (see _tile_forward, _tile_reverse)
    sum_rows: np.ndarray   # (Q,): local first slot of each sum's operand run


def _read_ranges(arrays: TapeArrays, i: int):
    """Inclusive slot ranges instruction i reads."""
    return read_ranges(arrays.ops, arrays.ins, arrays.idx, i)


def plan(arrays: TapeArrays, keep: np.ndarray, tile: int | None = None):
    """Segments of the tape: ("plain", start, stop) or ("tiled", Stretch).

    ``keep`` lists slots read from outside the sweeps (outputs, guards): never elided.
    ``tile``: elements per tile; by default each stretch's from its size (_tile_for)."""
    n_ins = len(arrays)
    lengths = arrays.ins[1]
    if n_ins == 0 or lengths.max(initial=0) < MIN_LENGTH:
        return [("plain", 0, n_ins)]
    # a stretch that does not end the tape runs its forward tile by tile, then again in
    # the reverse (the fused forward-reverse is for the last one only): below
    # MIDDLE_MIN_LENGTH its arrays sit in cache, and recomputing costs more than the
    # memory traffic it saves
    stretches = [s for s in _find_stretches(arrays) if s[1] == n_ins or s[2] >= MIDDLE_MIN_LENGTH]
    if not stretches:
        return [("plain", 0, n_ins)]
    reads_after = _reads_after(arrays, keep)
    segments = []
    pos = 0
    for start, stop, length in stretches:
        if start > pos:
            segments.append(("plain", pos, start))
        segments.append(("tiled", _build(arrays, start, stop, length, reads_after, tile)))
        pos = stop
    if pos < n_ins:
        segments.append(("plain", pos, n_ins))
    return segments


#: plans of recent eager tapes (see cached_plan), most recent last
_recent_plans: dict = {}
_recent_plans_lock = threading.Lock()
_RECENT_PLANS = 8


def cached_plan(arrays: TapeArrays, keep: np.ndarray) -> list:
    """plan() for a tape that may have been planned before. The eager API records a new
    tape for every backward(), usually with the same instructions as the last one (a loop
    over the same loss): planning is Python work, 0.6 of a 3.6 ms eager Rosenbrock
    gradient at n = 1e5 on the Zen 1 box. A plan depends on the instructions, the index
    pool and the kept slots only, so those bytes are the key; plans are never modified."""
    keep = np.ascontiguousarray(keep, np.int64)
    key = (arrays.n_slots, arrays.ops.tobytes(), arrays.ins.tobytes(), arrays.cv.tobytes(), arrays.idx.tobytes(),
           keep.tobytes())
    with _recent_plans_lock:
        segments = _recent_plans.pop(key, None)
    if segments is None:
        segments = plan(arrays, keep)
    with _recent_plans_lock:
        _recent_plans[key] = segments
        while len(_recent_plans) > _RECENT_PLANS:
            del _recent_plans[next(iter(_recent_plans))]
    return segments


def _find_stretches(arrays: TapeArrays):
    ops, ins = arrays.ops, arrays.ins
    found = []
    i = 0
    n_ins = len(ops)
    while i < n_ins:
        length = int(ins[1, i])
        if not (_ELEMENTWISE[ops[i]] and length >= MIN_LENGTH):
            i += 1
            continue
        start = i
        first_slot = int(ins[0, i])
        internal = {}                    # output slot of a member -> member index
        j = i
        while j < n_ins:
            op = ops[j]
            out, n, a, sa, b, sb, d, sd = (int(x) for x in ins[:, j])
            if _ELEMENTWISE[op] and n == length:
                ok = True
                for base, stride in ((a, sa), (b, sb), (d, sd))[: _ARITY[op]]:
                    lo, hi = sorted((base, base + (n - 1) * stride))
                    if hi < first_slot:
                        continue                      # external: any stride
                    if base in internal and stride == 1:
                        continue                      # aligned internal operand
                    ok = False
                if not ok:
                    break
                internal[out] = j
            elif op == OP.sum and n == 1 and sb == 1 and b == length and sa == 1 and a in internal:
                pass                                  # a whole sum of a member: accumulated per tile
            else:
                break
            j += 1
        if j - start >= 2:
            found.append((start, j, length))
            i = j
        else:
            i += 1
    return found


def _reads_after(arrays: TapeArrays, keep: np.ndarray):
    """For each instruction index i, a function telling whether a slot range is read by
    instruction >= i or kept; computed lazily as sorted interval lists per suffix."""
    ranges = [(_read_ranges(arrays, i)) for i in range(len(arrays))]
    keep = np.asarray(keep, np.int64)

    def read_after(stop: int, lo: int, hi: int) -> bool:
        if keep.size and np.any((keep >= lo) & (keep <= hi)):
            return True
        for i in range(stop, len(ranges)):
            for r_lo, r_hi in ranges[i]:
                if r_lo <= hi and lo <= r_hi:
                    return True
        return False
    return read_after


def _tile_for(rows: int) -> int:
    """Elements per tile for a stretch whose tile holds ``rows`` runs of local values
    (and as many of adjoints): the largest TILE * 2**k within TILE_BYTES, TILE at least
    and 4 * TILE at most (tiles of 8,192 and 16,384 were no faster on Rosenbrock)."""
    tile = TILE
    while tile < 4 * TILE and 2 * (2 * tile) * rows * 8 <= TILE_BYTES:
        tile *= 2
    return tile


def _build(arrays: TapeArrays, start: int, stop: int, length: int, read_after, tile: int | None) -> Stretch:
    ops, ins, cv = arrays.ops, arrays.ins, arrays.cv
    first_slot = int(ins[0, start])
    members = list(range(start, stop))
    outputs = {int(ins[0, j]) for j in members if ops[j] != OP.sum}

    def operands(j):
        _, n, a, sa, b, sb, d, sd = (int(x) for x in ins[:, j])
        return ((a, sa), (b, sb), (d, sd))[: _ARITY[ops[j]]]

    def is_internal(base):
        return base >= first_slot and base in outputs

    external = []                               # (base, stride) of each operand from outside, once
    for j in members:
        if ops[j] != OP.sum:
            for operand in operands(j):
                if not is_internal(operand[0]) and operand not in external:
                    external.append(operand)
    groups = _group_loads(external)
    if tile is None:
        tile = _tile_for(sum(1 for _, stride, _ in groups if stride != 0) + len(outputs))
    tile = min(tile, length)

    # local layout: external operands first, then member outputs, then partial sums
    n_local = 0
    load_at = {}
    loads = []
    for base, stride, extra in groups:
        loads.append((base, stride, n_local, extra))
        for other in range(extra + 1):          # the operands this load serves, by offset
            load_at[(base + other, stride)] = n_local + other
        # rows stay 64-byte aligned (a scalar takes 8 slots too): a row of tile + 1 put
        # every row after it across cache lines, and Rosenbrock's gradient ran 7% slower
        n_local += 8 if stride == 0 else -(-(tile + extra) // 8) * 8
    local_of = {}
    for j in members:
        if ops[j] != OP.sum:
            local_of[int(ins[0, j])] = n_local
            n_local += tile
    sums = []
    sum_rows = []
    for j in members:
        if ops[j] == OP.sum:
            sums.append((n_local, int(ins[0, j])))
            sum_rows.append(local_of[int(ins[2, j])])
            n_local += 1
    stores = [(local_of[out], out) for out in sorted(local_of) if read_after(stop, out, out + length - 1)]

    def local_tape(count):
        l_ops = np.array([ops[j] for j in members], np.uint8)
        l_ins = np.zeros((8, len(members)), np.int32)
        l_cv = np.array([cv[j] for j in members], np.float64)
        sum_slots = iter(slot for slot, _ in sums)
        for k, j in enumerate(members):
            if ops[j] == OP.sum:
                l_ins[:, k] = (next(sum_slots), 1, local_of[int(ins[2, j])], 1, count, 1, 0, 0)
                continue
            fields = [local_of[int(ins[0, j])], count]
            for base, stride in operands(j):
                if is_internal(base):
                    fields += [local_of[base], 1]
                else:
                    fields += [load_at[(base, stride)], 0 if stride == 0 else 1]
            l_ins[:, k] = fields + [0] * (8 - len(fields))
        return l_ops, l_ins, l_cv

    def without_sums(tape):
        keep = tape[0] != OP.sum
        return tape[0][keep], np.ascontiguousarray(tape[1][:, keep]), tape[2][keep]

    tail = length % tile
    full = local_tape(tile)
    tail_tape = local_tape(tail) if tail else None
    return Stretch(
        start=start, stop=stop, length=length, tile=tile, parallel_reverse=_phases_are_safe(loads, length, tile),
        full=full, tail=tail_tape, sumless_full=without_sums(full),
        sumless_tail=without_sums(tail_tape) if tail else None, sum_rows=np.array(sum_rows, np.int64),
        n_local=n_local,
        loads=np.array(loads, np.int64).reshape(-1, 4),
        stores=np.array(stores, np.int64).reshape(-1, 2),
        sums=np.array(sums, np.int64).reshape(-1, 2),
    )


#: a stretch's unit-stride operands whose first slots lie at most this far apart are one
#: load (_group_loads)
MAX_LOAD_SPREAD = 64


def _group_loads(operands: list) -> list:
    """(base, stride, extra) per load of a stretch's external operands (base, stride):
    unit-stride ones whose bases lie within MAX_LOAD_SPREAD of the group's first are one
    load of each tile's count + extra slots, which every operand of the group reads at its
    own offset. x[1:] and x[:-1] (Rosenbrock, any stencil) then cost one copy into the
    tile and one pass adding its adjoints out, not two of each."""
    unit = sorted(base for base, stride in operands if stride == 1)
    groups = []
    for base in unit:
        if groups and base - groups[-1][0] <= MAX_LOAD_SPREAD:
            groups[-1][2] = base - groups[-1][0]
        else:
            groups.append([base, 1, 0])
    return [tuple(g) for g in groups] + [(base, stride, 0) for base, stride in operands if stride != 1]


def _phases_are_safe(loads, length: int, tile: int) -> bool:
    """Whether tiles that are not adjacent never touch the same external slot."""
    if any(stride not in (1, -1) for _, stride, _, _ in loads):
        return False
    spans = [(min(b, b + (length - 1 + e) * st), max(b, b + (length - 1 + e) * st), b) for b, st, _, e in loads]
    for i, (lo1, hi1, b1) in enumerate(spans):
        for lo2, hi2, b2 in spans[i + 1:]:
            if lo1 <= hi2 and lo2 <= hi1 and abs(b1 - b2) >= tile:
                return False
    return all(st == 1 for _, st, _, _ in loads)


# ------------------------------------------------------------------------------------------
# execution
# ------------------------------------------------------------------------------------------
@njit(**_NO_RUNTIME)
def _load(v, lv, loads, t0, count, x, x_at):
    """The tile's external operands into the local values. A load q with x_at[q] >= 0
    reads the caller's inputs x from x[x_at[q]] on instead of their slots in v (the point
    is not copied into the workspace first); an empty x_at: every load reads v. A
    unit-stride load reads its extra slots past the tile's count too (_group_loads)."""
    direct = x_at.shape[0] > 0
    for q in range(loads.shape[0]):
        base, stride, local = loads[q, 0], loads[q, 1], loads[q, 2]
        src = v
        if direct and x_at[q] >= 0:
            src, base = x, x_at[q]
        if stride == 0:
            lv[local] = src[base]
        elif stride == 1:
            width = count + loads[q, 3]
            copy(src[base + t0: base + t0 + width], lv[local: local + width])
        else:
            for k in range(count):
                lv[local + k] = src[base + (t0 + k) * stride]


@njit(**_NO_RUNTIME)
def _scatter(g, lg, loads, t0, count, gx, x_at, z0, z1):
    """Add the tile's adjoints of external operands to the global ones; clear them. Loads
    that read the caller's inputs (x_at, as in _load) add into gx, the inputs' adjoints,
    and assign gx[z0:z1] instead (the caller's sole direct load reaching them first:
    no pass zeroing them before)."""
    direct = x_at.shape[0] > 0
    for q in range(loads.shape[0]):
        base, stride, local = loads[q, 0], loads[q, 1], loads[q, 2]
        dst_all = g
        if direct and x_at[q] >= 0:
            dst_all, base = gx, x_at[q]
        if stride == 0:
            dst_all[base] += lg[local]
            lg[local] = 0.0
        elif stride == 1:
            width = count + loads[q, 3]
            dst = dst_all[base + t0: base + t0 + width]
            src = lg[local: local + width]
            first, stop = 0, 0
            if direct and x_at[q] >= 0:
                first = min(max(z0 - base - t0, 0), width)
                stop = min(max(z1 - base - t0, first), width)
            # three loops over views from 0: a loop from a runtime start indexes with
            # negative-index fix-ups and stays scalar (5% of L1's time)
            for k in range(first):
                dst[k] += src[k]
                src[k] = 0.0
            assign_dst, assign_src = dst[first:stop], src[first:stop]
            for k in range(stop - first):
                assign_dst[k] = assign_src[k]
                assign_src[k] = 0.0
            rest_dst, rest_src = dst[stop:width], src[stop:width]
            for k in range(width - stop):
                rest_dst[k] += rest_src[k]
                rest_src[k] = 0.0
        else:
            for k in range(count):
                dst_all[base + (t0 + k) * stride] += lg[local + k]
                lg[local + k] = 0.0


@njit(**_NO_RUNTIME)
def _tile_sum(run, count):
    """run[0] + ... + run[count - 1] in eight running sums. A tile's part of a whole sum
    need not match any sweep's order (the tiles already split the sum), only the same
    in every tiled pass: the sweep's two running sums wait an add latency per two
    terms (0.75 ns a term on the Zen 1 box), eight fill two SIMD registers."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    whole = count - count % 8
    for k in range(0, whole, 8):
        s0 += run[k]
        s1 += run[k + 1]
        s2 += run[k + 2]
        s3 += run[k + 3]
        s4 += run[k + 4]
        s5 += run[k + 5]
        s6 += run[k + 6]
        s7 += run[k + 7]
    for k in range(whole, count):
        s0 += run[k]
    return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))


@njit(**_NO_RUNTIME)
def _tile_forward(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, lv, loads, sums, sum_rows, t0, count,
                  tile, x, x_at):
    """The tile's values (tapes f, t for a full and the last tile). With sum_rows, the
    tapes leave out the stretch's sums and each is added up here (_tile_sum); without,
    the tapes hold them."""
    _load(v, lv, loads, t0, count, x, x_at)
    if count == tile or t_ops.shape[0] == 0:
        _forward_vector(f_ops, f_ins, f_cv, consts, idx, lv, _ZERO, f_ops.shape[0])
    else:
        _forward_vector(t_ops, t_ins, t_cv, consts, idx, lv, _ZERO, t_ops.shape[0])
    if sum_rows.shape[0]:
        for q in range(sums.shape[0]):
            lv[sums[q, 0]] = _tile_sum(lv[sum_rows[q]: sum_rows[q] + count], count)


@njit(**_NO_RUNTIME)
def _tile_reverse(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, g, lv, lg, loads, stores, sums, sum_rows,
                  t0, count, tile, x, gx, x_at, z0, z1):
    """The tile's values, then its adjoints. With sum_rows (tapes without their sums,
    see _tile_forward), each sum's adjoint is added to its operand's run here, in one
    loop that vectorizes: the sweep's sum reverse goes through a strided index (0.7 ns
    an element against 0.2 on the Zen 1 box). No member reads a sum, so the sums' part
    of the reverse can come first."""
    _tile_forward(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, lv, loads, sums, sum_rows, t0, count, tile,
                  x, x_at)
    for q in range(stores.shape[0]):
        local, base = stores[q, 0], stores[q, 1]
        seed, escaped = lg[local: local + count], g[base + t0: base + t0 + count]
        for k in range(count):
            seed[k] = escaped[k]
            escaped[k] = 0.0
    if sum_rows.shape[0]:
        for q in range(sums.shape[0]):
            adjoint = g[sums[q, 1]]
            run = lg[sum_rows[q]: sum_rows[q] + count]
            for k in range(count):
                run[k] += adjoint
    else:
        for q in range(sums.shape[0]):
            lg[sums[q, 0]] = g[sums[q, 1]]
    if count == tile or t_ops.shape[0] == 0:
        _reverse_vector(f_ops, f_ins, f_cv, consts, idx, lv, lg, _ZERO, f_ops.shape[0])
    else:
        _reverse_vector(t_ops, t_ins, t_cv, consts, idx, lv, lg, _ZERO, t_ops.shape[0])
    _scatter(g, lg, loads, t0, count, gx, x_at, z0, z1)


@njit(**_JIT)
def stretch_forward(worker, n_workers, f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v,
                    n_local, loads, stores, sums, sum_rows, partial, length, tile):
    """One worker's contiguous block of tiles; whole sums go to partial[worker] and are
    combined in worker order by the caller, so results do not depend on scheduling."""
    n_tiles = (length + tile - 1) // tile
    per = (n_tiles + n_workers - 1) // n_workers
    lv = np.zeros(n_local)
    no_direct = np.empty(0, np.int64)
    for q in range(sums.shape[0]):
        partial[worker, q] = 0.0
    for t in range(worker * per, min(n_tiles, (worker + 1) * per)):
        t0 = t * tile
        count = min(tile, length - t0)
        _tile_forward(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, lv, loads, sums, sum_rows, t0, count,
                      tile, v, no_direct)
        for q in range(stores.shape[0]):
            local, base = stores[q, 0], stores[q, 1]
            copy(lv[local: local + count], v[base + t0: base + t0 + count])
        for q in range(sums.shape[0]):
            partial[worker, q] += lv[sums[q, 0]]


@njit(**_NO_RUNTIME)
def _phase_share(worker, n_workers, phase, n_phases, length, tile):
    """The range of m, tile t = n_phases * m + phase, that this worker runs in this phase."""
    n_tiles = (length + tile - 1) // tile
    n_phase = (n_tiles - phase + n_phases - 1) // n_phases
    per = (n_phase + n_workers - 1) // n_workers
    return worker * per, min(n_phase, (worker + 1) * per)


@njit(**_JIT)
def stretch_reverse(worker, n_workers, phase, n_phases, f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, g,
                    n_local, loads, stores, sums, sum_rows, length, tile, keep_values, tile_sums, x, gx, x_at, touch):
    """One worker's share of the tiles t with t % n_phases == phase. With two phases,
    tiles running at once are never adjacent, so their additions into the adjoints of
    shared operands (x[1:] and x[:-1]) never meet; the caller uses one phase and one
    worker when a load could reach further. With keep_values, also keep what each tile's
    recomputed forward produced: its escaping values (written to v) and its part of every
    whole sum (tile_sums[tile]). Loads marked in x_at read the inputs from x and add their
    adjoints into gx (see _load); an empty x_at, none. ``touch``: empty when gx starts
    zeroed; else (lo, hi) from first_touch, and each tile writes the part of gx that it
    is first to reach (_first_touch) before adding into it: a sole direct load assigns
    it, several zero it first."""
    lv = np.zeros(n_local)
    lg = np.zeros(n_local)
    first, stop = _phase_share(worker, n_workers, phase, n_phases, length, tile)
    n_tiles = (length + tile - 1) // tile
    sole = 0
    for q in range(x_at.shape[0]):
        sole += x_at[q] >= 0
    for m in range(first, stop):
        t = n_phases * m + phase
        t0 = t * tile
        count = min(tile, length - t0)
        z0, z1 = 0, 0
        if touch.shape[0]:
            z0, z1 = _first_touch(t, t0, count, tile, n_tiles, n_phases, touch[0], touch[1])
            if sole != 1:
                first_reached = gx[z0:z1]
                for e in range(z1 - z0):
                    first_reached[e] = 0.0
                z0, z1 = 0, 0
        _tile_reverse(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, g, lv, lg, loads, stores, sums, sum_rows,
                      t0, count, tile, x, gx, x_at, z0, z1)
        if not keep_values:
            continue
        for q in range(sums.shape[0]):          # the reverse leaves the tile's values in lv
            tile_sums[t, q] = lv[sums[q, 0]]
        for q in range(stores.shape[0]):
            local, base = stores[q, 0], stores[q, 1]
            copy(lv[local: local + count], v[base + t0: base + t0 + count])


@njit(**_NO_RUNTIME)
def _first_touch(t, t0, count, tile, n_tiles, n_phases, lo, hi):
    """The range of the inputs' adjoints that tile t is the first to add into, when its
    direct loads (all unit-stride) start at offsets lo..hi of the tile's first element:
    tile t adds into [t0 + lo, t0 + count + hi), which first_touch keeps one range that
    meets only its neighbours' ranges. One phase runs the tiles in order, so tile t
    reaches first what tile t - 1 did not; with two, the even tiles run first (and never
    meet), then each odd one reaches first what neither neighbour did."""
    end = t0 + count + hi
    if n_phases == 1:
        return (lo if t == 0 else t0 + hi), end
    if t % 2 == 0:
        return t0 + lo, end
    if t + 1 < n_tiles:
        end = min(end, t0 + tile + lo)
    return t0 + hi, end


@njit(**_NO_RUNTIME)
def copy(src, dst):
    """dst[:] = src. Callers pass views: a loop indexed from a runtime offset keeps
    Numba's negative-index fix-ups and stays scalar, one over views from 0 is SIMD."""
    for k in range(src.shape[0]):
        dst[k] = src[k]


@njit(**_NO_RUNTIME)
def move(src, dst):
    """dst[:] = src; src[:] = 0, in one pass (reading input adjoints)."""
    for k in range(src.shape[0]):
        dst[k] = src[k]
        src[k] = 0.0


_EMPTY_TAPE = (np.zeros(0, np.uint8), np.zeros((8, 0), np.int32), np.zeros(0))
_NO_SUMS = np.zeros((0, 1))
_NO_DIRECT = np.zeros(0, np.int64)


def _tapes(s: Stretch):
    return s.full + (s.tail or _EMPTY_TAPE)


def _sumless_tapes(s: Stretch):
    """The first-order tile runners' tapes: the stretch's sums left out (s.sum_rows)."""
    return s.sumless_full + (s.sumless_tail or _EMPTY_TAPE)


# Elements each worker thread needs before a stretch is split: waking the pool and the
# phase barrier cost tens of microseconds. Measured on Rosenbrock's gradient (the Zen 1
# box, 2 cores): one thread 396 us at 30,000 elements, two 466 us; at 60,000, 668 against
# 593 us; at 1e5, 1,061 against 788 us. A Hessian-vector product, with about three times
# the work per element, gains on two threads sooner. (Counted in elements, not tiles:
# tiles differ in size, see _tile_for.)
ELEMENTS_PER_WORKER = 24 * 1024
ELEMENTS_PER_WORKER_SECOND_ORDER = 16 * 1024


def _workers(s: Stretch, second_order: bool = False) -> int:
    per_worker = ELEMENTS_PER_WORKER_SECOND_ORDER if second_order else ELEMENTS_PER_WORKER
    return max(1, min(get_num_threads(), s.length // per_worker))


def forward(segments, arrays: TapeArrays, v: np.ndarray) -> None:
    step = sweeps.forward_vector
    for kind, *rest in segments:
        if kind == "plain":
            start, stop = rest
            if stop > start:
                step(*arrays.sweep_args, v, start, stop)
        else:
            s = rest[0]
            workers = _workers(s)
            partial = np.zeros((workers, len(s.sums)))
            run_workers(stretch_forward, workers, *_sumless_tapes(s), arrays.consts, arrays.idx, v, s.n_local,
                        s.loads, s.stores, s.sums, s.sum_rows, partial, s.length, s.tile)
            for q, (_, slot) in enumerate(s.sums):
                total = 0.0
                for w in range(workers):
                    total += partial[w, q]
                v[slot] = total


def reverse(segments, arrays: TapeArrays, v: np.ndarray, g: np.ndarray) -> None:
    step = sweeps.reverse_vector
    for kind, *rest in reversed(segments):
        if kind == "plain":
            start, stop = rest
            if stop > start:
                step(*arrays.sweep_args, v, g, start, stop)
        else:
            s = rest[0]
            _in_phases(stretch_reverse, _workers(s) if s.parallel_reverse else 1, *_sumless_tapes(s),
                       arrays.consts, arrays.idx, v, g, s.n_local, s.loads, s.stores, s.sums, s.sum_rows, s.length,
                       s.tile, False, _NO_SUMS,
                       v, g, _NO_DIRECT, _NO_DIRECT)
            for _, slot in s.sums:
                g[slot] = 0.0


def _in_phases(kernel, workers: int, *args) -> None:
    """kernel(worker, n_workers, phase, n_phases, *args) on the workers: two phases when
    there are several (tiles running at once are then never adjacent), else one."""
    phases = 2 if workers > 1 else 1
    for phase in range(phases):
        run_workers(lambda worker, n_workers, *rest, phase=phase: kernel(worker, n_workers, phase, phases, *rest),
                    workers, *args)


def forward_reverse(segments, arrays: TapeArrays, v: np.ndarray, g: np.ndarray,
                    direct: tuple | None = None) -> None:
    """Values and adjoints (the output's adjoint already seeded in g) when the tape ends
    with a stretch: that stretch's forward is not run on its own, because every tile of
    its reverse recomputes the tile's values anyway; the fused pass also writes the
    stretch's escaping values and whole sums. Sums are added in the order forward() uses,
    so values are identical to forward()'s. ``direct``: (x, gx, x_at, touch) when the
    stretch reads the inputs straight from x and writes their adjoints into gx (x_at from
    direct_loads, touch from first_touch), whose contents on entry do not matter:
    np.empty will do."""
    *head, (kind, s) = segments
    forward(head, arrays, v)
    n_tiles = (s.length + s.tile - 1) // s.tile
    tile_sums = np.zeros((n_tiles, max(len(s.sums), 1)))
    x, gx, x_at, touch = direct or (v, g, _NO_DIRECT, _NO_DIRECT)
    if direct is not None:
        if touch is None:
            gx[:] = 0.0
            touch = _NO_DIRECT
        else:
            # the adjoints no load reaches; the tiles zero the others as they first reach them
            gx[:touch[0]] = 0.0
            gx[s.length + touch[1]:] = 0.0
    _in_phases(stretch_reverse, _workers(s) if s.parallel_reverse else 1, *_sumless_tapes(s), arrays.consts,
               arrays.idx, v, g, s.n_local, s.loads, s.stores, s.sums, s.sum_rows, s.length, s.tile, True, tile_sums,
               x, gx, x_at, touch)
    _combine_tile_sums(tile_sums, s.sums, _workers(s), v, g)
    reverse(head, arrays, v, g)


#: head instructions that read no slot: a tape whose segments before its final stretch
#: hold only these reads its inputs in that stretch's loads alone
_READS_NOTHING = (OP.input, OP.const, OP.fill)


def direct_loads(segments, arrays: TapeArrays, inputs: slice) -> np.ndarray | None:
    """For a tape that reads its inputs (slots ``inputs``) only in its final stretch: per
    load of that stretch, the offset of its first element in the inputs, or -1 for a load
    of other slots. The stretch can then read a point straight from the caller's array
    and add the gradient straight into the result (forward_reverse's ``direct``), saving
    a copy of the point into the workspace and one of the gradient out of it: for a
    million-element Rosenbrock, 2.9 of 9.1 ms on one core. None when another segment
    reads the inputs, or a load reaches both inputs and other slots."""
    *head, (kind, s) = segments
    for seg_kind, *rest in head:
        if seg_kind != "plain" or not np.isin(arrays.ops[rest[0]:rest[1]], _READS_NOTHING).all():
            return None
    x_at = np.full(len(s.loads), -1, np.int64)
    for q, (base, stride, _, _) in enumerate(s.loads):
        lo, hi = sorted((base, base + (s.length - 1 + s.loads[q, 3]) * stride))
        if inputs.start <= lo and hi < inputs.stop:
            x_at[q] = base - inputs.start
        elif not (hi < inputs.start or lo >= inputs.stop):
            return None
    return x_at


def first_touch(s: Stretch, x_at: np.ndarray) -> np.ndarray | None:
    """(lo, hi): the least and greatest offset in the inputs at which the stretch's direct
    loads start, when the tiles can zero the inputs' adjoints themselves as they first
    reach them (stretch_reverse), instead of a pass over a zeroed array first (0.9 ms
    for a million adjoints on the Zen 1 box). That needs every direct load unit-stride
    and their offsets less than a tile apart, and no more apart than the last tile is
    long: then each tile reaches one range of adjoints, which meets only its neighbours'.
    None otherwise."""
    direct = x_at >= 0
    if not direct.any() or not (s.loads[direct, 1] == 1).all():
        return None
    lo, hi = int(x_at[direct].min()), int((x_at + s.loads[:, 3])[direct].max())
    last = s.length % s.tile or s.tile
    if hi - lo >= s.tile or hi - lo > last:
        return None
    return np.array([lo, hi], np.int64)


@njit(**_NO_RUNTIME)
def _combine_tile_sums(tile_sums, sums, forward_workers, v, g):
    """Each whole sum from its tiles' parts, added as forward() adds them: tile by tile
    within each worker's block, then the blocks in worker order."""
    n_tiles = tile_sums.shape[0]
    per = (n_tiles + forward_workers - 1) // forward_workers
    for q in range(sums.shape[0]):
        total = 0.0
        for w in range(forward_workers):
            partial = 0.0
            for t in range(w * per, min(n_tiles, (w + 1) * per)):
                partial += tile_sums[t, q]
            total += partial
        v[sums[q, 1]] = total
        g[sums[q, 1]] = 0.0


# ------------------------------------------------------------------------------------------
# the plan as arrays, for loops that run entirely in compiled code (tj.minimize)
# ------------------------------------------------------------------------------------------
@dataclass
class PackedPlan:
    """Segments and stretches as flat arrays. seg: (S, 3) kind (0 plain, 1 tiled),
    start/stop or stretch number; stretch: (T, 12) offsets and sizes into the
    concatenated local tapes (l_*), loads, stores and sums."""
    seg: np.ndarray
    stretch: np.ndarray
    l_ops: np.ndarray
    l_ins: np.ndarray
    l_cv: np.ndarray
    loads: np.ndarray
    stores: np.ndarray
    sums: np.ndarray
    n_local: int

    def args(self):
        return (self.seg, self.stretch, self.l_ops, self.l_ins, self.l_cv, self.loads, self.stores, self.sums)


def pack(segments) -> PackedPlan:
    seg, stretch = [], []
    l_ops, l_ins, l_cv, loads, stores, sums = [], [], [], [], [], []
    counts = dict(ins=0, loads=0, stores=0, sums=0)
    n_local = 1
    for kind, *rest in segments:
        if kind == "plain":
            seg.append((0, rest[0], rest[1]))
            continue
        s = rest[0]
        seg.append((1, len(stretch), 0))
        tail = s.tail or _EMPTY_TAPE
        row = (counts["ins"], len(s.full[0]), counts["ins"] + len(s.full[0]), len(tail[0]),
               counts["loads"], len(s.loads), counts["stores"], len(s.stores), counts["sums"], len(s.sums),
               s.length, s.tile)
        stretch.append(row)
        for tape in (s.full, tail):
            l_ops.append(tape[0])
            l_ins.append(tape[1])
            l_cv.append(tape[2])
            counts["ins"] += len(tape[0])
        loads.append(s.loads)
        stores.append(s.stores)
        sums.append(s.sums)
        counts["loads"] += len(s.loads)
        counts["stores"] += len(s.stores)
        counts["sums"] += len(s.sums)
        n_local = max(n_local, s.n_local)

    def cat(parts, shape, dtype):
        return np.concatenate(parts, axis=-1 if len(shape) == 2 and shape[0] == 8 else 0) if parts \
            else np.zeros(shape, dtype)
    return PackedPlan(
        seg=np.array(seg, np.int64).reshape(-1, 3), stretch=np.array(stretch, np.int64).reshape(-1, 12),
        l_ops=cat(l_ops, (0,), np.uint8).astype(np.uint8), l_ins=cat(l_ins, (8, 0), np.int32).astype(np.int32),
        l_cv=cat(l_cv, (0,), np.float64).astype(np.float64),
        loads=np.concatenate(loads).astype(np.int64) if loads else np.zeros((0, 4), np.int64),
        stores=np.concatenate(stores).astype(np.int64) if stores else np.zeros((0, 2), np.int64),
        sums=np.concatenate(sums).astype(np.int64) if sums else np.zeros((0, 2), np.int64),
        n_local=n_local)


@njit(**_JIT)
def _stretch_parts(stretch, l_ops, l_ins, l_cv, loads, stores, sums, t):
    """Stretch t of a packed plan: its full and tail local tapes (ins made contiguous),
    loads, stores, sums, length and tile."""
    f0, fn, t0, tn = stretch[t, 0], stretch[t, 1], stretch[t, 2], stretch[t, 3]
    st = stretch[t]
    return (l_ops[f0:f0 + fn], np.ascontiguousarray(l_ins[:, f0:f0 + fn]), l_cv[f0:f0 + fn],
            l_ops[t0:t0 + tn], np.ascontiguousarray(l_ins[:, t0:t0 + tn]), l_cv[t0:t0 + tn],
            loads[st[4]:st[4] + st[5]], stores[st[6]:st[6] + st[7]], sums[st[8]:st[8] + st[9]], st[10], st[11])


# the tiled path as the packed single-point runners call it: compiled only when a tape with a
# stretch runs (tj.minimize on a short tape compiled 9 s of tile code it never used)
_stretch_forward = unlinked(stretch_forward, types.none)
_stretch_reverse = unlinked(stretch_reverse, types.none)


@njit(**_JIT)
def packed_forward(ops, ins, cv, consts, idx, v, seg, stretch, l_ops, l_ins, l_cv, loads, stores, sums, n_local):
    """Values at one point, every segment in compiled code, tiles serially."""
    for q in range(seg.shape[0]):
        if seg[q, 0] == 0:
            _forward_vector(ops, ins, cv, consts, idx, v, seg[q, 1], seg[q, 2])
            continue
        partial = np.zeros((1, max(sums.shape[0], 1)))
        fo, fi, fc, to, ti, tc, ld, sr, sm, length, tile = _stretch_parts(stretch, l_ops, l_ins, l_cv, loads, stores,
                                                                          sums, seg[q, 1])
        # the packed plan keeps the sums in its tapes (no sum_rows)
        _stretch_forward(_ZERO, _ONE, fo, fi, fc, to, ti, tc, consts, idx, v, n_local, ld, sr, sm,
                         np.empty(0, np.int64), partial, length, tile)
        for k in range(sm.shape[0]):
            v[sm[k, 1]] = partial[0, k]


@njit(**_JIT)
def packed_reverse(ops, ins, cv, consts, idx, v, g, seg, stretch, l_ops, l_ins, l_cv, loads, stores, sums,
                   n_local):
    """Adjoints at one point (after packed_forward), in compiled code."""
    no_direct = np.empty(0, np.int64)
    for q in range(seg.shape[0] - 1, -1, -1):
        if seg[q, 0] == 0:
            _reverse_vector(ops, ins, cv, consts, idx, v, g, seg[q, 1], seg[q, 2])
            continue
        fo, fi, fc, to, ti, tc, ld, sr, sm, length, tile = _stretch_parts(stretch, l_ops, l_ins, l_cv, loads, stores,
                                                                          sums, seg[q, 1])
        # the packed plan keeps the sums in its reverse tapes (no sum_rows)
        _stretch_reverse(_ZERO, _ONE, _ZERO, _ONE, fo, fi, fc, to, ti, tc, consts, idx, v, g, n_local, ld, sr, sm,
                         no_direct, length, tile, _NO, np.zeros((0, 1)), v, g, no_direct, no_direct)
        for k in range(sm.shape[0]):
            g[sm[k, 1]] = 0.0


# ------------------------------------------------------------------------------------------
# second order: values with tangents forward, adjoints with their tangents in reverse
# (Hessian-vector products), tile by tile like the first-order plan
# ------------------------------------------------------------------------------------------
@njit(**_NO_RUNTIME)
def _tile_forward_tangent(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, dv, lv, ldv, loads, t0,
                          count, tile, no_direct):
    _load(v, lv, loads, t0, count, v, no_direct)
    _load(dv, ldv, loads, t0, count, dv, no_direct)
    if count == tile or t_ops.shape[0] == 0:
        _forward_tangent_vector(f_ops, f_ins, f_cv, consts, idx, lv, ldv, _ZERO, f_ops.shape[0])
    else:
        _forward_tangent_vector(t_ops, t_ins, t_cv, consts, idx, lv, ldv, _ZERO, t_ops.shape[0])


_tile_forward_tangent_call = unlinked(_tile_forward_tangent, types.none)


@njit(**_JIT)
def packed_forward_tangent(ops, ins, cv, consts, idx, v, dv, seg, stretch, l_ops, l_ins, l_cv, loads, stores,
                           sums, n_local):
    """Values and tangents at one point, tiles serially."""
    lv = np.zeros(n_local)
    ldv = np.zeros(n_local)
    no_direct = np.empty(0, np.int64)
    for q in range(seg.shape[0]):
        if seg[q, 0] == 0:
            _forward_tangent_vector(ops, ins, cv, consts, idx, v, dv, seg[q, 1], seg[q, 2])
            continue
        fo, fi, fc, to, ti, tc, ld, sr, sm, length, tile = _stretch_parts(stretch, l_ops, l_ins, l_cv, loads, stores,
                                                                          sums, seg[q, 1])
        for k in range(sm.shape[0]):
            v[sm[k, 1]] = 0.0
            dv[sm[k, 1]] = 0.0
        for t0 in range(0, length, tile):
            count = min(tile, length - t0)
            _tile_forward_tangent_call(fo, fi, fc, to, ti, tc, consts, idx, v, dv, lv, ldv, ld, t0, count, tile,
                                       no_direct)
            for k in range(sr.shape[0]):
                local, base = sr[k, 0], sr[k, 1]
                for e in range(count):
                    v[base + t0 + e] = lv[local + e]
                    dv[base + t0 + e] = ldv[local + e]
            for k in range(sm.shape[0]):
                v[sm[k, 1]] += lv[sm[k, 0]]
                dv[sm[k, 1]] += ldv[sm[k, 0]]


@njit(**_NO_RUNTIME)
def _tile_reverse_tangent(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, dv, g, dg, lv, ldv, lg, ldg,
                          loads, stores, sums, t0, count, tile, no_direct):
    """One tile's adjoints and their tangents: recompute its values and tangents, run its
    reverse in cache, add into the external operands' adjoints."""
    _tile_forward_tangent(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, dv, lv, ldv, loads, t0, count, tile,
                          no_direct)
    for q in range(stores.shape[0]):
        local, base = stores[q, 0], stores[q, 1]
        for e in range(count):
            lg[local + e] = g[base + t0 + e]
            ldg[local + e] = dg[base + t0 + e]
            g[base + t0 + e] = 0.0
            dg[base + t0 + e] = 0.0
    for q in range(sums.shape[0]):
        lg[sums[q, 0]] = g[sums[q, 1]]
        ldg[sums[q, 0]] = dg[sums[q, 1]]
    if count == tile or t_ops.shape[0] == 0:
        _reverse_tangent_vector(f_ops, f_ins, f_cv, consts, idx, lv, ldv, lg, ldg, _ZERO, f_ops.shape[0])
    else:
        _reverse_tangent_vector(t_ops, t_ins, t_cv, consts, idx, lv, ldv, lg, ldg, _ZERO, t_ops.shape[0])
    _scatter(g, lg, loads, t0, count, g, no_direct, _ZERO, _ZERO)
    _scatter(dg, ldg, loads, t0, count, dg, no_direct, _ZERO, _ZERO)


@njit(**_JIT)
def packed_reverse_tangent(ops, ins, cv, consts, idx, v, dv, g, dg, seg, stretch, l_ops, l_ins, l_cv, loads,
                           stores, sums, n_local):
    """Adjoints and their tangents at one point (after packed_forward_tangent), tiles
    serially."""
    for q in range(seg.shape[0] - 1, -1, -1):
        if seg[q, 0] == 0:
            _reverse_tangent_vector(ops, ins, cv, consts, idx, v, dv, g, dg, seg[q, 1], seg[q, 2])
            continue
        fo, fi, fc, to, ti, tc, ld, sr, sm, length, tile = _stretch_parts(stretch, l_ops, l_ins, l_cv, loads, stores,
                                                                          sums, seg[q, 1])
        _stretch_reverse_tangent(_ZERO, _ONE, _ZERO, _ONE, fo, fi, fc, to, ti, tc, consts, idx, v, dv, g, dg,
                                 n_local, ld, sr, sm, length, tile)
        for k in range(sm.shape[0]):
            g[sm[k, 1]] = 0.0
            dg[sm[k, 1]] = 0.0


@njit(**_JIT)
def stretch_reverse_tangent(worker, n_workers, phase, n_phases, f_ops, f_ins, f_cv, t_ops, t_ins, t_cv,
                            consts, idx, v, dv, g, dg, n_local, loads, stores, sums, length, tile):
    """One worker's share of a stretch's second-order reverse, tiles as in stretch_reverse
    (two phases keep tiles running at once from adding into the same adjoints)."""
    lv, ldv = np.zeros(n_local), np.zeros(n_local)
    lg, ldg = np.zeros(n_local), np.zeros(n_local)
    no_direct = np.empty(0, np.int64)      # second-order sweeps read the point from v
    first, stop = _phase_share(worker, n_workers, phase, n_phases, length, tile)
    for m in range(first, stop):
        t0 = (n_phases * m + phase) * tile
        _tile_reverse_tangent(f_ops, f_ins, f_cv, t_ops, t_ins, t_cv, consts, idx, v, dv, g, dg, lv, ldv, lg, ldg,
                              loads, stores, sums, t0, min(tile, length - t0), tile, no_direct)


_stretch_reverse_tangent = unlinked(stretch_reverse_tangent, types.none)


def reverse_tangent(segments, arrays: TapeArrays, v, dv, g, dg) -> None:
    """Adjoints and their tangents (after a forward tangent sweep), stretches on the
    worker threads where their tiles allow it."""
    for kind, *rest in reversed(segments):
        if kind == "plain":
            start, stop = rest
            if stop > start:
                sweeps.reverse_tangent_vector(*arrays.sweep_args, v, dv, g, dg, start, stop)
            continue
        s = rest[0]
        _in_phases(stretch_reverse_tangent, _workers(s, second_order=True) if s.parallel_reverse else 1,
                   *_tapes(s), arrays.consts, arrays.idx, v, dv, g, dg, s.n_local, s.loads, s.stores, s.sums,
                   s.length, s.tile)
        for _, slot in s.sums:
            g[slot] = 0.0
            dg[slot] = 0.0

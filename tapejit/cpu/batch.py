"""The batch engine: one tape replayed at many points on all cores.

Values are laid out ``[slot][point]`` over a chunk of points, so every instruction runs
a SIMD loop over the chunk (tape outer, points inner). Each worker owns one workspace
for all its chunks, and the reverse sweep zeroes adjoint rows as it consumes them, so a
workspace is reused without clearing it. Memory is the workspaces plus the results,
never batch size times tape length.
"""
from __future__ import annotations

import math
import weakref

import numpy as np
from numba import njit, types

from . import _sweeps as sweeps
from . import _transpose
from .._runtime import recycle as _recycle
from ..analysis.adjoint_plan import plan_and_dirty
from .._runtime.modes import MODE_GRAD, MODE_HVP, MODE_JVP, MODE_VALUES, MODE_VJP
from .._runtime.threads import get_num_threads, run_workers
from .._runtime.twins import HOT_CALLS
from .._runtime.unlinked import unlinked
from .._runtime.scalars import NO as _NO, YES as _YES, ZERO as _ZERO

_JIT = dict(cache=True, nogil=True, error_model="numpy")
# helpers that allocate nothing and return no array run without Numba's runtime: no
# atomic reference counts on their array arguments at every call (see tapejit/passes/program.py)
_NO_RUNTIME = dict(_JIT, _nrt=False)
# the drivers' helpers of a few lines are inlined (inline="always"): a jitted function of
# its own costs ~60-100 ms of a first batch call's compilation (2-core Zen 4 box)

# the chunk sweeps as the drivers call them: without a copy of each sweep in each driver
forward_chunk = unlinked(sweeps.forward_chunk, types.none)
reverse_chunk = unlinked(sweeps.reverse_chunk, types.none)
forward_tangent_chunk = unlinked(sweeps.forward_tangent_chunk, types.none)
reverse_tangent_chunk = unlinked(sweeps.reverse_tangent_chunk, types.none)
# the block moves, compiled when a batch first takes them (see _transpose)
_points_to_rows_blocked = unlinked(_transpose.points_to_rows, types.none)
_rows_to_points_blocked = unlinked(_transpose.rows_to_points, types.none)
_move_plain = unlinked(_transpose.move_plain, types.none)
#: values moved between the caller's layout and the workspace (inputs, seeds, results)
#: from which a batch takes the block moves, which compile in ~1 s once: a batch this
#: large or a process that has run HOT_CALLS batches (a loop over batches) pays that for
#: its later calls. At 2^20 the plain loops cost J1's cached sparse Jacobian (5 x 1e5
#: values each way) 13% and B2 (20,000 points) 8% on the 2-core Zen 4 box; the README's
#: first batch_grad (1,000 x 10 points, 21,000 values) stays below 2^16 and compiles none
BLOCKED_MOVES = 1 << 16
_batch_calls = [0]

#: workspace budget per worker (values and adjoints), in bytes: about one core's L2 cache.
#: Measured on a 2-core dev box (1 MB L2 per core): B1 (then 74 slots) 13.9 ms at 512
#: points per chunk against 16.1 ms at 1024, B2 (221 slots) 4.25 ms at 256 against 4.8 ms
#: at 1024. On a later box with 512 KB of L2 per core, B1 (47 slots since the fused
#: opcodes) ran within 5% at 256, 512 and 1024 points, and B2 at 64, 128 and 256.
WORKSPACE_BYTES = 1 << 20
#: below this many slot-points (a slot or a constant-block entry, at one point, is about a
#: nanosecond of work) a batch runs on the calling thread: a pool hand-off costs tens of us
SERIAL_WORK = 200_000

#: fewest points per chunk: each instruction costs ~20 ns of dispatch per chunk, which a
#: scalar tape (one slot per instruction) only hides over this many points (a 2,500-slot
#: scalar tape: 175 ms at 16 points, 159 ms at 64, 155 ms at 128)
MIN_CHUNK = 64
#: most points per chunk. An instruction's operand runs of 128 points stay in L1 from one
#: instruction to the next, where the budget alone gave B1 1,024 points a chunk. Round
#: robins on the 2-core box (32 KB L1, 1 MB L2 per core): B1 1.12x faster at 128 points
#: than at 1,024 (1.05x at 256, 0.97x at 64), B2 1.12x faster at 128 than at 256.
MAX_CHUNK = 128
#: the most one workspace array (values, adjoints, ...) may take, whatever the tape
WORKSPACE_LIMIT = 64 << 20


def chunk_size(n_slots: int, batch: int) -> int:
    """Points per chunk: the largest power of two whose workspace fits the budget,
    between MIN_CHUNK and MAX_CHUNK, and no more than the batch needs."""
    fit = WORKSPACE_BYTES // (16 * max(n_slots, 1))
    chunk = MIN_CHUNK
    while chunk * 2 <= min(fit, MAX_CHUNK):
        chunk *= 2
    # huge tapes: keep each workspace array under WORKSPACE_LIMIT (down to 8 points)
    while chunk > 8 and 8 * chunk * n_slots > WORKSPACE_LIMIT:
        chunk //= 2
    return max(1, min(chunk, batch))


@njit(inline="always", **_NO_RUNTIME)
def _fill_rows(v, rows, values):
    """Parameters: rows that no sweep writes, set once per workspace."""
    for j in range(rows.shape[0]):
        v[rows[j]] = values[j]


@njit(inline="always", **_NO_RUNTIME)
def points_to_rows(v, rows, X, p0, P, blocked):
    if blocked:
        _points_to_rows_blocked(v, rows, X, p0, P)
    else:
        _move_plain(v, rows, X, p0, P, _YES, _NO)


@njit(inline="always", **_NO_RUNTIME)
def rows_to_points(out, v, rows, p0, P, clear, blocked):
    if blocked:
        _rows_to_points_blocked(out, v, rows, p0, P, clear)
    else:
        _move_plain(v, rows, out, p0, P, _NO, clear)


@njit(inline="always", **_NO_RUNTIME)
def _store_chunk(v, out_pos, guard_pos, vals, valid, p0, P, blocked):
    rows_to_points(vals, v, out_pos, p0, P, _NO, blocked)
    # valid starts all True (run); only a failed guard writes it
    for q in range(guard_pos.shape[0]):
        row = v[guard_pos[q]]
        for p in range(P):
            if row[p] != 1.0:
                valid[p0 + p] = False


@njit(**_JIT)
def _run_chunks(worker, n_workers, ops, ins, cv, consts, idx, plan, n_slots, in_pos, param_pos,
                param_vals, out_pos, guard_pos, X, seeds, vals, grads, valid, chunk, mode, clear_rows, blocked):
    """The worker's block of chunks of the batch.

    mode 0: values; 1: values and the gradient of out_pos[0]; 2: values and u^T J with
    the rows of ``seeds`` as u (vector-Jacobian products). Sweeps run whole rows of
    ``chunk`` points; a last, partial chunk computes on copies of its last point past its P."""
    B = X.shape[0]
    n_ins = ops.shape[0]
    n_chunks = (B + chunk - 1) // chunk
    v = np.empty((n_slots, chunk))
    tmp = np.empty((2, chunk))
    g = np.zeros((n_slots if mode > 0 else 1, chunk))
    _fill_rows(v, param_pos, param_vals)
    # a contiguous block of chunks per worker: each faults in its own pages of the results
    for ci in range(worker * n_chunks // n_workers, (worker + 1) * n_chunks // n_workers):
        p0 = ci * chunk
        P = min(chunk, B - p0)
        points_to_rows(v, in_pos, X, p0, P, blocked)
        forward_chunk(ops, ins, cv, consts, idx, v, tmp, chunk, _ZERO, n_ins)
        _store_chunk(v, out_pos, guard_pos, vals, valid, p0, P, blocked)
        if mode == MODE_VALUES:
            continue
        # the seeds assign their rows (the plan counts on it); several outputs may share one
        if mode == MODE_GRAD:
            g[out_pos[0]] = 1.0
        else:
            Sb = seeds[p0:p0 + P]
            for m in range(out_pos.shape[0]):
                g[out_pos[m]] = 0.0
            for m in range(out_pos.shape[0]):
                row = g[out_pos[m]]
                for p in range(P):
                    row[p] += Sb[p, m]
        reverse_chunk(ops, ins, cv, consts, idx, plan, v, g, tmp, chunk, _ZERO, n_ins)
        # the sweep does not consume the inputs' and parameters' rows: read them, then
        # zero the parameters' and the inputs' dirty rows (see adjoint_plan)
        rows_to_points(grads, g, in_pos, p0, P, _NO, blocked)
        for j in range(clear_rows.shape[0]):
            g[clear_rows[j]] = 0.0
        for j in range(param_pos.shape[0]):
            g[param_pos[j]] = 0.0


@njit(**_JIT)
def _run_chunks_tangent(worker, n_workers, ops, ins, cv, consts, idx, plan, n_slots, in_pos, param_pos,
                        param_vals, out_pos, guard_pos, X, seeds, vals, grads, valid, chunk, mode, clear_rows, blocked):
    """Values and J v (forward mode), with the rows of ``seeds`` as tangents v."""
    B = X.shape[0]
    n_ins = ops.shape[0]
    n_chunks = (B + chunk - 1) // chunk
    v = np.empty((n_slots, chunk))
    dv = np.zeros((n_slots, chunk))
    tmp = np.empty((2, chunk))
    _fill_rows(v, param_pos, param_vals)
    # a contiguous block of chunks per worker: each faults in its own pages of the results
    for ci in range(worker * n_chunks // n_workers, (worker + 1) * n_chunks // n_workers):
        p0 = ci * chunk
        P = min(chunk, B - p0)
        points_to_rows(v, in_pos, X, p0, P, blocked)
        points_to_rows(dv, in_pos, seeds, p0, P, blocked)
        forward_tangent_chunk(ops, ins, cv, consts, idx, v, dv, tmp, chunk, _ZERO, n_ins)
        _store_chunk(v, out_pos, guard_pos, vals, valid, p0, P, blocked)
        rows_to_points(grads, dv, out_pos, p0, P, _NO, blocked)


@njit(**_JIT)
def _run_chunks_hvp(worker, n_workers, ops, ins, cv, consts, idx, plan, n_slots, in_pos, param_pos,
                    param_vals, out_pos, guard_pos, X, seeds, vals, grads, valid, chunk, mode, clear_rows, blocked):
    """Values and Hessian-vector products H v (forward over reverse), v the rows of seeds."""
    B = X.shape[0]
    n_ins = ops.shape[0]
    n_chunks = (B + chunk - 1) // chunk
    v = np.empty((n_slots, chunk))
    dv = np.zeros((n_slots, chunk))
    g = np.zeros((n_slots, chunk))
    dg = np.zeros((n_slots, chunk))
    tmp = np.empty((2, chunk))
    _fill_rows(v, param_pos, param_vals)
    # a contiguous block of chunks per worker: each faults in its own pages of the results
    for ci in range(worker * n_chunks // n_workers, (worker + 1) * n_chunks // n_workers):
        p0 = ci * chunk
        P = min(chunk, B - p0)
        points_to_rows(v, in_pos, X, p0, P, blocked)
        points_to_rows(dv, in_pos, seeds, p0, P, blocked)
        forward_tangent_chunk(ops, ins, cv, consts, idx, v, dv, tmp, chunk, _ZERO, n_ins)
        _store_chunk(v, out_pos, guard_pos, vals, valid, p0, P, blocked)
        g[out_pos[0]] += 1.0
        reverse_tangent_chunk(ops, ins, cv, consts, idx, v, dv, g, dg, tmp, chunk, _ZERO, n_ins)
        rows_to_points(grads, dg, in_pos, p0, P, _YES, blocked)
        for j in range(in_pos.shape[0]):
            g[in_pos[j]] = 0.0
        for j in range(param_pos.shape[0]):
            g[param_pos[j]] = 0.0
            dg[param_pos[j]] = 0.0


_DRIVERS = {MODE_JVP: _run_chunks_tangent, MODE_HVP: _run_chunks_hvp}


_plans: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _plan_and_dirty(arrays, out_pos) -> tuple[np.ndarray, np.ndarray]:
    per_tape = _plans.setdefault(arrays, {})
    key = np.asarray(out_pos, np.int64).tobytes()
    if key not in per_tape:
        per_tape[key] = plan_and_dirty(arrays, np.asarray(out_pos))
    return per_tape[key]


def _plan_for(arrays, out_pos) -> np.ndarray:
    """The reverse sweep's adjoint plan for these seeds, computed once per tape."""
    return _plan_and_dirty(arrays, out_pos)[0]


def _rows_to_clear(arrays, out_pos, in_pos) -> np.ndarray:
    """The input rows the chunk reverse accumulates into before assigning: zeroed after
    each chunk's gradients are read out (see adjoint_plan)."""
    return in_pos[_plan_and_dirty(arrays, out_pos)[1][in_pos]]


def _results(B, n_out, width, derivatives, out):
    """(values, derivatives, valid) of a batch: the caller's buffers or recycled memory."""
    vals = _recycle.empty((B, n_out)) if out[0] is None else out[0]
    grads = (_recycle.empty((B, width)) if derivatives else np.empty((0, 0))) if out[1] is None else out[1]
    return vals, grads, np.ones(B, np.bool_)


def _worker_count(arrays, B, parts, threads=None) -> int:
    # per point: every slot is written once; a constant block (affine) is a multiply-add each
    if B * (arrays.n_slots + len(arrays.consts)) < SERIAL_WORK:
        return 1
    return max(1, min(threads or get_num_threads(), parts))


def run_compiled(kernel, arrays, X, param_vals, mode, out=(None, None)):
    """Values (mode 0) or values and gradients (mode 1) of a Function.compile() kernel at
    the rows of X, split over the workers by points; returns what ``run`` returns."""
    B = X.shape[0]
    vals, grads, valid = _results(B, kernel.n_outputs, kernel.n_inputs, mode == MODE_GRAD, out)
    if B:
        kernel.run(X, param_vals, vals, grads, valid, mode == MODE_GRAD, _worker_count(arrays, B, B))
    return vals, grads, valid


def run(arrays, in_pos, param_pos, param_vals, out_pos, guard_pos, X, mode, seeds=None,
        chunk=None, threads=None, out=(None, None)):
    """Replay ``arrays`` at the rows of X (B, n_in). Returns (values (B, n_out),
    derivatives (B, n_in), or (B, n_out) for JVP, and valid (B,)); ``out`` may give
    the two result arrays to write (see check_out)."""
    B = X.shape[0]
    n_out = len(out_pos)
    width = n_out if mode == MODE_JVP else len(in_pos)
    vals, grads, valid = _results(B, n_out, width, mode != MODE_VALUES, out)
    if B == 0:
        return vals, grads, valid
    if seeds is None:
        seeds = np.zeros((0, 0))
    chunk = chunk or chunk_size(arrays.n_slots, B)
    workers = _worker_count(arrays, B, -(-B // chunk), threads)
    seeded = out_pos[:1] if mode == MODE_GRAD else out_pos
    reverse = mode in (MODE_GRAD, MODE_VJP)
    plan = _plan_for(arrays, seeded) if reverse else np.zeros(0, np.uint8)
    clear_rows = _rows_to_clear(arrays, seeded, in_pos) if reverse else in_pos
    _batch_calls[0] += 1
    moved = B * (len(in_pos) + n_out + (width if mode != MODE_VALUES else 0) + (seeds.shape[1] if seeds.size else 0))
    blocked = moved >= BLOCKED_MOVES or _batch_calls[0] > HOT_CALLS
    args = (arrays.ops, arrays.ins, arrays.cv, arrays.consts, arrays.idx, plan, arrays.n_slots, in_pos,
            param_pos, param_vals, out_pos, guard_pos, X, seeds, vals, grads, valid, chunk, mode, clear_rows,
            blocked)
    run_workers(_DRIVERS.get(mode, _run_chunks), workers, *args)
    return vals, grads, valid


def check_out(array, shape: tuple, name: str, X) -> np.ndarray:
    """A caller's result buffer as the engine writes it: float64, C-contiguous, writeable,
    of the result's shape (or one that views as it), not overlapping the inputs. Reusing
    buffers saves a large batch the page faults of fresh memory (a few ms per 100 MB)."""
    from ..errors import ShapeError, TapejitError
    if not isinstance(array, np.ndarray) or array.dtype != np.float64:
        raise TapejitError(f"{name} must be a float64 numpy array")
    if not (array.flags.c_contiguous and array.flags.writeable):
        raise TapejitError(f"{name} must be C-contiguous and writeable")
    if array.size != math.prod(shape) or array.shape[:1] != shape[:1]:
        raise ShapeError(f"{name} has shape {array.shape}; the results have {shape[0]} rows of {shape[1]}")
    if np.may_share_memory(array, X):
        raise TapejitError(f"{name} overlaps the input points")
    return array.reshape(shape)


"""One point's value and gradient in a single call into compiled code.

``Function.value_and_grad`` used to take about a dozen Python-level steps a call (copy the
inputs in, the forward sweep, the guard check, the seed, the reverse sweep, copy the
gradient out and zero it): about 10 us of interpreter time for a small function, which
a user calling it from an optimizer loop pays every iteration. Here the whole round trip
is one Numba call. The sweeps are called through ``unlinked`` pointers, so this module
compiles in seconds instead of compiling the four interpreters again.

Every index used below was checked when the Function was made (``_check_layout``: inputs,
parameters, output and guards inside the tape's slots) or on the way in (the inputs'
shapes), so the unchecked loops stay in bounds.
"""
from __future__ import annotations

from numba import njit, types

from . import _sweeps as sweeps
from .._runtime.scalars import ZERO
from .._runtime.unlinked import unlinked

# _nrt=False: nothing here allocates, so array arguments go without reference counts
# (atomic instructions; see tapejit/passes/program.py)
_JIT = dict(cache=True, nogil=True, error_model="numpy", _nrt=False)
# the loops of a few lines are inlined into the entry points: each jitted function costs
# ~60-100 ms of a first call's compilation on the 2-core Zen 4 box, whatever its size

forward_vector = unlinked(sweeps.forward_vector, types.none)
reverse_vector = unlinked(sweeps.reverse_vector, types.none)
forward_tangent = unlinked(sweeps.forward_tangent_vector, types.none)
reverse_tangent = unlinked(sweeps.reverse_tangent_vector, types.none)


@njit(inline="always", **_JIT)
def _place(v, x, in_pos, p, param_pos):
    """The point x and the parameters p into their slots of v."""
    for k in range(in_pos.shape[0]):
        v[in_pos[k]] = x[k]
    for k in range(param_pos.shape[0]):
        v[param_pos[k]] = p[k]


@njit(inline="always", **_JIT)
def _guards_hold(v, guards):
    for k in range(guards.shape[0]):
        if v[guards[k]] != 1.0:
            return False
    return True


@njit(**_JIT)
def value(ops, ins, cv, consts, idx, v, x, in_pos, p, param_pos, guards):
    """Values at x (and parameters p); whether every guard still holds."""
    _place(v, x, in_pos, p, param_pos)
    forward_vector(ops, ins, cv, consts, idx, v, ZERO, ops.shape[0])
    return _guards_hold(v, guards)


@njit(inline="always", **_JIT)
def _clear(g, in_pos, param_pos):
    """The inputs' and parameters' adjoints back to zero: the reverse sweeps consume
    every other slot's."""
    for k in range(in_pos.shape[0]):
        g[in_pos[k]] = 0.0
    for k in range(param_pos.shape[0]):
        g[param_pos[k]] = 0.0


@njit(inline="always", **_JIT)
def _take(g, in_pos, param_pos, out):
    """The inputs' adjoints into out, then _clear."""
    for k in range(in_pos.shape[0]):
        out[k] = g[in_pos[k]]
    _clear(g, in_pos, param_pos)


@njit(**_JIT)
def value_and_grad(ops, ins, cv, consts, idx, v, g, x, in_pos, p, param_pos, guards, out_pos, seed, grad):
    """Forward and reverse at x, the outputs' adjoints seeded with seed (u^T J; [1.0] for
    a gradient); the inputs' adjoints into grad. Returns False, with no reverse run, when
    a guard flipped. The workspace's adjoints are left all zero."""
    if not value(ops, ins, cv, consts, idx, v, x, in_pos, p, param_pos, guards):
        return False
    for k in range(out_pos.shape[0]):
        g[out_pos[k]] += seed[k]
    reverse_vector(ops, ins, cv, consts, idx, v, g, ZERO, ops.shape[0])
    _take(g, in_pos, param_pos, grad)
    return True


@njit(**_JIT)
def tangent(ops, ins, cv, consts, idx, v, dv, x, t, in_pos, p, param_pos, guards):
    """Values and tangents at x in the direction t (parameters held); whether every
    guard still holds."""
    _place(v, x, in_pos, p, param_pos)
    for k in range(in_pos.shape[0]):
        dv[in_pos[k]] = t[k]
    for k in range(param_pos.shape[0]):
        dv[param_pos[k]] = 0.0
    forward_tangent(ops, ins, cv, consts, idx, v, dv, ZERO, ops.shape[0])
    return _guards_hold(v, guards)


@njit(**_JIT)
def hvp(ops, ins, cv, consts, idx, v, dv, g, dg, x, t, in_pos, p, param_pos, guards, out_pos, out):
    """H t at x (forward over reverse) into out; False, with no reverse run, when a guard
    flipped. Both adjoint workspaces are left all zero."""
    if not tangent(ops, ins, cv, consts, idx, v, dv, x, t, in_pos, p, param_pos, guards):
        return False
    g[out_pos[0]] += 1.0
    reverse_tangent(ops, ins, cv, consts, idx, v, dv, g, dg, ZERO, ops.shape[0])
    _take(dg, in_pos, param_pos, out)
    _clear(g, in_pos, param_pos)
    return True

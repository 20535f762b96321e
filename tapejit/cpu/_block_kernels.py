"""The adapters between the sweeps and a block primitive's kernels (tapejit.ops.primitives).

A ``block`` instruction calls, through ``_primitive_calls.BLOCK_TABLE``, one adapter per
role (value, vjp, jvp, hvp) compiled when the primitive registers. An adapter rebuilds the
workspace arrays from the sweep kernel's context, and for each point of the sweep (one
for the single-point sweeps, the chunk's width for the batch's) copies the point's
operands out of their slots, calls the user's kernel on them and writes its result back:
values into ``v``, adjoints added into ``g``, tangents into ``dv``. The user's kernel gets
fresh contiguous float64 vectors it may modify, never a view of the workspace.

The points past a partial chunk's last one repeat it (tapejit.cpu.batch): a kernel runs
there too, on inputs it accepts, and its result is never read.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._kernels import P_WORD, ROLES as CONTEXT_ROLES, float64_2d_at
from ._primitive_calls import BLOCK_ARGS

#: the first context word of each workspace array (address, rows, columns)
_V, _DV, _G, _DG = (3 * CONTEXT_ROLES.index(role) for role in ("v", "dv", "g", "dg"))
SIGNATURE = types.none(*BLOCK_ARGS)
#: IEEE division (as the sweeps: padding points give inf or nan, never an exception)
_JIT = dict(nogil=True, error_model="numpy")


def as_vector(r):
    """A user kernel's result as a 1-d array (a scalar: one element)."""


@overload(as_vector)
def _as_vector(r):
    if isinstance(r, types.Array) and r.ndim == 1:
        return lambda r: r
    if isinstance(r, types.Array):
        return lambda r: np.ascontiguousarray(r).reshape(-1)
    if isinstance(r, (types.Float, types.Integer)):
        return lambda r: np.full(1, r, np.float64)
    raise TypeError(f"a block primitive's kernel must return an array, not {r}")


def cotangent_a(r):
    """The first operand's cotangent in a vjp rule's result: the array itself for a
    primitive of one operand, else the tuple's first item."""


@overload(cotangent_a)
def _cotangent_a(r):
    if isinstance(r, types.BaseTuple):
        return lambda r: as_vector(r[0])
    return lambda r: as_vector(r)


def cotangent_b(r):
    """The second operand's cotangent: the tuple's second item (one array for two
    operands would give both the same cotangent, silently: a typing error instead)."""


@overload(cotangent_b)
def _cotangent_b(r):
    if isinstance(r, types.BaseTuple) and len(r) == 2:
        return lambda r: as_vector(r[1])
    raise TypeError("a vjp rule of a block primitive of two operands returns a tuple (g_a, g_b)")


@njit(inline="always")
def workspace(ctx, word):
    """The [slot, point] array at context word ``word`` (a single-point sweep's vector
    is one column)."""
    return float64_2d_at(ctx[word], ctx[word + 1], ctx[word + 2])


@njit(inline="always")
def width(ctx):
    """Points the sweep runs: the chunk's width, or 1 (single-point sweeps pass 0)."""
    return max(ctx[P_WORD], 1)


@njit(inline="always")
def column(x, w, first, count, p):
    for j in range(count):
        x[j] = w[first + j, p]


def _of_two(fn: Callable, binary: bool, kind: str):
    """fn called with both operands' arguments: a primitive of one operand ignores the
    second's (empty: sb = 0) and, for a vjp rule, gives it the empty cotangent. One adapter
    per role then serves both arities."""
    if binary:
        return fn
    if kind == "value":
        def wrapped(xa, xb):
            return fn(xa)
    elif kind == "vjp":
        def wrapped(res, g, xa, xb):
            return cotangent_a(fn(res, g, xa)), xb
    else:
        def wrapped(res, ta, tb, xa, xb):
            return fn(res, ta, xa)
    return njit(inline="always", **_JIT)(wrapped)


def value_adapter(user: Callable, binary: bool, name: str):
    """v[o:o+n] = user(v[a:a+sa], v[b:b+sb]) at every point."""
    wrong = (f"block primitive {name!r}: its value kernel returned a result of another length "
             "than when it was recorded")
    call = _of_two(user, binary, "value")

    def adapter(ctx, number, o, n, a, sa, b, sb):
        v = workspace(ctx, _V)
        xa, xb = np.empty(sa), np.empty(sb)
        for p in range(width(ctx)):
            column(xa, v, a, sa, p)
            column(xb, v, b, sb, p)
            r = as_vector(call(xa, xb))
            if r.shape[0] != n:
                raise ValueError(wrong)
            for j in range(n):
                v[o + j, p] = r[j]
    return njit(SIGNATURE, **_JIT)(adapter)


def vjp_adapter(rule: Callable, binary: bool, name: str):
    """g[a:a+sa] (and g[b:b+sb]) += the rule's cotangents, given the result and its
    adjoint. A point whose result adjoint is zero calls nothing (no gradient flows there:
    an abandoned eager recording)."""
    wrong = f"block primitive {name!r}: its vjp rule returned a cotangent of another length than its operand"
    call = _of_two(rule, binary, "vjp")

    def adapter(ctx, number, o, n, a, sa, b, sb):
        v, g = workspace(ctx, _V), workspace(ctx, _G)
        xa, xb, res, gr = np.empty(sa), np.empty(sb), np.empty(n), np.empty(n)
        for p in range(width(ctx)):
            flows = False
            for j in range(n):
                res[j] = v[o + j, p]
                gr[j] = g[o + j, p]
                flows = flows or gr[j] != 0.0
            if not flows:
                continue
            column(xa, v, a, sa, p)
            column(xb, v, b, sb, p)
            r = call(res, gr, xa, xb)
            ga, gb = cotangent_a(r), cotangent_b(r)
            if ga.shape[0] != sa or gb.shape[0] != sb:
                raise ValueError(wrong)
            for j in range(sa):
                g[a + j, p] += ga[j]
            for j in range(sb):
                g[b + j, p] += gb[j]
    return njit(SIGNATURE, **_JIT)(adapter)


def jvp_adapter(rule: Callable, binary: bool, name: str):
    """dv[o:o+n] = the rule's tangent, given the result and the operands' tangents."""
    wrong = f"block primitive {name!r}: its jvp rule returned a tangent of another length than its result"
    call = _of_two(rule, binary, "jvp")

    def adapter(ctx, number, o, n, a, sa, b, sb):
        v, dv = workspace(ctx, _V), workspace(ctx, _DV)
        xa, xb, ta, tb, res = np.empty(sa), np.empty(sb), np.empty(sa), np.empty(sb), np.empty(n)
        for p in range(width(ctx)):
            column(xa, v, a, sa, p)
            column(xb, v, b, sb, p)
            column(ta, dv, a, sa, p)
            column(tb, dv, b, sb, p)
            column(res, v, o, n, p)
            r = as_vector(call(res, ta, tb, xa, xb))
            if r.shape[0] != n:
                raise ValueError(wrong)
            for j in range(n):
                dv[o + j, p] = r[j]
    return njit(SIGNATURE, **_JIT)(adapter)


def raising_adapter(message: str, when_adjoints: bool = False):
    """An adapter that raises NotImplementedError(message): a rule the user did not give.
    ``when_adjoints``: only where a result adjoint (or its tangent) is nonzero, as the vjp
    adapter calls its rule; an instruction no gradient flows through (an abandoned eager
    recording) then needs no rule."""
    if when_adjoints:
        def adapter(ctx, number, o, n, a, sa, b, sb):
            g, dg = workspace(ctx, _G), workspace(ctx, _DG)
            hvp = ctx[_DG] != ctx[_V]            # the sweep has tangents of adjoints
            for p in range(width(ctx)):
                for j in range(n):
                    if g[o + j, p] != 0.0 or (hvp and dg[o + j, p] != 0.0):
                        raise NotImplementedError(message)
    else:
        def adapter(ctx, number, o, n, a, sa, b, sb):
            if n >= 0:          # always: a function that only raises has no return type to infer
                raise NotImplementedError(message)
    return njit(SIGNATURE, **_JIT)(adapter)


def address(dispatcher) -> int:
    """The machine-code address of an adapter's one compiled signature."""
    cres = dispatcher.overloads[BLOCK_ARGS]
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)

"""numpy functions built from the table's operations: none has an opcode of its own, so
each works eagerly, inside ``tj.trace`` and on every replay target without new sweeps.

Reductions and scans combine halves of the operand, so a length-n axis records about
log2(n) instructions, each one vector operation, instead of n scalar ones.
"""
from __future__ import annotations

import math
import types
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import DTypeError, ShapeError
from .numpy_api import sum as _sum
from .numpy_api import (_as_operand, _normalize_axes, _value_of, abs, all, amax, amin, concatenate, equal,
                        exp, expand_dims, floor, greater, isnan, less, log, log1p, matmul, maximum, minimum,
                        moveaxis, norm, not_equal, ravel, reshape, rint, sign, sin, sqrt, transpose, trunc,
                        where, zeros)
from ..ops.table import OP
from .tensor import ArrayLike, Tensor, _state

IntOrSeq = Union[int, Sequence[int]]


# ----------------------------------------------------------------------------------------
# elementwise
# ----------------------------------------------------------------------------------------
def reciprocal(x: ArrayLike) -> Tensor:
    return 1.0 / _as_operand(x)


def hypot(x: ArrayLike, y: ArrayLike) -> Tensor:
    """sqrt(x**2 + y**2); its gradient at (0, 0) is nan, as in PyTorch."""
    x, y = _as_operand(x), _as_operand(y)
    return sqrt(x * x + y * y)


def cbrt(x: ArrayLike) -> Tensor:
    """The real cube root (negative for negative x)."""
    x = _as_operand(x)
    return sign(x) * abs(x) ** (1.0 / 3.0)


def logaddexp(x: ArrayLike, y: ArrayLike) -> Tensor:
    """log(exp(x) + exp(y)) without overflow."""
    x, y = _as_operand(x), _as_operand(y)
    return maximum(x, y) + log1p(exp(-abs(x - y)))


def deg2rad(x: ArrayLike) -> Tensor:
    return _as_operand(x) * (math.pi / 180.0)


def rad2deg(x: ArrayLike) -> Tensor:
    return _as_operand(x) * (180.0 / math.pi)


def fmod(x: ArrayLike, y: ArrayLike) -> Tensor:
    """C's fmod, exact (the fmod opcode): x - trunc(x / y) y with x's sign;
    d/dx = 1, d/dy = -trunc(x / y)."""
    from .tensor import _elementwise
    return _elementwise(OP.fmod, (_as_operand(x), _as_operand(y)))


def _divmod_parts(x, y):
    """numpy's divmod (npy_divmod) from the exact remainder: (floor quotient, remainder
    with y's sign). The quotient has derivative 0; the remainder d/dx = 1, d/dy =
    -floor(x / y), as PyTorch's."""
    x, y = _as_operand(x), _as_operand(y)
    r = fmod(x, y)
    shift = (r != 0.0) & ((r < 0.0) != (y < 0.0))       # the remainder takes y's sign
    remainder = where(shift, r + y, where(r == 0.0, copysign(0.0, y), r))
    div = (x - r) / y
    div = where(shift, div - 1.0, div)
    q = floor(div)
    q = where(div - q > 0.5, q + 1.0, q)                 # (x - r) / y rounded below an integer
    quotient = where(div == 0.0, copysign(0.0, x / y), q)
    quotient = where(y == 0.0, x / y, quotient)           # numpy: x / 0 itself (inf or nan)
    return quotient, remainder


def floor_divide(x: ArrayLike, y: ArrayLike) -> Tensor:
    """numpy's x // y (floor of the exact quotient: 1 // 0.1 is 9.0), derivative 0."""
    return _divmod_parts(x, y)[0]


def mod(x: ArrayLike, y: ArrayLike) -> Tensor:
    """numpy's x % y and remainder (y's sign): d/dx = 1, d/dy = -floor(x / y)."""
    return _divmod_parts(x, y)[1]


def divmod_(x: ArrayLike, y: ArrayLike) -> tuple:
    return _divmod_parts(x, y)


def modf(x: ArrayLike) -> tuple:
    """(fractional part, integral part), both with x's sign."""
    x = _as_operand(x)
    whole = trunc(x)
    return x - whole, whole


def around(x: ArrayLike, decimals: int = 0) -> Tensor:
    """numpy.around: rint(x * 10**decimals) / 10**decimals (ties to even), derivative 0."""
    x = _as_operand(x)
    if decimals == 0:
        return rint(x)
    if decimals > 0:
        scale = 10.0 ** decimals
        return rint(x * scale) / scale
    scale = 10.0 ** -decimals
    return rint(x / scale) * scale


def sinc(x: ArrayLike) -> Tensor:
    """sin(pi x) / (pi x), 1 at x = 0 (where its derivative is 0)."""
    x = _as_operand(x)
    at_zero = equal(x, 0.0)
    scaled = where(at_zero, 1.0, x) * math.pi
    return where(at_zero, 1.0, sin(scaled) / scaled)


_LN2 = math.log(2.0)
# above 1e8, asinh(u) and acosh(u) are log(2u) to within 1/(4u**2) (relative 1e-18), and
# u * u would overflow past 1e154
_LARGE = 1e8


def _asinh_nonnegative(u: Tensor) -> Tensor:
    small = log1p(u + u * u / (1.0 + sqrt(1.0 + u * u)))
    return where(greater(u, _LARGE), log(u) + _LN2, small)


def arcsinh(x: ArrayLike) -> Tensor:
    """asinh, odd by construction (no cancellation for negative x); log1p form near 0,
    log(2x) when large. Each side is a function of x itself, not |x|, so that the
    derivative at 0 is 1."""
    x = _as_operand(x)
    return where(less(x, 0.0), -_asinh_nonnegative(-x), _asinh_nonnegative(x))


def arccosh(x: ArrayLike) -> Tensor:
    """acosh for x >= 1 (nan below), through log1p of x - 1 so that it is accurate near 1."""
    x = _as_operand(x)
    t = x - 1.0
    return where(greater(x, _LARGE), log(x) + _LN2, log1p(t + sqrt(t * (t + 2.0))))


def arctanh(x: ArrayLike) -> Tensor:
    """atanh = log1p(2x / (1 - x)) / 2."""
    x = _as_operand(x)
    return 0.5 * log1p(2.0 * x / (1.0 - x))


def logaddexp2(x: ArrayLike, y: ArrayLike) -> Tensor:
    return logaddexp(_as_operand(x) * _LN2, _as_operand(y) * _LN2) / _LN2


def fmax(x: ArrayLike, y: ArrayLike) -> Tensor:
    """maximum that ignores a nan operand (numpy.fmax)."""
    x, y = _as_operand(x), _as_operand(y)
    return where(isnan(y), x, where(isnan(x), y, maximum(x, y)))


def fmin(x: ArrayLike, y: ArrayLike) -> Tensor:
    x, y = _as_operand(x), _as_operand(y)
    return where(isnan(y), x, where(isnan(x), y, minimum(x, y)))


def signbit(x: ArrayLike) -> Tensor:
    """True where x is negative, -0.0 included (1 / -0.0 is -inf)."""
    x = _as_operand(x)
    return where(equal(x, 0.0), less(1.0 / where(equal(x, 0.0), x, 1.0), 0.0), less(x, 0.0)) != 0.0


def copysign(x: ArrayLike, y: ArrayLike) -> Tensor:
    return abs(_as_operand(x)) * where(signbit(y), -1.0, 1.0)


def heaviside(x: ArrayLike, h0: ArrayLike) -> Tensor:
    """0 below 0, h0 at 0, 1 above (nan stays nan); derivative 0 in x."""
    x = _as_operand(x)
    return where(isnan(x), x, where(greater(x, 0.0), 1.0, where(equal(x, 0.0), h0, 0.0)))


def isinf(x: ArrayLike) -> Tensor:
    return equal(abs(_as_operand(x)), math.inf)


def _as_bool(x: ArrayLike) -> Tensor:
    x = _as_operand(x)
    return x if x._bool else not_equal(x, 0.0)


def logical_and(x: ArrayLike, y: ArrayLike) -> Tensor:
    return _as_bool(x) & _as_bool(y)


def logical_or(x: ArrayLike, y: ArrayLike) -> Tensor:
    return _as_bool(x) | _as_bool(y)


def logical_xor(x: ArrayLike, y: ArrayLike) -> Tensor:
    return not_equal(_as_bool(x), _as_bool(y))


def _bitwise_on_bools(name: str, logical):
    """numpy's bitwise ufuncs are the logical ones on booleans (mask & mask); tensors hold
    no integers, so on float tensors they raise."""
    def on_bools(*args):
        for x in args:
            if not (isinstance(x, Tensor) and x._bool) and not isinstance(x, (bool, np.bool_)) and \
                    not (isinstance(x, np.ndarray) and x.dtype == np.bool_):
                raise DTypeError(f"np.{name} on tapejit tensors is defined for booleans only "
                                 "(tensors hold float64, not integers)")
        return logical(*args)
    on_bools.__name__ = name
    return on_bools


def vecdot(x: ArrayLike, y: ArrayLike, axis: int = -1) -> Tensor:
    """numpy.vecdot: sum(x * y) along the last axis, broadcasting the others."""
    return _sum(_as_operand(x) * y, axis=axis)


def matvec(a: ArrayLike, v: ArrayLike) -> Tensor:
    """numpy.matvec: a @ v over the last two / last axes, broadcasting the others."""
    a, v = _as_operand(a), _as_operand(v)
    return _sum(a * expand_dims(v, -2), axis=-1)


def vecmat(v: ArrayLike, a: ArrayLike) -> Tensor:
    a, v = _as_operand(a), _as_operand(v)
    return _sum(expand_dims(v, -1) * a, axis=-2)


def ldexp(x: ArrayLike, exponent) -> Tensor:
    """x * 2**exponent for integer exponents (constants)."""
    return _as_operand(x) * np.ldexp(1.0, np.asarray(exponent))


# ----------------------------------------------------------------------------------------
# products and scans along an axis, by halves
# ----------------------------------------------------------------------------------------
def _pairwise(x: Tensor, combine) -> Tensor:
    """combine(...) of the entries along axis 0, by halves: log2(n) vector operations."""
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        paired = combine(x[:half], x[half:2 * half])
        x = concatenate([paired, x[2 * half:]]) if x.shape[0] % 2 else paired
    return x[0]


def prod(x: ArrayLike, axis: Optional[int] = None, keepdims: bool = False) -> Tensor:
    """Product of the entries (along ``axis``); the gradient is exact even where an entry is 0."""
    x = _as_operand(x)
    if axis is None:
        result = _pairwise(ravel(x), lambda a, b: a * b) if x.size else _as_operand(1.0)
        return reshape(result, (1,) * x.ndim) if keepdims else result
    (ax,) = _normalize_axes(axis, x.ndim)
    moved = moveaxis(x, ax, 0)
    if moved.shape[0] == 0:
        result = _as_operand(np.ones(moved.shape[1:]))
    else:
        result = _pairwise(moved, lambda a, b: a * b)
    return expand_dims(result, ax) if keepdims else result


def _scan(x: ArrayLike, axis: Optional[int], combine, identity: float) -> Tensor:
    """Inclusive scan by doubling (Hillis-Steele): log2(n) steps of one shifted combine."""
    x = _as_operand(x)
    if axis is None:
        x, ax = ravel(x), 0
    else:
        (ax,) = _normalize_axes(axis, x.ndim)
    y = moveaxis(x, ax, 0)
    n, shift = y.shape[0], 1
    while shift < n:
        pad_block = _as_operand(np.full((shift,) + y.shape[1:], identity))
        y = combine(y, concatenate([pad_block, y[:n - shift]]))
        shift *= 2
    return moveaxis(y, 0, ax)


def cumsum(x: ArrayLike, axis: Optional[int] = None) -> Tensor:
    return _scan(x, axis, lambda a, b: a + b, 0.0)


def cumprod(x: ArrayLike, axis: Optional[int] = None) -> Tensor:
    return _scan(x, axis, lambda a, b: a * b, 1.0)


# ----------------------------------------------------------------------------------------
# selections that depend on the values: sort, argsort, argmax, argmin, interp. Eagerly the
# order is read off the values. Inside tj.trace the tape stores one order, so each of these
# also records a guard (as bool() of a comparison does) that the order still holds: a
# replay at a point where it does not is a branch change (tj.trace's on_branch_change),
# never a silently wrong result.
# ----------------------------------------------------------------------------------------
def _guard(condition: Tensor) -> None:
    tape = condition._tape
    if tape is not None and tape is _state.trace:
        bool(all(condition))


def _values(x: Tensor) -> np.ndarray:
    return np.asarray(x._value, dtype=np.float64)


def take_along_axis(arr: ArrayLike, indices, axis: Optional[int]) -> Tensor:
    """numpy.take_along_axis with constant integer ``indices``."""
    arr = _as_operand(arr)
    if axis is None:
        return ravel(arr)[np.asarray(indices, dtype=np.int64)]
    positions = np.arange(arr.size, dtype=np.int64).reshape(arr.shape)
    return ravel(arr)[np.take_along_axis(positions, np.asarray(indices, dtype=np.int64), axis)]


def argsort(x: ArrayLike, axis: Optional[int] = -1, kind=None, order=None) -> np.ndarray:
    """The (stable) sorting permutation, an integer ndarray; in a trace, guarded."""
    x = _as_operand(x)
    perm = np.argsort(_values(x), axis=axis, kind="stable")
    sort(x, axis)   # records the order guard in a trace
    return perm


def sort(x: ArrayLike, axis: Optional[int] = -1, kind=None, order=None) -> Tensor:
    """Sorted along ``axis``; the gradient follows each entry to its place (ties keep their
    order, as numpy's stable sort)."""
    x = _as_operand(x)
    if axis is None:
        x, axis = ravel(x), 0
    if x.ndim == 0:
        return x
    perm = np.argsort(_values(x), axis=axis, kind="stable")
    ordered = take_along_axis(x, perm, axis)
    if ordered.shape[axis] > 1:
        _guard(diff(ordered, axis=axis) >= 0.0)
    return ordered


def _arg_extreme(x: ArrayLike, axis: Optional[int], keepdims: bool, numpy_arg, extreme, compare) -> np.ndarray:
    x = _as_operand(x)
    index = numpy_arg(_values(x), axis=axis, keepdims=keepdims)
    if x._tape is not None and x._tape is _state.trace:
        picked = take_along_axis(x, index if keepdims or axis is None else np.expand_dims(index, axis), axis)
        _guard(compare(picked, extreme(x, axis=axis, keepdims=axis is not None)))
    return index


def argmax(x: ArrayLike, axis: Optional[int] = None, out=None, keepdims: bool = False) -> np.ndarray:
    """Index of the first maximum (an integer ndarray); in a trace, guarded."""
    return _arg_extreme(x, axis, keepdims, np.argmax, amax, lambda a, b: a >= b)


def argmin(x: ArrayLike, axis: Optional[int] = None, out=None, keepdims: bool = False) -> np.ndarray:
    return _arg_extreme(x, axis, keepdims, np.argmin, amin, lambda a, b: a <= b)


def interp(x: ArrayLike, xp, fp, left=None, right=None) -> Tensor:
    """numpy.interp: piecewise linear through (xp, fp) with constant increasing ``xp``;
    ``x`` and ``fp`` may be tensors. Outside [xp[0], xp[-1]]: ``left`` / ``right`` (fp's
    ends by default), with derivative 0 in x."""
    x = _as_operand(x)
    xp = np.asarray(xp, dtype=np.float64)
    if xp.ndim != 1 or xp.size < 2:
        raise ShapeError(f"interp needs a 1-d xp of at least 2 points, not shape {xp.shape}")
    fp = _as_operand(fp)
    if fp.shape != xp.shape:
        raise ShapeError(f"interp: fp has shape {fp.shape}, xp {xp.shape}")
    bins = np.clip(np.searchsorted(xp, _values(x), side="right") - 1, 0, xp.size - 2)
    lo, hi = xp[bins], xp[bins + 1]
    t = (x - lo) / (hi - lo)
    f_lo, f_hi = fp[bins], fp[bins + 1]
    y = f_lo + t * (f_hi - f_lo)
    y = where(less(x, xp[0]), fp[0] if left is None else left, y)
    y = where(greater(x, xp[-1]), fp[-1] if right is None else right, y)
    # the bin of each x, with open ends: a replay must find x in the same one
    lower = np.where(bins == 0, -np.inf, lo)
    upper = np.where(bins == xp.size - 2, np.inf, hi)
    _guard((x >= lower) & (x < upper))
    return y


def median(x: ArrayLike, axis: Optional[int] = None, keepdims: bool = False) -> Tensor:
    """The middle of the sorted entries (the mean of the two middle ones for an even count)."""
    x = _as_operand(x)
    if axis is None:
        x, axis = ravel(x), 0
    (ax,) = _normalize_axes(axis, x.ndim)
    ordered = moveaxis(sort(x, axis=ax), ax, 0)
    n = ordered.shape[0]
    middle = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return expand_dims(middle, ax) if keepdims else middle


# ----------------------------------------------------------------------------------------
# differences, traces, products of arrays, grids, polynomials
# ----------------------------------------------------------------------------------------
def diff(x: ArrayLike, n: int = 1, axis: int = -1, prepend=None, append=None) -> Tensor:
    x = _as_operand(x)
    (ax,) = _normalize_axes(axis, x.ndim)
    parts = [x]
    for extra, where_ in ((prepend, 0), (append, 1)):
        if extra is not None:
            block = _as_operand(extra)
            if block.ndim == 0:
                block = block + np.zeros(x.shape[:ax] + (1,) + x.shape[ax + 1:])
            parts.insert(where_ * len(parts), block)
    if len(parts) > 1:
        x = concatenate(parts, axis=ax)
    head = (slice(None),) * ax
    for _ in range(n):
        x = x[head + (slice(1, None),)] - x[head + (slice(None, -1),)]
    return x


def trace(a: ArrayLike, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Tensor:
    a = _as_operand(a)
    if a.ndim != 2 or (axis1, axis2) not in ((0, 1), (1, 0)):
        raise ShapeError(f"trace supports matrices (axis1=0, axis2=1), not shape {a.shape}")
    return _sum(diag(a, offset))


def kron(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Kronecker product of vectors or of matrices."""
    a, b = _as_operand(a), _as_operand(b)
    if a.ndim == b.ndim == 1:
        return reshape(reshape(a, (-1, 1)) * reshape(b, (1, -1)), (-1,))
    if a.ndim == b.ndim == 2:
        (p, q), (r, s) = a.shape, b.shape
        return reshape(reshape(a, (p, 1, q, 1)) * reshape(b, (1, r, 1, s)), (p * r, q * s))
    raise ShapeError(f"kron supports two vectors or two matrices, not shapes {a.shape} and {b.shape}")


def meshgrid(*xs: ArrayLike, indexing: str = "xy", sparse: bool = False, copy: bool = True) -> list:
    xs = [ravel(_as_operand(x)) for x in xs]
    shape = [x.shape[0] for x in xs]
    if indexing == "xy" and len(xs) >= 2:
        shape[0], shape[1] = shape[1], shape[0]
    grids = []
    for k, x in enumerate(xs):
        place = (1 - k if k < 2 else k) if indexing == "xy" and len(xs) >= 2 else k
        view = [1] * len(xs)
        view[place] = x.shape[0]
        grid = reshape(x, tuple(view))
        grids.append(grid if sparse else broadcast_to(grid, tuple(shape)))
    return grids


def average(a: ArrayLike, axis: Optional[int] = None, weights=None, returned: bool = False, keepdims: bool = False):
    a = _as_operand(a)
    if weights is None:
        from .numpy_api import mean
        result, total = mean(a, axis=axis, keepdims=keepdims), None
    else:
        w = _as_operand(weights)
        if w.shape != a.shape:
            if axis is None or w.ndim != 1:
                raise ShapeError(f"average: weights of shape {w.shape} for an array of shape {a.shape}")
            (ax,) = _normalize_axes(axis, a.ndim)
            w = reshape(w, tuple(w.shape[0] if k == ax else 1 for k in range(a.ndim)))
            w = w + np.zeros(a.shape)
        total = _sum(w, axis=axis, keepdims=keepdims)
        result = _sum(a * w, axis=axis, keepdims=keepdims) / total
    return (result, total) if returned else result


def cross(a: ArrayLike, b: ArrayLike) -> Tensor:
    """The cross product of two 3-vectors."""
    a, b = _as_operand(a), _as_operand(b)
    if a.shape != (3,) or b.shape != (3,):
        raise ShapeError(f"cross supports two 3-vectors, not shapes {a.shape} and {b.shape}")
    from .numpy_api import stack
    return stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def append(arr: ArrayLike, values: ArrayLike, axis: Optional[int] = None) -> Tensor:
    if axis is None:
        return concatenate([ravel(_as_operand(arr)), ravel(_as_operand(values))])
    return concatenate([arr, values], axis=axis)


def column_stack(tensors: Sequence[ArrayLike]) -> Tensor:
    columns = [_as_operand(t) for t in tensors]
    return concatenate([reshape(c, (-1, 1)) if c.ndim == 1 else c for c in columns], axis=1)


def polyval(p, x: ArrayLike) -> Tensor:
    """p[0] * x**(N-1) + ... + p[N-1] by Horner's rule; ``p`` may be a tensor."""
    x = _as_operand(x)
    coefficients = [p[k] for k in range(len(p))]
    result = x * 0.0 + coefficients[0] if coefficients else x * 0.0
    for c in coefficients[1:]:
        result = result * x + c
    return result


# ----------------------------------------------------------------------------------------
# gathers: repeat, tile, take, roll, diag
# ----------------------------------------------------------------------------------------
def take(x: ArrayLike, indices, axis: Optional[int] = None) -> Tensor:
    """numpy.take: entries at ``indices`` (of the flattened tensor without ``axis``)."""
    x = _as_operand(x)
    indices = np.asarray(indices, dtype=np.int64)
    if axis is None:
        return ravel(x)[indices]
    (ax,) = _normalize_axes(axis, x.ndim)
    picked = moveaxis(x, ax, 0)[indices.reshape(-1)]
    picked = reshape(picked, indices.shape + picked.shape[1:])
    # numpy puts the index dimensions where the axis was
    order = list(range(indices.ndim, indices.ndim + ax)) + list(range(indices.ndim)) + \
        list(range(indices.ndim + ax, picked.ndim))
    return transpose(picked, order)


def repeat(x: ArrayLike, repeats, axis: Optional[int] = None) -> Tensor:
    x = _as_operand(x)
    if axis is None:
        x, axis = ravel(x), 0
    (ax,) = _normalize_axes(axis, x.ndim)
    return take(x, np.repeat(np.arange(x.shape[ax]), repeats), axis=ax)


def tile(x: ArrayLike, reps: IntOrSeq) -> Tensor:
    x = _as_operand(x)
    reps = (reps,) if isinstance(reps, (int, np.integer)) else tuple(reps)
    if len(reps) > x.ndim:
        x = reshape(x, (1,) * (len(reps) - x.ndim) + x.shape)
    reps = (1,) * (x.ndim - len(reps)) + reps
    for ax, r in enumerate(reps):
        if r != 1:
            x = take(x, np.tile(np.arange(x.shape[ax]), r), axis=ax)
    return x


def roll(x: ArrayLike, shift: IntOrSeq, axis: Optional[IntOrSeq] = None) -> Tensor:
    x = _as_operand(x)
    if axis is None:
        return reshape(roll(ravel(x), shift, 0), x.shape)
    shifts = (shift,) if isinstance(shift, (int, np.integer)) else tuple(shift)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(shifts) != len(axes):
        raise ShapeError(f"roll: {len(shifts)} shifts for {len(axes)} axes")
    for s, a in zip(shifts, axes):
        (ax,) = _normalize_axes(a, x.ndim)
        n = x.shape[ax]
        if n:
            x = take(x, (np.arange(n) - int(s)) % n, axis=ax)
    return x


def diag(v: ArrayLike, k: int = 0) -> Tensor:
    """The k-th diagonal of a matrix, or a matrix with a vector on its k-th diagonal."""
    v = _as_operand(v)
    if v.ndim == 2:
        rows, cols = np.nonzero(np.eye(*v.shape, k=k, dtype=bool))
        return v[rows, cols]
    if v.ndim != 1:
        raise ShapeError(f"diag takes a vector or a matrix, not shape {v.shape}")
    n = v.shape[0] + (k if k >= 0 else -k)
    # every entry gathers from [v, 0]: the diagonal's from v, the rest from the appended zero
    index = np.full((n, n), v.shape[0], dtype=np.int64)
    rows, cols = np.nonzero(np.eye(n, k=k, dtype=bool))
    index[rows, cols] = np.arange(v.shape[0])
    return concatenate([v, zeros(1)])[index]


def _triangle(m: ArrayLike, keep: np.ndarray) -> Tensor:
    m = _as_operand(m)
    if m.ndim < 2:
        raise ShapeError(f"triu/tril take a matrix (or a stack of them), not shape {m.shape}")
    # where(), not a product with a mask: an inf outside the triangle still gives 0
    return where(keep, m, 0.0)


def triu(m: ArrayLike, k: int = 0) -> Tensor:
    shape = _as_operand(m).shape
    return _triangle(m, np.triu(np.ones(shape[-2:], dtype=bool), k))


def tril(m: ArrayLike, k: int = 0) -> Tensor:
    shape = _as_operand(m).shape
    return _triangle(m, np.tril(np.ones(shape[-2:], dtype=bool), k))


# ----------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------
def broadcast_to(x: ArrayLike, shape) -> Tensor:
    x = _as_operand(x)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    try:
        fits = np.broadcast_shapes(x.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"cannot broadcast shape {x.shape} to {shape}")
    return x + np.zeros(shape)


def split(x: ArrayLike, indices_or_sections, axis: int = 0) -> list:
    x = _as_operand(x)
    (ax,) = _normalize_axes(axis, x.ndim)
    n = x.shape[ax]
    if isinstance(indices_or_sections, (int, np.integer)):
        if n % indices_or_sections:
            raise ShapeError(f"an axis of {n} does not split into {indices_or_sections} equal parts")
        step = n // indices_or_sections
        bounds = list(range(step, n, step))
    else:
        bounds = [int(b) for b in indices_or_sections]
    edges = [0] + bounds + [n]
    head = (slice(None),) * ax
    return [x[head + (slice(lo, hi),)] for lo, hi in zip(edges[:-1], edges[1:])]


def atleast_1d(x: ArrayLike) -> Tensor:
    x = _as_operand(x)
    return reshape(x, (1,)) if x.ndim == 0 else x


def atleast_2d(x: ArrayLike) -> Tensor:
    x = _as_operand(x)
    return reshape(x, (1,) * (2 - x.ndim) + x.shape) if x.ndim < 2 else x


def pad(x: ArrayLike, pad_width, mode: str = "constant", constant_values: float = 0.0) -> Tensor:
    """numpy.pad in its constant mode."""
    if mode != "constant":
        raise ShapeError(f"pad supports mode='constant' only, not {mode!r}")
    x = _as_operand(x)
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    for ax, (before, after) in enumerate(widths):
        parts = []
        for width in (before, after):
            shape = x.shape[:ax] + (int(width),) + x.shape[ax + 1:]
            parts.append(np.full(shape, float(constant_values)))
        x = concatenate([parts[0], x, parts[1]], axis=ax)
    return x


def tensordot(a: ArrayLike, b: ArrayLike, axes=2) -> Tensor:
    """numpy.tensordot through one matrix product."""
    a, b = _as_operand(a), _as_operand(b)
    if isinstance(axes, (int, np.integer)):
        axes_a, axes_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        axes_a, axes_b = ([axes[0]] if isinstance(axes[0], (int, np.integer)) else list(axes[0]),
                          [axes[1]] if isinstance(axes[1], (int, np.integer)) else list(axes[1]))
    axes_a = [ax % a.ndim for ax in axes_a]
    axes_b = [ax % b.ndim for ax in axes_b]
    if [a.shape[i] for i in axes_a] != [b.shape[i] for i in axes_b]:
        raise ShapeError(f"tensordot: axes of sizes {[a.shape[i] for i in axes_a]} and "
                         f"{[b.shape[i] for i in axes_b]} do not match")
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]
    inner = int(np.prod([a.shape[i] for i in axes_a]))
    left = reshape(transpose(a, free_a + axes_a), (-1, inner))
    right = reshape(transpose(b, axes_b + free_b), (inner, -1))
    return reshape(matmul(left, right), tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b))


def _einsum_parse(subscripts: str, n_operands: int):
    subscripts = subscripts.replace(" ", "")
    if "." in subscripts:
        raise ShapeError("einsum: '...' is not supported; name every axis")
    inputs, arrow, output = subscripts.partition("->")
    terms = inputs.split(",")
    if len(terms) != n_operands:
        raise ShapeError(f"einsum: {len(terms)} subscripts for {n_operands} operands")
    if not arrow:       # implicit output: the indices that appear once, in order
        letters = "".join(terms)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    for term in terms + [output]:
        if not term.isalpha() and term:
            raise ShapeError(f"einsum: subscripts must be letters, got {term!r}")
    return terms, output


def _einsum_single(x: Tensor, term: str, keep: str) -> tuple:
    """Reduce one operand to the indices in ``keep`` (diagonals of repeated indices first)."""
    if x.ndim != len(term):
        raise ShapeError(f"einsum: subscripts {term!r} for an operand of shape {x.shape}")
    while len(set(term)) < len(term):      # a repeated index: take that diagonal
        c = next(c for c in term if term.count(c) > 1)
        i, j = term.index(c), term.index(c, term.index(c) + 1)
        if x.shape[i] != x.shape[j]:
            raise ShapeError(f"einsum: index {c!r} has sizes {x.shape[i]} and {x.shape[j]}")
        moved = moveaxis(moveaxis(x, i, -1), j - 1 if j > i else j, -1)
        rest = moved.shape[:-2]
        n = moved.shape[-1]
        flat = reshape(moved, rest + (n * n,))
        x = take(flat, np.arange(n) * (n + 1), axis=-1)
        term = term[:i] + term[i + 1:j] + term[j + 1:] + c
    drop = tuple(k for k, c in enumerate(term) if c not in keep)
    if drop:
        x = _sum(x, axis=drop)
        term = "".join(c for c in term if c in keep)
    return x, term


def einsum(subscripts: str, *operands: ArrayLike) -> Tensor:
    """numpy.einsum for one or two operands (more are contracted left to right), without
    '...'. Two operands become one matrix product when no index is shared by both and the
    output (a batch index), else a broadcast product and a sum."""
    terms, output = _einsum_parse(subscripts, len(operands))
    ops = [_as_operand(x) for x in operands]
    sizes = {}
    for x, term in zip(ops, terms):
        for c, n in zip(term, x.shape):
            if sizes.setdefault(c, n) != n:
                raise ShapeError(f"einsum: index {c!r} has sizes {sizes[c]} and {n}")
    if len(ops) > 2:
        later = "".join(terms[2:]) + output
        keep = "".join(sorted(set(terms[0] + terms[1]) & set(later)))
        first = einsum(f"{terms[0]},{terms[1]}->{keep}", ops[0], ops[1])
        return einsum(",".join([keep] + terms[2:]) + "->" + output, first, *ops[2:])
    if len(ops) == 1:
        x, term = _einsum_single(ops[0], terms[0], output)
        return transpose(x, [term.index(c) for c in output]) if term != output else x
    (a, ta), (b, tb) = (_einsum_single(x, t, terms[1 - k] + output) for k, (x, t) in enumerate(zip(ops, terms)))
    batch = [c for c in ta if c in tb and c in output]
    contract = [c for c in ta if c in tb and c not in output]
    free_a = [c for c in ta if c not in tb]
    free_b = [c for c in tb if c not in ta]
    a = transpose(a, [ta.index(c) for c in batch + free_a + contract])
    b = transpose(b, [tb.index(c) for c in batch + contract + free_b])
    n_batch, n_a, n_c, n_b = (int(np.prod([sizes[c] for c in cs])) for cs in (batch, free_a, contract, free_b))
    if not batch:
        product = matmul(reshape(a, (n_a, n_c)), reshape(b, (n_c, n_b)))
    else:
        product = _sum(reshape(a, (n_batch, n_a, n_c, 1)) * reshape(b, (n_batch, 1, n_c, n_b)), axis=2)
    order = batch + free_a + free_b
    product = reshape(product, tuple(sizes[c] for c in order))
    return transpose(product, [order.index(c) for c in output]) if order != list(output) else product


def allclose(a: ArrayLike, b: ArrayLike, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
    """numpy.allclose on the values (a plain bool: nothing is recorded)."""
    return bool(np.allclose(_value_of(a), _value_of(b), rtol=rtol, atol=atol, equal_nan=equal_nan))


def _linalg_norm(x: ArrayLike, ord=None, axis=None, keepdims: bool = False) -> Tensor:
    """numpy.linalg.norm for ord None/2 (Euclidean, Frobenius), 1 and inf along ``axis``
    (vector norms; for a matrix without ``axis`` only the Frobenius norm)."""
    x = _as_operand(x)
    if ord is None or (ord == 2 and (axis is not None or x.ndim == 1)) or ord == "fro":
        return norm(x, axis=axis, keepdims=keepdims)
    if axis is None and x.ndim != 1:
        raise ShapeError(f"linalg.norm(ord={ord!r}) of a matrix is not supported: give an axis")
    if ord == 1:
        return _sum(abs(x), axis=axis, keepdims=keepdims)
    if ord == np.inf:
        return amax(abs(x), axis=axis, keepdims=keepdims)
    raise ShapeError(f"linalg.norm: ord={ord!r} is not supported (None, 2, 1, inf)")


linalg = types.SimpleNamespace(norm=_linalg_norm)

ARRAY_FUNCTIONS = {
    "prod": prod, "cumsum": cumsum, "cumprod": cumprod, "take": take, "repeat": repeat,
    "tile": tile, "roll": roll, "diag": diag, "triu": triu, "tril": tril,
    "broadcast_to": broadcast_to, "split": split, "atleast_1d": atleast_1d,
    "atleast_2d": atleast_2d, "pad": pad, "tensordot": tensordot, "allclose": allclose,
    "linalg.norm": _linalg_norm,
    "einsum": einsum, "sort": sort, "argsort": argsort, "argmax": argmax, "argmin": argmin,
    "take_along_axis": take_along_axis, "interp": interp, "diff": diff, "trace": trace, "kron": kron,
    "meshgrid": meshgrid, "polyval": polyval, "round": around, "around": around, "sinc": sinc,
    "median": median, "average": average, "cross": cross, "append": append, "column_stack": column_stack,
    "copy": lambda a, order="K", subok=False: _as_operand(a).copy(),
}
UFUNCS = {
    "reciprocal": reciprocal, "hypot": hypot, "cbrt": cbrt, "logaddexp": logaddexp,
    "logaddexp2": logaddexp2, "deg2rad": deg2rad, "radians": deg2rad, "rad2deg": rad2deg,
    "degrees": rad2deg, "floor_divide": floor_divide, "remainder": mod, "mod": mod, "fmod": fmod,
    "divmod": divmod_, "modf": modf, "arcsinh": arcsinh, "arccosh": arccosh, "arctanh": arctanh,
    "fmax": fmax, "fmin": fmin, "signbit": signbit, "copysign": copysign, "heaviside": heaviside,
    "isinf": isinf, "logical_and": logical_and, "logical_or": logical_or, "logical_xor": logical_xor,
    "ldexp": ldexp, "vecdot": vecdot, "matvec": matvec, "vecmat": vecmat,
    "bitwise_and": _bitwise_on_bools("bitwise_and", logical_and),
    "bitwise_or": _bitwise_on_bools("bitwise_or", logical_or),
    "bitwise_xor": _bitwise_on_bools("bitwise_xor", logical_xor),
    "invert": _bitwise_on_bools("invert", lambda x: ~_as_operand(x)),
}


# ----------------------------------------------------------------------------------------
# registration: numpy dispatch (np.prod(t), np.hypot(t, u) ...) and Tensor methods with
# numpy's and PyTorch's names (t.exp(), t.clamp(0, 1), t.prod(axis=0), t.unsqueeze(0) ...)
# ----------------------------------------------------------------------------------------
def _register() -> None:
    from . import numpy_api as fn
    fn.ARRAY_FUNCTIONS.update(ARRAY_FUNCTIONS)
    fn.UFUNCS.update(UFUNCS)

    def method(function, doc_name: str):
        def call(self, *args, **kwargs):
            return function(self, *args, **kwargs)
        call.__name__ = doc_name
        call.__doc__ = f"tj.{function.__name__}(self, ...)"
        return call

    delegated = {name: getattr(fn, name) for name in (
        "exp", "expm1", "log", "log1p", "log2", "log10", "sin", "cos", "tan", "arcsin", "arccos",
        "arctan", "sinh", "cosh", "tanh", "sqrt", "abs", "square", "sigmoid", "clip", "std",
        "var", "squeeze", "swapaxes", "amax", "amin", "power", "floor", "ceil", "trunc")}
    delegated.update(prod=prod, cumsum=cumsum, cumprod=cumprod, repeat=repeat, take=take,
                     reciprocal=reciprocal, pow=fn.power, unsqueeze=fn.expand_dims, round=around,
                     argmax=argmax, argmin=argmin, argsort=argsort)
    for name, function in delegated.items():
        if not hasattr(Tensor, name):
            setattr(Tensor, name, method(function, name))

    # Python's operators with numpy's meaning (floor division, remainder with the divisor's sign)
    Tensor.__mod__ = lambda self, other: mod(self, other)
    Tensor.__rmod__ = lambda self, other: mod(other, self)
    Tensor.__floordiv__ = lambda self, other: floor_divide(self, other)
    Tensor.__rfloordiv__ = lambda self, other: floor_divide(other, self)
    Tensor.__divmod__ = lambda self, other: divmod_(self, other)
    Tensor.__rdivmod__ = lambda self, other: divmod_(other, self)
    Tensor.__round__ = lambda self, ndigits=None: around(self, 0 if ndigits is None else ndigits)
    Tensor.__trunc__ = lambda self: trunc(self)
    Tensor.__floor__ = lambda self: floor(self)
    Tensor.__ceil__ = lambda self: fn.ceil(self)

    def clamp(self, min=None, max=None) -> Tensor:
        """PyTorch's name for clip."""
        return fn.clip(self, min, max)

    def view(self, *shape) -> Tensor:
        """PyTorch's name for reshape."""
        return self.reshape(*shape)

    def astype(self, dtype) -> Tensor:
        """float64 (the tensor itself) or bool (self != 0); other dtypes raise DTypeError."""
        from ..errors import DTypeError
        kind = np.dtype(dtype)
        if kind == np.float64:
            return self.clone()
        if kind == np.bool_:
            return self != 0.0
        raise DTypeError(f"tapejit tensors are float64 (or bool), not {kind}")

    for extra in (clamp, view, astype):
        setattr(Tensor, extra.__name__, extra)
    Tensor.copy = Tensor.clone


_register()

"""numpy functions built from the table's operations: none has an opcode of its own, so
each works eagerly, inside ``tj.trace`` and on every replay target without new sweeps.

Reductions and scans combine halves of the operand, so a length-n axis records about
log2(n) instructions, each one vector operation, instead of n scalar ones.
"""
from __future__ import annotations

import types
from typing import Optional, Sequence, Union

import numpy as np

from .errors import ShapeError
from .functions import sum as _sum
from .functions import (_as_operand, _normalize_axes, _value_of, abs, amax, concatenate, exp, expand_dims,
                        log1p, matmul, maximum, moveaxis, norm, ravel, reshape, sign, sqrt, transpose,
                        where, zeros)
from .tensor import ArrayLike, Tensor

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
    "norm": _linalg_norm,    # np.linalg.norm
    "einsum": einsum,
}
UFUNCS = {"reciprocal": reciprocal, "hypot": hypot, "cbrt": cbrt, "logaddexp": logaddexp}


# ----------------------------------------------------------------------------------------
# registration: numpy dispatch (np.prod(t), np.hypot(t, u) ...) and Tensor methods with
# numpy's and PyTorch's names (t.exp(), t.clamp(0, 1), t.prod(axis=0), t.unsqueeze(0) ...)
# ----------------------------------------------------------------------------------------
def _register() -> None:
    from . import functions as fn
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
        "var", "squeeze", "swapaxes", "amax", "amin", "power")}
    delegated.update(prod=prod, cumsum=cumsum, cumprod=cumprod, repeat=repeat, take=take,
                     reciprocal=reciprocal, pow=fn.power, unsqueeze=fn.expand_dims)
    for name, function in delegated.items():
        if not hasattr(Tensor, name):
            setattr(Tensor, name, method(function, name))

    def clamp(self, min=None, max=None) -> Tensor:
        """PyTorch's name for clip."""
        return fn.clip(self, min, max)

    def copy(self) -> Tensor:
        """A tensor with the same value; recorded ones stay on the tape (tensors are immutable,
        so this is a view: gradients flow through it as through PyTorch's clone)."""
        return reshape(self, self.shape)

    def view(self, *shape) -> Tensor:
        """PyTorch's name for reshape."""
        return self.reshape(*shape)

    def astype(self, dtype) -> Tensor:
        """float64 (the tensor itself) or bool (self != 0); other dtypes raise DTypeError."""
        from .errors import DTypeError
        kind = np.dtype(dtype)
        if kind == np.float64:
            return self
        if kind == np.bool_:
            return self != 0.0
        raise DTypeError(f"tapejit tensors are float64 (or bool), not {kind}")

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Set requires_grad in place and return the tensor (PyTorch's idiom)."""
        self.requires_grad = requires_grad
        return self

    for extra in (clamp, copy, view, astype, requires_grad_):
        setattr(Tensor, extra.__name__, extra)
    Tensor.clone = copy
    Tensor.data = property(lambda self: self.detach(), doc="detach(): the value without the tape")


_register()

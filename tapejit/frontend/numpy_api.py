"""numpy-named functions on tensors, so that numpy code runs with ``np`` replaced by ``tj``.

Each function records one instruction per call (or a view, which records nothing) when
one of its operands is recorded, and computes with numpy otherwise.
"""
from __future__ import annotations

import builtins
import math
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import ShapeError, TapejitError
from ..ops.table import OP
from .tensor import (ArrayLike, Tensor, _accelerated, _contiguous, _as_float_array, _binary, _compare, _constant, _fast_unary,
                     _cstrides, _elementwise, _gather, _on_tape, _positions, _recording_tape,
                     _result, _run_last, _size, _slot_view, _state, _uniform_step, _vector_on_tape, _is_number)

Axis = Optional[Union[int, Sequence[int]]]

pi = math.pi
e = math.e
inf = math.inf
nan = math.nan
newaxis = None
float64 = np.float64


# ----------------------------------------------------------------------------------------
# elementwise
# ----------------------------------------------------------------------------------------
def _unary(name: str, code: Optional[int] = None):
    """The numpy-named function `name` of one operand (opcode `name` unless given), with
    its 0-d recording done in C when the extension is compiled."""
    code = getattr(OP, name) if code is None else code
    fn = _fast_unary(code)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"Elementwise {name}."
    return _accelerated(code, fn)


sin = _unary("sin")
cos = _unary("cos")
tan = _unary("tan")
arcsin = _unary("arcsin")
arccos = _unary("arccos")
arctan = _unary("arctan")
sinh = _unary("sinh")
cosh = _unary("cosh")
tanh = _unary("tanh")
exp = _unary("exp")
expm1 = _unary("expm1")
log = _unary("log")
log1p = _unary("log1p")
sqrt = _unary("sqrt")
square = _unary("square")
abs = absolute = _unary("abs")
sign = _unary("sign")
negative = _unary("negative", OP.neg)
sigmoid = _unary("sigmoid")
softplus = _unary("softplus")
erf = _unary("erf")
# piecewise constant: derivative 0, as in JAX and PyTorch
floor = _unary("floor")
ceil = _unary("ceil")
trunc = fix = _unary("trunc")
rint = _unary("rint")


def log2(x: ArrayLike) -> Tensor:
    return log(x) * (1.0 / math.log(2.0))


def log10(x: ArrayLike) -> Tensor:
    return log(x) * (1.0 / math.log(10.0))


def exp2(x: ArrayLike) -> Tensor:
    return _binary(OP.pow, OP.pow_c, OP.rpow_c, 2.0, _as_operand(x))


def relu(x: ArrayLike) -> Tensor:
    """max(x, 0); its derivative at 0 is 0.5 (ties split, as for maximum)."""
    return _elementwise(OP.maximum_c, (x,), 0.0)


def stop_gradient(x: ArrayLike) -> Tensor:
    """The value of x, recorded without a derivative (recomputed on replay)."""
    return _elementwise(OP.stop_gradient, (x,))


def _as_operand(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def add(x, y):
    return _binary(OP.add, OP.add_c, OP.add_c, x, y)


def subtract(x, y):
    # never ``x - y`` here: with x an ndarray numpy would call back into this function
    if _is_number(y) and type(x) is Tensor:
        return _elementwise(OP.add_c, (x,), -float(y))
    return _binary(OP.sub, None, OP.rsub_c, x, y)


def multiply(x, y):
    return _binary(OP.mul, OP.mul_c, OP.mul_c, x, y)


def divide(x, y):
    return _binary(OP.div, OP.div_c, OP.rdiv_c, x, y)


true_divide = divide


def power(x, y):
    return _binary(OP.pow, OP.pow_c, OP.rpow_c, x, y)


def arctan2(y, x):
    return _elementwise(OP.arctan2, (y, x))


def maximum(x, y):
    """Elementwise maximum; at ties each side gets half the gradient. NaN propagates."""
    return _binary(OP.maximum, OP.maximum_c, OP.maximum_c, x, y)


def minimum(x, y):
    """Elementwise minimum; at ties each side gets half the gradient. NaN propagates."""
    return _binary(OP.minimum, OP.minimum_c, OP.minimum_c, x, y)


def less(x, y):
    return _compare(OP.lt, OP.lt_c, OP.gt_c, x, y)


def less_equal(x, y):
    return _compare(OP.le, OP.le_c, OP.ge_c, x, y)


def greater(x, y):
    return _compare(OP.gt, OP.gt_c, OP.lt_c, x, y)


def greater_equal(x, y):
    return _compare(OP.ge, OP.ge_c, OP.le_c, x, y)


def equal(x, y):
    return _compare(OP.eq, OP.eq_c, OP.eq_c, x, y)


def not_equal(x, y):
    return _compare(OP.ne, OP.ne_c, OP.ne_c, x, y)


def logical_not(x):
    return _elementwise(OP.eq_c, (x,), 0.0, bool_out=True)


def isfinite(x):
    """True where x is neither infinite nor NaN (no derivative)."""
    return _elementwise(OP.lt_c, (_elementwise(OP.abs, (x,)),), math.inf, bool_out=True)


def isnan(x):
    return _elementwise(OP.ne, (x, x), bool_out=True)


def where(condition, x, y) -> Tensor:
    """x where condition holds, else y. Both sides are recorded; the side not taken
    gets a zero gradient, even where its own derivative is infinite or NaN."""
    if isinstance(condition, (bool, np.bool_)):
        condition = float(condition)
    return _elementwise(OP.where, (condition, x, y))


def clip(x, a_min=None, a_max=None) -> Tensor:
    """minimum(maximum(x, a_min), a_max), as numpy; ties at a bound split the gradient."""
    out = x
    if a_min is not None:
        out = maximum(out, a_min)
    if a_max is not None:
        out = minimum(out, a_max)
    return out if isinstance(out, Tensor) else Tensor(out)


# ----------------------------------------------------------------------------------------
# reductions
# ----------------------------------------------------------------------------------------
def _normalize_axes(axis: Axis, ndim: int) -> Optional[tuple]:
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        ax = int(ax)
        if not -ndim <= ax < ndim:
            raise ShapeError(f"axis {ax} is out of bounds for a tensor of dimension {ndim}")
        out.append(ax % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {axis}")
    return tuple(sorted(out))


def _reduce(code: int, numpy_fn, x: ArrayLike, axis: Axis, keepdims: bool) -> Tensor:
    x = _as_operand(x)
    axes = _normalize_axes(axis, x.ndim)
    tape = _recording_tape((x,))
    if tape is None:
        value = numpy_fn(np.asarray(x._value, dtype=np.float64), axis=axes, keepdims=keepdims)
        return _constant(value if np.ndim(value) else float(value), np.shape(value), x._bool and code == OP.amax)
    if code == OP.amax and x.size == 0:
        raise ShapeError("maximum of an empty tensor has no value")
    view = _slot_view(x, tape)
    base, strides, shape = view
    if axes is None or len(axes) == len(shape):
        step = _uniform_step(shape, strides)
        if step is None:
            base, step = _contiguous(tape, view), 1
        tape.emit(code, 1, a=base, sa=step, b=_size(shape), sb=1)
        _run_last(tape)
        out = _result(tape, tape.n_slots - 1, (), x._bool and code == OP.amax)
        return out.reshape((1,) * len(shape)) if keepdims else out
    result = None
    for ax in reversed(axes):
        if result is not None:
            view = (result._base, result._strides, result._shape)
            base, strides, shape = view
        base = _contiguous(tape, view)
        outer, m, inner = _size(shape[:ax]), shape[ax], _size(shape[ax + 1:])
        if code == OP.amax and m == 0:
            raise ShapeError("maximum along an empty axis has no value")
        out = tape.emit(code, outer * inner, a=base, sa=inner, b=m, sb=inner)
        _run_last(tape)
        new_shape = shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1:]
        result = _result(tape, out, new_shape, x._bool and code == OP.amax)
    return result


def sum(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Sum of elements over the given axes (all by default)."""
    return _reduce(OP.sum, np.sum, x, axis, keepdims)


def amax(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Maximum over the given axes; the gradient goes to the first maximal element."""
    return _reduce(OP.amax, np.max, x, axis, keepdims)


def amin(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Minimum over the given axes; the gradient goes to the first minimal element."""
    return -amax(-_as_operand(x), axis=axis, keepdims=keepdims)


max = amax
min = amin


def mean(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    x = _as_operand(x)
    axes = _normalize_axes(axis, x.ndim)
    count = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    return sum(x, axis=axis, keepdims=keepdims) / float(count)


def var(x: ArrayLike, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    x = _as_operand(x)
    axes = _normalize_axes(axis, x.ndim)
    count = x.size if axes is None else int(np.prod([x.shape[a] for a in axes]))
    centered = x - mean(x, axis=axis, keepdims=True)
    return sum(centered * centered, axis=axis, keepdims=keepdims) / float(count - ddof)


def std(x: ArrayLike, axis: Axis = None, ddof: int = 0, keepdims: bool = False) -> Tensor:
    return sqrt(var(x, axis=axis, ddof=ddof, keepdims=keepdims))


def any(x: ArrayLike) -> Tensor:
    return _compare(OP.ne, OP.ne_c, OP.ne_c, amax(_as_operand(x) != 0.0), 0.0)


def all(x: ArrayLike) -> Tensor:
    return _compare(OP.ne, OP.ne_c, OP.ne_c, amin(_as_operand(x) != 0.0), 0.0)


def logsumexp(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """log(sum(exp(x))) computed without overflow; its gradient is softmax(x)."""
    x = _as_operand(x)
    shift = stop_gradient(amax(x, axis=axis, keepdims=True))
    shift = where(isfinite(shift), shift, 0.0)
    out = log(sum(exp(x - shift), axis=axis, keepdims=True)) + shift
    if keepdims:
        return out
    axes = _normalize_axes(axis, x.ndim)
    shape = () if axes is None else tuple(s for k, s in enumerate(x.shape) if k not in axes)
    return reshape(out, shape)


def softmax(x: ArrayLike, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along an axis (one primitive: its derivative is cheap)."""
    tape = _state.active
    if (type(x) is Tensor and x._tape is tape and tape is not None and len(x._shape) == 1
            and x._strides == (1,) and x._shape[0] and not x._bool and axis in (0, -1)):
        # a recorded contiguous vector (W's 2,500 softmaxes): one instruction, no view work
        n = x._shape[0]
        out = tape.emit(OP.softmax, n, a=x._base, sb=n)
        _run_last(tape)
        return _vector_on_tape(tape, out, n)
    x = _as_operand(x)
    if x.ndim == 0:
        return _as_operand(x) * 0.0 + 1.0
    ax = _normalize_axes(axis, x.ndim)[0]
    tape = _recording_tape((x,))
    if tape is None:
        arr = np.asarray(x._value, dtype=np.float64)
        shifted = np.exp(arr - np.max(arr, axis=ax, keepdims=True))
        return _constant(shifted / np.sum(shifted, axis=ax, keepdims=True), x.shape)
    moved = x if ax == x.ndim - 1 else moveaxis(x, ax, -1)
    view = _slot_view(moved, tape)
    base = _contiguous(tape, view)
    shape = moved.shape
    out = tape.emit(OP.softmax, _size(shape), a=base, sb=shape[-1] if shape[-1] else 1)
    _run_last(tape)
    result = _result(tape, out, shape, False)
    return result if ax == x.ndim - 1 else moveaxis(result, -1, ax)


def log_softmax(x: ArrayLike, axis: int = -1) -> Tensor:
    return _as_operand(x) - logsumexp(x, axis=axis, keepdims=True)


# ----------------------------------------------------------------------------------------
# products
# ----------------------------------------------------------------------------------------
def _is_recorded(x, tape) -> bool:
    return isinstance(x, Tensor) and (x._tape is tape or (x._tape is None and x._rg and tape is not None))


def _const_array(x) -> np.ndarray:
    return np.asarray(x._value if isinstance(x, Tensor) else _as_float_array(x), dtype=np.float64)


def matmul(x: ArrayLike, y: ArrayLike) -> Tensor:
    """x @ y for 1-D and 2-D operands. A constant matrix times a recorded vector is one
    affine instruction over the constant pool (BLAS-shaped work for data-heavy losses)."""
    tape = _recording_tape((x, y))
    xs, ys = np.shape(x._value if isinstance(x, Tensor) else x), np.shape(y._value if isinstance(y, Tensor) else y)
    if not (1 <= len(xs) <= 2 and 1 <= len(ys) <= 2):
        raise ShapeError(f"matmul supports 1-D and 2-D operands, got shapes {xs} and {ys}")
    q_x = xs[-1]
    q_y = ys[0]
    if q_x != q_y:
        raise ShapeError(f"matmul: shapes {xs} and {ys} do not align ({q_x} != {q_y})")
    out_shape = xs[:-1] + ys[1:]
    if tape is None:
        value = np.matmul(_const_array(x), _const_array(y))
        return _constant(value if np.ndim(value) else float(value), out_shape)
    x_rec, y_rec = _is_recorded(x, tape), _is_recorded(y, tape)
    if not x_rec and len(ys) == 1:
        return _affine(tape, np.atleast_2d(_const_array(x)), y, out_shape)
    if not y_rec and len(xs) == 1:
        m = _const_array(y)
        return _affine(tape, (m.T if m.ndim == 2 else m[None, :]), x, out_shape)
    p = xs[0] if len(xs) == 2 else 1
    r = ys[1] if len(ys) == 2 else 1
    a = _contiguous(tape, _slot_view(x, tape))
    b = _contiguous(tape, _slot_view(y, tape))
    # a constant operand's adjoint is never read: the reverse skips its product (the
    # data matrix of a first layer: one GEMM of three)
    flags = 1.0 if not x_rec else (2.0 if not y_rec else 0.0)
    out = tape.emit(OP.matmul, p * r, a=a, sa=q_x, b=b, sb=r, c=flags)
    _run_last(tape)
    return _result(tape, out, out_shape, False)


def _affine(tape, matrix: np.ndarray, vec, out_shape) -> Tensor:
    base, strides, shape = _slot_view(vec, tape)
    step = strides[0] if shape[0] > 1 else 0
    offset = tape.add_consts(np.ascontiguousarray(matrix))
    out = tape.emit(OP.affine, matrix.shape[0], a=base, sa=step, b=offset, sb=matrix.shape[1])
    _run_last(tape)
    return _result(tape, out, out_shape, False)


def dot(x: ArrayLike, y: ArrayLike) -> Tensor:
    """numpy's dot for scalars, 1-D and 2-D operands."""
    if np.ndim(x._value if isinstance(x, Tensor) else x) == 0 or np.ndim(y._value if isinstance(y, Tensor) else y) == 0:
        return multiply(x, y)
    return matmul(x, y)


def vdot(x: ArrayLike, y: ArrayLike) -> Tensor:
    return dot(ravel(x), ravel(y))


inner = vdot


def outer(x: ArrayLike, y: ArrayLike) -> Tensor:
    return multiply(reshape(ravel(x), (-1, 1)), reshape(ravel(y), (1, -1)))


def norm(x: ArrayLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Euclidean norm (Frobenius for matrices)."""
    x = _as_operand(x)
    return sqrt(sum(x * x, axis=axis, keepdims=keepdims))


# ----------------------------------------------------------------------------------------
# shape
# ----------------------------------------------------------------------------------------
def _resolve_shape(shape, size: int) -> tuple:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise ShapeError("only one dimension can be -1 in reshape")
    if -1 in shape:
        known = _size(tuple(s for s in shape if s != -1))
        if known == 0 or size % known:
            raise ShapeError(f"cannot reshape a tensor of size {size} into shape {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if _size(shape) != size:
        raise ShapeError(f"cannot reshape a tensor of size {size} into shape {shape}")
    return shape


def reshape(x: ArrayLike, shape) -> Tensor:
    x = _as_operand(x)
    shape = _resolve_shape(shape, x.size)
    tape = _recording_tape((x,))
    if tape is None:
        value = np.reshape(x._value, shape)
        return _constant(value if shape else float(value), shape, x._bool)
    base, strides, old = _slot_view(x, tape)
    step = _uniform_step(old, strides)
    if step is None:
        base, step = _contiguous(tape, (base, strides, old)), 1
    value = np.reshape(x._value, shape)
    return _on_tape(tape, base, tuple(s * step for s in _cstrides(shape)), shape,
                    value if shape else float(value), x._bool)


def ravel(x: ArrayLike) -> Tensor:
    return reshape(x, (-1,))


def squeeze(x: ArrayLike, axis: Axis = None) -> Tensor:
    x = _as_operand(x)
    axes = _normalize_axes(axis, x.ndim)
    if axes is None:
        axes = tuple(k for k, s in enumerate(x.shape) if s == 1)
    for ax in axes:
        if x.shape[ax] != 1:
            raise ShapeError(f"cannot squeeze axis {ax} of size {x.shape[ax]}")
    return reshape(x, tuple(s for k, s in enumerate(x.shape) if k not in axes))


def expand_dims(x: ArrayLike, axis: int) -> Tensor:
    x = _as_operand(x)
    ax = axis % (x.ndim + 1)
    return reshape(x, x.shape[:ax] + (1,) + x.shape[ax:])


def transpose(x: ArrayLike, axes: Optional[Sequence[int]] = None) -> Tensor:
    """A view with permuted axes: records nothing."""
    x = _as_operand(x)
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(a % x.ndim for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"axes {axes} are not a permutation of the {x.ndim} dimensions")
    value = np.transpose(x._value, axes) if x.ndim else x._value
    shape = tuple(x.shape[a] for a in axes)
    tape = _recording_tape((x,))
    if tape is None:
        return _constant(value, shape, x._bool)
    base, strides, _ = _slot_view(x, tape)
    return _on_tape(tape, base, tuple(strides[a] for a in axes), shape, value, x._bool)


def moveaxis(x: ArrayLike, source: int, destination: int) -> Tensor:
    x = _as_operand(x)
    order = [k for k in range(x.ndim) if k != source % x.ndim]
    order.insert(destination % x.ndim, source % x.ndim)
    return transpose(x, order)


def swapaxes(x: ArrayLike, axis1: int, axis2: int) -> Tensor:
    x = _as_operand(x)
    order = list(range(x.ndim))
    order[axis1], order[axis2] = order[axis2], order[axis1]
    return transpose(x, order)


def _join(tensors, axis: int, numpy_join) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ShapeError("need at least one tensor to join")
    tape = _recording_tape(tuple(tensors))
    is_bool = builtins.all(isinstance(t, Tensor) and t._bool for t in tensors)
    if tape is None:
        values = [np.asarray(t._value if isinstance(t, Tensor) else t, dtype=np.float64) for t in tensors]
        value = numpy_join(values, axis=axis)
        return _constant(value, value.shape, is_bool)
    if numpy_join is np.stack and axis == 0 and builtins.all(
            isinstance(t, Tensor) and t._tape is tape and not t._shape for t in tensors):
        # scalars recorded on this tape (nodes of a scalar graph): their slots, directly
        out = _gather(tape, 0, np.array([t._base for t in tensors], np.int64))
        return _result(tape, out, (len(tensors),), is_bool)
    positions = []
    for t in tensors:
        base, strides, shape = _slot_view(t, tape)
        positions.append(_positions(base, shape, strides))
    try:
        joined = numpy_join(positions, axis=axis)
    except ValueError as err:
        raise ShapeError(f"cannot join shapes {[p.shape for p in positions]}: {err}") from None
    out = _gather(tape, 0, joined.reshape(-1))
    return _result(tape, out, joined.shape, is_bool)


def concatenate(tensors: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis (one gather instruction)."""
    return _join(tensors, axis, np.concatenate)


def stack(tensors: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    """Join tensors along a new axis (one gather instruction)."""
    if axis == 0 and type(tensors) in (list, tuple):
        stacked = _stack_recorded_scalars(tensors)
        if stacked is not None:
            return stacked
    return _join(tensors, axis, np.stack)


def _stack_recorded_scalars(tensors) -> Optional[Tensor]:
    """Float scalars recorded on the active tape (the nodes of a scalar graph), stacked:
    one gather of their slots, with no numpy array on the way. None for anything else,
    which _join handles."""
    tape = _state.active
    if tape is None or not tensors:
        return None
    bases = []
    for t in tensors:
        if type(t) is not Tensor or t._tape is not tape or t._shape or t._bool:
            return None
        bases.append(t._base)
    n = len(bases)
    out = tape.emit(OP.gather, n, b=tape.add_slot_index(bases))
    # a gather's values are copies: set here, bit for bit what the sweep would write,
    # without a call into compiled code (~2 us, 2,500 of them in W's recording)
    values = tape._mv_values
    for k, base in enumerate(bases):
        values[out + k] = values[base]
    return _vector_on_tape(tape, out, n)


def hstack(tensors):
    return concatenate(tensors, axis=0 if builtins.all(np.ndim(_value_of(t)) == 1 for t in tensors) else 1)


def vstack(tensors):
    return concatenate([reshape(t, (1, -1)) if np.ndim(_value_of(t)) == 1 else t for t in tensors], axis=0)


def _value_of(t):
    return t._value if isinstance(t, Tensor) else t


def flip(x: ArrayLike, axis: Axis = None) -> Tensor:
    x = _as_operand(x)
    axes = _normalize_axes(axis, x.ndim) or tuple(range(x.ndim))
    key = tuple(slice(None, None, -1) if k in axes else slice(None) for k in range(x.ndim))
    return x[key]


# ----------------------------------------------------------------------------------------
# constants with numpy names
# ----------------------------------------------------------------------------------------
def _const_fn(numpy_fn):
    def fn(*args, **kwargs) -> Tensor:
        kwargs.pop("dtype", None)
        value = np.asarray(numpy_fn(*args, **kwargs), dtype=np.float64)
        return _constant(value if value.ndim else float(value), value.shape)
    fn.__name__ = numpy_fn.__name__
    fn.__doc__ = f"numpy.{numpy_fn.__name__} as a constant tensor."
    return fn


zeros = _const_fn(np.zeros)
ones = _const_fn(np.ones)
full = _const_fn(np.full)
arange = _const_fn(np.arange)
linspace = _const_fn(np.linspace)
eye = _const_fn(np.eye)


def zeros_like(x) -> Tensor:
    return zeros(np.shape(_value_of(x)))


def ones_like(x) -> Tensor:
    return ones(np.shape(_value_of(x)))


def full_like(x, fill_value) -> Tensor:
    return full(np.shape(_value_of(x)), fill_value)


def shape(x) -> tuple:
    return np.shape(_value_of(x))


def size(x) -> int:
    return int(np.size(_value_of(x)))


def ndim(x) -> int:
    return np.ndim(_value_of(x))


def asarray(x) -> Tensor:
    return _as_operand(x)


# numpy dispatch: np.sin(t), arr * t, np.sum(t), np.dot(arr, t) ...
UFUNCS = {
    "add": add, "subtract": subtract, "multiply": multiply, "divide": divide, "true_divide": divide,
    "power": power, "negative": negative, "absolute": abs, "sign": sign, "sqrt": sqrt,
    "square": square, "exp": exp, "expm1": expm1, "log": log, "log1p": log1p, "log2": log2,
    "log10": log10, "exp2": exp2, "sin": sin, "cos": cos, "tan": tan, "arcsin": arcsin,
    "arccos": arccos, "arctan": arctan, "arctan2": arctan2, "sinh": sinh, "cosh": cosh,
    "tanh": tanh, "maximum": maximum, "minimum": minimum, "less": less, "less_equal": less_equal,
    "greater": greater, "greater_equal": greater_equal, "equal": equal, "not_equal": not_equal,
    "matmul": matmul, "logical_not": logical_not, "isfinite": isfinite, "isnan": isnan,
    "positive": lambda x: x, "floor": floor, "ceil": ceil, "trunc": trunc, "rint": rint,
    "fabs": abs, "float_power": power, "conjugate": lambda x: x,
}

ARRAY_FUNCTIONS = {
    "sum": sum, "mean": mean, "var": var, "std": std, "amax": amax, "amin": amin, "max": amax,
    "min": amin, "dot": dot, "vdot": vdot, "inner": inner, "outer": outer, "matmul": matmul,
    "where": where, "clip": clip, "concatenate": concatenate, "stack": stack, "hstack": hstack,
    "vstack": vstack, "reshape": reshape, "ravel": ravel, "transpose": transpose,
    "squeeze": squeeze, "expand_dims": expand_dims, "moveaxis": moveaxis, "swapaxes": swapaxes,
    "flip": flip, "shape": shape, "size": size, "ndim": ndim, "any": any, "all": all,
    "zeros_like": zeros_like, "ones_like": ones_like, "full_like": full_like, "fix": fix,
}

del TapejitError

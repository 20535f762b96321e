"""Tensor: the eager, PyTorch-style front end that records onto a tape.

A Tensor is a strided view of tape slots (base slot, shape, element strides) plus its
value. Slicing, transposing and broadcasting a scalar make views without recording
anything; an operation on views records one instruction whose operands are runs
``base + k*step``; anything a single step cannot describe is first gathered.

Recording is per thread (``_state``). In eager mode an operation records when one of
its operands requires grad; ``backward()`` runs the Numba reverse sweep over the tape
and delivers gradients to leaves. Inside ``tj.trace`` every operation on a traced value
records onto the trace's tape, and Python branches on traced values record guards.
"""
from __future__ import annotations

import dis
import math
import os
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from ..cpu import _sweeps as sweeps
from . import inplace
from ..cpu import tiling
from ..errors import (BackwardError, DTypeError, GradientLostError, ShapeError, TapeConsumedError, TapejitError,
                      TraceError)
from ..cpu._primitive_calls import PYTHON_NAMES as PRIMITIVE_PYTHON_NAMES
from ..ops import primitives
from ..ops.table import MATH_NAMES, OP, OPS
from ..tape.tape import Tape, TapeArrays

Number = Union[int, float, bool]
ArrayLike = Union["Tensor", Number, np.ndarray, Sequence]


# ----------------------------------------------------------------------------------------
# per-thread recording state
# ----------------------------------------------------------------------------------------
class _State(threading.local):
    def __init__(self):
        self.tape: Optional[Tape] = None      # the eager tape of this thread
        self.trace: Optional[Tape] = None     # the tape of the trace running in this thread
        self.grad_enabled = True
        self.debug = False                    # tj.debug_nans(): checked paths, source lines kept
        self.eager = True                     # set by _refresh_active from the three above
        # the tape that records operations on tensors already on it: the trace's while
        # tracing, else the eager tape while grad is enabled and it is not consumed
        self.active: Optional[Tape] = None
        self.spare: Optional[Tape] = None     # the tape before: a loop's last tensors may hold it
        # while tj.checkpoint traces its segment: the tape recording around it, whose tensors
        # the segment must take as arguments (read as constants, their gradient would be lost)
        self.segment_outer: Optional[Tape] = None
        self.adjoints = np.zeros(256)         # reused by backward(): the sweep leaves it zeroed
        self.adjoints_mv = memoryview(self.adjoints)


_state = _State()


def _refresh_active() -> None:
    st = _state
    # whether a leaf that requires grad starts (or joins) the eager recording
    st.eager = not st.debug and st.trace is None and st.grad_enabled
    if st.debug:
        st.active = None           # under debug_nans every operation takes the checked path
    elif st.trace is not None:
        st.active = st.trace
    elif st.grad_enabled and st.tape is not None and not st.tape.finished:
        st.active = st.tape
    else:
        st.active = None


def _eager_tape() -> Tape:
    tape = _state.tape
    if tape is None or tape.finished:
        # references: _state, the local name, getrefcount's argument (values: the tape, its
        # memoryview and its read-only view); any live tensor or value view of the tape adds one
        if tape is not None and sys.getrefcount(tape) <= 3 and sys.getrefcount(tape.values) <= 4:
            tape.reset()   # nothing holds a tensor of it any more: reuse its buffers
        else:
            # `for ...: x = tj.tensor(...); y = f(x); y.backward()` starts each recording
            # while the previous iteration's x and y still hold the tape before: keep that
            # one aside (if small) and reuse the one before it, which is free by now
            spare = _state.spare
            _state.spare = tape if tape is not None and tape.slot_capacity <= _SPARE_SLOTS else None
            if spare is not None and sys.getrefcount(spare) <= 2 and sys.getrefcount(spare.values) <= 4:
                spare.reset()
                tape = spare
            else:
                tape = Tape(64, 256) if tape is None else Tape(max(64, tape.n_ins), max(256, tape.n_slots))
            del spare
        _state.tape = tape
        # callers record eagerly (no trace, grad enabled): the new tape is the active one
        _state.active = None if _state.debug else tape
    elif tape.n_ins > 4096 and sys.getrefcount(tape) <= 4 and sys.getrefcount(tape.values) <= 4:
        # a recording nobody can backward through any more (every tensor of it is gone,
        # no backward was called): start over instead of growing without bound
        # (references: _state.tape, _state.active, the local name, the argument)
        tape.reset()
    return tape


@contextmanager
def no_grad():
    """Within this block nothing is recorded and results do not require grad.
    (It does not apply inside ``tj.trace``, whose tape must record everything.)"""
    previous = _state.grad_enabled
    _state.grad_enabled = False
    _refresh_active()
    try:
        yield
    finally:
        _state.grad_enabled = previous
        _refresh_active()


def is_grad_enabled() -> bool:
    return _state.grad_enabled


# ----------------------------------------------------------------------------------------
# scalar values in plain Python, from the same table expressions as the sweeps
# ----------------------------------------------------------------------------------------
_PY_NAMES = {name: getattr(math, name) for name in MATH_NAMES}
_NP_NAMES = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt,
             "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
             "atan": np.arctan, "atan2": np.arctan2, "sinh": np.sinh, "cosh": np.cosh,
             "tanh": np.tanh, "pow": np.power, "abs": np.abs, "fmod": np.fmod,
             "erf": np.vectorize(math.erf, otypes=[np.float64])}
# user primitives: their kernels, one value at a time (the exceptions they raise are theirs)
_PY_NAMES.update(PRIMITIVE_PYTHON_NAMES)
_NP_NAMES.update(PRIMITIVE_PYTHON_NAMES)


def _compile_value(expr: str, names: dict):
    return eval(f"lambda a, b, d, c: {expr}", dict(names))  # noqa: S307 - table text only


_PY_VALUE = [(_compile_value(op.value, _PY_NAMES), _compile_value(op.value, _NP_NAMES))
             if op.elementwise else None for op in OPS]


def scalar_value(code: int, a: float, b: float = 0.0, d: float = 0.0, c: float = 0.0) -> float:
    """Value of an elementwise opcode on Python floats, with IEEE results where
    ``math`` would raise (log(0) = -inf, 1/0 = inf, exp(1000) = inf, sqrt(-1) = nan)."""
    fast, careful = _PY_VALUE[code]
    try:
        return fast(a, b, d, c)
    except (ValueError, OverflowError, ZeroDivisionError):
        with np.errstate(all="ignore"):
            return float(careful(np.float64(a), np.float64(b), np.float64(d), np.float64(c)))


# ----------------------------------------------------------------------------------------
# shapes and strides
# ----------------------------------------------------------------------------------------
def _cstrides(shape: tuple) -> tuple:
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _size(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def broadcast_shapes(*shapes: tuple) -> tuple:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise ShapeError(f"shapes {listed} do not broadcast") from None


def _broadcast_strides(shape: tuple, strides: tuple, out_shape: tuple) -> tuple:
    lead = len(out_shape) - len(shape)
    result = [0] * lead
    for size, stride, out_size in zip(shape, strides, out_shape[lead:]):
        result.append(stride if size == out_size else 0)
    return tuple(result)


def _uniform_step(shape: tuple, strides: tuple) -> Optional[int]:
    """The step s such that flat element k of this view is at base + k*s, if one exists."""
    step = None
    inner = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1:
            if step is None:
                step = stride // inner if inner else 0
                if step * inner != stride:
                    return None
            elif stride != step * inner:
                return None
        inner *= size
    return 0 if step is None else step


def _positions(base: int, shape: tuple, strides: tuple) -> np.ndarray:
    """Slot of every element of a view, as an int64 array of its shape."""
    pos = np.full(shape, base, dtype=np.int64)
    for axis, (size, stride) in enumerate(zip(shape, strides)):
        if stride and size > 1:
            ix = [1] * len(shape)
            ix[axis] = size
            pos += (np.arange(size, dtype=np.int64) * stride).reshape(ix)
    return pos


def _as_float_array(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DTypeError(f"unsupported dtype {arr.dtype}: tapejit differentiates real numbers "
                         "(bool, int and float arrays are converted to float64)")
    return arr.astype(np.float64, copy=False)


# ----------------------------------------------------------------------------------------
# the Tensor
# ----------------------------------------------------------------------------------------
_new = object.__new__

# The optional C recorder: Tensor's operators and the unary functions record 0-d
# operands without bytecode (see _eager.c). TAPEJIT_PURE_PYTHON=1 leaves it out.
if os.environ.get("TAPEJIT_PURE_PYTHON", "") not in ("", "0"):
    _eager = None
else:
    try:
        from . import _eager
    except ImportError:   # not compiled: the Python fast paths record the same tapes
        _eager = None


class Tensor(object if _eager is None else _eager.TensorOps):
    """An n-dimensional array that records the operations applied to it.

    Create one with ``tj.tensor(data, requires_grad=...)``; operate on it with Python
    operators and the numpy-named functions of ``tapejit``.
    """

    # A tensor on a tape sets only _value, _tape, _base, _shape, _strides, _bool: the
    # others are read only for tensors off tape (constants and leaves).
    # _version is set on leaves and constants (and on tensors changed in place), _alias_of
    # only on .data's aliases (tapejit.frontend.inplace); others read them with getattr's default
    __slots__ = ("_value", "_tape", "_base", "_strides", "_shape", "_bool", "_rg", "_grad",
                 "_leaf_serial", "_leaf_base", "_version", "_alias_of", "__weakref__")
    __array_priority__ = 1000

    # -- construction --------------------------------------------------------------------
    def __init__(self, data: ArrayLike, requires_grad: bool = False):
        if type(data) is float or type(data) is int:
            self._value = float(data)
            self._tape = None
            self._base = self._leaf_serial = self._leaf_base = 0
            self._shape = self._strides = ()
            self._bool = False
            self._rg = requires_grad is True or bool(requires_grad)
            self._grad = None
            self._version = 0
            return
        else:
            if isinstance(data, Tensor):
                data = np.asarray(data._value, dtype=np.bool_ if data._bool else np.float64)
            is_bool = isinstance(data, (bool, np.bool_)) or np.asarray(data).dtype == np.bool_
            arr = _as_float_array(data)
            _init_constant(self, arr.copy() if arr.ndim else float(arr), arr.shape, is_bool)
        if requires_grad:
            self.requires_grad = True

    # -- basic properties ------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return _size(self._shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.bool_) if self._bool else np.dtype(np.float64)

    @property
    def T(self) -> "Tensor":
        return self.transpose()

    @property
    def requires_grad(self) -> bool:
        return self._tape is not None or self._rg

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        if self._tape is not None:
            raise TapejitError("requires_grad can only be changed on leaf tensors; use detach()")
        if flag and self._bool:
            raise DTypeError("a boolean tensor cannot require grad")
        self._rg = bool(flag)
        self._version = inplace.version(self)      # leaves always carry one (_bind_leaf reads it)

    @property
    def grad(self) -> Optional["Tensor"]:
        """Accumulated gradient of a leaf (None until a backward() reaches it)."""
        return getattr(self, "_grad", None)

    @grad.setter
    def grad(self, value) -> None:
        self._grad = value if value is None or isinstance(value, Tensor) else Tensor(value)

    @property
    def is_leaf(self) -> bool:
        return self._tape is None

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    def __iter__(self) -> Iterator["Tensor"]:
        if not self._shape:
            raise TypeError("iteration over a 0-d tensor")
        tape = self._tape
        if len(self._shape) == 1 and tape is not None and tape is _state.active:
            # elements of a recorded vector: scalar views, nothing recorded
            base, step, is_bool = self._base, self._strides[0], self._bool
            # a list, not a generator, and Python floats from one tolist(): W's recording
            # iterates 2,500 softmax results
            values = self._value.tolist()
            if _eager is not None:
                return iter(_eager.scalars(tape, base, step, values, is_bool))
            return iter([_on_tape(tape, base + i * step, (), (), value, is_bool)
                         for i, value in enumerate(values)])
        return (self[i] for i in range(self._shape[0]))

    def __hash__(self) -> int:
        return id(self)

    # -- values ------------------------------------------------------------------------------
    def _check_readable(self, what: str) -> None:
        if self._tape is not None and self._tape is _state.trace:
            raise TraceError(
                f"{what} of a traced value: the trace records operations, not numbers. "
                "Keep it a tensor, or use tj.where(cond, a, b) instead of a Python branch on it")

    def numpy(self) -> np.ndarray:
        """The value as a numpy array (a copy: tensors are immutable)."""
        self._check_readable("numpy()")
        arr = np.array(self._value, dtype=np.float64)
        return arr.astype(np.bool_) if self._bool else arr

    def item(self) -> float:
        if self._tape is None and not self._shape:
            return bool(self._value) if self._bool else self._value
        self._check_readable("item()")
        if self.size != 1:
            raise ShapeError(f"item() needs a tensor with one element, this one has shape {self._shape}")
        value = self._value if not self._shape else float(np.asarray(self._value).reshape(-1)[0])
        return bool(value) if self._bool else float(value)

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self) -> float:
        if self._bool:      # float(x > 0) in a trace: a branch, recorded as bool() records it
            return float(self.__bool__())
        _refuse_element_copy(self)
        self._check_readable("float()")
        return float(self.item())

    def __int__(self) -> int:
        if self._bool:
            return int(self.__bool__())
        _refuse_element_copy(self)
        self._check_readable("int()")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        self._check_readable("conversion to a numpy array")
        if self._tape is not None or self._rg:
            # numpy copies values out here (np.asarray(t), np.array([t0, t1]), buf[:] = t):
            # the copy would carry no gradient, and backward() would be silently wrong
            raise _gradient_lost("np.asarray, np.array, buf[...] = t")
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ShapeError(f"the truth value of a tensor of shape {self._shape} is ambiguous; "
                             "use tj.where, .any() or .all()")
        value = bool(np.asarray(self._value).reshape(-1)[0]) if self._shape else bool(self._value)
        tape = self._tape
        if tape is not None and tape is _state.trace:
            _record_guard(tape, self, value)
        return value

    def __repr__(self) -> str:
        if self._tape is not None and self._tape is _state.trace:
            return f"tensor(<traced>, shape={self._shape})"
        body = np.array2string(np.asarray(self.numpy()), separator=", ", prefix="tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}{extra})"

    # -- autograd -------------------------------------------------------------------------
    def detach(self) -> "Tensor":
        """The same value, cut from the tape: no gradient flows through it."""
        if self._tape is not None and self._tape is _state.trace:
            return _elementwise(OP.stop_gradient, (self,), bool_out=self._bool)
        return _constant(self._value, self._shape, self._bool)

    def backward(self, gradient: Optional[ArrayLike] = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``gradient`` seeds the adjoint of a non-scalar tensor (the vector of a
        vector-Jacobian product). The tape is consumed unless ``retain_graph=True``."""
        tape = self._tape
        if (gradient is None and not self._shape and tape is not None and tape is _state.tape
                and not tape.finished and tape.max_run < tiling.MIN_LENGTH):
            _backward_scalar(self, tape, retain_graph)
        else:
            _backward(self, gradient, retain_graph)

    # -- in-place updates (tapejit.frontend.inplace has the rules) ------------------------------
    @property
    def data(self) -> "Tensor":
        """The value outside autograd; in-place changes to it change this tensor:
        ``p.data -= lr * g``, ``p.data.copy_(x)``, ``p.data[:] = x``."""
        return inplace.data(self)

    @data.setter
    def data(self, value: ArrayLike) -> None:
        inplace.replace_value(self, value)

    def copy_(self, src: ArrayLike) -> "Tensor":
        """Overwrite with ``src`` (broadcast to this shape), in place."""
        return inplace.update(self, lambda t, s: _broadcast_like(s, t), src, "copy_()")

    def fill_(self, value: Number) -> "Tensor":
        return inplace.update(self, lambda t, s: _broadcast_like(s, t), value, "fill_()")

    def zero_(self) -> "Tensor":
        return self.fill_(0.0)

    def add_(self, other: ArrayLike, alpha: Number = 1.0) -> "Tensor":
        return inplace.update(self, lambda t, o: t + (o if alpha == 1 else o * alpha), other, "add_()")

    def sub_(self, other: ArrayLike, alpha: Number = 1.0) -> "Tensor":
        return inplace.update(self, lambda t, o: t - (o if alpha == 1 else o * alpha), other, "sub_()")

    def mul_(self, other: ArrayLike) -> "Tensor":
        return inplace.update(self, lambda t, o: t * o, other, "mul_()")

    def div_(self, other: ArrayLike) -> "Tensor":
        return inplace.update(self, lambda t, o: t / o, other, "div_()")

    def clamp_(self, min: Optional[Number] = None, max: Optional[Number] = None) -> "Tensor":
        from .numpy_api import clip
        return inplace.update(self, lambda t, _: clip(t, min, max), None, "clamp_()")

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        self.requires_grad = requires_grad
        return self

    def clone(self) -> "Tensor":
        """A copy that records (gradients flow back through it), as PyTorch's clone()."""
        if self._tape is None and not self._rg:
            return _constant(np.array(self._value) if self._shape else self._value, self._shape, self._bool)
        return self + 0.0 if not self._bool else _elementwise(OP.ne_c, (self,), 0.0, bool_out=True)

    @property
    def version(self) -> int:
        """How many in-place updates this tensor has had (PyTorch's ``_version``)."""
        return inplace.version(self)

    # -- arithmetic ----------------------------------------------------------------------
    # The binary operators are generated below the class (_install_operators): each
    # records a 0-d tensor on the recording tape with a Python number, or with another
    # such tensor, inline; everything else goes through the general path.

    def __neg__(self):
        return _neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _elementwise(OP.abs, (self,))

    def __matmul__(self, other):
        from .numpy_api import matmul
        return matmul(self, other)

    def __rmatmul__(self, other):
        from .numpy_api import matmul
        return matmul(other, self)

    # comparisons give boolean tensors with no derivative
    def __lt__(self, other):
        return _compare(OP.lt, OP.lt_c, OP.gt_c, self, other)

    def __le__(self, other):
        return _compare(OP.le, OP.le_c, OP.ge_c, self, other)

    def __gt__(self, other):
        return _compare(OP.gt, OP.gt_c, OP.lt_c, self, other)

    def __ge__(self, other):
        return _compare(OP.ge, OP.ge_c, OP.le_c, self, other)

    def __eq__(self, other):
        return _compare(OP.eq, OP.eq_c, OP.eq_c, self, other)

    def __ne__(self, other):
        return _compare(OP.ne, OP.ne_c, OP.ne_c, self, other)

    def __invert__(self):
        if not self._bool:
            raise DTypeError("~ is defined for boolean tensors only")
        return _elementwise(OP.eq_c, (self,), 0.0, bool_out=True)

    def __and__(self, other):
        return _logical(OP.mul, OP.mul_c, self, other)

    __rand__ = __and__

    def __or__(self, other):
        return _logical(OP.maximum, OP.maximum_c, self, other)

    __ror__ = __or__

    # -- shape ----------------------------------------------------------------------------
    def __getitem__(self, key) -> "Tensor":
        return _getitem(self, key)

    def __setitem__(self, key, value):
        inplace.set_item(self, key, value)

    def reshape(self, *shape) -> "Tensor":
        from .numpy_api import reshape
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def flatten(self) -> "Tensor":
        return self.reshape(-1)

    ravel = flatten

    def transpose(self, *axes) -> "Tensor":
        from .numpy_api import transpose
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return transpose(self, axes or None)

    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        from .numpy_api import sum as _sum
        return _sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        from .numpy_api import mean
        return mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False) -> "Tensor":
        from .numpy_api import amax
        return amax(self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims: bool = False) -> "Tensor":
        from .numpy_api import amin
        return amin(self, axis=axis, keepdims=keepdims)

    def dot(self, other) -> "Tensor":
        from .numpy_api import dot
        return dot(self, other)

    def any(self) -> "Tensor":
        from .numpy_api import any as _any
        return _any(self)

    def all(self) -> "Tensor":
        from .numpy_api import all as _all
        return _all(self)

    # -- numpy interoperability ----------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from ._numpy_protocol import array_ufunc
        return array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from ._numpy_protocol import array_function
        return array_function(func, args, kwargs)


def _broadcast_like(src, t: Tensor) -> Tensor:
    """``src`` broadcast to t's shape (copy_ and fill_'s new value), recorded if it records."""
    from .composite import broadcast_to
    if not isinstance(src, Tensor):
        arr = np.asarray(src)
        return _constant(np.array(np.broadcast_to(arr, t._shape), dtype=np.bool_ if t._bool else np.float64)
                         if t._shape else (bool(arr) if t._bool else float(arr)), t._shape, t._bool)
    if src._shape == t._shape:
        return src if src._tape is not None else _constant(src._value, src._shape, src._bool)
    return broadcast_to(src, t._shape)


inplace.install(Tensor)


def _gradient_lost(how: str) -> GradientLostError:
    return GradientLostError(
        f"numpy is about to copy a tensor that requires grad into an ndarray ({how}), which "
        "would lose its gradient. Keep it a tensor: build arrays with tj.stack / tj.concatenate "
        "/ tj.where; or, for a constant copy, write t.detach().numpy() (float(t) for a number)")


_STORE_SUBSCR = dis.opmap["STORE_SUBSCR"]


def _refuse_element_copy(t: Tensor) -> None:
    """``arr[i] = t`` makes numpy call float(t): the caller's frame is then at a
    STORE_SUBSCR (an explicit float(t) or np.float64(t) is at a CALL). A Python list's
    item assignment never calls float(), so only numpy's does this."""
    if t._tape is None and not t._rg:
        return
    frame = sys._getframe(2)
    if frame.f_code.co_code[frame.f_lasti] == _STORE_SUBSCR:
        raise _gradient_lost("arr[i] = t")


def _init_constant(t: Tensor, value, shape: tuple, is_bool: bool) -> None:
    t._value = value
    t._tape = None
    t._base = 0
    t._strides = _cstrides(shape)
    t._shape = shape
    t._bool = is_bool
    t._rg = False
    t._grad = None
    t._leaf_serial = 0
    t._leaf_base = 0
    t._version = 0


def _constant(value, shape: tuple, is_bool: bool = False) -> Tensor:
    t = _new(Tensor)
    _init_constant(t, value, shape, is_bool)
    return t


def _on_tape(tape: Tape, base: int, strides: tuple, shape: tuple, value, is_bool: bool) -> Tensor:
    t = _new(Tensor)
    t._value = value
    t._tape = tape
    t._base = base
    t._strides = strides
    t._shape = shape
    t._bool = is_bool
    return t


# ----------------------------------------------------------------------------------------
# scalar fast paths: a 0-d operand on the recording tape, recorded without numpy
# ----------------------------------------------------------------------------------------
_PYNUM = frozenset((float, int))


#: the largest tape (in slots) kept aside for reuse: bigger ones cost more memory than allocation time
_SPARE_SLOTS = 1 << 16


def _is_scalar_leaf(x: Tensor) -> bool:
    """A 0-d leaf that requires grad, used where the eager tape records."""
    return x._tape is None and x._rg and not x._shape and _state.eager


# x's recording tape, or None: the active tape when x is on it or is a leaf already bound
# to it (a leaf's _leaf_serial is read only when it has no tape)
_RESOLVE_TAPE = """if tape is None:
    tape = _state.active
    if tape is not None and (x._leaf_serial != tape.serial or not x._rg):
        tape = None
elif tape is not _state.active:
    tape = None"""


def _indented(block: str, indent: str) -> str:
    return "\n".join(indent + line for line in block.split("\n"))


_FAST_TEMPLATE = """
def apply({params}):
    {load_tape}
{resolve_tape}
    if tape is None or x._shape{extra_check}:
        {slow}
    a = x._value{load_b}
    try:
        value = {expr}
    except (ValueError, OverflowError, ZeroDivisionError):
        value = scalar_value({code}, a, {b_or_zero}, 0.0, {c_or_zero})
    i = tape.n_ins
    if i == tape.ins_capacity:
        tape._grow_ins()
    out = tape.n_slots
    if out == tape.slot_capacity:
        tape._grow_slots(out + 1)
    tape._mv_ops[i] = {code}
    tape._mv_out[i] = out
    tape._mv_a[i] = x._base{store_b}{store_c}
    tape._mv_values[out] = value
    tape.n_ins = i + 1
    tape.n_slots = out + 1
    t = _new(Tensor)
    t._value = value
    t._tape = tape
    t._base = out
    t._shape = t._strides = ()
    t._bool = False
    return t
"""

# numpy-named functions also take Python numbers and arrays: those have no _tape
_LOAD_TAPE_ANY = """try:
        tape = x._tape
    except AttributeError:
        return M._elementwise({code}, (x,){c_arg})"""

# y on the tape, or a leaf bound to it (a leaf's _leaf_serial is read only when it has no tape)
_Y_ON_TAPE = """ or y._shape \\
            or (y._tape is not tape and (y._tape is not None or y._leaf_serial != tape.serial or not y._rg))"""

_SLOW_UNARY = """tape = M._bind_scalar_leaf(x)
        if tape is None:
            return M._elementwise({code}, (x,){c_arg})"""

_SLOW_BINARY = """if x._shape or y._shape or not (x._tape is None or x._tape is _state.active) \\
                or not (y._tape is None or y._tape is _state.active) \\
                or (x._tape is None and not M._is_scalar_leaf(x)) or (y._tape is None and not M._is_scalar_leaf(y)):
            return M._elementwise({code}, (x, y))
        tape = M._eager_tape()
        if x._tape is None:
            M._bind_leaf(x, tape)
        if y._tape is None:
            M._bind_leaf(y, tape)"""


def _fast_path(code: int, kind: str):
    """A scalar fast path for one opcode, with the table's value expression inlined
    (generated here, from the same table as the sweeps)."""
    from ..codegen.render import render_expr
    expr = render_expr(OPS[code].value, {"a": "a", "b": "b", "c": "c"})
    binary = kind == "binary"
    with_c = kind == "number"
    source = _FAST_TEMPLATE.format(
        params="x, y" if binary else ("x, c" if with_c else "x"),
        load_tape=(_LOAD_TAPE_ANY.format(code=code, c_arg=", float(c)" if with_c else "")
                   if kind == "unary" else "tape = x._tape"),
        extra_check=_Y_ON_TAPE if binary else "", resolve_tape=_indented(_RESOLVE_TAPE, "    "),
        slow=(_SLOW_BINARY if binary else _SLOW_UNARY).format(code=code, c_arg=", float(c)" if with_c else ""),
        load_b="\n    b = y._value" if binary else "",
        expr=expr, code=code,
        b_or_zero="b" if binary else "0.0", c_or_zero="float(c)" if with_c else "0.0",
        store_b="\n    tape._mv_b[i] = y._base" if binary else "",
        store_c="\n    tape._mv_cv[i] = c" if with_c else "",
    )
    namespace = dict(_PY_NAMES, abs=abs, Tensor=Tensor, _state=_state, _new=_new, scalar_value=scalar_value,
                     M=sys.modules[__name__])   # slow paths reach the module's later definitions
    exec(compile(source, f"<tapejit fast path: {OPS[code].name}>", "exec"), namespace)  # noqa: S102
    return namespace["apply"]


def _fast_with_number(code: int):
    """x op c for a 0-d tensor x and a Python number c."""
    return _fast_path(code, "number")


def _fast_unary(code: int):
    return _fast_path(code, "unary")


def _fast_binary(code: int):
    """x op y for two 0-d tensors."""
    return _fast_path(code, "binary")


_add_c = _fast_with_number(OP.add_c)
_mul_c = _fast_with_number(OP.mul_c)
_rsub_c = _fast_with_number(OP.rsub_c)
_div_c = _fast_with_number(OP.div_c)
_rdiv_c = _fast_with_number(OP.rdiv_c)
_pow_c = _fast_with_number(OP.pow_c)
_rpow_c = _fast_with_number(OP.rpow_c)
_add = _fast_binary(OP.add)
_sub = _fast_binary(OP.sub)
_mul = _fast_binary(OP.mul)
_div = _fast_binary(OP.div)
_neg = _fast_unary(OP.neg)
_square = _fast_unary(OP.square)

_OPERATOR_TEMPLATE = """
def {name}(x, other):
    if type(other) in _PYNUM:
        c = {c_value}
        tape = x._tape
{resolve_tape}
        if tape is not None and not x._shape:
            a = x._value
            try:
                value = {expr_c}
            except (ValueError, OverflowError, ZeroDivisionError):
                value = scalar_value({code_c}, a, 0.0, 0.0, float(c))
            i = tape.n_ins
            if i == tape.ins_capacity:
                tape._grow_ins()
            out = tape.n_slots
            if out == tape.slot_capacity:
                tape._grow_slots(out + 1)
            tape._mv_ops[i] = {code_c}
            tape._mv_out[i] = out
            tape._mv_a[i] = x._base
            tape._mv_cv[i] = c
            tape._mv_values[out] = value
            tape.n_ins = i + 1
            tape.n_slots = out + 1
            t = _new(Tensor)
            t._value = value
            t._tape = tape
            t._base = out
            t._shape = t._strides = ()
            t._bool = False
            return t
        return number_path(x, c)
    {tensor_case}
    return M._binary({code_tt_or_none}, {code_c_fwd}, {code_c_rev}, {args})
"""

_TENSOR_CASE = """if type(other) is Tensor:
        return tensor_path(x, other)"""


def _install_operators():
    """Generate Tensor's binary operators from the table's value expressions."""
    from ..codegen.render import render_expr
    specs = [
        # name, immediate opcode, c from other, tensor opcode, reflected, general-path codes
        ("__add__", OP.add_c, "other", OP.add, False, (OP.add, OP.add_c, OP.add_c)),
        ("__radd__", OP.add_c, "other", None, True, (OP.add, OP.add_c, OP.add_c)),
        ("__sub__", OP.add_c, "-other", OP.sub, False, (OP.sub, None, OP.rsub_c)),
        ("__rsub__", OP.rsub_c, "other", None, True, (OP.sub, None, OP.rsub_c)),
        ("__mul__", OP.mul_c, "other", OP.mul, False, (OP.mul, OP.mul_c, OP.mul_c)),
        ("__rmul__", OP.mul_c, "other", None, True, (OP.mul, OP.mul_c, OP.mul_c)),
        ("__truediv__", OP.div_c, "other", OP.div, False, (OP.div, OP.div_c, OP.rdiv_c)),
        ("__rtruediv__", OP.rdiv_c, "other", None, True, (OP.div, OP.div_c, OP.rdiv_c)),
        ("__rpow__", OP.rpow_c, "other", None, True, (OP.pow, OP.pow_c, OP.rpow_c)),
    ]
    for name, code_c, c_value, code_tt, reflected, (g_tt, g_c, g_rc) in specs:
        source = _OPERATOR_TEMPLATE.format(
            name=name, c_value=c_value, code_c=code_c,
            expr_c=render_expr(OPS[code_c].value, {"a": "a", "c": "c"}),
            tensor_case=_TENSOR_CASE if code_tt is not None else "",
            code_tt_or_none=g_tt, code_c_fwd=g_c, code_c_rev=g_rc,
            args="other, x" if reflected else "x, other", resolve_tape=_indented(_RESOLVE_TAPE, "        "))
        namespace = dict(_PY_NAMES, abs=abs, Tensor=Tensor, _state=_state, _new=_new, _PYNUM=_PYNUM,
                         scalar_value=scalar_value, M=sys.modules[__name__],
                         number_path=_fast_with_number(code_c),
                         tensor_path=_fast_binary(code_tt) if code_tt is not None else None)
        exec(compile(source, f"<tapejit operator {name}>", "exec"), namespace)  # noqa: S102
        setattr(Tensor, name, namespace[name])


def _pow(x, other):
    if type(other) in _PYNUM:
        # numpy's fast power: x*x is pow(x, 2) correctly rounded, and far cheaper
        return _square(x) if other == 2 else _pow_c(x, other)
    return _binary(OP.pow, OP.pow_c, OP.rpow_c, x, other)


Tensor.__pow__ = _pow
_install_operators()


def _accelerated(code: int, fn):
    """fn, a numpy-named unary function, with its 0-d recording done in C when compiled."""
    return fn if _eager is None else _eager.Unary(code, fn)


def tensor(data: ArrayLike, requires_grad: bool = False) -> Tensor:
    """A new leaf tensor holding a float64 copy of ``data`` (bool stays bool)."""
    return Tensor(data, requires_grad=requires_grad)


def as_tensor(x: ArrayLike) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# ----------------------------------------------------------------------------------------
# which tape records an operation
# ----------------------------------------------------------------------------------------
def _recording_tape(args) -> Optional[Tape]:
    trace = _state.trace
    if trace is not None:
        for x in args:
            if type(x) is Tensor and x._tape is trace:
                return trace
        return None
    if not _state.grad_enabled:
        return None
    tape = None
    for x in args:
        if type(x) is not Tensor:
            continue
        t = x._tape
        if t is not None:
            if t.finished:
                raise TapeConsumedError(
                    "this tensor was computed on a tape already consumed by backward(); "
                    "recompute it, call backward(retain_graph=True), or use .detach()")
            if t is not _state.tape:
                raise TapejitError("this tensor was recorded in another thread (recording is per "
                                   "thread); detach() it to use its value here")
            tape = t
        elif x._rg and tape is None:
            tape = _eager_tape()
    return tape


def _slot_view(x, tape: Tape):
    """(base, strides, shape) of an operand on ``tape``, recording what it needs."""
    if type(x) is Tensor:
        if x._tape is tape:
            return x._base, x._strides, x._shape
        if x._tape is None and x._rg and _state.trace is None:
            return _bind_leaf(x, tape), x._strides, x._shape
        if _state.segment_outer is not None and (x._tape is _state.segment_outer or x._rg):
            raise TraceError("tj.checkpoint: the segment reads a tensor recorded outside it; pass it to the "
                             "segment as an argument (as a constant its gradient would be lost)")
        value, shape = x._value, x._shape
    else:
        value = _as_float_array(x)
        shape = value.shape
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 1:
        base = tape.emit(OP.fill, 1, c=float(arr.reshape(-1)[0]))
        tape.values[base] = float(arr.reshape(-1)[0])
        return base, (0,) * len(shape), shape
    offset = tape.add_consts(arr)
    base = tape.emit(OP.const, arr.size, b=offset)
    tape.values[base: base + arr.size] = arr.reshape(-1)
    return base, _cstrides(shape), shape


def _bind_scalar_leaf(x) -> Optional[Tape]:
    """The eager tape, with x bound to it, when x is a 0-d leaf that starts or joins the
    recording; None otherwise (the general path decides)."""
    if type(x) is not Tensor or not _is_scalar_leaf(x):
        return None
    tape = _eager_tape()
    _bind_leaf(x, tape)
    return tape


def _bind_leaf(x: Tensor, tape: Tape) -> int:
    """Record a leaf as an input of this tape, once per tape."""
    if x._leaf_serial == tape.serial:
        return x._leaf_base
    if x._shape:
        n = x.size
        base = tape.emit(OP.input, n)
        tape.values[base: base + n] = np.asarray(x._value).reshape(-1)
    else:
        base = tape.emit_scalar(OP.input, 0, 0, 0, 0.0, x._value)
    if not tape.leaves:
        tape.inplace_mark = inplace._writes[0]
    tape.leaves.append((x, base, x._version))     # every leaf has one (_init_constant, __init__)
    x._leaf_serial = tape.serial
    # a leaf's _base is its slot on the tape it was last bound to (read by the fast paths)
    x._leaf_base = x._base = base
    return base


def _run_last(tape: Tape) -> None:
    """Compute the values of the instruction just recorded, with the replay's own code."""
    i = tape.n_ins - 1
    sweeps.forward_vector(tape.ops, tape.ins, tape.cv, tape.consts, tape.idx, tape.values, i, i + 1)


def _debug_record(tape: Tape, out: int, value) -> None:
    from . import debug
    tape.locations[tape.n_ins - 1] = debug.user_location()
    if _state.trace is None:
        debug.check_eager(tape, out, value)


def _result(tape: Tape, base: int, shape: tuple, is_bool: bool) -> Tensor:
    if _state.debug:
        _debug_record(tape, base, tape.values[base: base + _size(shape)])
    if shape:
        value = tape.readonly_values[base: base + _size(shape)].reshape(shape)
    else:
        value = float(tape.values[base])
    return _on_tape(tape, base, _cstrides(shape), shape, value, is_bool)


def _vector_on_tape(tape: Tape, base: int, n: int) -> Tensor:
    """_result for a float vector, on the fast paths (never under debug_nans, which
    turns them off)."""
    value = tape.readonly_values[base: base + n]
    return _on_tape(tape, base, (1,), (n,), value, False)


def _run_of(tape: Tape, view, out_shape: tuple) -> tuple:
    """(base, step) addressing an operand broadcast to out_shape, gathering if needed."""
    base, strides, shape = view
    bstrides = _broadcast_strides(shape, strides, out_shape)
    step = _uniform_step(out_shape, bstrides)
    if step is not None:
        return base, step
    if _size(out_shape) >= _PRODUCT_BROADCAST_MIN:
        out = _broadcast_product(tape, base, out_shape, bstrides)
        if out is not None:
            return out, 1
    offsets = _positions(0, out_shape, bstrides).reshape(-1)
    return _gather(tape, base, offsets), 1


#: from this many slots, a row or column broadcast (a bias added to every row, a row's
#: maximum subtracted from it) is recorded as a rank-1 matrix product, ones @ row or
#: column @ ones: no index per slot in the pool, and BLAS forward and in reverse. The
#: digits MLP's bias, (64,) over 1797 rows: 1.1 -> 0.3 ms for the add's value and gradient
_PRODUCT_BROADCAST_MIN = 256


def _broadcast_product(tape: Tape, base: int, out_shape: tuple, bstrides: tuple) -> Optional[int]:
    """The first slot of the broadcast as a matmul instruction, or None if it is not a
    contiguous run repeated along leading axes (rows) or trailing ones (columns)."""
    dims = [(s, st) for s, st in zip(out_shape, bstrides) if s != 1]

    def contiguous(part) -> bool:
        expected = 1
        for size, stride in reversed(part):
            if stride != expected:
                return False
            expected *= size
        return True
    for k in range(1, len(dims)):
        lead, tail = dims[:k], dims[k:]
        n_lead, n_tail = _size(tuple(s for s, _ in lead)), _size(tuple(s for s, _ in tail))
        if all(st == 0 for _, st in lead) and contiguous(tail):          # ones(n_lead, 1) @ run(1, n_tail)
            ones = tape.emit(OP.fill, n_lead, c=1.0)
            _run_last(tape)
            out = tape.emit(OP.matmul, n_lead * n_tail, a=ones, sa=1, b=base, sb=n_tail, c=1.0)
        elif all(st == 0 for _, st in tail) and contiguous(lead):        # run(n_lead, 1) @ ones(1, n_tail)
            ones = tape.emit(OP.fill, n_tail, c=1.0)
            _run_last(tape)
            out = tape.emit(OP.matmul, n_lead * n_tail, a=base, sa=1, b=ones, sb=n_tail, c=2.0)
        else:
            continue
        _run_last(tape)
        return out
    return None


def _gather(tape: Tape, base: int, offsets: np.ndarray) -> int:
    start = tape.add_index(offsets)
    out = tape.emit(OP.gather, offsets.size, a=base, b=start)
    _run_last(tape)
    return out


# ----------------------------------------------------------------------------------------
# elementwise operations
# ----------------------------------------------------------------------------------------
def _contiguous(tape: Tape, view) -> int:
    """Base slot of a contiguous copy of the view (the view itself when it already is)."""
    base, strides, shape = view
    if _uniform_step(shape, strides) == 1 or _size(shape) <= 1:
        return base
    return _gather(tape, 0, _positions(base, shape, strides).reshape(-1))


def _is_number(x) -> bool:
    return type(x) in (float, int, bool) or isinstance(x, (np.floating, np.integer, np.bool_))


def _is_scalar_operand(x) -> bool:
    return (type(x) is Tensor and not x._shape) or type(x) in (float, int, bool)


def _binary(code: int, code_c: Optional[int], code_rc: int, x, y) -> Tensor:
    """x op y, using the immediate form of the opcode when one side is a Python number."""
    if _is_number(y) and code_c is not None and type(x) is Tensor:
        return _elementwise(code_c, (x,), float(y))
    if _is_number(x) and type(y) is Tensor:
        return _elementwise(code_rc, (y,), float(x))
    return _elementwise(code, (x, y))


def _compare(code: int, code_c: int, code_rc: int, x, y) -> Tensor:
    if _is_number(y) and type(x) is Tensor:
        return _elementwise(code_c, (x,), float(y), bool_out=True)
    if _is_number(x) and type(y) is Tensor:
        return _elementwise(code_rc, (y,), float(x), bool_out=True)
    return _elementwise(code, (x, y), bool_out=True)


def _logical(code: int, code_c: int, x, y) -> Tensor:
    for t in (x, y):
        if isinstance(t, Tensor) and not t._bool:
            raise DTypeError("&, | are defined for boolean tensors only")
    if _is_number(y):
        return _elementwise(code_c, (x,), float(bool(y)), bool_out=True)
    return _elementwise(code, (x, y), bool_out=True)


def _elementwise(code: int, args: tuple, c: float = 0.0, bool_out: bool = False) -> Tensor:
    tape = _recording_tape(args)
    if tape is None:
        return _constant_elementwise(code, args, c, bool_out)
    if all(_is_scalar_operand(x) for x in args):
        return _record_scalar(tape, code, args, c, bool_out)
    return _record_elementwise(tape, code, args, c, bool_out)


def _scalar_slot(x, tape: Tape) -> tuple:
    """(slot, value) of a 0-d operand."""
    if type(x) is Tensor:
        if x._tape is tape:
            return x._base, x._value
        if x._tape is None and x._rg and _state.trace is None:
            return _bind_leaf(x, tape), x._value
        value = float(x._value)
    else:
        value = float(x)
    return tape.emit_scalar(OP.fill, 0, 0, 0, value, value), value


def _record_scalar(tape: Tape, code: int, args: tuple, c: float, bool_out: bool) -> Tensor:
    slots = [0, 0, 0]
    vals = [0.0, 0.0, 0.0]
    for k, x in enumerate(args):
        slots[k], vals[k] = _scalar_slot(x, tape)
    value = scalar_value(code, vals[0], vals[1], vals[2], c)
    out = tape.emit_scalar(code, slots[0], slots[1], slots[2], c, value)
    if _state.debug:
        _debug_record(tape, out, value)
    return _on_tape(tape, out, (), (), value, bool_out)


def _record_elementwise(tape: Tape, code: int, args: tuple, c: float, bool_out: bool) -> Tensor:
    views = [_slot_view(x, tape) for x in args]
    out_shape = broadcast_shapes(*[v[2] for v in views]) if views else ()
    runs = [_run_of(tape, v, out_shape) for v in views] + [(0, 0)] * (3 - len(views))
    n = _size(out_shape)
    (a, sa), (b, sb), (d, sd) = runs
    out = tape.emit(code, n, a, sa, b, sb, d, sd, c)
    _run_last(tape)
    return _result(tape, out, out_shape, bool_out)


def _constant_elementwise(code: int, args: tuple, c: float, bool_out: bool) -> Tensor:
    """Arithmetic on values that require no grad: computed, not recorded."""
    values = []
    for x in args:
        if type(x) is Tensor:
            values.append(x._value)
        elif type(x) in (float, int, bool):
            values.append(float(x))
        else:
            values.append(_as_float_array(x))
    if all(type(v) is float for v in values):
        padded = values + [0.0] * (3 - len(values))
        return _constant(scalar_value(code, *padded, c), (), bool_out)
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    out_shape = broadcast_shapes(*[a.shape for a in arrays]) if arrays else ()
    flat = []
    for arr in arrays:
        if arr.size == 1:
            flat.append((arr.reshape(1), 0))
        else:
            flat.append((np.ascontiguousarray(np.broadcast_to(arr, out_shape)).reshape(-1), 1))
    flat += [(np.zeros(1), 0)] * (3 - len(flat))
    # read-only views all: Numba compiles once per mix of writeable and read-only arrays
    operands = []
    for arr, step in flat:
        view = arr.view()
        view.flags.writeable = False
        operands.append((view, step))
    out = np.empty(_size(out_shape), np.float64)
    (xa, sa), (xb, sb), (xd, sd) = operands
    sweeps.elementwise_values(code, xa, sa, xb, sb, xd, sd, c, out)
    value = out.reshape(out_shape) if out_shape else float(out[0])
    return _constant(value, out_shape, bool_out)


# ----------------------------------------------------------------------------------------
# guards: Python control flow on traced values
# ----------------------------------------------------------------------------------------
def _record_guard(tape: Tape, t: Tensor, value: bool) -> None:
    """Record that the replay must see the same truth value as the trace did."""
    if t._bool:
        cond = t
    else:
        cond = _elementwise(OP.ne_c, (t.reshape(()) if t._shape else t,), 0.0, bool_out=True)
    cond = cond.reshape(()) if cond._shape else cond
    slot = tape.emit_scalar(OP.eq_c, cond._base, 0, 0, 1.0 if value else 0.0, 1.0)
    tape.guards.append(slot)


# ----------------------------------------------------------------------------------------
# indexing
# ----------------------------------------------------------------------------------------
def _basic_index(shape: tuple, strides: tuple, key: tuple):
    """Offset, shape and strides of a view under basic indexing (ints, slices, None, ...)."""
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    if n_real > len(shape):
        raise IndexError(f"too many indices for a tensor of dimension {len(shape)}")
    expanded = []
    for k in key:
        if k is Ellipsis:
            expanded += [slice(None)] * (len(shape) - n_real)
        else:
            expanded.append(k)
    expanded += [slice(None)] * (len(shape) - sum(1 for k in expanded if k is not None))
    offset, out_shape, out_strides = 0, [], []
    axis = 0
    for k in expanded:
        if k is None:
            out_shape.append(1)
            out_strides.append(0)
            continue
        size, stride = shape[axis], strides[axis]
        if isinstance(k, slice):
            start, stop, step = k.indices(size)
            length = len(range(start, stop, step))
            offset += start * stride if length else 0
            out_shape.append(length)
            out_strides.append(stride * step)
        else:
            i = int(k)
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {size}")
            offset += (i % size) * stride
        axis += 1
    return offset, tuple(out_shape), tuple(out_strides)


def _getitem(t: Tensor, key) -> Tensor:
    if not isinstance(key, tuple):
        key = (key,)
    key = tuple(_index_value(k) for k in key)
    tape = _recording_tape((t,))
    if tape is None:
        value = np.asarray(t._value)[key]
        value = value if value.ndim else float(value)
        return _constant(value, np.shape(value), t._bool)
    base, strides, shape = _slot_view(t, tape)
    if all(k is None or k is Ellipsis or isinstance(k, slice) or _is_int(k) for k in key):
        offset, shape, strides = _basic_index(shape, strides, key)
        value = np.asarray(t._value)[key]
        value = value if value.ndim else float(value)
        return _on_tape(tape, base + offset, strides, shape, value, t._bool)
    positions = _positions(base, shape, strides)[key]
    return _gather_positions(tape, positions, t._bool)


def _gather_positions(tape: Tape, positions: np.ndarray, is_bool: bool) -> Tensor:
    shape = positions.shape
    out = _gather(tape, 0, positions.reshape(-1))
    return _result(tape, out, shape, is_bool)


def _is_int(k) -> bool:
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def _index_value(k):
    if isinstance(k, Tensor):
        if k._tape is not None or k._rg:
            raise TapejitError("indexing with a recorded tensor is not supported: the index must "
                               "be a constant (use tj.where for data-dependent selection)")
        arr = np.asarray(k._value)
        return arr.astype(bool) if k._bool else arr.astype(np.int64)
    if isinstance(k, list):
        arr = np.asarray(k)
        return arr
    return k


# ----------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------
def _backward(t: Tensor, gradient, retain_graph: bool) -> None:
    tape = t._tape
    if tape is None:
        if not t._rg:
            raise BackwardError("backward() on a tensor that does not require grad")
        _accumulate(t, _seed(t, gradient))
        return
    if tape is _state.trace:
        raise TraceError("backward() inside tj.trace: the trace's Function computes gradients (f.grad)")
    if tape.finished:
        raise TapeConsumedError("backward() through a tape that was already consumed by an earlier "
                                "backward(); pass retain_graph=True to the first call to keep it")
    g = _adjoint_buffer(tape.n_slots)
    last = tape.n_ins
    if not t._shape and gradient is None:
        g[t._base] = 1.0
    else:
        seed = _seed(t, gradient)
        if t._shape:
            np.add.at(g, _positions(t._base, t._shape, t._strides).reshape(-1), seed.reshape(-1))
        else:
            g[t._base] = seed
    if last > 64:
        # instructions after the one that wrote t cannot influence it
        last = int(np.searchsorted(tape.ins[0, :last], t._base + _max_offset(t), side="right"))
    try:
        if tape.max_run >= tiling.MIN_LENGTH:
            arrays = TapeArrays(tape.ops[:last], np.ascontiguousarray(tape.ins[:, :last]), tape.cv[:last],
                                tape.consts[:tape.n_consts], tape.idx[:tape.n_idx], tape.n_slots)
            keep = _positions(t._base, t._shape, t._strides).reshape(-1)
            tiling.reverse(tiling.cached_plan(arrays, keep), arrays, tape.values, g)
        else:
            sweeps.reverse_vector(tape.ops, tape.ins, tape.cv, tape.consts, tape.idx, tape.values, g, 0, last)
    except BaseException:
        _zero_adjoints()
        raise
    _deliver(tape, retain_graph)


def _zero_adjoints() -> None:
    """After a sweep that raised (a user primitive): the adjoints it left, zeroed, since
    every backward() counts on finding this thread's buffer zero."""
    _state.adjoints[:] = 0.0


#: reverse_vector's compiled code for the eager tape's argument types, called without the
#: dispatcher's type resolution (~100 ns of a 0.4 us call). Safe only because the eager
#: tape's arrays always have these types: Tape allocates every one of them.
_eager_reverse: list = [None]


def _compiled_entry(dispatcher, args):
    """Compile (or load) ``dispatcher`` for ``args`` and return its compiled entry point,
    or the dispatcher itself where Numba does not expose one."""
    dispatcher(*args[:-1], 0)       # an empty sweep: compiles or loads, computes nothing
    try:
        from numba import typeof
        entry = dispatcher.overloads[tuple(typeof(a) for a in args)].entry_point
    except (AttributeError, KeyError, TypeError):
        entry = dispatcher
    return entry


def _backward_scalar(t: Tensor, tape: Tape, retain_graph: bool) -> None:
    """_backward for a 0-d tensor of this thread's recording tape made of scalar
    instructions, with no gradient argument (Tensor.backward checks all that): the common
    eager case, straight to the reverse sweep's compiled code."""
    g = _adjoint_buffer(tape.n_slots)
    last = tape.n_ins
    _state.adjoints_mv[t._base] = 1.0
    if last > 64:
        # instructions after the one that wrote t cannot influence it
        last = int(np.searchsorted(tape.ins[0, :last], t._base, side="right"))
    reverse = _eager_reverse[0]
    if reverse is None:
        reverse = _eager_reverse[0] = _compiled_entry(
            sweeps.reverse_vector, (tape.ops, tape.ins, tape.cv, tape.consts, tape.idx, tape.values, g, 0, last))
    try:
        reverse(tape.ops, tape.ins, tape.cv, tape.consts, tape.idx, tape.values, g, 0, last)
    except BaseException:
        _zero_adjoints()
        raise
    _deliver(tape, retain_graph)


def _adjoint_buffer(n_slots: int) -> np.ndarray:
    """This thread's adjoint array, grown to n_slots (the sweeps leave it zeroed)."""
    st = _state
    if len(st.adjoints) < n_slots:
        st.adjoints = np.zeros(max(n_slots, 2 * len(st.adjoints)))
        st.adjoints_mv = memoryview(st.adjoints)
    return st.adjoints


def _deliver(tape: Tape, retain_graph: bool) -> None:
    """Accumulate the leaves' adjoints into their .grad, zero them, consume the tape.
    (The sweep zeroes every adjoint it consumes; inputs are read, then zeroed here.)"""
    g, g_mv = _state.adjoints, _state.adjoints_mv
    # the common case inline: no in-place write since the first leaf was bound
    leaves = tape.leaves if tape.inplace_mark == inplace._writes[0] else inplace.current_bindings(tape, g)
    for leaf, base, _ in leaves:
        if leaf._shape:
            n = _size(leaf._shape)
            _accumulate(leaf, g[base: base + n].reshape(leaf._shape).copy())
            g[base: base + n] = 0.0
        else:
            _accumulate(leaf, g_mv[base])
            g_mv[base] = 0.0
    if not retain_graph:
        tape.finished = True
        if _state.active is tape:
            _state.active = None


def _max_offset(t: Tensor) -> int:
    return sum((s - 1) * st for s, st in zip(t._shape, t._strides) if st > 0 and s > 0)


def _seed(t: Tensor, gradient):
    if gradient is None:
        if t.size != 1:
            raise BackwardError(f"backward() on a tensor of shape {t._shape} needs a gradient "
                                "argument of that shape (grad is implied only for scalars)")
        return np.ones(t._shape) if t._shape else 1.0
    g = np.asarray(gradient._value if isinstance(gradient, Tensor) else gradient, dtype=np.float64)
    if g.shape != t._shape:
        raise ShapeError(f"gradient has shape {g.shape} but the tensor has shape {t._shape}")
    return g if t._shape else float(g)


def _accumulate(leaf: Tensor, grad) -> None:
    old = leaf._grad
    if not leaf._shape:
        grad = float(grad) if old is None else old._value + grad
        t = _new(Tensor)
        t._value = grad
        t._tape = None
        t._base = t._leaf_serial = t._leaf_base = 0
        t._shape = t._strides = ()
        t._bool = t._rg = False
        t._grad = None
        t._version = 0
        leaf._grad = t
    else:
        leaf._grad = _constant(np.array(grad) if old is None else old._value + grad, leaf._shape)


#: the operators the C recorder takes over; it hands them every case it does not record
_C_OPERATORS = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
                "__rtruediv__", "__pow__", "__rpow__", "__neg__")


def _use_the_c_recorder() -> None:
    operators = {name: Tensor.__dict__[name] for name in _C_OPERATORS}
    _eager.configure(Tensor, Tape, _state, operators, _bind_scalar_leaf)
    for name in _C_OPERATORS:
        # with neither __add__ nor __radd__ in Tensor's dict, its number slot is TensorOps' C one
        delattr(Tensor, name)


if _eager is not None:
    _use_the_c_recorder()


def _record_block(prim, args: tuple) -> Tensor:
    """One call of a block primitive: its operands as contiguous runs, one ``block``
    instruction, the result the value kernel returns (run here, in Python, which also
    gives the result's shape; the sweeps' adapter computes the same at replay)."""
    tape = _recording_tape(args)
    if tape is None:
        operands = [np.ascontiguousarray(np.asarray(getattr(x, "_value", x), dtype=np.float64).reshape(-1))
                    for x in args]
        for x in operands:
            if not x.size:
                raise ShapeError(f"block primitive {prim.name!r}: an operand is empty")
        out = prim.evaluate(operands)
        return _constant(out if out.ndim else float(out), out.shape)
    bases, operands = [], []
    for x in args:
        view = _slot_view(x, tape)
        n = _size(view[2])
        if not n:
            raise ShapeError(f"block primitive {prim.name!r}: an operand is empty")
        base = _contiguous(tape, view)
        bases.append((base, n))
        operands.append(np.array(tape.values[base: base + n]))
    out = prim.evaluate(operands)
    (a, sa), (b, sb) = bases[0], bases[1] if len(bases) == 2 else (0, 0)
    base = tape.emit(OP.block, out.size, a=a, sa=sa, b=b, sb=sb, c=float(prim.number))
    tape.values[base: base + out.size] = out.reshape(-1)
    return _result(tape, base, out.shape, False)


primitives.record_elementwise = _elementwise
primitives.record_block = _record_block

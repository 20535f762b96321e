"""In-place updates with PyTorch's rules: ``p -= lr * p.grad`` under ``no_grad()``,
``p.data = ...``, ``p.copy_(x)``, ``p.zero_()``, ``p.grad.zero_()``.

``t op= x`` computes ``t op x`` as the current mode would (recorded or not), then

- a leaf or constant whose result records nothing takes the new value in place: the same
  object (so the model's parameter list sees it, and a ``.data`` alias passes the value to
  its owner), its version counter bumped;
- otherwise the tensor *becomes* the recorded result (``acc += x`` in a loop, in eager
  mode or in a trace), as if rebound, but keeping its identity;
- a leaf that requires grad refuses while gradients are recorded, as in PyTorch: the
  update would itself be recorded, and the leaf would stop being the leaf.

The eager tape copies a leaf's value when the leaf is first used in a recording, so a
later in-place change cannot corrupt the numbers already recorded; but the gradient
those numbers give is the gradient at the *old* value, which is not what the user asked
for. So each binding remembers the leaf's version, a later use of the leaf on the same
tape binds its new value to a new input slot, and ``backward()`` refuses when gradient
reaches a binding whose leaf changed since (:func:`current_bindings`): never a gradient
at a point the leaf no longer holds.
"""
from __future__ import annotations

import operator
from typing import Callable

import numpy as np

from ..errors import BackwardError, DTypeError, ShapeError, TapejitError

#: in-place writes in this process so far; a tape whose first leaf was bound after the
#: last write skips the per-leaf version check at backward() (the common case: a training
#: loop updates, then records a fresh tape)
_writes = [0]


def writes() -> int:
    return _writes[0]


def version(t) -> int:
    return getattr(t, "_version", 0)


def _bump(t) -> None:
    t._version = version(t) + 1
    t._leaf_serial = 0            # the next recording binds the new value afresh
    _writes[0] += 1


def write_value(t, value, what: str) -> None:
    """Store ``value`` (broadcast to t's shape) into the off-tape tensor ``t`` in place."""
    from .tensor import Tensor
    owner = getattr(t, "_alias_of", None)
    if isinstance(value, Tensor):
        value = value._value
    arr = np.asarray(value, dtype=np.float64)      # boolean tensors hold 0.0 and 1.0 too
    try:
        arr = np.broadcast_to(arr, t._shape)
    except ValueError:
        raise ShapeError(f"{what}: a value of shape {arr.shape} does not fit a tensor of shape "
                         f"{t._shape}") from None
    if t._shape:
        # a new buffer, never a write into the old one: numpy views of it (reshape,
        # detach) could be other tensors' values, which must not change behind their backs
        fresh = arr.flags.owndata and arr.flags.writeable and arr.shape == t._shape
        t._value = arr if fresh else np.array(arr)
    else:
        t._value = float(arr)
    _bump(t)
    if owner is not None:
        if owner._value is not t._value:
            owner._value = t._value
        _bump(owner)


def replace_value(t, value) -> None:
    """``t.data = value``: a new value, possibly of another shape (PyTorch allows that)."""
    from .tensor import Tensor, _cstrides
    if isinstance(value, Tensor):
        is_bool, value = value._bool, value._value
    else:
        is_bool = np.asarray(value).dtype == np.bool_
    if t._tape is not None:
        raise TapejitError(".data = ... on a recorded tensor: assign to a leaf (or detach() first)")
    if t._rg and is_bool:
        raise DTypeError("a tensor that requires grad cannot hold a boolean value")
    arr = np.array(value, dtype=np.float64)         # boolean tensors hold 0.0 and 1.0 too
    t._value = arr if arr.ndim else float(arr)
    t._shape, t._strides, t._bool = arr.shape, _cstrides(arr.shape), is_bool
    _bump(t)


def data(t):
    """``t.data``: the value as a tensor outside autograd; an in-place change to it
    changes t too (and counts as one of t's in-place updates)."""
    from .tensor import _constant
    if t._tape is not None:
        return t.detach()
    alias = _constant(t._value, t._shape, t._bool)
    alias._alias_of = t
    return alias


def update(t, op: Callable, other, what: str):
    """``t op= other`` (``op`` a binary function of tensors) by the rules above."""
    from .tensor import Tensor, _state, no_grad
    if t._tape is None and t._rg and _state.grad_enabled:
        raise TapejitError(
            f"{what} on a leaf tensor that requires grad while gradients are recorded: the update "
            "would be recorded and the tensor would stop being a leaf. Write the update "
            "inside `with tj.no_grad():` (as an optimizer does), or use `.data`")
    if getattr(t, "_alias_of", None) is not None:
        with no_grad():          # .data is outside autograd: values only
            result = op(t, other.detach() if isinstance(other, Tensor) else other)
    else:
        result = op(t, other)
    if result is NotImplemented:
        return NotImplemented
    if not isinstance(result, Tensor):
        result = Tensor(result)
    if result._shape != t._shape:
        raise ShapeError(f"{what}: the result has shape {result._shape}, which differs from the "
                         f"tensor's {t._shape} (an in-place update keeps the shape)")
    if t._bool and not result._bool:
        raise DTypeError(f"{what}: the result is float and cannot be stored in a boolean tensor")
    if result._tape is None and t._tape is None:
        write_value(t, result._value, what)
    else:
        become(t, result)
    return t


def become(t, result) -> None:
    """Make ``t`` the tensor ``result`` (its value and its place on a tape)."""
    t._value = result._value
    t._tape = result._tape
    t._base = result._base
    t._strides = result._strides
    t._shape = result._shape
    t._bool = result._bool
    if result._tape is None:     # off the tape now: the fields a leaf or constant has
        t._rg = result._rg
        t._grad = getattr(t, "_grad", None)
        t._leaf_serial = t._leaf_base = 0
    t._version = version(t) + 1


def set_item(t, key, value) -> None:
    """``t[key] = value`` with numpy's indexing rules, by the rules of :func:`update`: in
    place where nothing records, else t becomes a gather from (t, value) that records."""
    from .tensor import Tensor, _state
    from .numpy_api import concatenate
    from .composite import broadcast_to
    if isinstance(key, Tensor) or (isinstance(key, tuple) and any(isinstance(k, Tensor) for k in key)):
        keys = key if isinstance(key, tuple) else (key,)
        if any(k._tape is not None and k._tape is _state.trace for k in keys if isinstance(k, Tensor)):
            raise TapejitError("t[mask] = ... with a traced index depends on values the trace does not "
                               "replay; use tj.where(mask, value, t) instead")
        key = tuple(np.asarray(k._value, dtype=np.bool_ if k._bool else np.int64) if isinstance(k, Tensor)
                    else k for k in keys) if isinstance(key, tuple) else key._value
    positions = np.arange(t.size).reshape(t._shape)[key]      # numpy's errors for bad keys
    what = "t[...] = value"

    def assign(t, value):
        if (t._tape is None or t._tape is not _state.active) and not (
                isinstance(value, Tensor) and value._tape is not None and value._tape is _state.active) and not (
                isinstance(value, Tensor) and value._rg and _state.grad_enabled and _state.trace is None):
            new = np.array(t._value, dtype=np.bool_ if t._bool else np.float64)
            new[key] = value._value if isinstance(value, Tensor) else np.asarray(value)
            return Tensor(new)
        filler = broadcast_to(value, positions.shape) if isinstance(value, Tensor) else Tensor(
            np.broadcast_to(np.asarray(value, dtype=np.float64), positions.shape).copy())
        index = np.arange(t.size)
        index[positions.reshape(-1)] = t.size + np.arange(positions.size)
        source = concatenate([t.reshape(-1), filler.reshape(-1)])
        return source[index].reshape(t._shape)
    update(t, assign, value, what)


def current_bindings(tape, adjoints: np.ndarray) -> list:
    """The bindings of ``tape.leaves`` whose leaves kept their value, after a reverse sweep
    filled ``adjoints``. A binding whose leaf changed in place since is dropped if its
    adjoint is zero (the result does not depend on it: a later recording on the same
    tape, say); if the gradient reaches it, backward() refuses: that gradient is at the
    leaf's old value, and adding it to ``.grad`` would be silently wrong."""
    if getattr(tape, "inplace_mark", _writes[0]) == _writes[0]:
        return tape.leaves
    kept, refused = [], None
    for binding in tape.leaves:
        leaf, base, seen = binding
        if version(leaf) == seen:
            kept.append(binding)
            continue
        n = max(1, leaf.size)
        if refused is None and np.any(adjoints[base: base + n] != 0.0):
            refused = leaf
        adjoints[base: base + n] = 0.0
    if refused is None:
        return kept
    from .tensor import _state
    for leaf, base, _ in tape.leaves:     # the sweeps' contract: adjoints are left zeroed
        adjoints[base: base + max(1, leaf.size)] = 0.0
    # the recording is dropped, so that recomputing from the updated leaf starts afresh
    tape.finished = True
    if _state.active is tape:
        _state.active = None
    shape = f"shape {refused._shape}" if refused._shape else "0-d"
    raise BackwardError(
        f"a leaf tensor ({shape}) that this result depends on was changed in place after the "
        "result was computed from it, so the gradient would be the gradient at its old value. "
        "The recording is dropped: recompute the result from the updated tensor, then call "
        "backward() (an optimizer's step() goes after backward())")


#: Tensor's in-place operators and the binary operations they apply
OPERATORS = {"__iadd__": (operator.add, "+="), "__isub__": (operator.sub, "-="),
             "__imul__": (operator.mul, "*="), "__itruediv__": (operator.truediv, "/="),
             "__ipow__": (operator.pow, "**="), "__ifloordiv__": (operator.floordiv, "//="),
             "__imod__": (operator.mod, "%="), "__imatmul__": (operator.matmul, "@="),
             "__iand__": (operator.and_, "&="), "__ior__": (operator.or_, "|=")}


def install(cls) -> None:
    """Give ``cls`` (Tensor) its in-place operators."""
    for name, (op, what) in OPERATORS.items():
        def method(self, other, _op=op, _what=what):
            return update(self, _op, other, _what)
        method.__name__ = name
        method.__doc__ = f"``t {what} x`` in place (see tapejit.frontend.inplace)."
        setattr(cls, name, method)

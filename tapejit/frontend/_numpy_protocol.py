"""numpy's dispatch protocols for Tensor: ``np.sin(t)``, ``arr - t``, ``np.add.reduce(t)``,
``np.sort(t)`` run tapejit's functions (registered by name in ``functions.UFUNCS`` and
``functions.ARRAY_FUNCTIONS``).

Anything without a tapejit version raises a TapejitError naming it, never numpy's
"operand type(s) all returned NotImplemented" and never a silent copy of the values
(which would carry no gradient). ``out=`` naming an ndarray is refused for the same
reason: the result would be written into plain numbers.
"""
from __future__ import annotations

from ..errors import TapejitError

#: ufunc keyword arguments that change nothing for float64 tensors
_HARMLESS = {"casting", "order", "subok", "signature"}


class NumpyUnsupportedError(TapejitError, TypeError):
    """A numpy function or ufunc method that tapejit does not differentiate."""


def _unsupported(what: str, why: str = "tapejit has no differentiable version of it") -> NumpyUnsupportedError:
    return NumpyUnsupportedError(
        f"{what} on a tapejit tensor is not supported: {why}. "
        "Write it with supported functions (docs/numpy.md lists them), or apply it to "
        "t.detach().numpy() for a constant result")


def _plain_kwargs(name: str, kwargs: dict) -> dict:
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    if out is not None and not (isinstance(out, tuple) and all(o is None for o in out)):
        raise _unsupported(f"np.{name}(..., out=...)",
                           "the result would be written into an ndarray, losing its gradient "
                           "(arr += t does this too); write y = np.{0}(...) or arr = arr + t".format(name))
    where = kwargs.pop("where", True)
    if where is not True:
        raise _unsupported(f"np.{name}(..., where=...)", "use tj.where(mask, np.{0}(x), other)".format(name))
    dtype = kwargs.pop("dtype", None)
    if dtype is not None:
        import numpy as np
        if np.dtype(dtype) != np.float64:
            raise _unsupported(f"np.{name}(..., dtype={np.dtype(dtype)})", "tensors are float64")
    for key in list(kwargs):
        if key in _HARMLESS:
            kwargs.pop(key)
    return kwargs


def _reduce(name: str, x, axis=0, dtype=None, out=None, keepdims=False, initial=None, where=True):
    from . import numpy_api as fn
    reducers = {"add": fn.sum, "multiply": fn.ARRAY_FUNCTIONS["prod"], "maximum": fn.amax,
                "minimum": fn.amin, "logical_and": fn.all, "logical_or": fn.any}
    if name not in reducers:
        raise _unsupported(f"np.{name}.reduce")
    _plain_kwargs(f"{name}.reduce", {"out": out, "where": where, "dtype": dtype})
    if initial is not None:
        raise _unsupported(f"np.{name}.reduce(..., initial=...)", "combine the result with it instead")
    if name in ("logical_and", "logical_or"):
        if axis not in (None, 0) or keepdims or fn.ndim(x) > 1:
            raise _unsupported(f"np.{name}.reduce with an axis", "use .all() / .any() of the whole tensor")
        return reducers[name](x)
    return reducers[name](x, axis=axis, keepdims=keepdims)


def _accumulate(name: str, x, axis=0, dtype=None, out=None):
    from . import numpy_api as fn
    scans = {"add": "cumsum", "multiply": "cumprod"}
    if name not in scans:
        raise _unsupported(f"np.{name}.accumulate")
    _plain_kwargs(f"{name}.accumulate", {"out": out, "dtype": dtype})
    return fn.ARRAY_FUNCTIONS[scans[name]](x, axis=axis)


def _outer(ufunc, x, y, **kwargs):
    from . import numpy_api as fn
    kwargs = _plain_kwargs(f"{ufunc.__name__}.outer", kwargs)
    x, y = fn._as_operand(x), fn._as_operand(y)
    x = fn.reshape(x, x.shape + (1,) * y.ndim)
    return array_ufunc(ufunc, "__call__", (x, y), kwargs)


def array_ufunc(ufunc, method: str, inputs: tuple, kwargs: dict):
    from .numpy_api import UFUNCS
    name = ufunc.__name__
    if method == "reduce":
        return _reduce(name, *inputs, **kwargs)
    if method == "accumulate":
        return _accumulate(name, *inputs, **kwargs)
    if method == "outer":
        return _outer(ufunc, *inputs, **kwargs)
    if method != "__call__":
        raise _unsupported(f"np.{name}.{method}", "tensors are immutable" if method == "at" else
                           "tapejit supports __call__, reduce, accumulate and outer")
    fn = UFUNCS.get(name)
    if fn is None:
        raise _unsupported(f"np.{name}")
    return fn(*inputs, **_plain_kwargs(name, kwargs))


def array_function(func, args: tuple, kwargs: dict):
    from .numpy_api import ARRAY_FUNCTIONS
    module = getattr(func, "__module__", None) or "numpy"
    # np.linalg.norm is registered as "linalg.norm": a bare "norm" would also catch others
    submodule = module.split(".")[1] + "." if module.count(".") == 1 and module.split(".")[1] in ("linalg", "fft") else ""
    fn = ARRAY_FUNCTIONS.get(submodule + func.__name__)
    if fn is None:
        raise _unsupported(f"np.{submodule}{func.__name__}")
    # numpy's optional arguments that tapejit's version lacks (where=, out=, dtype=...):
    # refused by name, not with Python's "unexpected keyword argument"
    accepted = _parameters(fn)
    if accepted is not None:
        for key, value in kwargs.items():
            if key not in accepted and value is not None and type(value).__name__ != "_NoValueType":
                raise _unsupported(f"np.{submodule}{func.__name__}(..., {key}=...)")
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return fn(*args, **kwargs)


_PARAMETERS: dict = {}


def _parameters(fn):
    """The keyword names fn takes, or None if it takes any (**kwargs) or cannot be inspected."""
    if fn not in _PARAMETERS:
        import inspect
        try:
            params = inspect.signature(fn).parameters.values()
            _PARAMETERS[fn] = (None if any(p.kind is p.VAR_KEYWORD for p in params)
                               else frozenset(p.name for p in params))
        except (TypeError, ValueError):
            _PARAMETERS[fn] = None
    return _PARAMETERS[fn]

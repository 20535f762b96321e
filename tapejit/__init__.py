"""tapejit: tape-based automatic differentiation with a Numba-jitted interpreter.

    import tapejit as tj
    x = tj.tensor(2.0, requires_grad=True)
    y = x**2 + 3*x + 1
    y.backward()
    x.grad.item()            # 7.0
"""
from ._runtime import numba_cache as _numba_cache

_numba_cache.refresh()

from .errors import (BackwardError, BranchChangedError, CudaUnavailableError, DTypeError, GradientLostError,  # noqa: E402
                     InvalidTapeError, NonFiniteError, NotCompilableError, PrimitiveError, ShapeError,
                     TapeConsumedError, TapeFormatError, TapejitError, TraceError)
from .frontend.numpy_api import (abs, absolute, add, all, amax, amin, any, arange, arccos, arcsin, arctan,
                                 arctan2, asarray, ceil, clip, concatenate, cos, cosh, divide, dot, e, equal,
                                 erf, exp, exp2, expand_dims, expm1, eye, fix, flip, float64, floor, full,
                                 full_like, greater, greater_equal, hstack, inf, inner, isfinite, isnan, less,
                                 less_equal, linspace, log, log1p, log2, log10, log_softmax, logical_not,
                                 logsumexp, matmul, max, maximum, mean, min, minimum, moveaxis, multiply, nan,
                                 ndim, negative, newaxis, norm, not_equal, ones, ones_like, outer, pi, power,
                                 ravel, relu, reshape, rint, shape, sigmoid, sign, sin, sinh, size, softmax,
                                 softplus, sqrt, square, squeeze, stack, std, stop_gradient, subtract, sum,
                                 swapaxes, tan, tanh, transpose, true_divide, trunc, var, vdot, vstack, where,
                                 zeros, zeros_like)
from .frontend.composite import (allclose, arccosh, arcsinh, arctanh, argmax, argmin, argsort,  # noqa: E402
                                 around, atleast_1d, atleast_2d, broadcast_to, cbrt, copysign, cumprod, cumsum,
                                 deg2rad, diag, diff, einsum, floor_divide, fmax, fmin, fmod, heaviside, hypot,
                                 interp, isinf, kron, linalg, logaddexp, logaddexp2, logical_and, logical_or,
                                 logical_xor, meshgrid, mod, modf, pad, polyval, prod, rad2deg, reciprocal,
                                 repeat, roll, signbit, sinc, sort, split, take, take_along_axis, tensordot,
                                 tile, tril, triu, vecdot)
from ._runtime.recycle import release_buffers
from ._runtime.threads import get_num_threads, set_num_threads
from .frontend.function import Function, grad, load, trace, value_and_grad
from .frontend.debug import debug_nans
from .apps.minimize import OptimizeResult, minimize, multistart
from .ops.primitives import BlockPrimitive, Primitive, PrimitiveWarning, custom_vjp, primitive
from .frontend.checkpoint import checkpoint
from .frontend.tensor import Tensor, as_tensor, is_grad_enabled, no_grad, tensor

from . import cuda  # noqa: E402  (imports nothing from numba-cuda until used)
from . import nn, optim  # noqa: E402
from .nn.init import manual_seed  # noqa: E402
from .optim import trace_step  # noqa: E402

__version__ = "0.1.0"

#: the public API: everything else is internal and may change
__all__ = [
    "abs", "absolute", "add", "all", "allclose", "amax", "amin", "any", "arange", "arccos", "arccosh",
    "arcsin", "arcsinh", "arctan", "arctan2", "arctanh", "argmax", "argmin", "argsort", "around", "as_tensor",
    "asarray", "atleast_1d", "atleast_2d", "BackwardError", "BlockPrimitive", "BranchChangedError", "broadcast_to", "cbrt",
    "ceil", "checkpoint", "clip", "concatenate", "copysign", "cos", "cosh", "cuda", "CudaUnavailableError", "cumprod",
    "cumsum", "custom_vjp", "dask", "debug_nans", "deg2rad", "diag", "diff", "divide", "dot", "DTypeError", "e", "einsum",
    "equal", "erf", "exp", "exp2", "expand_dims", "expm1", "eye", "fix", "flip", "float64", "floor",
    "floor_divide", "fmax", "fmin", "fmod", "full", "full_like", "Function", "get_num_threads", "grad",
    "GradientLostError", "greater", "greater_equal", "heaviside", "hstack", "hypot", "inf", "inner", "interp",
    "InvalidTapeError", "is_grad_enabled", "isfinite", "isinf", "isnan", "kron", "less", "less_equal",
    "linalg", "linspace", "load", "log", "log10", "log1p", "log2", "log_softmax", "logaddexp", "logaddexp2",
    "logical_and", "logical_not", "logical_or", "logical_xor", "logsumexp", "manual_seed", "matmul", "max",
    "maximum", "mean", "meshgrid", "min", "minimize", "minimum", "mod", "modf", "moveaxis", "multiply",
    "multistart", "nan", "ndim", "negative", "newaxis", "nn", "no_grad", "NonFiniteError", "norm", "not_equal",
    "NotCompilableError", "ones", "ones_like", "optim", "OptimizeResult", "outer", "pad", "pi", "polyval",
    "power", "Primitive", "primitive", "PrimitiveError", "PrimitiveWarning", "prod", "rad2deg", "ravel",
    "reciprocal", "release_buffers", "relu", "repeat", "reshape", "rint",
    "roll", "set_num_threads", "shape", "ShapeError", "sigmoid", "sign", "signbit", "sin", "sinc", "sinh",
    "size", "softmax", "softplus", "sort", "split", "sqrt", "square", "squeeze", "stack", "std",
    "stop_gradient", "subtract", "sum", "swapaxes", "take", "take_along_axis", "tan", "tanh",
    "TapeConsumedError", "TapeFormatError", "TapejitError", "Tensor", "tensor", "tensordot", "tile", "trace",
    "trace_step", "TraceError", "transpose", "tril", "triu", "true_divide", "trunc", "value_and_grad", "var",
    "vdot", "vecdot", "vstack", "where", "zeros", "zeros_like", "__version__",
]


def __getattr__(name):
    # tj.dask imports Dask on first use only: it is an optional extra
    if name == "dask":
        import importlib
        return importlib.import_module(".apps.dask", __name__)
    raise AttributeError(f"module 'tapejit' has no attribute {name!r}")

"""Batch evaluation and multistart on Dask: ``tj.dask.batch_value_and_grad(f, X)``.

A traced Function pickles to its tape arrays (a few bytes per instruction). Under a
``distributed`` client the Function is scattered to every worker once (``broadcast=True``)
and each chunk's task receives the worker's copy, so a graph of 1,000 chunks still ships
the tape once per worker. Each task runs the numba batch engine on one chunk with one
thread: Dask already runs one task per worker thread. Without a client Dask's local
threaded scheduler runs the same graph in this process (no copies at all).

Install with ``pip install tapejit[dask]`` (``dask[array]`` and ``distributed``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .._runtime.threads import limit_threads
from ..errors import TapejitError
from ..frontend.function import Function, trace
from .minimize import CONVERGED_FTOL, CONVERGED_GTOL, MESSAGES, OptimizeResult
from .minimize import multistart as _local_multistart

__all__ = ["batch_value_and_grad", "batch_value", "multistart"]


def _dask_array():
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise ImportError("tapejit.apps.dask needs Dask: pip install 'tapejit[dask]' "
                          "(installs dask[array] and distributed)") from None
    return dask, da


def _client(client):
    """The distributed client to scatter to: the one given, the current one, or None
    (then Dask's local scheduler runs the graph in this process)."""
    if client is not None:
        return client
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _shipped(obj, client):
    """A reference that tasks receive: a broadcast future under distributed, else obj."""
    if client is None:
        return obj
    return client.scatter(obj, broadcast=True, hash=False)


def _as_batch(X, f: Function):
    dask, da = _dask_array()
    if len(f.inputs) != 1:
        raise TapejitError("tapejit.apps.dask evaluates Functions of one input array; this one takes "
                           f"{len(f.inputs)} inputs (concatenate them into one vector)")
    shape = tuple(f.input_shapes[0])
    if not isinstance(X, da.Array):
        X = np.asarray(X)
        if X.dtype == object or not np.issubdtype(X.dtype, np.number):
            raise TapejitError(f"X must be a numeric array, got dtype {X.dtype}")
        X = da.from_array(X, chunks=(max(1, min(len(X), 1_000_000)),) + X.shape[1:])
    if tuple(X.shape[1:]) != shape:
        raise TapejitError(f"X must have shape (B, {', '.join(map(str, shape))}) for this Function, "
                           f"got {X.shape}")
    if X.dtype != np.float64:
        X = X.astype(np.float64)
    # a chunk must hold whole points: split only along the batch axis
    if any(len(c) > 1 for c in X.chunks[1:]):
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return X


def _check_branch_mode(on_branch_change):
    if on_branch_change not in ("raise", "mask"):
        raise TapejitError("on a Dask cluster on_branch_change must be 'raise' or 'mask': workers hold "
                           "the tape, not the Python function, so they cannot retrace")


def _value_and_grad_block(block, f, params, on_branch_change):
    with limit_threads(1):
        return f.batch_value_and_grad(block, params=params, on_branch_change=on_branch_change)


def _value_block(block, f, params, on_branch_change):
    with limit_threads(1):
        values = f.batch(block.reshape((block.shape[0],) + tuple(f.input_shapes[0])), params=params,
                         on_branch_change=on_branch_change)
    return np.asarray(values, np.float64).reshape(block.shape[0], -1)


def batch_value_and_grad(f: Function, X, *, params: Optional[Sequence] = None, on_branch_change: str = "raise",
                         client=None) -> Tuple["dask.array.Array", "dask.array.Array"]:  # noqa: F821
    """Lazily: values (B,) and gradients (B, *input shape) of a scalar Function at every
    row of X (a dask or numpy array), chunked like X along the batch axis."""
    dask, da = _dask_array()
    if not isinstance(f, Function):
        raise TapejitError("pass a traced Function (tj.trace(fn, x0)); it is what the workers receive")
    f._scalar_output("tapejit.apps.dask.batch_value_and_grad")
    _check_branch_mode(on_branch_change)
    X = _as_batch(X, f)
    ref = _shipped(f, _client(client))
    # one task per chunk returns (values, gradients); two cheap getitem tasks split the pair,
    # so neither output is copied into a packed block
    task = dask.delayed(_value_and_grad_block, nout=2, pure=True)
    values, grads = [], []
    for block, rows in zip(X.to_delayed().ravel(), X.chunks[0]):
        v, g = task(block, ref, params, on_branch_change)
        values.append(da.from_delayed(v, shape=(rows,), dtype=np.float64))
        grads.append(da.from_delayed(g, shape=(rows,) + X.shape[1:], dtype=np.float64))
    return da.concatenate(values), da.concatenate(grads)


def batch_value(f: Function, X, *, params: Optional[Sequence] = None, on_branch_change: str = "raise",
                client=None):
    """Lazily: the Function's values at every row of X, shape (B, *output shape)."""
    dask, da = _dask_array()
    if not isinstance(f, Function):
        raise TapejitError("pass a traced Function (tj.trace(fn, x0)); it is what the workers receive")
    _check_branch_mode(on_branch_change)
    X = _flat_rows(_as_batch(X, f))
    ref = _shipped(f, _client(client))
    out_shape = tuple(f.output_shape or ())
    packed = da.map_blocks(_value_block, X, ref, params, on_branch_change, dtype=np.float64,
                           chunks=(X.chunks[0], (f.n_outputs,)), name="tapejit-value")
    return packed[:, 0] if not out_shape else packed.reshape((X.shape[0],) + out_shape)


def _flat_rows(X):
    """(B, *shape) -> (B, prod(shape)): the blocks the engine takes."""
    if X.ndim == 2:
        return X
    if X.ndim == 1:
        return X[:, None]
    return X.reshape(X.shape[0], -1)


def _multistart_block(block, f, method, params, options):
    with limit_threads(1):
        r = _local_multistart(f, block, method, params=params, threads=1, **options)
    n = block.shape[0]
    out = np.empty((n, 3 + block.shape[1]))
    out[:, 0] = r.all.fun
    out[:, 1] = r.all.nit
    out[:, 2] = r.all.status
    out[:, 3:] = r.all.x.reshape(n, -1)
    return out


def multistart(objective, X0, method: str = "lbfgs", *, params: Optional[Sequence] = None, chunk: Optional[int] = None,
               client=None, **options) -> OptimizeResult:
    """``tj.multistart`` with the starting points split over a Dask cluster (computed now).
    ``options`` are tj.multistart's (gtol, ftol, maxiter, bounds, m, lr)."""
    dask, da = _dask_array()
    if isinstance(X0, da.Array):
        first = np.asarray(X0[0].compute(), np.float64)
    else:
        X0 = np.asarray(X0, np.float64)
        if X0.ndim != 2:
            raise TapejitError(f"X0 must have shape (B, n), got {X0.shape}")
        first = X0[0].copy()
    f = objective if isinstance(objective, Function) else trace(objective, first,
                                                                params=tuple(params or ()))
    if f.n_outputs != 1:
        raise TapejitError(f"multistart needs a scalar objective; this one returns shape {f.output_shape}")
    if not isinstance(X0, da.Array):
        X0 = da.from_array(X0, chunks=(chunk or max(1, -(-len(X0) // 16)), X0.shape[1]))
    elif chunk:
        X0 = X0.rechunk((chunk, -1))
    X0 = _as_batch(X0, f)
    dask_client = _client(client)
    ref = _shipped(f, dask_client)
    packed = da.map_blocks(_multistart_block, X0, ref, method, params, options, dtype=np.float64,
                           chunks=(X0.chunks[0], (3 + X0.shape[1],)), name="tapejit-multistart")
    table = dask_client.compute(packed).result() if dask_client is not None else packed.compute()
    fun, nit, status, X = table[:, 0], table[:, 1].astype(np.int64), table[:, 2].astype(np.int64), table[:, 3:]
    best = int(np.argmin(np.where(np.isfinite(fun), fun, np.inf)))
    success = np.isin(status, (CONVERGED_GTOL, CONVERGED_FTOL))
    return OptimizeResult(
        x=X[best].reshape(f.input_shapes[0]).copy(), fun=float(fun[best]), nit=int(nit[best]),
        status=int(status[best]), message=MESSAGES.get(int(status[best]), ""), success=bool(success[best]),
        index=best, all=OptimizeResult(x=X.reshape((len(X),) + tuple(f.input_shapes[0])), fun=fun, nit=nit,
                                       status=status, success=success))

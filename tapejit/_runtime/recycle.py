"""Large result arrays whose memory serves again once the caller lets go of them.

A batch of a million gradients returns ~80 MB. Memory fresh from the operating system is
mapped page by page as it is first written, and on a virtual machine that can cost more
than the work: B1 (Rosenbrock n=10, 1e6 gradients) takes 14 ms writing into reused
arrays and 100 ms into fresh ones when the VM maps pages slowly. glibc's malloc returns
such large blocks to the system on free, so numpy cannot keep them; JAX avoids the cost
with an allocator that recycles its buffers, and this module does the same for tapejit's
results.

An array from ``empty`` is an ordinary numpy array whose base is a small owner object.
When the last array viewing that memory is gone, the owner's ``__del__`` puts the memory
back in a pool, already mapped, for the next result of a similar size. Nothing is handed
out twice while any view of it lives: the owner only dies with the last of them.
"""
from __future__ import annotations

import math
import threading

import numpy as np

#: smaller results come from numpy (malloc keeps and reuses blocks of that size itself)
MIN_BYTES = 8 << 20
#: memory kept mapped for reuse, at most (tj.release_buffers() gives it back): two
#: alternating results of a million 10-input gradients fit
POOL_BYTES = 256 << 20

_lock = threading.Lock()
_free: list = []          # raw uint8 buffers, mapped, owned by nobody


class _Owner:
    """Keeps a raw buffer while arrays view it; returns it to the pool when they are gone."""

    __slots__ = ("__array_interface__", "_raw")

    def __init__(self, raw: np.ndarray, shape: tuple, dtype: np.dtype):
        self._raw = raw
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                    "data": (raw.ctypes.data, False)}

    def __del__(self):
        try:
            _give_back(self._raw)
        except Exception:   # interpreter shutdown: the module may already be torn down
            pass


def _take(nbytes: int):
    """The smallest pooled buffer that holds nbytes without wasting more than as much again."""
    with _lock:
        best = None
        for k, raw in enumerate(_free):
            if nbytes <= raw.nbytes <= 2 * nbytes and (best is None or raw.nbytes < _free[best].nbytes):
                best = k
        if best is None:
            return None
        return _free.pop(best)


def _give_back(raw: np.ndarray) -> None:
    with _lock:
        if pooled_bytes() + raw.nbytes <= POOL_BYTES:
            _free.append(raw)
        # else: dropped here, and freed to the system


def empty(shape: tuple, dtype=np.float64) -> np.ndarray:
    """np.empty(shape, dtype), from recycled memory when the array is large."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = dtype.itemsize * math.prod(shape)      # np.prod of a tuple: ~6 us
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    raw = _take(nbytes)
    if raw is None:
        raw = np.empty(nbytes, np.uint8)
    return np.asarray(_Owner(raw, shape, dtype))


def pooled_bytes() -> int:
    """Memory held for reuse now."""
    return sum(raw.nbytes for raw in _free)


def release_buffers() -> None:
    """Give the memory kept for reuse by large batch results back to the system."""
    with _lock:
        _free.clear()

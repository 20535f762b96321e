"""Worker threads for the batch engine and tiled sweeps.

Every kernel is compiled with ``nogil=True``, so plain Python threads run them in
parallel. This avoids Numba's ``parallel=True``, whose lowering compiles every sweep a
second time (about 30 s cold per driver) for no gain here.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_threads = int(os.environ.get("TAPEJIT_NUM_THREADS", 0)) or (os.cpu_count() or 1)
_override = threading.local()


def get_num_threads() -> int:
    """Worker threads used by batch evaluation and tiled sweeps (in this thread)."""
    return getattr(_override, "threads", None) or _threads


@contextmanager
def limit_threads(n: int):
    """Use at most n worker threads for calls made from this thread: a task of an outer
    scheduler (Dask) that already runs one task per core must not spawn more threads."""
    previous = getattr(_override, "threads", None)
    _override.threads = max(1, min(int(n), _threads))
    try:
        yield
    finally:
        _override.threads = previous


def set_num_threads(n: int) -> None:
    """Set the number of worker threads (default: the CPU count, or TAPEJIT_NUM_THREADS)."""
    global _threads, _pool
    if n < 1:
        raise ValueError("need at least one thread")
    with _lock:
        _threads = int(n)
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None


def run_workers(fn, n_workers: int, *args) -> None:
    """Call fn(worker, n_workers, *args) for every worker and wait: worker 0 on the
    calling thread, the others on the pool. (Handing worker 0 to the pool too cost a
    thread wake-up and a GIL hand-over, about 100 us on the 2-core VM, while the caller
    sat idle: batch gradients of 20,000 points ran 1.13x faster this way, of 100,000
    1.07x.) The first exception raised, by any worker, is raised once all have ended."""
    global _pool
    if n_workers <= 1:
        fn(0, 1, *args)
        return
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="tapejit")
        pool = _pool
    futures = [pool.submit(fn, w, n_workers, *args) for w in range(1, n_workers)]
    error = None
    try:
        fn(0, n_workers, *args)
    except BaseException as exc:     # the pool's workers still hold the arguments: wait for them
        error = exc
    for f in futures:
        try:
            f.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error

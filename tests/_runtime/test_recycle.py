"""Large batch results reuse the memory of results the caller has let go of."""
import gc
import sys

import numpy as np
import pytest

import tapejit as tj
from tapejit._runtime import recycle as _recycle
from tapejit.bench.workloads import rosen

B = 120_000          # gradients of 10 inputs: 9.6 MB, above _recycle.MIN_BYTES


@pytest.fixture
def f():
    tj.release_buffers()
    yield tj.trace(rosen, np.zeros(10))
    tj.release_buffers()


def _points(seed):
    return np.random.default_rng(seed).standard_normal((B, 10))


def test_a_dropped_result_lends_its_memory_to_the_next(f):
    X = _points(0)
    expected = f.batch_grad(X, out=np.empty((B, 10)))
    first = f.batch_grad(X)
    np.testing.assert_array_equal(first, expected)
    address = first.ctypes.data
    del first
    gc.collect()
    assert _recycle.pooled_bytes() >= B * 10 * 8
    second = f.batch_grad(_points(1))
    assert second.ctypes.data == address
    np.testing.assert_array_equal(second, f.batch_grad(_points(1), out=np.empty((B, 10))))


def test_memory_is_never_lent_while_a_view_of_it_lives(f):
    grads = f.batch_grad(_points(0))
    view = grads[5:7]
    kept = view.copy()
    address = grads.ctypes.data
    del grads
    gc.collect()
    others = [f.batch_grad(_points(k)) for k in (1, 2)]
    assert all(not np.may_share_memory(o, view) for o in others)
    assert all(o.ctypes.data != address for o in others)
    np.testing.assert_array_equal(view, kept)
    values, grads = f.batch_value_and_grad(_points(3))
    assert not np.may_share_memory(grads, view)


def test_the_pool_is_bounded_and_released(f, monkeypatch):
    monkeypatch.setattr(_recycle, "POOL_BYTES", B * 10 * 8 - 1)   # too small for one result
    grads = f.batch_grad(_points(0))
    del grads
    gc.collect()
    assert _recycle.pooled_bytes() == 0
    monkeypatch.setattr(_recycle, "POOL_BYTES", 256 << 20)
    grads = f.batch_grad(_points(0))
    del grads
    gc.collect()
    assert _recycle.pooled_bytes() > 0
    tj.release_buffers()
    assert _recycle.pooled_bytes() == 0


def _memory_owner(array):
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.base


def test_small_results_come_from_numpy(f):
    small = f.batch_grad(_points(0)[:1000])
    assert not isinstance(_memory_owner(small), _recycle._Owner)
    assert isinstance(_memory_owner(f.batch_grad(_points(0))), _recycle._Owner)


def test_recycled_results_behave_as_arrays(f):
    grads = f.batch_grad(_points(0))
    assert grads.flags.writeable and grads.flags.c_contiguous and grads.dtype == np.float64
    grads[0, 0] = 42.0
    assert grads[0, 0] == 42.0
    assert sys.getrefcount(grads.base) >= 2
    np.testing.assert_array_equal(np.asarray(grads.tolist()), grads)

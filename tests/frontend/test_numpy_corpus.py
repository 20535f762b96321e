"""The corpus of classical test functions, called unmodified on tapejit tensors: values
against numpy, gradients against central differences: eagerly, through tj.trace replayed
at a second point, and in the batch engine at three points."""
import numpy as np
import pytest

import tapejit as tj

from helpers import numeric_grad
from numpy_corpus import CORPUS


def test_the_corpus_is_large():
    assert len(CORPUS) >= 60 and len({name for name, _, _ in CORPUS}) == len(CORPUS)


def _check_grad(got, f, x):
    expected = numeric_grad(f, x.copy(), h=1e-7)
    scale = max(1.0, np.max(np.abs(expected)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("name, f, x0", CORPUS, ids=[c[0] for c in CORPUS])
def test_eager(name, f, x0):
    x = tj.tensor(x0, requires_grad=True)
    y = f(x)
    np.testing.assert_allclose(y.item(), f(x0), rtol=1e-12, atol=1e-13)
    y.backward()
    _check_grad(x.grad.numpy(), f, x0)


@pytest.mark.parametrize("name, f, x0", CORPUS, ids=[c[0] for c in CORPUS])
def test_traced_replay(name, f, x0):
    g = tj.trace(f, x0)
    x1 = x0 + 1e-3 * np.cos(np.arange(x0.size))      # a second point, still smooth
    value, grad = g.value_and_grad(x1)
    np.testing.assert_allclose(value, f(x1), rtol=1e-12, atol=1e-13)
    _check_grad(grad, f, x1)


@pytest.mark.parametrize("name, f, x0", CORPUS, ids=[c[0] for c in CORPUS])
def test_batch(name, f, x0):
    """Three nearby points in one batch call (the chunk sweeps, not the one-point ones)."""
    g = tj.trace(f, x0)
    X = x0 + 1e-4 * np.array([np.cos(np.arange(x0.size) * k) for k in (1, 2, 3)])
    values, grads = g.batch_value_and_grad(X)
    for x, value, grad in zip(X, values, grads):
        np.testing.assert_allclose(value, f(x), rtol=1e-12, atol=1e-13)
        _check_grad(grad, f, x)

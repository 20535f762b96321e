"""Sparsity patterns, coloring and sparse Jacobians/Hessians against dense ones."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import rosen_hess

import tapejit as tj
from tapejit import sparsity, workloads

rng = np.random.default_rng(13)


def test_rosenbrock_sparse_hessian_is_tridiagonal_with_three_colors():
    f = tj.trace(workloads.rosen, np.zeros(30))
    x = rng.standard_normal(30)
    H = f.hessian(x, sparse=True)
    assert isinstance(H, sp.csr_matrix)
    np.testing.assert_allclose(H.toarray(), rosen_hess(x), rtol=1e-12, atol=1e-10)
    pattern = f.hessian_sparsity()
    assert pattern.dtype == bool and pattern.nnz == 3 * 30 - 2
    assert sparsity.n_colors(f, "hessian") <= 3


def banded(x):
    n = x.shape[0]
    return x[2:-2] * x[:-4] + tj.sin(x[1:-3]) * x[3:-1] - x[4:] ** 2 + tj.exp(x[2:-2] / n)


def test_banded_jacobian_needs_five_colors():
    f = tj.trace(banded, np.zeros(40))
    x = rng.standard_normal(40)
    J = f.jacobian(x, sparse=True)
    np.testing.assert_allclose(J.toarray(), f.jacobian(x), rtol=1e-13, atol=1e-14)
    assert sparsity.n_colors(f, "jacobian") <= 5
    assert f.jacobian_sparsity().nnz == 36 * 5


def test_patterns_ignore_what_has_no_derivative():
    f = tj.trace(lambda x: tj.where(x[0] > x[1], x[2] * x[2], x[3]) + tj.sign(x[4]) * 0 + x[5], np.ones(6))
    J = f.jacobian_sparsity().toarray()
    np.testing.assert_array_equal(J, [[False, False, True, True, False, True]])
    H = f.hessian_sparsity().toarray()
    expected = np.zeros((6, 6), bool)
    expected[2, 2] = True
    np.testing.assert_array_equal(H, expected)


def random_sparse_problem(seed, n):
    r = np.random.default_rng(seed)
    pairs = r.integers(0, n, size=(n, 2))
    weights = r.uniform(0.5, 1.5, n)
    M = sp.random(3, n, density=0.3, random_state=seed).toarray()

    def fn(x):
        terms = tj.sin(x[pairs[:, 0]]) * x[pairs[:, 1]] * weights
        return tj.sum(terms) + tj.sum(tj.tanh(M @ x) ** 2) + tj.sum(x[::3] ** 3)

    def vec(x):
        return tj.concatenate([tj.sin(x[pairs[:, 0]]) * x[pairs[:, 1]], M @ x])
    return fn, vec


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 25))
def test_sparse_equals_dense_on_random_sparse_problems(seed, n):
    fn, vec = random_sparse_problem(seed, n)
    x = np.random.default_rng(seed + 1).standard_normal(n)
    f = tj.trace(fn, x)
    H_dense = f.hessian(x)
    H_sparse = f.hessian(x, sparse=True)
    np.testing.assert_allclose(H_sparse.toarray(), H_dense, rtol=1e-12, atol=1e-12)
    # the pattern contains every nonzero
    assert not np.any((np.abs(H_dense) > 0) & ~f.hessian_sparsity().toarray())
    g = tj.trace(vec, x)
    J_dense = g.jacobian(x)
    np.testing.assert_allclose(g.jacobian(x, sparse=True).toarray(), J_dense, rtol=1e-12, atol=1e-12)
    assert not np.any((np.abs(J_dense) > 0) & ~g.jacobian_sparsity().toarray())


def test_coloring_is_valid_distance_two():
    pattern = sp.random(60, 40, density=0.08, random_state=3, format="csr").astype(bool)
    colors = sparsity.coloring(pattern)
    dense = pattern.toarray()
    for row in dense:
        cols = np.flatnonzero(row)
        assert len(set(colors[cols])) == len(cols)


def test_patterns_are_cached_per_function():
    f = tj.trace(workloads.rosen, np.zeros(10))
    assert f.hessian_sparsity() is f.hessian_sparsity()
    assert f.jacobian_sparsity() is f.jacobian_sparsity()


def test_large_rosenbrock_sparse_hessian():
    n = 20_000
    f = tj.trace(workloads.rosen, np.zeros(n))
    x = rng.standard_normal(n)
    H = f.hessian(x, sparse=True)
    assert H.nnz == 3 * n - 2 and sparsity.n_colors(f) == 3
    v = rng.standard_normal(n)
    np.testing.assert_allclose(H @ v, f.hvp(x, v=v), rtol=1e-12, atol=1e-9)

"""Matrix products through BLAS (tapejit.cpu._blas, the matmul row's ``blas`` field) and
broadcasts recorded as rank-1 products: values against numpy, gradients against central
differences, forward mode and Hessian-vector products against differences of gradients,
on both sides of the size from which BLAS takes over, with constant operands on either side."""
import numpy as np
import pytest

import tapejit as tj
from tapejit.cpu import _blas
from tapejit.ops.table import OP
from helpers import numeric_grad

RNG = np.random.default_rng(11)
# (p, q, r): below BLAS_MIN_WORK multiply-adds (the loops) and above it (dgemm)
SHAPES = [(3, 4, 2), (40, 24, 12)]
assert 3 * 4 * 2 < _blas.BLAS_MIN_WORK <= 40 * 24 * 12


def _objective(A, B):
    """sum(tanh(A @ B) * W) for a fixed weight W: every output's adjoint differs."""
    W = np.cos(np.arange(A.shape[0] * B.shape[1])).reshape(A.shape[0], B.shape[1])
    return lambda a, b, lib: (lib.tanh(a @ b) * W).sum()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("recorded", ["both", "left", "right"])
def test_eager_matmul_values_and_gradients(shape, recorded):
    p, q, r = shape
    A0, B0 = RNG.normal(size=(p, q)), RNG.normal(size=(q, r))
    f = _objective(A0, B0)
    A = tj.tensor(A0, requires_grad=recorded in ("both", "left"))
    B = tj.tensor(B0, requires_grad=recorded in ("both", "right"))
    y = f(A, B, tj)
    assert y.item() == pytest.approx(f(A0, B0, np), rel=1e-12)
    y.backward()
    if A.requires_grad:
        np.testing.assert_allclose(A.grad.numpy(), numeric_grad(lambda a: f(a, B0, np), A0.copy()), rtol=1e-6, atol=1e-8)
    if B.requires_grad:
        np.testing.assert_allclose(B.grad.numpy(), numeric_grad(lambda b: f(A0, b, np), B0.copy()), rtol=1e-6, atol=1e-8)


def test_a_constant_operand_is_flagged_and_gets_no_adjoint():
    A0, B0 = RNG.normal(size=(40, 24)), RNG.normal(size=(24, 12))
    B = tj.tensor(B0, requires_grad=True)
    y = tj.matmul(A0, B)
    tape = y._tape
    i = int(np.flatnonzero(tape.ops[:tape.n_ins] == OP.matmul)[-1])
    assert tape.cv[i] == 1.0                    # a is the constant
    assert tj.matmul(B.T, A0.T)._tape.cv[tape.n_ins - 1] == 2.0
    y.sum().backward()
    np.testing.assert_allclose(B.grad.numpy(), np.tile(A0.sum(0)[:, None], (1, 12)), rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_traced_matmul_grad_jvp_and_hvp(shape):
    p, q, r = shape
    A0, B0 = RNG.normal(size=(p, q)), RNG.normal(size=(q, r))
    W = np.cos(np.arange(p * r)).reshape(p, r)

    def f_tj(x):
        a = tj.reshape(x[: p * q], (p, q))
        b = tj.reshape(x[p * q:], (q, r))
        return (tj.tanh(a @ b) * W).sum()

    def f_np(x):
        return (np.tanh(x[: p * q].reshape(p, q) @ x[p * q:].reshape(q, r)) * W).sum()

    def g_np(x):
        return numeric_grad(f_np, x.copy(), h=1e-6)
    x0 = np.concatenate([A0.ravel(), B0.ravel()])
    f = tj.trace(f_tj, x0)
    x1 = x0 * 0.9 + 0.05
    np.testing.assert_allclose(f.grad(x1), g_np(x1), rtol=1e-6, atol=1e-6)   # differences of a sum of 480 terms
    v = RNG.normal(size=x0.size)
    h = 1e-5
    assert f.jvp(x1, v=v)[1] == pytest.approx((f_np(x1 + h * v) - f_np(x1 - h * v)) / (2 * h), rel=1e-6, abs=1e-8)
    expected_hvp = (f.grad(x1 + h * v) - f.grad(x1 - h * v)) / (2 * h)
    np.testing.assert_allclose(f.hvp(x1, v=v), expected_hvp, rtol=1e-5, atol=1e-7)


def test_the_same_matrix_on_both_sides():
    M0 = RNG.normal(size=(20, 20)) * 0.3      # 8,000 multiply-adds: BLAS, with a and b the same slots
    M = tj.tensor(M0, requires_grad=True)
    y = tj.sin(M @ M).sum()
    y.backward()
    np.testing.assert_allclose(M.grad.numpy(), numeric_grad(lambda m: np.sin(m @ m).sum(), M0.copy()),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", ["rows", "columns", "rows3d", "strided"])
def test_broadcasts_as_rank_one_products(case):
    X0 = RNG.normal(size=(50, 16))
    if case == "rows":
        b0, f = RNG.normal(size=16), lambda x, b, lib: (lib.tanh(x + b) * x).sum()
    elif case == "columns":
        b0, f = RNG.normal(size=(50, 1)), lambda x, b, lib: (lib.tanh(x - b) * x).sum()
    elif case == "rows3d":
        X0 = RNG.normal(size=(4, 8, 16))
        b0, f = RNG.normal(size=(8, 16)), lambda x, b, lib: (lib.tanh(x * b) * x).sum()
    else:                                      # a strided row: gathered, not a product
        b0, f = RNG.normal(size=32), lambda x, b, lib: (lib.tanh(x + b[::2]) * x).sum()
    x, b = tj.tensor(X0, requires_grad=True), tj.tensor(b0, requires_grad=True)
    y = f(x, b, tj)
    ops = y._tape.ops[: y._tape.n_ins]
    assert (OP.matmul in ops) == (case != "strided")
    assert y.item() == pytest.approx(f(X0, b0, np), rel=1e-12)
    y.backward()
    # differences of a sum of 800 terms: about 1e-8 of rounding
    np.testing.assert_allclose(x.grad.numpy(), numeric_grad(lambda z: f(z, b0, np), X0.copy()), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), numeric_grad(lambda z: f(X0, z, np), b0.copy()), rtol=1e-6, atol=1e-6)


def test_blas_helpers_match_numpy():
    from numba import njit

    @njit
    def run(v, o, a, b, p, q, r, which):
        if which == 0:
            return _blas.gemm_nn(_blas.at(v, o), _blas.at(v, a), _blas.at(v, b), p, q, r, 0.0)
        if which == 1:
            return _blas.gemm_nt(_blas.at(v, o), _blas.at(v, a), _blas.at(v, b), p, q, r)
        return _blas.gemm_tn(_blas.at(v, o), _blas.at(v, a), _blas.at(v, b), p, q, r)
    p, q, r = 7, 5, 3
    v = RNG.normal(size=200)
    X, Y = v[10:10 + p * q].reshape(p, q).copy(), v[50:50 + q * r].reshape(q, r).copy()
    assert run(v, 100, 10, 50, p, q, r, 0) == 0
    np.testing.assert_allclose(v[100:100 + p * r].reshape(p, r), X @ Y, rtol=1e-14)
    X, Y, O = v[10:10 + p * r].reshape(p, r).copy(), v[50:50 + q * r].reshape(q, r).copy(), v[100:100 + p * q].reshape(p, q).copy()
    run(v, 100, 10, 50, p, q, r, 1)
    np.testing.assert_allclose(v[100:100 + p * q].reshape(p, q), O + X @ Y.T, rtol=1e-14)
    X, Y, O = v[10:10 + p * q].reshape(p, q).copy(), v[50:50 + p * r].reshape(p, r).copy(), v[100:100 + q * r].reshape(q, r).copy()
    run(v, 100, 10, 50, p, q, r, 2)
    np.testing.assert_allclose(v[100:100 + q * r].reshape(q, r), O + X.T @ Y, rtol=1e-14)

"""Block primitives (tj.custom_vjp): vectors in, a vector out, user kernels for the value
and the rules. Each rule against central differences; a primitive against the same
function built from table ops, in every mode and engine; the refusals (missing rules,
second order, saved tapes, the GPU, compile()); kernels that raise, return nan or change
their result's length."""
import os
import warnings

import numpy as np
import pytest
from numba import njit

import tapejit as tj
from tapejit.ops import primitives

RNG = np.random.default_rng(36)


@njit
def thomas(diag, rhs):
    """x solving A x = rhs, A tridiagonal with ``diag`` on the diagonal and -1 beside it
    (symmetric: its transpose solve is the same solve)."""
    n = diag.shape[0]
    c, d, x = np.empty(n), np.empty(n), np.empty(n)
    c[0] = -1.0 / diag[0]
    d[0] = rhs[0] / diag[0]
    for i in range(1, n):
        m = diag[i] + c[i - 1]
        c[i] = -1.0 / m
        d[i] = (rhs[i] + d[i - 1]) / m
    x[n - 1] = d[n - 1]
    for i in range(n - 2, -1, -1):
        x[i] = d[i] - c[i] * x[i + 1]
    return x


@tj.custom_vjp
def solve(diag, rhs):
    return thomas(diag, rhs)


def _solve_vjp(res, g, diag, rhs):
    lam = thomas(diag, g)                   # A^T lam = g, and A is symmetric
    return -lam * res, lam                  # d/d diag_i: -lam_i x_i


def _solve_jvp(res, t_diag, t_rhs, diag, rhs):
    return thomas(diag, t_rhs - t_diag * res)


solve.defvjp(_solve_vjp).defjvp(_solve_jvp)


def thomas_ops(diag, rhs):
    """The same solve from table ops, element by element."""
    n = diag.shape[0]
    c, d = [-1.0 / diag[0]], [rhs[0] / diag[0]]
    for i in range(1, n):
        m = diag[i] + c[i - 1]
        c.append(-1.0 / m)
        d.append((rhs[i] + d[i - 1]) / m)
    x = [None] * n
    x[n - 1] = d[n - 1]
    for i in range(n - 2, -1, -1):
        x[i] = d[i] - c[i] * x[i + 1]
    return tj.stack(x)


def dense_solve(diag, rhs):
    n = diag.shape[0]
    return np.linalg.solve(np.diag(diag) - np.eye(n, k=1) - np.eye(n, k=-1), rhs)


N = 6


def objective(block):
    s = solve if block else thomas_ops

    def f(x):
        diag = 3.0 + tj.exp(x[:N])          # diagonally dominant
        y = s(diag, tj.sin(x[N:]))
        return tj.sum(tj.tanh(y) * y) + tj.sum(s(diag, y[::-1]) ** 2)
    return f


def objective_np(x):
    diag = 3.0 + np.exp(x[:N])
    y = dense_solve(diag, np.sin(x[N:]))
    return np.sum(np.tanh(y) * y) + np.sum(dense_solve(diag, y[::-1]) ** 2)


X0 = RNG.normal(size=2 * N)
F_BLOCK = tj.trace(objective(True), X0)
F_OPS = tj.trace(objective(False), X0)


def close(a, b, rtol=1e-11, atol=1e-11):
    if isinstance(a, tuple):                 # (value, derivative) pairs
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            close(x, y, rtol, atol)
        return
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def central(f, x, eps=1e-6):
    return np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(x.size)])


def test_the_rules_match_central_differences():
    diag, rhs, g, t_d, t_r = 3.0 + RNG.random(7), RNG.normal(size=7), RNG.normal(size=7), RNG.normal(size=7), \
        RNG.normal(size=7)
    x = thomas(diag, rhs)
    close(x, dense_solve(diag, rhs), 1e-12, 1e-12)
    gd, gr = _solve_vjp(x, g, diag, rhs)
    close(gd, central(lambda d: g @ dense_solve(d, rhs), diag), 1e-7, 1e-8)
    close(gr, central(lambda r: g @ dense_solve(diag, r), rhs), 1e-7, 1e-8)
    tangent = _solve_jvp(x, t_d, t_r, diag, rhs)
    eps = 1e-6
    fd = (dense_solve(diag + eps * t_d, rhs + eps * t_r) - dense_solve(diag - eps * t_d, rhs - eps * t_r)) / (2 * eps)
    close(tangent, fd, 1e-7, 1e-8)


def test_one_point_modes_match_the_table_ops_and_central_differences():
    x, v, u = RNG.normal(size=2 * N), RNG.normal(size=2 * N), RNG.normal(size=())
    close(F_BLOCK(x), F_OPS(x))
    close(F_BLOCK(x), objective_np(x), 1e-12, 1e-12)
    g = F_BLOCK.grad(x)
    close(g, F_OPS.grad(x))
    close(g, central(objective_np, x), 1e-6, 1e-7)
    close(F_BLOCK.jvp(x, v=v), F_OPS.jvp(x, v=v))
    close(F_BLOCK.vjp(x, u=u), F_OPS.vjp(x, u=u))
    close(F_BLOCK.jacobian(x), F_OPS.jacobian(x))
    close(F_BLOCK.jacobian(x, sparse=True).toarray(), F_OPS.jacobian(x))
    close(F_BLOCK.optimize().grad(x), F_OPS.grad(x))


def test_batch_modes_match_the_table_ops():
    X, V = RNG.normal(size=(37, 2 * N)), RNG.normal(size=(37, 2 * N))      # a partial last chunk
    close(F_BLOCK.batch(X), F_OPS.batch(X))
    close(F_BLOCK.batch_value_and_grad(X), F_OPS.batch_value_and_grad(X))
    close(F_BLOCK.batch_jvp(X, V=V), F_OPS.batch_jvp(X, V=V))
    U = RNG.normal(size=37)
    close(F_BLOCK.batch_vjp(X, U=U), F_OPS.batch_vjp(X, U=U))


def test_a_partial_chunk_never_gives_a_kernel_the_zeros_of_its_padding():
    @tj.custom_vjp
    def strict(x):
        if np.any(x == 0.0):
            raise ZeroDivisionError("strict got a zero")
        return 1.0 / x
    strict.defvjp(lambda res, g, x: -g * res * res)
    F = tj.trace(lambda x: tj.sum(strict(x)), np.ones(3))
    X = 1.0 + RNG.random((37, 3))                  # 37 points: the last chunk is partial
    values, grads = F.batch_value_and_grad(X)
    close(values, np.sum(1.0 / X, axis=1), 1e-14, 1e-14)
    close(grads, -1.0 / X ** 2, 1e-14, 1e-14)


def test_eager_backward_matches_the_table_ops():
    x = RNG.normal(size=2 * N)
    grads = []
    for block in (True, False):
        t = tj.tensor(x, requires_grad=True)
        y = objective(block)(t)
        y.backward()
        grads.append((y.item(), t.grad.numpy()))
    close(grads[0][0], grads[1][0])
    close(grads[0][1], grads[1][1])
    with tj.no_grad():                       # nothing recorded: the value kernel alone
        close(solve(3.0 + np.arange(4.0), np.ones(4)).numpy(), dense_solve(3.0 + np.arange(4.0), np.ones(4)))


def test_operands_that_are_views_constants_and_broadcasts():
    diag = 4.0 + RNG.random(5)

    def f(x):                       # a strided view, a constant, a 0-d operand made a vector
        return tj.sum(solve(x[::2] + 4.0, diag) * x[1::2]) + tj.sum(solve(diag, x[:5] * x[0]))

    def f_np(x):
        return np.sum(dense_solve(x[::2] + 4.0, diag) * x[1::2]) + np.sum(dense_solve(diag, x[:5] * x[0]))
    x = RNG.normal(size=10)
    F = tj.trace(f, x)
    close(F(x), f_np(x), 1e-12, 1e-12)
    close(F.grad(x), central(f_np, x), 1e-6, 1e-7)


# a unary block primitive: log det of a symmetric positive definite matrix, flattened
@tj.custom_vjp(name="logdet_spd")
def logdet(a):
    m = int(np.sqrt(a.shape[0]) + 0.5)
    chol = np.linalg.cholesky(a.reshape((m, m)))
    return np.array([2.0 * np.sum(np.log(np.diag(chol)))])


def _logdet_vjp(res, g, a):
    m = int(np.sqrt(a.shape[0]) + 0.5)
    return g[0] * np.linalg.inv(a.reshape((m, m))).T.copy().reshape(-1)


def _logdet_jvp(res, t, a):
    m = int(np.sqrt(a.shape[0]) + 0.5)
    return np.array([np.sum(np.linalg.inv(a.reshape((m, m))).T.copy().reshape(-1) * t)])


logdet.defvjp(_logdet_vjp).defjvp(_logdet_jvp)


def test_a_primitive_of_one_operand_against_numpy_and_central_differences():
    m = 4

    def f(x):
        b = tj.reshape(x, (m, m))
        return logdet(b @ b.T + tj.eye(m))[0]

    def f_np(x):
        b = x.reshape(m, m)
        return np.linalg.slogdet(b @ b.T + np.eye(m))[1]
    x, v = RNG.normal(size=m * m), RNG.normal(size=m * m)
    F = tj.trace(f, x)
    close(F(x), f_np(x), 1e-12, 1e-12)
    close(F.grad(x), central(f_np, x), 1e-6, 1e-7)
    close(F.jvp(x, v=v)[1], central(f_np, x) @ v, 1e-6, 1e-7)
    X = RNG.normal(size=(9, m * m))
    vals, grads = F.batch_value_and_grad(X)
    close(vals, [f_np(p) for p in X], 1e-12, 1e-12)
    close(grads, [central(f_np, p) for p in X], 1e-6, 1e-7)


def test_long_vectors_around_a_block_run_in_tiles_and_chunks():
    # cumulative sums as a block primitive against tj.cumsum, with long elementwise runs
    # (tiled) on both sides; every output reads every input, which the passes visit once
    @tj.custom_vjp
    def running(x):
        return np.cumsum(x)
    running.defvjp(lambda res, g, x: np.cumsum(g[::-1])[::-1].copy())
    running.defjvp(lambda res, t, x: np.cumsum(t))
    n = 20_000

    def f(x, cs):
        y = cs(tj.sin(x) * 0.01)
        return tj.sum(tj.exp(-y * y) * tj.cos(x))
    x = RNG.normal(size=n)
    F_b, F_o = tj.trace(lambda x: f(x, running), x), tj.trace(lambda x: f(x, tj.cumsum), x)
    close(F_b(x), F_o(x), 1e-10, 1e-10)
    close(F_b.grad(x), F_o.grad(x), 1e-10, 1e-12)
    v = RNG.normal(size=n)
    close(F_b.jvp(x, v=v), F_o.jvp(x, v=v), 1e-10, 1e-10)
    X = RNG.normal(size=(3, n))
    close(F_b.batch_value_and_grad(X), F_o.batch_value_and_grad(X), 1e-10, 1e-12)


def test_second_order_is_refused_by_name():
    x = RNG.normal(size=2 * N)
    with pytest.raises(NotImplementedError, match="'solve' has no second-order rule"):
        F_BLOCK.hvp(x, v=x)
    with pytest.raises(NotImplementedError, match="'solve' has no second-order rule"):
        F_BLOCK.hessian(x)
    with pytest.raises(NotImplementedError, match="sparse Hessian.*'solve'"):
        F_BLOCK.hessian(x, sparse=True)


def test_missing_rules_raise_naming_them():
    @tj.custom_vjp
    def only_value(a, b):
        return a * b[0]
    F = tj.trace(lambda x: tj.sum(only_value(x, x[:1] + 1.0)), np.ones(3))
    close(F(np.arange(3.0)), np.sum(np.arange(3.0)) * 1.0)
    with pytest.raises(NotImplementedError, match=r"'only_value' has no vjp rule.*only_value\.defvjp"):
        F.grad(np.ones(3))
    with pytest.raises(NotImplementedError, match=r"'only_value' has no jvp rule.*only_value\.defjvp"):
        F.jvp(np.ones(3), v=np.ones(3))
    with pytest.raises(tj.PrimitiveError, match="take 1 or 2 vectors"):
        tj.custom_vjp(lambda a, b, c: a)
    with pytest.raises(tj.PrimitiveError, match="returns a tuple"):     # one array for two operands
        tj.custom_vjp(lambda a, b: a * b, name="one_cotangent").defvjp(lambda res, g, a, b: g * b)
    with pytest.raises(tj.PrimitiveError, match="'bad_rule'.*vjp rule does not compile"):
        tj.custom_vjp(lambda a: a, name="bad_rule").defvjp(lambda res, g, a: undefined_name(g))  # noqa: F821


def test_kernels_that_raise_return_nan_or_change_length_are_named():
    @tj.custom_vjp
    def picky(x):
        if x[0] < 0.0:
            raise ValueError("picky wants x[0] >= 0")
        return x * 2.0
    picky.defvjp(lambda res, g, x: 2.0 * g)
    with pytest.raises(tj.PrimitiveError, match="'picky' raised ValueError: picky wants"):
        picky(tj.tensor(-np.ones(3), requires_grad=True))
    F = tj.trace(lambda x: tj.sum(picky(x)), np.ones(3))
    with pytest.raises(ValueError, match="picky wants") as info:
        F.grad(-np.ones(3))
    assert any("'picky'" in note for note in getattr(info.value, "__notes__", []))
    close(F.grad(np.ones(3)), 2.0 * np.ones(3))      # the workspaces are fine after the raise

    @tj.custom_vjp
    def nan_maker(x):
        return np.sqrt(x - 1.0)
    with pytest.warns(tj.PrimitiveWarning, match="'nan_maker' returned nan"):
        nan_maker(tj.tensor(np.zeros(2), requires_grad=True))

    @tj.custom_vjp
    def growing(x):
        return np.ones(int(x[0]))
    G = tj.trace(lambda x: tj.sum(growing(x)), np.array([3.0]))
    with pytest.raises(ValueError, match="'growing'.*another length"):
        G(np.array([4.0]))


def test_saved_tapes_name_the_primitive_and_loading_without_it_is_refused(tmp_path, monkeypatch):
    path = os.path.join(tmp_path, "block.npz")
    F_BLOCK.save(path)
    x = RNG.normal(size=2 * N)
    close(tj.load(path).grad(x), F_BLOCK.grad(x))
    monkeypatch.delitem(primitives.BY_NAME, "solve")
    with pytest.raises(tj.TapeFormatError, match="'solve'"):
        tj.load(path)
    # the name given to an elementwise primitive: the instruction's kind does not match
    impostor = tj.primitive(lambda a, b: a + b, name="solve")
    monkeypatch.setitem(primitives.BY_NAME, "solve", impostor)
    with pytest.raises(tj.TapejitError, match="block primitive call"):
        tj.load(path)


def test_the_gpu_and_compile_refuse_block_primitives():
    arrays = F_BLOCK.arrays
    with pytest.raises(NotImplementedError, match="'solve' runs on the CPU only"):
        primitives.require_gpu_rules(arrays.ops, arrays.cv, 0)
    with pytest.raises(tj.NotCompilableError, match="block"):
        F_BLOCK.compile()


def test_constant_folding_runs_a_block_on_constants_never_on_made_up_inputs():
    @tj.custom_vjp
    def no_zeros(x):
        if np.any(x == 0.0):
            raise ZeroDivisionError("no_zeros got a zero")
        return 1.0 / x
    no_zeros.defvjp(lambda res, g, x: -g * res * res)
    const = 2.0 + np.arange(3.0)

    def f(x):
        return tj.sum(no_zeros(x * 5.0) + no_zeros(tj.asarray(const)))    # x = 0 would raise
    F = tj.trace(f, np.ones(3)).optimize()
    x = 0.5 + RNG.random(3)
    close(F(x), np.sum(1.0 / (x * 5.0) + 1.0 / const), 1e-13, 1e-13)
    close(F.grad(x), -1.0 / (5.0 * x * x), 1e-13, 1e-13)
    from tapejit.ops.table import OP
    assert list(F.arrays.ops).count(OP.block) == 1       # the constant call was folded


def test_every_output_depends_on_every_input_in_the_sparsity_pattern():
    pattern = tj.trace(lambda x: solve(x[:3] + 3.0, x[3:]), np.ones(6)).jacobian_sparsity().toarray()
    assert pattern.shape == (3, 6) and pattern.all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        repr(solve)
    assert "vjp" in repr(solve) and "jvp" in repr(solve)

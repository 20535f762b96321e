"""Forward mode, Hessian-vector products, dense Jacobians and Hessians."""
import numpy as np
import pytest
from scipy.optimize import rosen_der, rosen_hess, rosen_hess_prod

import tapejit as tj
from helpers import numeric_grad, numeric_jacobian
from tapejit.ops import symbolic
from tapejit.bench import workloads
from tapejit.ops.table import OPCODE, OPS
from tapejit.frontend.tensor import _elementwise
from test_opcodes import REFERENCE

rng = np.random.default_rng(11)


def test_jvp_and_vjp_are_consistent():
    M = rng.standard_normal((4, 3))

    def fn(x):
        return tj.stack([tj.sum(tj.sin(x) * x), tj.tanh(M @ x)[1], x[0] * x[2],
                         tj.logsumexp(x)])
    f = tj.trace(fn, np.ones(3))
    x, v, u = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(4)
    _, jv = f.jvp(x, v=v)
    _, uj = f.vjp(x, u=u)
    assert np.dot(u, jv) == pytest.approx(np.dot(uj, v), rel=1e-12)
    J = numeric_jacobian(lambda z: f(z), x.copy())
    np.testing.assert_allclose(jv, J @ v, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(f.jacobian(x), J, rtol=1e-6, atol=1e-8)


def test_jacobian_wide_and_tall():
    f = tj.trace(lambda x: tj.stack([tj.sum(x * x), x[0] * x[-1]]), np.ones(6))        # 2 x 6: by vjps
    g = tj.trace(lambda x: tj.concatenate([tj.sin(x), tj.cos(x), x * x]), np.ones(2))  # 6 x 2: by jvps
    for h, n in ((f, 6), (g, 2)):
        x = rng.standard_normal(n)
        np.testing.assert_allclose(h.jacobian(x), numeric_jacobian(lambda z: h(z), x.copy()), rtol=1e-6, atol=1e-8)


def test_rosenbrock_hvp_and_hessian_against_scipy():
    f = tj.trace(workloads.rosen, np.zeros(9))
    for _ in range(3):
        x, v = rng.standard_normal(9), rng.standard_normal(9)
        np.testing.assert_allclose(f.hvp(x, v=v), rosen_hess_prod(x, v), rtol=1e-12, atol=1e-10)
        H = f.hessian(x)
        np.testing.assert_allclose(H, rosen_hess(x), rtol=1e-12, atol=1e-10)
        np.testing.assert_array_equal(H, H.T)
        value, jv = f.jvp(x, v=v)
        assert jv == pytest.approx(rosen_der(x) @ v, rel=1e-12)


def test_batch_hvp_equals_single_calls():
    f = tj.trace(workloads.rosen, np.zeros(5))
    X, V = rng.standard_normal((40, 5)), rng.standard_normal((40, 5))
    H = f.batch_hvp(X, V=V)
    for i in range(0, 40, 7):
        np.testing.assert_allclose(H[i], f.hvp(X[i], v=V[i]), rtol=1e-14)
        np.testing.assert_allclose(H[i], rosen_hess_prod(X[i], V[i]), rtol=1e-12, atol=1e-10)


def finite_difference_hessian(f, x, h=1e-5):
    n = x.size
    H = np.zeros((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = h * max(1.0, abs(x[j]))
        H[:, j] = (f.grad(x + e) - f.grad(x - e)) / (2 * e[j])
    return H


ELEMENTWISE = [op for op in OPS if op.elementwise and op.partials]


@pytest.mark.parametrize("op", ELEMENTWISE, ids=lambda op: op.name)
def test_second_order_sweep_of_every_opcode(op):
    """The Hessian of sum(op(...)) * (1 + sum) (so that first and second order mix)."""
    ref, samplers, c = REFERENCE[op.name]
    k = len(samplers)
    args = [s(3) for s in samplers]

    def fn(z):
        parts = tuple(z[3 * j: 3 * j + 3] for j in range(k))
        y = _elementwise(OPCODE[op.name], parts, c)
        return tj.sum(y * y) + tj.sum(y) * tj.sum(z)
    x = np.concatenate(args)
    f = tj.trace(fn, x)
    H = f.hessian(x)
    H_fd = finite_difference_hessian(f, x)
    if op.name == "where":
        # differences in the 0/1 condition would flip branches: compare the selected operands
        H, H_fd = H[3:, 3:], H_fd[3:, 3:]
    np.testing.assert_allclose(H, H_fd, rtol=2e-5, atol=2e-6)
    H = f.hessian(x)
    v = rng.standard_normal(x.size)
    np.testing.assert_allclose(f.hvp(x, v=v), H @ v, rtol=1e-10, atol=1e-10)


STRUCTURAL = {
    "matmul": lambda x: tj.sum(tj.sin(tj.reshape(x, (2, 3)) @ tj.reshape(x, (3, 2)))),
    "softmax": lambda x: tj.sum(tj.softmax(tj.reshape(x, (2, 3)), axis=1) * np.arange(6.0).reshape(2, 3)),
    "amax, gather, sum": lambda x: tj.amax(x[[0, 2, 4]] * x[1]) + tj.sum(x[::-1] * x),
    "affine": lambda x: tj.sum(tj.tanh(np.arange(12.0).reshape(2, 6) / 10 @ x) ** 2),
    "logsumexp": lambda x: tj.logsumexp(x * x),
}


@pytest.mark.parametrize("name", STRUCTURAL)
def test_second_order_sweep_of_structural_opcodes(name):
    f = tj.trace(STRUCTURAL[name], np.ones(6) * 0.3)
    x = rng.uniform(-1, 1, 6)
    np.testing.assert_allclose(f.hessian(x), finite_difference_hessian(f, x), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("op", ELEMENTWISE, ids=lambda op: op.name)
def test_symbolic_derivatives_of_the_partials(op):
    """symbolic.diff of every partial expression against central differences."""
    from tapejit.frontend.tensor import _compile_value, _NP_NAMES
    _, samplers, c = REFERENCE[op.name]
    point = {name: float(s(1)[0]) for name, s in zip("abd", samplers)}
    point.setdefault("b", 0.0)
    point.setdefault("d", 0.0)
    value = _compile_value(op.value, _NP_NAMES)
    for x, partial in op.partials.items():
        p = eval(f"lambda a, b, d, c, o: {partial}", dict(_NP_NAMES))
        for y in "abd":
            total = eval(f"lambda a, b, d, c, o: {symbolic.diff(partial, y)}", dict(_NP_NAMES))
            do = eval(f"lambda a, b, d, c, o: {symbolic.diff(partial, 'o')}", dict(_NP_NAMES))
            pdy = op.partials.get(y)
            if pdy is None:
                continue

            def full(t):
                q = dict(point)
                q[y] = t
                return p(q["a"], q["b"], q["d"], c, value(q["a"], q["b"], q["d"], c))
            h = 1e-6 * max(1.0, abs(point[y]))
            numeric = (full(point[y] + h) - full(point[y] - h)) / (2 * h)
            o = value(point["a"], point["b"], point["d"], c)
            dpdy = eval(f"lambda a, b, d, c, o: {pdy}", dict(_NP_NAMES))(point["a"], point["b"], point["d"], c, o)
            symbolic_total = total(point["a"], point["b"], point["d"], c, o) + do(point["a"], point["b"], point["d"], c, o) * dpdy
            assert symbolic_total == pytest.approx(numeric, rel=1e-5, abs=1e-6), (op.name, x, y)


def test_hvp_is_nan_safe_through_where():
    f = tj.trace(lambda x: tj.sum(tj.where(x > 0, tj.sqrt(x) ** 3, 0.0)), np.ones(2))
    np.testing.assert_array_equal(f.hvp(np.array([0.0, -1.0]), v=np.ones(2)), [0.0, 0.0])


def test_grad_of_dense_hessian_shapes_and_errors():
    f = tj.trace(lambda x: tj.sin(x), np.ones(3))
    with pytest.raises(tj.TapejitError, match="scalar output"):
        f.hessian(np.ones(3))
    with pytest.raises(tj.TapejitError, match="scalar output"):
        f.hvp(np.ones(3), v=np.ones(3))
    g = tj.trace(lambda x: tj.sum(x ** 3), np.ones(3))
    np.testing.assert_allclose(g.hessian(np.array([1.0, 2.0, 3.0])), np.diag([6.0, 12.0, 18.0]))
    np.testing.assert_allclose(numeric_grad(lambda z: g(z), np.ones(3)), [3.0, 3.0, 3.0], rtol=1e-8)


def test_long_vectors_take_the_tiled_second_order_path(monkeypatch):
    """n = 20,003: the tape runs tile by tile (with a short last tile) in the Hessian-vector
    product and forward mode; the results match scipy and central differences."""
    from tapejit.cpu import tiling
    monkeypatch.setattr(tiling, "MIDDLE_MIN_LENGTH", tiling.MIN_LENGTH)   # mixed()'s stretches too
    n = 20_003
    # its own generator: the shared one's state depends on which tests ran before (pytest
    # -n splits them), and central differences across mixed()'s jump at z = 0 are no reference
    local = np.random.default_rng(20003)
    x, v = local.standard_normal(n), local.standard_normal(n)
    f = tj.trace(workloads.rosen, x)
    assert f._tangent_plan() is not None                        # tiled stretches exist
    np.testing.assert_allclose(f.hvp(x, v), rosen_hess_prod(x, v), rtol=1e-12, atol=1e-9)
    assert f.jvp(x, v)[1] == pytest.approx(rosen_der(x) @ v, rel=1e-11)
    np.testing.assert_allclose(f.hvp(x, v), f.hvp(x, v=v), rtol=0, atol=0)   # workspaces come back clean

    def mixed(z):
        # broadcast scalars, a reversed view (non-unit stride), where, division, transcendental ops
        s = tj.sum(z * z)
        y = tj.sin(z) * tj.exp(-0.1 * z * z) + tj.tanh(z[::-1]) * z / (1.0 + z * z)
        y = tj.where(z > 0, y * s / n, tj.maximum(y, -0.5) ** 2)
        return tj.sum(y * tj.cos(z)) + tj.logsumexp(z)
    g = tj.trace(mixed, x)
    assert g._tangent_plan() is not None
    eps = 1e-5
    fd = (g.grad(x + eps * v) - g.grad(x - eps * v)) / (2 * eps)
    np.testing.assert_allclose(g.hvp(x, v), fd, rtol=1e-5, atol=1e-6)
    value, jv = g.jvp(x, v)
    assert value == pytest.approx(g(x), rel=1e-14)
    assert jv == pytest.approx(g.grad(x) @ v, rel=1e-10)

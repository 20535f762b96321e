"""Function.compile(): the per-function kernels of tapejit.cpu.compiled, against closed forms,
scipy, central differences and the interpreter, over the whole elementwise opcode table and
the structural opcodes, with guards, parameters and bad input."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der
from scipy.special import softmax as scipy_softmax

import tapejit as tj
from tapejit.cpu import compiled
from tapejit.bench import workloads
from tapejit.ops.table import OPCODE, OPS
from tapejit.frontend.tensor import _elementwise

from test_opcodes import REFERENCE

rng = np.random.default_rng(11)


@pytest.fixture(scope="module")
def rosen10():
    return tj.trace(workloads.rosen, np.zeros(10)).compile()


@pytest.mark.parametrize("B", [0, 1, 37, 1000])
def test_rosenbrock_batches_against_scipy(rosen10, B):
    X = rng.standard_normal((B, 10))
    values, grads = rosen10.batch_value_and_grad(X)
    assert values.shape == (B,) and grads.shape == (B, 10)
    for b in range(B):
        assert values[b] == pytest.approx(rosen(X[b]), rel=1e-13)
        np.testing.assert_allclose(grads[b], rosen_der(X[b]), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(rosen10.batch(X), values, rtol=0, atol=0)
    np.testing.assert_array_equal(rosen10.batch_grad(X), grads)


def test_the_kernel_computes_what_the_interpreter_computes(rosen10):
    plain = tj.trace(workloads.rosen, np.zeros(10))
    X = rng.standard_normal((500, 10))
    v0, g0 = plain.batch_value_and_grad(X)
    v1, g1 = rosen10.batch_value_and_grad(X)
    # the same operations in the same order: the same bits
    np.testing.assert_array_equal(v1, v0)
    np.testing.assert_array_equal(g1, g0)
    assert plain._kernel is None and rosen10._kernel is not None


def test_out_buffers_and_threads(rosen10):
    X = rng.standard_normal((5000, 10))
    out = (np.full(5000, np.nan), np.full((5000, 10), np.nan))
    values, grads = rosen10.batch_value_and_grad(X, out=out)
    assert values is out[0] and grads is out[1]
    np.testing.assert_allclose(grads[4999], rosen_der(X[4999]), rtol=1e-12, atol=1e-10)
    tj.set_num_threads(1)
    try:
        np.testing.assert_array_equal(rosen10.batch_grad(X), grads)
    finally:
        tj.set_num_threads(os.cpu_count() or 1)


# -- the whole elementwise table in one kernel ----------------------------------------------
DIFFERENTIABLE = [op for op in OPS if op.elementwise and op.arity]
WIDTH = 3


def _layout():
    """(opcode, its operand columns, immediate, weight) per opcode, and a base point inside
    every operand's domain."""
    base, plan, col = [], [], 0
    for k, op in enumerate(DIFFERENTIABLE):
        _, samplers, c = REFERENCE[op.name]
        columns = []
        for sampler in samplers:
            base.append(sampler(WIDTH))
            columns.append(range(col, col + WIDTH))
            col += WIDTH
        plan.append((op, columns, c, 1.0 + 0.1 * k))
    return plan, np.concatenate(base)


PLAN, BASE = _layout()


def every_opcode(x):
    total = 0.0
    for op, columns, c, weight in PLAN:
        args = tuple(x[cols.start:cols.stop] for cols in columns)
        total = total + weight * tj.sum(_elementwise(OPCODE[op.name], args, c))
    return total


def every_opcode_numpy(x):
    total = 0.0
    for op, columns, c, weight in PLAN:
        ref = REFERENCE[op.name][0]
        args = [x[cols.start:cols.stop] for cols in columns] + [np.zeros(WIDTH)] * (3 - len(columns))
        total += weight * np.sum(ref(*args, c))
    return total


def _points(n):
    # small moves that stay inside every domain; the comparisons' and where's 0/1 operands
    # move too, but only their values (no derivative) depend on them
    return BASE + 0.01 * rng.uniform(-1, 1, (n, BASE.size))


def test_every_elementwise_opcode_compiles_and_differentiates():
    f = tj.trace(every_opcode, BASE, optimize=False)
    fc = f.compile()
    X = _points(9)
    values, grads = fc.batch_value_and_grad(X)
    v0, g0 = f.batch_value_and_grad(X)
    np.testing.assert_allclose(values, v0, rtol=1e-14)
    np.testing.assert_allclose(grads, g0, rtol=1e-13, atol=1e-13)
    for b in range(len(X)):
        assert values[b] == pytest.approx(every_opcode_numpy(X[b]), rel=1e-12)
    # central differences of the numpy reference, column by column, at one point
    x = X[0]
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    fd = np.array([(every_opcode_numpy(x + h[j] * e) - every_opcode_numpy(x - h[j] * e)) / (2 * h[j])
                   for j, e in enumerate(np.eye(x.size))])
    no_derivative = np.zeros(x.size, bool)
    for op, columns, _, _ in PLAN:
        for name, cols in zip("abd", columns):
            if name not in op.partials:         # stop_gradient, comparisons, where's condition
                no_derivative[cols.start:cols.stop] = True
    np.testing.assert_allclose(grads[0][~no_derivative], fd[~no_derivative], rtol=2e-5, atol=2e-6)
    assert np.all(grads[0][no_derivative] == 0.0)


# -- structural opcodes ------------------------------------------------------------------------
A = rng.standard_normal((5, 6))
C = np.array([0.5, -1.0, 2.0, 0.25, 3.0, -0.75])


def structural(x):
    M = tj.reshape(x[:6], (2, 3))
    N = tj.reshape(x[6:12], (3, 2))
    P = tj.matmul(M, N)                                   # matmul
    s = tj.softmax(x[:5])                                 # softmax
    top = tj.amax(x[6:12])                                # amax
    rows = tj.sum(tj.reshape(x[:12], (3, 4)), axis=0)     # sum over an axis
    picked = x[np.array([3, 0, 7, 7])]                    # gather
    dense = A @ x[:6] + C[:5]                             # affine, constants
    chain = x[0] + x[3] + x[5] + x[11]                    # scalar chain (gather_sum)
    return (tj.sum(P * P) + tj.sum(s * C[:5]) + 2.0 * top + tj.sum(rows * rows)
            + tj.sum(picked * C[:4]) + tj.sum(tj.tanh(dense)) + chain * chain)


def structural_numpy(x):
    P = x[:6].reshape(2, 3) @ x[6:12].reshape(3, 2)
    rows = x[:12].reshape(3, 4).sum(axis=0)
    chain = x[0] + x[3] + x[5] + x[11]
    return (np.sum(P * P) + np.sum(scipy_softmax(x[:5]) * C[:5]) + 2.0 * np.max(x[6:12])
            + np.sum(rows * rows) + np.sum(x[[3, 0, 7, 7]] * C[:4]) + np.sum(np.tanh(A @ x[:6] + C[:5]))
            + chain * chain)


def test_structural_opcodes_against_numpy_and_differences():
    f = tj.trace(structural, rng.standard_normal(12))
    names = {OPS[int(o)].name for o in f.arrays.ops}
    for name in ("matmul", "softmax", "amax", "sum", "affine", "gather_sum"):
        assert name in names, f"the structural test no longer records {name}"
    fc = f.compile()
    X = rng.standard_normal((7, 12))
    values, grads = fc.batch_value_and_grad(X)
    v0, g0 = f.batch_value_and_grad(X)
    np.testing.assert_allclose(values, v0, rtol=1e-13)
    np.testing.assert_allclose(grads, g0, rtol=1e-12, atol=1e-12)
    for b in range(len(X)):
        x = X[b]
        assert values[b] == pytest.approx(structural_numpy(x), rel=1e-12)
        fd = np.array([(structural_numpy(x + 1e-6 * e) - structural_numpy(x - 1e-6 * e)) / 2e-6
                       for e in np.eye(12)])
        np.testing.assert_allclose(grads[b], fd, rtol=1e-6, atol=1e-6)


def test_amax_sends_the_gradient_to_the_first_maximum():
    fc = tj.trace(lambda x: tj.amax(x), np.zeros(4)).compile()
    _, grads = fc.batch_value_and_grad(np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]]))
    np.testing.assert_array_equal(grads, [[0, 1, 0, 0], [1, 0, 0, 0]])


def test_a_zero_adjoint_is_not_poisoned_by_an_infinite_partial():
    # sqrt'(0) is infinite, but where() sends it a zero adjoint: the gradient is 0, not NaN
    fc = tj.trace(lambda x: tj.sum(tj.where(x > 0, tj.sqrt(tj.maximum(x, 0.0)), 0.0)), np.ones(3)).compile()
    values, grads = fc.batch_value_and_grad(np.array([[4.0, 0.0, -1.0]]))
    assert values[0] == 2.0
    np.testing.assert_array_equal(grads[0], [0.25, 0.0, 0.0])


# -- guards, parameters, vector outputs ------------------------------------------------------------
def branchy(x):
    if x[0] > 0:
        return tj.sum(x * x)
    return tj.sum(tj.sin(x))


def test_guards_in_every_mode():
    fc = tj.trace(branchy, np.ones(3)).compile()
    X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.2], [0.3, -0.1, 0.0]])
    with pytest.raises(tj.BranchChangedError):
        fc.batch_value_and_grad(X)
    values, grads, valid = fc.batch_value_and_grad(X, on_branch_change="mask")
    np.testing.assert_array_equal(valid, [True, False, True])
    np.testing.assert_allclose(grads[valid], 2 * X[valid], rtol=1e-15)
    values, grads = fc.batch_value_and_grad(X, on_branch_change="retrace")
    np.testing.assert_allclose(values, [14.0, np.sin(X[1]).sum(), np.sum(X[2] ** 2)], rtol=1e-14)
    np.testing.assert_allclose(grads[1], np.cos(X[1]), rtol=1e-14)


def test_parameters_change_without_recompiling():
    Xd, y = workloads.logistic_data(n_samples=8, n_features=3)

    def loss(w, Xp, yp):
        return tj.sum(tj.softplus(-yp * (Xp @ w)))
    fc = tj.trace(loss, np.zeros(3), params=(Xd, y)).compile()
    source = fc._kernel.source
    W = rng.standard_normal((6, 3))
    X2, y2 = rng.standard_normal((8, 3)), np.sign(rng.standard_normal(8))
    for Xp, yp in ((Xd, y), (X2, y2)):
        values, grads = fc.batch_value_and_grad(W, params=(Xp, yp))
        for b, w in enumerate(W):
            z = -yp * (Xp @ w)
            assert values[b] == pytest.approx(np.sum(np.logaddexp(0, z)), rel=1e-13)
            np.testing.assert_allclose(grads[b], Xp.T @ (-yp / (1 + np.exp(-z))), rtol=1e-12)
    assert fc._kernel.source == source


def test_vector_outputs_give_every_value():
    fc = tj.trace(lambda x: tj.stack([x[0] * x[1], tj.exp(x[1]), x[0] - x[1]]), np.ones(2)).compile()
    X = rng.standard_normal((5, 2))
    values = fc.batch(X)
    np.testing.assert_allclose(values, np.stack([X[:, 0] * X[:, 1], np.exp(X[:, 1]), X[:, 0] - X[:, 1]], 1),
                               rtol=1e-15)


def test_other_modes_still_run_on_the_interpreter(rosen10):
    X, V = rng.standard_normal((4, 10)), rng.standard_normal((4, 10))
    hv = rosen10.batch_hvp(X, V=V)
    _, jv = rosen10.batch_jvp(X, V=V)
    for b in range(4):
        assert jv[b] == pytest.approx(rosen_der(X[b]) @ V[b], rel=1e-12)
        assert np.all(np.isfinite(hv[b]))
    np.testing.assert_allclose(rosen10.grad(X[0]), rosen_der(X[0]), rtol=1e-12)


# -- limits and bad input ----------------------------------------------------------------------
def test_a_tape_too_large_to_unroll_is_refused(monkeypatch):
    monkeypatch.setattr(compiled, "MAX_STATEMENTS", 50)
    f = tj.trace(workloads.rosen, np.zeros(30))
    with pytest.raises(tj.NotCompilableError, match="interpreter"):
        f.compile()
    np.testing.assert_allclose(f.grad(np.ones(30)), 0.0)       # the Function itself still works


def test_wrong_shapes_are_refused_before_the_kernel_runs(rosen10):
    with pytest.raises(tj.ShapeError):
        rosen10.batch_grad(np.zeros((4, 9)))
    kernel = rosen10._kernel
    X = np.zeros((4, 10))
    valid = np.ones(4, bool)
    with pytest.raises(tj.ShapeError):
        kernel.run(np.zeros((4, 9)), np.zeros(0), np.empty((4, 1)), np.empty((4, 10)), valid, True, 1)
    with pytest.raises(tj.ShapeError):
        kernel.run(X, np.zeros(0), np.empty((3, 1)), np.empty((4, 10)), valid, True, 1)
    with pytest.raises(tj.ShapeError):
        kernel.run(X, np.zeros(0), np.empty((4, 1)), np.empty((4, 9)), valid, True, 1)
    with pytest.raises(tj.ShapeError):
        kernel.run(np.asfortranarray(np.zeros((4, 10))), np.zeros(0), np.empty((4, 1)), np.empty((4, 10)),
                   valid, True, 1)
    with pytest.raises(tj.ShapeError):
        kernel.run(X, np.zeros(0), np.empty((4, 1), np.float32), np.empty((4, 10)), valid, True, 1)
    with pytest.raises(tj.ShapeError):
        kernel.run(X, np.zeros(0), np.empty((4, 1)), np.empty((4, 10)), np.ones(4, np.int8), True, 1)
    with pytest.raises(tj.ShapeError):
        kernel.run(X, np.zeros(1), np.empty((4, 1)), np.empty((4, 10)), valid, True, 1)


def test_a_compiled_function_pickles_compiled(rosen10):
    back = pickle.loads(pickle.dumps(rosen10))
    assert back._kernel is not None
    X = rng.standard_normal((3, 10))
    np.testing.assert_array_equal(back.batch_grad(X), rosen10.batch_grad(X))


def test_the_source_is_written_once_under_its_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TAPEJIT_CACHE_DIR", str(tmp_path))
    f = tj.trace(lambda x: tj.sum(tj.cos(x) * x), np.zeros(3))
    source = compiled.render_source(f)
    module = compiled._load(source)
    files = list(tmp_path.glob("tapejit_kernel_*.py"))
    assert len(files) == 1 and files[0].read_text() == source
    assert compiled._load(source) is module


@pytest.mark.disk_cache
def test_a_fresh_process_loads_the_kernel_from_numbas_cache(tmp_path):
    script = (
        "import numpy as np, tapejit as tj\n"
        "fc = tj.trace(lambda x: tj.sum(tj.exp(x) * x[::-1]), np.zeros(4)).compile()\n"
        "v, g = fc.batch_value_and_grad(np.ones((3, 4)))\n"
        "stats = fc._kernel.module.value_and_grad.stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()), g[0, 0])\n")
    env = dict(os.environ, TAPEJIT_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
            for _ in range(2)]
    first, second = (r.stdout.split() for r in runs)
    assert (first[0], first[1]) == ("0", "1")
    assert (second[0], second[1]) == ("1", "0")
    assert float(second[2]) == pytest.approx(2 * np.e, rel=1e-14)   # d/dx0 of e^x0 x3 + e^x3 x0 at 1


def test_random_programs_compile_to_what_the_interpreter_computes():
    # test_adjoint_plan's random programs (runs sharing slots every way: shifted, reversed,
    # broadcast, gathered, summed), three of them in one kernel to compile once
    from test_adjoint_plan import build
    draw = np.random.default_rng(29)
    programs = [build([tuple(int(v) for v in draw.integers(0, 100, 4)) for _ in range(8)]) for _ in range(3)]

    def together(x):
        return programs[0](x) + 0.5 * programs[1](x[::-1]) - 0.25 * programs[2](x * 0.9)
    f = tj.trace(together, draw.standard_normal(5) * 0.5)
    fc = f.compile()
    X = draw.standard_normal((40, 5)) * 0.5
    v0, g0 = f.batch_value_and_grad(X)
    v1, g1 = fc.batch_value_and_grad(X)
    # the interpreter's exp and log are tapejit.cpu._vmath's, the kernel's the C library's
    # (each within 1-2 ulp): close, not equal
    np.testing.assert_allclose(v1, v0, rtol=1e-12)
    np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g1[0], f.grad(X[0]), rtol=1e-10, atol=1e-12)
